"""Contour agreement (``sbrt compare``) against analytic pairs of shapes.

Known answers, computed here independently of the code:

* two equal spheres of radius r whose centres are c apart overlap in a lens of volume
  pi (4r + c)(2r - c)^2 / 12, so Dice = lens / sphere volume;
* for such a pair the distance from a point of one surface to the other surface is
  | sqrt(r^2 + c^2 - 2 r c mu) - r | with mu = cos(angle to the offset) uniform over the surface
  (Archimedes): HD = c, and MSD, HD95 and the surface Dice are that distribution's mean,
  95th percentile and share below the tolerance (numerical quadrature here);
* concentric spheres r and r + d: every distance is d;
* cubes shifted by s along an axis: Dice = (a - s) / a, HD = s; a ring (hole) against the
  filled disc: Dice = 2 V_ring / (V_ring + V_disc).
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from sbrtstandards.cli.main import SUBCOMMANDS, main
from sbrtstandards.compare import compare_planes, match_pairs
from sbrtstandards.dicom.common import CT_IMAGE_STORAGE, SeriesReference, StudyInfo, new_uid
from sbrtstandards.dicom.rtstruct import Contour, Roi, write_rtstruct
from sbrtstandards.errors import InputError


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The subcommand works whether or not cli/main.py lists it yet."""
    monkeypatch.setitem(SUBCOMMANDS, "compare", ("sbrtstandards.cli.compare_cmd", "compare"))


# ----------------------------------------------------------------------------- analytic shapes


def circle(cx: float, cy: float, r: float, step_mm: float = 0.25) -> np.ndarray:
    n = max(24, int(2 * math.pi * r / step_mm))
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t)])


def sphere(centre: tuple[float, float, float], r: float, dz: float, z0: float = 0.0) -> dict[float, list[np.ndarray]]:
    """A sphere drawn as a TPS would: one circle per plane z0 + k dz that cuts it."""
    planes = {}
    for k in range(math.ceil((centre[2] - r - z0) / dz), math.floor((centre[2] + r - z0) / dz) + 1):
        z = z0 + k * dz
        rr2 = r * r - (z - centre[2]) ** 2
        if rr2 > 1e-6:
            planes[round(z, 4)] = [circle(centre[0], centre[1], math.sqrt(rr2))]
    return planes


def box(x0: float, y0: float, z0: float, a: float, dz: float) -> dict[float, list[np.ndarray]]:
    """A cube of side a from (x0, y0, z0): squares on planes z0 + dz/2 + k dz (slabs fill it exactly)."""
    square = np.array([[x0, y0], [x0 + a, y0], [x0 + a, y0 + a], [x0, y0 + a]])
    n = int(round(a / dz))
    return {round(z0 + dz / 2 + k * dz, 4): [square.copy()] for k in range(n)}


def lens_dice(r: float, c: float) -> float:
    lens = math.pi * (4 * r + c) * (2 * r - c) ** 2 / 12.0
    return lens / (4.0 / 3.0 * math.pi * r**3)


def offset_sphere_distances(r: float, c: float, n: int = 2_000_001) -> np.ndarray:
    """Distances from one sphere's surface to the other's, sampled uniformly in area (mu uniform)."""
    mu = np.linspace(-1.0, 1.0, n)
    return np.abs(np.sqrt(r * r + c * c - 2 * r * c * mu) - r)


# ----------------------------------------------------------------------------- overlap


@pytest.mark.parametrize(
    ("offset", "dz", "z0"),
    [((4.0, 0.0, 0.0), 2.0, 0.0), ((0.0, 4.0, 0.0), 2.0, 0.7), ((0.0, 0.0, 4.0), 2.0, 0.0),
     ((0.0, 0.0, 4.0), 1.0, 0.3), ((2.31, 2.31, 2.31), 1.0, 0.0)],
)
def test_two_spheres_4mm_apart_give_the_lens_dice(offset: tuple[float, float, float], dz: float, z0: float) -> None:
    r = 10.0
    centre = (1.3, -2.2, 0.4)
    moved = tuple(c + o for c, o in zip(centre, offset))
    a = compare_planes(sphere(centre, r, dz, z0), sphere(moved, r, dz, z0))  # type: ignore[arg-type]
    c = float(np.linalg.norm(offset))
    expected = lens_dice(r, c)
    assert a.dice == pytest.approx(expected, abs=0.01)
    assert a.jaccard == pytest.approx(expected / (2 - expected), abs=0.01)
    assert a.volume_ratio == pytest.approx(1.0, abs=0.01)
    assert a.centroid_shift_mm == pytest.approx(c, abs=0.1)
    sphere_cc = 4.0 / 3.0 * math.pi * r**3 / 1000.0
    assert a.reference_volume_cc == pytest.approx(sphere_cc, rel=0.02)


