"""TBI set-up checks (annex 2 of seed 003): each rule at its boundaries, units, missing keys, lung dose, CLI.

Expected statuses are read off the clauses by hand: field > 160 cm (pass), >= 140 cm (minor),
smaller (fail); lung dose < 7 Gy / never > 8 Gy; dose rate 6-10 cGy/min, never < 3; spoiler
Co-60 > 0.5 cm, 6 MV > 1.5 cm (at least 1), 15 MV > 3 cm (at least 2.5); site doses within 10 %;
block thickness deviation < 1 mm; head and feet > 5 cm inside the field.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sbrtstandards.cli.tbi_cmd import tbi as tbi_cmd
from sbrtstandards.errors import InputError
from sbrtstandards.programme_qa.tbi import check_record, load_spec, normalise_energy, parse_record

GOOD = {
    "energy": "6MV",
    "smd_cm": 450,
    "field_size_cm": [170, 200],
    "patient_size_cm": [50, 175],
    "spoiler_thickness_cm": 1.6,
    "dose_rate_cgy_min": 8,
    "prescription_gy": 2.0,
    "measured_doses_gy": {"head": 2.05, "umbilicus": 1.95, "ankle": 2.1},
    "lung_dose_gy": 6.5,
    "lung_block_thickness_deviation_mm": 0.4,
    "lung_block_transmission": 0.45,
    "tmr_measured": True,
    "lung_outline_marked": True,
    "lung_block_uniform": True,
    "oar_blocks_dose_recorded": True,
}


def _status(record: dict, check_id: str) -> list[str]:
    result = check_record(parse_record(record))
    return [c.status for c in result.checks if c.id == check_id]


def test_a_good_record_passes_every_rule() -> None:
    result = check_record(parse_record(GOOD))
    assert {c.status for c in result.checks} == {"pass"}
    assert len([c for c in result.checks if c.id == "tbi.site_dose"]) == 3
    assert result.counts["pass"] == len(result.checks)


def test_every_clause_of_annex_2_has_a_rule() -> None:
    spec = load_spec()
    clauses = {r.source.rsplit("§", 1)[1] for r in spec.rules}
    assert clauses == {"2-1", "2-2", "2-3", "2-4", "2-5", "2-6"}
    assert all(r.source.startswith("TBI specification (2023) annex 2 §") for r in spec.rules)


@pytest.mark.parametrize(
    ("key", "value", "check_id", "expected"),
    [
        ("lung_dose_gy", 6.9, "tbi.lung_dose", "pass"),
        ("lung_dose_gy", 7.0, "tbi.lung_dose", "minor"),  # "小于7Gy": 7 itself is not below 7
        ("lung_dose_gy", 7.5, "tbi.lung_dose", "minor"),
        ("lung_dose_gy", 8.0, "tbi.lung_dose", "minor"),  # "不得高于8Gy": 8 is allowed
        ("lung_dose_gy", 8.1, "tbi.lung_dose", "fail"),
        ("field_size_cm", [161, 200], "tbi.field_size", "pass"),
        ("field_size_cm", [160, 200], "tbi.field_size", "minor"),
        ("field_size_cm", [140, 200], "tbi.field_size", "minor"),  # "不得小于140"
        ("field_size_cm", [200, 139], "tbi.field_size", "fail"),  # the smaller side counts
        ("dose_rate_cgy_min", 6, "tbi.dose_rate", "pass"),
        ("dose_rate_cgy_min", 10, "tbi.dose_rate", "pass"),
        ("dose_rate_cgy_min", 4.5, "tbi.dose_rate", "minor"),
        ("dose_rate_cgy_min", 3, "tbi.dose_rate", "minor"),
        ("dose_rate_cgy_min", 2.9, "tbi.dose_rate", "fail"),
        ("dose_rate_cgy_min", 11, "tbi.dose_rate", "fail"),
        ("spoiler_thickness_cm", 1.6, "tbi.spoiler_thickness", "pass"),
        ("spoiler_thickness_cm", 1.5, "tbi.spoiler_thickness", "minor"),
        ("spoiler_thickness_cm", 1.0, "tbi.spoiler_thickness", "minor"),
        ("spoiler_thickness_cm", 0.9, "tbi.spoiler_thickness", "fail"),
        ("lung_block_thickness_deviation_mm", -0.9, "tbi.lung_block_thickness", "pass"),
        ("lung_block_thickness_deviation_mm", 1.0, "tbi.lung_block_thickness", "fail"),
        ("smd_cm", 400, "tbi.smd", "fail"),
        ("smd_cm", 401, "tbi.smd", "pass"),
        ("lung_outline_marked", False, "tbi.lung_outline", "fail"),
    ],
)
def test_rule_boundaries(key: str, value: object, check_id: str, expected: str) -> None:
    assert _status({**GOOD, key: value}, check_id) == [expected]


@pytest.mark.parametrize(
    ("energy", "thickness", "expected"),
    [("Co-60", 0.6, "pass"), ("Co-60", 0.5, "fail"), ("15MV", 3.2, "pass"), ("15MV", 2.5, "minor"),
     ("15MV", 2.4, "fail"), ("10MV", 5.0, "not_evaluated")],
)
def test_spoiler_limit_depends_on_the_beam(energy: str, thickness: float, expected: str) -> None:
    assert _status({**GOOD, "energy": energy, "spoiler_thickness_cm": thickness}, "tbi.spoiler_thickness") == [expected]


def test_cobalt_has_no_smd_rule() -> None:
    result = check_record(parse_record({**GOOD, "energy": "钴-60", "spoiler_thickness_cm": 0.8}))
    smd = next(c for c in result.checks if c.id == "tbi.smd")
    assert smd.status == "not_evaluated" and "Co-60" in smd.reason
    assert result.energy == "Co-60"


def test_site_doses_within_ten_percent_each() -> None:
    record = {**GOOD, "measured_doses_gy": {"head": 2.19, "chest": 1.81, "knee": 2.21, "foot": 1.79}}
    checks = [c for c in check_record(parse_record(record)).checks if c.id == "tbi.site_dose"]
    assert {c.site: c.status for c in checks} == {"head": "pass", "chest": "pass", "knee": "fail", "foot": "fail"}
    assert checks[0].value == pytest.approx(9.5)


def test_patient_margin_is_half_the_length_difference() -> None:
    fits = {**GOOD, "field_size_cm": [170, 190], "patient_size_cm": [50, 175]}
    assert _status(fits, "tbi.patient_margin") == ["pass"]
    assert _status({**fits, "patient_size_cm": [50, 181]}, "tbi.patient_margin") == ["fail"]
    check = next(c for c in check_record(parse_record({**GOOD, "field_size_cm": [170, 190]})).checks
                 if c.id == "tbi.patient_margin")
    assert check.value == pytest.approx(7.5)


def test_missing_keys_are_not_evaluated_with_the_key_named() -> None:
    result = check_record(parse_record({}))
    assert {c.status for c in result.checks} == {"not_evaluated"}
    lung = next(c for c in result.checks if c.id == "tbi.lung_dose")
    assert "lung_dose_gy" in lung.reason
    partial = check_record(parse_record({"field_size_cm": [170, 190]}))
    margin = next(c for c in partial.checks if c.id == "tbi.patient_margin")
    assert margin.status == "not_evaluated" and "patient_size_cm" in margin.reason


def test_units_written_out_are_converted() -> None:
    record = parse_record({"smd_cm": "4.5 m", "lung_dose_gy": "650 cGy", "dose_rate_cgy_min": "0.08 Gy/min",
                           "lung_block_thickness_deviation_mm": "0.05 cm"})
    assert record.values["smd_cm"] == pytest.approx(450)
    assert record.values["lung_dose_gy"] == pytest.approx(6.5)
    assert record.values["dose_rate_cgy_min"] == pytest.approx(8)
    assert record.values["lung_block_thickness_deviation_mm"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ({"smd_cm": 4500}, "plausible"),  # millimetres given as centimetres
        ({"prescription_gy": 1200}, "plausible"),  # cGy given as Gy
        ({"smd_mm": 4500}, "smd_cm"),  # unit in the key name: unknown key, with the right one suggested
        ({"lung_dose_gy": "650 mm"}, "unit"),
        ({"lung_dose_gy": True}, "number"),
        ({"energy": "banana"}, "beam energy"),
        ({"field_size_cm": [170]}, "[width, length]"),
        ({"prescription_gy": 2, "measured_doses_gy": {"head": 55}}, "times the prescription"),
    ],
)
def test_bad_records_are_input_errors(record: dict, fragment: str) -> None:
    with pytest.raises(InputError) as exc:
        check_record(parse_record(record))
    assert fragment in str(exc.value)


def test_energy_spellings() -> None:
    assert [normalise_energy(t) for t in ("6 MV", "6x", "15MV", "co60", "Cobalt-60")] == [
        "6MV", "6MV", "15MV", "Co-60", "Co-60"]


# ------------------------------------------------------------------------------------ lung dose


@pytest.fixture(scope="module")
def plan_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two box lungs on planes z = 0..10 mm in the dose D = 4 + 0.2 z Gy: mean lung dose 5.0 Gy."""
    from sbrtstandards.dicom.common import CT_IMAGE_STORAGE, SeriesReference, StudyInfo, new_uid
    from sbrtstandards.dicom.rtdose import write_rtdose
    from sbrtstandards.dicom.rtstruct import Contour, Roi, write_rtstruct
    from sbrtstandards.grid import Grid

    root = tmp_path_factory.mktemp("tbi")
    study = StudyInfo()
    zs = tuple(np.arange(-4.0, 16.0, 2.0))
    ref = SeriesReference(study, new_uid(), CT_IMAGE_STORAGE, tuple(new_uid() for _ in zs), zs)

    def box(x0: float) -> list[Contour]:
        xy = np.array([[x0, -20.0], [x0 + 30.0, -20.0], [x0 + 30.0, 20.0], [x0, 20.0]])
        return [Contour(np.column_stack([xy, np.full(4, z)]), "CLOSED_PLANAR") for z in np.arange(0.0, 11.0, 2.0)]

    rois = [Roi(1, "Lung_L", (0, 0, 255), "ORGAN", box(10.0)), Roi(2, "Lung_R", (0, 255, 0), "ORGAN", box(-40.0)),
            Roi(3, "Body", (255, 255, 0), "EXTERNAL", box(-60.0))]
    grid = Grid((-70.0, -40.0, -10.0), (2.0, 2.0, 2.0), (71, 41, 16))
    z = grid.axis_coords_mm(2)[:, None, None] * np.ones(grid.shape)
    return {
        "rs": write_rtstruct(root / "RS.dcm", rois, reference=ref),
        "rd": write_rtdose(root / "RD.dcm", 4.0 + 0.2 * z, grid, study=study),
        "record": _write(root / "setup.json", {**GOOD, "lung_dose_gy": 6.0}),
    }


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_lung_dose_from_the_structures_replaces_the_records(plan_files: dict[str, Path]) -> None:
    from sbrtstandards.programme_qa.tbi import lung_dose_from_dicom

    lung = lung_dose_from_dicom(str(plan_files["rd"]), rtstruct=str(plan_files["rs"]))
    assert lung.mean_gy == pytest.approx(5.0, abs=1e-3)  # the slabs run from z = -1 to 11 mm: mean z = 5
    assert lung.volume_cc == pytest.approx(2 * 30 * 40 * 12 / 1000, rel=1e-6)
    assert "Lung_L+Lung_R" in lung.method
    result = check_record(parse_record({**GOOD, "lung_dose_gy": 6.0}), lung_dose=lung)
    check = next(c for c in result.checks if c.id == "tbi.lung_dose")
    assert check.value == pytest.approx(5.0, abs=1e-3) and check.value_source.startswith("computed")
    assert any("differs" in w for w in result.warnings)


