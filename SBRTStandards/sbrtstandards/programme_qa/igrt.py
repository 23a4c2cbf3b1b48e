"""IGRT position-error logs against the site thresholds of the SBRT standards (``sbrt igrt``).

The thresholds are the standards catalogue's QA items (lung: <= 3 mm peripheral, <= 2 mm
central and ultra-central; liver: above 2 mm investigate), chosen per site by ``igrt.toml``; the
residual error after the 6-degree-of-freedom correction (< 1 mm) is checked too when the log has
residual columns.

Log (CSV): ``patient``, ``fraction``, ``date`` and the error per axis with its unit in the column
name, ``lr_mm``, ``ap_mm``, ``si_mm`` (or ``_cm``: converted; a column without a unit is refused);
optional ``site`` (lung/liver, else ``--site``), ``site_class`` (peripheral/central/ultracentral:
needed for lung, else ``--site-class``) and ``residual_lr_mm``... The error compared is the 3D
vector length (``metric="vector"``) or the largest axis (``"axis"``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sbrtstandards.errors import InputError
from sbrtstandards.programme_qa.common import (
    DataValidator,
    Row,
    convert,
    data_path,
    describe_limit,
    jsonable_limit,
    load_toml,
    read_csv,
    satisfies,
)

AXES = ("lr", "ap", "si")
METRICS = ("vector", "axis")
SITE_CLASSES = ("peripheral", "central", "ultracentral")


@dataclass(frozen=True)
class Threshold:
    id: str
    comparator: str
    value: float
    unit: str
    source: str
    site_classes: tuple[str, ...] | None  # None: any site class

    def describe(self) -> str:
        return describe_limit(self.comparator, self.value, self.unit)


@dataclass(frozen=True)
class SiteRule:
    site: str
    protocol: str
    thresholds: tuple[Threshold, ...]
    residual: Threshold | None
    action: str

    @property
    def needs_site_class(self) -> bool:
        return any(t.site_classes is not None for t in self.thresholds)

    def threshold_for(self, site_class: str | None, where: str) -> Threshold:
        for t in self.thresholds:
            if t.site_classes is None or (site_class is not None and site_class in t.site_classes):
                return t
        raise InputError(f"{where}: the {self.site} threshold depends on the site class "
                         f"({', '.join(SITE_CLASSES)}); give it (column site_class or --site-class)")


@cache
def load_site_rules(path: str | None = None) -> Mapping[str, SiteRule]:
    """site -> thresholds, resolved from the standards catalogue."""
    from sbrtstandards.catalogue import load_protocol

    p = Path(path) if path else data_path("igrt.toml")
    data = load_toml(p)
    v = DataValidator(p)
    v.keys(data, {"schema_version", "sites"}, ("schema_version", "sites"), "")
    out: dict[str, SiteRule] = {}
    for i, entry in enumerate(data["sites"]):
        where = f"sites[{i}]: "
        v.keys(entry, {"site", "protocol", "qa_items", "residual", "action"}, ("site", "protocol", "qa_items",
                                                                                "action"), where)
        protocol = load_protocol(v.text(entry, "protocol", where))
        items = {q.id: q for q in protocol.qa_items}

        def threshold(qid: str, fld: str, where: str = where, items: Mapping[str, Any] = items,
                      pid: str = protocol.id) -> Threshold:
            qa = items.get(qid)
            if qa is None:
                raise v.fail(where, fld, f"protocol {pid} has no QA item {qid!r}")
            if qa.comparator not in ("<", "<=", "abs<", "abs<="):
                raise v.fail(where, fld, f"QA item {qid} is not an upper limit ({qa.comparator})")
            classes = qa.conditions.get("site_class")
            return Threshold(qa.id, qa.comparator, float(qa.value), qa.unit, qa.source,
                             tuple(classes) if classes else None)

        thresholds = tuple(threshold(q, "qa_items") for q in entry["qa_items"])
        residual = threshold(entry["residual"], "residual") if "residual" in entry else None
        site = v.text(entry, "site", where)
        out[site] = SiteRule(site, protocol.id, thresholds, residual, v.text(entry, "action", where))
    return out


# --------------------------------------------------------------------------------------------


@dataclass
class Fraction:
    row: int
    patient: str
    fraction: str
    date: dt.date | None
    site: str
    site_class: str | None
    error_mm: tuple[float, float, float]
    residual_mm: tuple[float, float, float] | None
    value_mm: float = math.nan
    status: str = "not_evaluated"
    threshold: Threshold | None = None
    residual_value_mm: float | None = None
    residual_status: str | None = None
    action: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "row": self.row,
            "patient": self.patient,
            "fraction": self.fraction,
            "date": self.date.isoformat() if self.date else None,
            "site": self.site,
            "site_class": self.site_class,
            "error_mm": {a: round(e, 3) for a, e in zip(AXES, self.error_mm)},
            "value_mm": round(self.value_mm, 3),
            "threshold_id": self.threshold.id if self.threshold else None,
            "comparator": self.threshold.comparator if self.threshold else None,
            "limit": jsonable_limit(self.threshold.value) if self.threshold else None,
            "status": self.status,
            "source": self.threshold.source if self.threshold else None,
        }
        if self.action:
            out["action"] = self.action
        if self.residual_value_mm is not None:
            out["residual_mm"] = round(self.residual_value_mm, 3)
            out["residual_status"] = self.residual_status
        return out


@dataclass
class IgrtResult:
    metric: str
    fractions: list[Fraction]
    thresholds: list[dict[str, Any]]
    log: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def exceeded(self) -> list[Fraction]:
        return [f for f in self.fractions if f.status == "fail" or f.residual_status == "fail"]

    def to_json(self) -> dict[str, Any]:
        patients: dict[str, list[Fraction]] = {}
        for f in self.fractions:
            patients.setdefault(f.patient, []).append(f)
        return {
            "metric": self.metric,
            "log": self.log,
            "thresholds": self.thresholds,
            "counts": {s: sum(f.status == s for f in self.fractions) for s in ("pass", "fail")},
            "patients": [
                {"patient": p, "fractions": len(fs), "max_error_mm": round(max(f.value_mm for f in fs), 3),
                 "exceeded": sum(f.status == "fail" for f in fs)}
                for p, fs in patients.items()
            ],
            "exceeded": [f.to_json() for f in self.exceeded],
            "fractions": [f.to_json() for f in self.fractions],
            "notes": list(self.notes),
        }


def magnitude(error_mm: Sequence[float], metric: str) -> float:
    """The error compared with the threshold: 3D vector length, or the largest axis."""
    if metric == "vector":
        return math.sqrt(sum(e * e for e in error_mm))
    return max(abs(e) for e in error_mm)


def check_fraction(
    error_mm: Sequence[float],
    site: str,
    site_class: str | None = None,
    *,
    metric: str = "vector",
    residual_mm: Sequence[float] | None = None,
) -> Fraction:
    """One fraction's position error against the site's threshold (a plain-argument entry point)."""
    f = Fraction(0, "", "", None, site, site_class, tuple(float(e) for e in error_mm),  # type: ignore[arg-type]
                 None if residual_mm is None else tuple(float(e) for e in residual_mm))  # type: ignore[arg-type]
    return _evaluate(f, metric, "fraction")


def _evaluate(f: Fraction, metric: str, where: str) -> Fraction:
    if metric not in METRICS:
        raise InputError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    rules = load_site_rules()
    rule = rules.get(f.site)
    if rule is None:
        raise InputError(f"{where}: site {f.site!r} has no IGRT threshold (sites: {', '.join(rules)})")
    if f.site_class is not None and f.site_class not in SITE_CLASSES:
        raise InputError(f"{where}: site class {f.site_class!r} is not one of {', '.join(SITE_CLASSES)}")
    t = rule.threshold_for(f.site_class, where)
    f.threshold = t
    f.value_mm = magnitude(f.error_mm, metric)
    f.status = "pass" if satisfies(convert(f.value_mm, "mm", t.unit, where), t.comparator, t.value) else "fail"
    f.action = rule.action if f.status == "fail" else ""
    if f.residual_mm is not None and rule.residual is not None:
        r = rule.residual
        f.residual_value_mm = magnitude(f.residual_mm, metric)
        f.residual_status = "pass" if satisfies(convert(f.residual_value_mm, "mm", r.unit, where), r.comparator,
                                                r.value) else "fail"
    return f


def read_log(
    path: str,
    *,
    site: str | None = None,
    site_class: str | None = None,
    metric: str = "vector",
    as_of: dt.date | None = None,
) -> IgrtResult:
    """Check every fraction of an IGRT log (see the module docstring)."""
    rows = read_csv(path, ("patient", "fraction"), "IGRT log")
    if not rows:
        raise InputError(f"{path}: no data rows")
    header = set(rows[0].cells)
    axis_cols = _axis_columns(header, "", path)
    residual_cols = _axis_columns(header, "residual_", path, required=False)
    fractions = []
    for row in rows:
        s = row.text("site").lower() if "site" in header and row.has("site") else site
        if s is None:
            raise InputError(f"{row.where('site')}: missing (or give --site lung|liver)")
        sc = row.text("site_class").lower() if "site_class" in header and row.has("site_class") else site_class
        date = row.date("date", not_after=as_of or dt.date.today()) if "date" in header and row.has("date") else None
        error = tuple(_mm(row, col, unit) for col, unit in axis_cols)
        residual = tuple(_mm(row, col, unit) for col, unit in residual_cols) if residual_cols else None
        f = Fraction(row.line, row.text("patient"), row.text("fraction"), date, s, sc, error,  # type: ignore[arg-type]
                     residual)  # type: ignore[arg-type]
        fractions.append(_evaluate(f, metric, row.where("site_class" if sc is None else "site")))
    used = {f.threshold.id: f.threshold for f in fractions if f.threshold}
    thresholds = [{"id": t.id, "comparator": t.comparator, "limit": t.value, "unit": t.unit,
                   "site_class": list(t.site_classes) if t.site_classes else None, "source": t.source}
                  for t in used.values()]
    return IgrtResult(metric, fractions, thresholds, path)


def _axis_columns(header: set[str], prefix: str, path: str, required: bool = True) -> list[tuple[str, str]]:
    cols = []
    for axis in AXES:
        found = [(f"{prefix}{axis}_{u}", u) for u in ("mm", "cm") if f"{prefix}{axis}_{u}" in header]
        if len(found) > 1:
            raise InputError(f"{path}: row 1: both {found[0][0]} and {found[1][0]}: give the {axis.upper()} error once")
        if not found:
            if f"{prefix}{axis}" in header:
                raise InputError(f"{path}: row 1, column '{prefix}{axis}': no unit; name it {prefix}{axis}_mm "
                                 f"(or {prefix}{axis}_cm)")
            if required:
                raise InputError(f"{path}: row 1: missing column {prefix}{axis}_mm (errors per axis: "
                                 f"{', '.join(a + '_mm' for a in AXES)})")
            return []
        cols.append(found[0])
    return cols


def _mm(row: Row, column: str, unit: str) -> float:
    return convert(row.number(column), unit, "mm", row.where(column))
