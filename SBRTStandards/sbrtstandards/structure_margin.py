"""Grow or shrink one structure of an RTSTRUCT and write it as a new ROI (``sbrt margin``).

The margin is computed from the structure's planar contours (:func:`margins.grow_planes`), not
from a voxelised copy, so the result does not depend on a CT grid. Without a CT the result is
sampled on a working grid of 0.5 mm in-plane, on the structure's own contour planes extended by
the margin; with a CT it is sampled on the CT grid and every contour references its CT slice.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbrtstandards.contours import roi_volume_cc, typical_spacing_mm
from sbrtstandards.dicom.common import SeriesReference
from sbrtstandards.dicom.rtstruct import Roi, StructureSet, read_rtstruct, write_rtstruct
from sbrtstandards.errors import FrameOfReferenceError, InputError
from sbrtstandards.grid import Grid
from sbrtstandards.margins import Margin, grow_planes, shrink_planes

WORKING_SPACING_MM = 0.5


@dataclass
class MarginResult:
    json: dict[str, Any]
    roi: Roi


def margin_structure(
    rtstruct: str | os.PathLike[str],
    structure: str,
    margin: Margin,
    out_path: str | os.PathLike[str],
    *,
    shrink: bool = False,
    result_name: str | None = None,
    ct_dir: str | os.PathLike[str] | None = None,
) -> MarginResult:
    """Write ``out_path``: the input structure set plus ``structure`` grown (or shrunk) by ``margin``."""
    ss = read_rtstruct(rtstruct)
    roi = ss.roi(structure)
    if roi.is_point:
        raise InputError(f"{ss.describe()}: {roi.name} is a POINT ROI; a margin needs closed contours")
    if roi.is_empty:
        raise InputError(f"{ss.describe()}: {roi.name} has no contours; there is nothing to grow")
    planes = roi.planes()
    if ct_dir is not None:
        from sbrtstandards.dicom.ct import read_ct_series

        ct = read_ct_series(ct_dir)
        if ct.grid.frame_of_reference_uid != ss.study.frame_of_reference_uid:
            raise FrameOfReferenceError(
                f"{ss.describe()} is in Frame of Reference {ss.study.frame_of_reference_uid}, "
                f"the CT {ct_dir} in {ct.grid.frame_of_reference_uid}"
            )
        grid, reference = ct.grid, ct.reference
    else:
        grid = working_grid(planes, margin, ss.study.frame_of_reference_uid)
        reference = reference_from_structure_set(ss)
    op = shrink_planes if shrink else grow_planes
    mask = op(planes, margin, grid, name=roi.name)
    if not mask.any():
        raise InputError(f"{roi.name} shrunk by {margin} leaves nothing")
    name = result_name or default_result_name(roi.name, margin, shrink)
    new = Roi.from_mask(name, mask, grid, interpreted_type=roi.interpreted_type or "")
    out = write_rtstruct(
        out_path,
        [new],
        reference=reference,
        existing=ss,
        label=ss.label or "SBRT",
        description=f"{name} = {roi.name} {'shrunk' if shrink else 'grown'} by {margin}",
    )
    result = {
        "structure": roi.name,
        "result": name,
        "volume_cc": roi_volume_cc(new),
        "input_volume_cc": roi_volume_cc(roi),
        "margin_mm": margin.as_dict(),
        "shrink": shrink,
        "rtstruct": str(Path(out).resolve()),
    }
    return MarginResult(result, new)


def default_result_name(name: str, margin: Margin, shrink: bool) -> str:
    sign = "-" if shrink else "+"
    size = f"{margin.max_mm:g}mm" if margin.is_isotropic else "asym"
    return f"{name}{sign}{size}"[:64]


def working_grid(planes: dict[float, list[np.ndarray]], margin: Margin, for_uid: str | None) -> Grid:
    """A 0.5 mm in-plane grid over the contours plus the margin, on the contours' plane spacing."""
    zs = sorted(planes)
    dz = typical_spacing_mm(zs) or 2.0
    pts = np.concatenate([p for polys in planes.values() for p in polys])
    lo = pts.min(axis=0) - [margin.r_mm, margin.a_mm] - 2 * WORKING_SPACING_MM
    hi = pts.max(axis=0) + [margin.l_mm, margin.p_mm] + 2 * WORKING_SPACING_MM
    n_below = math.ceil(margin.i_mm / dz) + 1
    n_above = math.ceil(margin.s_mm / dz) + 1
    z0 = zs[0] - n_below * dz
    nz = int(round((zs[-1] - zs[0]) / dz)) + n_below + n_above + 1
    size = (
        int(math.ceil((hi[0] - lo[0]) / WORKING_SPACING_MM)) + 1,
        int(math.ceil((hi[1] - lo[1]) / WORKING_SPACING_MM)) + 1,
        nz,
    )
    return Grid(
        (float(lo[0]), float(lo[1]), float(z0)),
        (WORKING_SPACING_MM, WORKING_SPACING_MM, dz),
        size,
        frame_of_reference_uid=for_uid,
    )


def reference_from_structure_set(ss: StructureSet) -> SeriesReference:
    """The image slices that an existing structure set's contours reference (z -> SOP Instance UID)."""
    by_z: dict[float, str] = {}
    sop_class = "1.2.840.10008.5.1.4.1.1.2"
    for r in ss.rois:
        for c in r.contours:
            if c.referenced_sop_instance_uid and len(c.points_mm):
                by_z.setdefault(round(float(c.points_mm[0, 2]), 3), c.referenced_sop_instance_uid)
    if not by_z:
        raise InputError(
            f"{ss.describe()}: its contours reference no image slices; give the CT with --ct so the new "
            "contours can reference it"
        )
    zs = sorted(by_z)
    return SeriesReference(
        study=ss.study,
        series_instance_uid=ss.referenced_series_uid or "",
        sop_class_uid=sop_class,
        sop_instance_uids=tuple(by_z[z] for z in zs),
        slice_positions_mm=tuple(zs),
    )
