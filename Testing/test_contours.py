"""Contours <-> masks and polygon volumes, against exact round trips and analytic shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from sbrtstandards.contours import (
    even_odd_area_mm2,
    mask_to_contours,
    plane_slabs,
    roi_mask,
    roi_volume_cc,
    typical_spacing_mm,
)
from sbrtstandards.dicom.rtstruct import Contour, Roi
from sbrtstandards.errors import GeometryError, InputError
from sbrtstandards.grid import Grid


def circle(cx: float, cy: float, r: float, z: float, n: int = 720) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t), np.full(n, z)])


def ngon_area(r: float, n: int = 720) -> float:
    """Exact area of the regular n-gon inscribed in a circle of radius r."""
    return 0.5 * n * r * r * math.sin(2.0 * math.pi / n)


def roi_of(polygons: list[np.ndarray], name: str = "X") -> Roi:
    return Roi(1, name, None, "", [Contour(p, "CLOSED_PLANAR") for p in polygons])


def ring_roi(zs: list[float], r_out: float = 20.0, r_in: float = 10.0) -> Roi:
    polys = []
    for z in zs:
        polys += [circle(0.0, 0.0, r_out, z), circle(0.0, 0.0, r_in, z)]
    return roi_of(polys, "Ring")


GRID = Grid((-20.3, -10.15, 5.0), (0.7, 0.9, 2.5), (60, 50, 12))


# --------------------------------------------------------------- mask -> contours -> mask


@pytest.mark.parametrize("seed", range(6))
def test_random_blobs_round_trip_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = ndimage.gaussian_filter(rng.random(GRID.shape), (0.5, 2.0, 2.0)) > 0.52
    assert 0 < mask.sum() < mask.size
    roi = Roi.from_mask("blob", mask, GRID)
    assert all(c.geometric_type == "CLOSED_PLANAR" and len(c.points_mm) >= 3 for c in roi.contours)
    np.testing.assert_array_equal(roi_mask(roi, GRID), mask)


def test_ring_with_hole_gives_two_contours_and_round_trips() -> None:
    jj, ii = np.mgrid[0:50, 0:60]
    r2 = (ii - 30) ** 2 + (jj - 25) ** 2
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[3:8] = (r2 < 15**2) & (r2 >= 7**2)
    contours = mask_to_contours(mask, GRID)
    assert len(contours) == 2 * 5  # outer + hole on each of 5 slices
    np.testing.assert_array_equal(roi_mask(roi_of([c.points_mm for c in contours]), GRID), mask)


def test_masks_touching_the_grid_border_close() -> None:
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[0] = True  # a whole slice
    mask[1, :10, :7] = True  # a corner block
    mask[-1, -3:, 20:40] = True  # against the last rows of the last slice
    roi = Roi.from_mask("edge", mask, GRID)
    np.testing.assert_array_equal(roi_mask(roi, GRID), mask)


def test_single_voxels_and_diagonal_saddles() -> None:
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[4, 10, 10] = True  # isolated voxel
    mask[5, 20:22, 20:22] = [[True, False], [False, True]]  # diagonal pair: marching-squares saddle
    mask[6, 30:33, 30:33] = [[True, False, True], [False, True, False], [True, False, True]]
    mask[7, 5:8, 5:8] = [[True, True, True], [True, False, True], [True, True, True]]  # one-voxel hole
    roi = Roi.from_mask("dots", mask, GRID)
    np.testing.assert_array_equal(roi_mask(roi, GRID), mask)


def test_empty_mask_gives_an_empty_roi() -> None:
    roi = Roi.from_mask("none", np.zeros(GRID.shape, dtype=bool), GRID)
    assert roi.is_empty and roi.contours == []
    assert not roi_mask(roi, GRID).any()
    assert roi_volume_cc(roi) == 0.0


def test_mask_shape_must_fit_the_grid() -> None:
    with pytest.raises(InputError, match="does not fit the grid"):
        mask_to_contours(np.zeros((2, 2, 2), dtype=bool), GRID)


def test_collinear_vertices_are_dropped() -> None:
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[2, 10:20, 10:30] = True  # a rectangle: 4 corners after merging, the octagon of cut corners
    (contour,) = mask_to_contours(mask, GRID)
    assert len(contour.points_mm) == 8


# --------------------------------------------------------------- analytic volumes


def test_ring_volume_from_polygons_is_exact() -> None:
    zs = [0.0, 2.5, 5.0, 7.5, 10.0]
    roi = ring_roi(zs)
    area = ngon_area(20.0) - ngon_area(10.0)
    assert roi_volume_cc(roi) == pytest.approx(area * 5 * 2.5 / 1000.0, rel=1e-12)
    assert roi_volume_cc(roi, end_cap="none") == pytest.approx(area * 4 * 2.5 / 1000.0, rel=1e-12)


def test_ring_mask_volume_matches_the_analytic_volume() -> None:
    zs = [0.0, 2.5, 5.0, 7.5, 10.0]
    roi = ring_roi(zs)
    grid = Grid((-25.0, -25.0, -5.0), (0.25, 0.25, 2.5), (201, 201, 9))
    mask = roi_mask(roi, grid)
    assert mask.any(axis=(1, 2)).sum() == 5
    analytic_cc = math.pi * (20.0**2 - 10.0**2) * (5 * 2.5) / 1000.0
    assert mask.sum() * grid.voxel_volume_cc == pytest.approx(analytic_cc, rel=0.01)
    assert not mask[:, 100, 100].any()  # centre of the hole
    assert mask[2, 100, 100 + 60]  # 15 mm from the centre, inside the ring


def test_two_islands_on_one_slice() -> None:
    roi = roi_of([circle(-15.0, 0.0, 8.0, 0.0), circle(15.0, 0.0, 8.0, 0.0)], "Islands")
    assert list(roi.planes()) == [0.0]
    assert roi_volume_cc(roi, slice_thickness_mm=2.5) == pytest.approx(2 * ngon_area(8.0) * 2.5 / 1000.0)
    grid = Grid((-25.0, -10.0, -5.0), (0.2, 0.2, 2.5), (251, 101, 5))
    mask = roi_mask(roi, grid)
    assert mask.any(axis=(1, 2)).sum() == 1  # a lone plane covers half the grid's spacing each side
    assert mask.sum() * grid.voxel_volume_cc == pytest.approx(2 * math.pi * 64.0 * 2.5 / 1000.0, rel=0.01)
    labels, count = ndimage.label(mask[2])
    assert count == 2
    with pytest.raises(InputError, match="single contour plane"):
        roi_volume_cc(roi)
    assert roi_volume_cc(roi, end_cap="none") == 0.0  # clipped at its only plane


def test_even_odd_area_of_nested_polygons() -> None:
    polys = [circle(0, 0, 20, 0)[:, :2], circle(0, 0, 12, 0)[:, :2], circle(0, 0, 5, 0)[:, :2]]
    expected = ngon_area(20) - ngon_area(12) + ngon_area(5)  # island inside the hole
    assert even_odd_area_mm2(polys) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------- slabs on other grids


def square(z: float, half: float = 5.0) -> np.ndarray:
    return np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])


def test_planes_between_grid_slices() -> None:
    roi = roi_of([square(0.0), square(2.5), square(5.0)])  # slabs cover [-1.25, 6.25)
    fine = Grid((-4.5, -4.5, -3.0), (1.0, 1.0, 1.0), (10, 10, 12))  # slices at -3 .. 8
    covered = fine.axis_coords_mm(2)[roi_mask(roi, fine).any(axis=(1, 2))]
    np.testing.assert_allclose(covered, [-1, 0, 1, 2, 3, 4, 5, 6])
    offset = Grid((-4.5, -4.5, -1.25), (1.0, 1.0, 2.5), (10, 10, 4))  # on the slab boundaries
    covered = offset.axis_coords_mm(2)[roi_mask(roi, offset).any(axis=(1, 2))]
    np.testing.assert_allclose(covered, [-1.25, 1.25, 3.75])  # half-open: 6.25 is outside
    assert roi_mask(roi, offset).sum() == 3 * 100


def test_a_gap_splits_the_roi_into_pieces() -> None:
    zs = [0.0, 2.5, 5.0, 15.0, 17.5]
    slabs = plane_slabs(zs, single_plane_half_mm=0.5)
    assert slabs == [
        (0.0, -1.25, 1.25),
        (2.5, 1.25, 3.75),
        (5.0, 3.75, 6.25),
        (15.0, 13.75, 16.25),
        (17.5, 16.25, 18.75),
    ]
    roi = roi_of([square(z) for z in zs])
    grid = Grid((-4.5, -4.5, -5.0), (1.0, 1.0, 1.25), (10, 10, 25))
    covered = grid.axis_coords_mm(2)[roi_mask(roi, grid).any(axis=(1, 2))]
    expected = [z for z in -5.0 + 1.25 * np.arange(25) if -1.25 <= z < 6.25 or 13.75 <= z < 18.75]
    np.testing.assert_allclose(covered, expected)
    assert roi_volume_cc(roi) == pytest.approx(100.0 * (7.5 + 5.0) / 1000.0)


def test_lone_planes_and_the_typical_spacing() -> None:
    assert typical_spacing_mm([0.0, 2.5, 5.0, 20.0]) == 2.5
    assert typical_spacing_mm([0.0, 2.5, 27.5]) == 2.5  # tie: the smaller (the median would be 13.75)
    assert typical_spacing_mm([0.0, 0.5, 3.5, 6.5, 9.5]) == 3.0  # one odd plane does not rule
    assert typical_spacing_mm([4.0]) is None
    # A plane alone between gaps gets half the typical spacing each side ...
    assert plane_slabs([0.0, 2.5, 5.0, 20.0], single_plane_half_mm=0.5)[-1] == (20.0, 18.75, 21.25)
    assert plane_slabs([0.0, 2.5, 20.0], single_plane_half_mm=0.5, clip_ends=True)[-1] == (20.0, 20.0, 20.0)
    # ... the plane of a one-plane ROI the given half-thickness.
    assert plane_slabs([7.0], single_plane_half_mm=0.5) == [(7.0, 6.5, 7.5)]


def test_mask_with_few_planes_and_a_long_gap_round_trips() -> None:
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[0, 5:9, 5:9] = True
    mask[1, 5:9, 5:9] = True
    mask[3, 20:25, 20:25] = True  # one empty slice, then a lone plane
    mask[11, 30:33, 30:33] = True  # a long gap, then a lone plane
    np.testing.assert_array_equal(roi_mask(Roi.from_mask("pieces", mask, GRID), GRID), mask)


# --------------------------------------------------------------- bad input


def test_non_axial_or_degenerate_contours_are_refused() -> None:
    tilted = square(0.0)
    tilted[2, 2] = 1.0
    with pytest.raises(InputError, match="not in an axial plane"):
        roi_mask(roi_of([tilted], "Tilted"), GRID)
    with pytest.raises(InputError, match="2 point"):
        roi_of([square(0.0)[:2]], "Line").planes()


def test_non_axial_grid_is_refused() -> None:
    oblique = Grid((0, 0, 0), (1, 1, 1), (4, 4, 4), direction=(0, 1, 0, 1, 0, 0, 0, 0, 1))
    with pytest.raises(GeometryError):
        roi_mask(roi_of([square(0.0)]), oblique)
    with pytest.raises(GeometryError):
        mask_to_contours(np.zeros(oblique.shape, dtype=bool), oblique)


def test_bad_end_cap() -> None:
    with pytest.raises(InputError, match="end_cap"):
        roi_volume_cc(roi_of([square(0.0)]), end_cap="full")


def test_point_and_open_contours_have_no_planes() -> None:
    roi = Roi(2, "Iso", None, "ISOCENTER", [Contour(np.array([[0.0, 0.0, 0.0]]), "POINT")])
    assert roi.is_point and not roi.is_empty
    assert roi.planes() == {}
    assert roi_volume_cc(roi) == 0.0
