"""Quality-control indicator rates of the TBI, seed implantation and ablation specifications.

The indicators are data (``qc_indicators.toml``: formula, direction, target where the document
gives one, clause). Rates come from a case log (CSV), one row per case or tally:

* required columns ``date`` (YYYY-MM-DD, not in the future) and ``programme`` (``tbi``,
  ``seed_implant``, ``ablation``); optional ``record`` (``case``, the default, ``staff`` or
  ``equipment``) and ``case_id``;
* case rows carry yes/no columns (``indication_met``, ``complication``,
  ``post_implant_dosimetry`` ...: the ``flag`` of each indicator);
* staff rows carry ``staff_total`` and ``staff_qualified``, equipment rows ``items_tested`` and
  ``items_passed`` (counts; a machine QA log can stand in for the equipment rows).

Rates are computed per period (month ``2025-03``, quarter ``2025-Q1`` or year ``2025``) from the
first to the last period of the log: numerator and denominator are added over the period's rows,
so a rate is never an average of rates. A period without rows for an indicator has no rate (not
0 %). An indicator whose column the log lacks is ``not_evaluated``; a blank or invalid cell in a
row that the indicator counts is an error naming the row and column, as are negative counts, a
count row whose denominator is zero and a numerator larger than its denominator.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sbrtstandards.errors import InputError
from sbrtstandards.programme_qa.common import DataValidator, Row, data_path, load_toml, read_csv, satisfies

PERIODS = ("month", "quarter", "year")
RECORDS = ("case", "staff", "equipment")
PROGRAMME_ALIASES = {
    "tbi": "tbi",
    "全身照射": "tbi",
    "seed_implant": "seed_implant",
    "seed": "seed_implant",
    "seed-implant": "seed_implant",
    "粒子植入": "seed_implant",
    "ablation": "ablation",
    "消融": "ablation",
}


@dataclass(frozen=True)
class Count:
    record: str
    flag: str | None = None
    count: str | None = None

    def describe(self) -> str:
        if self.count:
            return f"sum of '{self.count}' over {self.record} rows"
        if self.flag:
            return f"{self.record} rows with '{self.flag}' = yes"
        return f"{self.record} rows"


@dataclass(frozen=True)
class Indicator:
    id: str
    programme: str
    name: str
    name_zh: str
    definition: str
    formula: str
    formula_zh: str
    numerator: Count
    denominator: Count
    indicator_type: str
    direction: str  # higher | lower
    data_source: str
    defined: bool
    source: str
    target_percent: float | None = None
    target_comparator: str | None = None
    note: str = ""

    @property
    def target_text(self) -> str:
        if self.target_percent is not None:
            return f"{self.target_comparator} {self.target_percent:g} %"
        return f"no numeric target; {self.direction} is better"

    def columns(self) -> list[str]:
        return [c for c in (self.numerator.flag, self.numerator.count, self.denominator.flag, self.denominator.count)
                if c]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "programme": self.programme,
            "name": self.name,
            "name_zh": self.name_zh,
            "definition": self.definition,
            "formula": self.formula,
            "formula_zh": self.formula_zh,
            "numerator": self.numerator.describe(),
            "denominator": self.denominator.describe(),
            "indicator_type": self.indicator_type,
            "direction": self.direction,
            "target": self.target_text,
            "target_percent": self.target_percent,
            "data_source": self.data_source,
            "formula_in_source": self.defined,
            "source": self.source,
            "note": self.note,
        }


@cache
def load_indicators(path: str | None = None) -> tuple[Indicator, ...]:
    """The indicators (``qc_indicators.toml`` unless ``path``), validated."""
    p = Path(path) if path else data_path("qc_indicators.toml")
    data = load_toml(p)
    v = DataValidator(p)
    top = {"schema_version", "id", "programmes", "indicators"}
    v.keys(data, top, ("schema_version", "programmes", "indicators"), "")
    programmes = data["programmes"]
    out = []
    for i, entry in enumerate(data["indicators"]):
        where = f"indicators[{i}] ({entry.get('id', '?') if isinstance(entry, dict) else '?'}): "
        allowed = {"id", "programme", "name", "name_zh", "definition", "formula", "formula_zh", "numerator",
                   "denominator", "indicator_type", "direction", "target_percent", "target_comparator",
                   "data_source", "defined", "note", "source"}
        v.keys(entry, allowed, ("id", "programme", "name", "formula", "numerator", "denominator", "direction",
                                "defined", "source"), where)
        target = comp = None
        if "target_percent" in entry:
            target = v.number(entry["target_percent"], where, "target_percent")
            comp = v.comparator(entry, "target_comparator", where)
        out.append(Indicator(
            id=v.ident(entry, where),
            programme=v.choice(entry, "programme", programmes, where),
            name=v.text(entry, "name", where),
            name_zh=v.text(entry, "name_zh", where, ""),
            definition=v.text(entry, "definition", where, ""),
            formula=v.text(entry, "formula", where),
            formula_zh=v.text(entry, "formula_zh", where, ""),
            numerator=_count(v, entry["numerator"], where + "numerator "),
            denominator=_count(v, entry["denominator"], where + "denominator "),
            indicator_type=v.text(entry, "indicator_type", where, ""),
            direction=v.choice(entry, "direction", ("higher", "lower"), where),
            data_source=v.text(entry, "data_source", where, ""),
            defined=bool(entry["defined"]),
            source=v.text(entry, "source", where),
            target_percent=target,
            target_comparator=comp,
            note=v.text(entry, "note", where, ""),
        ))
    v.unique([i.id for i in out], "indicator id")
    return tuple(out)


def _count(v: DataValidator, spec: Any, where: str) -> Count:
    v.keys(spec, {"record", "flag", "count"}, ("record",), where)
    record = v.choice(spec, "record", RECORDS, where)
    if "flag" in spec and "count" in spec:
        raise v.fail(where, "flag", "give flag or count, not both")
    return Count(record, spec.get("flag"), spec.get("count"))


# --------------------------------------------------------------------------------------------
# the log


@dataclass(frozen=True)
class LogRow:
    row: Row
    date: dt.date
    programme: str
    record: str


def read_case_log(path: str | os.PathLike[str], *, as_of: dt.date | None = None) -> tuple[list[LogRow], set[str]]:
    """Rows of a case log and its column names (see the module docstring)."""
    rows = read_csv(path, ("date", "programme"), "case log")
    if not rows:
        raise InputError(f"{path}: no data rows")
    not_after = as_of or dt.date.today()
    out = []
    for r in rows:
        prog_text = r.text("programme")
        programme = PROGRAMME_ALIASES.get(prog_text.strip().lower())
        if programme is None:
            raise InputError(f"{r.where('programme')}: {prog_text!r} is not one of tbi, seed_implant, ablation")
        record = r.cells.get("record", "").strip().lower() or "case"
        if record not in RECORDS:
            raise InputError(f"{r.where('record')}: {record!r} is not one of {', '.join(RECORDS)}")
        out.append(LogRow(r, r.date("date", not_after=not_after), programme, record))
    return out, set(rows[0].cells)


def equipment_rows_from_machine_qa(results: Iterable[tuple[dt.date, bool]]) -> list[tuple[dt.date, int, int]]:
    """(date, items tested, items passed) per day from machine QA evaluations."""
    by_day: dict[dt.date, list[int]] = {}
    for day, passed in results:
        tally = by_day.setdefault(day, [0, 0])
        tally[0] += 1
        tally[1] += int(passed)
    return [(d, t, p) for d, (t, p) in sorted(by_day.items())]


# --------------------------------------------------------------------------------------------
# rates


def period_of(day: dt.date, period: str) -> str:
    if period == "month":
        return f"{day.year}-{day.month:02d}"
    if period == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return str(day.year)


def periods_between(first: dt.date, last: dt.date, period: str) -> list[str]:
    """Every period label from ``first`` to ``last``, gaps included (a quiet month is a period too)."""
    out: list[str] = []
    y, m = first.year, first.month
    while (y, m) <= (last.year, last.month):
        label = period_of(dt.date(y, m, 1), period)
        if label not in out:
            out.append(label)
        m += 1
        if m > 12:
            y, m = y + 1, 1
    return out


@dataclass
class PeriodValue:
    period: str
    numerator: int
    denominator: int
    rate_percent: float | None
    status: str | None  # pass | fail against a numeric target; None without a target or data
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "period": self.period,
            "numerator": self.numerator,
            "denominator": self.denominator,
            "rate_percent": None if self.rate_percent is None else round(self.rate_percent, 2),
            "status": self.status,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class IndicatorResult:
    indicator: Indicator
    values: list[PeriodValue]
    overall: PeriodValue | None
    status: str  # evaluated | not_evaluated
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        out = self.indicator.to_json()
        out.update(
            status=self.status,
            values=[v.to_json() for v in self.values],
            overall=None if self.overall is None else self.overall.to_json(),
        )
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class QcResult:
    period: str
    periods: list[str]
    indicators: list[IndicatorResult]
    log: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "periods": list(self.periods),
            "log": self.log,
            "indicators": [r.to_json() for r in self.indicators],
            "notes": list(self.notes),
        }

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per indicator and period (the CSV output)."""
        rows = []
        for r in self.indicators:
            ind = r.indicator
            for v in r.values:
                rows.append({
                    "indicator": ind.id, "name": ind.name, "name_zh": ind.name_zh, "programme": ind.programme,
                    "period": v.period, "numerator": v.numerator, "denominator": v.denominator,
                    "rate_percent": "" if v.rate_percent is None else f"{v.rate_percent:.2f}",
                    "target": ind.target_text, "status": v.status or "", "formula": ind.formula,
                    "source": ind.source,
                })
        return rows


