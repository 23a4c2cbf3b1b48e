"""DVH engine: conventions, holes and islands, partial dose coverage, extremes, bad input.

Every expected number is computed by hand here (box volumes, ring areas, segment areas)
or from the closed forms in ``analytic_shapes``, never from the engine's own output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from analytic_shapes import regular_polygon, regular_polygon_area, segment_area
from scipy.optimize import brentq

from sbrtstandards.dicom.common import StudyInfo
from sbrtstandards.dicom.rtdose import DoseGrid
from sbrtstandards.dicom.rtstruct import Contour, Roi, StructureSet
from sbrtstandards.dvh import (
    DoseVolume,
    build_slabs,
    compute_dvhs,
    planes_volume_cc,
    structure_dvh,
    structure_set_dvhs,
)
from sbrtstandards.errors import FrameOfReferenceError, GeometryError, InputError
from sbrtstandards.grid import Grid


def square(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def dose_on_grid(fn, lo=(-60.0, -60.0, -30.0), hi=(60.0, 60.0, 60.0), spacing=2.0, direction=None) -> DoseVolume:
    """``fn(x, y, z)`` sampled at the voxel centres of an axial grid covering [lo, hi]."""
    origin = np.asarray(lo, dtype=float)
    size = (np.floor((np.asarray(hi) - origin) / spacing) + 1).astype(int)
    xs, ys, zs = (origin[a] + spacing * np.arange(size[a]) for a in range(3))
    zz, yy, xx = np.meshgrid(zs, ys, xs, indexing="ij")
    grid = Grid(tuple(origin), (spacing,) * 3, tuple(int(v) for v in size))
    return DoseVolume(fn(xx, yy, zz).astype(float), grid)


def box_planes(x0=-10.0, y0=-5.0, x1=10.0, y1=5.0, zs=(0.0, 2.0, 4.0, 6.0, 8.0, 10.0)):
    return {z: [square(x0, y0, x1, y1)] for z in zs}


# ---------------------------------------------------------------- conventions and volume


def test_end_cap_conventions_on_a_box() -> None:
    planes = box_planes()  # 20 x 10 mm on 6 planes 2 mm apart
    assert planes_volume_cc(planes, end_cap="half-slice") == pytest.approx(200 * 12 / 1000)  # z -1..11
    assert planes_volume_cc(planes, end_cap="none") == pytest.approx(200 * 10 / 1000)  # z 0..10
    slabs = build_slabs("box", planes, end_cap="half-slice")
    assert [(s.z_lo_mm, s.z_hi_mm) for s in slabs][:2] == [(-1.0, 1.0), (1.0, 3.0)]
    assert slabs[-1].z_hi_mm == 11.0


def test_pieces_separated_by_a_gap_get_their_own_end_caps() -> None:
    planes = {**box_planes(zs=(0.0, 2.0, 4.0)), **box_planes(zs=(20.0, 22.0, 24.0))}
    assert planes_volume_cc(planes) == pytest.approx(2 * 200 * 6 / 1000)


def test_single_plane_needs_a_thickness() -> None:
    planes = {5.0: [square(0, 0, 10, 10)]}
    with pytest.raises(GeometryError, match="single contour plane"):
        structure_dvh("p", planes, dose_on_grid(lambda x, y, z: 0 * x + 1.0))
    dvh = structure_dvh("p", planes, dose_on_grid(lambda x, y, z: 0 * x + 1.0), slice_spacing_mm=3.0)
    assert dvh.volume_cc == pytest.approx(0.3)
    with pytest.raises(GeometryError, match="zero volume"):
        structure_dvh("p", planes, dose_on_grid(lambda x, y, z: 0 * x + 1.0), end_cap="none", slice_spacing_mm=3.0)


def test_uniform_dose_gives_that_dose_everywhere() -> None:
    dvh = structure_dvh("box", box_planes(), dose_on_grid(lambda x, y, z: 0 * x + 42.0))
    assert dvh.volume_cc == pytest.approx(2.4)
    assert dvh.volume_inside_cc == pytest.approx(2.4)
    for v in (dvh.min_gy, dvh.mean_gy, dvh.max_gy, dvh.dose_at_volume_percent(95), dvh.dose_at_volume_cc(0.03)):
        assert v == pytest.approx(42.0)
    assert dvh.volume_at_dose_cc(41.99) == pytest.approx(2.4)
    assert dvh.volume_at_dose_cc(42.01) == 0.0


def test_ring_with_a_hole_counts_only_the_ring() -> None:
    """Outer radius 20, hole radius 10 (even-odd), dose linear in x: the distribution of x
    over an annulus is the difference of two circular-segment areas (closed form)."""
    zs = np.arange(0.0, 21.0, 2.0)
    planes = {float(z): [regular_polygon(0, 0, 20.0), regular_polygon(0, 0, 10.0, ccw=False)] for z in zs}
    area = regular_polygon_area(20.0) - regular_polygon_area(10.0)
    dose = dose_on_grid(lambda x, y, z: 40.0 + x, spacing=1.0)
    dvh = structure_dvh("ring", planes, dose)
    assert dvh.volume_cc == pytest.approx(area * 22.0 / 1000.0, rel=1e-12)
    ring_area = math.pi * (400.0 - 100.0)

    def frac_below(t: float) -> float:
        return (segment_area(t, 20.0) - segment_area(t, 10.0)) / ring_area

    for p in (99.0, 90.0, 50.0, 10.0, 1.0):
        t = brentq(lambda t, p=p: frac_below(t) - (1 - p / 100), -20, 20, xtol=1e-10)
        assert dvh.dose_at_volume_percent(p) == pytest.approx(40.0 + t, abs=0.05), p
    assert dvh.mean_gy == pytest.approx(40.0, abs=0.01)
    # No sample in the hole: with a dose of 100 Gy only inside r < 10 the ring sees none of it.
    hot_hole = dose_on_grid(lambda x, y, z: np.where(np.hypot(x, y) < 8.0, 100.0, 1.0), spacing=1.0)
    assert structure_dvh("ring", planes, hot_hole).max_gy == pytest.approx(1.0)


def test_several_contours_per_plane_add_up() -> None:
    """Two disjoint discs on each plane, 60 mm apart, in a dose linear in x."""
    zs = [0.0, 3.0, 6.0]
    planes = {z: [regular_polygon(-30, 0, 5.0), regular_polygon(30, 0, 5.0)] for z in zs}
    dose = dose_on_grid(lambda x, y, z: 50.0 + 0.5 * x, spacing=2.0)
    dvh = structure_dvh("islands", planes, dose)
    assert dvh.volume_cc == pytest.approx(2 * regular_polygon_area(5.0) * 9.0 / 1000.0, rel=1e-12)
    half = dvh.volume_cc / 2
    assert dvh.volume_at_dose_cc(50.0) == pytest.approx(half, rel=1e-3)  # the right disc only
    assert dvh.min_gy == pytest.approx(50.0 - 0.5 * 35.0, abs=0.01)
    assert dvh.max_gy == pytest.approx(50.0 + 0.5 * 35.0, abs=0.01)


def test_contour_orientation_does_not_matter() -> None:
    cw = {z: [square(-10, -5, 10, 5)[::-1]] for z in (0.0, 2.0, 4.0)}
    ccw = {z: [square(-10, -5, 10, 5)] for z in (0.0, 2.0, 4.0)}
    assert planes_volume_cc(cw) == planes_volume_cc(ccw) == pytest.approx(200 * 6 / 1000)


# ---------------------------------------------------------------- statistics and curves


def test_box_in_a_linear_z_dose_matches_the_uniform_distribution() -> None:
    """Along z a box is uniform: Dx = D(z_hi - x (z_hi - z_lo))."""
    planes = box_planes()  # half-slice: z from -1 to 11
    dvh = structure_dvh("box", planes, dose_on_grid(lambda x, y, z: 10.0 + 2.0 * z))
    for p in (99.0, 95.0, 50.0, 5.0, 1.0):
        assert dvh.dose_at_volume_percent(p) == pytest.approx(10.0 + 2.0 * (11.0 - 12.0 * p / 100.0), abs=0.01)
    assert dvh.mean_gy == pytest.approx(20.0, abs=1e-6)
    assert dvh.max_gy == pytest.approx(32.0, abs=1e-9)  # the top face, exactly (surface points)
    assert dvh.min_gy == pytest.approx(8.0, abs=1e-9)
    assert dvh.volume_at_dose_cc(20.0) == pytest.approx(1.2, abs=0.002)
    assert dvh.volume_below_dose_cc(20.0) == pytest.approx(1.2, abs=0.002)
    assert dvh.cold_dose_at_volume_cc(0.6) == pytest.approx(10.0 + 2.0 * (-1.0 + 3.0), abs=0.01)


def test_dose_and_volume_lookups_are_inverse() -> None:
    dvh = structure_dvh("box", box_planes(), dose_on_grid(lambda x, y, z: 10.0 + x + 0.3 * y + z))
    for v in (0.05, 0.5, 1.2, 2.0, 2.35):
        assert dvh.volume_at_dose_cc(dvh.dose_at_volume_cc(v)) == pytest.approx(v, abs=1e-3)


def test_binned_dvhs_hold_the_whole_volume() -> None:
    dvh = structure_dvh("box", box_planes(), dose_on_grid(lambda x, y, z: 20.0 + x + z))
    edges, diff = dvh.differential(0.01)
    assert np.allclose(np.diff(edges), 0.01)
    assert diff.sum() == pytest.approx(dvh.volume_inside_cc)
    lower, cum = dvh.cumulative(0.01)
    assert cum[0] == pytest.approx(dvh.volume_inside_cc)
    assert np.all(np.diff(cum) <= 1e-12)
    doses, vols = dvh.curve(200)
    assert len(doses) == 200 and vols[0] == pytest.approx(dvh.volume_inside_cc)
    assert doses[-1] == pytest.approx(dvh.max_gy)
    assert np.all(np.diff(vols) <= 1e-12)


def test_max_finds_a_hot_voxel_centre_between_samples() -> None:
    """A single hot voxel inside the structure: the interpolated maximum is at its centre,
    which no lattice sample hits; Max must still be that voxel's dose exactly."""

    def spike(x, y, z):
        return np.where((np.abs(x - 2.0) < 0.1) & (np.abs(y) < 0.1) & (np.abs(z - 4.0) < 0.1), 80.0, 20.0)

    dvh = structure_dvh("box", box_planes(), dose_on_grid(spike, spacing=2.0))
    assert dvh.max_gy == pytest.approx(80.0)
    assert dvh.doses_gy[0] < 80.0  # the samples alone miss it
    assert dvh.min_gy == pytest.approx(20.0)


