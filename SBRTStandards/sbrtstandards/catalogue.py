"""The standards catalogue: protocol files (TOML) -> validated, queryable rules.

Why data and not code: a standard is a list of numbers with conditions and a clause to cite;
keeping them in one file per standard lets a physicist read, review and extend them
without touching Python, and lets every number carry its source. Adding a standard means
adding a file (to ``sbrtstandards/protocols/`` or to a folder on ``SBRT_PROTOCOL_PATH``).

Search path
    Built-in files (``sbrtstandards/protocols/*.toml``, package data read with
    :mod:`importlib.resources`), then each folder of the environment variable
    ``SBRT_PROTOCOL_PATH`` (``os.pathsep``-separated), then the ``extra_dirs`` argument.
    Every ``*.toml`` of those folders is a protocol file. Two files with the same protocol
    ``id`` are an error naming both (copy a built-in and give it a new id to adapt it).

Schema (``schema_version = 1``; unknown keys anywhere are errors, so typos surface)
    Top level: ``schema_version``, ``id`` (lower case, ``[a-z0-9._-]``), ``title``,
    ``source`` (the document), ``version``, ``sites`` (list), ``fractions`` (list of the
    fraction numbers the protocol covers, or ``"any"``), optional ``description``, and the
    tables below.

    ``[[rules]]`` one dose-volume or plan-quality constraint:

    * ``id`` (unique in the protocol, e.g. ``"cn-lung.ptv.v100"``), ``structure`` (a role of
      :mod:`sbrtstandards.names`, or ``"plan"`` for plan metrics), ``metric`` (TG-263
      DVH syntax ``D95%[Gy] D0.03cc[Gy] DC700cc[Gy] V20Gy[%] V100%[%] CV15Gy[cc]
      Mean[Gy] Max[Gy] Min[Gy]``, ``V0Gy[cc]`` for a whole volume, or a plan-metric key
      of :data:`PLAN_METRICS`; checked by :func:`sbrtstandards.metrics.parse_metric` too),
      ``comparator`` (``< <= > >= range abs< abs<=`` or ``report`` = no numeric limit,
      ``limit_text`` says why), ``limit`` (number, ``[lo, hi]`` for ``range``),
      ``source`` (document + clause);
    * optional: ``minor_limit`` (acceptable variation, on the lenient side of ``limit``),
      ``priority`` (``"mandatory"``, default, or ``"optimal"``: missing an optimal
      objective is at worst ``minor``), ``unit`` (defaults to the metric's bracket),
      ``per_fraction`` (limit is per fraction: multiplied by the number of fractions),
      ``dose_model`` (``physical``, ``eqd2``, ``bed``) with ``alpha_beta_gy``,
      ``prior_dose_discount_percent`` (re-irradiation: % of the prior course's dose
      forgiven per interval band ``lt_3mo 3_6mo 6_12mo 1_3y gt_3y``),
      ``conditions`` (see below), ``section``, ``note``, ``limit_text``,
      ``confirmed`` (false = value not verified in a primary source; shown, flagged).

    ``conditions`` restrict a rule (or scheme, QA item, table): ``fractions`` (int or list),
    ``site_class`` (``peripheral central ultracentral``), ``child_pugh`` (``A B C``),
    ``histology`` (``HCC ICC``), ``regimen`` (``sbrt``, the default, or ``conventional``),
    ``solitary_kidney`` (bool), ``reirradiation`` (bool, default false), and numeric
    conditions written as a comparison string: ``gtv_diameter_cm = ">= 1.5"``, ``ptv_cc``,
    ``cord_distance_to_target_mm``. A condition whose value the caller does not give makes
    the rule *undetermined*: it is reported in ``RuleSelection.skipped``, never dropped.

    ``[[fractionation]]`` a prescription scheme: ``id``, ``dose_gy`` (number or ``[lo, hi]``),
    ``fractions`` (int or ``[lo, hi]``), optional ``bed10_gy`` (the document's own BED
    figure; checked against the computed BED within 0.5 Gy), ``indication``, ``evidence``,
    ``conditions``, ``source``, ``note``.

    ``[[qa_items]]`` a numeric requirement that is not a dose-volume rule (slice thickness,
    IGRT error, MU check, gamma criteria, staffing, follow-up): ``id``, ``category``,
    ``item``, ``comparator`` (rule comparators plus ``==``), ``value``, ``unit``, ``source``,
    optional ``conditions``, ``note``, ``confirmed``.

    ``[[notes]]`` a statement of the document kept for completeness (``id``, ``text``,
    ``source``): e.g. a table row without numbers.

    ``[conformality]`` a table of plan-quality limits by PTV volume (RTOG 0813/0915):
    ``id``, ``title``, ``source``, ``ptv_cc`` (increasing), ``interpolation = "linear"``,
    ``outside = "clamp"`` (end rows used beyond the table), optional ``conditions``, and
    ``[[conformality.columns]]`` each with ``id``, ``structure``, ``metric``,
    ``comparator``, ``limit`` (one value per row), optional ``minor_limit`` (per row),
    ``source``, ``note``, ``confirmed``.

    ``[[include]]`` rules taken from another protocol: ``protocol``, ``rules`` (ids),
    ``source`` (where this document lists them, e.g. an appendix), optional ``note`` and
    ``conditions`` (added to every included rule, e.g. ``reirradiation = true``). Included
    rules keep their ids and cite both sources.

Evaluation (:meth:`Rule.evaluate`): within ``limit`` -> ``pass``; else within
``minor_limit`` -> ``minor``; else ``minor`` for an ``optimal`` objective, ``fail`` for a
mandatory one. Comparisons are exact (no hidden tolerance); ``report`` rules and missing
values are ``not_evaluated`` with a reason.

Fractions the protocol does not cover raise :class:`InputError` naming the covered ones:
a plan with 4 fractions checked against TG-101 (1, 3, 5) is a user error, not a pass.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

from sbrtstandards import names
from sbrtstandards.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

SCHEMA_VERSION = 1
ENV_VAR = "SBRT_PROTOCOL_PATH"

COMPARATORS = ("<", "<=", ">", ">=", "range", "abs<", "abs<=", "report")
QA_COMPARATORS = (*COMPARATORS[:-1], "==")
PRIORITIES = ("mandatory", "optimal")
DOSE_MODELS = ("physical", "eqd2", "bed")
STATUSES = ("pass", "minor", "fail", "not_evaluated")
QA_CATEGORIES = (
    "institution",
    "staffing",
    "training",
    "equipment",
    "simulation",
    "contouring",
    "prescription",
    "planning",
    "dosimetry_qa",
    "igrt",
    "motion",
    "treatment",
    "machine_qa",
    "follow_up",
    "indication",
    "clinical",
)
INTERVAL_BANDS = ("lt_3mo", "3_6mo", "6_12mo", "1_3y", "gt_3y")

# Plan-level metric keys (structure "plan"): key -> (unit, meaning). The plan-metrics engine
# computes these; the catalogue only refers to them.
PLAN_METRICS: dict[str, tuple[str, str]] = {
    "CI_RTOG": ("", "RTOG conformity index PIV/PTV = V100%Rx / V_PTV"),
    "CI_Paddick": ("", "Paddick conformity index TV_PIV^2 / (TV x PIV)"),
    "GI": ("", "Paddick gradient index V50%Rx / V100%Rx"),
    "R50": ("", "RTOG R50%: V50%Rx / V_PTV"),
    "D2cm[%]": ("%", "maximum dose 2 cm or more from the PTV in every direction, % of Rx"),
    "HI": ("", "ICRU 83 homogeneity index (D2% - D98%) / D50% of the PTV"),
    "Dmax[%]": ("%", "global dose maximum (the hot spot), % of Rx"),
    "Dmax_outside_ITV[%]": ("%", "maximum dose outside the ITV, % of Rx"),
    "Dmax_outside_PTV[%]": ("%", "maximum dose outside the PTV, % of Rx"),
    "V105%_outside_ITV[cc]": ("cc", "volume receiving >= 105 % of Rx outside the ITV"),
    "V110%_outside_ITV[cc]": ("cc", "volume receiving >= 110 % of Rx outside the ITV"),
    "V105%_outside_PTV[cc]": ("cc", "volume receiving >= 105 % of Rx outside the PTV"),
    "V110%_outside_PTV[cc]": ("cc", "volume receiving >= 110 % of Rx outside the PTV"),
    "dose_grid_mm": ("mm", "largest spacing of the dose calculation grid"),
    "Rx_BED[Gy]": ("Gy", "BED of the prescription (alpha/beta of the rule)"),
}

_NUM = r"\d+(?:\.\d+)?"
_DVH_METRIC = re.compile(
    rf"^(?:(?:D|DC){_NUM}(?:%|cc)\[(?:Gy|cGy|%)\]"
    rf"|(?:V|CV){_NUM}(?:Gy|cGy|%)\[(?:%|cc)\]"
    r"|(?:Min|Mean|Max|Median)\[(?:Gy|cGy|%)\])$"
)
_ID = re.compile(r"^[a-z0-9][a-z0-9._\-]*$")
_NUMERIC_CONDITION = re.compile(r"^\s*(<=|>=|<|>)\s*(-?\d+(?:\.\d+)?)\s*$")

Limit = Union[float, tuple[float, float]]

# Condition vocabulary: key -> (kind, allowed values or None, default when the caller is silent).
CONDITIONS: dict[str, tuple[str, tuple[Any, ...] | None, Any]] = {
    "fractions": ("int", None, None),
    "site_class": ("enum", ("peripheral", "central", "ultracentral"), None),
    "child_pugh": ("enum", ("A", "B", "C"), None),
    "histology": ("enum", ("HCC", "ICC"), None),
    "regimen": ("enum", ("sbrt", "conventional"), "sbrt"),
    "solitary_kidney": ("bool", None, None),
    "gtv_diameter_cm": ("number", None, None),
    "ptv_cc": ("number", None, None),
    "cord_distance_to_target_mm": ("number", None, None),
    "reirradiation": ("bool", None, False),
}

_TOP_KEYS = {
    "schema_version",
    "id",
    "title",
    "source",
    "version",
    "sites",
    "fractions",
    "description",
    "rules",
    "fractionation",
    "qa_items",
    "notes",
    "conformality",
    "include",
}
_TOP_REQUIRED = ("schema_version", "id", "title", "source", "version", "sites", "fractions")
_RULE_KEYS = {
    "id",
    "structure",
    "metric",
    "comparator",
    "limit",
    "minor_limit",
    "unit",
    "priority",
    "per_fraction",
    "dose_model",
    "alpha_beta_gy",
    "prior_dose_discount_percent",
    "conditions",
    "section",
    "source",
    "note",
    "limit_text",
    "confirmed",
}
_RULE_REQUIRED = ("id", "structure", "metric", "comparator", "source")
_FX_KEYS = {"id", "dose_gy", "fractions", "bed10_gy", "indication", "evidence", "conditions", "source", "note"}
_FX_REQUIRED = ("id", "dose_gy", "fractions", "source")
_QA_KEYS = {"id", "category", "item", "comparator", "value", "unit", "conditions", "source", "note", "confirmed"}
_QA_REQUIRED = ("id", "category", "item", "comparator", "value", "unit", "source")
_NOTE_KEYS = {"id", "text", "source"}
_TABLE_KEYS = {"id", "title", "source", "ptv_cc", "interpolation", "outside", "conditions", "columns"}
_TABLE_REQUIRED = ("id", "title", "source", "ptv_cc", "interpolation", "outside", "columns")
_COLUMN_KEYS = {"id", "structure", "metric", "comparator", "limit", "minor_limit", "source", "note", "confirmed"}
_COLUMN_REQUIRED = ("id", "structure", "metric", "comparator", "limit")
_INCLUDE_KEYS = {"protocol", "rules", "source", "note", "conditions"}


# --------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class Evaluation:
    """Outcome of one rule on one value."""

    status: str
    limit: Limit | None
    minor_limit: Limit | None
    reason: str = ""


@dataclass(frozen=True)
class Rule:
    """One constraint of a protocol (see the module docstring for the fields)."""

    id: str
    structure: str
    metric: str
    comparator: str
    limit: Limit | None
    source: str
    minor_limit: Limit | None = None
    unit: str = ""
    priority: str = "mandatory"
    per_fraction: bool = False
    dose_model: str = "physical"
    alpha_beta_gy: float | None = None
    prior_dose_discount_percent: Mapping[str, float] | None = None
    conditions: Mapping[str, Any] = field(default_factory=dict)
    section: str = ""
    note: str = ""
    limit_text: str = ""
    confirmed: bool = True
    file: str = ""
    included_from: str = ""

    @property
    def is_plan_metric(self) -> bool:
        return self.structure == names.PLAN

    def limits(self, fractions: int | None = None) -> tuple[Limit | None, Limit | None]:
        """(limit, minor_limit) in the metric's unit; per-fraction limits times ``fractions``."""
        if not self.per_fraction:
            return self.limit, self.minor_limit
        if fractions is None:
            raise InputError(f"rule {self.id}: a per-fraction limit needs the number of fractions")
        return _scale(self.limit, fractions), _scale(self.minor_limit, fractions)

    def evaluate(self, value: float | None, fractions: int | None = None) -> Evaluation:
        """pass / minor / fail / not_evaluated of ``value`` (see the module docstring)."""
        if self.comparator == "report":
            return Evaluation("not_evaluated", None, None, self.limit_text or "no numeric limit")
        limit, minor = self.limits(fractions)
        if value is None or not math.isfinite(float(value)):
            return Evaluation("not_evaluated", limit, minor, "no value")
        v = float(value)
        if satisfies(v, self.comparator, limit):
            return Evaluation("pass", limit, minor)
        if minor is not None and satisfies(v, self.comparator, minor):
            return Evaluation("minor", limit, minor, "beyond the limit, within the acceptable variation")
        if self.priority == "optimal":
            return Evaluation("minor", limit, minor, "optimal objective not met")
        return Evaluation("fail", limit, minor)

    def describe(self) -> str:
        """``PTV V100%[%] >= 95 %`` (limits per fraction and minor levels shown as such)."""
        text = f"{self.structure} {self.metric} {format_limit(self.comparator, self.limit, self.limit_text)}"
        if self.unit and self.comparator != "report":
            text += f" {self.unit}"
        if self.per_fraction:
            text += " per fraction"
        if self.minor_limit is not None:
            text += f" (minor: {format_limit(self.comparator, self.minor_limit)})"
        return text

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "structure": self.structure,
            "metric": self.metric,
            "comparator": self.comparator,
            "limit": _jsonable_limit(self.limit),
            "minor_limit": _jsonable_limit(self.minor_limit),
            "unit": self.unit,
            "priority": self.priority,
            "per_fraction": self.per_fraction,
            "dose_model": self.dose_model,
            "alpha_beta_gy": self.alpha_beta_gy,
            "conditions": dict(self.conditions),
            "section": self.section,
            "source": self.source,
            "note": self.note,
            "confirmed": self.confirmed,
        }
        if self.limit_text:
            out["limit_text"] = self.limit_text
        if self.prior_dose_discount_percent:
            out["prior_dose_discount_percent"] = dict(self.prior_dose_discount_percent)
        if self.included_from:
            out["included_from"] = self.included_from
        return out


