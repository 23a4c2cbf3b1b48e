"""Great vessels by the rule of the lung standard (seed 001 §5.2(8)).

The clause: the great vessels (aorta, pulmonary artery, venae cavae) are contoured
separately on the mediastinal window and include the vessel wall, the muscular layer and
the fatty adventitia (the enhanced vessel wall expanded by 5 mm); they are contoured slice
by slice to 3 cm above and below the PTV.

Construction (:func:`great_vessels`):

1. the vessels: the union of the vessel contours of the structure set (aorta, pulmonary
   artery, venae cavae, or a ``GreatVes`` lumen structure mapped with ``--map``), else the
   contrast-enhanced lumen found on the CT (:func:`enhanced_lumen`);
2. only the slices from 3 cm below the PTV's lowest slice to 3 cm above its highest
   (``extent_mm``), before and after the expansion, so the structure ends where the clause
   says it should;
3. grown by 5 mm (exact isotropic Euclidean margin) for the wall and adventitia;
4. minus the lungs and the heart (organs of their own that the expansion must not take
   over), and kept inside the body.

Contrast-enhanced lumen (:func:`enhanced_lumen`): voxels between ``lumen_hu`` (default
150 HU) and 600 HU in the mediastinum (the per-slice convex hull of the lungs minus the
lungs), away from the bones found on the CT (2 voxels), in connected pieces of at least
1 cc. Without contrast (or for the venae cavae, which enhance late) nothing is found and
the rule says so; in a contrast CT the enhanced heart chambers are found too, which is why
the heart contour is subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from sbrtstandards.grid import Grid
from sbrtstandards.oars.geometry import bbox, components, grow_in_box, pad_box, slice_convex_hulls

VESSEL_MARGIN_MM = 5.0
EXTENT_MM = 30.0
LUMEN_HU = 150.0
LUMEN_MAX_HU = 600.0
MIN_LUMEN_CC = 1.0
SOURCE = "T/CNHAW-B-0020-2025 explanatory note §5.2(8)"
RULE = ("great vessels (aorta, pulmonary artery, venae cavae) grown by {margin:g} mm for wall and adventitia, "
        "from {extent:g} mm below to {extent:g} mm above the PTV, minus lungs and heart")


@dataclass
class VesselResult:
    mask: np.ndarray
    rule: str
    notes: list[str] = field(default_factory=list)


def z_window(mask: np.ndarray, grid: Grid, below_mm: float, above_mm: float) -> np.ndarray | None:
    """Per-slice flags: slices from ``below_mm`` under the mask's lowest slice to ``above_mm`` over its top."""
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(ks) == 0:
        return None
    zs = grid.axis_coords_mm(2)
    lo, hi = zs[ks[0]] - below_mm, zs[ks[-1]] + above_mm
    return (zs >= lo - 1e-6) & (zs <= hi + 1e-6)


def great_vessels(
    vessels: np.ndarray,
    ptv: np.ndarray,
    grid: Grid,
    *,
    body: np.ndarray | None,
    lungs: np.ndarray | None,
    heart: np.ndarray | None,
    margin_mm: float = VESSEL_MARGIN_MM,
    extent_mm: float = EXTENT_MM,
) -> VesselResult:
    """The great-vessel OAR (see the module docstring); empty with a note when nothing is in range."""
    notes: list[str] = []
    rule = RULE.format(margin=margin_mm, extent=extent_mm)
    window = z_window(ptv, grid, extent_mm, extent_mm)
    empty = np.zeros(grid.shape, dtype=bool)
    if window is None:
        notes.append("great vessels: the PTV is empty; the 3 cm window cannot be placed")
        return VesselResult(empty, rule, notes)
    source_window = z_window(ptv, grid, extent_mm + margin_mm, extent_mm + margin_mm)
    assert source_window is not None
    source = vessels & source_window[:, None, None]
    if not source.any():
        notes.append(f"great vessels: no vessel within {extent_mm:g} mm above or below the PTV")
        return VesselResult(empty, rule, notes)
    grown = grow_in_box(source, grid, margin_mm, name="great vessels", notes=notes)
    grown &= window[:, None, None]
    for organ in (lungs, heart):
        if organ is not None:
            grown &= ~organ
    if body is not None:
        grown &= body
    return VesselResult(grown, rule, notes)


def enhanced_lumen(
    hu: np.ndarray,
    grid: Grid,
    lungs: np.ndarray,
    bones: np.ndarray | None,
    *,
    lumen_hu: float = LUMEN_HU,
    z_flags: np.ndarray | None = None,
) -> np.ndarray:
    """Contrast-enhanced vessel lumen in the mediastinum (see the module docstring)."""
    out = np.zeros(grid.shape, dtype=bool)
    b = bbox(lungs)
    if b is None:
        return out
    ks = range(b[0].start, b[0].stop)
    if z_flags is not None:
        ks = range(max(b[0].start, int(np.argmax(z_flags))),
                   min(b[0].stop, len(z_flags) - int(np.argmax(z_flags[::-1]))))
    mediastinum = slice_convex_hulls(lungs, grid, ks=ks) & ~lungs
    mb = bbox(mediastinum)
    if mb is None:
        return out
    candidate = np.zeros(grid.shape, dtype=bool)
    candidate[mb] = mediastinum[mb] & (hu[mb] >= lumen_hu) & (hu[mb] <= LUMEN_MAX_HU)
    if bones is not None and bones.any():
        bb = bbox(bones)
        assert bb is not None
        near = pad_box(bb, grid, 3 * max(grid.spacing_mm))
        candidate[near] &= ~ndimage.binary_dilation(bones[near], iterations=2)
    labels, found = components(candidate)
    floor = MIN_LUMEN_CC / grid.voxel_volume_cc
    for lab, size, box in found:
        if size >= floor:
            out[box] |= labels[box] == lab
    return out
