"""Machine QA records against the tolerance and frequency tables (``sbrt machine-qa``).

The items are data (``machine_qa.toml``: annex 1 of the TBI specification, and the SBRT machine
QA of the liver standard §9.2 whose numbers are read from the standards catalogue). A log of
measurements (CSV: ``machine, date, item, value, unit``, optionally ``reference``, the nominal
setting that a percentage refers to, and ``note``) is checked in two ways, per machine:

* **Tolerance**: each measurement against its item's tolerance (``--level standard``), the
  tighter bracketed value of the table (``tight``), or both (``graded``: within the bracketed
  value ``pass``, within the tolerance only ``minor``, beyond ``fail``). Functional items take
  pass/fail. A value must come with its unit; a unit of the same kind is converted (cm to mm),
  and a percentage and monitor units are converted through ``reference`` where an item accepts
  both ("1.0 MU or 2 %, whichever is larger": the more lenient of the two applies).
* **Frequency**: a check is due one period (days or calendar months) after the ``count``-th most
  recent check (twice a week: the second most recent check plus 7 days); it is overdue when the
  as-of date is past that. Which items a machine must have: those of its kinds (``--machine
  LINAC1=linac+sbrt``), else the items that its log holds.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sbrtstandards.errors import InputError
from sbrtstandards.programme_qa.common import (
    UNITS,
    DataValidator,
    Limit,
    Row,
    convert,
    data_path,
    describe_limit,
    jsonable_limit,
    load_toml,
    read_csv,
    satisfies,
    unit_key,
)

MACHINE_KINDS = ("linac", "cobalt", "kv", "sbrt")
LEVELS = ("standard", "tight", "graded")
LOG_COLUMNS = ("machine", "date", "item", "value", "unit")
FUNCTIONAL_UNITS = ("", "pass/fail", "functional")


# --------------------------------------------------------------------------------------------
# the items (data)


@dataclass(frozen=True)
class Tolerance:
    comparator: str
    value: Limit
    unit: str
    source: str

    def describe(self) -> str:
        return describe_limit(self.comparator, self.value, self.unit)


@dataclass(frozen=True)
class Frequency:
    id: str
    count: int
    days: int | None
    months: int | None
    text: str

    def due(self, dates_desc: Sequence[dt.date]) -> dt.date | None:
        """When the next check is due, from the distinct check dates (newest first); None: not enough checks."""
        if len(dates_desc) < self.count:
            return None
        anchor = dates_desc[self.count - 1]
        if self.days is not None:
            return anchor + dt.timedelta(days=self.days)
        return add_months(anchor, self.months or 0)


@dataclass(frozen=True)
class MachineQaItem:
    id: str
    item: str
    kind: str  # numeric | functional
    tolerances: tuple[Tolerance, ...]
    frequency: Frequency
    machines: tuple[str, ...]
    source: str
    item_zh: str = ""
    tight: float | None = None
    combine: str = "single"
    after: str = ""
    note: str = ""

    def tolerance_text(self) -> str:
        if self.kind == "functional":
            return "functions as specified (pass/fail)"
        text = " or ".join(t.describe() for t in self.tolerances)
        if self.tight is not None:
            text += f" (tighter: ±{self.tight:g} {self.tolerances[0].unit})"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "item": self.item,
            "item_zh": self.item_zh,
            "kind": self.kind,
            "tolerances": [
                {"comparator": t.comparator, "value": jsonable_limit(t.value), "unit": t.unit, "source": t.source}
                for t in self.tolerances
            ],
            "tight": self.tight,
            "combine": self.combine,
            "frequency": self.frequency.id,
            "frequency_text": self.frequency.text,
            "after": self.after,
            "machines": list(self.machines),
            "note": self.note,
            "source": self.source,
        }


@dataclass(frozen=True)
class MachineQaCatalogue:
    items: tuple[MachineQaItem, ...]
    frequencies: Mapping[str, Frequency]
    path: str

    def item(self, item_id: str, where: str) -> MachineQaItem:
        for it in self.items:
            if it.id == item_id:
                return it
        close = difflib.get_close_matches(item_id, [i.id for i in self.items], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see `sbrt machine-qa --list`)"
        raise InputError(f"{where}: unknown machine QA item {item_id!r}{hint}")


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus calendar months, the day clamped to the month's length (31 Jan + 1 = 28/29 Feb)."""
    m = day.month - 1 + months
    year, month = day.year + m // 12, m % 12 + 1
    nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
    return dt.date(year, month, min(day.day, (nxt - dt.timedelta(days=1)).day))