def test_shifted_cubes() -> None:
    a, s = 20.0, 3.0
    ref = box(0.0, 0.0, 0.0, a, 2.0)
    res = compare_planes(ref, box(s, 0.0, 0.0, a, 2.0))
    assert res.dice == pytest.approx((a - s) / a, abs=0.004)
    assert res.jaccard == pytest.approx((a - s) / (a + s), abs=0.004)
    assert res.hd_mm == pytest.approx(s, abs=0.05)
    assert res.centroid_shift_mm == pytest.approx(s, abs=0.05)
    assert res.reference_volume_cc == pytest.approx(a**3 / 1000.0, rel=0.005)
    down = compare_planes(ref, box(0.0, 0.0, -4.0, a, 2.0))  # two planes lower
    assert down.dice == pytest.approx((a - 4.0) / a, abs=0.004)
    assert down.hd_mm == pytest.approx(4.0, abs=0.05)


def test_a_ring_with_its_hole_against_the_filled_disc() -> None:
    outer, inner, dz = 12.0, 6.0, 2.0
    ring = {z: [circle(0, 0, outer), circle(0, 0, inner)] for z in np.arange(-9.0, 10.0, dz)}
    disc = {z: [circle(0, 0, outer)] for z in np.arange(-9.0, 10.0, dz)}
    res = compare_planes(ring, disc)
    v_ring, v_disc = outer**2 - inner**2, outer**2
    assert res.dice == pytest.approx(2 * v_ring / (v_ring + v_disc), abs=0.005)
    assert res.volume_ratio == pytest.approx(v_disc / v_ring, rel=0.01)
    assert res.hd_mm == pytest.approx(inner, abs=0.1)  # the hole's axis is 6 mm from the disc's wall


def test_identical_structures_agree_perfectly() -> None:
    s = sphere((0, 0, 0), 8.0, 2.0)
    res = compare_planes(s, s)
    assert res.dice == 1.0 and res.jaccard == 1.0
    assert res.hd_mm == 0.0 and res.msd_mm == 0.0 and res.surface_dice == 1.0
    assert res.volume_ratio == 1.0 and res.centroid_shift_mm == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------- surfaces


@pytest.mark.parametrize("axis", [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)])
def test_offset_spheres_surface_distances_match_the_analytic_distribution(axis: tuple[float, float, float]) -> None:
    r, c, tol = 10.0, 4.0, 2.0
    res = compare_planes(sphere((0, 0, 0), r, 1.0), sphere(tuple(np.multiply(axis, c)), r, 1.0),  # type: ignore[arg-type]
                         tolerance_mm=tol)
    d = offset_sphere_distances(r, c)
    assert res.hd_mm == pytest.approx(d.max(), abs=0.1)  # = c
    # Offset along z, the flat half-slice end caps (about 5% of the area) lie c from the other cap,
    # so the contoured spheres' 95th percentile is c rather than the true spheres' 3.8 mm.
    hd95 = float(np.quantile(d, 0.95))
    assert hd95 - 0.05 <= res.hd95_mm <= (hd95 + 0.05 if axis[2] == 0 else c + 0.05)
    assert res.msd_mm == pytest.approx(float(d.mean()), abs=0.1)
    assert res.surface_dice == pytest.approx(float(np.mean(d <= tol)), abs=0.02)
    assert res.reference_surface_mm2 == pytest.approx(4 * math.pi * r * r, rel=0.03)