def test_non_axial_grid_gives_the_same_dvh() -> None:
    """A grid stored with y flipped (direction cosines) takes the generic interpolation path;
    the same physical dose must give the same DVH as the separable axial path."""

    def fn(x, y, z):
        return 30.0 + 0.7 * x - 0.4 * y + 0.9 * z

    axial = dose_on_grid(fn, spacing=2.0)
    g = axial.grid
    ny = g.size[1]
    flipped = Grid(
        (g.origin_mm[0], g.origin_mm[1] + (ny - 1) * g.spacing_mm[1], g.origin_mm[2]),
        g.spacing_mm,
        g.size,
        (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
    )
    other = DoseVolume(axial.dose_gy[:, ::-1, :].copy(), flipped)
    assert not other.is_axial
    a = structure_dvh("box", box_planes(), axial)
    b = structure_dvh("box", box_planes(), other)
    assert b.mean_gy == pytest.approx(a.mean_gy, abs=1e-9)
    for p in (98.0, 50.0, 2.0):
        assert b.dose_at_volume_percent(p) == pytest.approx(a.dose_at_volume_percent(p), abs=1e-9)
    assert b.max_gy == pytest.approx(a.max_gy, abs=1e-9)


def test_dose_grid_objects_are_accepted() -> None:
    dv = dose_on_grid(lambda x, y, z: 5.0 + 0 * x)
    dg = DoseGrid.from_array(dv.dose_gy, dv.grid)
    assert structure_dvh("box", box_planes(), dg).mean_gy == pytest.approx(5.0)


# ---------------------------------------------------------------- partial coverage


def test_structure_partly_outside_the_dose_grid() -> None:
    """The grid's voxels cover x up to 20 + 1 = 21 mm (centres to 20, half a 2 mm voxel more).
    A box from x = 11 to 31 has exactly half of its volume outside; the dose there is unknown."""
    dose = dose_on_grid(lambda x, y, z: 10.0 + 0 * x, lo=(-20.0, -20.0, -10.0), hi=(20.0, 20.0, 20.0))
    planes = box_planes(x0=11.0, x1=31.0)
    dvh = structure_dvh("half", planes, dose)
    assert dvh.volume_cc == pytest.approx(2.4)
    assert dvh.volume_outside_cc == pytest.approx(1.2, rel=0.02)
    assert dvh.volume_inside_cc == pytest.approx(1.2, rel=0.02)
    assert dvh.warnings and "outside the dose grid" in dvh.warnings[0]
    assert dvh.dose_at_volume_percent(95) == pytest.approx(10.0)


def test_structure_entirely_outside_the_dose_grid_is_an_error() -> None:
    dose = dose_on_grid(lambda x, y, z: 10.0 + 0 * x, lo=(-20.0, -20.0, -10.0), hi=(20.0, 20.0, 20.0))
    with pytest.raises(InputError, match="entirely outside the dose grid"):
        structure_dvh("far", box_planes(x0=100.0, x1=120.0), dose)


# ---------------------------------------------------------------- bad contours and ROIs


@pytest.mark.parametrize(
    "poly, message",
    [
        (np.array([[0.0, 0.0], [1.0, 1.0]]), "at least 3"),
        (np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]), "zero area"),
        (np.array([[0.0, 0.0], [1.0, 0.0], [np.nan, 1.0]]), "non-finite"),
    ],
)
def test_degenerate_contours_are_errors(poly: np.ndarray, message: str) -> None:
    planes = {0.0: [square(0, 0, 5, 5)], 2.0: [poly]}
    with pytest.raises(GeometryError, match=message):
        structure_dvh("bad", planes, dose_on_grid(lambda x, y, z: 1.0 + 0 * x))


