"""What the programme-QA tools share: strict CSV rows, explicit units, data files, limits.

Why strict: these tools read logs that people type (spreadsheets exported as CSV). A value
in the wrong unit or a date typed a year ahead would silently make a machine look in or out
of tolerance, so every cell is checked and an error names the file, the row (the line number,
header = row 1) and the column.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from sbrtstandards.catalogue import satisfies
from sbrtstandards.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

Limit = Union[float, tuple[float, float]]
COMPARATORS = ("<", "<=", ">", ">=", "range", "abs<", "abs<=")
STATUSES = ("pass", "minor", "fail", "not_evaluated")

# unit -> (dimension, factor to the dimension's base unit). Names are matched case-insensitively.
UNITS: dict[str, tuple[str, float]] = {
    "mm": ("length", 1.0),
    "cm": ("length", 10.0),
    "m": ("length", 1000.0),
    "degree": ("angle", 1.0),
    "deg": ("angle", 1.0),
    "°": ("angle", 1.0),
    "%": ("percent", 1.0),
    "min": ("time", 60.0),
    "s": ("time", 1.0),
    "gy": ("dose", 1.0),
    "cgy": ("dose", 0.01),
    "gy/min": ("dose_rate", 1.0),
    "cgy/min": ("dose_rate", 0.01),
    "mu": ("mu", 1.0),
    "mu/degree": ("mu_per_degree", 1.0),
    "mu/deg": ("mu_per_degree", 1.0),
}
TRUE_WORDS = {"yes", "y", "true", "1", "pass", "passed", "ok", "是", "合格", "通过"}
FALSE_WORDS = {"no", "n", "false", "0", "fail", "failed", "否", "不合格", "不通过"}


# --------------------------------------------------------------------------------------------
# units


def unit_key(unit: str) -> str:
    return unit.strip().lower().replace(" ", "")


def convert(value: float, from_unit: str, to_unit: str, where: str) -> float:
    """``value`` in ``from_unit`` expressed in ``to_unit``; InputError if the dimensions differ."""
    a, b = UNITS.get(unit_key(from_unit)), UNITS.get(unit_key(to_unit))
    if a is None:
        raise InputError(f"{where}: unknown unit {from_unit!r} (known: {', '.join(sorted(set(UNITS)))})")
    if b is None:
        raise InputError(f"{where}: unknown unit {to_unit!r}")
    if a[0] != b[0]:
        raise InputError(f"{where}: unit {from_unit!r} is a {a[0].replace('_', ' ')}, expected {to_unit!r}")
    return value * a[1] / b[1]


_QUANTITY = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*([^\d\s].*?)?\s*$")


def quantity(value: Any, unit: str, where: str) -> float:
    """A number in ``unit``: a bare number, or a string ``"450 cm"`` / ``"4.5 m"`` converted to it."""
    if isinstance(value, bool):
        raise InputError(f"{where}: expected a number in {unit}, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        m = _QUANTITY.match(value)
        if not m:
            raise InputError(f"{where}: expected a number in {unit} (or e.g. '12 {unit}'), got {value!r}")
        number = float(m.group(1))
        if m.group(2):
            number = convert(number, m.group(2), unit, where)
    else:
        raise InputError(f"{where}: expected a number in {unit}, got {type(value).__name__} {value!r}")
    if not math.isfinite(number):
        raise InputError(f"{where}: {value!r} is not a finite number")
    return number


# --------------------------------------------------------------------------------------------
# limits


def grade(
    value: float,
    comparator: str,
    limit: Limit,
    minor_comparator: str | None = None,
    minor_limit: Limit | None = None,
) -> str:
    """``pass`` within the limit, ``minor`` within the lenient (acceptable-variation) limit, else ``fail``."""
    if satisfies(value, comparator, limit):
        return "pass"
    if minor_limit is not None and satisfies(value, minor_comparator or comparator, minor_limit):
        return "minor"
    return "fail"


def describe_limit(comparator: str, limit: Limit, unit: str = "") -> str:
    """``> 160 cm``, ``6-10 cGy/min``, ``within ±1 mm``."""
    if comparator == "range":
        text = f"{limit[0]:g}-{limit[1]:g}"  # type: ignore[index]
    elif comparator.startswith("abs"):
        text = f"within ±{float(limit):g}" + (" (exclusive)" if comparator == "abs<" else "")  # type: ignore[arg-type]
    else:
        text = f"{comparator} {float(limit):g}"  # type: ignore[arg-type]
    return f"{text} {unit}".rstrip()


def jsonable_limit(limit: Limit | None) -> Any:
    return list(limit) if isinstance(limit, tuple) else limit


# --------------------------------------------------------------------------------------------
# data files (TOML next to this module)


def data_path(name: str) -> Path:
    from importlib.resources import files

    return Path(str(files("sbrtstandards.programme_qa").joinpath(name)))


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None


class DataValidator:
    """Checks the entries of a programme-QA data file; errors name the file, the entry and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, fld: str, problem: str) -> InputError:
        return InputError(f"{self.path}: {where}field '{fld}': {problem}")

    def keys(self, table: Any, allowed: set[str], required: Sequence[str], where: str) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise InputError(f"{self.path}: {where}must be a table, got {type(table).__name__}")
        for k in table:
            if k not in allowed:
                raise self.fail(where, k, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for k in required:
            if k not in table:
                raise self.fail(where, k, "missing")
        return table

    def text(self, table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
        if key not in table and default is not None:
            return default
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, key, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def number(self, value: Any, where: str, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(where, key, f"must be a number, got {value!r}")
        return float(value)

    def limit(self, value: Any, comparator: str, where: str, key: str) -> Limit:
        if comparator == "range":
            if not isinstance(value, list) or len(value) != 2:
                raise self.fail(where, key, f"comparator 'range' needs [low, high], got {value!r}")
            lo, hi = (self.number(v, where, key) for v in value)
            if lo > hi:
                raise self.fail(where, key, f"range [{lo:g}, {hi:g}] has low > high")
            return (lo, hi)
        return self.number(value, where, key)

    def comparator(self, table: Mapping[str, Any], key: str, where: str) -> str:
        value = table.get(key)
        if value not in COMPARATORS:
            raise self.fail(where, key, f"{value!r} is not one of {' '.join(COMPARATORS)}")
        return str(value)

    def choice(self, table: Mapping[str, Any], key: str, allowed: Sequence[str], where: str) -> str:
        value = table.get(key)
        if value not in allowed:
            raise self.fail(where, key, f"{value!r} is not one of {', '.join(allowed)}")
        return str(value)

    def ident(self, table: Mapping[str, Any], where: str) -> str:
        value = table.get("id")
        if not isinstance(value, str) or not re.match(r"^[a-z0-9][a-z0-9._\-]*$", value):
            raise self.fail(where, "id", f"must be lower-case letters, digits, '.', '_' or '-', got {value!r}")
        return value

    def unique(self, ids: Sequence[str], what: str) -> None:
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise InputError(f"{self.path}: {what} '{i}' is defined twice")
            seen.add(i)


# --------------------------------------------------------------------------------------------
# CSV logs


@dataclass(frozen=True)
class Row:
    """One data row of a CSV log; every accessor names the row and column on error."""

    path: Path
    line: int  # line number of the row in the file (the header is row 1)
    cells: Mapping[str, str]

    def where(self, column: str) -> str:
        return f"{self.path}: row {self.line}, column '{column}'"

    def has(self, column: str) -> bool:
        return bool(self.cells.get(column, "").strip())

    def text(self, column: str) -> str:
        value = self.cells.get(column, "").strip()
        if not value:
            raise InputError(f"{self.where(column)}: missing value")
        return value

    def number(self, column: str) -> float:
        text = self.text(column)
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{self.where(column)}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"{self.where(column)}: {text!r} is not a finite number")
        return value

    def count(self, column: str) -> int:
        """A whole number >= 0 (a count of cases, staff or items)."""
        text = self.text(column)
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{self.where(column)}: {text!r} is not a count") from None
        if not math.isfinite(value) or value != int(value):
            raise InputError(f"{self.where(column)}: {text!r} is not a whole number")
        if value < 0:
            raise InputError(f"{self.where(column)}: a count cannot be negative ({text})")
        return int(value)

    def flag(self, column: str) -> bool:
        text = self.text(column).lower()
        if text in TRUE_WORDS:
            return True
        if text in FALSE_WORDS:
            return False
        raise InputError(f"{self.where(column)}: {text!r} is not yes/no (yes, no, true, false, 1, 0, 是, 否)")

    def date(self, column: str, not_after: dt.date | None = None) -> dt.date:
        text = self.text(column)
        try:
            value = dt.date.fromisoformat(text)
        except ValueError:
            raise InputError(f"{self.where(column)}: {text!r} is not a date (YYYY-MM-DD)") from None
        if not_after is not None and value > not_after:
            raise InputError(
                f"{self.where(column)}: {value.isoformat()} is in the future (after {not_after.isoformat()})"
            )
        return value


def read_csv(path: str | os.PathLike[str], required: Sequence[str], what: str) -> list[Row]:
    """Rows of a CSV log (UTF-8, Excel's BOM accepted); header names are matched case-insensitively.

    Missing required columns, duplicate header names and rows with more cells than the header
    are errors; blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file ({what})")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the {what} as UTF-8 CSV"
        ) from None
    lines = list(csv.reader(text.splitlines()))
    if not lines or not any(cell.strip() for cell in lines[0]):
        raise InputError(f"{path}: empty file, expected a header row ({', '.join(required)})")
    header = [h.strip().lower() for h in lines[0]]
    dupes = sorted({h for h in header if h and header.count(h) > 1})
    if dupes:
        raise InputError(f"{path}: row 1: column(s) {', '.join(dupes)} appear twice in the header")
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(
            f"{path}: row 1: missing column(s) {', '.join(missing)} (the {what} needs {', '.join(required)})"
        )
    rows: list[Row] = []
    for n, cells in enumerate(lines[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
            raise InputError(f"{path}: row {n}: {len(cells)} cells but the header has {len(header)} columns")
        values = {h: (cells[i] if i < len(cells) else "") for i, h in enumerate(header) if h}
        rows.append(Row(path, n, values))
    return rows


def today() -> dt.date:
    return dt.date.today()


def parse_as_of(text: str | None) -> dt.date:
    """``--as-of YYYY-MM-DD`` (default today); a date after today is refused."""
    if text is None:
        return today()
    try:
        value = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"--as-of {text!r}: expected a date YYYY-MM-DD") from None
    if value > today():
        raise InputError(f"--as-of {value.isoformat()} is in the future")
    return value