@dataclass(frozen=True)
class SkippedRule:
    """A rule that :meth:`Protocol.rules_for` did not select, and why."""

    rule: Rule
    reason: str
    undetermined: bool  # True: a condition's value was not given (the rule may apply)


@dataclass
class RuleSelection:
    """Rules whose conditions hold (iterable like a list) and the others with reasons."""

    rules: list[Rule]
    skipped: list[SkippedRule]

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __getitem__(self, index: int) -> Rule:
        return self.rules[index]


@dataclass(frozen=True)
class FractionationScheme:
    """A prescription scheme of a document, with the document's own BED figure."""

    id: str
    dose_gy: float | tuple[float, float]
    fractions: int | tuple[int, int]
    source: str
    bed10_stated_gy: float | None = None
    indication: str = ""
    evidence: str = ""
    conditions: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def is_single(self) -> bool:
        return not isinstance(self.dose_gy, tuple) and not isinstance(self.fractions, tuple)

    def bed10_gy(self) -> float | None:
        """BED with alpha/beta 10 Gy (None for dose or fraction ranges)."""
        if not self.is_single:
            return None
        from sbrtstandards.radiobiology import bed

        return bed(float(self.dose_gy), int(self.fractions), 10.0)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        computed = self.bed10_gy()
        return {
            "id": self.id,
            "dose_gy": _jsonable_limit(self.dose_gy),
            "fractions": list(self.fractions) if isinstance(self.fractions, tuple) else self.fractions,
            "bed10_gy": None if computed is None else round(computed, 1),
            "bed10_stated_gy": self.bed10_stated_gy,
            "indication": self.indication,
            "evidence": self.evidence,
            "conditions": dict(self.conditions),
            "source": self.source,
            "note": self.note,
        }


