"""``sbrt oars``: build the organs at risk that the standards derive by rule, on arrays.

:func:`build_oars` takes the CT (HU on its grid) and the structures the user already has
(by role, as :mod:`sbrtstandards.names` matched them) and returns every structure it
built, with the rule, the clause and the inputs it came from, plus the tumour location
class, the fractionation options it selects and the contouring checks. Nothing is built
for a role the user already has: the user's structure is used and listed as existing.
:func:`sbrtstandards.oars.dicom_io.run_oars` does the DICOM reading and writing around it.

What is built (TG-263 names, see :mod:`sbrtstandards.tg263`):

=================== ======================== =====================================================
role                name                     rule
=================== ======================== =====================================================
body                Body                     CT outline (:mod:`.body`), if the set has no body
lung_left/right     Lung_L, Lung_R           CT lungs, or the user's ``Lungs`` split at the midline
lungs               Lungs                    Lung_L + Lung_R (total lung)
lungs_minus_target  Lungs-GTV (or -ITV/-PTV) total lung minus the GTV (§5.2(2)), else ITV, else PTV
chest_wall          Chestwall_L / _R         :mod:`.chestwall` (§5.2(7))
great_vessels       GreatVes                 :mod:`.vessels` (§5.2(8))
pbt                 AirWay_Prox              lowest 2 cm of the trachea + bronchi (§5.2(6)): contours, with
                                             the CT airways (+ 2 mm wall) for what is not contoured
pbt_zone            AirWay_Prox_Zone         PBT + 20 mm, all directions (the no-fly zone)
normal_liver        Liver-GTV (or -ITV/-PTV) liver minus the GTV, else ITV, else PTV (liver standard)
ring_2cm            Body-PTV_20mm            body minus (PTV + 20 mm): where D2cm is read
prv                 SpinalCord_PRVnn         spinal cord + N mm (on request)
=================== ======================== =====================================================

The ``ring_2cm`` structure is the D2cm region of the CLI contract ("the maximum dose 2 cm
or more from the PTV in all directions"): the body minus the PTV grown by 20 mm, i.e. every
point of the body at least 20 mm from the PTV. It is *not* the 0-20 mm shell around the
PTV, whose maximum is the prescription dose at the PTV surface.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sbrtstandards import tg263
from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.margins import Margin
from sbrtstandards.names import candidates
from sbrtstandards.oars import body as body_mod
from sbrtstandards.oars import chestwall, location, rules, vessels
from sbrtstandards.oars.geometry import bbox, centroid_mm, grow_in_box, volume_cc

Progress = Callable[[float, str], None]

SITES = ("lung", "liver")
SIDES = ("auto", "left", "right")
MIDLINE_TOLERANCE_MM = 5.0  # a tumour centroid this close to the midline has no clear side
PTV_MARGIN_MM = 5.0  # seed 001 §5.1: PTV = ITV + 5 mm (used when the set has no PTV)
RING_MM = 20.0
AIRWAY_WALL_MM = 2.0  # airway wall added to the lumen found on the CT (trachea and main bronchi: 1.5-3 mm)
D2CM_NAME = "Body-PTV_20mm"
BODY_SOURCE = "body outline convention (> -500 HU, largest component, holes filled); standards facts §7"
LUNG_SOURCE = "T/CNHAW-B-0020-2025 explanatory note §5.2(2)"
LIVER_SOURCE = ("T/CNHAW-B-0017-2025 §7.3.1 (seed 002) and explanatory note §4.2.1 (seed 000): "
                "normal liver volume for the spared-volume rule")
D2CM_SOURCE = "RTOG 0813/0915 D2cm (standards facts §4): maximum dose >= 2 cm from the PTV in all directions"
PRV_SOURCE = "ICRU 62 planning organ-at-risk volume (PRV = OAR + margin)"


@dataclass
class Structure:
    """A structure of the input set playing a role: its name(s) and mask on the CT grid."""

    names: list[str]
    mask: np.ndarray

    @property
    def label(self) -> str:
        return " + ".join(self.names)


@dataclass
class Built:
    """One structure built by a rule."""

    name: str
    role: str
    mask: np.ndarray
    rule: str
    source: str
    inputs: list[str]
    volume_cc: float  # of the mask; the DICOM front end replaces it by the written contours' volume

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "volume_cc": round(self.volume_cc, 3), "rule": self.rule,
                "source": self.source, "from": list(self.inputs)}


@dataclass
class OarOptions:
    site: str | None = None  # None: liver when the tumour is in a liver structure, else lung
    side: str = "auto"
    chest_wall_limit_mm: float | None = None  # §5.2(7) option: only tissue within this of the PTV
    skin_mm: float = chestwall.SKIN_MM
    cord_prv_mm: float | None = None
    body_threshold_hu: float = body_mod.BODY_THRESHOLD_HU
    lung_threshold_hu: float = body_mod.LUNG_THRESHOLD_HU
    bone_threshold_hu: float = body_mod.BONE_THRESHOLD_HU
    lumen_threshold_hu: float = vessels.LUMEN_HU


@dataclass
class OarResult:
    site: str
    side: str | None
    side_basis: str
    location: location.Location | None
    fractionation_options: list[dict[str, Any]]
    ultracentral_limits: list[dict[str, Any]]
    built: list[Built]
    existing: list[dict[str, str]]
    contouring_checks: list[dict[str, Any]]
    target: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The CLI contract's JSON for ``sbrt oars`` (plus the extra keys documented there)."""
        loc = self.location.to_json() if self.location is not None else {
            "class": None, "distance_to_pbt_mm": None, "touches": [],
            "reason": f"the location class applies to lung tumours (site: {self.site})"}
        return {
            "site": self.site,
            "target": self.target,
            "side": self.side,
            "side_basis": self.side_basis,
            "location": loc,
            "fractionation_options": self.fractionation_options,
            "ultracentral_limits": self.ultracentral_limits,
            "built": [b.to_json() for b in self.built],
            "existing": self.existing,
            "contouring_checks": self.contouring_checks,
            "warnings": self.warnings,
        }