def test_lung_dose_needs_lungs(plan_files: dict[str, Path], tmp_path: Path) -> None:
    from sbrtstandards.programme_qa.tbi import lung_dose_from_dicom

    with pytest.raises(InputError, match="--ct"):
        lung_dose_from_dicom(str(plan_files["rd"]))
    with pytest.raises(InputError, match="no lung structure"):
        lung_dose_from_dicom(str(plan_files["rd"]), rtstruct=str(_only_body(plan_files, tmp_path)))


def _only_body(plan_files: dict[str, Path], tmp_path: Path) -> Path:
    from sbrtstandards.dicom.common import CT_IMAGE_STORAGE, SeriesReference, new_uid
    from sbrtstandards.dicom.rtstruct import read_rtstruct, write_rtstruct

    ss = read_rtstruct(plan_files["rs"])
    zs = tuple(np.arange(-4.0, 16.0, 2.0))
    ref = SeriesReference(ss.study, new_uid(), CT_IMAGE_STORAGE, tuple(new_uid() for _ in zs), zs)
    return write_rtstruct(tmp_path / "RS_body.dcm", [r for r in ss.rois if r.name == "Body"], reference=ref)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_json_keys_and_exit_zero(plan_files: dict[str, Path]) -> None:
    res = CliRunner().invoke(tbi_cmd, [str(plan_files["record"]), "--json", "-"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"id", "rule", "value", "limit", "status", "source"} <= set(out["checks"][0])
    assert {c["status"] for c in out["checks"]} == {"pass"}
    res = CliRunner().invoke(tbi_cmd, [str(plan_files["record"]), "--rtdose", str(plan_files["rd"]), "--rtstruct",
                                       str(plan_files["rs"])])
    assert res.exit_code == 0, res.output
    assert "tbi.lung_dose" in res.output and "warning" in res.output


def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from sbrtstandards.cli import main as main_mod

    monkeypatch.setitem(main_mod.SUBCOMMANDS, "tbi", ("sbrtstandards.cli.tbi_cmd", "tbi"))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{energy: 6MV}", encoding="utf-8")
    for args, fragment in (
        ([str(bad_json)], "not valid JSON"),
        ([str(_write(tmp_path / "units.json", {"smd_cm": 4500}))], "smd_cm"),
        ([str(tmp_path / "missing.json")], "no such file"),
        ([str(_write(tmp_path / "ok.json", GOOD)), "--rtstruct", "RS.dcm"], "--rtdose"),
    ):
        with pytest.raises(SystemExit) as exc:
            main_mod.main(["tbi", *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


def test_lung_dose_from_lungs_segmented_on_the_ct(tmp_path: Path) -> None:
    """Two ellipsoid lungs (-800 HU) in a water body, centred on z = 60 mm, in D = 4 + 0.02 z Gy."""
    from ct_factory import write_slices

    from sbrtstandards.dicom.common import StudyInfo
    from sbrtstandards.dicom.rtdose import write_rtdose
    from sbrtstandards.grid import Grid
    from sbrtstandards.programme_qa.tbi import lung_dose_from_dicom

    def hu(p: np.ndarray) -> np.ndarray:
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        body = (x / 140.0) ** 2 + (y / 100.0) ** 2 <= 1.0
        lungs = (((np.abs(x) - 60.0) / 40.0) ** 2 + (y / 50.0) ** 2 + ((z - 60.0) / 45.0) ** 2) <= 1.0
        return np.where(body, np.where(lungs, -800.0, 40.0), -1000.0)

    for_uid = "1.2.826.0.1.3680043.8.498.77"
    ct_dir = tmp_path / "ct"
    ct_dir.mkdir()
    write_slices(ct_dir, [(-157.5, -157.5, float(z)) for z in range(0, 125, 5)], shape=(64, 64),
                 pixel_spacing=(5.0, 5.0), values=hu, for_uid=for_uid)
    grid = Grid((-160.0, -160.0, -5.0), (5.0, 5.0, 5.0), (65, 65, 28), frame_of_reference_uid=for_uid)
    z = grid.axis_coords_mm(2)[:, None, None] * np.ones(grid.shape)
    rd = write_rtdose(tmp_path / "RD.dcm", 4.0 + 0.02 * z, grid, study=StudyInfo(frame_of_reference_uid=for_uid))
    lung = lung_dose_from_dicom(str(rd), ct=str(ct_dir))
    assert lung.mean_gy == pytest.approx(4.0 + 0.02 * 60.0, abs=0.01)
    assert lung.volume_cc == pytest.approx(2 * 4 / 3 * np.pi * 40 * 50 * 45 / 1000, rel=0.1)
    assert "segmented" in lung.method
