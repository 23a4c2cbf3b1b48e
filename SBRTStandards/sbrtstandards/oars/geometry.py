"""Mask geometry shared by the OAR rules: boxes, slice-wise hole filling, components, gaps.

Why a module of its own: every rule of :mod:`sbrtstandards.oars` works on a 512 x 512 x
160 CT in a few seconds only because it never touches the whole grid when a box around
the structures suffices. The helpers here crop a mask to a box (with the padding a margin
needs), run :func:`sbrtstandards.margins.grow` / :func:`~sbrtstandards.margins.shrink` on
the sub-grid of that box and paste the result back, so a margin costs what its structure
costs, not what the CT costs. The skin (a thin layer under the whole body surface) is
found with a Euclidean distance transform of the body in a box (:func:`inner_part`), not
by shrinking the whole body outline.

Distances between structures (:func:`gap_mm`) are Euclidean distances in mm on the
anisotropic grid between the structures' surfaces, each sampled where the project's
mask convention puts it: half-way between an inside and an outside voxel centre (the
centres of the exposed voxel faces); ``0`` when the structures overlap or touch (a voxel
of one shares a face, edge or corner with a voxel of the other).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError, cKDTree

from sbrtstandards.grid import Grid
from sbrtstandards.margins import Margin, grow
from sbrtstandards.masks import MaskWarning
from sbrtstandards.polygons import fill_polygons

Box = tuple[slice, slice, slice]  # (k, j, i) index ranges

_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)  # 4-connectivity within each slice only


def bbox(mask: np.ndarray) -> Box | None:
    """Smallest (k, j, i) box holding every True voxel, or None for an empty mask."""
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(ks) == 0:
        return None
    sub = mask[ks[0]:ks[-1] + 1]
    js = np.flatnonzero(sub.any(axis=(0, 2)))
    is_ = np.flatnonzero(sub.any(axis=(0, 1)))
    return (slice(int(ks[0]), int(ks[-1]) + 1), slice(int(js[0]), int(js[-1]) + 1),
            slice(int(is_[0]), int(is_[-1]) + 1))


def pad_box(box: Box, grid: Grid, pad_mm: float | Sequence[float]) -> Box:
    """``box`` widened by ``pad_mm`` (one value, or x, y, z) plus one voxel, clipped to the grid."""
    pads = (pad_mm,) * 3 if isinstance(pad_mm, (int, float)) else tuple(pad_mm)
    out = []
    for array_axis, axis in ((0, 2), (1, 1), (2, 0)):
        n = int(math.ceil(float(pads[axis]) / grid.spacing_mm[axis] - 1e-9)) + 1
        s = box[array_axis]
        out.append(slice(max(0, s.start - n), min(grid.shape[array_axis], s.stop + n)))
    return out[0], out[1], out[2]


def union_box(*boxes: Box | None) -> Box | None:
    """Smallest box holding all the given boxes (None ignored)."""
    real = [b for b in boxes if b is not None]
    if not real:
        return None
    return tuple(  # type: ignore[return-value]
        slice(min(b[a].start for b in real), max(b[a].stop for b in real)) for a in range(3)
    )


def subgrid(grid: Grid, box: Box) -> Grid:
    """The grid of the voxels in ``box`` (same spacing, direction and Frame of Reference)."""
    k, j, i = box
    origin = grid.index_to_lps(np.array([i.start, j.start, k.start], dtype=float))
    return Grid(
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing_mm=grid.spacing_mm,
        size=(i.stop - i.start, j.stop - j.start, k.stop - k.start),
        direction=grid.direction,
        frame_of_reference_uid=grid.frame_of_reference_uid,
    )


def paste(box: Box, values: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A full-size boolean mask holding ``values`` in ``box`` and False elsewhere."""
    out = np.zeros(shape, dtype=bool)
    out[box] = values
    return out


