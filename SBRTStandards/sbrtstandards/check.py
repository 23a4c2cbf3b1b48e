"""Plan check: a plan's DVHs and plan metrics against a protocol of the standards catalogue.

Inputs are planar structures ``{name: {z_mm: [xy polygons]}}`` (from an RTSTRUCT, or from
segmentation masks through :func:`sbrtstandards.margins.mask_to_planes`) and a dose grid, so
the ``sbrt check`` command and the Slicer Plan Check module share every line of it.

Structures are matched to the protocol's roles by :mod:`sbrtstandards.names`; a role with
several structures is evaluated per structure (``each``) or on their union (``union``, e.g.
left + right lung; the parts must not overlap). Nothing is dropped silently: structures that
match no role are listed in ``unmatched``, rules whose structure is missing or whose value
cannot be computed are ``not_evaluated`` with the reason, rules whose conditions do not hold
for this plan are listed in ``not_applicable``.

Plan metrics (contract keys; isodose volumes inside the Body when one exists, else in the
whole dose grid, computed on the dose grid refined 2x per axis with trilinear dose):

* ``CI_RTOG`` = V(>= Rx) / V_PTV; ``CI_Paddick`` = TV_PIV^2 / (TV x V(>= Rx)), TV_PIV the PTV
  volume receiving Rx (from the PTV's DVH); ``GI`` = V(>= 50% Rx) / V(>= Rx);
  ``R50`` = V(>= 50% Rx) / V_PTV;
* ``D2cm[%]``: the maximum dose at dose-grid points 2 cm or more from the PTV in every
  direction (outside the PTV grown by an exact 20 mm), in % of Rx;
* ``HI`` (ICRU 83) = (D2% - D98%) / D50% of the PTV;
* ``Dmax[%]``, ``Dmax_outside_ITV[%]``, ``Dmax_outside_PTV[%]``: the maximum dose (at the
  dose-grid points, inside the Body when there is one) overall and outside the ITV / PTV;
* ``V105%_outside_PTV[cc]``, ``V110%_outside_ITV[cc]`` (and the other pairs): hot-spot
  volumes outside the target, from the same refined isodose computation;
* ``dose_grid_mm``: the largest dose-grid spacing; ``Rx_BED[Gy]``: the prescription's BED.

Each constraint carries ``location_mm`` (LPS) where the viewer should look: the hottest point
of the structure for an upper limit, its coldest point for a lower limit (coverage), the
hot spot for the ``Dmax`` plan metrics and ``D2cm``, the PTV centre for the other plan metrics.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sbrtstandards import names as names_mod
from sbrtstandards.catalogue import Protocol, Rule, load_protocol
from sbrtstandards.contours import planes_mask
from sbrtstandards.dvh import Dvh, compute_dvhs
from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.metrics import evaluate as evaluate_metric
from sbrtstandards.radiobiology import bed, bed_array, eqd2_array

Planes = Mapping[float, Sequence[np.ndarray]]
Progress = Callable[[float, str], None]
D2CM_DISTANCE_MM = 20.0
REFINE = 2  # isodose volumes: dose grid refined this many times per axis
HOT_FRACTION = 0.2  # hot spots: voxels above this fraction of the maximum are kept sorted


@dataclass
class Constraint:
    id: str
    structure: str
    role: str
    metric: str
    comparator: str
    limit: Any
    minor_limit: Any
    value: float | None
    unit: str
    status: str
    source: str
    reason: str = ""
    location_mm: list[float] | None = None
    note: str = ""
    confirmed: bool = True

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "structure": self.structure,
            "role": self.role,
            "metric": self.metric,
            "comparator": self.comparator,
            "limit": _json_limit(self.limit),
            "minor_limit": _json_limit(self.minor_limit),
            "value": None if self.value is None else round(float(self.value), 4),
            "unit": self.unit,
            "status": self.status,
            "source": self.source,
        }
        if self.reason:
            out["reason"] = self.reason
        if self.location_mm is not None:
            out["location_mm"] = [round(v, 2) for v in self.location_mm]
        if self.note:
            out["note"] = self.note
        if not self.confirmed:
            out["confirmed"] = False
        return out


@dataclass
class CheckResult:
    protocol: Protocol
    rx_gy: float
    fractions: int
    site_class: str | None
    structures: list[dict[str, Any]]
    unmatched: list[str]
    plan_metrics: dict[str, float | None]
    plan_metric_reasons: dict[str, str]
    constraints: list[Constraint]
    not_applicable: list[dict[str, str]]
    dvhs: dict[str, Dvh]
    match: names_mod.NameMatch
    dose_max_gy: float
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    planes_by_label: dict[str, Planes] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "minor": 0, "fail": 0, "not_evaluated": 0}
        for c in self.constraints:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def to_json(self, with_dvh: bool = False) -> dict[str, Any]:
        metrics = {k: (None if v is None else round(float(v), 4)) for k, v in self.plan_metrics.items()}
        out: dict[str, Any] = {
            "protocol": {
                "id": self.protocol.id,
                "title": self.protocol.title,
                "source": self.protocol.source,
                "rx_gy": self.rx_gy,
                "fractions": self.fractions,
                "site_class": self.site_class,
            },
            "structures": self.structures,
            "unmatched": self.unmatched,
            "plan_metrics": metrics,
            "plan_metric_reasons": self.plan_metric_reasons,
            "constraints": [c.to_json() for c in self.constraints],
            "not_applicable": self.not_applicable,
            "summary": self.counts,
            "warnings": self.warnings,
        }
        if with_dvh:
            for s in out["structures"]:
                dvh = self.dvhs.get(s["name"])
                if dvh is not None:
                    d, v = dvh.curve(200)
                    s["dvh"] = {"dose_gy": np.round(d, 4).tolist(), "volume_cc": np.round(v, 5).tolist()}
        return out


def check_plan(
    planes_by_name: Mapping[str, Planes],
    dose: Any,
    *,
    protocol_id: str,
    rx_gy: float,
    fractions: int,
    site_class: str | None = None,
    mapping: Mapping[str, str] | None = None,
    conditions: Mapping[str, Any] | None = None,
    end_cap: str = "half-slice",
    slice_spacing_mm: float | None = None,
    extra_dirs: Sequence[str] = (),
    prior_eqd2_gy: Mapping[str, float] | None = None,
    interval_months: float | None = None,
    progress: Progress | None = None,
) -> CheckResult:
    """Evaluate ``dose`` (a :class:`~sbrtstandards.dicom.rtdose.DoseGrid`) against ``protocol_id``."""
    t0 = time.perf_counter()
    if rx_gy is None or not math.isfinite(float(rx_gy)) or rx_gy <= 0:
        raise InputError("prescription missing: give --rx-gy and --fractions, or an RTPLAN with a prescription")
    if fractions is None or int(fractions) < 1:
        raise InputError("number of fractions missing: give --fractions, or an RTPLAN with a fraction scheme")
    protocol = load_protocol(protocol_id, extra_dirs)
    match = names_mod.match_structures(list(planes_by_name), mapping, wanted_roles=protocol.roles())
    role_planes = _role_structures(match, planes_by_name)

    # DVHs of every structure that plays a role (unions as their own structure)
    wanted: dict[str, Planes] = {}
    for items in role_planes.values():
        for label, planes in items:
            wanted.setdefault(label, planes)
    if progress:
        progress(0.05, "DVH")
    dvhs = {
        d.name: d
        for d in compute_dvhs(
            wanted,
            dose,
            end_cap=end_cap,
            slice_spacing_mm=slice_spacing_mm,
            progress=(lambda f, m: progress(0.05 + 0.6 * f, f"DVH {m}")) if progress else None,
        )
    }
    if progress:
        progress(0.7, "plan metrics")
    geo = _DoseGeometry(dose, role_planes)
    facts = dict(conditions or {})
    ptv_label = _first_label(role_planes, "PTV")
    if ptv_label:
        facts.setdefault("ptv_cc", dvhs[ptv_label].volume_cc)
    gtv_label = _first_label(role_planes, "GTV")
    if gtv_label and "gtv_diameter_cm" not in facts:
        facts["gtv_diameter_cm"] = 2.0 * (3.0 * dvhs[gtv_label].volume_cc / (4.0 * math.pi)) ** (1 / 3)
    plan_metrics, reasons, locations = _plan_metrics(geo, dvhs, role_planes, float(rx_gy))
    selection = protocol.rules_for(int(fractions), site_class, facts)

    constraints: list[Constraint] = []
    for rule in selection:
        constraints.extend(
            _evaluate_rule(
                rule,
                role_planes,
                dvhs,
                plan_metrics,
                reasons,
                locations,
                geo,
                float(rx_gy),
                int(fractions),
                Reirradiation(dict(prior_eqd2_gy or {}), interval_months),
            )
        )
    not_applicable = []
    for skipped in selection.skipped:
        if skipped.undetermined:
            lim, minor = skipped.rule.limit, skipped.rule.minor_limit
            constraints.append(
                Constraint(
                    skipped.rule.id,
                    skipped.rule.structure,
                    skipped.rule.structure,
                    skipped.rule.metric,
                    skipped.rule.comparator,
                    lim,
                    minor,
                    None,
                    skipped.rule.unit,
                    "not_evaluated",
                    skipped.rule.source,
                    reason=skipped.reason,
                    note=skipped.rule.note,
                    confirmed=skipped.rule.confirmed,
                )
            )
        else:
            not_applicable.append({"id": skipped.rule.id, "reason": skipped.reason})

    structures = []
    for name in planes_by_name:
        dvh = dvhs.get(name)
        entry: dict[str, Any] = {"name": name, "role": ", ".join(match.role_of(name)) or None}
        if dvh is not None:
            entry.update(
                volume_cc=round(dvh.volume_cc, 4),
                mean_gy=_round(dvh.mean_gy),
                min_gy=_round(dvh.min_gy),
                max_gy=_round(dvh.max_gy),
            )
            if dvh.volume_outside_cc > 0:
                entry["volume_outside_dose_cc"] = round(dvh.volume_outside_cc, 4)
        structures.append(entry)
    for label, d in dvhs.items():
        if label not in planes_by_name:  # unions
            structures.append(
                {
                    "name": label,
                    "role": _role_of_label(role_planes, label),
                    "volume_cc": round(d.volume_cc, 4),
                    "mean_gy": _round(d.mean_gy),
                    "min_gy": _round(d.min_gy),
                    "max_gy": _round(d.max_gy),
                }
            )
    warnings = [w for d in dvhs.values() for w in d.warnings]
    for role, names in match.ambiguous.items():
        warnings.append(f"several structures look like {role} ({', '.join(names)}): use --map NAME={role}")
    if progress:
        progress(1.0, "done")
    return CheckResult(
        protocol,
        float(rx_gy),
        int(fractions),
        site_class,
        structures,
        list(match.unmatched),
        plan_metrics,
        reasons,
        constraints,
        not_applicable,
        dvhs,
        match,
        float(np.max(geo.dose)),
        time.perf_counter() - t0,
        warnings,
    )


def parse_conditions(texts: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` plan facts (``child_pugh=A``, ``reirradiation=true``, ``gtv_diameter_cm=1.2``), validated.

    Shared by ``sbrt check --condition`` and the Plan Check module, so both accept the same text.
    """
    from sbrtstandards.catalogue import check_condition_values

    raw: dict[str, Any] = {}
    for text in texts:
        key, sep, value = str(text).partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"condition {text!r}: expected KEY=VALUE, e.g. child_pugh=A")
        v: Any = value.strip()
        if v.lower() in ("true", "false"):
            v = v.lower() == "true"
        else:
            with contextlib.suppress(ValueError):
                v = float(v) if any(ch in v for ch in ".eE") else int(v)
        raw[key.strip()] = v
    return check_condition_values(raw)