@pytest.mark.parametrize("dz", [1.0, 2.0])
def test_concentric_spheres_are_d_apart_everywhere(dz: float) -> None:
    r, d = 10.0, 2.0
    inner, outer = sphere((0, 0, 0), r, dz), sphere((0, 0, 0), r + d, dz)
    res = compare_planes(inner, outer, tolerance_mm=2.5)
    assert res.hd_mm == pytest.approx(d, abs=0.15)
    assert res.hd95_mm == pytest.approx(d, abs=0.1)
    assert res.msd_mm == pytest.approx(d, abs=0.1)
    assert res.surface_dice == pytest.approx(1.0, abs=0.01)
    if dz == 1.0:  # on 2 mm planes the flat end caps of r and r + d come closer than d near their rims
        assert compare_planes(inner, outer, tolerance_mm=1.5).surface_dice == pytest.approx(0.0, abs=0.02)
    p5, p50, p95 = res.percentiles_test_to_ref_mm  # the outer surface lies d from the inner one
    assert p50 == pytest.approx(d, abs=0.05)


def test_far_apart_spheres_distances_and_speed() -> None:
    r, c = 10.0, 100.0
    t0 = time.perf_counter()
    res = compare_planes(sphere((0, 0, 0), r, 2.0), sphere((c, 0, 0), r, 2.0))
    assert time.perf_counter() - t0 < 10.0  # far elements must not make the nearest-neighbour search crawl
    assert res.dice == 0.0
    assert res.hd_mm == pytest.approx(c, abs=0.1)
    # mean over the surface of |p - c_B| - r, Archimedes: ((r + c)^3 - (c - r)^3) / (6 r c) - r
    assert res.msd_mm == pytest.approx(((r + c) ** 3 - (c - r) ** 3) / (6 * r * c) - r, abs=0.1)


def test_gaps_are_not_bridged() -> None:
    """Two slabs of planes 20 mm apart are two pieces, as in the project's slab convention."""
    square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    planes = {z: [square] for z in (1.0, 3.0, 5.0, 25.0, 27.0, 29.0)}  # two 6 mm pieces
    res = compare_planes(planes, planes)
    assert res.reference_volume_cc == pytest.approx(2 * 10 * 10 * 6 / 1000.0, rel=0.01)


def test_an_empty_test_structure_gives_zero_overlap_and_reasons() -> None:
    res = compare_planes(sphere((0, 0, 0), 5.0, 1.0), {})
    assert res.dice == 0.0 and res.volume_ratio == 0.0
    assert res.hd_mm is None and "hd_mm" in res.reasons
    json.dumps(res.to_json(), allow_nan=False)


def test_bad_tolerance_and_polygons_are_input_errors() -> None:
    s = sphere((0, 0, 0), 5.0, 1.0)
    with pytest.raises(InputError, match="tolerance"):
        compare_planes(s, s, tolerance_mm=-1.0)
    with pytest.raises(InputError, match="finite"):
        compare_planes(s, {0.0: [np.array([[0.0, 0.0], [1.0, np.nan], [0.0, 1.0]])]})


@pytest.mark.slow
def test_a_two_litre_lung_compares_in_seconds() -> None:
    def ellipsoid(c: tuple[float, float, float], ax: tuple[float, float, float], dz: float) -> dict:
        planes = {}
        for k in range(-60, 61):
            z = k * dz
            f = 1 - ((z - c[2]) / ax[2]) ** 2
            if f > 1e-6:
                t = np.linspace(0, 2 * math.pi, int(2 * math.pi * ax[1]), endpoint=False)
                planes[z] = [np.column_stack([c[0] + ax[0] * math.sqrt(f) * np.cos(t),
                                              c[1] + ax[1] * math.sqrt(f) * np.sin(t)])]
        return planes

    ref = ellipsoid((0, 0, 0), (60, 80, 100), 3.0)  # 2.01 L
    t0 = time.perf_counter()
    res = compare_planes(ref, ellipsoid((2, 1, 3), (62, 78, 101), 3.0))
    elapsed = time.perf_counter() - t0
    assert res.reference_volume_cc == pytest.approx(4 / 3 * math.pi * 60 * 80 * 100 / 1000, rel=0.01)
    assert res.dice > 0.95
    assert elapsed < 12.0, f"{elapsed:.1f} s"