@dataclass(frozen=True)
class QaItem:
    """A numeric requirement that is not a dose-volume constraint."""

    id: str
    category: str
    item: str
    comparator: str
    value: Limit
    unit: str
    source: str
    conditions: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    confirmed: bool = True

    def describe(self) -> str:
        return f"{self.item}: {format_limit(self.comparator, self.value)} {self.unit}".rstrip()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "item": self.item,
            "comparator": self.comparator,
            "value": _jsonable_limit(self.value),
            "unit": self.unit,
            "conditions": dict(self.conditions),
            "source": self.source,
            "note": self.note,
            "confirmed": self.confirmed,
        }


@dataclass(frozen=True)
class Note:
    id: str
    text: str
    source: str


@dataclass(frozen=True)
class ConformalityColumn:
    id: str
    structure: str
    metric: str
    comparator: str
    limit: tuple[float, ...]
    minor_limit: tuple[float, ...] | None
    source: str
    note: str = ""
    confirmed: bool = True


@dataclass(frozen=True)
class ConformalityLimit:
    """Limits of one column at one PTV volume."""

    id: str
    structure: str
    metric: str
    comparator: str
    limit: float
    minor_limit: float | None
    ptv_cc: float
    clamped: bool  # PTV outside the table: the end row was used
    source: str
    confirmed: bool

    def as_rule(self, note: str = "") -> Rule:
        where = "end row (PTV outside the table)" if self.clamped else "linear interpolation"
        return Rule(
            id=self.id,
            structure=self.structure,
            metric=self.metric,
            comparator=self.comparator,
            limit=self.limit,
            minor_limit=self.minor_limit,
            unit=_unit_of(self.metric),
            source=f"{self.source}; {where} at PTV {self.ptv_cc:.1f} cc",
            section="conformality (by PTV volume)",
            note=note,
            confirmed=self.confirmed,
        )


@dataclass(frozen=True)
class ConformalityTable:
    id: str
    title: str
    source: str
    ptv_cc: tuple[float, ...]
    columns: tuple[ConformalityColumn, ...]
    conditions: Mapping[str, Any] = field(default_factory=dict)

    def limits_at(self, ptv_cc: float) -> dict[str, ConformalityLimit]:
        """Limits of every column at ``ptv_cc``: linear between rows, end rows outside."""
        v = float(ptv_cc)
        if not math.isfinite(v) or v <= 0:
            raise InputError(f"conformality table {self.id}: PTV volume must be > 0 cc, got {ptv_cc!r}")
        xs = self.ptv_cc
        clamped = v < xs[0] or v > xs[-1]
        out: dict[str, ConformalityLimit] = {}
        for col in self.columns:
            minor = None if col.minor_limit is None else _interpolate(v, xs, col.minor_limit)
            out[col.metric] = ConformalityLimit(
                id=col.id,
                structure=col.structure,
                metric=col.metric,
                comparator=col.comparator,
                limit=_interpolate(v, xs, col.limit),
                minor_limit=minor,
                ptv_cc=v,
                clamped=clamped,
                source=col.source or self.source,
                confirmed=col.confirmed,
            )
        return out


@dataclass(frozen=True)
class ProtocolInfo:
    """What ``sbrt protocols`` lists."""

    id: str
    title: str
    source: str
    version: str
    sites: tuple[str, ...]
    fractions: tuple[int, ...] | None
    n_rules: int
    path: str
    builtin: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "source": self.source,
            "version": self.version,
            "sites": list(self.sites),
            "fractions": "any" if self.fractions is None else list(self.fractions),
            "rules": self.n_rules,
            "path": self.path,
            "builtin": self.builtin,
        }


