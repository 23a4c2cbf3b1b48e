"""``sbrt oars`` on DICOM: read the CT and the structure set, build, write a new RTSTRUCT.

Structures are matched to roles by :func:`sbrtstandards.names.match_structures` (TG-263
names, variants, Chinese names, ``--map NAME=ROLE``). Three roles that the OAR rules need
and the plan check does not are matched here, by name (normalised like
:func:`sbrtstandards.names.normalise`) or by ``--map``:

* ``vertebra``: ``VB``, ``Vertebra(e)``, ``VertebralBody``, ``椎体`` ...;
* ``sternum``: ``Sternum``, ``胸骨``;
* ``vessel_lumen``: the vessels the great-vessel OAR is grown from: ``A_Aorta``,
  ``A_Pulmonary``, ``V_Venacava_S`` / ``_I`` and their common and Chinese names (united).

The output is a new RT Structure Set (never the input file) holding every input ROI and
the new ones, referencing the CT series; the JSON follows the CLI contract.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sbrtstandards import names as names_mod
from sbrtstandards import tg263
from sbrtstandards.contours import roi_mask, roi_volume_cc
from sbrtstandards.dicom.ct import read_ct_series
from sbrtstandards.dicom.rtstruct import Roi, StructureSet, read_rtstruct, write_rtstruct
from sbrtstandards.errors import FrameOfReferenceError, InputError
from sbrtstandards.grid import Grid
from sbrtstandards.oars.build import OarOptions, Structure, build_oars

Progress = Callable[[float, str], None]

EXTRA_ROLES: dict[str, tuple[str, ...]] = {
    "vertebra": ("vb", "vertebra", "vertebrae", "vertebralbody", "vertebralbodies", "vertebralbodys", "椎体",
                 "椎骨"),
    "sternum": ("sternum", "胸骨"),
    "vessel_lumen": ("aaorta", "aorta", "主动脉", "apulmonary", "pulmonaryartery", "pulmonaryarteries", "pa",
                     "肺动脉", "vvenacavas", "vvenacavai", "venacava", "venacavasup", "venacavainf", "svc", "ivc",
                     "腔静脉", "上腔静脉", "下腔静脉", "greatvessellumen", "vessellumen"),
}
# Roles the rules read (masks are loaded only for these).
USED_ROLES = (
    "body", "lungs", "lung_left", "lung_right", "trachea", "bronchus_main", "bronchus", "pbt", "pbt_zone",
    "esophagus", "heart", "great_vessels", "spinal_cord", "liver", "GTV", "ITV", "PTV", "chest_wall",
    "lungs_minus_target", "normal_liver", "ring_2cm", "brachial_plexus", "ribs",
)
INTERPRETED_TYPES = {"ring_2cm": tg263.CONTROL, "pbt_zone": tg263.CONTROL, "prv": tg263.AVOIDANCE}


def run_oars(
    ct_dir: str | os.PathLike[str],
    rtstruct: str | os.PathLike[str],
    target: str,
    out: str | os.PathLike[str],
    *,
    site: str | None = None,
    side: str | None = None,
    options: OarOptions | None = None,
    mapping: Sequence[str] = (),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Read, build (:func:`sbrtstandards.oars.build.build_oars`), write ``out``; return the JSON.

    ``ct_dir`` is the CT series (folder or files), ``rtstruct`` the structure set on it,
    ``target`` the ITV or PTV the rules refer to; ``site`` and ``side``, when given, override
    those of ``options``; ``mapping`` holds ``NAME=ROLE`` texts (``--map``).
    """
    opts = options or OarOptions()
    if site is not None or side is not None:
        opts = replace(opts, site=site if site is not None else opts.site, side=side if side is not None else opts.side)
    rtstruct_path = Path(rtstruct)
    out_path = Path(out)
    if out_path.resolve() == rtstruct_path.resolve():
        raise InputError(f"{out_path}: is the input structure set; write the OARs to a new file")
    ct = read_ct_series(ct_dir, progress=_part(progress, 0.0, 0.15, "reading the CT"))
    ss = read_rtstruct(rtstruct_path)
    grid = ct.grid
    _check_frames(ct.grid, ss, ct_dir)
    target_roi = ss.roi(target)
    if target_roi.is_empty or target_roi.is_point:
        raise InputError(f"{ss.describe()}: target '{target_roi.name}' has no closed contours")
    warnings = list(_outside_warnings(target_roi, grid))
    names_by_role: dict[str, list[str]] = {}
    structures = match_roles(ss, grid, mapping, warnings, names_by_role)
    target_mask = roi_mask(target_roi, grid)
    if not target_mask.any():
        raise InputError(f"{ss.describe()}: target '{target_roi.name}' lies outside the CT ({grid.describe()})")
    result = build_oars(ct.array_hu(), grid, structures, target_roi.name, target_mask, options=opts,
                        taken_names=ss.names, names_by_role=names_by_role, progress=_part(progress, 0.15, 0.9, ""))
    rois = []
    for b in result.built:
        roi = Roi.from_mask(b.name, b.mask, grid, color_rgb=tg263.color_for(b.name),
                            interpreted_type=INTERPRETED_TYPES.get(b.role, tg263.interpreted_type_for(b.name)))
        b.volume_cc = roi_volume_cc(roi)
        rois.append(roi)
    if progress:
        progress(0.95, "writing the structure set")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    path = write_rtstruct(out_path, rois, reference=ct.reference, label="SBRT_OARs",
                          description=f"OARs by rule of the SBRT standards for {target_roi.name}", existing=ss)
    data = result.to_json()
    data["warnings"] = warnings + data["warnings"]
    data["rtstruct"] = str(path.resolve())
    data["ct_series_instance_uid"] = ct.series_instance_uid
    if progress:
        progress(1.0, "done")
    return data