def build_oars(
    hu: np.ndarray | None,
    grid: Grid,
    structures: Mapping[str, Structure],
    target_name: str,
    target: np.ndarray,
    *,
    options: OarOptions | None = None,
    taken_names: list[str] | None = None,
    names_by_role: Mapping[str, list[str]] | None = None,
    progress: Progress | None = None,
) -> OarResult:
    """Every rule-derived OAR for ``target`` (see the module docstring).

    ``structures`` maps roles (``body``, ``lung_left``, ``trachea``, ``GTV``, ``vertebra``,
    ``vessel_lumen`` ...) to the user's structures; ``hu`` (may be None when every input the
    rules need exists) is the CT on ``grid``; ``taken_names`` are the input set's names, which
    new structures must not reuse; ``names_by_role`` lists every role the input set has
    (also those whose masks the rules do not need), for the contouring checks.
    """
    opts = options or OarOptions()
    if opts.side not in SIDES:
        raise InputError(f"side must be one of {', '.join(SIDES)}, not '{opts.side}'")
    if opts.site is not None and opts.site not in SITES:
        raise InputError(f"site must be one of {', '.join(SITES)}, not '{opts.site}'")
    grid.require_axial("OAR generation")
    if target.shape != grid.shape:
        raise InputError(f"target {target_name}: mask shape {target.shape} does not fit the CT grid")
    if not target.any():
        raise InputError(f"target {target_name}: no voxel of the CT grid lies inside it "
                         f"(is it outside the CT? CT: {grid.describe()})")
    if hu is not None and hu.shape != grid.shape:
        raise InputError(f"CT array of shape {hu.shape} does not match its grid ({grid.describe()})")
    job = _Job(hu, grid, dict(structures), target_name, target, opts, list(taken_names or []), progress)
    job.names_by_role = {r: list(n) for r, n in (names_by_role or {}).items()}
    return job.run()