@dataclass(frozen=True)
class Protocol:
    """A validated protocol: rules (with includes resolved), schemes, QA items, tables."""

    id: str
    title: str
    source: str
    version: str
    sites: tuple[str, ...]
    fractions: tuple[int, ...] | None  # None = any number of fractions
    rules: tuple[Rule, ...]
    fractionation: tuple[FractionationScheme, ...] = ()
    qa_items: tuple[QaItem, ...] = ()
    notes: tuple[Note, ...] = ()
    conformality: ConformalityTable | None = None
    description: str = ""
    path: str = ""
    builtin: bool = False

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise InputError(f"protocol {self.id}: no rule '{rule_id}'")

    def covers_fractions(self, fractions: int) -> bool:
        return self.fractions is None or int(fractions) in self.fractions

    def roles(self) -> list[str]:
        """Every role that a rule or table column of the protocol refers to."""
        found = [r.structure for r in self.rules]
        if self.conformality:
            found += [c.structure for c in self.conformality.columns]
        return list(dict.fromkeys(found))

    def conformality_limits(self, ptv_cc: float) -> dict[str, ConformalityLimit]:
        """The conformality table's limits at ``ptv_cc`` (InputError if the protocol has no table)."""
        if self.conformality is None:
            raise InputError(f"protocol {self.id} has no conformality table")
        return self.conformality.limits_at(ptv_cc)

    def rules_for(
        self,
        fractions: int,
        site_class: str | None = None,
        conditions: Mapping[str, Any] | None = None,
    ) -> RuleSelection:
        """Rules that apply to a plan of ``fractions`` fractions under ``conditions``.

        ``conditions`` holds the plan's facts (``child_pugh``, ``histology``,
        ``gtv_diameter_cm``, ``ptv_cc`` ...; ``site_class`` may be given either way).
        Rules whose conditions are not met, or need a fact that was not given, come back in
        ``skipped`` with the reason. With ``ptv_cc`` the conformality table's columns are
        added as rules with interpolated limits.
        """
        n = _plan_fractions(fractions, self)
        facts = _plan_facts(dict(conditions or {}), site_class, n)
        selected: list[Rule] = []
        skipped: list[SkippedRule] = []
        for rule in self.rules:
            verdict = _conditions_hold(rule.conditions, facts)
            if verdict is None:
                selected.append(rule)
            else:
                skipped.append(SkippedRule(rule, verdict[0], verdict[1]))
        if self.conformality is not None:
            self._table_rules(facts, selected, skipped)
        return RuleSelection(selected, skipped)

    def _table_rules(self, facts: Mapping[str, Any], selected: list[Rule], skipped: list[SkippedRule]) -> None:
        table = self.conformality
        assert table is not None
        verdict = _conditions_hold(table.conditions, facts)
        if verdict is None and "ptv_cc" not in facts:
            verdict = ("needs the PTV volume (ptv_cc) to interpolate the conformality table", True)
        if verdict is None:
            for lim in table.limits_at(float(facts["ptv_cc"])).values():
                selected.append(lim.as_rule(_column(table, lim.id).note))
            return
        for col in table.columns:
            placeholder = Rule(
                id=col.id,
                structure=col.structure,
                metric=col.metric,
                comparator=col.comparator,
                limit=None,
                source=col.source or table.source,
                section="conformality (by PTV volume)",
                note=col.note,
                confirmed=col.confirmed,
                limit_text="limit depends on the PTV volume",
            )
            skipped.append(SkippedRule(placeholder, verdict[0], verdict[1]))

    def fractionation_for(self, site_class: str | None = None) -> list[FractionationScheme]:
        """Schemes of the protocol, those for ``site_class`` only when it is given."""
        if site_class is None:
            return list(self.fractionation)
        facts = _plan_facts({}, site_class, None)
        return [s for s in self.fractionation if _site_matches(s.conditions, facts)]

    def info(self) -> ProtocolInfo:
        return ProtocolInfo(
            self.id,
            self.title,
            self.source,
            self.version,
            self.sites,
            self.fractions,
            len(self.rules) + (len(self.conformality.columns) if self.conformality else 0),
            self.path,
            self.builtin,
        )

    def to_json(self) -> dict[str, Any]:
        table = None
        if self.conformality is not None:
            t = self.conformality
            table = {
                "id": t.id,
                "title": t.title,
                "source": t.source,
                "ptv_cc": list(t.ptv_cc),
                "interpolation": "linear",
                "outside": "clamp",
                "conditions": dict(t.conditions),
                "columns": [
                    {
                        "id": c.id,
                        "structure": c.structure,
                        "metric": c.metric,
                        "comparator": c.comparator,
                        "limit": list(c.limit),
                        "minor_limit": None if c.minor_limit is None else list(c.minor_limit),
                        "source": c.source or t.source,
                        "note": c.note,
                        "confirmed": c.confirmed,
                    }
                    for c in t.columns
                ],
            }
        return {
            **self.info().to_json(),
            "description": self.description,
            "rules": [r.to_json() for r in self.rules],
            "conformality": table,
            "fractionation": [s.to_json() for s in self.fractionation],
            "qa_items": [q.to_json() for q in self.qa_items],
            "notes": [{"id": n.id, "text": n.text, "source": n.source} for n in self.notes],
        }


# --------------------------------------------------------------------------- public API