@cache
def load_catalogue(path: str | None = None) -> MachineQaCatalogue:
    """The machine QA items (``machine_qa.toml`` unless ``path``), with catalogue tolerances resolved."""
    p = Path(path) if path else data_path("machine_qa.toml")
    data = load_toml(p)
    v = DataValidator(p)
    top = {"schema_version", "id", "title", "frequencies", "items"}
    v.keys(data, top, ("schema_version", "frequencies", "items"), "")
    if data["schema_version"] != 1:
        raise v.fail("", "schema_version", f"unsupported version {data['schema_version']!r} (expected 1)")
    freqs: dict[str, Frequency] = {}
    for fid, spec in data["frequencies"].items():
        where = f"frequencies.{fid}: "
        v.keys(spec, {"count", "days", "months", "text"}, ("count", "text"), where)
        if ("days" in spec) == ("months" in spec):
            raise v.fail(where, "days", "give either days or months")
        count = spec["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise v.fail(where, "count", f"must be a whole number >= 1, got {count!r}")
        freqs[fid] = Frequency(fid, count, spec.get("days"), spec.get("months"), v.text(spec, "text", where))
    items = tuple(_item(v, entry, i, freqs) for i, entry in enumerate(data["items"]))
    v.unique([it.id for it in items], "item id")
    return MachineQaCatalogue(items, freqs, str(p))


def _item(v: DataValidator, entry: Any, index: int, freqs: Mapping[str, Frequency]) -> MachineQaItem:
    where = f"items[{index}] ({entry.get('id', '?') if isinstance(entry, dict) else '?'}): "
    allowed = {"id", "item", "item_zh", "kind", "tolerance", "catalogue", "tight", "combine", "frequency", "after",
               "machines", "note", "source"}
    v.keys(entry, allowed, ("id", "kind", "frequency", "machines"), where)
    kind = v.choice(entry, "kind", ("numeric", "functional"), where)
    freq = freqs.get(entry["frequency"])
    if freq is None:
        raise v.fail(where, "frequency", f"{entry['frequency']!r} is not one of {', '.join(freqs)}")
    machines = entry["machines"]
    if not isinstance(machines, list) or not machines or any(m not in MACHINE_KINDS for m in machines):
        raise v.fail(where, "machines", f"must list machine kinds of {', '.join(MACHINE_KINDS)}, got {machines!r}")
    tolerances: list[Tolerance] = []
    text, source = entry.get("item"), entry.get("source")
    if "tolerance" in entry:
        fields = ("comparator", "value", "unit")
        t = v.keys(entry["tolerance"], set(fields), fields, where + "tolerance ")
        comp = v.comparator(t, "comparator", where)
        tolerances.append(Tolerance(comp, v.limit(t["value"], comp, where, "tolerance.value"), str(t["unit"]),
                                    v.text(entry, "source", where)))
    for ref in entry.get("catalogue", []):
        qa = _catalogue_item(v, ref, where)
        tolerances.append(Tolerance(qa.comparator, qa.value, qa.unit, qa.source))
        text = text or qa.item
        source = source or qa.source
    if kind == "numeric" and not tolerances:
        raise v.fail(where, "tolerance", "a numeric item needs a tolerance or catalogue reference")
    if kind == "functional" and tolerances:
        raise v.fail(where, "tolerance", "a functional item has no numeric tolerance")
    for t in tolerances:
        if unit_key(t.unit) not in UNITS:
            raise v.fail(where, "tolerance.unit", f"unknown unit {t.unit!r}")
    combine = entry.get("combine", "single")
    if combine not in ("single", "either") or (combine == "single" and len(tolerances) > 1):
        raise v.fail(where, "combine", 'several tolerances need combine = "either"')
    tight = None
    if "tight" in entry:
        tight = v.number(entry["tight"], where, "tight")
        if len(tolerances) != 1 or not tolerances[0].comparator.startswith("abs") or tight >= float(
            tolerances[0].value  # type: ignore[arg-type]
        ):
            raise v.fail(where, "tight", "must be smaller than the single ± tolerance")
    if not text or not source:
        raise v.fail(where, "item" if not text else "source", "missing (give it, or a catalogue reference)")
    return MachineQaItem(
        id=v.ident(entry, where),
        item=str(text),
        kind=kind,
        tolerances=tuple(tolerances),
        frequency=freq,
        machines=tuple(machines),
        source=str(source),
        item_zh=str(entry.get("item_zh", "")),
        tight=tight,
        combine=combine,
        after=str(entry.get("after", "")),
        note=str(entry.get("note", "")),
    )


def _catalogue_item(v: DataValidator, ref: Any, where: str) -> Any:
    from sbrtstandards.catalogue import load_protocol

    v.keys(ref, {"protocol", "qa_item"}, ("protocol", "qa_item"), where + "catalogue ")
    protocol = load_protocol(ref["protocol"])
    for qa in protocol.qa_items:
        if qa.id == ref["qa_item"]:
            if qa.comparator not in ("<", "<=", ">", ">=", "range", "abs<", "abs<="):
                raise v.fail(where, "catalogue", f"QA item {qa.id} has comparator {qa.comparator!r}: not a tolerance")
            return qa
    raise v.fail(where, "catalogue", f"protocol {ref['protocol']} has no QA item {ref['qa_item']!r}")


# --------------------------------------------------------------------------------------------
# evaluation


@dataclass
class Measurement:
    machine: str
    date: dt.date
    item: MachineQaItem
    value: float | bool
    unit: str
    reference: float | None
    row: int
    status: str = "not_evaluated"
    limit_text: str = ""
    reason: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "machine": self.machine,
            "date": self.date.isoformat(),
            "item": self.item.id,
            "item_text": self.item.item,
            "value": self.value,
            "unit": self.unit,
            "reference": self.reference,
            "tolerance": self.limit_text,
            "status": self.status,
            "reason": self.reason,
            "source": self.item.source,
        }


