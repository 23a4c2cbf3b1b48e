"""The ITV from 4D-CT: union of the phase GTVs, phase-by-phase verification and tumour motion.

The lung standard (seed 001, 5.1) draws the ITV on the MIP and verifies it on every phase, or
merges the phase GTVs; the liver standard (seeds 000/002, 7.1) builds the ITV from 4D-CT too.
Here the ITV is the voxelwise union of the phase GTV masks on the reference (AVG) grid, and
:func:`phase_report` gives, for each phase, the GTV volume, its centroid and the fraction of it
that lies inside a given ITV (an ITV drawn by hand on the MIP is checked the same way).

Motion axes (DICOM LPS): LR is x, AP is y, SI is z. ``motion_mm`` gives the peak-to-peak range
of the GTV centroid over the phases per axis and, as ``vector``, the largest distance between
two phase centroids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid


@dataclass
class PhaseGtv:
    label: str
    mask: np.ndarray | None  # bool [k, j, i] on the reference grid; None when the phase has no GTV
    volume_cc: float | None = None  # from the contours when known (more exact than voxel counting)


@dataclass
class PhaseRow:
    label: str
    gtv_cc: float | None
    centroid_mm: list[float] | None
    fraction_in_itv: float | None


@dataclass
class ItvResult:
    mask: np.ndarray
    phases: list[PhaseRow]
    motion_mm: dict[str, float]
    warnings: list[str] = field(default_factory=list)


def centroid_mm(mask: np.ndarray, grid: Grid) -> np.ndarray:
    """Centroid of a mask's voxel centres in LPS mm."""
    idx = np.argwhere(mask)
    if len(idx) == 0:
        raise InputError("centroid of an empty structure")
    return grid.index_to_lps(idx.mean(axis=0)[::-1])


def motion_from_centroids(centroids: Sequence[Sequence[float]]) -> dict[str, float]:
    """Peak-to-peak range per axis (LR, AP, SI) and the largest distance between two centroids."""
    c = np.asarray(centroids, dtype=float)
    if len(c) < 2:
        return {"LR": 0.0, "AP": 0.0, "SI": 0.0, "vector": 0.0}
    ranges = c.max(axis=0) - c.min(axis=0)
    diff = c[:, None, :] - c[None, :, :]
    vector = float(np.sqrt((diff**2).sum(axis=2)).max())
    return {"LR": float(ranges[0]), "AP": float(ranges[1]), "SI": float(ranges[2]), "vector": vector}


def build_itv(phases: Sequence[PhaseGtv], grid: Grid, *, itv_mask: np.ndarray | None = None) -> ItvResult:
    """Union of the phase GTVs (or check a given ``itv_mask``) with the per-phase report and motion."""
    if len(phases) < 2:
        raise InputError(f"an ITV from 4D-CT needs at least 2 phases, got {len(phases)}")
    warnings: list[str] = []
    present = [p for p in phases if p.mask is not None and p.mask.any()]
    for p in phases:
        if p.mask is None:
            warnings.append(f"phase {p.label}: no GTV; the ITV is built from the other phases")
        elif not p.mask.any():
            warnings.append(f"phase {p.label}: the GTV is empty on every slice")
    if not present:
        raise InputError("the GTV is missing or empty in every phase: no ITV can be built")
    if itv_mask is None:
        itv_mask = np.zeros(grid.shape, dtype=bool)
        for p in present:
            itv_mask |= p.mask  # type: ignore[arg-type]
    rows = phase_report(phases, grid, itv_mask)
    for row in rows:
        if row.fraction_in_itv is not None and row.fraction_in_itv < 0.999:
            warnings.append(
                f"phase {row.label}: only {100 * row.fraction_in_itv:.1f}% of the GTV lies inside the ITV"
            )
    motion = motion_from_centroids([r.centroid_mm for r in rows if r.centroid_mm is not None])
    return ItvResult(itv_mask, rows, motion, warnings)


def phase_report(phases: Sequence[PhaseGtv], grid: Grid, itv_mask: np.ndarray) -> list[PhaseRow]:
    """GTV volume, centroid and fraction inside ``itv_mask`` for every phase."""
    rows = []
    for p in phases:
        if p.mask is None or not p.mask.any():
            rows.append(PhaseRow(p.label, None, None, None))
            continue
        n = int(p.mask.sum())
        vol = p.volume_cc if p.volume_cc is not None else n * grid.voxel_volume_cc
        inside = float(np.count_nonzero(p.mask & itv_mask)) / n
        rows.append(PhaseRow(p.label, vol, centroid_mm(p.mask, grid).tolist(), inside))
    return rows


def threshold_assist(
    projection_hu: np.ndarray,
    grid: Grid,
    phase_union: np.ndarray,
    *,
    mode: str = "mip",
    threshold_hu: float | None = None,
    dilate_mm: float = 3.0,
) -> np.ndarray:
    """A starting ITV for the user to edit: threshold the MIP (lung) or MinIP (liver).

    The search region is the union of the phase GTVs dilated by ``dilate_mm`` (exact Euclidean
    distance on the anisotropic grid). On the MIP the tumour is brighter than lung: voxels at or
    above ``threshold_hu`` (default -400 HU, between lung and soft tissue) are kept; on the MinIP
    a liver tumour is darker than liver: voxels at or below ``threshold_hu`` (default: 15 HU
    below the median HU of the search region's rim) are kept. The connected components touching
    the phase union are returned.
    """
    if mode not in ("mip", "minip"):
        raise InputError(f"threshold assist mode must be 'mip' or 'minip', not {mode!r}")
    if not phase_union.any():
        raise InputError("threshold assist needs at least one non-empty phase GTV")
    # Work in the bounding box of the union grown by the search distance (whole grids are large).
    pad = [int(np.ceil(dilate_mm / sp)) + 1 for sp in grid.spacing_mm[::-1]]
    nz = np.argwhere(phase_union)
    lo = np.maximum(nz.min(axis=0) - pad, 0)
    hi = np.minimum(nz.max(axis=0) + pad + 1, phase_union.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    union, proj = phase_union[box], projection_hu[box]
    dist = ndimage.distance_transform_edt(~union, sampling=grid.spacing_mm[::-1])
    region = dist <= dilate_mm
    if mode == "mip":
        level = -400.0 if threshold_hu is None else threshold_hu
        candidate = region & (proj >= level)
    else:
        if threshold_hu is None:
            rim = region & (dist > 0)
            level = float(np.median(proj[rim])) - 15.0 if rim.any() else 0.0
        else:
            level = threshold_hu
        candidate = region & (proj <= level)
    labels, _ = ndimage.label(candidate)
    keep = np.unique(labels[union & candidate])
    out = np.zeros(phase_union.shape, dtype=bool)
    out[box] = np.isin(labels, keep[keep > 0])
    return out
