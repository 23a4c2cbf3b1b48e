"""`sbrt fourd` on the synthetic 4D-CT: ITV/PTV/motion against the phantom's analytic truth,
projections against the voxelwise max/mean/min of the phase series read by SimpleITK."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

pytestmark = pytest.mark.slow


def sbrt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sbrtstandards", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def lung_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fourd") / "lung"
    res = sbrt("phantom", "--site", "lung", "--out", str(root), "--phases", "4", "--quiet")
    assert res.returncode == 0, res.stderr
    return root


@pytest.fixture(scope="module")
def fourd_result(lung_case: Path) -> dict:
    out = lung_case / "4d"
    phases = sorted(str(p) for p in lung_case.glob("phase_*"))
    res = sbrt("fourd", *phases, "--gtv", "GTV", "--out", str(out), "--json", "-", "--assist", "mip")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _series(folder: str) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    return sitk.GetArrayFromImage(reader.Execute()).astype(np.float64)


def test_itv_ptv_and_motion_match_the_truth(lung_case: Path, fourd_result: dict) -> None:
    truth = json.loads((lung_case / "truth.json").read_text())
    assert fourd_result["itv_cc"] == pytest.approx(truth["itv_cc"], rel=0.03)
    assert fourd_result["ptv_cc"] == pytest.approx(truth["ptv_cc"], rel=0.03)
    for axis in ("LR", "AP", "SI", "vector"):
        assert fourd_result["motion_mm"][axis] == pytest.approx(truth["motion_mm"][axis], abs=1.0)
    assert [p["label"] for p in fourd_result["phases"]] == [p["label"] for p in truth["phases"]]
    for got, want in zip(fourd_result["phases"], truth["phases"]):
        np.testing.assert_allclose(got["centroid_mm"], want["centroid_mm"], atol=1.0)
        assert got["fraction_in_itv"] == 1.0
    assert fourd_result["ptv_margin_mm"] == {k: 5.0 for k in "RLAPSI"}
    assert fourd_result["warnings"] == []
    assert fourd_result["itv_assist_cc"] > 0.5 * fourd_result["itv_cc"]


def test_projections_are_voxelwise_max_mean_min_of_the_phases(lung_case: Path, fourd_result: dict) -> None:
    phases = np.stack([_series(str(p)) for p in sorted(lung_case.glob("phase_*"))])
    proj = fourd_result["projections"]
    np.testing.assert_array_equal(_series(proj["MIP"]), phases.max(axis=0))
    np.testing.assert_array_equal(_series(proj["MinIP"]), phases.min(axis=0))
    assert np.abs(_series(proj["AVG"]) - phases.mean(axis=0)).max() <= 0.5 + 1e-9


def test_outputs_share_the_frame_of_reference_and_reference_the_avg(lung_case: Path, fourd_result: dict) -> None:
    phase_for = pydicom.dcmread(next((lung_case / "phase_00").glob("*.dcm")), stop_before_pixels=True)
    phase_for = phase_for.FrameOfReferenceUID
    descriptions = {}
    for name, folder in fourd_result["projections"].items():
        ds = pydicom.dcmread(next(Path(folder).glob("*.dcm")), stop_before_pixels=True)
        assert ds.FrameOfReferenceUID == phase_for
        descriptions[name] = ds.SeriesDescription
        assert name in ds.SeriesDescription
    assert len(set(descriptions.values())) == 3
    rs = pydicom.dcmread(fourd_result["rtstruct"])
    assert [r.ROIName for r in rs.StructureSetROISequence] == ["ITV", "PTV", "ITV_assist"]
    ref = rs.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == phase_for
    avg = pydicom.dcmread(next(Path(fourd_result["projections"]["AVG"]).glob("*.dcm")), stop_before_pixels=True)
    series = ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID
    assert series == avg.SeriesInstanceUID


def test_a_gtv_missing_in_every_phase_is_an_error(
    lung_case: Path, tmp_path: Path
) -> None:
    phases = sorted(str(p) for p in lung_case.glob("phase_*"))
    res = sbrt("fourd", *phases, "--gtv", "Tumour", "--out", str(tmp_path / "x"))
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and "every phase" in res.stderr
    assert not (tmp_path / "x" / "RS_ITV_PTV.dcm").exists()


def test_fewer_than_two_phases_is_an_error(lung_case: Path, tmp_path: Path) -> None:
    res = sbrt("fourd", str(lung_case / "phase_00"), "--gtv", "GTV", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and res.stderr.startswith("error: ")