# ----------------------------------------------------------------------------- structures


def _role_structures(
    match: names_mod.NameMatch, planes_by_name: Mapping[str, Planes]
) -> dict[str, list[tuple[str, Planes]]]:
    """role -> [(label, planes)]: one item per structure (single/each) or one union item."""
    out: dict[str, list[tuple[str, Planes]]] = {}
    for role, names in match.roles.items():
        how = match.how.get(role, "single")
        if how == "union" and len(names) > 1:
            merged: dict[float, list[np.ndarray]] = {}
            for n in names:
                for z, polys in planes_by_name[n].items():
                    merged.setdefault(z, []).extend(polys)
            out[role] = [("+".join(names), merged)]
        else:
            out[role] = [(n, planes_by_name[n]) for n in names]
    return out


def _first_label(role_planes: Mapping[str, list[tuple[str, Planes]]], role: str) -> str | None:
    items = role_planes.get(role)
    return items[0][0] if items else None


def _role_of_label(role_planes: Mapping[str, list[tuple[str, Planes]]], label: str) -> str | None:
    for role, items in role_planes.items():
        if any(lbl == label for lbl, _ in items):
            return role
    return None


# ----------------------------------------------------------------------------- dose geometry


class _DoseGeometry:
    """The dose on its grid with the masks the plan metrics need (computed once, lazily)."""

    def __init__(self, dose: Any, role_planes: Mapping[str, list[tuple[str, Planes]]]) -> None:
        self.dose = np.asarray(dose.dose_gy, dtype=float)
        self.grid: Grid = dose.grid
        self.grid.require_axial("plan metrics")
        self.role_planes = role_planes
        self._masks: dict[str, np.ndarray] = {}
        self._flat = np.ascontiguousarray(self.dose).ravel()
        self._extremes: dict[tuple[str, str], Any] = {}
        self._hot: np.ndarray | None = None  # flat indices of the hottest voxels, hot to cold

    def mask(self, label: str, planes: Planes) -> np.ndarray:
        if label not in self._masks:
            self._masks[label] = planes_mask(planes, self.grid, what=label)
        return self._masks[label]

    def role_mask(self, role: str) -> np.ndarray | None:
        items = self.role_planes.get(role)
        if not items:
            return None
        label, planes = items[0]
        return self.mask(label, planes)

    def region(self) -> np.ndarray:
        """Where the plan metrics look: inside the Body if there is one, else the whole grid."""
        body = self.role_mask("body")
        return body if body is not None and body.any() else np.ones(self.dose.shape, dtype=bool)

    def lps(self, kji: Sequence[int]) -> list[float]:
        return [float(v) for v in self.grid.index_to_lps(np.asarray(kji, dtype=float)[::-1])]

    def _extreme(
        self, where: np.ndarray, pick: Callable[[np.ndarray], Any], fill: float
    ) -> tuple[float, list[float]] | None:
        """The dose and position of the voxel that ``pick`` (argmax/argmin) chooses among
        ``where`` (the first in C order on ties). A small mask: from its own voxels; a large
        one: over the grid with ``fill`` elsewhere (fewer passes than gathering most of it)."""
        count = int(np.count_nonzero(where))
        if count == 0:
            return None
        if pick is np.argmax:
            found = self._among_hot_voxels(where)
            if found is not None:
                return found
        if count > where.size // 8:
            vals = np.where(where, self.dose, fill).ravel()
            flat = int(pick(vals))
            value = float(vals[flat])
        else:
            voxels = np.flatnonzero(where)
            picked = self._flat[voxels]
            n = int(pick(picked))
            flat, value = int(voxels[n]), float(picked[n])
        return value, self.lps(np.unravel_index(flat, self.dose.shape))

    def _among_hot_voxels(self, where: np.ndarray) -> tuple[float, list[float]] | None:
        """The hottest voxel of ``where`` when it is among the voxels above HOT_FRACTION of the
        maximum (listed once, hot to cold, C order on ties: the same voxel as an argmax over the
        masked grid); None when ``where`` has none of them."""
        if self._hot is None:
            top = float(self._flat.max()) if self._flat.size else 0.0
            voxels = np.empty(0, dtype=np.int64)
            if top > 0 and math.isfinite(top):  # (a NaN dose: argmax over the grid, as before)
                voxels = np.flatnonzero(self._flat > HOT_FRACTION * top)
                if len(voxels) > self._flat.size // 16:  # a flat dose: no short list
                    voxels = np.empty(0, dtype=np.int64)
            order = np.argsort(-self._flat[voxels], kind="stable")  # stable: C order among equal doses
            self._hot = voxels[order]
        hits = np.flatnonzero(where.ravel()[self._hot])
        if len(hits) == 0:
            return None
        flat = int(self._hot[hits[0]])
        return float(self._flat[flat]), self.lps(np.unravel_index(flat, self.dose.shape))

    def hottest(self, where: np.ndarray) -> tuple[float | None, list[float] | None]:
        found = self._extreme(where, np.argmax, -np.inf)
        return (None, None) if found is None else found

    def coldest(self, where: np.ndarray) -> list[float] | None:
        found = self._extreme(where, np.argmin, np.inf)
        return None if found is None else found[1]

    def location(self, label: str, planes: Planes, hot: bool) -> list[float] | None:
        """The hottest (or coldest) voxel of a structure, computed once per structure."""
        key = (label, "hot" if hot else "cold")
        if key not in self._extremes:
            mask = self.mask(label, planes)
            self._extremes[key] = self.hottest(mask)[1] if hot else self.coldest(mask)
        return self._extremes[key]  # type: ignore[no-any-return]

    def isodose_volumes_cc(self, levels_gy: Sequence[float], region: np.ndarray) -> list[float]:
        """Volumes (cc) of ``region`` receiving at least each level, on a 2x refined grid.

        Each voxel is split into REFINE**3 sub-voxels whose centres get the trilinear dose
        (over the bounding box of the voxels above half the lowest level, plus one voxel; the
        box's edge values extend beyond it). Trilinear is separable, so the sub-voxel doses
        are made one axis at a time from shifted copies of the box.
        """
        lo = min(levels_gy)
        candidates = region & (self.dose >= 0.5 * lo)
        if not candidates.any():
            return [0.0 for _ in levels_gy]
        bounds = []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            used = np.flatnonzero(candidates.any(axis=other))
            bounds.append(slice(max(int(used[0]) - 1, 0), min(int(used[-1]) + 2, self.dose.shape[axis])))
        box = self.dose[tuple(bounds)]
        reg = region[tuple(bounds)]
        totals = np.zeros(len(levels_gy))
        for along_k in _refined(box, 0):
            for along_j in _refined(along_k, 1):
                for vals in _refined(along_j, 2):
                    inside = vals[reg]
                    for n, lvl in enumerate(levels_gy):
                        totals[n] += np.count_nonzero(inside >= lvl)
        voxel_cc = self.grid.voxel_volume_cc / REFINE**3
        return [float(t * voxel_cc) for t in totals]


