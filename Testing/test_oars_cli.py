"""``sbrt oars`` end to end on DICOM: the synthetic thorax's average CT and a structure set with
only some of the OARs (Chinese and custom names among them); the output structure set is read
back with pydicom and with the project's reader; bad input exits with status 2 and one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from sbrtstandards import tg263
from sbrtstandards.cli import main as main_mod
from sbrtstandards.contours import roi_mask, roi_volume_cc
from sbrtstandards.dicom.common import StudyInfo
from sbrtstandards.dicom.ct import write_ct_series
from sbrtstandards.dicom.rtstruct import Contour, Roi, read_rtstruct, write_rtstruct
from sbrtstandards.phantom import make_case


@pytest.fixture(autouse=True)
def _register(monkeypatch: pytest.MonkeyPatch) -> None:
    # the lead registers the subcommand in cli/main.py; until then the tests add it themselves
    monkeypatch.setitem(main_mod.SUBCOMMANDS, "oars", ("sbrtstandards.cli.oars_cmd", "oars"))


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("oars_case")
    case = make_case("lung", phases=3, location="central", side="left")
    ref = write_ct_series(root / "CT", case.average_hu(), case.grid, study=case.study, series_description="AVG")
    s = case.structures
    given = [("ITV", s["ITV"]), ("PTV", s["PTV"]), ("Trachea", s["Trachea"]), ("Esophagus", s["Esophagus"]),
             ("Heart", s["Heart"]), ("SpinalCord", s["SpinalCord"]), ("主动脉", s["A_Aorta"]), ("MyVB", s["VB"])]
    rois = [Roi.from_mask(name, mask, case.grid, number=n) for n, (name, mask) in enumerate(given, start=1)]
    write_rtstruct(root / "RS.dcm", rois, reference=ref, label="input")
    return root, case, ref


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main_mod.main(args)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_oars_end_to_end(dicom_case, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    root, case, _ref = dicom_case
    out_rs = root / "RS_out.dcm"
    code, stdout, _err = run(["oars", "--ct", str(root / "CT"), "--rtstruct", str(root / "RS.dcm"), "--target", "PTV",
                              "--map", "MyVB=vertebra", "--out", str(out_rs), "--json", "-", "--quiet"], capsys)
    assert code == 0
    data = json.loads(stdout)  # --json - : nothing else on standard output
    assert data["side"] == "left"
    assert data["location"]["class"] == case.truth["tumour"]["location_class"] == "central"
    assert data["location"]["measured_from"] == "ITV"
    assert {(o["dose_gy"], o["fractions"]) for o in data["fractionation_options"]} == {(60, 8), (50, 5)}
    built = {b["role"]: b for b in data["built"]}
    assert {"body", "lung_left", "lung_right", "lungs", "lungs_minus_target", "chest_wall", "great_vessels",
            "pbt", "pbt_zone", "ring_2cm"} <= set(built)
    assert built["great_vessels"]["from"][0] == "主动脉"  # the aorta, found by its Chinese name
    assert {"role": "vertebra", "name": "MyVB"} in data["existing"]  # --map to an OAR-only role
    assert Path(data["rtstruct"]) == out_rs.resolve()
    checks = {c["role"]: c["status"] for c in data["contouring_checks"]}
    assert checks["heart"] == "present" and checks["chest_wall"] == "built" and checks["lungs"] == "built"

    # read back: every input ROI kept, the new ones added with TG-263 names and colours
    ds = pydicom.dcmread(str(out_rs))
    names = [item.ROIName for item in ds.StructureSetROISequence]
    assert names[:8] == ["ITV", "PTV", "Trachea", "Esophagus", "Heart", "SpinalCord", "主动脉", "MyVB"]
    assert {"Body", "Lung_L", "Lung_R", "Chestwall_L", "GreatVes", "AirWay_Prox_Zone", "Lungs-ITV",
            "Body-PTV_20mm"} <= set(names)
    numbers = {item.ROINumber: item.ROIName for item in ds.StructureSetROISequence}
    colours = {numbers[item.ReferencedROINumber]: [int(v) for v in item.ROIDisplayColor]
               for item in ds.ROIContourSequence}
    assert colours["Chestwall_L"] == list(tg263.color_for("Chestwall_L"))
    assert str(ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID) == case.study.frame_of_reference_uid
    ss = read_rtstruct(out_rs)
    cw = ss.roi("Chestwall_L")
    assert roi_volume_cc(cw) == pytest.approx(built["chest_wall"]["volume_cc"], abs=1e-3)
    mask = roi_mask(cw, case.grid)
    xs = case.grid.axis_coords_mm(0)
    assert np.all(xs[np.nonzero(mask)[2]] > 0)  # left = +x


def _rs_with(root: Path, ref, rois: list[Roi], name: str, study: StudyInfo | None = None) -> Path:  # noqa: ANN001
    if study is not None:
        ref = type(ref)(study, ref.series_instance_uid, ref.sop_class_uid, ref.sop_instance_uids,
                        ref.slice_positions_mm, ref.series_description)
    path = root / name
    write_rtstruct(path, rois, reference=ref, label="bad")
    return path


def test_bad_input_exits_2_with_one_line(dicom_case, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    root, case, ref = dicom_case
    base = ["oars", "--ct", str(root / "CT"), "--quiet"]
    rs = str(root / "RS.dcm")

    code, _o, err = run(base + ["--rtstruct", rs, "--target", "GTV9", "--out", str(root / "x.dcm")], capsys)
    assert code == 2 and err.startswith("error: ") and "GTV9" in err and len(err.strip().splitlines()) == 1

    code, _o, err = run(base + ["--rtstruct", rs, "--target", "PTV", "--out", rs], capsys)
    assert code == 2 and "input structure set" in err

    code, _o, err = run(base + ["--rtstruct", rs, "--target", "PTV", "--map", "Heart=banana",
                                "--out", str(root / "x.dcm")], capsys)
    assert code == 2 and "banana" in err

    far = Roi(1, "PTV_far", None, "PTV", [Contour(np.array([[x, y, 900.0] for x, y in
                                                            ((0, 0), (10, 0), (10, 10), (0, 10))], float),
                                                  "CLOSED_PLANAR")])
    outside = _rs_with(root, ref, [far], "RS_far.dcm")
    code, _o, err = run(base + ["--rtstruct", str(outside), "--target", "PTV_far", "--out", str(root / "x.dcm")],
                        capsys)
    assert code == 2 and "outside the CT" in err

    other = StudyInfo(patient_name=case.study.patient_name, patient_id=case.study.patient_id,
                      study_instance_uid=case.study.study_instance_uid)  # a new Frame of Reference UID
    ptv = Roi.from_mask("PTV", case.structures["PTV"], case.grid)
    ptv.frame_of_reference_uid = other.frame_of_reference_uid
    mismatch = _rs_with(root, ref, [ptv], "RS_for.dcm", study=other)
    code, _o, err = run(base + ["--rtstruct", str(mismatch), "--target", "PTV", "--out", str(root / "x.dcm")],
                        capsys)
    assert code == 2 and "Frame of Reference" in err
    assert not (root / "x.dcm").exists()  # nothing half-written


def test_liver_case_builds_the_normal_liver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = make_case("liver", phases=3)
    ref = write_ct_series(tmp_path / "CT", case.average_hu(), case.grid, study=case.study, series_description="AVG")
    s = case.structures
    given = [("ITV", s["ITV"]), ("PTV", s["PTV"]), ("Liver", s["Liver"]), ("胃", s["Stomach"])]  # 胃 = stomach
    rois = [Roi.from_mask(name, mask, case.grid, number=k) for k, (name, mask) in enumerate(given, start=1)]
    write_rtstruct(tmp_path / "RS.dcm", rois, reference=ref, label="liver")
    code, stdout, _err = run(["oars", "--ct", str(tmp_path / "CT"), "--rtstruct", str(tmp_path / "RS.dcm"),
                              "--target", "PTV", "--out", str(tmp_path / "out.dcm"), "--json", "-"], capsys)
    assert code == 0
    data = json.loads(stdout)
    assert data["site"] == "liver" and data["location"]["class"] is None
    built = {b["role"]: b for b in data["built"]}
    assert built["normal_liver"]["name"] == "Liver-ITV"
    expected_cc = float(np.count_nonzero(s["Liver"] & ~s["ITV"])) * case.grid.voxel_volume_cc
    assert built["normal_liver"]["volume_cc"] == pytest.approx(expected_cc, rel=0.01)
    checks = {c["role"]: c["status"] for c in data["contouring_checks"]}
    assert checks["stomach"] == "present"  # matched by its Chinese name, no mask needed for the check
    assert checks["duodenum"] == "missing"


def test_target_partly_outside_the_ct_is_a_warning(dicom_case) -> None:  # noqa: ANN001
    from sbrtstandards.oars.dicom_io import _outside_warnings

    _root, case, _ref = dicom_case
    z0 = float(case.grid.axis_coords_mm(2)[-1])
    square = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
    contours = [Contour(np.array([[x, y, z0 + dz] for x, y in square]), "CLOSED_PLANAR") for dz in (-4.0, 0.0, 4.0)]
    roi = Roi(1, "PTV_top", None, "PTV", contours)
    (warning,) = _outside_warnings(roi, case.grid)
    assert "beyond the CT" in warning and "PTV_top" in warning
    inside = Roi(2, "PTV_in", None, "PTV", contours[:2])
    assert _outside_warnings(inside, case.grid) == []