def grow_in_box(
    mask: np.ndarray,
    grid: Grid,
    margin: Margin | float,
    *,
    name: str,
    notes: list[str],
    resolution_mm: float | None = None,
    max_in_plane_mm: float | None = None,
) -> np.ndarray:
    """:func:`~sbrtstandards.margins.grow` computed on the sub-grid of the structure's box only.

    The box is the structure's box widened by the largest margin (so nothing is cut except
    at the CT's own edge). Margin warnings (result cut at the CT edge) are added to
    ``notes``. ``resolution_mm`` defaults to the CT's coarsest spacing: OAR rules expand by
    centimetres, for which the CT's own sampling of the sub-voxel model is enough.

    ``max_in_plane_mm``: when the CT's pixels are smaller than half of it, the grown
    structure is evaluated once per block of ``f`` x ``f`` pixels (``f = floor(max /
    pixel)``), at the block's centre, and every pixel of the block takes that value: the
    surface moves by at most half a block (about 1 mm for ``max_in_plane_mm = 2``), with
    no bias in any direction, and the cost drops by ``f^2`` or more. Meant for
    centimetre expansions of large organs (the chest wall's 2 cm), never for targets.
    """
    m = margin if isinstance(margin, Margin) else Margin.isotropic(float(margin))
    b = bbox(mask)
    if b is None:
        return np.zeros(grid.shape, dtype=bool)
    box = pad_box(b, grid, m.max_mm + max(grid.spacing_mm))
    res = resolution_mm if resolution_mm is not None else max(grid.spacing_mm)
    sub_grid = subgrid(grid, box)
    factor = 1
    if max_in_plane_mm is not None:
        factor = max(1, int(math.floor(max_in_plane_mm / max(grid.spacing_mm[:2]) + 1e-9)))
    out_grid = sub_grid if factor == 1 else _coarse(sub_grid, factor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MaskWarning)
        sub = grow(mask[box], sub_grid, m, out_grid=out_grid, name=name, resolution_mm=res)
    _keep_warnings(caught, notes, at_edge=_touches_grid_edge(box, grid), name=name)
    if factor > 1:
        jj = np.minimum(np.arange(sub_grid.shape[1]) // factor, sub.shape[1] - 1)
        ii = np.minimum(np.arange(sub_grid.shape[2]) // factor, sub.shape[2] - 1)
        sub = sub[:, jj][:, :, ii]
    return paste(box, sub, grid.shape)


def _coarse(grid: Grid, factor: int) -> Grid:
    """Blocks of ``factor`` x ``factor`` pixels of ``grid``, one sample at each block's centre."""
    ni, nj, nk = grid.size
    shift = 0.5 * (factor - 1)
    return Grid(
        origin_mm=(grid.origin_mm[0] + shift * grid.spacing_mm[0], grid.origin_mm[1] + shift * grid.spacing_mm[1],
                   grid.origin_mm[2]),
        spacing_mm=(grid.spacing_mm[0] * factor, grid.spacing_mm[1] * factor, grid.spacing_mm[2]),
        size=(-(-ni // factor), -(-nj // factor), nk),
        direction=grid.direction,
        frame_of_reference_uid=grid.frame_of_reference_uid,
    )


def inner_part(mask: np.ndarray, grid: Grid, depth_mm: float, box: Box) -> np.ndarray:
    """Voxels of ``mask`` in ``box`` deeper than ``depth_mm`` below its surface (False elsewhere).

    The depth of a voxel is the exact Euclidean distance (mm, on the anisotropic grid) from
    its centre to the nearest voxel centre outside ``mask``, minus half the in-plane voxel
    size (the surface lies half-way between an inside and an outside centre). Computed in
    ``box`` widened by the depth, so nothing outside the widened box can be nearer.
    """
    outer = pad_box(box, grid, depth_mm + max(grid.spacing_mm))
    crop = mask[outer]
    out = np.zeros(grid.shape, dtype=bool)
    if not crop.any():
        return out
    depth = ndimage.distance_transform_edt(crop, sampling=grid.spacing_mm[::-1])
    half = 0.5 * min(grid.spacing_mm[:2])
    deep = paste(outer, crop & (depth - half > depth_mm), grid.shape)
    out[box] = deep[box]
    return out


def _touches_grid_edge(box: Box, grid: Grid) -> bool:
    return any(s.start == 0 or s.stop == n for s, n in zip(box, grid.shape))


def _keep_warnings(caught: list[warnings.WarningMessage], notes: list[str], *, at_edge: bool, name: str) -> None:
    for w in caught:
        if issubclass(w.category, MaskWarning):
            text = str(w.message)
            if "beyond the output grid" in text and not at_edge:
                continue  # the sub-grid's own edge, padded beyond the margin: not a real cut
            if "beyond the output grid" in text:
                text = f"{name}: the expansion reaches the edge of the CT and is cut there"
            notes.append(text)


# ----------------------------------------------------------------------------- slice-wise work


def fill_holes_slices(mask: np.ndarray) -> np.ndarray:
    """``mask`` with the holes of every axial slice filled (2D, 4-connected background).

    Works in the mask's box padded by one voxel in-plane, so the background of each slice
    reaches the box border; background components that do not reach it are holes.
    """
    b = bbox(mask)
    out = mask.copy()
    if b is None:
        return out
    k, j, i = b
    crop = np.zeros((k.stop - k.start, j.stop - j.start + 2, i.stop - i.start + 2), dtype=bool)
    crop[:, 1:-1, 1:-1] = mask[b]
    labels, n = ndimage.label(~crop, structure=_IN_PLANE)
    outside = np.zeros(n + 1, dtype=bool)
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        outside[np.unique(edge)] = True
    outside[0] = True  # label 0 = the mask itself
    holes = ~outside[labels]
    out[b] |= holes[:, 1:-1, 1:-1]
    return out


def components(mask: np.ndarray, *, in_plane: bool = False) -> tuple[np.ndarray, list[tuple[int, int, Box]]]:
    """Connected components (6-connected in 3D, or 4-connected per slice with ``in_plane``).

    Returns the label array and ``[(label, voxel count, box)]`` sorted by decreasing size;
    sizes are counted inside each component's box only (fast on large grids).
    """
    labels = np.zeros(mask.shape, dtype=np.int32)
    found: list[tuple[int, int, Box]] = []
    b = bbox(mask)
    if b is None:
        return labels, found
    crop, _ = ndimage.label(mask[b], structure=_IN_PLANE if in_plane else None)
    labels[b] = crop
    offset = [s.start for s in b]
    for lab, sl in enumerate(ndimage.find_objects(crop), start=1):
        if sl is None:
            continue
        size = int(np.count_nonzero(crop[sl] == lab))
        box = tuple(slice(s.start + o, s.stop + o) for s, o in zip(sl, offset))
        found.append((lab, size, box))  # type: ignore[arg-type]
    found.sort(key=lambda item: -item[1])
    return labels, found


def component_mask(labels: np.ndarray, label: int, box: Box) -> np.ndarray:
    out = np.zeros(labels.shape, dtype=bool)
    out[box] = labels[box] == label
    return out


def slice_convex_hulls(mask: np.ndarray, grid: Grid, ks: range | None = None) -> np.ndarray:
    """Per axial slice (those of ``ks``, default all), the filled 2D convex hull of the voxel centres.

    The hull of a slice is the hull of the first and last voxel of each of its rows (the
    other voxels lie between them), which keeps the point sets small.
    """
    out = np.zeros(mask.shape, dtype=bool)
    b = bbox(mask)
    if b is None:
        return out
    xs = grid.axis_coords_mm(0)[b[2]]
    ys = grid.axis_coords_mm(1)[b[1]]
    ni = len(xs)
    for k in range(b[0].start, b[0].stop):
        if ks is not None and k not in ks:
            continue
        sl = mask[k, b[1], b[2]]
        rows = np.flatnonzero(sl.any(axis=1))
        if len(rows) == 0:
            continue
        first = np.argmax(sl[rows], axis=1)
        last = ni - 1 - np.argmax(sl[rows, ::-1], axis=1)
        pts = np.column_stack([np.concatenate([xs[first], xs[last]]), np.concatenate([ys[rows], ys[rows]])])
        out[k, b[1], b[2]] = sl
        if len(rows) < 2 and np.all(first == last):
            continue
        try:
            hull = ConvexHull(pts)
        except QhullError:  # collinear points: the slice itself is its hull
            continue
        poly = pts[hull.vertices]
        # Hull vertices are voxel centres; widen by a hair so centres on the hull edge count.
        centre = poly.mean(axis=0)
        poly = centre + (poly - centre) * (1.0 + 1e-6) + np.sign(poly - centre) * 1e-6
        out[k, b[1], b[2]] |= fill_polygons([poly], xs, ys)
    return out


# ----------------------------------------------------------------------------- measures


def centroid_mm(mask: np.ndarray, grid: Grid) -> np.ndarray | None:
    """Mean LPS position (mm) of the voxel centres of ``mask``, None when empty."""
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return None
    mean_kji = idx.mean(axis=0)
    return grid.index_to_lps(mean_kji[::-1])


def z_range_mm(mask: np.ndarray, grid: Grid) -> tuple[float, float] | None:
    """Lowest and highest slice z (mm) holding voxels of ``mask``."""
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(ks) == 0:
        return None
    zs = grid.axis_coords_mm(2)
    return float(zs[ks[0]]), float(zs[ks[-1]])


def volume_cc(mask: np.ndarray, grid: Grid) -> float:
    return float(np.count_nonzero(mask)) * grid.voxel_volume_cc


def surface_voxels(mask: np.ndarray, box: Box | None = None) -> np.ndarray:
    """(k, j, i) indices of the voxels of ``mask`` with a 6-neighbour outside it."""
    b = box if box is not None else bbox(mask)
    if b is None:
        return np.zeros((0, 3), dtype=int)
    k, j, i = b
    crop = np.zeros((k.stop - k.start + 2, j.stop - j.start + 2, i.stop - i.start + 2), dtype=bool)
    crop[1:-1, 1:-1, 1:-1] = mask[b]
    inner = ndimage.binary_erosion(crop)
    idx = np.argwhere(crop & ~inner) - 1
    return idx + np.array([k.start, j.start, i.start])


def touching(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` overlap or a voxel of one shares a face, edge or corner with the other."""
    ba, bb = bbox(a), bbox(b)
    if ba is None or bb is None:
        return False
    both = union_box(ba, bb)
    assert both is not None
    k, j, i = both
    box = (slice(max(0, k.start - 1), k.stop + 1), slice(max(0, j.start - 1), j.stop + 1),
           slice(max(0, i.start - 1), i.stop + 1))
    grown = ndimage.binary_dilation(a[box], structure=np.ones((3, 3, 3), dtype=bool))
    return bool(np.any(grown & b[box]))


def face_points_mm(mask: np.ndarray, grid: Grid) -> np.ndarray:
    """Centres (mm, in k, j, i order) of the voxel faces of ``mask`` that border a voxel outside it.

    Each such point lies half-way between an inside and an outside voxel centre: where the
    project's mask/contour convention puts the structure's surface.
    """
    b = bbox(mask)
    if b is None:
        return np.zeros((0, 3))
    idx = surface_voxels(mask, b)
    k, j, i = b
    pad = np.zeros((k.stop - k.start + 2, j.stop - j.start + 2, i.stop - i.start + 2), dtype=bool)
    pad[1:-1, 1:-1, 1:-1] = mask[b]
    local = idx - np.array([k.start, j.start, i.start]) + 1
    spacing_kji = np.asarray(grid.spacing_mm[::-1], dtype=float)
    points = []
    for axis in range(3):
        for step in (-1, 1):
            nb = local.copy()
            nb[:, axis] += step
            exposed = ~pad[nb[:, 0], nb[:, 1], nb[:, 2]]
            p = idx[exposed].astype(float)
            p[:, axis] += 0.5 * step
            points.append(p * spacing_kji)
    return np.vstack(points)


def gap_mm(a: np.ndarray, b: np.ndarray, grid: Grid) -> float | None:
    """Euclidean distance (mm) between the surfaces of ``a`` and ``b``; 0 when they touch.

    ``0`` when they overlap or a voxel of one shares a face, edge or corner with a voxel of
    the other (:func:`touching`); None when either is empty. Otherwise the smallest
    distance between their surfaces, each sampled at the centres of its exposed voxel
    faces (:func:`face_points_mm`), in mm on the anisotropic grid (k-d tree, exact nearest
    pairs). On the synthetic thorax this is within about half a voxel of the analytic gap
    between the smooth organs; the distance between voxel centres overestimates it by
    about a voxel and the distance between voxel boxes underestimates it by up to half a
    voxel diagonal on each side.
    """
    if bbox(a) is None or bbox(b) is None:
        return None
    if touching(a, b):
        return 0.0
    pa, pb = face_points_mm(a, grid), face_points_mm(b, grid)
    distances, _ = cKDTree(pb).query(pa)
    return float(np.min(distances))
