"""Tumour location class (peripheral / central / ultra-central) and what it selects.

Known answers: cubes whose faces lie on voxel faces (so the gap between their surfaces is an
exact number of voxels), and the synthetic thorax of :mod:`sbrtstandards.phantom`, whose
truth gives the analytic distance from the ITV (union of phase spheres) to the analytic
proximal bronchial tree and the class the standard's definitions give.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sbrtstandards.grid import Grid
from sbrtstandards.oars import location
from sbrtstandards.oars.geometry import gap_mm
from sbrtstandards.oars.location import classify_location, distal_trachea, fractionation_options
from sbrtstandards.phantom import make_case

GRID = Grid((0.0, 0.0, 0.0), (1.5, 1.5, 3.0), (80, 40, 30))


def cube(i: tuple[int, int], j: tuple[int, int] = (10, 20), k: tuple[int, int] = (10, 20)) -> np.ndarray:
    m = np.zeros(GRID.shape, dtype=bool)
    m[k[0]:k[1], j[0]:j[1], i[0]:i[1]] = True
    return m


# ----------------------------------------------------------------------------- exact gaps


@pytest.mark.parametrize(("n_voxels", "expected"), [(13, "central"), (14, "peripheral"), (1, "central")])
def test_gap_along_x_is_exact_and_decides_the_class(n_voxels: int, expected: str) -> None:
    pbt = cube((10, 20))
    tumour = cube((20 + n_voxels, 30 + n_voxels))
    gap = n_voxels * 1.5  # faces on voxel faces: 19.5 mm, 21 mm, 1.5 mm
    loc = classify_location(tumour, "GTV", GRID, pbt=pbt, ptv=tumour, ptv_name="PTV", contact={"pbt": pbt})
    assert loc.distance_to_pbt_mm == pytest.approx(gap, abs=1e-9)
    assert loc.site_class == expected
    assert loc.touches == []


def test_gap_along_z_uses_the_slice_spacing() -> None:
    pbt = cube((10, 20), k=(2, 8))
    tumour = cube((10, 20), k=(15, 20))  # 7 slices of 3 mm between the faces
    assert gap_mm(tumour, pbt, GRID) == pytest.approx(21.0)
    assert gap_mm(pbt, tumour, GRID) == pytest.approx(21.0)


def test_overlap_and_adjacency_are_distance_zero() -> None:
    pbt = cube((10, 20))
    assert gap_mm(cube((15, 25)), pbt, GRID) == 0.0  # overlap
    assert gap_mm(cube((20, 30)), pbt, GRID) == 0.0  # shares a face
    corner = cube((20, 30), j=(20, 30), k=(20, 25))  # shares one corner only
    assert gap_mm(corner, pbt, GRID) == 0.0
    assert gap_mm(np.zeros(GRID.shape, bool), pbt, GRID) is None


def test_ptv_touching_trachea_or_oesophagus_is_ultracentral_whatever_the_distance() -> None:
    pbt = cube((2, 8))
    gtv = cube((40, 50))  # 48 mm from the PBT
    ptv = cube((38, 52))
    oesophagus = cube((52, 60))  # shares a face with the PTV
    loc = classify_location(gtv, "GTV", GRID, pbt=pbt, ptv=ptv, ptv_name="PTV",
                            contact={"trachea": None, "pbt": pbt, "esophagus": oesophagus})
    assert loc.site_class == "ultracentral"
    assert loc.touches == ["esophagus"]
    assert loc.distance_to_pbt_mm == pytest.approx(32 * 1.5)  # faces at i = 8 and i = 40
    assert any("trachea" in n for n in loc.notes)  # the missing trachea is reported


def test_no_bronchial_tree_means_no_class() -> None:
    gtv = cube((40, 50))
    loc = classify_location(gtv, "GTV", GRID, pbt=None, ptv=gtv, ptv_name="PTV", contact={"pbt": None})
    assert loc.site_class is None
    assert loc.distance_to_pbt_mm is None
    assert "cannot be decided" in " ".join(loc.notes)


def test_without_ptv_contact_is_tested_with_the_tumour() -> None:
    pbt = cube((10, 20))
    gtv = cube((20, 30))
    loc = classify_location(gtv, "ITV", GRID, pbt=pbt, ptv=None, ptv_name=None, contact={"pbt": pbt})
    assert loc.site_class == "ultracentral"
    assert loc.ptv == "ITV"


def test_distal_trachea_keeps_its_lowest_two_centimetres() -> None:
    trachea = cube((10, 20), k=(5, 25))  # z = 15 .. 72 mm
    distal = distal_trachea(trachea, GRID)
    ks = np.flatnonzero(distal.any(axis=(1, 2)))
    zs = GRID.axis_coords_mm(2)[ks]
    assert zs[0] == pytest.approx(15.0)
    assert zs[-1] == pytest.approx(33.0)  # 15 + 18; the next slice (36 mm) is beyond 20 mm
    assert np.all(distal <= trachea)


# ----------------------------------------------------------------------------- what the class selects

BED = {  # n d (1 + d / 10), by hand (standards facts §4)
    (54, 3): 54 * (1 + 18 / 10),
    (50, 4): 50 * (1 + 12.5 / 10),
    (60, 8): 60 * (1 + 7.5 / 10),
    (50, 5): 50 * (1 + 10 / 10),
    (48, 4): 48 * (1 + 12 / 10),
}


@pytest.mark.parametrize(
    ("site_class", "schemes"),
    [("peripheral", {(54, 3), (50, 4)}), ("central", {(60, 8), (50, 5)}), ("ultracentral", {(48, 4), (60, 8)})],
)
def test_fractionation_options_of_the_lung_standard(site_class: str, schemes: set[tuple[int, int]]) -> None:
    options = fractionation_options(site_class)
    assert {(o["dose_gy"], o["fractions"]) for o in options} == schemes
    for o in options:
        assert o["bed10_gy"] == pytest.approx(BED[(o["dose_gy"], o["fractions"])], abs=0.05)
        assert "§6.2" in o["source"]
    assert BED[(54, 3)] == pytest.approx(151.2) and BED[(48, 4)] == pytest.approx(105.6)


def test_fallback_table_agrees_with_the_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    from_catalogue = {c: fractionation_options(c) for c in location.CLASSES}
    limits = location.ultracentral_limits()

    def broken(notes: list[str] | None) -> None:
        if notes is not None:
            notes.append("catalogue unavailable")
        return None

    monkeypatch.setattr(location, "_protocol", broken)
    notes: list[str] = []
    for c in location.CLASSES:
        fallback = fractionation_options(c, notes)
        assert [(o["dose_gy"], o["fractions"], o["bed10_gy"]) for o in fallback] == [
            (o["dose_gy"], o["fractions"], o["bed10_gy"]) for o in from_catalogue[c]]
    assert notes
    fallback_limits = location.ultracentral_limits()
    key = ("structure", "metric", "comparator", "limit", "per_fraction")
    assert sorted(tuple(x[k] for k in key) for x in fallback_limits) == sorted(tuple(x[k] for k in key)
                                                                                for x in limits)


def test_ultracentral_limits_of_section_6_2_3() -> None:
    limits = {(x["structure"], x["metric"], x["comparator"], x["limit"], x["per_fraction"])
              for x in location.ultracentral_limits()}
    assert ("trachea", "Max[Gy]", "<=", 20, False) in limits
    assert ("esophagus", "Max[Gy]", "<=", 20, False) in limits
    assert ("trachea", "Max[Gy]", "<=", 4, True) in limits
    assert ("great_vessels", "Max[Gy]", "<", 40, False) in limits
    assert ("great_vessels", "Max[Gy]", "<=", 8, True) in limits
    assert ("lungs_minus_target", "V20Gy[%]", "<", 5, False) in limits
    assert fractionation_options(None) == []


# ----------------------------------------------------------------------------- the synthetic thorax


@pytest.mark.parametrize(
    ("where", "side"),
    [("peripheral", "left"), ("peripheral", "right"), ("central", "left"), ("central", "right"),
     ("ultracentral", "left"), ("ultracentral", "right")],
)
def test_class_on_the_synthetic_thorax(where: str, side: str) -> None:
    case = make_case("lung", phases=3, location=where, side=side)
    s, truth = case.structures, case.truth["tumour"]
    assert truth["location_class"] == where  # the phantom places the tumour as asked
    contact = {"trachea": s["Trachea"], "pbt": s["AirWay_Prox"], "esophagus": s["Esophagus"]}
    loc = classify_location(s["ITV"], "ITV", case.grid, pbt=s["AirWay_Prox"], ptv=s["PTV"], ptv_name="PTV",
                            contact=contact)
    assert loc.site_class == where
    if where == "ultracentral":
        assert "pbt" in loc.touches
    else:
        # surfaces sampled half-way between voxel centres: within a voxel of the analytic gap
        assert loc.distance_to_pbt_mm == pytest.approx(truth["distance_to_pbt_mm"], abs=1.0)
        assert loc.touches == []
    assert math.isfinite(loc.distance_to_pbt_mm or 0.0)
