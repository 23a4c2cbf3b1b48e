"""Structure geometry: contour polygons <-> voxel masks on axial grids, and polygon volumes.

Mask convention (:func:`roi_mask`)
----------------------------------
A voxel belongs to an ROI when its **centre** is inside the polygons of the contour plane
that covers the voxel's slice, with the even-odd rule over all polygons of that plane
(:func:`sbrtstandards.polygons.fill_polygons`): a contour inside another is a hole, two
disjoint contours are two islands, as DICOM RTSTRUCT encodes them.

Each contour plane covers a slab in z: from half-way to its lower neighbour plane to
half-way to its upper neighbour plane. An end plane covers half its neighbour's spacing
beyond itself; a plane alone in its piece (between two gaps, see below) covers half the
typical plane spacing on each side, and the plane of a one-plane ROI half the grid's
slice spacing on each side. Slabs are half-open, ``[lower, upper)``, so a slice exactly
on a boundary belongs to the upper plane and the voxel count is the slab thickness over
the slice spacing. Slices outside every slab are empty. Masks can therefore be made on
any axial grid, including dose grids whose slices do not coincide with the contour
planes.

Gaps: where consecutive planes are more than 1.5 times the typical plane spacing apart,
the ROI is cut into separate pieces; nothing is interpolated across the gap, and each
piece's end planes get the end-plane rule above. The typical spacing is the most common
plane spacing (to 0.01 mm; the smaller one on a tie): unlike the median it is not pulled
up by the gaps of an ROI with few planes, and unlike the minimum one odd plane does not
turn every spacing into a gap. (An ROI whose planes are mostly two or more slices apart is
therefore read as contoured every other slice, and filled in between.)

The same slabs give :func:`roi_volume_cc` and the DVH engine (where a one-plane ROI gets
``slice_thickness_mm``), so the polygon volume and the mask volume on a fine grid agree
up to the in-plane sampling.

Contours from masks (:func:`mask_to_contours`)
----------------------------------------------
Marching squares (contourpy) at level 0.5 on each slice, sampled at the voxel centres, on
the slice padded with one empty voxel all round (masks touching the grid border close).
Every contour vertex is the midpoint of an edge between an inside and an outside voxel
centre, so a voxel centre is never on a contour and the even-odd fill of the contours
gives back the mask exactly: ``roi_mask(Roi.from_mask(mask, grid), grid) == mask``
(provided the most common spacing between the mask's non-empty slices is the grid's slice
spacing, i.e. unless most of its slices are isolated: see the gap rule above).
Holes come out as inner contours. Collinear vertices are dropped (the polygon is
unchanged), contours with fewer than 3 points are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import contourpy
import numpy as np

from sbrtstandards.dicom.rtstruct import Contour, Roi
from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.polygons import fill_polygon_stack, polygon_area_mm2

GAP_FACTOR = 1.5  # a plane spacing above this x the typical one is a gap
_EPS_MM = 1e-6  # slab boundaries: tolerance for floating-point round-off

Slab = tuple[float, float, float]  # (plane z, lower z, upper z) in mm


def typical_spacing_mm(zs_mm: Sequence[float]) -> float | None:
    """Most common spacing between consecutive planes (0.01 mm bins; smaller on a tie)."""
    zs = np.sort(np.asarray(zs_mm, dtype=float))
    if len(zs) < 2:
        return None
    steps = np.diff(zs)
    binned = np.round(steps, 2)
    values, counts = np.unique(binned, return_counts=True)
    best = values[counts == counts.max()].min()
    return float(np.median(steps[binned == best]))


def plane_slabs(
    zs_mm: Sequence[float], *, single_plane_half_mm: float, clip_ends: bool = False
) -> list[Slab]:
    """The z slab of each contour plane (see the module docstring), planes in increasing z.

    ``single_plane_half_mm`` is the half-thickness of the plane of a one-plane ROI; a plane
    alone in its piece of a longer ROI gets half the typical spacing. ``clip_ends`` stops
    each piece at its end planes instead of half a spacing beyond (a lone plane then has
    no thickness).
    """
    zs = sorted(float(z) for z in zs_mm)
    if not zs:
        return []
    typical = typical_spacing_mm(zs)
    lone_half = typical / 2.0 if typical is not None else single_plane_half_mm
    pieces: list[list[float]] = [[zs[0]]]
    for prev, z in zip(zs, zs[1:]):
        if typical is not None and z - prev > GAP_FACTOR * typical:
            pieces.append([z])
        else:
            pieces[-1].append(z)
    slabs: list[Slab] = []
    for piece in pieces:
        n = len(piece)
        for i, z in enumerate(piece):
            if i > 0:
                lower = (piece[i - 1] + z) / 2.0
            elif clip_ends:
                lower = z
            else:
                lower = z - ((piece[1] - z) / 2.0 if n > 1 else lone_half)
            if i < n - 1:
                upper = (z + piece[i + 1]) / 2.0
            elif clip_ends:
                upper = z
            else:
                upper = z + ((z - piece[i - 1]) / 2.0 if n > 1 else lone_half)
            slabs.append((z, lower, upper))
    return slabs


def roi_mask(roi: Roi, grid: Grid) -> np.ndarray:
    """Boolean mask (``grid.shape``) of the voxels whose centres are inside ``roi``."""
    return planes_mask(roi.planes(), grid, what=roi.describe())


def planes_mask(planes: Mapping[float, Sequence[np.ndarray]], grid: Grid, *, what: str = "structure") -> np.ndarray:
    """Boolean mask of the voxels whose centres are inside the planar contours ``{z: [xy polygons]}``."""
    grid.require_axial(f"{what}: mask")
    mask = np.zeros(grid.shape, dtype=bool)
    if not planes:
        return mask
    xs, ys, zk = (grid.axis_coords_mm(axis) for axis in range(3))
    slabs = plane_slabs(list(planes), single_plane_half_mm=grid.spacing_mm[2] / 2.0)
    covering = []
    for z, lower, upper in slabs:
        ks = np.nonzero((zk >= lower - _EPS_MM) & (zk < upper - _EPS_MM))[0]
        if len(ks):
            covering.append((z, ks))
    if covering:  # the planes that cover a slice, filled in one pass
        filled = fill_polygon_stack([planes[z] for z, _ in covering], xs, ys)
        for (_, ks), plane_mask in zip(covering, filled):
            mask[ks] = plane_mask
    return mask


def mask_to_contours(mask: np.ndarray, grid: Grid) -> list[Contour]:
    """CLOSED_PLANAR contours of ``mask`` (one group per slice), in LPS mm on the slice planes."""
    grid.require_axial("contours from a mask")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != grid.shape:
        raise InputError(f"mask of shape {mask.shape} does not fit the grid ({grid.describe()})")
    xs, ys, zs = (grid.axis_coords_mm(axis) for axis in range(3))
    contours: list[Contour] = []
    for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
        for xy in slice_polygons(mask[k], xs, ys):
            points = np.column_stack([xy, np.full(len(xy), zs[k])])
            contours.append(Contour(points, "CLOSED_PLANAR"))
    return contours


def slice_polygons(mask2d: np.ndarray, xs_mm: np.ndarray, ys_mm: np.ndarray) -> list[np.ndarray]:
    """Closed (N, 2) polygons outlining a 2D mask ``[row(y), column(x)]`` sampled at xs, ys."""
    rows = np.nonzero(mask2d.any(axis=1))[0]
    cols = np.nonzero(mask2d.any(axis=0))[0]
    if len(rows) == 0:
        return []
    j0, j1 = int(rows[0]), int(rows[-1]) + 1
    i0, i1 = int(cols[0]), int(cols[-1]) + 1
    padded = np.zeros((j1 - j0 + 2, i1 - i0 + 2))
    padded[1:-1, 1:-1] = mask2d[j0:j1, i0:i1]
    x = _padded_axis(np.asarray(xs_mm, dtype=float), i0, i1)
    y = _padded_axis(np.asarray(ys_mm, dtype=float), j0, j1)
    generator = contourpy.contour_generator(
        x, y, padded, name="serial", line_type=contourpy.LineType.Separate
    )
    polygons = []
    for line in generator.lines(0.5):
        pts = np.asarray(line, dtype=float)
        if len(pts) > 1 and np.allclose(pts[0], pts[-1]):
            pts = pts[:-1]
        pts = _drop_collinear(pts)
        if len(pts) >= 3:
            polygons.append(pts)
    return polygons


def _padded_axis(coords: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Coordinates of samples start-1 .. stop (one extra sample beyond each end)."""
    step = coords[1] - coords[0] if len(coords) > 1 else 1.0
    return np.concatenate([[coords[start] - step], coords[start:stop], [coords[stop - 1] + step]])