def evaluate(m: Measurement, level: str = "standard") -> Measurement:
    """Status of one measurement at ``level`` (see the module docstring)."""
    item = m.item
    if item.kind == "functional":
        m.status = "pass" if m.value else "fail"
        m.limit_text = item.tolerance_text()
        return m
    value = float(m.value)
    if item.tight is not None and level in ("tight", "graded"):
        tol = item.tolerances[0]
        v_t = convert(value, m.unit, tol.unit, f"row {m.row}, column 'unit'")
        tight_ok = satisfies(v_t, tol.comparator, item.tight)
        tol_ok = satisfies(v_t, tol.comparator, tol.value)
        tight_text = describe_limit(tol.comparator, item.tight, tol.unit)
        if level == "tight":
            m.status, m.limit_text = ("pass" if tight_ok else "fail"), tight_text
        else:
            m.status = "pass" if tight_ok else ("minor" if tol_ok else "fail")
            m.limit_text = f"{tight_text} (tolerance {tol.describe()})"
            if m.status == "minor":
                m.reason = "within the tolerance, beyond the tighter bracketed value"
        return m
    verdicts: list[bool] = []
    unknown: list[str] = []
    for tol in item.tolerances:
        v_t = _in_unit(value, m.unit, tol.unit, m.reference, m.row)
        if v_t is None:
            unknown.append(tol.describe())
            continue
        verdicts.append(satisfies(v_t, tol.comparator, tol.value))
    m.limit_text = item.tolerance_text()
    if any(verdicts):
        m.status = "pass"
    elif unknown:
        m.status = "not_evaluated"
        m.reason = (f"beyond {' / '.join(t.describe() for t in item.tolerances if t.describe() not in unknown)}; "
                    f"give the nominal setting (column 'reference') to apply {' / '.join(unknown)}")
    else:
        m.status = "fail"
    return m


def _in_unit(value: float, unit: str, target: str, reference: float | None, row: int) -> float | None:
    """``value`` in ``target``; % <-> MU through the reference setting (None when it is missing)."""
    a, b = UNITS[unit_key(unit)][0], UNITS[unit_key(target)][0]
    if a == b:
        return convert(value, unit, target, f"row {row}, column 'unit'")
    if {a, b} == {"percent", "mu"}:
        if reference is None:
            return None
        return value / reference * 100.0 if b == "percent" else value / 100.0 * reference
    return None