def _roi(number: int, name: str, contours: list[Contour]) -> Roi:
    return Roi(number, name, (255, 0, 0), "ORGAN", contours)


def _closed(zs, poly) -> list[Contour]:
    return [Contour(np.column_stack([poly, np.full(len(poly), z)]), "CLOSED_PLANAR") for z in zs]


def _structure_set(rois: list[Roi], for_uid: str) -> StructureSet:
    return StructureSet(None, "1.2.3", "test", StudyInfo(frame_of_reference_uid=for_uid), None, rois)


def test_structure_set_dvhs_named_and_all() -> None:
    dose = dose_on_grid(lambda x, y, z: 10.0 + 0 * x)
    for_uid = "1.2.826.0.1.3680043.8.498.1"
    dg = DoseGrid.from_array(
        dose.dose_gy, Grid(dose.grid.origin_mm, dose.grid.spacing_mm, dose.grid.size, frame_of_reference_uid=for_uid)
    )
    point = Roi(3, "Marker", None, "MARKER", [Contour(np.array([[0.0, 0.0, 0.0]]), "POINT")])
    opened = _roi(4, "Line", [Contour(np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [5.0, 5.0, 0.0]]), "OPEN_PLANAR")])
    rois = [
        _roi(1, "PTV", _closed([0.0, 2.0, 4.0], square(-5, -5, 5, 5))),
        _roi(2, "Far", _closed([0.0, 2.0], square(500, 500, 510, 510))),
        point,
        opened,
        Roi(5, "Empty", None, "ORGAN", []),
    ]
    ss = _structure_set(rois, for_uid)
    result = structure_set_dvhs(ss, dg)
    assert [d.name for d in result.dvhs] == ["PTV"]
    skipped = dict(result.skipped)
    assert set(skipped) == {"Far", "Marker", "Line", "Empty"}
    assert "outside the dose grid" in skipped["Far"]
    assert "POINT" in skipped["Marker"]
    assert "OPEN_PLANAR" in skipped["Line"]
    assert result.dvhs[0].volume_cc == pytest.approx(0.6)
    # Named ROIs: each problem is an error.
    for name, pattern in (("Far", "outside"), ("Marker", "POINT"), ("Line", "open contour"), ("Empty", "no contour")):
        with pytest.raises(InputError, match=pattern):
            structure_set_dvhs(ss, dg, [name])
    with pytest.raises(InputError, match="no structure 'Lung'.*PTV, Far, Marker"):
        structure_set_dvhs(ss, dg, ["Lung"])
    with pytest.raises(InputError, match="unknown end cap"):
        structure_set_dvhs(ss, dg, ["PTV"], end_cap="round")