def _drop_collinear(pts: np.ndarray) -> np.ndarray:
    """Remove vertices lying on the straight line through their neighbours (shape unchanged)."""
    if len(pts) < 4:
        return pts
    prev = pts - np.roll(pts, 1, axis=0)
    nxt = np.roll(pts, -1, axis=0) - pts
    cross = prev[:, 0] * nxt[:, 1] - prev[:, 1] * nxt[:, 0]
    scale = np.hypot(prev[:, 0], prev[:, 1]) * np.hypot(nxt[:, 0], nxt[:, 1])
    straight = (np.abs(cross) <= 1e-9 * np.maximum(scale, 1e-300)) & (np.sum(prev * nxt, axis=1) > 0)
    kept = pts[~straight]
    return kept if len(kept) >= 3 else pts


def even_odd_area_mm2(polygons: Sequence[np.ndarray]) -> float:
    """Area covered by ``polygons`` under the even-odd rule (holes subtract, islands add).

    Exact for non-crossing polygons, which is what DICOM contours are: each polygon's area
    counts positive at even nesting depth and negative at odd depth.
    """
    polys = [np.asarray(p, dtype=float) for p in polygons if len(p) >= 3]
    boxes = [(float(p[:, 0].min()), float(p[:, 0].max()), float(p[:, 1].min()), float(p[:, 1].max())) for p in polys]
    total = 0.0
    for i, poly in enumerate(polys):
        x, y = float(poly[0, 0]), float(poly[0, 1])
        depth = 0
        for j, (x_lo, x_hi, y_lo, y_hi) in enumerate(boxes):
            # A point outside another polygon's box is outside it (the crossing test gives no or an
            # even number of crossings there, margin for round-off): test only the others.
            margin = 1e-9 * (1.0 + abs(x_lo) + abs(x_hi))
            if j != i and y_lo <= y < y_hi and x_lo - margin <= x < x_hi + margin:
                depth += _point_in_polygon(poly[0], polys[j])
        area = polygon_area_mm2(poly)
        total += area if depth % 2 == 0 else -area
    return total