def compute_rates(
    rows: Sequence[LogRow],
    columns: set[str],
    *,
    period: str = "month",
    equipment: Sequence[tuple[dt.date, int, int]] = (),
    indicators: Sequence[Indicator] | None = None,
) -> QcResult:
    """Every indicator's rate per period (see the module docstring)."""
    if period not in PERIODS:
        raise InputError(f"--period {period!r}: expected one of {', '.join(PERIODS)}")
    inds = list(indicators or load_indicators())
    dates = [r.date for r in rows] + [d for d, _, _ in equipment]
    if not dates:
        raise InputError("the case log has no rows")
    labels = periods_between(min(dates), max(dates), period)
    notes = []
    if equipment:
        notes.append("equipment QA rows taken from the machine QA log (tbi.equipment_qa_pass_rate)")
    results = [_indicator(ind, rows, columns, labels, period, equipment) for ind in inds]
    return QcResult(period, labels, results, notes=notes)


def _indicator(
    ind: Indicator,
    rows: Sequence[LogRow],
    columns: set[str],
    labels: list[str],
    period: str,
    equipment: Sequence[tuple[dt.date, int, int]],
) -> IndicatorResult:
    record = ind.denominator.record
    population = [r for r in rows if r.programme == ind.programme and r.record == record]
    tallies: dict[str, list[int]] = {}
    use_equipment = record == "equipment" and bool(equipment)
    if use_equipment:
        for day, tested, passed in equipment:
            t = tallies.setdefault(period_of(day, period), [0, 0])
            t[0] += passed
            t[1] += tested
    if not population and not use_equipment:
        return IndicatorResult(ind, [], None, "not_evaluated", f"no {ind.programme} {record} rows in the log")
    absent = [c for c in ind.columns() if c not in columns]
    if absent and population:
        return IndicatorResult(ind, [], None, "not_evaluated", f"column(s) {', '.join(absent)} not in the log")
    for r in population:
        num = _tally(r.row, ind.numerator)
        den = _tally(r.row, ind.denominator)
        if ind.denominator.count and den == 0:
            raise InputError(f"{r.row.where(ind.denominator.count)}: a denominator of zero ({ind.id})")
        if num > den:
            col = ind.numerator.count or ind.numerator.flag or "record"
            raise InputError(f"{r.row.where(col)}: {num} is more than the denominator {den} ({ind.id})")
        t = tallies.setdefault(period_of(r.date, period), [0, 0])
        t[0] += num
        t[1] += den
    values = [_value(ind, label, *tallies.get(label, [0, 0])) for label in labels]
    total = [sum(t[0] for t in tallies.values()), sum(t[1] for t in tallies.values())]
    return IndicatorResult(ind, values, _value(ind, "all", *total), "evaluated")


