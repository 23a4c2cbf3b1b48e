"""TBI set-up record checks against annex 2 of the TBI specification (``sbrt tbi``).

The rules are data (``tbi.toml`` beside this module, each with its clause); this module reads a
set-up record (JSON, the keys of the CLI contract), checks every rule and reports
``pass`` / ``minor`` / ``fail`` / ``not_evaluated`` like the plan check: ``minor`` lies between
the recommended value and the hard limit where the clause gives both ("大于160 cm ... 不得小于
140 cm"), a rule whose input is missing is ``not_evaluated`` with the reason.

Units are explicit: every record key carries its unit in its name (``smd_cm``), a value may
also be written with its unit as a string (``"4.5 m"``, ``"700 cGy"``) and is then converted; a
number outside the plausible range of its unit (an SMD of 4500 cm, a prescription of 1200 Gy)
is refused as a probable unit mistake, and unknown keys are refused (``smd_mm`` is a typo for
``smd_cm`` with another unit, not a value to ignore).

Where a dose distribution exists (a TBI plan on the patient's CT), :func:`lung_dose_from_dicom`
computes the mean whole-lung dose from the lung structures (the project's DVH engine) or from
lungs segmented on the CT, and that value is checked instead of the record's.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from sbrtstandards.errors import InputError
from sbrtstandards.programme_qa.common import (
    STATUSES,
    DataValidator,
    Limit,
    data_path,
    describe_limit,
    grade,
    jsonable_limit,
    load_toml,
    quantity,
)

Progress = Callable[[float, str], None]
KINDS = ("key", "field_min", "head_foot_margin", "site_deviation", "measured", "attest", "by_energy")
FREE_KEYS = ("patient_id", "date", "machine", "notes", "fractions")
LUNG_DOSE_DISAGREEMENT = 0.05  # warn when the record's lung dose and the computed one differ by more


# --------------------------------------------------------------------------------------------
# the rules (data)


@dataclass(frozen=True)
class KeySpec:
    name: str
    unit: str
    low: float | None = None
    high: float | None = None
    text: bool = False
    pair: bool = False
    sites: bool = False
    flag: bool = False


@dataclass(frozen=True)
class EnergyLimit:
    energy: str
    rule: str
    comparator: str
    limit: Limit
    minor_comparator: str | None = None
    minor_limit: Limit | None = None


@dataclass(frozen=True)
class TbiRule:
    id: str
    kind: str
    key: str
    rule: str
    source: str
    comparator: str | None = None
    limit: Limit | None = None
    minor_comparator: str | None = None
    minor_limit: Limit | None = None
    unit: str = ""
    applies_to: str | None = None
    note: str = ""
    energies: tuple[EnergyLimit, ...] = ()


@dataclass(frozen=True)
class TbiSpec:
    id: str
    title: str
    source: str
    keys: Mapping[str, KeySpec]
    rules: tuple[TbiRule, ...]
    path: str


@cache
def load_spec(path: str | None = None) -> TbiSpec:
    """The annex-2 rules (``tbi.toml`` unless ``path``), validated."""
    p = Path(path) if path else data_path("tbi.toml")
    data = load_toml(p)
    v = DataValidator(p)
    v.keys(data, {"schema_version", "id", "title", "source", "keys", "checks"}, ("schema_version", "id", "keys",
                                                                                   "checks", "source", "title"), "")
    if data["schema_version"] != 1:
        raise v.fail("", "schema_version", f"unsupported version {data['schema_version']!r} (expected 1)")
    keys: dict[str, KeySpec] = {}
    for name, spec in data["keys"].items():
        where = f"keys.{name}: "
        v.keys(spec, {"unit", "range", "text", "pair", "sites", "flag"}, ("unit",), where)
        rng = v.limit(spec["range"], "range", where, "range") if "range" in spec else None
        keys[name] = KeySpec(
            name,
            str(spec["unit"]),
            rng[0] if rng else None,  # type: ignore[index]
            rng[1] if rng else None,  # type: ignore[index]
            bool(spec.get("text", False)),
            bool(spec.get("pair", False)),
            bool(spec.get("sites", False)),
            bool(spec.get("flag", False)),
        )
    rules = tuple(_rule(v, entry, i, keys) for i, entry in enumerate(data["checks"]))
    v.unique([r.id for r in rules], "check id")
    return TbiSpec(data["id"], data["title"], data["source"], keys, rules, str(p))


def _rule(v: DataValidator, entry: Any, index: int, keys: Mapping[str, KeySpec]) -> TbiRule:
    where = f"checks[{index}] ({entry.get('id', '?') if isinstance(entry, dict) else '?'}): "
    allowed = {"id", "kind", "key", "rule", "comparator", "limit", "minor_comparator", "minor_limit", "unit",
               "applies_to", "source", "note", "energies"}
    v.keys(entry, allowed, ("id", "kind", "key", "rule", "source"), where)
    kind = v.choice(entry, "kind", KINDS, where)
    key = v.text(entry, "key", where)
    if key not in keys:
        raise v.fail(where, "key", f"'{key}' is not declared in [keys]")
    comp = lim = mcomp = mlim = None
    if kind in ("key", "field_min", "head_foot_margin", "site_deviation"):
        comp = v.comparator(entry, "comparator", where)
        lim = v.limit(entry.get("limit"), comp, where, "limit")
        if "minor_limit" in entry:
            mcomp = v.comparator(entry, "minor_comparator", where) if "minor_comparator" in entry else comp
            mlim = v.limit(entry["minor_limit"], mcomp, where, "minor_limit")
    energies: list[EnergyLimit] = []
    if kind == "by_energy":
        for j, e in enumerate(entry.get("energies", [])):
            w = f"{where}energies[{j}]: "
            v.keys(e, {"energy", "rule", "comparator", "limit", "minor_comparator", "minor_limit"},
                   ("energy", "rule", "comparator", "limit"), w)
            c = v.comparator(e, "comparator", w)
            mc = c if "minor_limit" in e else None
            if "minor_comparator" in e:
                mc = v.comparator(e, "minor_comparator", w)
            minor = v.limit(e["minor_limit"], mc or c, w, "minor_limit") if "minor_limit" in e else None
            energy = normalise_energy(v.text(e, "energy", w), w)
            energies.append(EnergyLimit(energy, v.text(e, "rule", w), c, v.limit(e["limit"], c, w, "limit"), mc, minor))
        if not energies:
            raise v.fail(where, "energies", "a by_energy check needs [[checks.energies]] entries")
    return TbiRule(
        id=v.ident(entry, where),
        kind=kind,
        key=key,
        rule=v.text(entry, "rule", where),
        source=v.text(entry, "source", where),
        comparator=comp,
        limit=lim,
        minor_comparator=mcomp,
        minor_limit=mlim,
        unit=str(entry.get("unit", "")),
        applies_to=entry.get("applies_to"),
        note=v.text(entry, "note", where, ""),
        energies=tuple(energies),
    )


def normalise_energy(text: Any, where: str = "energy") -> str:
    """``"Co-60"`` or ``"<n>MV"`` from the ways people write them (``6 MV``, ``6X``, ``60Co``, ``钴-60``)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: expected a beam energy such as \"6MV\", \"15MV\" or \"Co-60\", got {text!r}")
    t = text.strip().lower().replace(" ", "").replace("_", "")
    if t in ("co-60", "co60", "60co", "cobalt", "cobalt-60", "cobalt60", "钴-60", "钴60", "60钴"):
        return "Co-60"
    for suffix in ("mv", "x"):
        if t.endswith(suffix):
            number = t[: -len(suffix)]
            try:
                value = float(number)
            except ValueError:
                break
            if 0 < value <= 50:
                return f"{value:g}MV"
    raise InputError(f"{where}: {text!r} is not a beam energy (\"6MV\", \"15MV\", \"Co-60\")")


