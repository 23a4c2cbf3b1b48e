"""The synthetic 4D-CT cases (``sbrt phantom``): geometry truth, anatomy, CT numbers, dose, files.

Known answers come from outside the code under test wherever possible: closed forms (sphere
volume, the union of collinear balls), seeded Monte Carlo, scipy's Euclidean distance
transform for margins and distances, trilinear sampling of the dose, and the project's
own DICOM readers for the files.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.phantom import anatomy as A
from sbrtstandards.phantom import make_case, write_case
from sbrtstandards.phantom.balls import (
    collinear_union_volume_mm3,
    disc_union_area,
    lens_volume_mm3,
    union_of_balls_volume_mm3,
)
from sbrtstandards.phantom.motion import Trajectory, phase_percents, signal


@pytest.fixture(scope="module")
def lung():
    return make_case("lung", phases=4)


@pytest.fixture(scope="module")
def liver():
    return make_case("liver", phases=4)


def _mc_union_cc(centres: np.ndarray, radius: float, n: int = 2_000_000, seed: int = 7) -> tuple[float, float]:
    """Monte Carlo volume (cc) of a union of balls and its standard error."""
    rng = np.random.default_rng(seed)
    lo = centres.min(axis=0) - radius
    hi = centres.max(axis=0) + radius
    pts = lo + rng.random((n, 3)) * (hi - lo)
    inside = np.zeros(n, dtype=bool)
    for c in centres:
        inside |= ((pts - c) ** 2).sum(axis=1) <= radius**2
    box = float(np.prod(hi - lo)) / 1000.0
    p = inside.mean()
    return box * p, box * math.sqrt(p * (1 - p) / n)


# ----------------------------------------------------------------------------- exact volumes


def test_disc_union_area_known_cases() -> None:
    r = 2.0
    assert disc_union_area(np.array([0.0]), np.array([0.0]), np.array([r])) == pytest.approx(math.pi * r * r)
    # two discs at distance d: 2 pi r^2 - lens, lens = 2 r^2 acos(d / 2r) - d/2 sqrt(4 r^2 - d^2)
    d = 1.5
    lens = 2 * r * r * math.acos(d / (2 * r)) - d / 2 * math.sqrt(4 * r * r - d * d)
    got = disc_union_area(np.array([0.0, d]), np.array([0.0, 0.0]), np.array([r, r]))
    assert got == pytest.approx(2 * math.pi * r * r - lens, rel=1e-12)
    # identical and nested discs count once; a disc of radius 0 is absent
    assert disc_union_area(np.array([1.0, 1.0, 1.2]), np.array([0.0, 0.0, 0.1]), np.array([r, r, 0.5])) == (
        pytest.approx(math.pi * r * r)
    )
    assert disc_union_area(np.array([0.0, 9.0]), np.array([0.0, 0.0]), np.array([r, 0.0])) == pytest.approx(
        math.pi * r * r
    )


def test_union_of_balls_matches_the_collinear_closed_form() -> None:
    # a breathing path without hysteresis is a straight line: union = ball + sum(ball - lens)
    traj = Trajectory(15.0, ap_ratio=0.3, lr_ratio=0.05, ap_lag_percent=0.0)
    centres = np.array([traj.displacement(p) for p in phase_percents(10)])
    axis = centres[0] / np.linalg.norm(centres[0])
    for radius in (12.0, 17.0):
        exact = collinear_union_volume_mm3(centres @ axis, radius)
        assert union_of_balls_volume_mm3(centres, radius) == pytest.approx(exact, rel=1e-6)
    assert lens_volume_mm3(5.0, 0.0) == pytest.approx(4 / 3 * math.pi * 125)
    assert lens_volume_mm3(5.0, 10.0) == 0.0


def test_union_of_balls_matches_monte_carlo_on_a_looped_path() -> None:
    traj = Trajectory(18.0, ap_ratio=0.4, lr_ratio=0.1, ap_lag_percent=15.0)
    centres = np.array([traj.displacement(p) for p in phase_percents(8)])
    mc, se = _mc_union_cc(centres, 11.0)
    assert union_of_balls_volume_mm3(centres, 11.0) / 1000.0 == pytest.approx(mc, abs=4 * se)


# ----------------------------------------------------------------------------- breathing


def test_breathing_signal_and_trajectory() -> None:
    assert signal(0.0) == 1.0 and signal(50.0) == pytest.approx(0.0, abs=1e-15)
    traj = Trajectory(12.0)
    d = np.array([traj.displacement(p) for p in phase_percents(10)])
    assert d[:, 2].min() == pytest.approx(-12.0) and d[:, 2].max() == pytest.approx(0.0, abs=1e-12)
    assert np.argmin(d[:, 2]) == 0  # end-inhale: most inferior
    # the time average of cos^4 is 3/8, and so is the mean over >= 3 equally spaced phases
    for n in (3, 4, 10):
        mean = np.mean([traj.displacement(p) for p in phase_percents(n)], axis=0)
        assert mean == pytest.approx(traj.mid_position(), abs=1e-9)


# ----------------------------------------------------------------------------- the case in memory


def test_same_seed_same_case_other_seed_other_noise() -> None:
    a = make_case("lung", phases=2, seed=3)
    b = make_case("lung", phases=2, seed=3)
    c = make_case("lung", phases=2, seed=4)
    assert np.array_equal(a.phase_hu[1], b.phase_hu[1])
    assert np.array_equal(a.dose_gy, b.dose_gy)
    assert all(np.array_equal(m, n) for m, n in zip(a.gtv_masks, c.gtv_masks))
    diff = a.phase_hu[1].astype(np.int32) - c.phase_hu[1].astype(np.int32)
    assert np.count_nonzero(diff) > 0.9 * diff.size  # new noise almost everywhere...
    assert abs(float(diff.mean())) < 0.2 and 14 < float(diff.std()) < 20  # ...of sd 12 HU (diff: 12 sqrt 2)
    assert a.truth["itv_cc"] == c.truth["itv_cc"]


def test_phase_gtvs_match_the_true_spheres(lung) -> None:
    r = lung.truth["tumour"]["radius_mm"]
    ball_cc = 4 / 3 * math.pi * r**3 / 1000
    for ph, mask in zip(lung.truth["phases"], lung.gtv_masks):
        voxels = np.count_nonzero(mask) * lung.grid.voxel_volume_cc
        assert voxels == pytest.approx(ball_cc, rel=0.02)
        assert ph["gtv_cc"] == pytest.approx(ball_cc)
        kk, jj, ii = np.nonzero(mask)
        centroid = lung.grid.index_to_lps(np.array([ii.mean(), jj.mean(), kk.mean()]))
        assert np.linalg.norm(centroid - np.array(ph["centroid_mm"])) < 0.25


def test_motion_equals_the_requested_amplitude(lung) -> None:
    for amp, case in ((15.0, lung), (22.0, make_case("lung", phases=2, amplitude_mm=22.0))):
        # 0 % and 50 % are among the phases: both extremes of the SI motion are sampled
        motion = case.truth["motion_mm"]
        assert motion["SI"] == pytest.approx(amp, abs=0.5)
        centres = np.array([p["centroid_mm"] for p in case.truth["phases"]])
        assert motion["AP"] == pytest.approx(float(np.ptp(centres[:, 1])), abs=1e-6)
        assert motion["AP"] <= 0.3 * amp + 1e-9
        diffs = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=2)
        assert motion["vector"] == pytest.approx(float(diffs.max()), abs=1e-6)
        voxel = case.truth["motion_voxel_mm"]
        assert voxel["SI"] == pytest.approx(amp, abs=0.5) and voxel["vector"] == pytest.approx(
            motion["vector"], abs=0.5
        )


def test_itv_and_ptv_truth_against_independent_estimates(lung) -> None:
    t = lung.truth
    centres = np.array([p["centroid_mm"] for p in t["phases"]])
    r = t["tumour"]["radius_mm"]
    mc, se = _mc_union_cc(centres, r)
    assert t["itv_cc"] == pytest.approx(mc, abs=4 * se)
    itv = np.logical_or.reduce(lung.gtv_masks)
    assert np.array_equal(itv, lung.structures["ITV"])
    assert np.count_nonzero(itv) * lung.grid.voxel_volume_cc == pytest.approx(t["itv_cc"], rel=0.03)
    # PTV = ITV + 5 mm exactly = the union of the balls grown by 5 mm
    mc, se = _mc_union_cc(centres, r + 5.0, seed=8)
    assert t["ptv_cc"] == pytest.approx(mc, abs=4 * se)
    assert lung.structures["PTV"][itv].all()
    assert np.count_nonzero(lung.structures["PTV"]) * lung.grid.voxel_volume_cc == pytest.approx(t["ptv_cc"], rel=0.03)


def _median_hu(image: np.ndarray, labels: np.ndarray, label: int) -> float:
    core = ndimage.binary_erosion(labels == label, iterations=1)
    assert core.any(), A.LABEL_NAMES[label]
    return float(np.median(image[core]))


@pytest.mark.parametrize(
    ("label", "lo", "hi"),
    [
        (A.LUNG_R, -880, -820),
        (A.FAT, -110, -90),
        (A.MUSCLE, 40, 60),
        (A.HEART, 30, 50),
        (A.AORTA, 200, 320),
        (A.PULMONARY, 200, 320),
        (A.TUMOUR, 20, 50),
        (A.SPINAL_CORD, 25, 45),
        (A.VERTEBRAL_BODY, 150, 900),
        (A.RIB, 200, 900),
    ],
)
def test_ct_numbers_of_thoracic_tissues(lung, label: int, lo: float, hi: float) -> None:
    assert lo <= _median_hu(lung.phase_hu[0], lung.phase_hu.labels(0), label) <= hi


def test_ct_numbers_of_abdominal_tissues_and_the_dark_liver_tumour(liver) -> None:
    image, labels = liver.phase_hu[2], liver.phase_hu.labels(2)
    assert 50 <= _median_hu(image, labels, A.LIVER) <= 70
    assert 15 <= _median_hu(image, labels, A.TUMOUR) <= 35
    kidney = image[ndimage.binary_erosion(labels == A.KIDNEY_R)]
    assert np.percentile(kidney, 90) > 130 and np.percentile(kidney, 10) < 90  # bright cortex, darker medulla
    # gas in the stomach and the colon (for MinIP and thresholds): some voxels near -1000
    for organ in (A.STOMACH, A.BOWEL_LARGE):
        assert np.count_nonzero(image[labels == organ] < -900) > 100
    noise = image[(labels == A.AIR)][:20000]
    assert noise.min() == -1024 and np.median(noise) <= -990


def test_lungs_breathe(lung) -> None:
    inhale, exhale = lung.phase_hu[0], lung.phase_hu[2]  # 0 % and 50 %
    li, le = lung.phase_hu.labels(0), lung.phase_hu.labels(2)
    assert _median_hu(inhale, li, A.LUNG_R) < _median_hu(exhale, le, A.LUNG_R) - 25
    # the diaphragm (top of the liver) is lower at end-inhale, the spine does not move
    top = [
        float(lung.grid.axis_coords_mm(2)[np.nonzero((lab == A.LIVER).any(axis=(1, 2)))[0].max()]) for lab in (li, le)
    ]
    assert top[1] - top[0] == pytest.approx(lung.truth["breathing"]["diaphragm_amplitude_mm"], abs=2.5)
    assert np.array_equal(li == A.VERTEBRAL_BODY, le == A.VERTEBRAL_BODY)


def test_thoracic_anatomy_is_consistent(lung) -> None:
    s, labels, grid = lung.structures, lung.labels, lung.grid
    body = s["Body"]
    for name in ("Lung_L", "Lung_R", "Heart", "SpinalCord", "A_Aorta", "ITV", "PTV"):
        assert not (s[name] & ~body).any(), name
    for name in ("Lung_L", "Lung_R"):
        assert 1800 <= lung.truth["structures"][name]["volume_cc"] <= 3000
    assert (s["Lung_L"] & s["Lung_R"]).sum() == 0
    # the cord lies in the canal, and the canal inside the ring of the vertebra on every slice
    assert not (s["SpinalCord"] & ~s["SpinalCanal"]).any()
    bone = np.isin(labels, (A.VERTEBRAL_BODY, A.VERTEBRAL_ARCH, A.DISC))
    for k in range(grid.shape[0]):
        canal = s["SpinalCanal"][k]
        assert canal.any()
        filled = ndimage.binary_fill_holes(bone[k])
        assert not (canal & ~filled).any(), f"slice {k}"
    # the peripheral right-lung tumour stays inside the right lung in every phase: lung all around it
    assert lung.truth["tumour"]["inside_host_fraction_min"] == 1.0
    for n, gtv in enumerate(lung.gtv_masks):
        shell = ndimage.binary_dilation(gtv, iterations=2) & ~gtv
        assert set(np.unique(lung.phase_hu.labels(n)[shell])) <= {A.LUNG_R, A.TUMOUR}, f"phase {n}"
    assert lung.truth["tumour"]["distance_to_pbt_mm"] >= 20.0


def test_the_trachea_splits_at_the_carina(lung) -> None:
    airway = np.isin(lung.labels, (A.TRACHEA, A.BRONCHUS)) & (lung.phase_hu[1] < -500)
    zs = lung.grid.axis_coords_mm(2)

    def lumens(z: float) -> int:
        k = int(np.argmin(np.abs(zs - z)))
        return int(ndimage.label(airway[k])[1])

    assert lumens(A.CARINA_Z + 30.0) == 1
    assert lumens(A.CARINA_Z - 8.0) == 2
    assert "AirWay_Prox" in lung.structures and "Trachea" in lung.structures


def test_abdominal_anatomy(liver) -> None:
    v = {k: d["volume_cc"] for k, d in liver.truth["structures"].items()}
    assert 1300 <= v["Liver"] <= 2200 and v["Liver"] - liver.truth["itv_cc"] >= 700
    for name in ("Stomach", "Duodenum", "Bowel_Small", "Bowel_Large", "Kidney_L", "Kidney_R", "SpinalCord", "Spleen"):
        assert v[name] > 10, name
    assert liver.truth["tumour"]["inside_host_fraction_min"] == 1.0
    assert (liver.rx_gy, liver.fractions) == (50.0, 5)


@pytest.mark.parametrize(("location", "lo", "hi"), [("central", 5.0, 20.0), ("ultracentral", -30.0, 0.0)])
def test_tumour_location_presets(location: str, lo: float, hi: float) -> None:
    case = make_case("lung", phases=2, location=location)
    d = case.truth["tumour"]["distance_to_pbt_mm"]
    assert lo <= d < hi
    assert case.truth["tumour"]["location_class"] == case.truth["tumour"]["location_class_by_distance"] == location
    # independent check on voxels: gap between the ITV and the proximal bronchial tree
    itv, pbt = case.structures["ITV"], case.structures["AirWay_Prox"]
    gap = ndimage.distance_transform_edt(~pbt, sampling=case.grid.spacing_mm[::-1])[itv].min()
    assert gap == pytest.approx(max(d, 0.0), abs=2.5)


def test_left_side_mirrors_the_tumour() -> None:
    case = make_case("lung", phases=2, side="left")
    t = case.truth["tumour"]
    assert t["host"] == "Lung_L" and t["exhale_centre_mm"][0] > 0 and t["inside_host_fraction_min"] == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"site": "kidney"},
        {"site": "lung", "phases": 1},
        {"site": "lung", "phases": 21},
        {"site": "lung", "phases": 4.0},
        {"site": "lung", "amplitude_mm": -1.0},
        {"site": "lung", "amplitude_mm": 31.0},
        {"site": "lung", "amplitude_mm": float("nan")},
        {"site": "lung", "seed": -1},
        {"site": "lung", "location": "hilar"},
        {"site": "lung", "side": "up"},
        {"site": "liver", "side": "left"},
        {"site": "lung", "tumour_radius_mm": 2.0},
    ],
)
def test_bad_options_are_input_errors(kwargs) -> None:
    site = kwargs.pop("site")
    with pytest.raises(InputError, match="phantom"):
        make_case(site, **kwargs)


# ----------------------------------------------------------------------------- dose


def _sample(dose: np.ndarray, grid, points_mm: np.ndarray) -> np.ndarray:
    ijk = grid.lps_to_index(points_mm)
    return ndimage.map_coordinates(dose, [ijk[:, 2], ijk[:, 1], ijk[:, 0]], order=1, mode="nearest")


def test_dose_is_a_plausible_sbrt_plan(lung) -> None:
    t, rx = lung.truth, lung.rx_gy
    assert (rx, lung.fractions) == (54.0, 3)
    dose, dgrid = lung.dose_gy, lung.dose_grid
    assert dgrid.spacing_mm == (2.0, 2.0, 2.0)
    assert 1.2 * rx <= dose.max() <= 1.5 * rx
    # the maximum lies inside the ITV (the standards allow the hot spot only there)
    kmax = np.unravel_index(int(np.argmax(dose)), dose.shape)
    at = dgrid.index_to_lps(np.array(kmax[::-1], dtype=float))
    centres = np.array([p["centroid_mm"] for p in t["phases"]])
    assert np.min(np.linalg.norm(centres - at, axis=1)) <= t["tumour"]["radius_mm"]
    # coverage of the PTV voxels (trilinear dose at their centres)
    ptv_pts = lung.grid.index_to_lps(np.argwhere(lung.structures["PTV"])[:, ::-1].astype(float))
    ptv_dose = _sample(dose, dgrid, ptv_pts)
    assert np.mean(ptv_dose >= rx) >= 0.90
    itv_pts = lung.grid.index_to_lps(np.argwhere(lung.structures["ITV"])[:, ::-1].astype(float))
    assert np.mean(_sample(dose, dgrid, itv_pts) >= rx) >= 0.99
    # steep fall-off: R50 and D2cm of the grid dose, in the range RTOG 0915 accepts
    v50 = np.count_nonzero(dose >= 0.5 * rx) * dgrid.voxel_volume_cc
    assert 3.0 <= v50 / t["ptv_cc"] <= 5.0
    assert v50 / t["ptv_cc"] == pytest.approx(t["dose"]["analytic"]["r50"], rel=0.05)
    pts = dgrid.index_to_lps(np.argwhere(dose > 0)[:, ::-1].astype(float))
    far = np.min(np.linalg.norm(pts[:, None, :] - centres[None, :, :], axis=2), axis=1) >= t["tumour"]["radius_mm"] + 25
    d2cm = dose.reshape(-1)[np.flatnonzero(dose > 0)][far].max()
    assert d2cm < 0.6 * rx
    assert d2cm / rx * 100 == pytest.approx(t["dose"]["analytic"]["d2cm_percent"], abs=2.0)
    # no dose outside the patient
    xs, ys = dgrid.axis_coords_mm(0), dgrid.axis_coords_mm(1)
    outside = ((xs[None, :] / A.BODY_SEMI[0]) ** 2 + (ys[:, None] / A.BODY_SEMI[1]) ** 2) > 1.05
    assert not dose[:, outside].any()


# ----------------------------------------------------------------------------- files


def test_write_case_layout_and_round_trip(tmp_path) -> None:
    from sbrtstandards.contours import roi_volume_cc
    from sbrtstandards.dicom.ct import read_ct_series
    from sbrtstandards.dicom.rtdose import read_rtdose
    from sbrtstandards.dicom.rtplan import read_rtplan
    from sbrtstandards.dicom.rtstruct import read_rtstruct

    out = tmp_path / "case"
    seen: list[float] = []
    truth = write_case("liver", out, phases=2, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen)
    assert sorted(p.name for p in out.iterdir()) == ["phase_00", "phase_50", "planning", "truth.json"]
    on_disk = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    for key in (
        "site",
        "phases",
        "itv_cc",
        "ptv_cc",
        "motion_mm",
        "amplitude_mm",
        "prescription",
        "files",
        "tumour",
        "structures",
        "dose",
        "frame_of_reference_uid",
    ):
        assert key in on_disk, key
    assert on_disk["files"]["rtdose"] == "planning/RD.dcm" and truth["files"]["rtdose"] == str(
        out.resolve() / "planning/RD.dcm"
    )

    studies, frames = set(), set()
    for f in out.rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        studies.add(str(ds.StudyInstanceUID))
        refs = ds.get("ReferencedFrameOfReferenceSequence")
        frames.add(str(refs[0].FrameOfReferenceUID) if refs else str(ds.FrameOfReferenceUID))
    assert studies == {on_disk["study_instance_uid"]} and frames == {on_disk["frame_of_reference_uid"]}

    nk = on_disk["ct_grid"]["shape_kji"][0]
    middle = f"CT_{nk // 2:04d}.dcm"
    slices = []
    for n, ph in enumerate(on_disk["phases"]):
        ss = read_rtstruct(out / ph["rtstruct"])
        assert ss.names == ["GTV"]
        assert roi_volume_cc(ss.roi("GTV")) == pytest.approx(ph["gtv_cc"], rel=0.03)
        files = sorted((out / ph["ct"]).glob("CT_*.dcm"))
        assert len(files) == nk
        ds = pydicom.dcmread(out / ph["ct"] / middle)
        assert ds.SeriesDescription == f"4D-CT {ph['label']}" and ds.TemporalPositionIndex == n + 1
        assert ph["label"] in ds.ImageComments
        slices.append(ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept))
    # the planning CT is the average of the phases
    avg = pydicom.dcmread(out / "planning/CT" / middle)
    assert np.array_equal(avg.pixel_array + int(avg.RescaleIntercept), np.rint(np.mean(slices, axis=0)))

    planning = read_rtstruct(out / "planning/RS_planning.dcm")
    for name in ("Body", "Liver", "Stomach", "Duodenum", "Kidney_L", "SpinalCord", "ITV", "PTV"):
        assert name in planning.names
    assert roi_volume_cc(planning.roi("PTV")) == pytest.approx(on_disk["ptv_cc"], rel=0.03)
    plan = read_rtplan(out / "planning/RP.dcm")
    assert (plan.rx_gy, plan.fractions) == (50.0, 5)
    assert plan.referenced_structure_set_uid == str(pydicom.dcmread(out / "planning/RS_planning.dcm").SOPInstanceUID)
    assert [t.roi_number for t in plan.targets] == [planning.roi("PTV").number]
    dose = read_rtdose(out / "planning/RD.dcm")
    assert dose.summation_type == "PLAN" and dose.referenced_plan_uid == plan.sop_instance_uid
    assert dose.max_gy == pytest.approx(on_disk["dose"]["max_gy"], rel=1e-6)
    ct = read_ct_series(out / "planning/CT")
    assert ct.grid.shape == tuple(on_disk["ct_grid"]["shape_kji"])
    g = on_disk["ct_grid"]
    assert ct.grid.same_geometry(Grid(tuple(g["origin_mm"]), tuple(g["spacing_mm"]), tuple(g["size"])))


def test_write_case_never_replaces_a_folder_that_is_not_a_case(tmp_path) -> None:
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        write_case("lung", other, phases=2)
    (other / "truth.json").write_text('{"format": "something else"}')
    with pytest.raises(InputError, match="not empty"):
        write_case("lung", other, phases=2)
    assert (other / "notes.txt").read_text() == "keep me"
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        write_case("lung", afile, phases=2)


@pytest.mark.slow
def test_write_case_replaces_a_previous_case(tmp_path) -> None:
    out = tmp_path / "case"
    out.mkdir()
    (out / "truth.json").write_text(json.dumps({"format": "sbrt-phantom-truth"}))
    (out / "stale.dcm").write_text("old")
    write_case("lung", out, phases=2, seed=1)
    assert json.loads((out / "truth.json").read_text())["seed"] == 1
    assert not (out / "stale.dcm").exists()
    assert not list(tmp_path.glob(".case*"))  # no temporary folder left behind