def _tally(row: Row, c: Count) -> int:
    if c.count:
        return row.count(c.count)
    if c.flag:
        return int(row.flag(c.flag))
    return 1


def _value(ind: Indicator, label: str, num: int, den: int) -> PeriodValue:
    if den == 0:
        return PeriodValue(label, num, den, None, None, f"no {ind.programme} {ind.denominator.record} rows")
    rate = 100.0 * num / den
    status = None
    if ind.target_percent is not None and ind.target_comparator:
        status = "pass" if satisfies(rate, ind.target_comparator, ind.target_percent) else "fail"
    return PeriodValue(label, num, den, rate, status)


# --------------------------------------------------------------------------------------------
# outputs


def write_csv(result: QcResult, path: str | os.PathLike[str]) -> None:
    """The per-period table as CSV (UTF-8 with a BOM, so spreadsheet programs read the Chinese names)."""
    import csv
    import io

    from sbrtstandards.atomic import atomic_path

    rows = result.table_rows()
    fields = ["indicator", "name", "name_zh", "programme", "period", "numerator", "denominator", "rate_percent",
              "target", "status", "formula", "source"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8-sig")


def plot(result: QcResult, path: str | os.PathLike[str]) -> None:
    """One panel per evaluated indicator: the rate per period, its target or direction (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sbrtstandards.atomic import atomic_path

    shown = [r for r in result.indicators if r.status == "evaluated"]
    if not shown:
        raise InputError("no indicator could be computed from the log: nothing to plot")
    ncol = 2 if len(shown) > 1 else 1
    nrow = -(-len(shown) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.0 * ncol, 2.6 * nrow), squeeze=False)
    x = list(range(len(result.periods)))
    for ax, r in zip(axes.ravel(), shown):
        ys = [v.rate_percent if v.rate_percent is not None else float("nan") for v in r.values]
        ax.plot(x, ys, marker="o", color="#1f77b4")
        ind = r.indicator
        if ind.target_percent is not None:
            ax.axhline(ind.target_percent, color="#d62728", linestyle="--", linewidth=1,
                       label=f"target {ind.target_text}")
            ax.legend(loc="lower left", fontsize=7)
        arrow = "higher is better" if ind.direction == "higher" else "lower is better"
        ax.set_title(f"{ind.programme}: {ind.name} ({arrow})", fontsize=9)
        ax.set_ylim(-2, 102)
        ax.set_ylabel("%", fontsize=8)
        ax.set_xticks(x)
        ax.set_xticklabels(result.periods, rotation=45, ha="right", fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(shown):]:
        ax.axis("off")
    fig.suptitle(f"QC indicators per {result.period}", fontsize=11)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.3 / (2.6 * nrow)))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
