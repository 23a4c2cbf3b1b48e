"""Body, lungs, airways and the bones the chest-wall rule needs, found on the CT (AVG).

These are starting points for the user to review and edit, not clinical segmentations;
every threshold is a parameter and every automatic result is named as such in the JSON.

Body (:func:`segment_body`)
    Voxels above ``threshold_hu`` (default -500 HU, the usual body-outline convention; see
    the project's standards facts §7), the largest 3D connected component after an in-plane
    opening that cuts thin bridges to the couch (couch removed), holes filled slice by slice
    (the lungs, the airways and bowel gas are inside the body).

Lungs (:func:`segment_lungs`)
    Air inside the body (below ``lung_threshold_hu``, default -500 HU) in large connected
    components; the trachea and main bronchi are found by slice-by-slice region growing
    from the trachea (lumen below ``airway_threshold_hu``, default -900 HU, starting at the
    most superior slice with a trachea-sized air region near the midline) with explosion
    control (a branch whose cross-section suddenly grows has leaked into the lung and is
    dropped), and removed from the lungs, as seed 001 §5.2(2) asks (trachea and main
    bronchi are not lung). Left and right are the components on either side of the body
    midline (+x = patient's left); lungs touching at the anterior junction are cut slice
    by slice at the thinnest column near the midline. Holes of each lung are filled slice
    by slice, so vessels < 1 cm inside the lung are included (§5.2(2)).

Bones (:func:`find_bones`)
    Cortical bone above ``bone_threshold_hu`` (default 300 HU) in a band 40 mm either side
    of the midline, its holes filled slice by slice (the marrow inside the cortex): the
    sternum is the most anterior such component in front of the body centre, the spine the
    largest one behind it; the vertebral bodies are the front 40 % of the spine's
    antero-posterior extent, slice by slice (the arch, transverse and spinous processes are
    behind). The cortical threshold keeps a contrast-filled aorta lying against the spine
    (200-350 HU) out of the vertebral body; a contrast-filled vessel is never the most
    anterior midline structure, which is why the sternum is chosen by position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.oars.geometry import (
    bbox,
    component_mask,
    components,
    fill_holes_slices,
    pad_box,
)

BODY_THRESHOLD_HU = -500.0
LUNG_THRESHOLD_HU = -500.0
AIRWAY_THRESHOLD_HU = -900.0
BONE_THRESHOLD_HU = 300.0  # cortical bone; contrast-filled vessels (200-350 HU) mostly stay below
COUCH_OPENING_MM = 4.0  # in-plane opening radius that separates the couch from the body
TRACHEA_AREA_CM2 = (0.3, 6.0)  # cross-section of a trachea lumen (child to adult)
TRACHEA_MIDLINE_MM = 40.0  # the trachea lies within this distance of the body midline
AIRWAY_LEAK_AREA_CM2 = 6.0  # a branch cross-section above this has leaked into the lung
AIRWAY_LEAK_GROWTH = 2.5  # ... or one that grows by more than this factor from one slice to the next
MIN_LUNG_CC = 50.0
MIN_LUNG_FRACTION = 0.2  # of the largest lung component
BONE_BAND_MM = 40.0
VERTEBRAL_BODY_FRACTION = 0.4  # the vertebral body is the front 40 % of the spine's AP extent
SPINE_WINDOW_MM = 15.0  # front/back of the spine smoothed over +-15 mm in z (discs have no bone)


@dataclass
class LungSegmentation:
    """Automatic lungs and airways (masks on the CT grid)."""

    left: np.ndarray
    right: np.ndarray
    airway: np.ndarray  # trachea and the bronchi the region growing reached
    carina_z_mm: float | None
    notes: list[str] = field(default_factory=list)


@dataclass
class Bones:
    """Sternum, spine and vertebral bodies found on the CT (empty masks when not found)."""

    sternum: np.ndarray
    spine: np.ndarray
    vertebral_body: np.ndarray
    notes: list[str] = field(default_factory=list)


def _check_ct(hu: np.ndarray, grid: Grid) -> None:
    grid.require_axial("automatic segmentation")
    if hu.shape != grid.shape:
        raise InputError(f"CT array of shape {hu.shape} does not match its grid ({grid.describe()})")


# ----------------------------------------------------------------------------- body


def segment_body(hu: np.ndarray, grid: Grid, *, threshold_hu: float = BODY_THRESHOLD_HU,
                 couch_opening_mm: float = COUCH_OPENING_MM) -> np.ndarray:
    """The patient's outline: see the module docstring. InputError when nothing is above the threshold."""
    _check_ct(hu, grid)
    dense = hu > threshold_hu
    if not dense.any():
        raise InputError(f"body outline: no voxel of the CT is above {threshold_hu:g} HU")
    # Components on an in-plane subsample (2 x 2 for sub-mm pixels): same topology, 4x cheaper.
    step = 2 if min(grid.spacing_mm[:2]) < 1.5 else 1
    coarse = dense[:, ::step, ::step]
    radius_px = max(1, int(round(couch_opening_mm / (step * min(grid.spacing_mm[:2])))))
    size = (1, 2 * radius_px + 1, 2 * radius_px + 1)
    opened = ndimage.maximum_filter(ndimage.minimum_filter(coarse.view(np.uint8), size=size), size=size) > 0
    labels, found = components(opened)
    if not found:  # everything thinner than the opening: fall back to the plain threshold
        labels, found = components(coarse)
    main = component_mask(labels, found[0][0], found[0][2])
    # Back to full resolution: threshold voxels within the opening radius of the main component.
    reach = ndimage.maximum_filter(main.view(np.uint8), size=size) > 0
    b = bbox(reach)
    assert b is not None
    full_box = (b[0], slice(b[1].start * step, min(grid.shape[1], b[1].stop * step)),
                slice(b[2].start * step, min(grid.shape[2], b[2].stop * step)))
    near = reach[b]
    if step > 1:  # each subsample stands for its step x step block of pixels
        near = np.repeat(np.repeat(near, step, axis=1), step, axis=2)
    near = near[:, : full_box[1].stop - full_box[1].start, : full_box[2].stop - full_box[2].start]
    body = np.zeros(grid.shape, dtype=bool)
    body[full_box] = dense[full_box] & near
    return fill_holes_slices(body)