def search_dirs(extra_dirs: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """User folders of the search path: ``SBRT_PROTOCOL_PATH`` entries, then ``extra_dirs``."""
    dirs: list[Path] = []
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if entry.strip():
            dirs.append(_checked_dir(Path(entry.strip()), f"{ENV_VAR} entry"))
    for entry in extra_dirs:
        dirs.append(_checked_dir(Path(entry), "protocol folder"))
    return dirs


def list_protocols(extra_dirs: Iterable[str | os.PathLike[str]] = ()) -> list[ProtocolInfo]:
    """Every protocol of the search path, sorted by id (all files validated)."""
    index = _index(extra_dirs)
    return [_resolve(pid, index, ()).info() for pid in sorted(index)]


def load_protocol(protocol_id: str, extra_dirs: Iterable[str | os.PathLike[str]] = ()) -> Protocol:
    """The protocol ``protocol_id``; InputError listing the known ids if there is none."""
    index = _index(extra_dirs)
    if protocol_id not in index:
        raise InputError(f"unknown protocol '{protocol_id}'; known protocols: {', '.join(sorted(index))}")
    return _resolve(protocol_id, index, ())


def load_protocol_file(path: str | os.PathLike[str]) -> Protocol:
    """One protocol file on its own (includes resolved against the whole search path)."""
    raw = _parse_file(Path(path), builtin=False)
    index = dict(_index(()))
    other = index.get(raw.id)
    if other is not None and other.path.resolve() != raw.path.resolve():
        raise InputError(f"{path}: protocol id '{raw.id}' is also defined in {other.path}; ids must be unique")
    index[raw.id] = raw
    return _resolve(raw.id, index, ())


def check_condition_values(conditions: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a plan's facts (``--site-class``, Child-Pugh class ...) against the vocabulary."""
    return _plan_facts(dict(conditions), None, None)


def conditions_hold(conditions: Mapping[str, Any], facts: Mapping[str, Any]) -> tuple[str, bool] | None:
    """None if ``conditions`` (of a rule) hold for ``facts``; else (reason, undetermined)."""
    return _conditions_hold(conditions, facts)


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Include:
    protocol: str
    rules: tuple[str, ...]
    source: str
    note: str
    conditions: Mapping[str, Any]


@dataclass(frozen=True)
class _RawProtocol:
    id: str
    path: Path
    builtin: bool
    own: Protocol  # the file's own content (includes not yet resolved)
    includes: tuple[_Include, ...]


_FILE_CACHE: dict[tuple[str, int, int], _RawProtocol] = {}


def _builtin_files() -> list[Path]:
    from importlib.resources import files

    folder = files("sbrtstandards").joinpath("protocols")
    out = []
    for item in folder.iterdir():
        if item.name.endswith(".toml") and item.is_file():
            out.append(Path(str(item)))
    return sorted(out)


def _checked_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{what} '{path}' is not a folder")
    return path


def _index(extra_dirs: Iterable[str | os.PathLike[str]]) -> dict[str, _RawProtocol]:
    """id -> parsed file over the whole search path; duplicate ids are an error."""
    files = [(p, True) for p in _builtin_files()]
    for folder in search_dirs(extra_dirs):
        files += [(p, False) for p in sorted(folder.glob("*.toml")) if p.is_file()]
    index: dict[str, _RawProtocol] = {}
    for path, builtin in files:
        raw = _parse_file(path, builtin)
        if raw.id in index:
            if index[raw.id].path.resolve() == path.resolve():
                continue
            raise InputError(
                f"{path}: protocol id '{raw.id}' is also defined in {index[raw.id].path}; ids must be unique"
            )
        index[raw.id] = raw
    return index


def _parse_file(path: Path, builtin: bool) -> _RawProtocol:
    try:
        stat = path.stat()
    except OSError as exc:
        raise InputError(f"{path}: cannot read protocol file ({exc.strerror})") from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    cached = _FILE_CACHE.get(key)
    if cached is not None:
        return cached
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: protocol file is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    validator = _Validator(path, builtin)
    own = validator.protocol(data)
    raw = _RawProtocol(own.id, path, builtin, own, tuple(validator.includes))
    _FILE_CACHE[key] = raw
    return raw


def _resolve(protocol_id: str, index: Mapping[str, _RawProtocol], stack: tuple[str, ...]) -> Protocol:
    """The protocol with its ``[[include]]`` rules added (cycles are errors)."""
    raw = index[protocol_id]
    if protocol_id in stack:
        chain = " -> ".join((*stack, protocol_id))
        raise InputError(f"{raw.path}: field 'include': protocols include each other ({chain})")
    rules = list(raw.own.rules)
    for i, inc in enumerate(raw.includes):
        where = f"{raw.path}: include[{i}]"
        if inc.protocol not in index:
            known = ", ".join(sorted(index))
            raise InputError(f"{where}: field 'protocol': unknown protocol '{inc.protocol}'; known protocols: {known}")
        other = _resolve(inc.protocol, index, (*stack, protocol_id))
        by_id = {r.id: r for r in other.rules}
        for rid in inc.rules:
            if rid not in by_id:
                raise InputError(f"{where}: field 'rules': protocol {inc.protocol} has no rule '{rid}'")
            rules.append(_included_rule(by_id[rid], inc, where))
    seen: dict[str, str] = {}
    for r in rules:
        if r.id in seen:
            raise InputError(
                f"{raw.path}: rule '{r.id}': field 'id': duplicate rule id (also from {seen[r.id] or 'this file'})"
            )
        seen[r.id] = r.included_from
    if raw.own.conformality is not None:
        for col in raw.own.conformality.columns:
            if col.id in seen:
                raise InputError(f"{raw.path}: rule '{col.id}': field 'id': duplicate id (conformality column)")
    return replace(raw.own, rules=tuple(rules))


def _included_rule(base: Rule, inc: _Include, where: str) -> Rule:
    """A copy of ``base`` citing the including document, with the include's extra conditions."""
    conditions = dict(base.conditions)
    for key, value in inc.conditions.items():
        if key in conditions and conditions[key] != value:
            raise InputError(
                f"{where}: field 'conditions.{key}': conflicts with rule '{base.id}' ({conditions[key]!r})"
            )
        conditions[key] = value
    note = "; ".join(t for t in (base.note, inc.note) if t)
    return replace(
        base,
        source=f"{base.source}; listed in {inc.source}",
        note=note,
        conditions=conditions,
        included_from=inc.protocol,
    )


class _Validator:
    """Checks one parsed file; every error names the file, the entry and the field."""

    def __init__(self, path: Path, builtin: bool) -> None:
        self.path = path
        self.builtin = builtin
        self.includes: list[_Include] = []

    def fail(self, where: str, fld: str, problem: str) -> InputError:
        return InputError(f"{self.path}: {where}field '{fld}': {problem}")

    # ---- helpers
    def keys(self, table: Any, allowed: set[str], required: Sequence[str], where: str) -> None:
        if not isinstance(table, dict):
            raise InputError(f"{self.path}: {where}must be a table, got {type(table).__name__}")
        for k in table:
            if k not in allowed:
                raise self.fail(where, k, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for k in required:
            if k not in table:
                raise self.fail(where, k, "missing")

    def text(self, table: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
        value = table.get(key, default)
        if not isinstance(value, str) or (key in table and not value.strip()):
            raise self.fail(where, key, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def number(self, value: Any, where: str, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(where, key, f"must be a number, got {value!r}")
        return float(value)

    def boolean(self, table: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(where, key, f"must be true or false, got {value!r}")
        return value

    def ident(self, table: Mapping[str, Any], where: str) -> str:
        value = table.get("id")
        if not isinstance(value, str) or not _ID.match(value):
            raise self.fail(where, "id", f"must be lower-case letters, digits, '.', '_' or '-', got {value!r}")
        return value

    def limit_value(self, value: Any, comparator: str, where: str, key: str) -> Limit:
        if comparator == "range":
            if not isinstance(value, list) or len(value) != 2:
                raise self.fail(where, key, f"comparator 'range' needs [low, high], got {value!r}")
            lo, hi = (self.number(v, where, key) for v in value)
            if lo > hi:
                raise self.fail(where, key, f"range [{lo}, {hi}] has low > high")
            return (lo, hi)
        return self.number(value, where, key)

    def comparator(self, table: Mapping[str, Any], where: str, allowed: Sequence[str]) -> str:
        value = table.get("comparator")
        if value not in allowed:
            raise self.fail(where, "comparator", f"{value!r} is not one of {' '.join(allowed)}")
        return str(value)

    def role(self, table: Mapping[str, Any], where: str) -> str:
        value = table.get("structure")
        if not isinstance(value, str) or value not in names.ROLES:
            raise self.fail(where, "structure", f"unknown role {value!r}; known roles: {', '.join(names.ROLES)}")
        return value

    def metric(self, table: Mapping[str, Any], role: str, where: str) -> str:
        value = table.get("metric")
        if not isinstance(value, str):
            raise self.fail(where, "metric", f"must be a string, got {value!r}")
        if role == names.PLAN:
            if value not in PLAN_METRICS:
                raise self.fail(where, "metric", f"{value!r} is not a plan metric ({', '.join(PLAN_METRICS)})")
            return value
        if value in PLAN_METRICS:
            raise self.fail(where, "metric", f'plan metric {value!r} needs structure = "plan"')
        if not _DVH_METRIC.match(value):
            raise self.fail(
                where,
                "metric",
                f"{value!r} is not a TG-263 DVH metric (e.g. D95%[Gy], D0.03cc[Gy], V20Gy[%], V100%[%], "
                "CV15Gy[cc], Mean[Gy], Max[Gy])",
            )
        problem = _external_metric_problem(value)
        if problem:
            raise self.fail(where, "metric", f"{value!r} rejected by sbrtstandards.metrics: {problem}")
        return value

    def conditions(self, table: Mapping[str, Any], where: str) -> dict[str, Any]:
        value = table.get("conditions", {})
        if not isinstance(value, dict):
            raise self.fail(where, "conditions", f"must be a table, got {value!r}")
        out: dict[str, Any] = {}
        for key, spec in value.items():
            if key not in CONDITIONS:
                raise self.fail(where, f"conditions.{key}", f"unknown condition (known: {', '.join(CONDITIONS)})")
            kind, allowed, _ = CONDITIONS[key]
            out[key] = self._condition_value(key, kind, allowed, spec, where)
        return out

    def _condition_value(self, key: str, kind: str, allowed: tuple[Any, ...] | None, spec: Any, where: str) -> Any:
        fld = f"conditions.{key}"
        items = spec if isinstance(spec, list) else [spec]
        if kind == "int":
            if not items or any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in items):
                raise self.fail(where, fld, f"must be a whole number >= 1 or a list of them, got {spec!r}")
            return tuple(items)
        if kind == "enum":
            if not items or any(i not in (allowed or ()) for i in items):
                raise self.fail(where, fld, f"{spec!r}: allowed values are {', '.join(map(str, allowed or ()))}")
            return tuple(items)
        if kind == "bool":
            if not isinstance(spec, bool):
                raise self.fail(where, fld, f"must be true or false, got {spec!r}")
            return spec
        if not isinstance(spec, str) or not _NUMERIC_CONDITION.match(spec):
            raise self.fail(where, fld, f'must be a comparison such as ">= 1.5", got {spec!r}')
        return spec.strip()

    # ---- sections
    def protocol(self, data: Mapping[str, Any]) -> Protocol:
        self.keys(data, _TOP_KEYS, _TOP_REQUIRED, "")
        if data["schema_version"] != SCHEMA_VERSION:
            raise self.fail("", "schema_version", f"must be {SCHEMA_VERSION}, got {data['schema_version']!r}")
        pid = self.ident(data, "")
        sites = data["sites"]
        if not isinstance(sites, list) or not sites or not all(isinstance(s, str) and s for s in sites):
            raise self.fail("", "sites", f"must be a non-empty list of strings, got {sites!r}")
        fractions = self._covered(data["fractions"])
        rules = [self.rule(r, i) for i, r in enumerate(self._list(data, "rules"))]
        self._unique([r.id for r in rules], "rule")
        schemes = [self.scheme(s, i) for i, s in enumerate(self._list(data, "fractionation"))]
        self._unique([s.id for s in schemes], "fractionation")
        qa = [self.qa_item(q, i) for i, q in enumerate(self._list(data, "qa_items"))]
        self._unique([q.id for q in qa], "qa_items")
        notes = [self.note(n, i) for i, n in enumerate(self._list(data, "notes"))]
        self._unique([n.id for n in notes], "notes")
        self.includes = [self.include(inc, i) for i, inc in enumerate(self._list(data, "include"))]
        table = self.table(data["conformality"]) if "conformality" in data else None
        if table is not None:
            self._unique([r.id for r in rules] + [c.id for c in table.columns], "rule")
        if not rules and table is None and not data.get("include"):
            raise self.fail("", "rules", "the protocol has no rules")
        return Protocol(
            id=pid,
            title=self.text(data, "title", ""),
            source=self.text(data, "source", ""),
            version=self.text(data, "version", ""),
            sites=tuple(sites),
            fractions=fractions,
            rules=tuple(rules),
            fractionation=tuple(schemes),
            qa_items=tuple(qa),
            notes=tuple(notes),
            conformality=table,
            description=self.text(data, "description", "") if "description" in data else "",
            path=str(self.path),
            builtin=self.builtin,
        )

    def _list(self, data: Mapping[str, Any], key: str) -> list[Any]:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise self.fail("", key, f"must be an array of tables ([[{key}]]), got {type(value).__name__}")
        return value

    def _unique(self, ids: list[str], what: str) -> None:
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise self.fail(f"{what} '{i}': ", "id", "duplicate id")
            seen.add(i)

    def _covered(self, value: Any) -> tuple[int, ...] | None:
        if value == "any":
            return None
        if (
            not isinstance(value, list)
            or not value
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
        ):
            raise self.fail("", "fractions", f'must be "any" or a list of whole numbers >= 1, got {value!r}')
        return tuple(sorted(set(value)))

    def _where(self, kind: str, entry: Any, index: int) -> str:
        rid = entry.get("id") if isinstance(entry, dict) else None
        return f"{kind} '{rid}': " if isinstance(rid, str) else f"{kind}[{index}] (no id): "

    def rule(self, entry: Any, index: int) -> Rule:
        where = self._where("rule", entry, index)
        self.keys(entry, _RULE_KEYS, _RULE_REQUIRED, where)
        rid = self.ident(entry, where)
        role = self.role(entry, where)
        metric = self.metric(entry, role, where)
        comp = self.comparator(entry, where, COMPARATORS)
        limit: Limit | None = None
        minor: Limit | None = None
        limit_text = self.text(entry, "limit_text", where) if "limit_text" in entry else ""
        if comp == "report":
            for k in ("limit", "minor_limit"):
                if k in entry:
                    raise self.fail(where, k, "a 'report' rule has no numeric limit (use limit_text)")
            if not limit_text:
                raise self.fail(where, "limit_text", "missing (a 'report' rule says in words what is asked)")
        else:
            if "limit" not in entry:
                raise self.fail(where, "limit", "missing")
            limit = self.limit_value(entry["limit"], comp, where, "limit")
            if "minor_limit" in entry:
                minor = self.limit_value(entry["minor_limit"], comp, where, "minor_limit")
                self._minor_is_lenient(comp, limit, minor, where)
        unit = _unit_of(metric)
        if "unit" in entry:
            given = entry["unit"]
            if not isinstance(given, str) or given != unit:
                raise self.fail(where, "unit", f"{given!r} does not match the metric {metric} (unit {unit!r})")
        priority = entry.get("priority", "mandatory")
        if priority not in PRIORITIES:
            raise self.fail(where, "priority", f"{priority!r} is not one of {' '.join(PRIORITIES)}")
        dose_model = entry.get("dose_model", "physical")
        if dose_model not in DOSE_MODELS:
            raise self.fail(where, "dose_model", f"{dose_model!r} is not one of {' '.join(DOSE_MODELS)}")
        ab = None
        if "alpha_beta_gy" in entry:
            ab = self.number(entry["alpha_beta_gy"], where, "alpha_beta_gy")
            if ab <= 0:
                raise self.fail(where, "alpha_beta_gy", f"must be > 0, got {ab}")
        if (dose_model != "physical" or metric == "Rx_BED[Gy]") and ab is None:
            raise self.fail(where, "alpha_beta_gy", f"missing (needed by dose_model {dose_model} / {metric})")
        discounts = self._discounts(entry, where) if "prior_dose_discount_percent" in entry else None
        return Rule(
            id=rid,
            structure=role,
            metric=metric,
            comparator=comp,
            limit=limit,
            minor_limit=minor,
            unit=unit,
            priority=priority,
            per_fraction=self.boolean(entry, "per_fraction", where, False),
            dose_model=dose_model,
            alpha_beta_gy=ab,
            prior_dose_discount_percent=discounts,
            conditions=self.conditions(entry, where),
            section=self.text(entry, "section", where) if "section" in entry else "",
            source=self.text(entry, "source", where),
            note=self.text(entry, "note", where) if "note" in entry else "",
            limit_text=limit_text,
            confirmed=self.boolean(entry, "confirmed", where, True),
            file=str(self.path),
        )

    def _minor_is_lenient(self, comp: str, limit: Limit, minor: Limit, where: str) -> None:
        ok = True
        if comp in ("<", "<=", "abs<", "abs<="):
            ok = float(minor) > float(limit)  # type: ignore[arg-type]
        elif comp in (">", ">="):
            ok = float(minor) < float(limit)  # type: ignore[arg-type]
        elif comp == "range":
            lo, hi = limit  # type: ignore[misc]
            mlo, mhi = minor  # type: ignore[misc]
            ok = mlo <= lo and mhi >= hi and (mlo, mhi) != (lo, hi)
        if not ok:
            raise self.fail(
                where, "minor_limit", f"{minor!r} is not more lenient than limit {limit!r} for comparator {comp}"
            )

    def _discounts(self, entry: Mapping[str, Any], where: str) -> dict[str, float]:
        value = entry["prior_dose_discount_percent"]
        fld = "prior_dose_discount_percent"
        if not isinstance(value, dict) or set(value) != set(INTERVAL_BANDS):
            raise self.fail(where, fld, f"must give every interval band {', '.join(INTERVAL_BANDS)}, got {value!r}")
        out = {}
        for band in INTERVAL_BANDS:
            pct = self.number(value[band], where, f"{fld}.{band}")
            if not 0 <= pct <= 100:
                raise self.fail(where, f"{fld}.{band}", f"must be 0-100 %, got {pct}")
            out[band] = pct
        return out

    def scheme(self, entry: Any, index: int) -> FractionationScheme:
        where = self._where("fractionation", entry, index)
        self.keys(entry, _FX_KEYS, _FX_REQUIRED, where)
        sid = self.ident(entry, where)
        dose = entry["dose_gy"]
        dose_v: float | tuple[float, float]
        if isinstance(dose, list):
            dose_v = self.limit_value(dose, "range", where, "dose_gy")  # type: ignore[assignment]
        else:
            dose_v = self.number(dose, where, "dose_gy")
        fx = entry["fractions"]
        fx_v: int | tuple[int, int]
        if isinstance(fx, list):
            if len(fx) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in fx) or fx[0] > fx[1]:
                raise self.fail(where, "fractions", f"must be a whole number or [low, high], got {fx!r}")
            fx_v = (fx[0], fx[1])
        elif isinstance(fx, bool) or not isinstance(fx, int) or fx < 1:
            raise self.fail(where, "fractions", f"must be a whole number >= 1, got {fx!r}")
        else:
            fx_v = fx
        stated = None
        if "bed10_gy" in entry:
            stated = self.number(entry["bed10_gy"], where, "bed10_gy")
        scheme = FractionationScheme(
            id=sid,
            dose_gy=dose_v,
            fractions=fx_v,
            source=self.text(entry, "source", where),
            bed10_stated_gy=stated,
            indication=self.text(entry, "indication", where) if "indication" in entry else "",
            evidence=self.text(entry, "evidence", where) if "evidence" in entry else "",
            conditions=self.conditions(entry, where),
            note=self.text(entry, "note", where) if "note" in entry else "",
        )
        if stated is not None:
            computed = scheme.bed10_gy()
            if computed is None:
                raise self.fail(where, "bed10_gy", "a BED figure needs a single dose and fraction number")
            if abs(computed - stated) > 0.5:
                raise self.fail(where, "bed10_gy", f"{stated} Gy disagrees with the computed BED10 {computed:.2f} Gy")
        return scheme

    def qa_item(self, entry: Any, index: int) -> QaItem:
        where = self._where("qa_items", entry, index)
        self.keys(entry, _QA_KEYS, _QA_REQUIRED, where)
        qid = self.ident(entry, where)
        category = entry["category"]
        if category not in QA_CATEGORIES:
            raise self.fail(where, "category", f"{category!r} is not one of {', '.join(QA_CATEGORIES)}")
        comp = self.comparator(entry, where, QA_COMPARATORS)
        unit = entry["unit"]
        if not isinstance(unit, str):
            raise self.fail(where, "unit", f"must be a string ('' for none), got {unit!r}")
        return QaItem(
            id=qid,
            category=category,
            item=self.text(entry, "item", where),
            comparator=comp,
            value=self.limit_value(entry["value"], comp, where, "value"),
            unit=unit,
            source=self.text(entry, "source", where),
            conditions=self.conditions(entry, where),
            note=self.text(entry, "note", where) if "note" in entry else "",
            confirmed=self.boolean(entry, "confirmed", where, True),
        )

    def note(self, entry: Any, index: int) -> Note:
        where = self._where("notes", entry, index)
        self.keys(entry, _NOTE_KEYS, ("id", "text", "source"), where)
        return Note(self.ident(entry, where), self.text(entry, "text", where), self.text(entry, "source", where))

    def include(self, entry: Any, index: int) -> _Include:
        where = f"include[{index}]: "
        self.keys(entry, _INCLUDE_KEYS, ("protocol", "rules", "source"), where)
        if not isinstance(entry["protocol"], str) or not _ID.match(entry["protocol"]):
            raise self.fail(where, "protocol", f"must be a protocol id, got {entry['protocol']!r}")
        ids = entry["rules"]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise self.fail(where, "rules", f"must be a non-empty list of rule ids, got {ids!r}")
        return _Include(
            protocol=entry["protocol"],
            rules=tuple(ids),
            source=self.text(entry, "source", where),
            note=self.text(entry, "note", where) if "note" in entry else "",
            conditions=self.conditions(entry, where),
        )

    def table(self, entry: Any) -> ConformalityTable:
        where = "conformality: "
        self.keys(entry, _TABLE_KEYS, _TABLE_REQUIRED, where)
        if entry["interpolation"] != "linear":
            raise self.fail(where, "interpolation", f'only "linear" is supported, got {entry["interpolation"]!r}')
        if entry["outside"] != "clamp":
            raise self.fail(where, "outside", f'only "clamp" is supported, got {entry["outside"]!r}')
        xs_raw = entry["ptv_cc"]
        if not isinstance(xs_raw, list) or len(xs_raw) < 2:
            raise self.fail(where, "ptv_cc", "must list at least two PTV volumes")
        xs = tuple(self.number(x, where, "ptv_cc") for x in xs_raw)
        if any(b <= a for a, b in zip(xs, xs[1:])) or xs[0] <= 0:
            raise self.fail(where, "ptv_cc", f"must be positive and strictly increasing, got {list(xs)}")
        cols_raw = entry["columns"]
        if not isinstance(cols_raw, list) or not cols_raw:
            raise self.fail(where, "columns", "must be a non-empty array of tables ([[conformality.columns]])")
        columns = [self.column(c, i, len(xs)) for i, c in enumerate(cols_raw)]
        metrics = [c.metric for c in columns]
        if len(set(metrics)) != len(metrics):
            raise self.fail(where, "columns", "two columns have the same metric")
        return ConformalityTable(
            id=self.ident(entry, where),
            title=self.text(entry, "title", where),
            source=self.text(entry, "source", where),
            ptv_cc=xs,
            columns=tuple(columns),
            conditions=self.conditions(entry, where),
        )

    def column(self, entry: Any, index: int, n_rows: int) -> ConformalityColumn:
        where = "conformality." + self._where("columns", entry, index)
        self.keys(entry, _COLUMN_KEYS, _COLUMN_REQUIRED, where)
        cid = self.ident(entry, where)
        role = self.role(entry, where)
        metric = self.metric(entry, role, where)
        comp = self.comparator(entry, where, ("<", "<=", ">", ">="))
        limit = self._row_values(entry, "limit", n_rows, where)
        minor = self._row_values(entry, "minor_limit", n_rows, where) if "minor_limit" in entry else None
        if minor is not None:
            for lo, mi in zip(limit, minor):
                self._minor_is_lenient(comp, lo, mi, where)
        return ConformalityColumn(
            id=cid,
            structure=role,
            metric=metric,
            comparator=comp,
            limit=limit,
            minor_limit=minor,
            source=self.text(entry, "source", where) if "source" in entry else "",
            note=self.text(entry, "note", where) if "note" in entry else "",
            confirmed=self.boolean(entry, "confirmed", where, True),
        )

    def _row_values(self, entry: Mapping[str, Any], key: str, n_rows: int, where: str) -> tuple[float, ...]:
        values = entry[key]
        if not isinstance(values, list) or len(values) != n_rows:
            raise self.fail(where, key, f"must hold one value per ptv_cc row ({n_rows}), got {values!r}")
        return tuple(self.number(v, where, key) for v in values)


# --------------------------------------------------------------------------- helpers


def _external_metric_problem(metric: str) -> str:
    """Ask the DVH-metrics parser (if the package has one) whether it accepts ``metric``."""
    try:
        mod = importlib.import_module("sbrtstandards.metrics")
    except ImportError:
        return ""
    parse = getattr(mod, "parse_metric", None)
    if parse is None:
        return ""
    try:
        parse(metric)
    except Exception as exc:  # the parser's own error type is not known here
        return str(exc) or type(exc).__name__
    return ""


def _unit_of(metric: str) -> str:
    if metric in PLAN_METRICS:
        return PLAN_METRICS[metric][0]
    m = re.search(r"\[([^\]]+)\]$", metric)
    return m.group(1) if m else ""


def _scale(limit: Limit | None, factor: int) -> Limit | None:
    if limit is None:
        return None
    if isinstance(limit, tuple):
        return (limit[0] * factor, limit[1] * factor)
    return limit * factor


def satisfies(value: float, comparator: str, limit: Limit | None) -> bool:
    """``value comparator limit`` (``range`` inclusive, ``abs<=`` compares |value|); no limit: False."""
    if limit is None:
        return False
    if comparator == "range":
        lo, hi = limit  # type: ignore[misc]
        return lo <= value <= hi
    lim = float(limit)  # type: ignore[arg-type]
    return {
        "<": value < lim,
        "<=": value <= lim,
        ">": value > lim,
        ">=": value >= lim,
        "abs<": abs(value) < lim,
        "abs<=": abs(value) <= lim,
        "==": value == lim,
    }[comparator]


def _fmt(x: float) -> str:
    return f"{x:g}"


def format_limit(comparator: str, limit: Limit | None, limit_text: str = "") -> str:
    """A limit as people write it: ``< 20``, ``110-150``, ``within ±3``, ``(no numeric limit: ALARA)``."""
    if comparator == "report" or limit is None:
        return f"(no numeric limit: {limit_text})" if limit_text else ""
    if isinstance(limit, tuple):
        return f"{_fmt(limit[0])}-{_fmt(limit[1])}"
    if comparator.startswith("abs"):
        return f"within ±{_fmt(limit)}" + (" (exclusive)" if comparator == "abs<" else "")
    return f"{comparator} {_fmt(limit)}"


def _jsonable_limit(limit: Any) -> Any:
    return list(limit) if isinstance(limit, tuple) else limit


def _interpolate(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Linear interpolation with the end values outside (x0 + t (x1 - x0), as the RTOG tables mean)."""
    if x <= xs[0]:
        return float(ys[0])
    if x >= xs[-1]:
        return float(ys[-1])
    for i in range(1, len(xs)):
        if x <= xs[i]:
            t = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
            return float(ys[i - 1] + t * (ys[i] - ys[i - 1]))
    raise AssertionError("unreachable")  # pragma: no cover


def _column(table: ConformalityTable, column_id: str) -> ConformalityColumn:
    return next(c for c in table.columns if c.id == column_id)


def _plan_fractions(fractions: Any, protocol: Protocol) -> int:
    if isinstance(fractions, bool) or not isinstance(fractions, int) or fractions < 1:
        raise InputError(f"number of fractions must be a whole number >= 1, got {fractions!r}")
    if not protocol.covers_fractions(fractions):
        covered = ", ".join(str(f) for f in protocol.fractions or ())
        raise InputError(
            f"protocol {protocol.id} covers {covered} fractions; it has no limits for a plan in {fractions}"
        )
    return fractions


def _plan_facts(facts: dict[str, Any], site_class: str | None, fractions: int | None) -> dict[str, Any]:
    """Validate the caller's facts against the condition vocabulary; fill defaults."""
    if site_class is not None:
        if "site_class" in facts and facts["site_class"] != site_class:
            raise InputError(f"site class given twice: {site_class!r} and {facts['site_class']!r}")
        facts["site_class"] = site_class
    if fractions is not None:
        facts["fractions"] = fractions
    for key, value in list(facts.items()):
        if key not in CONDITIONS:
            raise InputError(f"unknown plan condition '{key}'; known: {', '.join(CONDITIONS)}")
        kind, allowed, _ = CONDITIONS[key]
        if value is None:
            del facts[key]
            continue
        if kind == "enum":
            matched = [a for a in allowed or () if str(a).casefold() == str(value).strip().casefold()]
            if not matched:
                raise InputError(f"{key} {value!r}: allowed values are {', '.join(map(str, allowed or ()))}")
            facts[key] = matched[0]
        elif kind == "bool":
            if not isinstance(value, bool):
                raise InputError(f"{key} must be true or false, got {value!r}")
        elif kind in ("number", "int") and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            raise InputError(f"{key} must be a number, got {value!r}")
    for key, (_, _, default) in CONDITIONS.items():
        if default is not None and key not in facts:
            facts[key] = default
    return facts


def _conditions_hold(conditions: Mapping[str, Any], facts: Mapping[str, Any]) -> tuple[str, bool] | None:
    """None if every condition holds; else (reason, undetermined). A condition that fails wins
    over one that cannot be decided (the rule then surely does not apply)."""
    unknown: list[str] = []
    for key, spec in conditions.items():
        if key not in facts:
            unknown.append(f"applies only when {key} {_describe_condition(spec)}; {key} not given")
        elif not _condition_holds(CONDITIONS[key][0], spec, facts[key]):
            plan_value = _describe_value(facts[key])
            return (f"applies only when {key} {_describe_condition(spec)} (plan: {plan_value})", False)
    return (unknown[0], True) if unknown else None


def _describe_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _site_matches(conditions: Mapping[str, Any], facts: Mapping[str, Any]) -> bool:
    spec = conditions.get("site_class")
    return spec is None or facts.get("site_class") in spec


def _condition_holds(kind: str, spec: Any, value: Any) -> bool:
    if kind in ("int", "enum"):
        return value in spec
    if kind == "bool":
        return bool(value) is spec
    m = _NUMERIC_CONDITION.match(spec)
    assert m is not None
    return satisfies(float(value), m.group(1), float(m.group(2)))


def _describe_condition(spec: Any) -> str:
    if isinstance(spec, tuple):
        return "is " + " or ".join(str(s) for s in spec)
    if isinstance(spec, bool):
        return "is " + ("true" if spec else "false")
    return str(spec)