def match_roles(ss: StructureSet, grid: Grid, mapping: Sequence[str], warnings: list[str],
                names_by_role: dict[str, list[str]] | None = None) -> dict[str, Structure]:
    """Role -> the user's structure(s), masks on the CT grid (only the roles the rules use).

    ``names_by_role``, when given, receives every matched role's names (for the checks).
    """
    extra_map, plain_map = split_mapping(mapping)
    closed = [r for r in ss.rois if not r.is_empty and not r.is_point]
    available = [r.name for r in closed]
    for name in list(extra_map):
        if name not in available:
            hits = [n for n in available if names_mod.normalise(n) == names_mod.normalise(name)]
            if len(hits) != 1:
                raise InputError(f"--map '{name}': no such structure with contours in {ss.describe()} "
                                 f"(structures: {', '.join(available) or '(none)'})")
            extra_map[hits[0]] = extra_map.pop(name)
    matched = names_mod.match_structures([n for n in available if n not in extra_map], plain_map)
    for role, names in matched.ambiguous.items():
        if role in USED_ROLES:
            warnings.append(f"several structures look like {role} ({', '.join(names)}): none used; use --map")
    if names_by_role is not None:
        names_by_role.update({r: list(n) for r, n in matched.roles.items()})
    chosen: dict[str, list[str]] = {r: list(n) for r, n in matched.roles.items() if r in USED_ROLES}
    used = {n for names in matched.roles.values() for n in names}
    for role, aliases in EXTRA_ROLES.items():
        mapped = [n for n, r in extra_map.items() if r == role]
        if mapped:
            chosen[role] = mapped
            continue
        keys = set(aliases)
        found = [n for n in available if n not in used and n not in extra_map and names_mod.normalise(n) in keys]
        if found:
            chosen[role] = found
    by_name = {r.name: r for r in closed}
    out: dict[str, Structure] = {}
    for role, names in chosen.items():
        mask = np.zeros(grid.shape, dtype=bool)
        for n in names:
            mask |= roi_mask(by_name[n], grid)
        out[role] = Structure(names, mask)
    return out


def split_mapping(mapping: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``--map NAME=ROLE`` options: (those for the OAR-only roles, those for names.py)."""
    extra: dict[str, str] = {}
    plain: list[str] = []
    for text in mapping:
        name, sep, role = text.rpartition("=")
        if sep and role.strip().casefold() in EXTRA_ROLES and name.strip():
            extra[name.strip()] = role.strip().casefold()
        else:
            plain.append(text)
    return extra, names_mod.parse_map_options(plain)


def _check_frames(grid: Grid, ss: StructureSet, ct_path: str | os.PathLike[str]) -> None:
    ct_for, ss_for = grid.frame_of_reference_uid, ss.study.frame_of_reference_uid
    if ct_for and ss_for and ct_for != ss_for:
        raise FrameOfReferenceError(f"{ss.describe()}: Frame of Reference {ss_for} differs from the CT's "
                                    f"({ct_path}: {ct_for}); the structures cannot be placed on this CT")


def _outside_warnings(roi: Roi, grid: Grid) -> list[str]:
    """A warning when the target's contours reach beyond the CT (the part outside is lost)."""
    pts = np.vstack([np.asarray(c.points_mm, dtype=float).reshape(-1, 3) for c in roi.contours])
    lo = np.asarray(grid.origin_mm) - 0.5 * np.asarray(grid.spacing_mm)
    hi = lo + np.asarray(grid.size) * np.asarray(grid.spacing_mm)
    if np.all(pts.min(axis=0) >= lo - 1e-6) and np.all(pts.max(axis=0) <= hi + 1e-6):
        return []
    if np.any(pts.max(axis=0) < lo) or np.any(pts.min(axis=0) > hi):
        return []  # wholly outside: build_oars raises
    return [f"target '{roi.name}' extends beyond the CT ({grid.describe()}); only its part inside the CT is used"]


def _part(progress: Progress | None, start: float, stop: float, prefix: str) -> Progress | None:
    if progress is None:
        return None

    def report(fraction: float, message: str) -> None:
        text = f"{prefix}: {message}" if prefix and message else (prefix or message)
        progress(start + (stop - start) * max(0.0, min(1.0, fraction)), text)

    return report


__all__ = ["EXTRA_ROLES", "match_roles", "run_oars", "split_mapping"]