# ----------------------------------------------------------------------------- lungs and airways


def body_midline_x_mm(body: np.ndarray, grid: Grid, ks: np.ndarray | None = None) -> float:
    """x (mm) of the body's midline: the median over slices of each slice's body centroid x."""
    xs = grid.axis_coords_mm(0)
    if ks is None:
        ks = np.flatnonzero(body.any(axis=(1, 2)))
    cols = body[ks].sum(axis=1).astype(float)  # (nk, ni) voxel counts per column
    counts = cols.sum(axis=1)
    ok = counts > 0
    if not ok.any():
        raise InputError("the body outline is empty: cannot find the midline")
    centres = (cols[ok] @ xs) / counts[ok]
    return float(np.median(centres))


def segment_lungs(
    hu: np.ndarray,
    grid: Grid,
    body: np.ndarray,
    *,
    lung_threshold_hu: float = LUNG_THRESHOLD_HU,
    airway_threshold_hu: float = AIRWAY_THRESHOLD_HU,
) -> LungSegmentation:
    """Left and right lungs and the central airways: see the module docstring."""
    _check_ct(hu, grid)
    notes: list[str] = []
    empty = np.zeros(grid.shape, dtype=bool)
    b = bbox(body)
    if b is None:
        raise InputError("lungs: the body outline is empty")
    air = np.zeros(grid.shape, dtype=bool)
    air[b] = (hu[b] < lung_threshold_hu) & body[b]
    big = _large_components(air, grid)
    if not big.any():
        notes.append(f"lungs: no air region inside the body below {lung_threshold_hu:g} HU is large enough "
                     f"(>= {MIN_LUNG_CC:g} cc): no lungs found on the CT")
        return LungSegmentation(empty, empty.copy(), empty.copy(), None, notes)
    midline = body_midline_x_mm(body, grid, np.flatnonzero(big.any(axis=(1, 2))))
    airway, carina = segment_airways(hu, grid, body, midline, airway_threshold_hu, notes)
    lungs = big
    wb = bbox(airway)
    walls = None
    if wb is not None:
        wb = pad_box(wb, grid, max(grid.spacing_mm))
        walls = ndimage.binary_dilation(airway[wb])
        lungs = big.copy()
        lungs[wb] &= ~walls
    lungs = _large_components(lungs, grid)
    left, right = split_left_right(lungs, grid, midline, notes)
    left = fill_holes_slices(left)
    right = fill_holes_slices(right) & ~left
    if walls is not None:  # bronchi inside the lung are holes that the filling closed: take them out again
        left[wb] &= ~walls
        right[wb] &= ~walls
    if not left.any():
        notes.append("lungs: no left lung found on the CT")
    if not right.any():
        notes.append("lungs: no right lung found on the CT")
    return LungSegmentation(left, right, airway, carina, notes)