class _Job:
    """The state of one build (kept in one place so each rule is a short method)."""

    def __init__(self, hu: np.ndarray | None, grid: Grid, structures: dict[str, Structure], target_name: str,
                 target: np.ndarray, opts: OarOptions, taken: list[str], progress: Progress | None) -> None:
        self.hu = hu
        self.grid = grid
        self.s = structures
        self.target_name = target_name
        self.target = target
        self.opts = opts
        self.taken = taken
        self.progress = progress
        self.warnings: list[str] = []
        self.built: list[Built] = []
        self.existing: list[dict[str, str]] = []
        self.masks: dict[str, np.ndarray] = {}  # role -> mask in use (input or built)
        self.carina_z: float | None = None
        self.airway: np.ndarray | None = None  # CT airway lumen, when the lungs were found on the CT
        self._walls: np.ndarray | None = None
        self.names_by_role: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ helpers

    def step(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(fraction, message)

    def need_ct(self, what: str) -> np.ndarray:
        if self.hu is None:
            raise InputError(f"{what}: the structure set has none and no CT was given to find it on")
        return self.hu

    def add(self, role: str, tg_role_or_name: str, mask: np.ndarray, rule: str, source: str,
            inputs: list[str]) -> str | None:
        """Record a built structure; ``tg_role_or_name`` is a :mod:`tg263` role key or a literal name."""
        try:
            name = tg263.entry(tg_role_or_name).name
        except InputError:
            name = tg_role_or_name
        if not mask.any():
            self.warnings.append(f"{name}: the rule gave an empty structure; not written ({rule})")
            return None
        name = _free_name(name, self.taken)
        self.taken.append(name)
        self.built.append(Built(name, role, mask, rule, source, inputs, volume_cc(mask, self.grid)))
        self.masks[role] = mask
        return name

    def have(self, role: str) -> Structure | None:
        st = self.s.get(role)
        if st is not None and st.mask.any():
            return st
        if st is not None:
            self.warnings.append(f"{st.label} ({role}) has no voxel on the CT grid; ignored")
        return None

    def note_existing(self, role: str, st: Structure) -> None:
        self.existing.append({"role": role, "name": st.label})
        self.masks[role] = st.mask

    # ------------------------------------------------------------------ the run

    def run(self) -> OarResult:
        self.step(0.02, "targets")
        tumour_name, tumour, ptv_name, ptv = self.targets()
        site = self.site(tumour)
        self.step(0.05, "body")
        body = self.body()
        side, side_basis, midline = None, "", None
        loc = None
        fx: list[dict[str, Any]] = []
        uc: list[dict[str, Any]] = []
        if site == "lung":
            self.step(0.15, "lungs")
            left, right = self.lungs(body)
            midline = self.midline(body)
            side, side_basis = self.side(tumour, tumour_name, midline, left, right)
            self.check_tumour_in_lungs(tumour, tumour_name, left, right)
            self.step(0.35, "bones")
            vb, sternum = self.bones(body, midline, left | right)
            self.step(0.45, "chest wall")
            self.chest_wall(side, left, right, body, vb, sternum, midline, ptv)
            self.step(0.65, "great vessels")
            self.great_vessels(body, left | right, ptv, ptv_name, vb, sternum)
            self.step(0.75, "proximal bronchial tree")
            pbt = self.pbt(body)
            self.step(0.8, "location class")
            loc = self.location(tumour, tumour_name, ptv, ptv_name, pbt)
            fx = location.fractionation_options(loc.site_class, self.warnings)
            uc = location.ultracentral_limits(self.warnings) if loc.site_class == "ultracentral" else []
            self.minus_target("lungs", "lungs_minus_target", "Lungs", LUNG_SOURCE,
                              "total lung (Lung_L + Lung_R) minus the {what}")
        else:
            self.minus_target("liver", "normal_liver", "Liver", LIVER_SOURCE, "liver minus the {what}")
        self.step(0.88, "D2cm region")
        self.ring(body, ptv, ptv_name)
        self.prv()
        self.step(0.95, "contouring checks")
        checks = self.checks(site, loc, tumour, side)
        target_json = {"name": self.target_name, "tumour": tumour_name, "ptv": ptv_name,
                       "volume_cc": round(volume_cc(self.target, self.grid), 3)}
        self.step(1.0, "done")
        warnings = list(dict.fromkeys(self.warnings))  # a rule may meet the same problem twice
        return OarResult(site, side, side_basis, loc, fx, uc, self.built, self.existing, checks, target_json,
                         warnings)

    # ------------------------------------------------------------------ targets and site

    def targets(self) -> tuple[str, np.ndarray, str | None, np.ndarray]:
        kind = _target_kind(self.target_name)
        tumour_name, tumour = self.target_name, self.target
        for role in ("GTV", "ITV"):
            st = self.have(role)
            if st is not None:
                tumour_name, tumour = st.label, st.mask
                break
        else:
            if kind == "PTV":
                self.warnings.append(f"no GTV or ITV: the tumour's side and distance are taken from the PTV "
                                     f"{self.target_name} (conservative)")
        st = self.have("PTV")
        if st is not None:
            return tumour_name, tumour, st.label, st.mask
        if kind == "PTV":
            return tumour_name, tumour, self.target_name, self.target
        self.warnings.append(f"no PTV: PTV = {tumour_name} + {PTV_MARGIN_MM:g} mm (seed 001 §5.1) is used for the "
                             "ultra-central test and the D2cm region; it is not written")
        ptv = grow_in_box(tumour, self.grid, PTV_MARGIN_MM, name=tumour_name, notes=self.warnings,
                          resolution_mm=1.0)
        return tumour_name, tumour, f"{tumour_name}+{PTV_MARGIN_MM:g}mm", ptv

    def site(self, tumour: np.ndarray) -> str:
        if self.opts.site is not None:
            return self.opts.site
        liver = self.have("liver")
        if liver is not None and np.any(liver.mask & tumour):
            return "liver"
        return "lung"

    # ------------------------------------------------------------------ body and lungs

    def body(self) -> np.ndarray:
        st = self.have("body")
        if st is not None:
            self.note_existing("body", st)
            return st.mask
        hu = self.need_ct("body outline")
        mask = body_mod.segment_body(hu, self.grid, threshold_hu=self.opts.body_threshold_hu)
        if not np.any(mask & self.target):
            self.warnings.append(f"the target {self.target_name} lies outside the body found on the CT")
        self.add("body", "body", mask, f"CT > {self.opts.body_threshold_hu:g} HU, largest component, couch removed, "
                 "holes filled slice by slice", BODY_SOURCE, ["CT"])
        return mask

    def lungs(self, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        left_st, right_st, both = self.have("lung_left"), self.have("lung_right"), self.have("lungs")
        if left_st is not None and right_st is not None:
            self.note_existing("lung_left", left_st)
            self.note_existing("lung_right", right_st)
            left, right = left_st.mask, right_st.mask
        elif both is not None:
            self.note_existing("lungs", both)
            midline = self.midline(body)
            notes: list[str] = []
            left, right = body_mod.split_left_right(both.mask, self.grid, midline, notes)
            self.warnings += notes
            rule = f"'{both.label}' split at the body midline (x = {midline:.1f} mm; +x = patient's left)"
            if left_st is None:
                self.add("lung_left", "lung_l", left, rule, LUNG_SOURCE, [both.label])
            else:
                self.note_existing("lung_left", left_st)
                left = left_st.mask
            if right_st is None:
                self.add("lung_right", "lung_r", right, rule, LUNG_SOURCE, [both.label])
            else:
                self.note_existing("lung_right", right_st)
                right = right_st.mask
        elif self.hu is None:
            missing = [side for side, st in (("left", left_st), ("right", right_st)) if st is None]
            self.warnings.append(f"no {' and no '.join(missing)} lung in the structure set and no CT to find it on")
            empty = np.zeros(self.grid.shape, dtype=bool)
            left = left_st.mask if left_st is not None else empty
            right = right_st.mask if right_st is not None else empty
            for role, st in (("lung_left", left_st), ("lung_right", right_st)):
                if st is not None:
                    self.note_existing(role, st)
        else:
            hu = self.hu
            seg = body_mod.segment_lungs(hu, self.grid, body, lung_threshold_hu=self.opts.lung_threshold_hu)
            self.warnings += seg.notes
            self.airway, self.carina_z = seg.airway, seg.carina_z_mm
            rule = (f"CT air < {self.opts.lung_threshold_hu:g} HU inside the body, trachea and main bronchi removed, "
                    "holes filled slice by slice; {side} of the midline")
            left, right = seg.left, seg.right
            if left_st is not None:
                self.note_existing("lung_left", left_st)
                left = left_st.mask
            else:
                self.add("lung_left", "lung_l", left, rule.format(side="left"), LUNG_SOURCE, ["CT"])
            if right_st is not None:
                self.note_existing("lung_right", right_st)
                right = right_st.mask
            else:
                self.add("lung_right", "lung_r", right, rule.format(side="right"), LUNG_SOURCE, ["CT"])
        if both is None and (left.any() or right.any()):
            self.add("lungs", "lungs", left | right, "Lung_L + Lung_R (total lung)", LUNG_SOURCE,
                     [n for n in (self._name("lung_left"), self._name("lung_right")) if n])
        elif both is not None:
            self.masks["lungs"] = both.mask
        return left, right

    def _name(self, role: str) -> str | None:
        for b in self.built:
            if b.role == role:
                return b.name
        st = self.s.get(role)
        return st.label if st is not None else None

    def midline(self, body: np.ndarray) -> float:
        vb = self.have("vertebra")
        if vb is not None:
            c = centroid_mm(vb.mask, self.grid)
            if c is not None:
                return float(c[0])
        return body_mod.body_midline_x_mm(body, self.grid)

    def side(self, tumour: np.ndarray, tumour_name: str, midline: float, left: np.ndarray,
             right: np.ndarray) -> tuple[str, str]:
        c = centroid_mm(tumour, self.grid)
        assert c is not None
        dx = float(c[0]) - midline
        basis = f"{tumour_name} centroid x = {c[0]:.1f} mm, midline x = {midline:.1f} mm (+x = patient's left)"
        if self.opts.side != "auto":
            return self.opts.side, f"given (--side {self.opts.side}); auto would use {basis}"
        if abs(dx) >= MIDLINE_TOLERANCE_MM:
            return ("left" if dx > 0 else "right"), "auto: " + basis
        in_left, in_right = int(np.count_nonzero(tumour & left)), int(np.count_nonzero(tumour & right))
        side = "left" if in_left > in_right else "right"
        self.warnings.append(f"side: {tumour_name} is within {MIDLINE_TOLERANCE_MM:g} mm of the midline; the side "
                             f"with more tumour in the lung ({side}) was taken: check it, or give --side")
        return side, f"auto (near the midline): {basis}; tumour voxels in lung L/R {in_left}/{in_right}"

    def check_tumour_in_lungs(self, tumour: np.ndarray, tumour_name: str, left: np.ndarray,
                              right: np.ndarray) -> None:
        if not (left.any() or right.any()):
            self.warnings.append("no lungs: the lung rules (chest wall, lungs minus target) cannot run")
            return
        b = bbox(tumour)
        assert b is not None
        if not np.any(tumour[b] & (left[b] | right[b])):
            self.warnings.append(f"{tumour_name} does not overlap either lung: the lung rules assume a lung "
                                 "tumour (check the target and --site)")

    def bones(self, body: np.ndarray, midline: float, lungs: np.ndarray) -> tuple[np.ndarray | None,
                                                                                   np.ndarray | None]:
        vb_st, st_st = self.have("vertebra"), self.have("sternum")
        vb = vb_st.mask if vb_st is not None else None
        sternum = st_st.mask if st_st is not None else None
        if vb_st is not None:
            self.note_existing("vertebra", vb_st)
        if st_st is not None:
            self.note_existing("sternum", st_st)
        if (vb is None or sternum is None) and self.hu is not None:
            zs = self.grid.axis_coords_mm(2)
            ks = np.flatnonzero(lungs.any(axis=(1, 2)))
            zr = (float(zs[ks[0]]) - 30.0, float(zs[ks[-1]]) + 30.0) if len(ks) else None
            found = body_mod.find_bones(self.hu, self.grid, body, midline_x_mm=midline,
                                        bone_threshold_hu=self.opts.bone_threshold_hu, z_range_mm=zr)
            self.warnings += found.notes
            self.masks["spine_ct"] = found.spine
            if vb is None and found.vertebral_body.any():
                vb = found.vertebral_body
                self.warnings.append(f"vertebral bodies found on the CT (bone >= {self.opts.bone_threshold_hu:g} HU "
                                     "near the midline): review the chest wall's posterior medial limit")
            if sternum is None and found.sternum.any():
                sternum = found.sternum
                self.warnings.append(f"sternum found on the CT (bone >= {self.opts.bone_threshold_hu:g} HU, most "
                                     "anterior near the midline): review the chest wall's anterior medial limit")
        elif vb is None or sternum is None:
            self.warnings.append("no CT: the missing vertebral body / sternum limits fall back to the midline")
        return vb, sternum

    # ------------------------------------------------------------------ the OAR rules

    def chest_wall(self, side: str, left: np.ndarray, right: np.ndarray, body: np.ndarray,
                   vb: np.ndarray | None, sternum: np.ndarray | None, midline: float, ptv: np.ndarray) -> None:
        existing = self.s.get("chest_wall")
        if existing is not None:
            same_side = [n for n in existing.names if _name_side(n) in (side, None)]
            if same_side:
                self.existing.append({"role": "chest_wall", "name": " + ".join(same_side)})
                return
        ipsi = left if side == "left" else right
        if not ipsi.any():
            self.warnings.append(f"chest wall: no {side} lung (the tumour's side); the chest-wall rule (§5.2(7)) "
                                 "needs the ipsilateral lung")
            return
        result = chestwall.chest_wall(ipsi, left | right, body, self.grid, side, vertebral_body=vb, sternum=sternum,
                                      midline_x_mm=midline, ptv=ptv, limit_to_ptv_mm=self.opts.chest_wall_limit_mm,
                                      skin_mm=self.opts.skin_mm)
        self.warnings += result.notes
        inputs = [n for n in (self._name(f"lung_{side}"), self._name("lung_right" if side == "left" else "lung_left"),
                              self._name("body")) if n]
        inputs += [label for label, m in (("vertebral body", vb), ("sternum", sternum)) if m is not None]
        self.add("chest_wall", f"chest_wall_{side[0]}", result.mask, result.rule, chestwall.SOURCE, inputs)

    def great_vessels(self, body: np.ndarray, lungs: np.ndarray, ptv: np.ndarray, ptv_name: str | None,
                      vb: np.ndarray | None, sternum: np.ndarray | None) -> None:
        existing = self.have("great_vessels")
        if existing is not None:
            self.note_existing("great_vessels", existing)
            return
        lumen_st = self.have("vessel_lumen")
        if lumen_st is not None:
            source_mask, inputs = lumen_st.mask, list(lumen_st.names)
        elif self.hu is not None:
            bones = np.zeros(self.grid.shape, dtype=bool)
            for m in (vb, sternum, self.masks.get("spine_ct")):
                if m is not None:
                    bones |= m
            window = vessels.z_window(ptv, self.grid, vessels.EXTENT_MM + 10.0, vessels.EXTENT_MM + 10.0)
            source_mask = vessels.enhanced_lumen(self.hu, self.grid, lungs, bones,
                                                 lumen_hu=self.opts.lumen_threshold_hu, z_flags=window)
            inputs = [f"CT contrast-enhanced lumen ({self.opts.lumen_threshold_hu:g}-{vessels.LUMEN_MAX_HU:g} HU)"]
            if not source_mask.any():
                self.warnings.append("great vessels: no vessel contours and no contrast-enhanced lumen on the CT "
                                     f"(>= {self.opts.lumen_threshold_hu:g} HU in the mediastinum); give the aorta, "
                                     "pulmonary artery and venae cavae contours (or --map NAME=vessel_lumen)")
                return
            self.warnings.append("great vessels from the contrast-enhanced lumen on the CT: the venae cavae and "
                                 "unenhanced vessels are missed, enhanced heart chambers are taken if there is no "
                                 "heart contour; review")
        else:
            self.warnings.append("great vessels: no vessel contours and no CT")
            return
        heart = self.have("heart")
        result = vessels.great_vessels(source_mask, ptv, self.grid, body=body, lungs=lungs,
                                       heart=heart.mask if heart is not None else None)
        self.warnings += result.notes
        if heart is None:
            self.warnings.append("great vessels: no heart contour to subtract")
        inputs += [n for n in (ptv_name, heart.label if heart is not None else None) if n]
        self.add("great_vessels", "great_vessels", result.mask, result.rule, vessels.SOURCE, inputs)

    def pbt(self, body: np.ndarray) -> np.ndarray | None:
        st = self.have("pbt")
        pbt_mask: np.ndarray | None = None
        if st is not None:
            self.note_existing("pbt", st)
            pbt_mask = st.mask
        else:
            trachea, parts = self.have("trachea"), [self.have(r) for r in ("bronchus_main", "bronchus")]
            found = [p for p in parts if p is not None]
            pbt_mask = np.zeros(self.grid.shape, dtype=bool)
            inputs: list[str] = []
            rules_text: list[str] = []
            if trachea is not None:
                pbt_mask |= location.distal_trachea(trachea.mask, self.grid)
                inputs.append(f"{trachea.label} (lowest {location.DISTAL_TRACHEA_MM:g} mm)")
                rules_text.append("distal 2 cm of the trachea contour")
            for p in found:
                pbt_mask |= p.mask
                inputs.append(p.label)
            if found:
                rules_text.append("bronchus contours")
            else:  # no bronchus contours: the bronchi (and, if needed, the trachea) from the CT airways
                ct_trachea, ct_bronchi = self.ct_airway_parts(body)
                if ct_bronchi is not None and ct_bronchi.any():
                    pbt_mask |= ct_bronchi
                    inputs.append("CT")
                    rules_text.append(f"bronchi below the carina from the CT airway lumen (< "
                                      f"{body_mod.AIRWAY_THRESHOLD_HU:g} HU, grown from the trachea) + "
                                      f"{AIRWAY_WALL_MM:g} mm wall")
                    self.warnings.append("PBT: bronchi taken from the airways found on the CT (no bronchus "
                                         "contours): review them, the location class depends on them")
                elif trachea is not None:
                    self.warnings.append("PBT: only the trachea is contoured and no bronchi were found on the CT; "
                                         "the main and lobar bronchi are missing from the PBT")
                if trachea is None and ct_trachea is not None and ct_trachea.any():
                    pbt_mask |= location.distal_trachea(ct_trachea, self.grid)
                    rules_text.append("distal 2 cm of the CT trachea")
            if pbt_mask.any():
                self.add("pbt", "proximal_bronchial_tree", pbt_mask, "; ".join(rules_text), location.PBT_SOURCE,
                         inputs)
        if pbt_mask is None or not pbt_mask.any():
            self.warnings.append("no proximal bronchial tree (contour, trachea/bronchi or CT airways): no PBT zone "
                                 "and no location class")
            return None
        zone_st = self.have("pbt_zone")
        if zone_st is not None:
            self.note_existing("pbt_zone", zone_st)
            return pbt_mask
        zone = grow_in_box(pbt_mask, self.grid, location.PBT_ZONE_MM, name="PBT", notes=self.warnings) & body
        self.add("pbt_zone", "pbt_zone", zone, f"proximal bronchial tree + {location.PBT_ZONE_MM:g} mm in all "
                 "directions (exact Euclidean margin), inside the body", location.PBT_SOURCE,
                 [self._name("pbt") or "PBT"])
        return pbt_mask

    def ct_airway_parts(self, body: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(trachea, bronchi) of the CT airways with their wall, or (None, None) without CT airways."""
        airway = self.airway
        if airway is None and self.hu is not None:
            notes: list[str] = []
            airway, self.carina_z = body_mod.segment_airways(self.hu, self.grid, body, self.midline(body),
                                                             body_mod.AIRWAY_THRESHOLD_HU, notes)
            self.airway = airway
            self.warnings += notes
        if airway is None or not airway.any():
            return None, None
        return body_mod.airway_split(self.airway_walls(airway), self.grid, self.carina_z)

    def airway_walls(self, lumen: np.ndarray) -> np.ndarray:
        """The CT airway lumen grown by the airway wall (the PBT and trachea include their wall)."""
        if self._walls is None:
            self._walls = grow_in_box(lumen, self.grid, AIRWAY_WALL_MM, name="airway lumen", notes=self.warnings)
        return self._walls

    def location(self, tumour: np.ndarray, tumour_name: str, ptv: np.ndarray, ptv_name: str | None,
                 pbt: np.ndarray | None) -> location.Location:
        contact: dict[str, np.ndarray | None] = {}
        for role in ("trachea", "pbt", "esophagus"):
            st = self.have(role)
            contact[role] = st.mask if st is not None else (pbt if role == "pbt" else None)
        if contact["trachea"] is None and self.airway is not None and self.airway.any():
            contact["trachea"] = body_mod.airway_split(self.airway_walls(self.airway), self.grid, self.carina_z)[0]
            self.warnings.append("ultra-central test: the trachea is the one found on the CT")
        loc = location.classify_location(tumour, tumour_name, self.grid, pbt=pbt, ptv=ptv, ptv_name=ptv_name,
                                         contact=contact)
        self.warnings += loc.notes
        return loc

    def minus_target(self, base_role: str, role: str, base_name: str, source: str, rule: str) -> None:
        existing = self.have(role)
        if existing is not None:
            self.note_existing(role, existing)
            return
        base = self.masks.get(base_role)
        if base is None:
            st = self.have(base_role)
            base = st.mask if st is not None else None
        if base is None or not base.any():
            self.warnings.append(f"{role}: no {base_name.lower()} structure; the rule needs one")
            return
        for kind in ("GTV", "ITV"):
            st = self.have(kind)
            if st is not None:
                what, subtract, label = kind, st.mask, st.label
                break
        else:
            kind = _target_kind(self.target_name) or "PTV"
            what, subtract, label = kind, self.target, self.target_name
            self.warnings.append(f"{role}: no GTV or ITV; {base_name} minus the target {self.target_name} instead")
        self.add(role, f"{base_name}-{what}", base & ~subtract, rule.format(what=f"{what} ({label})"), source,
                 [self._name(base_role) or base_name, label])

    def ring(self, body: np.ndarray, ptv: np.ndarray, ptv_name: str | None) -> None:
        existing = self.have("ring_2cm")
        if existing is not None:
            self.note_existing("ring_2cm", existing)
            return
        grown = grow_in_box(ptv, self.grid, RING_MM, name=ptv_name or "PTV", notes=self.warnings, resolution_mm=1.0)
        self.add("ring_2cm", D2CM_NAME, body & ~grown,
                 f"body minus ({ptv_name} + {RING_MM:g} mm): every point at least 2 cm from the PTV (D2cm region)",
                 D2CM_SOURCE, [self._name("body") or "Body", ptv_name or "PTV"])

    def prv(self) -> None:
        mm = self.opts.cord_prv_mm
        if mm is None:
            return
        cord = self.have("spinal_cord")
        if cord is None:
            self.warnings.append("cord PRV: no spinal cord structure")
            return
        grown = grow_in_box(cord.mask, self.grid, Margin.isotropic(float(mm)), name=cord.label, notes=self.warnings,
                            resolution_mm=1.0)
        self.add("prv", tg263.prv_name(tg263.standard_name("spinal_cord"), float(mm)), grown,
                 f"spinal cord + {mm:g} mm (exact isotropic margin)", PRV_SOURCE, [cord.label])

    def checks(self, site: str, loc: location.Location | None, tumour: np.ndarray,
               side: str | None) -> list[dict[str, Any]]:
        present = {role: list(names) for role, names in self.names_by_role.items() if names}
        present.update({role: list(st.names) for role, st in self.s.items() if st.mask.any()})
        if "chest_wall" in present:
            present["chest_wall"] = [n for n in present["chest_wall"] if _name_side(n) in (side, None)]
            if not present["chest_wall"]:
                del present["chest_wall"]
        built = {b.role: b.name for b in self.built}
        if "pbt" not in present and "pbt" in built and self.s.get("trachea") is not None:
            present["pbt"] = [n for r in ("trachea", "bronchus_main", "bronchus") for n in
                              (self.s[r].names if r in self.s else [])]
        masks = dict(self.masks)
        for role in ("spinal_cord", "great_vessels", "PTV"):
            st = self.s.get(role)
            if st is not None:
                masks[role] = st.mask
        ipsi = masks.get(f"lung_{side}") if side else None
        upper, basis = rules.upper_lobe(centroid_mm(tumour, self.grid), self.carina_z, ipsi, self.grid)
        facts = rules.CaseFacts(site, loc.site_class if loc else None, upper, basis, present, built, masks, self.grid)
        return rules.check_contouring(facts)


# ----------------------------------------------------------------------------- small helpers


def _target_kind(name: str) -> str | None:
    """GTV / ITV / CTV / PTV from a target's name, else None."""
    for role, _rank in candidates(name):
        if role in ("GTV", "ITV", "CTV", "PTV"):
            return role
    return None


_LEFT = re.compile(r"(^|[^a-z])(l|lt|left)$|^(l|lt|left)[^a-z]|左")
_RIGHT = re.compile(r"(^|[^a-z])(r|rt|right)$|^(r|rt|right)[^a-z]|右")


def _name_side(name: str) -> str | None:
    """'left' / 'right' from a structure name's laterality (``Chestwall_L``, ``Left CW``, ``左胸壁``), else None."""
    text = unicodedata.normalize("NFKC", name).casefold().replace("-", "_").replace(" ", "_")
    if _LEFT.search(text):
        return "left"
    if _RIGHT.search(text):
        return "right"
    return None


def _free_name(name: str, taken: list[str]) -> str:
    """``name``, or ``name_auto``, ``name_auto2``... if the structure set already uses it."""
    def key(n: str) -> str:
        return re.sub(r"[\s_]+", "", n).casefold()

    used = {key(n) for n in taken}
    if key(name) not in used:
        return name
    n = 1
    while True:
        candidate = f"{name}_auto" + ("" if n == 1 else str(n))
        if key(candidate) not in used:
            return candidate
        n += 1
