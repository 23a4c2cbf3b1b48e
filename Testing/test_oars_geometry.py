"""Mask helpers of the OAR rules: boxes, hole filling, convex hulls, depth under a surface,
margins computed in a box (identical to the whole-grid margin) and on coarser samples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull

from sbrtstandards.grid import Grid
from sbrtstandards.margins import Margin, grow
from sbrtstandards.oars.geometry import (
    bbox,
    components,
    fill_holes_slices,
    gap_mm,
    grow_in_box,
    inner_part,
    pad_box,
    slice_convex_hulls,
    subgrid,
)

GRID = Grid((-30.0, -20.0, -10.0), (1.0, 1.25, 2.5), (61, 33, 9), frame_of_reference_uid="1.2.3")


def test_box_subgrid_and_padding() -> None:
    m = np.zeros(GRID.shape, dtype=bool)
    m[2:5, 10:12, 20:30] = True
    b = bbox(m)
    assert b == (slice(2, 5), slice(10, 12), slice(20, 30))
    sub = subgrid(GRID, b)
    assert sub.shape == (3, 2, 10) and sub.frame_of_reference_uid == "1.2.3"
    assert np.allclose(sub.origin_mm, GRID.index_to_lps(np.array([20, 10, 2])))
    padded = pad_box(b, GRID, (3.0, 2.5, 5.0))  # 3 mm / 1.0, 2.5 / 1.25, 5 / 2.5 voxels, plus one
    assert padded == (slice(0, 8), slice(7, 15), slice(16, 34))
    assert bbox(np.zeros(GRID.shape, bool)) is None


def test_fill_holes_slice_by_slice_only() -> None:
    m = np.zeros(GRID.shape, dtype=bool)
    m[2:7, 5:25, 10:40] = True
    m[3:6, 10:20, 20:30] = False  # a closed cavity: a hole in slices 3, 4, 5
    m[4, 10:20, 35:45] = False  # a notch open to the outside in slice 4: not a hole
    filled = fill_holes_slices(m)
    assert np.all(filled[3:6, 10:20, 20:30])
    assert not np.any(filled[4, 10:20, 40:45])
    assert np.array_equal(filled & ~m, (~m) & np.pad(np.ones((3, 10, 10), bool), ((3, 3), (10, 13), (20, 31))))


def test_components_sorted_by_size() -> None:
    m = np.zeros(GRID.shape, dtype=bool)
    m[1:3, 1:3, 1:3] = True  # 8 voxels
    m[5:8, 10:20, 30:40] = True  # 300 voxels
    labels, found = components(m)
    assert [size for _, size, _ in found] == [300, 8]
    assert found[0][2] == (slice(5, 8), slice(10, 20), slice(30, 40))
    assert np.all(labels[found[0][2]] == found[0][0])


def test_slice_convex_hull_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    m = np.zeros(GRID.shape, dtype=bool)
    m[4] = rng.random(GRID.shape[1:]) > 0.995  # a scatter of voxels
    m[4, 16, 30] = m[4, 5, 5] = m[4, 28, 55] = True
    hull = slice_convex_hulls(m, GRID)
    xs, ys = GRID.axis_coords_mm(0), GRID.axis_coords_mm(1)
    jj, ii = np.nonzero(m[4])
    h = ConvexHull(np.column_stack([xs[ii], ys[jj]]))
    a, b, c = h.equations.T
    expected = np.all(a[:, None, None] * xs[None, None, :] + b[:, None, None] * ys[None, :, None]
                      + c[:, None, None] <= 1e-9, axis=0)
    assert np.array_equal(hull[4], expected)
    assert not hull[3].any()


def test_inner_part_of_a_box_is_exact() -> None:
    grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (60, 60, 40))
    body = np.zeros(grid.shape, dtype=bool)
    body[5:35, 5:55, 5:55] = True  # faces at 4.5 and 54.5 (in-plane), 4.5 and 34.5 (z)
    box = (slice(0, 40), slice(0, 60), slice(0, 60))
    deep = inner_part(body, grid, 5.0, box)
    # a centre t mm inside a face is t + 0.5 from the outside centre; minus half a pixel: depth t
    expected = np.zeros(grid.shape, dtype=bool)
    expected[10:30, 10:50, 10:50] = True  # depth > 5: t = 5.5 and more
    assert np.array_equal(deep, expected)


def test_grow_in_box_equals_the_whole_grid_margin() -> None:
    m = np.zeros(GRID.shape, dtype=bool)
    m[3:6, 12:20, 25:35] = True
    margin = Margin(3.0, 8.0, 5.0, 2.0, 0.0, 4.0)
    whole = grow(m, GRID, margin, resolution_mm=1.0)
    boxed = grow_in_box(m, GRID, margin, name="m", notes=[], resolution_mm=1.0)
    assert np.array_equal(whole, boxed)


def test_grow_in_box_on_coarse_samples_stays_close() -> None:
    grid = Grid((-40.0, -40.0, -10.0), (0.5, 0.5, 2.0), (161, 161, 11))
    xs, ys, zs = (grid.axis_coords_mm(a) for a in range(3))
    lung = ((xs[None, None, :] / 15.0) ** 2 + (ys[None, :, None] / 10.0) ** 2 + (zs[:, None, None] / 9.0) ** 2) <= 1
    margin = Margin(0.0, 12.0, 12.0, 12.0, 0.0, 0.0)
    notes: list[str] = []
    fine = grow_in_box(lung, grid, margin, name="lung", notes=notes)
    coarse = grow_in_box(lung, grid, margin, name="lung", notes=notes, max_in_plane_mm=2.0)  # 4 x 4 blocks
    shell_fine, shell_coarse = fine & ~lung, coarse & ~lung
    ratio = shell_coarse.sum() / shell_fine.sum()
    assert abs(ratio - 1.0) < 0.02
    # every disagreement lies within half a block diagonal (1.41 mm) of the fine surface
    sampling = grid.spacing_mm[::-1]
    padded = np.pad(fine, 1)  # beyond the grid is outside
    depth_in = ndimage.distance_transform_edt(padded, sampling=sampling)[1:-1, 1:-1, 1:-1]
    depth_out = ndimage.distance_transform_edt(~padded, sampling=sampling)[1:-1, 1:-1, 1:-1]
    differ = fine ^ coarse
    assert differ.any()
    assert np.max(np.where(fine, depth_in, depth_out)[differ]) <= np.sqrt(2.0) + 0.5 + 1e-9
    assert not notes


def test_gap_is_symmetric_and_follows_the_anisotropic_spacing() -> None:
    a = np.zeros(GRID.shape, dtype=bool)
    b = np.zeros(GRID.shape, dtype=bool)
    a[4, 5:8, 10:15] = True
    b[4, 20:25, 10:15] = True  # 12 rows of 1.25 mm between the faces
    assert gap_mm(a, b, GRID) == pytest.approx(15.0)
    assert gap_mm(b, a, GRID) == pytest.approx(15.0)
