"""The teaching score sheet: a trainee's contours against a reference set and the standards' rules.

One self-contained HTML page a teacher can hand out (``sbrt teach``), in three parts:

1. **Agreement with the reference contours**, structure by structure (:mod:`sbrtstandards.compare`:
   Dice, HD95, mean surface distance, surface Dice at a tolerance, volume ratio, centroid shift),
   graded by the surface Dice: the share of both surfaces within the tolerance of the other
   one, the measure that tracks the editing a contour needs (Nikolov et al. 2018; Vaassen et
   al. 2020). The grade limits (:class:`Grading`) are the course's, not the standards'.
2. **The contouring rules of the standard**, checked on the trainee's own structures:

   * PTV = ITV + 5 mm (lung standard §5.1; liver standard §7.1, "typically 5 mm"): the
     trainee's ITV (or GTV when there is no ITV) is grown by an exact 5 mm
     (:func:`sbrtstandards.margins.grow_planes`) and compared with the trainee's PTV; the
     sheet also gives the margin actually drawn (distances from the PTV surface to the ITV);
   * chest wall and great vessels (lung standard §5.2(7), §5.2(8)): rebuilt by the rule
     (:func:`sbrtstandards.oars.build_oars`) from the trainee's lungs, body, bones and vessels
     (the reference set's where the trainee has none; the CT's when given) and compared with
     the trainee's; the chest wall is compared with both variants of the rule (whole, or
     within 3 cm of the PTV) and the closer one is reported;
   * the organs at risk the standard asks for on this site are present
     (:func:`sbrtstandards.oars.rules.check_contouring`).
3. **Where the contours disagree**: per structure, the axial contour plane with the largest
   area of disagreement, both contours drawn on the CT slice (or, without a CT, on a blank
   background in mm).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbrtstandards import names as names_mod
from sbrtstandards.compare import DEFAULT_TOLERANCE_MM, Agreement, CompareResult, compare_planes, compare_structure_sets
from sbrtstandards.errors import FrameOfReferenceError, InputError
from sbrtstandards.grid import Grid
from sbrtstandards.report import Figure, Report, Table, figure_from_matplotlib

Planes = Mapping[float, Sequence[np.ndarray]]
Progress = Callable[[float, str], None]

PTV_MARGIN_MM = 5.0  # lung standard §5.1; liver standard §7.1 ("typically 5 mm")
CHEST_WALL_LIMIT_MM = 30.0  # §5.2(7) option: only the chest wall within 3 cm of the PTV
RULE_GRID_MM = 0.5  # in-plane sampling of the rule-built PTV
ANATOMY_GRID_MM = 2.0  # in-plane sampling of the OAR rules when there is no CT
GRADE_WORDS = {"pass": "good", "minor": "review", "fail": "redo", "not_evaluated": "not graded"}
REFERENCE_COLOR = "#1a9850"
TRAINEE_COLOR = "#d7301f"


@dataclass(frozen=True)
class Grading:
    """The course's grade limits (not the standards'): surface Dice for structures, HD95 for margins."""

    tolerance_mm: float = DEFAULT_TOLERANCE_MM
    good_surface_dice: float = 0.90
    review_surface_dice: float = 0.75
    margin_good_hd95_mm: float = 2.0
    margin_review_hd95_mm: float = 3.0

    def structure(self, agreement: Agreement | None) -> str:
        if agreement is None or agreement.surface_dice is None:
            return "fail" if agreement is not None and agreement.dice == 0.0 else "not_evaluated"
        if agreement.surface_dice >= self.good_surface_dice:
            return "pass"
        return "minor" if agreement.surface_dice >= self.review_surface_dice else "fail"

    def margin(self, agreement: Agreement | None) -> str:
        if agreement is None or agreement.hd95_mm is None:
            return "not_evaluated"
        if agreement.hd95_mm <= self.margin_good_hd95_mm:
            return "pass"
        return "minor" if agreement.hd95_mm <= self.margin_review_hd95_mm else "fail"

    def describe(self) -> str:
        return (f"structures: surface Dice at {self.tolerance_mm:g} mm >= {self.good_surface_dice:g} good, "
                f">= {self.review_surface_dice:g} review, below: redo; PTV margin: HD95 from ITV + "
                f"{PTV_MARGIN_MM:g} mm <= {self.margin_good_hd95_mm:g} mm good, <= {self.margin_review_hd95_mm:g} mm "
                "review, beyond: redo")


@dataclass
class RuleCheck:
    """One contouring rule of the standard checked on the trainee's structures."""

    id: str
    title: str
    status: str  # pass, minor, fail, not_evaluated
    detail: str
    source: str
    structure: str = ""
    agreement: Agreement | None = None
    rule_planes: dict[float, list[np.ndarray]] | None = None  # the structure the rule builds
    trainee_planes: dict[float, list[np.ndarray]] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "title": self.title, "status": self.status, "detail": self.detail,
                               "source": self.source, "structure": self.structure}
        if self.agreement is not None:
            out["agreement"] = self.agreement.to_json()
        return out