# --------------------------------------------------------------------------------------------
# the record


@dataclass
class TbiRecord:
    """A validated set-up record: numbers in the units of the keys' names."""

    values: dict[str, Any]
    source: str = ""

    def get(self, key: str) -> Any:
        return self.values.get(key)


def read_record(path: str | os.PathLike[str], spec: TbiSpec | None = None) -> TbiRecord:
    """Read and validate a JSON set-up record."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file (TBI set-up record)")
    try:
        data = json.loads(p.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    return parse_record(data, spec, str(p))


def parse_record(data: Any, spec: TbiSpec | None = None, label: str = "record") -> TbiRecord:
    """Validate a record given as a mapping (see the module docstring for the unit rules)."""
    spec = spec or load_spec()
    if not isinstance(data, dict):
        raise InputError(f"{label}: expected a JSON object of the set-up keys, got {type(data).__name__}")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        where = f"{label}: key '{key}'"
        if key in FREE_KEYS:
            values[key] = raw
            continue
        ks = spec.keys.get(key)
        if ks is None:
            raise InputError(f"{where}: unknown key{_suggest(key, list(spec.keys) + list(FREE_KEYS))}")
        if raw is None:
            continue  # explicitly unknown: the check is not evaluated
        values[key] = _parse_value(ks, raw, where)
    return TbiRecord(values, label)


def _suggest(key: str, known: Sequence[str]) -> str:
    base = key.rsplit("_", 1)[0]
    close = [k for k in known if k.startswith(base + "_") or k == base] or difflib.get_close_matches(key, known, n=2)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"{hint} (units are part of the key names; known keys: {', '.join(known)})"


def _parse_value(ks: KeySpec, raw: Any, where: str) -> Any:
    if ks.text:
        return normalise_energy(raw, where)
    if ks.flag:
        if not isinstance(raw, bool):
            raise InputError(f"{where}: expected true or false, got {raw!r}")
        return raw
    if ks.pair:
        if not isinstance(raw, (list, tuple)) or len(raw) != 2:
            raise InputError(f"{where}: expected [width, length] in {ks.unit}, got {raw!r}")
        return tuple(_number(ks, r, f"{where}[{i}]") for i, r in enumerate(raw))
    if ks.sites:
        if not isinstance(raw, dict) or not raw:
            raise InputError(f"{where}: expected {{site: dose in {ks.unit}}}, got {raw!r}")
        return {str(site): _number(ks, r, f"{where}['{site}']") for site, r in raw.items()}
    return _number(ks, raw, where)


def _number(ks: KeySpec, raw: Any, where: str) -> float:
    value = quantity(raw, ks.unit, where) if ks.unit else _plain(raw, where)
    if ks.low is not None and ks.high is not None and not ks.low <= value <= ks.high:
        unit = f" {ks.unit}" if ks.unit else ""
        raise InputError(
            f"{where}: {value:g}{unit} is outside the plausible {ks.low:g}-{ks.high:g}{unit}: "
            f"a unit mistake? (write the unit out, e.g. \"{value:g} {_other_unit(ks.unit)}\")"
        )
    return value


def _plain(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise InputError(f"{where}: expected a number, got {raw!r}")
    return float(raw)


def _other_unit(unit: str) -> str:
    return {"cm": "mm", "mm": "cm", "Gy": "cGy", "cGy/min": "Gy/min"}.get(unit, unit)


# --------------------------------------------------------------------------------------------
# checks


@dataclass
class TbiCheck:
    id: str
    rule: str
    value: float | None
    comparator: str | None
    limit: Limit | None
    minor_limit: Limit | None
    unit: str
    status: str
    source: str
    reason: str = ""
    site: str | None = None
    value_source: str | None = None
    minor_comparator: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "rule": self.rule,
            "value": None if self.value is None else round(self.value, 4),
            "limit": jsonable_limit(self.limit),
            "status": self.status,
            "source": self.source,
            "comparator": self.comparator,
            "minor_limit": jsonable_limit(self.minor_limit),
            "unit": self.unit,
        }
        if self.limit is not None and self.comparator:
            out["limit_text"] = describe_limit(self.comparator, self.limit, self.unit)
            if self.minor_limit is not None:
                out["limit_text"] += (
                    f" (minor: {describe_limit(self.minor_comparator or self.comparator, self.minor_limit, self.unit)})"
                )
        if self.site is not None:
            out["site"] = self.site
        if self.value_source:
            out["value_source"] = self.value_source
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class LungDose:
    """Mean whole-lung dose computed from a dose distribution."""

    mean_gy: float
    volume_cc: float
    method: str
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"mean_gy": round(self.mean_gy, 4), "volume_cc": round(self.volume_cc, 2), "method": self.method,
                "warnings": list(self.warnings)}


@dataclass
class TbiResult:
    record: str
    energy: str | None
    checks: list[TbiCheck]
    lung_dose: LungDose | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def to_json(self) -> dict[str, Any]:
        return {
            "checks": [c.to_json() for c in self.checks],
            "record": self.record,
            "energy": self.energy,
            "counts": self.counts,
            "lung_dose": None if self.lung_dose is None else self.lung_dose.to_json(),
            "warnings": list(self.warnings),
        }


def check_record(record: TbiRecord, *, lung_dose: LungDose | None = None, spec: TbiSpec | None = None) -> TbiResult:
    """Every annex-2 rule on ``record`` (``lung_dose``, when given, replaces the record's lung dose)."""
    spec = spec or load_spec()
    warnings: list[str] = []
    values = dict(record.values)
    lung_source = "record" if "lung_dose_gy" in values else None
    if lung_dose is not None:
        recorded = values.get("lung_dose_gy")
        if recorded is not None and abs(recorded - lung_dose.mean_gy) > LUNG_DOSE_DISAGREEMENT * max(recorded, 1e-9):
            warnings.append(
                f"the record's lung dose {recorded:g} Gy differs from the computed mean lung dose "
                f"{lung_dose.mean_gy:.2f} Gy by more than {LUNG_DOSE_DISAGREEMENT:.0%}; the computed value is checked"
            )
        values["lung_dose_gy"] = lung_dose.mean_gy
        lung_source = f"computed: {lung_dose.method}"
        warnings.extend(lung_dose.warnings)
    energy = values.get("energy")
    checks: list[TbiCheck] = []
    for rule in spec.rules:
        checks.extend(_evaluate(rule, values, energy, lung_source))
    return TbiResult(record.source, energy, checks, lung_dose, warnings)


def _evaluate(rule: TbiRule, values: Mapping[str, Any], energy: str | None, lung_source: str | None) -> list[TbiCheck]:
    def make(value: float | None, status: str, reason: str = "", **kw: Any) -> TbiCheck:
        return TbiCheck(rule.id, kw.pop("rule", rule.rule), value, kw.pop("comparator", rule.comparator),
                        kw.pop("limit", rule.limit), kw.pop("minor_limit", rule.minor_limit), rule.unit, status,
                        rule.source, reason, minor_comparator=kw.pop("minor_comparator", rule.minor_comparator), **kw)

    def graded(value: float, **kw: Any) -> TbiCheck:
        comp, lim = kw.get("comparator", rule.comparator), kw.get("limit", rule.limit)
        mcomp, mlim = kw.get("minor_comparator", rule.minor_comparator), kw.get("minor_limit", rule.minor_limit)
        status = grade(value, comp, lim, mcomp, mlim)  # type: ignore[arg-type]
        reason = rule.note if status != "pass" and rule.note else ""
        if status == "minor":
            reason = reason or "beyond the recommended value, within the hard limit"
        return make(value, status, reason, **kw)

    missing = f"'{rule.key}' not in the record"
    if rule.applies_to == "accelerator" and energy == "Co-60":
        return [make(values.get(rule.key), "not_evaluated",
                     "stated for an accelerator's SMD; a Co-60 unit converts the field from its SAD and largest field")]
    if rule.kind == "key":
        value = values.get(rule.key)
        if value is None:
            return [make(None, "not_evaluated", missing)]
        check = graded(float(value))
        if rule.key == "lung_dose_gy":
            check.value_source = lung_source
        return [check]
    if rule.kind == "field_min":
        pair = values.get(rule.key)
        return [make(None, "not_evaluated", missing)] if pair is None else [graded(min(pair))]
    if rule.kind == "head_foot_margin":
        fld, pat = values.get("field_size_cm"), values.get("patient_size_cm")
        if fld is None or pat is None:
            absent = [k for k, v in (("field_size_cm", fld), ("patient_size_cm", pat)) if v is None]
            return [make(None, "not_evaluated", f"{' and '.join(absent)} not in the record")]
        return [graded((fld[1] - pat[1]) / 2.0)]
    if rule.kind == "site_deviation":
        return _site_checks(rule, values, make, graded)
    if rule.kind == "measured":
        value = values.get(rule.key)
        return [make(value, "pass" if value is not None else "not_evaluated", "" if value is not None else missing)]
    if rule.kind == "attest":
        value = values.get(rule.key)
        if value is None:
            return [make(None, "not_evaluated", missing + " (true once done)")]
        return [make(1.0 if value else 0.0, "pass" if value else "fail", "" if value else "recorded as not done")]
    return [_spoiler_check(rule, values, energy, make, graded)]


def _site_checks(rule: TbiRule, values: Mapping[str, Any], make: Any, graded: Any) -> list[TbiCheck]:
    doses, rx = values.get(rule.key), values.get("prescription_gy")
    if doses is None or rx is None:
        absent = [k for k, v in ((rule.key, doses), ("prescription_gy", rx)) if v is None]
        return [make(None, "not_evaluated", f"{' and '.join(absent)} not in the record")]
    out = []
    for site, dose in doses.items():
        if dose > 20 * rx:
            raise InputError(
                f"measured_doses_gy['{site}'] = {dose:g} Gy is {dose / rx:.0f} times the prescription "
                f"{rx:g} Gy: give doses in Gy (or write the unit, e.g. \"{dose:g} cGy\")"
            )
        check = graded((dose - rx) / rx * 100.0)
        check.site = site
        check.rule = f"{rule.rule}: {site} measured {dose:g} Gy vs {rx:g} Gy"
        out.append(check)
    return out


def _spoiler_check(rule: TbiRule, values: Mapping[str, Any], energy: str | None, make: Any, graded: Any) -> TbiCheck:
    thickness = values.get(rule.key)
    if energy is None:
        return make(thickness, "not_evaluated", "energy not in the record: the limit depends on the beam")
    limits = {e.energy: e for e in rule.energies}
    e = limits.get(energy)
    if e is None:
        return make(thickness, "not_evaluated",
                    f"the clause gives spoiler thicknesses for {', '.join(limits)} only, not {energy}")
    kw = dict(rule=e.rule, comparator=e.comparator, limit=e.limit, minor_comparator=e.minor_comparator,
              minor_limit=e.minor_limit)
    if thickness is None:
        return make(None, "not_evaluated", f"'{rule.key}' not in the record", **kw)
    return graded(float(thickness), **kw)


# --------------------------------------------------------------------------------------------
# lung dose from a dose distribution


def lung_dose_from_dicom(
    rtdose: str,
    *,
    rtstruct: str | None = None,
    ct: str | None = None,
    mapping: Mapping[str, str] | None = None,
    fractions: int | None = None,
    progress: Progress | None = None,
) -> LungDose:
    """Mean whole-lung dose: DVH of the lungs structure (or left + right), else lungs segmented on the CT."""
    from sbrtstandards.dicom.rtdose import read_rtdose
    from sbrtstandards.dicom.scan import find_single

    rd_path = find_single([rtdose], "RTDOSE", what="--rtdose").path
    dose = read_rtdose(rd_path, fractions=fractions)
    if dose.per_fraction:
        raise InputError(f"{rd_path}: a FRACTION dose: give the number of fractions (--fractions) for the course dose")
    warnings = [f"{rd_path.name}: {w}" for w in dose.warnings]
    reason = "no --rtstruct"
    if rtstruct is not None:
        found = _lungs_from_structures(rtstruct, dose, mapping, warnings, progress)
        if isinstance(found, LungDose):
            return found
        reason = found
    if ct is None:
        raise InputError(f"cannot compute the lung dose: {reason}; give --ct to segment the lungs on the CT")
    return _lungs_from_ct(ct, dose, warnings, progress)


def _lungs_from_structures(
    rtstruct: str, dose: Any, mapping: Mapping[str, str] | None, warnings: list[str], progress: Progress | None
) -> LungDose | str:
    from sbrtstandards import names as names_mod
    from sbrtstandards.dicom.rtstruct import read_rtstruct
    from sbrtstandards.dicom.scan import find_single
    from sbrtstandards.dvh import check_frame_of_reference, compute_dvhs, roi_planes, structure_set_spacing_mm

    rs_path = find_single([rtstruct], "RTSTRUCT", what="--rtstruct").path
    ss = read_rtstruct(rs_path)
    check_frame_of_reference(ss, dose, str(dose.path))
    match = names_mod.match_structures(ss.names, mapping, wanted_roles=["lungs"])
    names = match.roles.get("lungs")
    if not names:
        return f"{rs_path.name} has no lung structure (structures: {', '.join(ss.names) or 'none'})"
    merged: dict[float, list[np.ndarray]] = {}
    for name in names:
        for z, polys in roi_planes(ss.roi(name)).items():
            merged.setdefault(z, []).extend(polys)
    label = "+".join(names)
    dvh = compute_dvhs({label: merged}, dose, slice_spacing_mm=structure_set_spacing_mm(ss), progress=progress)[0]
    warnings.extend(dvh.warnings)
    if dvh.mean_gy is None:
        raise InputError(f"{rs_path}: structure {label} lies outside the dose grid: no lung dose")
    return LungDose(float(dvh.mean_gy), float(dvh.volume_cc), f"mean dose of {label} ({rs_path.name}, DVH)", warnings)


def _lungs_from_ct(ct: str, dose: Any, warnings: list[str], progress: Progress | None) -> LungDose:
    from sbrtstandards.dicom.ct import read_ct_series
    from sbrtstandards.errors import FrameOfReferenceError
    from sbrtstandards.oars.body import segment_body, segment_lungs

    series = read_ct_series(ct)
    ct_for = series.grid.frame_of_reference_uid
    dose_for = dose.grid.frame_of_reference_uid
    if ct_for and dose_for and ct_for != dose_for:
        raise FrameOfReferenceError(f"CT {ct} (Frame of Reference {ct_for}) and {dose.label} ({dose_for}) differ")
    if progress:
        progress(0.2, "segmenting the lungs on the CT")
    hu = series.array_hu()
    seg = segment_lungs(hu, series.grid, segment_body(hu, series.grid))
    lungs = seg.left | seg.right
    if not lungs.any():
        raise InputError(f"CT {ct}: no lungs found ({'; '.join(seg.notes)})")
    kji = np.argwhere(lungs)
    points = series.grid.index_to_lps(kji[:, ::-1].astype(float))
    values = dose.sample(points)
    inside = np.isfinite(values)
    if not inside.any():
        raise InputError(f"CT {ct}: the segmented lungs lie outside the dose grid of {dose.label}")
    if not inside.all():
        warnings.append(f"{100 * (1 - inside.mean()):.1f} % of the segmented lung volume is outside the dose grid")
    voxel_cc = series.grid.voxel_volume_cc
    warnings.extend(seg.notes)
    return LungDose(float(values[inside].mean()), float(inside.sum() * voxel_cc),
                    "mean dose at the CT voxels of the lungs segmented on the CT (automatic)", warnings)
