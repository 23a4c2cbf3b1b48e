"""build_oars on small analytic geometry: which rule runs, what it is built from, bad input.

A box-shaped "patient" on a 2 mm grid: elliptic body, two ellipsoid lungs, a vertebral body
and a sternum, a spherical tumour; every structure is given, so no CT is needed (hu=None)
and each test checks one behaviour with answers known by construction.
"""

from __future__ import annotations

import numpy as np
import pytest

from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.oars.build import D2CM_NAME, OarOptions, Structure, build_oars

GRID = Grid((-150.0, -100.0, -60.0), (2.0, 2.0, 3.0), (151, 101, 41))
X, Y, Z = np.meshgrid(*(GRID.axis_coords_mm(a) for a in (0, 1, 2)), indexing="xy")
# meshgrid "xy" gives (nj, ni, nk); move to [k, j, i]
X, Y, Z = (np.moveaxis(a, 2, 0) for a in (X, Y, Z))


def ellipsoid(c: tuple[float, float, float], r: tuple[float, float, float]) -> np.ndarray:
    return ((X - c[0]) / r[0]) ** 2 + ((Y - c[1]) / r[1]) ** 2 + ((Z - c[2]) / r[2]) ** 2 <= 1.0


def sphere(c: tuple[float, float, float], r: float) -> np.ndarray:
    return (X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2 <= r * r


BODY = ((X / 140.0) ** 2 + (Y / 90.0) ** 2 <= 1.0)
LUNG_L = ellipsoid((60.0, 0.0, 0.0), (45.0, 55.0, 50.0))
LUNG_R = ellipsoid((-60.0, 0.0, 0.0), (45.0, 55.0, 50.0))
VB = ellipsoid((0.0, 50.0, 0.0), (15.0, 12.0, 200.0))
STERNUM = ellipsoid((0.0, -75.0, 0.0), (12.0, 5.0, 200.0))


def thorax(**extra: np.ndarray) -> dict[str, Structure]:
    out = {
        "body": Structure(["Body"], BODY),
        "lung_left": Structure(["Lung_L"], LUNG_L),
        "lung_right": Structure(["Lung_R"], LUNG_R),
        "vertebra": Structure(["VB"], VB),
        "sternum": Structure(["Sternum"], STERNUM),
    }
    for role, mask in extra.items():
        out[role] = Structure([role], mask)
    return out


@pytest.mark.parametrize(("x", "side"), [(75.0, "left"), (-75.0, "right")])
def test_side_from_the_tumour_centroid(x: float, side: str) -> None:
    gtv = sphere((x, 0.0, 0.0), 8.0)
    result = build_oars(None, GRID, thorax(GTV=gtv), "GTV", gtv)
    assert result.side == side
    assert "auto" in result.side_basis
    cw = next(b for b in result.built if b.role == "chest_wall")
    assert cw.name == ("Chestwall_L" if side == "left" else "Chestwall_R")
    xs = GRID.axis_coords_mm(0)[np.nonzero(cw.mask)[2]]
    assert (xs > 0).all() if side == "left" else (xs < 0).all()


def test_contract_json_keys_and_sources() -> None:
    gtv = sphere((75.0, 0.0, 0.0), 8.0)
    ptv = sphere((75.0, 0.0, 0.0), 13.0)
    j = build_oars(None, GRID, thorax(GTV=gtv, PTV=ptv), "PTV", ptv).to_json()
    assert {"side", "location", "fractionation_options", "built", "warnings"} <= set(j)
    assert {"class", "distance_to_pbt_mm", "touches"} <= set(j["location"])
    for b in j["built"]:
        assert {"name", "role", "volume_cc", "rule", "source"} <= set(b)
        assert b["volume_cc"] > 0 and b["rule"] and b["source"]
    roles = {b["role"] for b in j["built"]}
    assert {"chest_wall", "lungs", "lungs_minus_target", "ring_2cm"} <= roles
    assert "body" not in roles  # given, so not rebuilt
    assert {e["role"] for e in j["existing"]} >= {"body", "lung_left", "lung_right", "vertebra", "sternum"}
    # no bronchial tree given and no CT: the class cannot be decided, and the JSON says why
    assert j["location"]["class"] is None and j["fractionation_options"] == []
    assert any("bronchial tree" in w for w in j["warnings"])


def test_lungs_minus_gtv_is_exact_and_named_after_what_was_subtracted() -> None:
    gtv = sphere((75.0, 0.0, 0.0), 8.0)
    itv = sphere((75.0, 0.0, 0.0), 11.0)
    result = build_oars(None, GRID, thorax(GTV=gtv, ITV=itv), "ITV", itv)
    built = {b.role: b for b in result.built}
    assert built["lungs_minus_target"].name == "Lungs-GTV"
    assert np.array_equal(built["lungs_minus_target"].mask, (LUNG_L | LUNG_R) & ~gtv)
    assert np.array_equal(built["lungs"].mask, LUNG_L | LUNG_R)


def test_d2cm_region_is_everything_in_the_body_at_least_2_cm_from_the_ptv() -> None:
    c, r = (75.0, 0.0, 0.0), 13.0
    ptv = sphere(c, r)
    result = build_oars(None, GRID, thorax(PTV=ptv), "PTV", ptv)
    ring = next(b for b in result.built if b.role == "ring_2cm")
    assert ring.name == D2CM_NAME
    d = np.sqrt((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2)
    # The voxelised sphere's surface lies within half a voxel diagonal of radius r.
    tol = 0.5 * float(np.linalg.norm(GRID.spacing_mm))
    assert np.all(d[ring.mask] >= r + 20.0 - tol)
    assert np.all(ring.mask[BODY & (d > r + 20.0 + tol)])


def test_liver_site_builds_the_normal_liver() -> None:
    liver = ellipsoid((-50.0, 0.0, -20.0), (60.0, 50.0, 35.0))
    gtv = sphere((-50.0, 0.0, -20.0), 10.0)
    structures = {"body": Structure(["Body"], BODY), "liver": Structure(["Liver"], liver),
                  "GTV": Structure(["GTV"], gtv)}
    result = build_oars(None, GRID, structures, "GTV", gtv)
    assert result.site == "liver"
    nl = next(b for b in result.built if b.role == "normal_liver")
    assert nl.name == "Liver-GTV"
    assert np.array_equal(nl.mask, liver & ~gtv)
    assert nl.volume_cc == pytest.approx(float(np.count_nonzero(liver & ~gtv)) * GRID.voxel_volume_cc)
    j = result.to_json()
    assert j["location"]["class"] is None and "lung" in j["location"]["reason"]
    assert not any(b["role"] == "chest_wall" for b in j["built"])
    checks = {c["role"]: c["status"] for c in j["contouring_checks"]}
    assert checks["liver"] == "present" and checks["stomach"] == "missing"


def test_cord_prv() -> None:
    cord = ellipsoid((0.0, 75.0, 0.0), (4.0, 4.0, 200.0))
    gtv = sphere((75.0, 0.0, 0.0), 8.0)
    result = build_oars(None, GRID, thorax(GTV=gtv, spinal_cord=cord), "GTV", gtv,
                        options=OarOptions(cord_prv_mm=5.0))
    prv = next(b for b in result.built if b.role == "prv")
    assert prv.name == "SpinalCord_PRV05"
    assert np.all(prv.mask >= cord)
    # 4 mm cord radius + 5 mm: the in-plane radius of the PRV is 9 mm (voxel centres within it)
    k = GRID.shape[0] // 2
    xs = GRID.axis_coords_mm(0)[np.nonzero(prv.mask[k])[1]]
    assert xs.max() == pytest.approx(8.0) and xs.min() == pytest.approx(-8.0)


def test_no_lung_on_the_tumour_side_is_a_warning_not_a_crash() -> None:
    gtv = sphere((75.0, 0.0, 0.0), 8.0)
    structures = thorax(GTV=gtv)
    del structures["lung_left"]
    result = build_oars(None, GRID, structures, "GTV", gtv)
    assert result.side == "left"
    assert not any(b.role == "chest_wall" for b in result.built)
    text = " ".join(result.warnings)
    assert "no left lung" in text and "chest-wall rule" in text


def test_tumour_outside_the_lungs_is_reported() -> None:
    gtv = sphere((120.0, 0.0, 0.0), 6.0)  # in the chest wall, outside both lungs
    result = build_oars(None, GRID, thorax(GTV=gtv), "GTV", gtv)
    assert any("does not overlap either lung" in w for w in result.warnings)


def test_target_outside_the_ct_is_an_input_error() -> None:
    empty = np.zeros(GRID.shape, dtype=bool)
    with pytest.raises(InputError, match="outside the CT"):
        build_oars(None, GRID, thorax(), "PTV", empty)


def test_missing_body_without_ct_is_an_input_error() -> None:
    gtv = sphere((75.0, 0.0, 0.0), 8.0)
    structures = thorax(GTV=gtv)
    del structures["body"]
    with pytest.raises(InputError, match="body outline"):
        build_oars(None, GRID, structures, "GTV", gtv)


def test_existing_oars_are_used_not_rebuilt_and_names_never_collide() -> None:
    gtv = sphere((75.0, 0.0, 0.0), 8.0)
    given_cw = LUNG_L & False
    given_cw[:, 10:12, 140:142] = True
    structures = thorax(GTV=gtv, chest_wall=given_cw)
    structures["chest_wall"] = Structure(["Chestwall_L"], given_cw)
    result = build_oars(None, GRID, structures, "GTV", gtv, taken_names=["Body", "Lung_L", "Lung_R", "Lungs",
                                                                         "Chestwall_L", "GTV"])
    assert not any(b.role == "chest_wall" for b in result.built)
    assert {"role": "chest_wall", "name": "Chestwall_L"} in result.existing
    lungs = next(b for b in result.built if b.role == "lungs")
    assert lungs.name == "Lungs_auto"  # 'Lungs' is taken by a structure that did not match the role


def test_bad_options() -> None:
    gtv = sphere((75.0, 0.0, 0.0), 8.0)
    with pytest.raises(InputError, match="side"):
        build_oars(None, GRID, thorax(GTV=gtv), "GTV", gtv, options=OarOptions(side="up"))
    with pytest.raises(InputError, match="site"):
        build_oars(None, GRID, thorax(GTV=gtv), "GTV", gtv, options=OarOptions(site="brain"))