def _refined(values: np.ndarray, axis: int) -> list[np.ndarray]:
    """Linear interpolation at the REFINE sub-voxel offsets ``(m + 1/2) / REFINE - 1/2`` along
    ``axis``, the edge values extended beyond the ends (as scipy's ``mode="nearest"``)."""
    n = values.shape[axis]
    index = np.arange(n)
    before = np.take(values, np.maximum(index - 1, 0), axis=axis)
    after = np.take(values, np.minimum(index + 1, n - 1), axis=axis)
    out = []
    for m in range(REFINE):
        d = (m + 0.5) / REFINE - 0.5
        out.append((-d) * before + (1.0 + d) * values if d < 0 else (1.0 - d) * values + d * after)
    return out


def _plan_metrics(
    geo: _DoseGeometry, dvhs: Mapping[str, Dvh], role_planes: Mapping[str, list[tuple[str, Planes]]], rx_gy: float
) -> tuple[dict[str, float | None], dict[str, str], dict[str, list[float] | None]]:
    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    where: dict[str, list[float] | None] = {}
    region = geo.region()
    values["dose_grid_mm"] = float(max(geo.grid.spacing_mm))
    hot, hot_at = geo.hottest(region)
    values["Dmax[%]"] = None if hot is None else 100.0 * hot / rx_gy
    where["Dmax[%]"] = hot_at
    ptv_label = _first_label(role_planes, "PTV")
    for role in ("ITV", "PTV"):
        key = f"Dmax_outside_{role}[%]"
        m = geo.role_mask(role)
        if m is None:
            values[key], reasons[key] = None, f"no {role} structure"
            continue
        outside = region & ~m
        val, at = geo.hottest(outside)
        values[key], where[key] = (None if val is None else 100.0 * val / rx_gy), at
        # hot-spot volumes outside the target: the lung standard keeps >105 % inside the PTV (§6.1(5))
        v105, v110 = geo.isodose_volumes_cc([1.05 * rx_gy, 1.10 * rx_gy], outside)
        for pct, vol in ((105, v105), (110, v110)):
            values[f"V{pct}%_outside_{role}[cc]"] = vol
            where[f"V{pct}%_outside_{role}[cc]"] = at
    if ptv_label is None:
        for key in ("CI_RTOG", "CI_Paddick", "GI", "R50", "D2cm[%]", "HI"):
            values[key], reasons[key] = None, "no PTV structure"
        return values, reasons, where
    ptv_dvh = dvhs[ptv_label]
    ptv_mask = geo.role_mask("PTV")
    assert ptv_mask is not None
    centre = geo.lps(np.argwhere(ptv_mask).mean(axis=0)) if ptv_mask.any() else None
    piv, v50 = geo.isodose_volumes_cc([rx_gy, 0.5 * rx_gy], region)
    tv = ptv_dvh.volume_cc
    tv_piv = ptv_dvh.volume_at_dose_cc(rx_gy)
    values["CI_RTOG"] = piv / tv if tv > 0 else None
    values["CI_Paddick"] = tv_piv**2 / (tv * piv) if tv > 0 and piv > 0 else None
    values["GI"] = v50 / piv if piv > 0 else None
    values["R50"] = v50 / tv if tv > 0 else None
    for key in ("CI_RTOG", "CI_Paddick", "GI", "R50"):
        where[key] = centre
        if values[key] is None:
            reasons[key] = "no volume receives the prescription dose"
    values["HI"] = None
    d50 = ptv_dvh.dose_at_volume_percent(50.0) if ptv_dvh.n_samples else 0.0
    if d50 > 0:
        values["HI"] = (ptv_dvh.dose_at_volume_percent(2.0) - ptv_dvh.dose_at_volume_percent(98.0)) / d50
    where["HI"] = centre
    values["D2cm[%]"], where["D2cm[%]"] = _d2cm(geo, ptv_mask, region, rx_gy)
    if values["D2cm[%]"] is None:
        reasons["D2cm[%]"] = "no dose-grid point lies 2 cm or more from the PTV"
    return values, reasons, where