def _large_components(mask: np.ndarray, grid: Grid) -> np.ndarray:
    """Components of at least MIN_LUNG_CC and MIN_LUNG_FRACTION of the largest."""
    labels, found = components(mask)
    out = np.zeros(mask.shape, dtype=bool)
    if not found:
        return out
    floor = max(MIN_LUNG_CC / grid.voxel_volume_cc, MIN_LUNG_FRACTION * found[0][1])
    for lab, size, box in found:
        if size >= floor:
            out[box] |= labels[box] == lab
    return out


def segment_airways(
    hu: np.ndarray, grid: Grid, body: np.ndarray, midline_x: float, threshold: float, notes: list[str]
) -> tuple[np.ndarray, float | None]:
    """Trachea and main bronchi by slice-wise region growing downwards with explosion control.

    Returns the airway mask and the carina's z (mm): the top of the first slice where the
    airway has split into two branches (None when it never splits).
    """
    airway = np.zeros(grid.shape, dtype=bool)
    xs = grid.axis_coords_mm(0)
    zs = grid.axis_coords_mm(2)
    pixel_cm2 = grid.spacing_mm[0] * grid.spacing_mm[1] / 100.0
    lo_px, hi_px = TRACHEA_AREA_CM2[0] / pixel_cm2, TRACHEA_AREA_CM2[1] / pixel_cm2
    seed_k = None
    seed = None
    for k in range(grid.shape[0] - 1, -1, -1):  # from the top (highest z) down
        lumen = (hu[k] < threshold) & body[k]
        if not lumen.any():
            continue
        labels, n = ndimage.label(lumen)
        for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
            comp = labels[sl] == lab
            area = int(comp.sum())
            if not lo_px <= area <= hi_px:
                continue
            cx = float(xs[sl[1]][np.nonzero(comp)[1]].mean())
            if abs(cx - midline_x) <= TRACHEA_MIDLINE_MM:
                seed = np.zeros(lumen.shape, dtype=bool)
                seed[sl] = comp
                break
        if seed is not None:
            seed_k = k
            break
    if seed is None or seed_k is None:
        notes.append("airways: no trachea found on the CT (no trachea-sized air region near the midline)")
        return airway, None
    airway[seed_k] = seed
    prev = [seed]
    carina = None
    leak_px = AIRWAY_LEAK_AREA_CM2 / pixel_cm2
    for k in range(seed_k - 1, -1, -1):
        if not prev:
            break
        lumen = (hu[k] < threshold) & body[k]
        labels, _ = ndimage.label(lumen)
        current = []
        for parent in prev:
            touch = ndimage.binary_dilation(parent) & lumen
            for lab in np.unique(labels[touch]):
                if lab == 0:
                    continue
                comp = labels == lab
                area = int(comp.sum())
                if area > leak_px or area > AIRWAY_LEAK_GROWTH * max(int(parent.sum()), 1) + 4:
                    continue  # leaked into the lung: this branch stops here
                if not any(np.array_equal(comp, c) for c in current):
                    current.append(comp)
        if len(current) >= 2 and carina is None:
            carina = float(zs[k + 1])
        for comp in current:
            airway[k] |= comp
        prev = current
    return airway, carina


