"""Plan-metric geometry of the plan check: isodose volumes and hot/cold spot positions.

The isodose volumes are checked against a closed form (a cone-shaped dose, whose isodose
surfaces are spheres) and against scipy's trilinear ``map_coordinates`` on the same refined
sub-voxel points; the hottest and coldest voxels against a plain argmax/argmin over the
masked grid (same voxel, ties broken in C order), for masks small and large, doses with
ties and a dose whose hot spot lies outside the mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from sbrtstandards.check import REFINE, _DoseGeometry
from sbrtstandards.grid import Grid


@dataclass
class Dose:
    dose_gy: np.ndarray
    grid: Grid


def cone_dose(spacing_mm: float, radius_mm: float = 30.0, peak_gy: float = 60.0) -> Dose:
    """D(r) = peak (1 - r / R): the isodose of level L is a sphere of radius R (1 - L / peak)."""
    n = int(round(2 * (radius_mm + 6) / spacing_mm)) + 1
    origin = -(n - 1) / 2 * spacing_mm
    grid = Grid((origin, origin, origin), (spacing_mm,) * 3, (n, n, n))
    zz, yy, xx = np.meshgrid(*(grid.axis_coords_mm(a) for a in (2, 1, 0)), indexing="ij")
    r = np.sqrt(xx**2 + yy**2 + zz**2)
    return Dose(np.maximum(peak_gy * (1.0 - r / radius_mm), 0.0), grid)


def reference_volumes_cc(dose: np.ndarray, region: np.ndarray, levels: list[float], voxel_cc: float) -> list[float]:
    """The refined-grid isodose volumes straight from the definition, with scipy's trilinear
    interpolation at every sub-voxel centre of the whole grid (edge values extended)."""
    offsets = (np.arange(REFINE) + 0.5) / REFINE - 0.5
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in dose.shape), indexing="ij")
    totals = np.zeros(len(levels))
    for dk in offsets:
        for dj in offsets:
            for di in offsets:
                coords = np.stack([kk + dk, jj + dj, ii + di]).reshape(3, -1)
                vals = map_coordinates(dose, coords, order=1, mode="nearest").reshape(dose.shape)
                for n, level in enumerate(levels):
                    totals[n] += np.count_nonzero(region & (vals >= level))
    return [float(t * voxel_cc / REFINE**3) for t in totals]


@pytest.mark.parametrize("spacing_mm", [1.0, 2.0])
def test_isodose_volumes_of_a_cone_dose_are_spheres(spacing_mm: float) -> None:
    dose = cone_dose(spacing_mm)
    geo = _DoseGeometry(dose, {})
    region = np.ones(dose.dose_gy.shape, dtype=bool)
    levels = [54.0, 30.0, 6.0]
    got = geo.isodose_volumes_cc(levels, region)
    exact = [4.0 / 3.0 * math.pi * (30.0 * (1.0 - lvl / 60.0)) ** 3 / 1000.0 for lvl in levels]
    # the 54 Gy sphere has a 3 mm radius: a few voxels; the others are within 1-2 %
    assert got[0] == pytest.approx(exact[0], rel=0.35)
    assert got[1] == pytest.approx(exact[1], rel=0.02)
    assert got[2] == pytest.approx(exact[2], rel=0.02)
    assert got == pytest.approx(reference_volumes_cc(dose.dose_gy, region, levels, dose.grid.voxel_volume_cc))


def test_isodose_volumes_match_scipy_in_an_irregular_region() -> None:
    """A noisy dose with plateaus exactly at the levels, a region with holes, a box that
    touches the grid border: every sub-voxel counted as scipy's trilinear dose says."""
    rng = np.random.default_rng(3)
    grid = Grid((-20.0, -14.0, -9.0), (2.0, 2.5, 3.0), (21, 13, 9))
    zz, yy, xx = np.meshgrid(*(grid.axis_coords_mm(a) for a in (2, 1, 0)), indexing="ij")
    smooth = 50.0 * np.exp(-((xx - 12.0) ** 2 + yy**2 + zz**2) / 300.0)
    for dose_gy in (smooth + rng.random(grid.shape), np.round(smooth / 5.0) * 5.0):
        region = rng.random(grid.shape) > 0.25
        geo = _DoseGeometry(Dose(dose_gy, grid), {})
        levels = [40.0, 20.0]
        assert geo.isodose_volumes_cc(levels, region) == pytest.approx(
            reference_volumes_cc(dose_gy, region, levels, grid.voxel_volume_cc), abs=1e-12
        )


def test_isodose_volumes_without_any_dose_above_the_levels() -> None:
    dose = cone_dose(2.0, peak_gy=10.0)
    geo = _DoseGeometry(dose, {})
    assert geo.isodose_volumes_cc([60.0, 30.0], np.ones(dose.dose_gy.shape, dtype=bool)) == [0.0, 0.0]


def _expected(dose: np.ndarray, where: np.ndarray, hot: bool) -> tuple[int, int, int]:
    vals = np.where(where, dose, -np.inf if hot else np.inf)
    flat = int(np.argmax(vals) if hot else np.argmin(vals))
    return tuple(int(v) for v in np.unravel_index(flat, dose.shape))  # type: ignore[return-value]


def test_hottest_and_coldest_voxels_are_the_masked_argmax_and_argmin() -> None:
    rng = np.random.default_rng(11)
    grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 2.0), (24, 20, 12))
    zz, yy, xx = np.meshgrid(*(grid.axis_coords_mm(a) for a in (2, 1, 0)), indexing="ij")
    peaked = np.round(60.0 * np.exp(-((xx - 9.0) ** 2 + (yy - 8.0) ** 2 + (zz - 10.0) ** 2) / 8.0))  # equal doses
    assert 0 < np.count_nonzero(peaked > 12.0) < peaked.size // 16  # the hot voxels are a short list
    for trial in range(40):
        # odd trials: the peaked dose; even ones: many ties and no short list of hot voxels
        dose_gy = peaked.copy() if trial % 2 else rng.integers(0, 12, size=grid.shape).astype(float)
        if trial % 4 == 0:
            dose_gy[5, 6, 7] = 50.0  # a hot spot, outside some masks
        geo = _DoseGeometry(Dose(dose_gy, grid), {})
        density = [0.002, 0.05, 0.3, 0.9][trial % 4]
        where = rng.random(grid.shape) < density
        if trial % 8 == 0:
            where[5, 6, 7] = False
        if not where.any():
            assert geo.hottest(where) == (None, None) and geo.coldest(where) is None
            continue
        value, at = geo.hottest(where)
        kji = _expected(dose_gy, where, hot=True)
        assert value == dose_gy[kji]
        assert at == pytest.approx(list(grid.index_to_lps(np.array(kji[::-1], dtype=float))))
        kji = _expected(dose_gy, where, hot=False)
        assert geo.coldest(where) == pytest.approx(list(grid.index_to_lps(np.array(kji[::-1], dtype=float))))


def test_hottest_voxel_when_the_mask_holds_no_hot_voxel() -> None:
    """Only cold voxels in the mask: the hot short list has none, the whole grid is searched."""
    grid = Grid((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (10, 10, 10))
    dose_gy = np.full(grid.shape, 1.0)
    dose_gy[:, :, :3] = 100.0
    dose_gy[4, 4, 8] = 3.0
    where = np.zeros(grid.shape, dtype=bool)
    where[:, :, 6:] = True
    value, at = _DoseGeometry(Dose(dose_gy, grid), {}).hottest(where)
    assert value == 3.0 and at == [16.0, 8.0, 8.0]