def _d2cm(geo: _DoseGeometry, ptv_mask: np.ndarray, region: np.ndarray, rx_gy: float) -> tuple[float | None, Any]:
    from sbrtstandards.margins import grow

    if not ptv_mask.any():
        return None, None
    near = grow(ptv_mask, geo.grid, D2CM_DISTANCE_MM, name="PTV")
    val, at = geo.hottest(region & ~near)
    return (None if val is None else 100.0 * val / rx_gy), at


# ----------------------------------------------------------------------------- rules


def _evaluate_rule(
    rule: Rule,
    role_planes: Mapping[str, list[tuple[str, Planes]]],
    dvhs: Mapping[str, Dvh],
    plan_metrics: Mapping[str, float | None],
    reasons: Mapping[str, str],
    locations: Mapping[str, Any],
    geo: _DoseGeometry,
    rx_gy: float,
    fractions: int,
    reirradiation: Reirradiation | None = None,
) -> list[Constraint]:
    def make(structure: str, value: float | None, reason: str = "", location: Any = None) -> Constraint:
        ev = rule.evaluate(value, fractions)
        why = reason or ev.reason
        return Constraint(
            rule.id,
            structure,
            rule.structure,
            rule.metric,
            rule.comparator,
            ev.limit,
            ev.minor_limit,
            value,
            rule.unit,
            ev.status,
            rule.source,
            reason=why if ev.status == "not_evaluated" or reason else "",
            location_mm=location,
            note=rule.note,
            confirmed=rule.confirmed,
        )

    reirr = reirradiation or Reirradiation({}, None)
    if rule.prior_dose_discount_percent and reirr.missing(rule.structure):
        return [make(rule.structure, None, reirr.missing(rule.structure))]
    if rule.is_plan_metric:
        if rule.metric == "Rx_BED[Gy]":
            return [make("plan", bed(rx_gy, fractions, rule.alpha_beta_gy or 10.0))]
        value = plan_metrics.get(rule.metric)
        reason = "" if value is not None else reasons.get(rule.metric, f"plan metric {rule.metric} not computed")
        return [make("plan", value, reason, locations.get(rule.metric))]
    items = role_planes.get(rule.structure)
    if not items:
        return [
            make(rule.structure, None, f"no structure for role '{rule.structure}' (use --map NAME={rule.structure})")
        ]
    out = []
    for label, planes in items:
        dvh = dvhs[label]
        if rule.dose_model != "physical":
            dvh = biological_dvh(dvh, rule.dose_model, fractions, rule.alpha_beta_gy or 3.0)
        mv = evaluate_metric(rule.metric, dvh, rx_gy=rx_gy)
        value, reason = mv.value, mv.reason or ""
        if value is not None and rule.prior_dose_discount_percent:
            value = reirr.cumulative(rule, value)
        location = geo.location(label, planes, hot=rule.comparator not in (">", ">="))
        out.append(make(label, value, reason, location))
    return out