def split_left_right(lungs: np.ndarray, grid: Grid, midline_x: float, notes: list[str]) -> tuple[np.ndarray,
                                                                                               np.ndarray]:
    """Assign lung components to the patient's left (+x) and right; cut lungs that touch."""
    xs = grid.axis_coords_mm(0)
    labels, found = components(lungs)
    left = np.zeros(lungs.shape, dtype=bool)
    right = np.zeros(lungs.shape, dtype=bool)
    for lab, _size, box in found:
        comp = np.zeros(lungs.shape, dtype=bool)
        comp[box] = labels[box] == lab
        cols = comp[box].sum(axis=(0, 1))
        x_box = xs[box[2]]
        on_left = float(cols[x_box > midline_x].sum())
        on_right = float(cols[x_box <= midline_x].sum())
        total = on_left + on_right
        if min(on_left, on_right) > 0.2 * total:
            notes.append("lungs: the left and right lungs touch; cut slice by slice at the thinnest column "
                         "near the midline (review the anterior/posterior junction)")
            cut_l, cut_r = _cut_at_midline(comp, grid, midline_x)
            left |= cut_l
            right |= cut_r
        elif on_left >= on_right:
            left |= comp
        else:
            right |= comp
    return left, right


def _cut_at_midline(comp: np.ndarray, grid: Grid, midline_x: float) -> tuple[np.ndarray, np.ndarray]:
    xs = grid.axis_coords_mm(0)
    window = np.flatnonzero(np.abs(xs - midline_x) <= 30.0)
    left = np.zeros(comp.shape, dtype=bool)
    right = np.zeros(comp.shape, dtype=bool)
    for k in np.flatnonzero(comp.any(axis=(1, 2))):
        counts = comp[k][:, window].sum(axis=0)
        cut = int(window[int(np.argmin(counts))]) if len(window) else int(np.argmin(np.abs(xs - midline_x)))
        left[k, :, cut + 1:] = comp[k, :, cut + 1:]
        right[k, :, :cut + 1] = comp[k, :, :cut + 1]
    return left, right