def _point_in_polygon(point: np.ndarray, poly: np.ndarray) -> bool:
    """Crossing-number test with the same half-open rule as :func:`fill_polygons`."""
    x, y = float(point[0]), float(point[1])
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.concatenate((x0[1:], x0[:1])), np.concatenate((y0[1:], y0[:1]))  # np.roll(., -1)
    crosses = (np.minimum(y0, y1) <= y) & (y < np.maximum(y0, y1))
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(crosses & (xc > x)) % 2)


def roi_volume_cc(roi: Roi, *, end_cap: str = "half-slice", slice_thickness_mm: float | None = None) -> float:
    """Volume from the polygons: sum of even-odd plane areas x slab thickness, in cc.

    ``end_cap="half-slice"`` extends each end plane half a spacing beyond (the slabs of
    :func:`roi_mask`); ``"none"`` clips at the end planes. A one-plane ROI has no spacing
    of its own: give ``slice_thickness_mm`` (else :class:`InputError`).
    """
    if end_cap not in ("half-slice", "none"):
        raise InputError(f"end_cap must be 'half-slice' or 'none', not '{end_cap}'")
    planes = roi.planes()
    if not planes:
        return 0.0
    clip = end_cap == "none"
    if len(planes) == 1 and not clip and slice_thickness_mm is None:
        raise InputError(
            f"{roi.describe()}: a single contour plane has no slice spacing; give slice_thickness_mm"
        )
    half = (slice_thickness_mm or 0.0) / 2.0
    slabs = plane_slabs(list(planes), single_plane_half_mm=half, clip_ends=clip)
    volume_mm3 = sum(even_odd_area_mm2(planes[z]) * (upper - lower) for z, lower, upper in slabs)
    return volume_mm3 / 1000.0