# ----------------------------------------------------------------------------- names


def test_structures_pair_by_name_normalised_name_and_role() -> None:
    pairs, ref_left, test_left = match_pairs(
        ["GTV", "SpinalCord", "Lung_L", "PTV", "Heart"], ["gtv", "Cord", "LUNG L", "PTV", "Couch"]
    )
    assert ("PTV", "PTV", "name") in pairs
    assert ("GTV", "gtv", "normalised name") in pairs
    assert ("Lung_L", "LUNG L", "normalised name") in pairs
    assert ("SpinalCord", "Cord", "role spinal_cord") in pairs
    assert ref_left == ["Heart"] and test_left == ["Couch"]
    pairs, _, _ = match_pairs(["SpinalCord"], ["脊髓"])
    assert pairs == [("SpinalCord", "脊髓", "role spinal_cord")]


# ----------------------------------------------------------------------------- the command


def _write_set(path, rois: dict[str, dict[float, list[np.ndarray]]], study: StudyInfo):  # type: ignore[no-untyped-def]
    zs = sorted({z for planes in rois.values() for z in planes})
    ref = SeriesReference(study, new_uid(), CT_IMAGE_STORAGE, tuple(new_uid() for _ in zs), tuple(zs))
    out = []
    for n, (name, planes) in enumerate(rois.items(), start=1):
        contours = [Contour(np.column_stack([p, np.full(len(p), z)]), "CLOSED_PLANAR")
                    for z, polys in planes.items() for p in polys]
        out.append(Roi(n, name, None, "", contours))
    return write_rtstruct(path, out, reference=ref, label="TEST")


def test_cli_json_follows_the_contract(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    study = StudyInfo()
    ref = _write_set(tmp_path / "RS_ref.dcm", {"GTV": sphere((0, 0, 0), 10, 2.0),
                                              "SpinalCord": box(-5, 40, -20, 10, 2.0)}, study)
    test = _write_set(tmp_path / "RS_test.dcm", {"GTV": sphere((4, 0, 0), 10, 2.0),
                                                "Cord": box(-5, 40, -20, 10, 2.0)}, study)
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--reference", str(ref), "--test", str(test), "--json", "-"])
    assert exit_info.value.code == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {s["name"]: s for s in data["structures"]}
    assert set(by_name) == {"GTV", "SpinalCord"}
    for key in ("dice", "jaccard", "hd95_mm", "hd_mm", "msd_mm", "surface_dice", "volume_ratio",
                "centroid_shift_mm"):
        assert key in by_name["GTV"]
    assert by_name["GTV"]["dice"] == pytest.approx(lens_dice(10, 4), abs=0.01)
    assert by_name["SpinalCord"]["test_name"] == "Cord" and by_name["SpinalCord"]["dice"] == 1.0
    with pytest.raises(SystemExit):
        main(["compare", "--reference", str(ref), "--test", str(test), "--structure", "cord", "--json",
              str(tmp_path / "one.json"), "--quiet"])
    one = json.loads((tmp_path / "one.json").read_text())
    assert [s["name"] for s in one["structures"]] == ["SpinalCord"]


@pytest.mark.parametrize("case", ["missing_file", "unknown_structure", "other_frame"])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, case: str) -> None:  # type: ignore[no-untyped-def]
    ref = _write_set(tmp_path / "RS_ref.dcm", {"GTV": sphere((0, 0, 0), 5, 2.0)}, StudyInfo())
    test = tmp_path / "nope.dcm"
    args = []
    if case == "unknown_structure":
        test = ref
        args = ["--structure", "Liver"]
    elif case == "other_frame":
        test = _write_set(tmp_path / "RS_other.dcm", {"GTV": sphere((0, 0, 0), 5, 2.0)}, StudyInfo())
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--reference", str(ref), "--test", str(test), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    needle = {"missing_file": "nope.dcm", "unknown_structure": "Liver", "other_frame": "Frame of Reference"}[case]
    assert needle in err[0]
