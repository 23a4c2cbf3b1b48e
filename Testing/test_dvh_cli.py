"""`sbrt dvh` end to end on DICOM files written here: JSON/CSV contract, dose file variants, errors.

The structures and the dose have hand-computed answers: a 20 x 10 mm box on 6 planes 2 mm
apart (2.4 cc with half-slice end caps, 2.0 cc without) in the dose D = 10 + 2 z Gy, which is
uniform in volume between 8 and 32 Gy over the box; a ring (radius 20 mm with a 10 mm hole).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from analytic_shapes import regular_polygon, regular_polygon_area
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from sbrtstandards.cli.main import main
from sbrtstandards.dicom.common import CT_IMAGE_STORAGE, SeriesReference, StudyInfo, new_uid
from sbrtstandards.dicom.rtdose import write_rtdose
from sbrtstandards.dicom.rtstruct import Contour, Roi, write_rtstruct
from sbrtstandards.grid import Grid

ROOT = Path(__file__).resolve().parents[1]
PLANES_Z = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0)
BOX = np.array([[-10.0, -5.0], [10.0, -5.0], [10.0, 5.0], [-10.0, 5.0]])


def _contours(zs, polys) -> list[Contour]:
    return [Contour(np.column_stack([p, np.full(len(p), z)]), "CLOSED_PLANAR") for z in zs for p in polys]


def _grid(study: StudyInfo) -> tuple[np.ndarray, Grid]:
    origin = np.array([-30.0, -30.0, -4.0])
    size = np.array([31, 31, 21])
    xs, ys, zs = (origin[a] + 2.0 * np.arange(size[a]) for a in range(3))
    zz, _, _ = np.meshgrid(zs, ys, xs, indexing="ij")
    grid = Grid(tuple(origin), (2.0, 2.0, 2.0), tuple(int(v) for v in size), frame_of_reference_uid=None)
    return 10.0 + 2.0 * zz, grid


def _without_file_meta(src: Path, dst: Path) -> Path:
    ds = pydicom.dcmread(str(src))
    body = Dataset()
    body.update(ds)
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, body)
    dst.write_bytes(fp.getvalue())
    return dst


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dvhcli")
    study = StudyInfo()
    zs = tuple(np.arange(-4.0, 24.0, 2.0))
    ref = SeriesReference(study, new_uid(), CT_IMAGE_STORAGE, tuple(new_uid() for _ in zs), zs)
    ring = [regular_polygon(0, 0, 20.0), regular_polygon(0, 0, 10.0, ccw=False)]
    rois = [
        Roi(1, "PTV", (255, 0, 0), "PTV", _contours(PLANES_Z, [BOX])),
        Roi(2, "Ring", (0, 255, 0), "ORGAN", _contours(np.arange(0.0, 21.0, 2.0), ring)),
        Roi(3, "Marker", (0, 0, 255), "MARKER", [Contour(np.array([[0.0, 0.0, 4.0]]), "POINT")]),
        Roi(4, "Far", (0, 0, 255), "ORGAN", _contours((0.0, 2.0), [BOX + 500.0])),
    ]
    files = {"rs": write_rtstruct(root / "RS.dcm", rois, reference=ref)}
    dose, grid = _grid(study)
    files["rd"] = write_rtdose(root / "RD.dcm", dose, grid, study=study)
    files["rd_fraction"] = write_rtdose(root / "RD_fx.dcm", dose / 5.0, grid, study=study, summation_type="FRACTION")
    files["rd_nometa"] = _without_file_meta(files["rd"], root / "RD_nometa.dcm")
    files["rd_half_a"] = write_rtdose(root / "RD_a.dcm", dose * 0.25, grid, study=study)
    files["rd_half_b"] = write_rtdose(root / "RD_b.dcm", dose * 0.75, grid, study=study)
    rel = pydicom.dcmread(str(files["rd"]))
    rel.DoseUnits = "RELATIVE"
    rel.DoseGridScaling = float(rel.DoseGridScaling) / 40.0  # fraction of a 40 Gy prescription
    rel.save_as(str(root / "RD_rel.dcm"))
    files["rd_rel"] = root / "RD_rel.dcm"
    other = StudyInfo()
    files["rd_other_for"] = write_rtdose(root / "RD_other.dcm", dose, grid, study=other)
    return files


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``sbrt`` in-process (its real entry point); returns (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as ex:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return int(ex.value.code or 0), out, err


def test_json_follows_the_contract(case, capsys, tmp_path: Path) -> None:
    out_json, out_csv = tmp_path / "dvh.json", tmp_path / "dvh.csv"
    code, _, err = run(
        capsys, "dvh", "--rtstruct", case["rs"], "--rtdose", case["rd"], "--structure", "PTV", "--structure", "Ring",
        "--metric", "D95%[Gy]", "--metric", "V20Gy[cc]", "--metric", "V100%[%]", "--json", out_json, "--csv", out_csv,
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert data["dose"]["file"] == str(case["rd"].resolve())
    assert data["dose"]["summation"] == "PLAN"
    assert data["dose"]["max_gy"] == pytest.approx(10.0 + 2.0 * 36.0, abs=1e-3)
    ptv, ring = data["structures"]
    assert list(ptv)[:6] == ["name", "volume_cc", "min_gy", "mean_gy", "max_gy", "metrics"]
    assert ptv["name"] == "PTV"
    assert ptv["volume_cc"] == pytest.approx(2.4)
    assert ptv["min_gy"] == pytest.approx(8.0, abs=1e-3) and ptv["max_gy"] == pytest.approx(32.0, abs=1e-3)
    assert ptv["mean_gy"] == pytest.approx(20.0, abs=1e-3)
    assert ptv["metrics"]["D95%[Gy]"] == pytest.approx(32.0 - 0.95 * 24.0, abs=0.02)
    assert ptv["metrics"]["V20Gy[cc]"] == pytest.approx(1.2, abs=0.005)
    assert ptv["metrics"]["V100%[%]"] is None and "prescription" in ptv["reasons"]["V100%[%]"]
    curve = ptv["dvh"]
    assert len(curve["dose_gy"]) == len(curve["volume_cc"]) <= 300
    assert curve["volume_cc"][0] == pytest.approx(2.4, abs=1e-6)
    assert ring["volume_cc"] == pytest.approx((regular_polygon_area(20.0) - regular_polygon_area(10.0)) * 22 / 1000)
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 2 * 3
    assert {r["metric"] for r in rows} == {"D95%[Gy]", "V20Gy[cc]", "V100%[%]"}
    v100 = [r for r in rows if r["structure"] == "PTV" and r["metric"] == "V100%[%]"][0]
    assert v100["value"] == "" and "prescription" in v100["reason"]


def test_all_structures_and_the_table(case, capsys) -> None:
    code, out, err = run(capsys, "dvh", "--rtstruct", case["rs"], "--rtdose", case["rd"], "--rx-gy", "40")
    assert code == 0, err
    assert "PTV" in out and "Ring" in out and "D95%[Gy]" in out
    assert "skipped Marker" in out and "POINT" in out
    assert "skipped Far" in out and "outside the dose grid" in out


def test_json_to_stdout_is_pure_json(case, capsys) -> None:
    code, out, _ = run(capsys, "dvh", "--rtstruct", case["rs"], "--rtdose", case["rd"], "--structure", "PTV",
                       "--json", "-")  # fmt: skip
    assert code == 0
    assert json.loads(out)["structures"][0]["name"] == "PTV"


def _metrics(capsys, *args) -> dict:
    code, out, err = run(capsys, "dvh", *args, "--structure", "PTV", "--metric", "D95%[Gy]", "--metric",
                         "Mean[Gy]", "--metric", "V20Gy[cc]", "--json", "-")  # fmt: skip
    assert code == 0, err
    return json.loads(out)["structures"][0]


def test_dose_file_variants_give_the_same_dvh(case, capsys) -> None:
    """No file meta, FRACTION x 5 fractions, RELATIVE x 40 Gy, two partial doses summed: the
    same dose after scaling."""
    base = _metrics(capsys, "--rtstruct", case["rs"], "--rtdose", case["rd"])
    variants = [
        _metrics(capsys, "--rtstruct", case["rs"], "--rtdose", case["rd_nometa"]),
        _metrics(capsys, "--rtstruct", case["rs"], "--rtdose", case["rd_fraction"], "--fractions", "5"),
        _metrics(capsys, "--rtstruct", case["rs"], "--rtdose", case["rd_rel"], "--rx-gy", "40"),
        _metrics(capsys, "--rtstruct", case["rs"], "--rtdose", case["rd_half_a"], "--rtdose", case["rd_half_b"]),
    ]
    for v in variants:
        for key, value in base["metrics"].items():
            assert v["metrics"][key] == pytest.approx(value, abs=1e-4), key
        assert v["max_gy"] == pytest.approx(base["max_gy"], abs=1e-4)


def test_end_cap_none(case, capsys) -> None:
    code, out, _ = run(capsys, "dvh", "--rtstruct", case["rs"], "--rtdose", case["rd"], "--structure", "PTV",
                       "--end-cap", "none", "--json", "-")  # fmt: skip
    assert code == 0
    assert json.loads(out)["structures"][0]["volume_cc"] == pytest.approx(2.0)


def test_full_binned_curve(case, capsys) -> None:
    code, out, _ = run(capsys, "dvh", "--rtstruct", case["rs"], "--rtdose", case["rd"], "--structure", "PTV",
                       "--bin-width-gy", "0.01", "--json", "-")  # fmt: skip
    assert code == 0
    curve = json.loads(out)["structures"][0]["dvh"]
    assert np.allclose(np.diff(curve["dose_gy"]), 0.01)
    assert curve["volume_cc"][0] == pytest.approx(2.4)


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--structure", "Lung"], "no structure 'Lung'; structures: PTV, Ring, Marker, Far"),
        (["--structure", "Marker"], "POINT ROI"),
        (["--structure", "Far"], "entirely outside the dose grid"),
        (["--metric", "V20"], "malformed metric 'V20'"),
        (["--end-cap", "round"], "round"),
    ],
)
def test_bad_input_exits_2_with_one_line(case, capsys, args, pattern) -> None:
    code, out, err = run(capsys, "dvh", "--rtstruct", case["rs"], "--rtdose", case["rd"], *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert pattern in err
    assert "Traceback" not in err


def test_relative_dose_without_prescription(case, capsys) -> None:
    code, _, err = run(capsys, "dvh", "--rtstruct", case["rs"], "--rtdose", case["rd_rel"])
    assert code == 2 and "RELATIVE" in err and "--rx-gy" in err


def test_frames_of_reference_must_match(case, capsys) -> None:
    code, _, err = run(capsys, "dvh", "--rtstruct", case["rs"], "--rtdose", case["rd_other_for"])
    assert code == 2 and "Frame of Reference" in err


def test_non_dicom_input_is_a_one_line_error() -> None:
    """The real command (a subprocess) on README.md for both inputs: exit 2, one line, no traceback."""
    readme = ROOT / "README.md"
    res = subprocess.run(
        [sys.executable, "-m", "sbrtstandards", "dvh", "--rtstruct", str(readme), "--rtdose", str(readme)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert "README.md" in res.stderr
    assert res.stdout == ""


def test_folders_are_searched(case, capsys, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "RS.dcm").write_bytes(case["rs"].read_bytes())
    (folder / "RD.dcm").write_bytes(case["rd"].read_bytes())
    (folder / "notes.txt").write_text("not DICOM")
    code, out, err = run(capsys, "dvh", "--rtstruct", folder, "--rtdose", folder, "--structure", "PTV", "--json", "-")
    assert code == 0, err
    assert json.loads(out)["structures"][0]["volume_cc"] == pytest.approx(2.4)
