"""Point-dose and independent MU checks: measured or recomputed vs planned, within 3 % (``sbrt mu-check``).

The tolerance is the standards catalogue's QA item of the chosen protocol (lung: independent MU
within ±3 %, point dose < 3 %; liver: both < ±3 %), so the two standards' wording ("以内" vs
"<") is kept exactly. The deviation is ``(check - planned) / planned`` in percent.

Log (CSV): ``case``, ``item`` (beam, arc or point label), ``kind`` (``mu`` or ``point_dose``),
``planned``, ``check`` (the independent MU, or the measured dose) and ``unit`` (``MU`` for
``mu``; ``Gy`` or ``cGy`` for ``point_dose``: both values in that unit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sbrtstandards.errors import InputError
from sbrtstandards.programme_qa.common import UNITS, describe_limit, read_csv, satisfies, unit_key

KINDS = {"mu": "qa.mu_check", "point_dose": "qa.point_dose"}
PROTOCOL_PREFIX = {"cn-lung-sbrt": "cn-lung", "cn-liver-sbrt": "cn-liver"}
KIND_DIMENSION = {"mu": "mu", "point_dose": "dose"}


@dataclass(frozen=True)
class DoseTolerance:
    id: str
    comparator: str
    value: float
    source: str

    def describe(self) -> str:
        return describe_limit(self.comparator, self.value, "%")


def tolerance(kind: str, protocol_id: str = "cn-lung-sbrt") -> DoseTolerance:
    """The catalogue's tolerance for ``kind`` (``mu`` or ``point_dose``) in ``protocol_id``."""
    from sbrtstandards.catalogue import load_protocol

    if kind not in KINDS:
        raise InputError(f"check kind {kind!r}: expected one of {', '.join(KINDS)}")
    if protocol_id not in PROTOCOL_PREFIX:
        known = ", ".join(PROTOCOL_PREFIX)
        raise InputError(f"protocol {protocol_id!r}: MU and point-dose tolerances exist for {known}")
    item_id = f"{PROTOCOL_PREFIX[protocol_id]}.{KINDS[kind]}"
    for qa in load_protocol(protocol_id).qa_items:
        if qa.id == item_id:
            return DoseTolerance(qa.id, qa.comparator, float(qa.value), qa.source)
    raise InputError(f"protocol {protocol_id} has no QA item {item_id}")


@dataclass
class Comparison:
    case: str
    item: str
    kind: str
    planned: float
    check: float
    unit: str
    deviation_percent: float
    tolerance: DoseTolerance
    status: str
    row: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "case": self.case,
            "item": self.item,
            "kind": self.kind,
            "planned": self.planned,
            "check": self.check,
            "unit": self.unit,
            "deviation_percent": round(self.deviation_percent, 3),
            "tolerance": self.tolerance.describe(),
            "tolerance_id": self.tolerance.id,
            "status": self.status,
            "source": self.tolerance.source,
        }


def compare(
    planned: float,
    check: float,
    kind: str,
    *,
    unit: str,
    protocol_id: str = "cn-lung-sbrt",
    case: str = "",
    item: str = "",
    where: str = "",
) -> Comparison:
    """One comparison (plain arguments: what a Slicer module or a script calls)."""
    where = where or f"{kind} check"
    if kind not in KINDS:
        raise InputError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    key = unit_key(unit)
    if not unit.strip():
        raise InputError(f"{where}: missing unit ({'MU' if kind == 'mu' else 'Gy or cGy'})")
    if key not in UNITS or UNITS[key][0] != KIND_DIMENSION[kind]:
        wanted = "MU" if kind == "mu" else "Gy or cGy"
        raise InputError(f"{where}: unit {unit!r} does not fit a {kind} check ({wanted})")
    for name, value in (("planned", planned), ("check", check)):
        if not math.isfinite(value) or value < 0:
            raise InputError(f"{where}: {name} value must be a number >= 0, got {value!r}")
    if planned == 0:
        raise InputError(f"{where}: the planned value is 0: no percentage deviation (denominator of zero)")
    tol = tolerance(kind, protocol_id)
    deviation = (check - planned) / planned * 100.0
    status = "pass" if satisfies(deviation, tol.comparator, tol.value) else "fail"
    return Comparison(case, item, kind, planned, check, unit.strip(), deviation, tol, status)


def read_log(path: str, protocol_id: str = "cn-lung-sbrt") -> list[Comparison]:
    """Every row of a point-dose / MU check log (errors name the row and column)."""
    rows = read_csv(path, ("case", "item", "kind", "planned", "check", "unit"), "MU / point-dose log")
    if not rows:
        raise InputError(f"{path}: no data rows")
    out = []
    for row in rows:
        kind = row.text("kind").lower().replace("-", "_").replace(" ", "_")
        if kind not in KINDS:
            raise InputError(f"{row.where('kind')}: {kind!r} is not one of {', '.join(KINDS)}")
        values = {}
        for col in ("planned", "check"):
            values[col] = row.number(col)
            if values[col] < 0:
                raise InputError(f"{row.where(col)}: {values[col]:g} is negative")
        if values["planned"] == 0:
            raise InputError(f"{row.where('planned')}: 0: no percentage deviation (denominator of zero)")
        c = compare(values["planned"], values["check"], kind, unit=row.text("unit"), protocol_id=protocol_id,
                    case=row.text("case"), item=row.text("item"), where=row.where("unit"))
        c.row = row.line
        out.append(c)
    return out