# --------------------------------------------------------------------------------------------
# the log


def read_log(
    path: str,
    catalogue: MachineQaCatalogue | None = None,
    *,
    as_of: dt.date | None = None,
) -> list[Measurement]:
    """Parse and validate every row of a measurement log (errors name the row and column)."""
    cat = catalogue or load_catalogue()
    limit_date = as_of or dt.date.today()
    out: list[Measurement] = []
    for row in read_csv(path, LOG_COLUMNS, "machine QA log"):
        out.append(_measurement(row, cat, limit_date))
    if not out:
        raise InputError(f"{path}: no measurement rows")
    return out


def _measurement(row: Row, cat: MachineQaCatalogue, not_after: dt.date) -> Measurement:
    machine = row.text("machine")
    date = row.date("date", not_after=not_after)
    item = cat.item(row.text("item"), row.where("item"))
    unit = row.cells.get("unit", "").strip()
    reference = None
    if row.has("reference"):
        reference = row.number("reference")
        if reference <= 0:
            raise InputError(f"{row.where('reference')}: the nominal setting must be > 0, got {reference:g}")
    if item.kind == "functional":
        if unit.lower() not in FUNCTIONAL_UNITS:
            raise InputError(f"{row.where('unit')}: {item.id} is a functional check (pass/fail), not in {unit!r}")
        value: float | bool = row.flag("value")
    else:
        if not unit:
            raise InputError(f"{row.where('unit')}: missing unit (the tolerance is in {item.tolerances[0].unit})")
        if unit_key(unit) not in UNITS:
            raise InputError(f"{row.where('unit')}: unknown unit {unit!r}")
        value = row.number("value")
        dims = {UNITS[unit_key(t.unit)][0] for t in item.tolerances}
        dim = UNITS[unit_key(unit)][0]
        if dim not in dims and not (dim in ("mu", "percent") and dims & {"mu", "percent"}):
            wanted = " or ".join(sorted({t.unit for t in item.tolerances}))
            raise InputError(f"{row.where('unit')}: {item.id} is measured in {wanted}, not {unit!r}")
        if dim == "mu" and "mu" not in dims and reference is None:
            raise InputError(f"{row.where('reference')}: a deviation in MU needs the MU setting to give %")
    return Measurement(machine, date, item, value, unit, reference, row.line, note=row.cells.get("note", "").strip())