def airway_split(airway: np.ndarray, grid: Grid, carina_z_mm: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(trachea, bronchi) of an airway mask: above and below the carina."""
    if carina_z_mm is None:
        return airway.copy(), np.zeros(airway.shape, dtype=bool)
    zs = grid.axis_coords_mm(2)
    above = zs >= carina_z_mm - 1e-6
    trachea = airway & above[:, None, None]
    return trachea, airway & ~trachea


# ----------------------------------------------------------------------------- bones


def find_bones(
    hu: np.ndarray,
    grid: Grid,
    body: np.ndarray,
    *,
    midline_x_mm: float | None = None,
    bone_threshold_hu: float = BONE_THRESHOLD_HU,
    z_range_mm: tuple[float, float] | None = None,
) -> Bones:
    """Sternum, spine and vertebral bodies near the midline (see the module docstring)."""
    _check_ct(hu, grid)
    notes: list[str] = []
    empty = np.zeros(grid.shape, dtype=bool)
    b = bbox(body)
    if b is None:
        raise InputError("bones: the body outline is empty")
    xs, ys, zs = (grid.axis_coords_mm(a) for a in range(3))
    mid = midline_x_mm if midline_x_mm is not None else body_midline_x_mm(body, grid)
    i_band = np.flatnonzero(np.abs(xs - mid) <= BONE_BAND_MM)
    k_band = np.arange(b[0].start, b[0].stop)
    if z_range_mm is not None:
        k_band = k_band[(zs[k_band] >= z_range_mm[0]) & (zs[k_band] <= z_range_mm[1])]
    if len(i_band) == 0 or len(k_band) == 0:
        notes.append("bones: the midline band is outside the CT")
        return Bones(empty, empty.copy(), empty.copy(), notes)
    box = (slice(int(k_band[0]), int(k_band[-1]) + 1), b[1], slice(int(i_band[0]), int(i_band[-1]) + 1))
    bone = np.zeros(grid.shape, dtype=bool)
    bone[box] = (hu[box] >= bone_threshold_hu) & body[box]
    labels, found = components(bone)
    body_rows = np.flatnonzero(body[b].any(axis=(0, 2)))
    y_centre = float(ys[b[1].start + body_rows].mean()) if len(body_rows) else 0.0
    min_voxels = 1.0 / grid.voxel_volume_cc  # 1 cc
    sternum = empty.copy()
    spine = empty.copy()
    front = []
    back = []
    for lab, size, cbox in found:
        if size < min_voxels:
            continue
        jj = np.nonzero(labels[cbox] == lab)[1]
        y_mean = float(ys[cbox[1].start + jj].mean())
        (front if y_mean < y_centre else back).append((y_mean, size, lab, cbox))
    if front:
        _, _, lab, cbox = min(front)  # the most anterior
        sternum = fill_holes_slices(component_mask(labels, lab, cbox))
    else:
        notes.append(f"sternum: no bone (>= {bone_threshold_hu:g} HU) in front of the body centre near the midline")
    if back:
        _, _, lab, cbox = max(back, key=lambda item: item[1])  # the largest
        spine = fill_holes_slices(component_mask(labels, lab, cbox))
    else:
        notes.append(f"spine: no bone (>= {bone_threshold_hu:g} HU) behind the body centre near the midline")
    return Bones(sternum, spine, _vertebral_bodies(spine, grid), notes)


def _vertebral_bodies(spine: np.ndarray, grid: Grid) -> np.ndarray:
    """The front part of the spine, slice by slice, with front/back smoothed over the discs."""
    out = np.zeros(spine.shape, dtype=bool)
    b = bbox(spine)
    if b is None:
        return out
    ys = grid.axis_coords_mm(1)
    nk = spine.shape[0]
    front = np.full(nk, np.nan)
    back = np.full(nk, np.nan)
    for k in range(b[0].start, b[0].stop):
        rows = np.flatnonzero(spine[k, b[1], b[2]].any(axis=1))
        if len(rows):
            front[k] = ys[b[1].start + rows[0]]
            back[k] = ys[b[1].start + rows[-1]]
    half = max(0, int(math.ceil(SPINE_WINDOW_MM / grid.spacing_mm[2])))
    for k in range(b[0].start, b[0].stop):
        lo, hi = max(0, k - half), min(nk, k + half + 1)
        if np.all(np.isnan(front[lo:hi])):
            continue
        f = float(np.nanmin(front[lo:hi]))
        r = float(np.nanmax(back[lo:hi]))
        limit = f + VERTEBRAL_BODY_FRACTION * (r - f)
        rows = ys <= limit
        out[k] = spine[k] & rows[:, None]
    return out


__all__ = [
    "AIRWAY_THRESHOLD_HU",
    "BODY_THRESHOLD_HU",
    "BONE_THRESHOLD_HU",
    "LUNG_THRESHOLD_HU",
    "Bones",
    "LungSegmentation",
    "airway_split",
    "body_midline_x_mm",
    "find_bones",
    "segment_airways",
    "segment_body",
    "segment_lungs",
    "split_left_right",
]