@dataclass
class Reirradiation:
    """The prior course for the Michigan cumulative limits: EQD2 per role and the interval."""

    prior_eqd2_gy: dict[str, float]
    interval_months: float | None

    def missing(self, role: str) -> str:
        if role not in self.prior_eqd2_gy:
            return f"re-irradiation rule: give the prior course's EQD2 of {role} (--prior-eqd2 {role}=GY)"
        if self.interval_months is None:
            return "re-irradiation rule: give the time since the prior course (--interval-months)"
        return ""

    def cumulative(self, rule: Rule, current_eqd2_gy: float) -> float:
        """Current EQD2 plus the part of the prior EQD2 that the interval band still counts."""
        from sbrtstandards.radiobiology import discounted_prior_eqd2, interval_band

        assert self.interval_months is not None and rule.prior_dose_discount_percent is not None
        discount = float(rule.prior_dose_discount_percent.get(interval_band(self.interval_months), 0.0))
        return current_eqd2_gy + discounted_prior_eqd2(self.prior_eqd2_gy[rule.structure], discount)


def biological_dvh(dvh: Dvh, model: str, fractions: int, alpha_beta_gy: float) -> Dvh:
    """The voxelwise EQD2 (or BED) DVH: each sample's dose converted with the LQ model.

    EQD2 and BED grow monotonically with dose, so the samples keep their hot-to-cold order and
    every metric (Dx, Vx, CVx, mean) of the converted DVH is exact for the sampled structure.
    """
    convert = eqd2_array if model == "eqd2" else bed_array
    doses = np.asarray(convert(dvh.doses_gy, fractions, alpha_beta_gy), dtype=float)
    weights = dvh.weights_cc
    mean = float(np.sum(doses * weights) / np.sum(weights)) if len(weights) else None

    def one(v: float | None) -> float | None:
        return None if v is None else float(convert(np.asarray([v]), fractions, alpha_beta_gy)[0])

    return replace(dvh, doses_gy=doses, min_gy=one(dvh.min_gy), max_gy=one(dvh.max_gy), mean_gy=mean)