@dataclass
class ScoreSheet:
    trainee_file: str
    reference_file: str
    trainee_name: str
    site: str
    site_class: str | None
    grading: Grading
    comparison: CompareResult
    grades: dict[str, str]  # reference structure -> pass/minor/fail/not_evaluated
    rules: list[RuleCheck]
    required: list[dict[str, Any]]
    figures: list[Figure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        graded = [p.agreement for p in self.comparison.pairs]
        sdice = [a.surface_dice for a in graded if a is not None and a.surface_dice is not None]
        counts = {k: list(self.grades.values()).count(k) for k in ("pass", "minor", "fail", "not_evaluated")}
        rule_counts = {k: [r.status for r in self.rules].count(k) for k in ("pass", "minor", "fail", "not_evaluated")}
        required = [r for r in self.required if r["status"] != "not_required"]
        present = [r for r in required if r["status"] in ("present", "review")]
        return {
            "structures_compared": len(self.comparison.pairs),
            "mean_surface_dice": None if not sdice else round(float(np.mean(sdice)), 4),
            "grades": counts,
            "rules": rule_counts,
            "required_oars_present": len(present),
            "required_oars": len(required),
            "missing_oars": [r["role"] for r in required if r["status"] == "missing"],
        }

    def to_json(self) -> dict[str, Any]:
        comp = self.comparison.to_json()
        for item in comp["structures"]:
            item["grade"] = self.grades.get(item["name"], "not_evaluated")
        return {
            "trainee": self.trainee_file,
            "reference": self.reference_file,
            "trainee_name": self.trainee_name,
            "site": self.site,
            "site_class": self.site_class,
            "grading": {
                "tolerance_mm": self.grading.tolerance_mm,
                "good_surface_dice": self.grading.good_surface_dice,
                "review_surface_dice": self.grading.review_surface_dice,
                "margin_good_hd95_mm": self.grading.margin_good_hd95_mm,
                "margin_review_hd95_mm": self.grading.margin_review_hd95_mm,
            },
            "summary": self.summary,
            "structures": comp["structures"],
            "unmatched": comp["unmatched"],
            "rules": [r.to_json() for r in self.rules],
            "required_oars": self.required,
            "warnings": self.warnings + comp["warnings"],
        }


# ----------------------------------------------------------------------------- building the sheet


def score_sheet(
    reference_path: str | os.PathLike[str],
    trainee_path: str | os.PathLike[str],
    *,
    ct_dir: str | os.PathLike[str] | None = None,
    site: str = "auto",
    site_class: str | None = None,
    structures: Sequence[str] = (),
    grading: Grading | None = None,
    trainee_name: str = "",
    mapping: Sequence[str] = (),
    progress: Progress | None = None,
) -> ScoreSheet:
    """Read the two structure sets (and the CT, if given) and grade the trainee's (module docstring)."""
    from sbrtstandards.dicom.rtstruct import read_rtstruct
    from sbrtstandards.dicom.scan import find_single

    if site not in ("auto", "lung", "liver"):
        raise InputError(f"site must be auto, lung or liver, not '{site}'")
    grading = grading or Grading()
    report = progress or (lambda fraction, message: None)
    reference = read_rtstruct(find_single([str(reference_path)], "RTSTRUCT", what="--reference").path)
    trainee = read_rtstruct(find_single([str(trainee_path)], "RTSTRUCT", what="--trainee").path)
    ct = None
    if ct_dir is not None:
        from sbrtstandards.dicom.ct import read_ct_series

        report(0.0, "reading the CT")
        ct = read_ct_series(ct_dir)
        _check_ct_frame(ct, trainee)
    report(0.05, "comparing with the reference")
    comparison = compare_structure_sets(
        reference, trainee, structures=structures, tolerance_mm=grading.tolerance_mm,
        progress=lambda f, m: report(0.05 + 0.55 * f, f"comparing {m}"),
    )
    grades = {p.reference: grading.structure(p.agreement) for p in comparison.pairs}
    warnings: list[str] = []
    roles = _roles(trainee, mapping)
    grid = ct.grid if ct is not None else anatomy_grid(reference, trainee)
    site_used = site if site != "auto" else _guess_site(trainee, reference, roles, grid)
    report(0.62, "PTV margin rule")
    rules = [ptv_margin_rule(trainee, roles, site_used, grading)]
    report(0.7, "organs at risk by rule")
    oar_rules, facts = oar_rules_and_facts(reference, trainee, roles, grid, ct, site_used, site_class, grading,
                                           mapping, warnings)
    rules += oar_rules
    from sbrtstandards.oars.rules import check_contouring

    required = check_contouring(facts) if facts is not None else []
    report(0.85, "figures")
    sheet = ScoreSheet(str(trainee.describe()), str(reference.describe()), trainee_name, site_used,
                       facts.site_class if facts is not None else site_class, grading, comparison, grades, rules,
                       required, warnings=warnings)
    sheet.figures = sheet_figures(sheet, reference, trainee, ct)
    report(1.0, "done")
    return sheet


def _check_ct_frame(ct: Any, ss: Any) -> None:
    ct_for, ss_for = ct.grid.frame_of_reference_uid, ss.study.frame_of_reference_uid
    if ct_for and ss_for and ct_for != ss_for:
        raise FrameOfReferenceError(f"{ss.describe()} is in Frame of Reference {ss_for}, the CT in {ct_for}")


def _roles(ss: Any, mapping: Sequence[str]) -> names_mod.NameMatch:
    from sbrtstandards.oars.dicom_io import split_mapping

    closed = [r.name for r in ss.rois if not r.is_empty and not r.is_point]
    _, plain = split_mapping(mapping)
    return names_mod.match_structures(closed, plain)


def anatomy_grid(*structure_sets: Any, spacing_mm: float = ANATOMY_GRID_MM) -> Grid:
    """An axial grid over every contour of the structure sets (no CT): the OAR rules run on it."""
    from sbrtstandards.dvh import structure_set_spacing_mm

    pts = [c.points_mm for ss in structure_sets for r in ss.rois for c in r.contours if len(c.points_mm)]
    if not pts:
        raise InputError("the structure sets have no contours")
    allp = np.concatenate(pts)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    dz = next((v for v in (structure_set_spacing_mm(ss) for ss in structure_sets) if v), None) or spacing_mm
    step = np.array([spacing_mm, spacing_mm, dz])
    origin = lo - 2 * step
    size = tuple(int(math.ceil((hi[a] - lo[a]) / step[a])) + 5 for a in range(3))
    return Grid(tuple(float(v) for v in origin), tuple(float(v) for v in step), size,  # type: ignore[arg-type]
                frame_of_reference_uid=structure_sets[0].study.frame_of_reference_uid)


def _guess_site(trainee: Any, reference: Any, roles: names_mod.NameMatch, grid: Grid) -> str:
    """Liver when a liver contour overlaps the tumour (ITV, GTV or PTV), else lung (as ``sbrt oars``)."""
    from sbrtstandards.contours import roi_mask

    def mask_of(ss: Any, role: str) -> np.ndarray | None:
        m = names_mod.match_structures([r.name for r in ss.rois if not r.is_empty and not r.is_point])
        name = m.name_of(role)
        return None if name is None else roi_mask(ss.roi(name), grid)

    for ss in (trainee, reference):
        liver = mask_of(ss, "liver")
        if liver is None:
            continue
        for role in ("ITV", "GTV", "PTV"):
            tumour = mask_of(ss, role)
            if tumour is not None and np.any(tumour & liver):
                return "liver"
    return "lung"


# ----------------------------------------------------------------------------- PTV = ITV + 5 mm


def ptv_margin_rule(trainee: Any, roles: names_mod.NameMatch, site: str, grading: Grading) -> RuleCheck:
    """PTV = ITV + 5 mm on the trainee's own ITV (GTV without ITV) and PTV."""
    from sbrtstandards.oars.rules import LIVER_DOC, LUNG_DOC

    source = (f"{LUNG_DOC} §5.1" if site == "lung"
              else f"{LIVER_DOC} §7.1 (seed 002); explanatory note §3.1 (seed 000): margin typically 5 mm")
    title = f"PTV = ITV + {PTV_MARGIN_MM:g} mm"
    ptv_name = roles.name_of("PTV")
    itv_name = roles.name_of("ITV") or roles.name_of("GTV")
    if ptv_name is None or itv_name is None:
        missing = [r for r, n in (("PTV", ptv_name), ("ITV or GTV", itv_name)) if n is None]
        why = " and ".join(missing) + " not found (or ambiguous) in the trainee's set"
        return RuleCheck("ptv_margin", title, "not_evaluated", why, source)
    itv_planes = trainee.roi(itv_name).planes()
    ptv_planes = trainee.roi(ptv_name).planes()
    rule_planes = ptv_by_rule(itv_planes, ptv_planes, PTV_MARGIN_MM)
    agreement = compare_planes(rule_planes, ptv_planes, tolerance_mm=grading.tolerance_mm,
                               names=(f"{itv_name} + {PTV_MARGIN_MM:g} mm", ptv_name))
    drawn = compare_planes(itv_planes, ptv_planes, tolerance_mm=grading.tolerance_mm, names=(itv_name, ptv_name))
    status = grading.margin(agreement)
    detail = (f"{ptv_name} against {itv_name} grown by an exact {PTV_MARGIN_MM:g} mm: HD95 "
              f"{_fmt(agreement.hd95_mm)} mm, surface Dice {_fmt(agreement.surface_dice, 3)}, volume ratio "
              f"{_fmt(agreement.volume_ratio, 3)}.")
    if drawn.percentiles_test_to_ref_mm is not None:
        p5, p50, p95 = drawn.percentiles_test_to_ref_mm
        detail += (f" The margin drawn ({ptv_name} surface to {itv_name} surface): median {p50:.1f} mm, "
                   f"5-95% {p5:.1f}-{p95:.1f} mm.")
    if roles.name_of("ITV") is None:
        detail += f" No ITV in the set: {itv_name} taken as the ITV (no motion)."
    return RuleCheck("ptv_margin", title, status, detail, source, ptv_name, agreement, rule_planes,
                     {z: list(p) for z, p in ptv_planes.items()})


def ptv_by_rule(itv_planes: Planes, ptv_planes: Planes, margin_mm: float) -> dict[float, list[np.ndarray]]:
    """The ITV grown by ``margin_mm`` (exact Euclidean), outlined on the PTV's planes (0.5 mm in-plane)."""
    from sbrtstandards.contours import typical_spacing_mm
    from sbrtstandards.margins import grow_planes, mask_to_planes

    zs_ptv = sorted(ptv_planes)
    zs_itv = sorted(itv_planes)
    dz = typical_spacing_mm(zs_ptv) or typical_spacing_mm(zs_itv) or 2.0
    z_lo = min(zs_itv) - margin_mm - 2 * dz
    z_hi = max(zs_itv) + margin_mm + 2 * dz
    anchor = zs_ptv[0]
    k0 = math.floor((z_lo - anchor) / dz)
    k1 = math.ceil((z_hi - anchor) / dz)
    pts = np.concatenate([np.asarray(p) for polys in itv_planes.values() for p in polys])
    lo = pts.min(axis=0) - margin_mm - 4 * RULE_GRID_MM
    hi = pts.max(axis=0) + margin_mm + 4 * RULE_GRID_MM
    size = (int(math.ceil((hi[0] - lo[0]) / RULE_GRID_MM)) + 1, int(math.ceil((hi[1] - lo[1]) / RULE_GRID_MM)) + 1,
            k1 - k0 + 1)
    grid = Grid((float(lo[0]), float(lo[1]), anchor + k0 * dz), (RULE_GRID_MM, RULE_GRID_MM, dz), size)
    mask = grow_planes(itv_planes, margin_mm, grid, name="ITV")
    return mask_to_planes(mask, grid)


# ----------------------------------------------------------------------------- OARs by rule


def oar_rules_and_facts(
    reference: Any, trainee: Any, roles: names_mod.NameMatch, grid: Grid, ct: Any, site: str,
    site_class: str | None, grading: Grading, mapping: Sequence[str], warnings: list[str],
) -> tuple[list[RuleCheck], Any]:
    """Chest wall and great vessels rebuilt by the rule and compared; the facts for the OAR list."""
    from sbrtstandards.oars import rules as rules_mod
    from sbrtstandards.oars.build import OarOptions, build_oars
    from sbrtstandards.oars.chestwall import SOURCE as CHEST_WALL_SOURCE
    from sbrtstandards.oars.dicom_io import match_roles
    from sbrtstandards.oars.vessels import SOURCE as VESSELS_SOURCE

    notes: list[str] = []
    mine = match_roles(trainee, grid, mapping, notes)
    warnings.extend(f"trainee's set: {n}" for n in notes)
    theirs = match_roles(reference, grid, [], [])
    anatomy = {**theirs, **mine}
    borrowed = sorted(r for r in theirs if r not in mine and r not in ("chest_wall", "great_vessels"))
    for role in ("chest_wall", "great_vessels"):
        anatomy.pop(role, None)
    target_role = next((r for r in ("PTV", "ITV", "GTV") if r in anatomy), None)
    checks: list[RuleCheck] = []
    result = None
    hu = ct.array_hu() if ct is not None else None
    if target_role is None:
        warnings.append("no PTV, ITV or GTV in either set: the OAR rules cannot run")
    else:
        target = anatomy[target_role]
        try:
            result = build_oars(hu, grid, anatomy, target.label, target.mask, options=OarOptions(site=site),
                                taken_names=[r.name for r in trainee.rois])
            warnings.extend(f"OAR rules: {w}" for w in result.warnings)
        except InputError as exc:
            warnings.append(f"the OAR rules could not run: {exc}")
        if borrowed and result is not None:
            warnings.append("OAR rules: taken from the reference set (the trainee's set has none): "
                            + ", ".join(borrowed))
    if site == "lung":
        checks.append(_rule_vs_trainee(
            "chest_wall", "Chest wall built by the rule", CHEST_WALL_SOURCE, result, trainee, roles, grid, grading,
            variants=_chest_wall_variants(result, grid, anatomy, hu, target_role, site)
            if roles.name_of("chest_wall") else None,
        ))
        checks.append(_rule_vs_trainee("great_vessels", "Great vessels built by the rule", VESSELS_SOURCE, result,
                                       trainee, roles, grid, grading))
    masks = {}
    from sbrtstandards.contours import roi_mask

    for role in ("spinal_cord", "lungs", "great_vessels", "PTV"):
        names = roles.roles.get(role, [])
        if names:
            m = np.zeros(grid.shape, dtype=bool)
            for n in names:
                m |= roi_mask(trainee.roi(n), grid)
            masks[role] = m
    cls = site_class
    if cls is None and result is not None and result.location is not None:
        cls = result.location.site_class
    upper, basis = None, "unknown"
    if site == "lung" and target_role is not None and result is not None and result.side is not None:
        from sbrtstandards.oars.geometry import centroid_mm

        lung = anatomy.get(f"lung_{result.side}")
        upper, basis = rules_mod.upper_lobe(centroid_mm(anatomy[target_role].mask, grid), None,
                                            lung.mask if lung is not None else None, grid)
    facts = rules_mod.CaseFacts(site=site, site_class=cls, upper_lobe=upper, upper_lobe_basis=basis,
                                present={r: list(n) for r, n in roles.roles.items()}, built={}, masks=masks,
                                grid=grid)
    return checks, facts


def _chest_wall_variants(result: Any, grid: Grid, anatomy: Mapping[str, Any], hu: Any, target_role: str | None,
                         site: str) -> list[tuple[str, np.ndarray]]:
    """The rule's chest wall, whole and limited to 3 cm around the PTV (§5.2(7) allows both)."""
    if result is None or target_role is None:
        return []
    whole = [(b.rule, b.mask) for b in result.built if b.role == "chest_wall"]
    if not whole:
        return []
    from sbrtstandards.oars.build import OarOptions, build_oars

    target = anatomy[target_role]
    try:
        limited = build_oars(hu, grid, dict(anatomy), target.label, target.mask,
                             options=OarOptions(site=site, chest_wall_limit_mm=CHEST_WALL_LIMIT_MM))
    except InputError:
        return whole
    return whole + [(b.rule, b.mask) for b in limited.built if b.role == "chest_wall"]


def _rule_vs_trainee(role: str, title: str, source: str, result: Any, trainee: Any, roles: names_mod.NameMatch,
                     grid: Grid, grading: Grading, variants: list[tuple[str, np.ndarray]] | None = None) -> RuleCheck:
    from sbrtstandards.margins import mask_to_planes

    name = roles.name_of(role)
    if name is None:
        why = ("several structures look like it: " + ", ".join(roles.ambiguous[role])) if role in roles.ambiguous \
            else "the trainee's set has no such structure (see the OAR list)"
        return RuleCheck(role, title, "not_evaluated", why, source)
    if variants is None:
        variants = [(b.rule, b.mask) for b in (result.built if result is not None else []) if b.role == role]
    variants = [(rule, m) for rule, m in variants if m.any()]
    if not variants:
        return RuleCheck(role, title, "not_evaluated", "the rule could not be applied (see the warnings)", source, name)
    trainee_planes = trainee.roi(name).planes()
    best: tuple[str, Agreement, dict[float, list[np.ndarray]]] | None = None
    for rule, mask in variants:
        planes = mask_to_planes(mask, grid)
        agreement = compare_planes(planes, trainee_planes, tolerance_mm=grading.tolerance_mm,
                                   names=(f"{role} by rule", name))
        if best is None or (agreement.surface_dice or 0.0) > (best[1].surface_dice or 0.0):
            best = (rule, agreement, planes)
    assert best is not None
    rule, agreement, planes = best
    status = grading.structure(agreement)
    detail = (f"{name} against the rule ({rule}): surface Dice {_fmt(agreement.surface_dice, 3)}, Dice "
              f"{_fmt(agreement.dice, 3)}, HD95 {_fmt(agreement.hd95_mm)} mm.")
    return RuleCheck(role, title, status, detail, source, name, agreement, planes,
                     {z: list(p) for z, p in trainee_planes.items()})


# ----------------------------------------------------------------------------- figures and HTML


def sheet_figures(sheet: ScoreSheet, reference: Any, trainee: Any, ct: Any = None) -> list[Figure]:
    """One figure per compared structure and per rule with a built structure: the worst slice."""
    figures = []
    window = "soft" if sheet.site == "liver" else "lung"
    for pair in sheet.comparison.pairs:
        a = pair.agreement
        if a is None or a.worst_slice_z_mm is None:
            continue
        ref_roi, test_roi = reference.roi(pair.reference), trainee.roi(pair.test)
        figures.append(disagreement_figure(
            f"{pair.reference} ({GRADE_WORDS.get(sheet.grades.get(pair.reference, ''), '')})",
            {} if ref_roi.is_empty else ref_roi.planes(), {} if test_roi.is_empty else test_roi.planes(),
            a.worst_slice_z_mm, ct=ct, window=window, labels=("reference", f"trainee: {pair.test}"),
            note=f"Dice {_fmt(a.dice, 3)}, surface Dice {_fmt(a.surface_dice, 3)}, HD95 {_fmt(a.hd95_mm)} mm",
        ))
    for rule in sheet.rules:
        a = rule.agreement
        if a is None or a.worst_slice_z_mm is None or rule.rule_planes is None or rule.trainee_planes is None:
            continue
        figures.append(disagreement_figure(
            f"{rule.title} ({GRADE_WORDS.get(rule.status, '')})", rule.rule_planes, rule.trainee_planes,
            a.worst_slice_z_mm, ct=ct, window=window, labels=("by the rule", f"trainee: {rule.structure}"),
            note=f"surface Dice {_fmt(a.surface_dice, 3)}, HD95 {_fmt(a.hd95_mm)} mm",
        ))
    return figures


def _nearest_plane(planes: Planes, z: float) -> tuple[float | None, list[np.ndarray]]:
    if not planes:
        return None, []
    zs = np.array(sorted(planes))
    k = int(np.argmin(np.abs(zs - z)))
    from sbrtstandards.contours import typical_spacing_mm

    half = (typical_spacing_mm(list(zs)) or 2.0) / 2.0
    if abs(zs[k] - z) > half + 1e-6:
        return None, []
    return float(zs[k]), list(planes[float(zs[k])])


def disagreement_figure(
    title: str, reference: Planes, test: Planes, z_mm: float, *, ct: Any = None, window: str = "lung",
    labels: tuple[str, str] = ("reference", "trainee"), note: str = "",
) -> Figure:
    """Both contours on the axial plane ``z_mm`` (the CT slice behind them when given), in mm."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from sbrtstandards.figures import WINDOWS

    _, ref_polys = _nearest_plane(reference, z_mm)
    _, test_polys = _nearest_plane(test, z_mm)
    polys = ref_polys + test_polys
    if polys:
        pts = np.concatenate(polys)
        lo, hi = pts.min(axis=0) - 10.0, pts.max(axis=0) + 10.0
    else:
        lo, hi = np.array([-20.0, -20.0]), np.array([20.0, 20.0])
    span = max(float(np.max(hi - lo)), 30.0)
    centre = (lo + hi) / 2.0
    lo, hi = centre - span / 2.0, centre + span / 2.0
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    drew_ct = False
    if ct is not None:
        grid = ct.grid
        zs = grid.axis_coords_mm(2)
        k = int(np.argmin(np.abs(zs - z_mm)))
        if abs(zs[k] - z_mm) <= grid.spacing_mm[2]:
            xs, ys = grid.axis_coords_mm(0), grid.axis_coords_mm(1)
            level, width = WINDOWS[window]
            ax.imshow(ct.array_hu()[k], cmap="gray", vmin=level - width / 2, vmax=level + width / 2,
                      extent=(xs[0], xs[-1], ys[-1], ys[0]), origin="upper", interpolation="nearest")
            drew_ct = True
    if not drew_ct:
        ax.set_facecolor("#f7f7f7")
        ax.grid(color="#d0d0d0", lw=0.5)
    for p in ref_polys:
        c = np.vstack([p, p[:1]])
        ax.plot(c[:, 0], c[:, 1], color=REFERENCE_COLOR, lw=1.6)
    for p in test_polys:
        c = np.vstack([p, p[:1]])
        ax.plot(c[:, 0], c[:, 1], color=TRAINEE_COLOR, lw=1.4, ls="--")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(hi[1], lo[1])  # anterior up
    ax.set_aspect("equal")
    ax.set_xlabel("x (R→L) mm")
    ax.set_ylabel("y (A→P) mm")
    ax.set_title(f"{title}\nz = {z_mm:.1f} mm", fontsize=9)
    handles = [
        Line2D([], [], color=REFERENCE_COLOR, lw=1.6, label=labels[0] + ("" if ref_polys else " (none)")),
        Line2D([], [], color=TRAINEE_COLOR, lw=1.4, ls="--", label=labels[1] + ("" if test_polys else " (none)")),
    ]
    ax.legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.8)
    caption = f"{title}: axial plane of the largest disagreement, z = {z_mm:.1f} mm. {note}".strip()
    return figure_from_matplotlib(fig, caption=caption, alt=f"{title} contours")


def write_score_sheet_html(sheet: ScoreSheet, path: str | os.PathLike[str]) -> Path:
    """The score sheet as one self-contained HTML page (atomic write)."""
    who = sheet.trainee_name or Path(sheet.trainee_file).name
    report = Report(f"Contouring score sheet — {who}",
                    f"{sheet.site} SBRT · trainee {sheet.trainee_file} · reference {sheet.reference_file}")
    s = sheet.summary
    head = report.section("Summary")
    head.key_values({
        "Trainee": who,
        "Date": _dt.date.today().isoformat(),
        "Site": sheet.site + (f" ({sheet.site_class})" if sheet.site_class else ""),
        "Structures compared": s["structures_compared"],
        "Mean surface Dice": s["mean_surface_dice"],
        "Grades": f"{s['grades']['pass']} good, {s['grades']['minor']} review, {s['grades']['fail']} redo",
        "Contouring rules": f"{s['rules']['pass']} good, {s['rules']['minor']} review, {s['rules']['fail']} redo, "
                            f"{s['rules']['not_evaluated']} not evaluated",
        "Required OARs present": f"{s['required_oars_present']} of {s['required_oars']}"
                                 + (f" (missing: {', '.join(s['missing_oars'])})" if s["missing_oars"] else ""),
    })
    head.warnings(sheet.warnings + sheet.comparison.warnings)
    rows, status = [], []
    for pair in sheet.comparison.pairs:
        a = pair.agreement
        grade = sheet.grades.get(pair.reference, "not_evaluated")
        rows.append([pair.reference, pair.test, GRADE_WORDS[grade]] + ([
            a.dice, a.jaccard, a.hd95_mm, a.hd_mm, a.msd_mm, a.surface_dice, a.volume_ratio, a.centroid_shift_mm]
            if a is not None else [None] * 8))
        status.append(grade)
    comp = report.section("Agreement with the reference contours", level=3)
    comp.table(Table(
        ["Structure", "Trainee's structure", "Grade", "Dice", "Jaccard", "HD95 (mm)", "HD (mm)", "MSD (mm)",
         f"Surface Dice ({sheet.grading.tolerance_mm:g} mm)", "Volume ratio", "Centroid shift (mm)"],
        rows, caption="Trainee against reference; graded by the surface Dice.", row_status=status))
    missing = sheet.comparison.unmatched_reference
    extra = sheet.comparison.unmatched_test
    comp.text("Reference structures the trainee did not contour: " + (", ".join(missing) or "none") + ". "
              "Trainee structures with no reference counterpart: " + (", ".join(extra) or "none") + ".")
    rules = report.section("Contouring rules of the standard", level=3)
    rules.table(Table(["Rule", "Grade", "Detail", "Source"],
                      [[r.title, GRADE_WORDS.get(r.status, r.status), r.detail, r.source] for r in sheet.rules],
                      row_status=[r.status for r in sheet.rules]))
    if sheet.required:
        oar_status = {"present": "pass", "review": "minor", "missing": "fail", "not_required": "not_evaluated"}
        req = report.section("Organs at risk the standard asks for", level=3)
        req.table(Table(["Organ (role)", "Status", "Trainee's structure", "Requirement", "Detail", "Source"],
                        [[r["role"], r["status"].replace("_", " "), ", ".join(r["structures"]), r["requirement"],
                          r["detail"], r["source"]] for r in sheet.required],
                        row_status=[oar_status.get(r["status"], "") for r in sheet.required]))
    if sheet.figures:
        report.section("Where the contours disagree", level=3).figures(sheet.figures)
    how = report.section("How to read this sheet", level=3)
    how.text("Dice and Jaccard compare volumes; HD (Hausdorff) is the largest distance between the two surfaces and "
             "HD95 its 95th percentile; MSD is the mean distance between the surfaces; the surface Dice is the share "
             f"of both surfaces lying within {sheet.grading.tolerance_mm:g} mm of the other one, which tracks how "
             "much editing a contour needs. Contours are compared as 3D shapes interpolated between their planes, "
             "on a sub-millimetre lattice.")
    how.text("Grades are the course's limits, not the standards': " + sheet.grading.describe() + ".")
    return report.write(path)


def _fmt(value: float | None, nd: int = 1) -> str:
    return "—" if value is None else f"{value:.{nd}f}"