def test_frames_of_reference_must_match() -> None:
    dose = dose_on_grid(lambda x, y, z: 10.0 + 0 * x)
    dg = DoseGrid.from_array(
        dose.dose_gy, Grid(dose.grid.origin_mm, dose.grid.spacing_mm, dose.grid.size, frame_of_reference_uid="1.2.3.4")
    )
    ss = _structure_set([_roi(1, "PTV", _closed([0.0, 2.0], square(-5, -5, 5, 5)))], "1.2.3.5")
    with pytest.raises(FrameOfReferenceError, match="not in the same Frame of Reference"):
        structure_set_dvhs(ss, dg)


def test_many_structures_in_one_call_report_progress() -> None:
    dose = dose_on_grid(lambda x, y, z: 10.0 + 2.0 * z)
    seen: list[float] = []
    dvhs = compute_dvhs(
        {"box": box_planes(), "small": box_planes(x0=-2, y0=-2, x1=2, y1=2, zs=(4.0, 6.0))},
        dose,
        progress=lambda f, msg: seen.append(f),
    )
    assert [d.name for d in dvhs] == ["box", "small"]
    assert dvhs[1].volume_cc == pytest.approx(16 * 4 / 1000)
    assert dvhs[1].mean_gy == pytest.approx(20.0, abs=1e-6)
    assert seen[-1] == 1.0 and seen == sorted(seen)