def _json_limit(limit: Any) -> Any:
    if limit is None:
        return None
    if isinstance(limit, (tuple, list)):
        return [round(float(v), 4) for v in limit]
    return round(float(limit), 4)


def _round(value: float | None, nd: int = 4) -> float | None:
    return None if value is None else round(float(value), nd)


# ----------------------------------------------------------------------------- from files


@dataclass
class CheckInputs:
    """What :func:`check_files` read, so a report can show slices without reading twice."""

    structure_set: Any
    dose: Any
    plan: Any | None
    rx_source: str


def check_files(
    rtstruct: str,
    rtdose: str,
    *,
    protocol_id: str,
    rtplan: str | None = None,
    rx_gy: float | None = None,
    fractions: int | None = None,
    site_class: str | None = None,
    mapping: Mapping[str, str] | None = None,
    conditions: Mapping[str, Any] | None = None,
    end_cap: str = "half-slice",
    extra_dirs: Sequence[str] = (),
    prior_eqd2_gy: Mapping[str, float] | None = None,
    interval_months: float | None = None,
    progress: Progress | None = None,
) -> tuple[CheckResult, CheckInputs]:
    """Read the DICOM objects and run :func:`check_plan` (the ``sbrt check`` command)."""
    from sbrtstandards.dicom.rtdose import read_rtdose
    from sbrtstandards.dicom.rtplan import read_rtplan
    from sbrtstandards.dicom.rtstruct import read_rtstruct
    from sbrtstandards.dicom.scan import find_single
    from sbrtstandards.dvh import check_frame_of_reference, roi_planes, structure_set_spacing_mm

    rs_path = find_single([rtstruct], "RTSTRUCT", what="--rtstruct").path
    rd_path = find_single([rtdose], "RTDOSE", what="--rtdose").path
    plan = None
    rx_source = "--rx-gy/--fractions"
    if rtplan:
        plan = read_rtplan(find_single([rtplan], "RTPLAN", what="--rtplan").path)
    if rx_gy is None or fractions is None:
        if plan is None:
            raise InputError("prescription missing: give --rx-gy and --fractions, or --rtplan with a prescription")
        rx_gy = rx_gy if rx_gy is not None else plan.rx_gy
        fractions = fractions if fractions is not None else plan.fractions
        rx_source = f"RTPLAN {plan.path.name if plan.path else ''}".strip()
        if rx_gy is None or fractions is None:
            raise InputError(
                f"{plan.path}: the RTPLAN has no prescription dose or fraction number; give --rx-gy and --fractions"
            )
    ss = read_rtstruct(rs_path)
    dose = read_rtdose(rd_path, rx_gy=rx_gy, fractions=fractions)
    if getattr(dose, "per_fraction", False):
        raise InputError(f"{rd_path}: a FRACTION dose needs the number of fractions to give the plan total")
    check_frame_of_reference(ss, dose, str(rd_path))
    planes_by_name: dict[str, Planes] = {}
    skipped = []
    for roi in ss.rois:
        try:
            planes_by_name[roi.name] = roi_planes(roi)
        except InputError as exc:
            skipped.append(f"{roi.name}: {exc}")
    result = check_plan(
        planes_by_name,
        dose,
        protocol_id=protocol_id,
        rx_gy=float(rx_gy),
        fractions=int(fractions),
        site_class=site_class,
        mapping=mapping,
        conditions=conditions,
        end_cap=end_cap,
        slice_spacing_mm=structure_set_spacing_mm(ss),
        extra_dirs=extra_dirs,
        progress=progress,
        prior_eqd2_gy=prior_eqd2_gy,
        interval_months=interval_months,
    )
    result.warnings.extend(f"structure left out: {s}" for s in skipped)
    return result, CheckInputs(ss, dose, plan, rx_source)