def parse_machine_kinds(texts: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``--machine NAME=linac+sbrt`` options -> {name: kinds}."""
    out: dict[str, tuple[str, ...]] = {}
    for text in texts:
        name, sep, kinds = text.partition("=")
        parts = tuple(k.strip().lower() for k in kinds.replace(",", "+").split("+") if k.strip())
        if not sep or not name.strip() or not parts:
            raise InputError(f"--machine {text!r}: expected NAME=KIND[+KIND] with kinds {', '.join(MACHINE_KINDS)}")
        bad = [k for k in parts if k not in MACHINE_KINDS]
        if bad:
            known = ", ".join(MACHINE_KINDS)
            raise InputError(f"--machine {text!r}: unknown kind(s) {', '.join(bad)} (known: {known})")
        out[name.strip()] = parts
    return out


# --------------------------------------------------------------------------------------------
# report


@dataclass
class ItemState:
    item: MachineQaItem
    checks_on_record: int
    last_checked: dt.date | None
    due: dt.date | None
    state: str  # ok | due | overdue | never
    days_overdue: int | None
    latest: Measurement | None

    def to_json(self) -> dict[str, Any]:
        return {
            "item": self.item.id,
            "item_text": self.item.item,
            "frequency": self.item.frequency.id,
            "frequency_text": self.item.frequency.text,
            "after": self.item.after,
            "checks_on_record": self.checks_on_record,
            "last_checked": self.last_checked.isoformat() if self.last_checked else None,
            "due": self.due.isoformat() if self.due else None,
            "state": self.state,
            "days_overdue": self.days_overdue,
            "latest_status": self.latest.status if self.latest else None,
            "latest_value": self.latest.value if self.latest else None,
            "tolerance": self.item.tolerance_text(),
            "source": self.item.source,
        }


@dataclass
class MachineReport:
    machine: str
    kinds: tuple[str, ...]
    measurements: list[Measurement]
    items: list[ItemState]
    notes: list[str] = field(default_factory=list)

    @property
    def out_of_tolerance(self) -> list[Measurement]:
        return [m for m in self.measurements if m.status in ("minor", "fail")]

    @property
    def overdue(self) -> list[ItemState]:
        return [s for s in self.items if s.state in ("overdue", "never")]

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "kinds": list(self.kinds),
            "measurements": len(self.measurements),
            "counts": {s: sum(m.status == s for m in self.measurements) for s in ("pass", "minor", "fail",
                                                                                   "not_evaluated")},
            "out_of_tolerance": [m.to_json() for m in self.out_of_tolerance],
            "not_evaluated": [m.to_json() for m in self.measurements if m.status == "not_evaluated"],
            "overdue": [s.to_json() for s in self.overdue],
            "items": [s.to_json() for s in self.items],
            "notes": list(self.notes),
        }


@dataclass
class MachineQaResult:
    as_of: dt.date
    level: str
    machines: list[MachineReport]
    log: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "level": self.level,
            "log": self.log,
            "machines": [m.to_json() for m in self.machines],
        }


def check_log(
    measurements: Sequence[Measurement],
    *,
    as_of: dt.date,
    level: str = "standard",
    machine_kinds: Mapping[str, Sequence[str]] | None = None,
    catalogue: MachineQaCatalogue | None = None,
) -> MachineQaResult:
    """Tolerance of every measurement and the due state of every item, per machine, as of ``as_of``."""
    if level not in LEVELS:
        raise InputError(f"--level {level!r}: expected one of {', '.join(LEVELS)}")
    cat = catalogue or load_catalogue()
    kinds_by_machine = {k: tuple(v) for k, v in (machine_kinds or {}).items()}
    by_machine: dict[str, list[Measurement]] = {}
    for m in measurements:
        if m.date > as_of:
            raise InputError(f"row {m.row}, column 'date': {m.date.isoformat()} is after the as-of date {as_of}")
        by_machine.setdefault(m.machine, []).append(evaluate(m, level))
    for name in kinds_by_machine:
        by_machine.setdefault(name, [])
    reports = [_machine_report(name, ms, kinds_by_machine.get(name, ()), cat, as_of)
               for name, ms in sorted(by_machine.items())]
    return MachineQaResult(as_of, level, reports)


def _machine_report(
    name: str, ms: list[Measurement], kinds: tuple[str, ...], cat: MachineQaCatalogue, as_of: dt.date
) -> MachineReport:
    notes: list[str] = []
    logged = {m.item.id for m in ms}
    if kinds:
        tracked = [it for it in cat.items if set(it.machines) & set(kinds) or it.id in logged]
        for it in cat.items:
            if it.id in logged and not set(it.machines) & set(kinds):
                notes.append(f"{it.id} is logged but applies to {', '.join(it.machines)}, not {'+'.join(kinds)}")
    else:
        tracked = [it for it in cat.items if it.id in logged]
        notes.append("machine kinds not given (--machine NAME=KIND): only the items in the log are followed")
    states = []
    for it in tracked:
        rows = sorted((m for m in ms if m.item.id == it.id), key=lambda m: (m.date, m.row))
        dates = sorted({m.date for m in rows}, reverse=True)
        due = it.frequency.due(dates)
        if not dates:
            state, overdue_days = "never", None
        elif due is None:
            state, overdue_days = "overdue", None
        elif as_of > due:
            state, overdue_days = "overdue", (as_of - due).days
        elif as_of == due:
            state, overdue_days = "due", 0
        else:
            state, overdue_days = "ok", None
        states.append(ItemState(it, len(dates), dates[0] if dates else None, due, state, overdue_days,
                                rows[-1] if rows else None))
    return MachineReport(name, kinds, sorted(ms, key=lambda m: (m.date, m.row)), states, notes)


def equipment_pass_counts(result: MachineQaResult) -> list[tuple[dt.date, bool]]:
    """(date, passed) of every evaluated measurement: the equipment QA pass rate's raw data."""
    return [(m.date, m.status == "pass") for rep in result.machines for m in rep.measurements
            if m.status != "not_evaluated"]
