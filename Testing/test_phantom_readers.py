"""Acceptance of the synthetic case: `sbrt phantom --site lung` (10 phases) is read by pydicom and plastimatch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from independent_readers import PLASTIMATCH, requires_plastimatch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom") / "lung"
    res = subprocess.run(
        [sys.executable, "-m", "sbrtstandards", "phantom", "--site", "lung", "--out", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return root


def test_ten_phase_series_with_their_gtv_structure_sets(case: Path) -> None:
    truth = json.loads((case / "truth.json").read_text())
    phases = sorted(p for p in case.glob("phase_*") if p.is_dir())
    assert len(phases) == 10 == len(truth["phases"])
    series, frames = set(), set()
    for folder in phases:
        files = sorted(folder.glob("*.dcm"))
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        cts = [h for h in headers if h.Modality == "CT"]
        rss = [h for h in headers if h.Modality == "RTSTRUCT"]
        assert len(rss) == 1 and len(cts) > 50
        assert [r.ROIName for r in rss[0].StructureSetROISequence] == ["GTV"]
        series.add(cts[0].SeriesInstanceUID)
        frames.update(h.FrameOfReferenceUID for h in cts)
    assert len(series) == 10 and len(frames) == 1  # ten series, one Frame of Reference
    for name in ("RS_planning.dcm", "RP.dcm", "RD.dcm"):
        assert pydicom.dcmread(case / "planning" / name).SOPInstanceUID


@pytest.mark.plastimatch
@requires_plastimatch
def test_plastimatch_reads_a_phase_gtv_with_the_true_volume(case: Path, tmp_path: Path) -> None:
    truth = json.loads((case / "truth.json").read_text())
    phase = truth["phases"][0]
    folder = case / phase["folder"]
    rs = next(p for p in folder.glob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).Modality == "RTSTRUCT")
    out = tmp_path / "pm"
    cmd = [
        PLASTIMATCH,
        "convert",
        "--input",
        str(rs),
        "--referenced-ct",
        str(folder),
        "--output-prefix",
        str(out),
        "--prefix-format",
        "nrrd",
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    image = sitk.ReadImage(str(out / "GTV.nrrd"))
    voxels = int((sitk.GetArrayFromImage(image) > 0).sum())
    cc = voxels * float(np.prod(image.GetSpacing())) / 1000.0
    assert cc == pytest.approx(phase["gtv_cc_analytic"], rel=0.05)


@pytest.mark.plastimatch
@requires_plastimatch
def test_plastimatch_reads_the_dose_with_the_prescribed_hot_spot(case: Path, tmp_path: Path) -> None:
    truth = json.loads((case / "truth.json").read_text())
    out = tmp_path / "dose.nrrd"
    cmd = [PLASTIMATCH, "convert", "--input", str(case / "planning" / "RD.dcm"), "--output-dose-img", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    dmax = float(sitk.GetArrayFromImage(sitk.ReadImage(str(out))).max())
    rx = truth["prescription"]["rx_gy"]
    assert 1.1 * rx < dmax < 1.5 * rx
