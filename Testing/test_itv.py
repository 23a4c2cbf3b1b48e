"""ITV = union of phase GTVs, per-phase coverage, and tumour motion, on analytic moving spheres."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.itv import PhaseGtv, build_itv, motion_from_centroids, threshold_assist

GRID = Grid((-40.0, -40.0, -40.0), (1.0, 1.0, 2.0), (81, 81, 41))


def _sphere(center: tuple[float, float, float], r: float) -> np.ndarray:
    kk, jj, ii = np.indices(GRID.shape)
    p = GRID.index_to_lps(np.stack([ii, jj, kk], axis=-1))
    return ((p - np.asarray(center)) ** 2).sum(axis=-1) <= r * r


def _moving_spheres(si_amp: float = 12.0, ap_amp: float = 4.0, n: int = 10) -> list[tuple[float, float, float]]:
    t = np.arange(n) / n
    w = np.cos(np.pi * t) ** 2  # 1 at end-inhale (0%), 0 at end-exhale (50%)
    return [(0.0, ap_amp * wi - ap_amp / 2, si_amp * wi - si_amp / 2) for wi in w]


def test_itv_is_the_union_and_motion_matches_the_trajectory() -> None:
    centers = _moving_spheres()
    phases = [PhaseGtv(f"{10 * i}%", _sphere(c, 8.0)) for i, c in enumerate(centers)]
    res = build_itv(phases, GRID)
    union = np.zeros(GRID.shape, bool)
    for p in phases:
        union |= p.mask
    np.testing.assert_array_equal(res.mask, union)
    assert all(r.fraction_in_itv == 1.0 for r in res.phases)
    c = np.asarray(centers)
    assert res.motion_mm["SI"] == pytest.approx(np.ptp(c[:, 2]), abs=1.0)
    assert res.motion_mm["AP"] == pytest.approx(np.ptp(c[:, 1]), abs=1.0)
    assert res.motion_mm["LR"] == pytest.approx(0.0, abs=0.5)
    for row, cc in zip(res.phases, centers):
        np.testing.assert_allclose(row.centroid_mm, cc, atol=0.6)
        assert row.gtv_cc == pytest.approx(4 / 3 * np.pi * 8.0**3 / 1000, rel=0.05)
    assert res.warnings == []


def test_hand_drawn_itv_is_verified_on_every_phase() -> None:
    centers = _moving_spheres()
    phases = [PhaseGtv(f"{10 * i}%", _sphere(c, 8.0)) for i, c in enumerate(centers)]
    too_small = _sphere((0.0, 0.0, 0.0), 8.0)  # the mid-position sphere only
    res = build_itv(phases, GRID, itv_mask=too_small)
    end_inhale = res.phases[0]
    assert end_inhale.fraction_in_itv is not None and end_inhale.fraction_in_itv < 0.8
    assert any("0%" in w and "inside the ITV" in w for w in res.warnings)


def test_missing_and_empty_phases_are_warned_and_all_missing_is_an_error() -> None:
    s = _sphere((0, 0, 0), 6.0)
    res = build_itv([PhaseGtv("0%", s), PhaseGtv("10%", None), PhaseGtv("20%", np.zeros_like(s))], GRID)
    assert any("10%" in w and "no GTV" in w for w in res.warnings)
    assert any("20%" in w and "empty" in w for w in res.warnings)
    with pytest.raises(InputError, match="every phase"):
        build_itv([PhaseGtv("0%", None), PhaseGtv("10%", None)], GRID)
    with pytest.raises(InputError, match="at least 2 phases"):
        build_itv([PhaseGtv("0%", s)], GRID)


def test_motion_vector_is_the_largest_centroid_distance() -> None:
    m = motion_from_centroids([(0, 0, 0), (3, 4, 0), (0, 0, 12)])
    assert m == {"LR": 3.0, "AP": 4.0, "SI": 12.0, "vector": pytest.approx(13.0)}


def test_threshold_assist_finds_the_bright_tumour_on_the_mip_and_the_dark_one_on_the_minip() -> None:
    tumour = _sphere((0, 0, 0), 10.0)
    union = _sphere((0, 0, 0), 9.0)
    mip = np.where(tumour, 30, -850).astype(np.int16)
    got = threshold_assist(mip, GRID, union, mode="mip", dilate_mm=3.0)
    np.testing.assert_array_equal(got, tumour & _within(union, 3.0))
    minip = np.where(tumour, 20, 60).astype(np.int16)
    got = threshold_assist(minip, GRID, union, mode="minip", dilate_mm=3.0)
    np.testing.assert_array_equal(got, tumour & _within(union, 3.0))


def _within(mask: np.ndarray, mm: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.distance_transform_edt(~mask, sampling=GRID.spacing_mm[::-1]) <= mm
