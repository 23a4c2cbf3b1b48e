"""RT Plan read/write: pydicom's rtplan.dcm checked by hand, hand-edited variants, round trips.

rtplan.dcm (read with pydicom): two dose references, 'iso' (ORGAN_AT_RISK, 75 Gy maximum) and
'PTV' (TARGET, TargetPrescriptionDose 30.826203 Gy), one fraction group of 30 fractions with one
beam whose BeamDose is 1.0275401 Gy per fraction: 30 x 1.0275401 = 30.826203, so both sources
of the prescription agree. It has no Frame of Reference UID.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from sbrtstandards.dicom.common import RT_PLAN_STORAGE, RT_STRUCTURE_SET_STORAGE, StudyInfo, save_dataset
from sbrtstandards.dicom.rtplan import read_rtplan, write_rtplan
from sbrtstandards.errors import InputError

pytestmark = [  # pydicom's test file has an invalid UID; two tests write invalid numbers on purpose
    pytest.mark.filterwarnings("ignore:Invalid value for VR"),
    pytest.mark.filterwarnings("ignore:Value .* is not valid for elements"),
]

RTPLAN = get_testdata_file("rtplan.dcm")


def test_pydicom_rtplan_prescription() -> None:
    plan = read_rtplan(RTPLAN)
    assert plan.label == "Plan1"
    assert plan.rx_gy == pytest.approx(30.826203)
    assert plan.rx_source == "DoseReferenceSequence"
    assert plan.fractions == 30
    assert plan.dose_per_fraction_gy == pytest.approx(1.0275401)
    assert len(plan.targets) == 1  # the ORGAN_AT_RISK point 'iso' is not a target
    target = plan.targets[0]
    assert (target.roi_number, target.name) == (None, "PTV")
    assert target.prescription_gy == pytest.approx(30.826203)
    assert plan.referenced_structure_set_uid == "1.2.333.444.55.6.7777.88888"
    assert plan.frame_of_reference_uid is None
    assert plan.sop_instance_uid == "1.2.777.777.77.7.7777.7777.20030903150023"
    assert plan.study.patient_id == "id00001"
    assert [(b.number, b.machine, b.beam_type) for b in plan.beams] == [(1, "unit001", "STATIC")]
    assert plan.beams[0].meterset == pytest.approx(116.0036697)
    assert plan.warnings == []  # beam dose x fractions agrees with the prescription


def edited_plan(tmp_path: Path, name: str = "RP.dcm") -> tuple[Dataset, Path]:
    return pydicom.dcmread(RTPLAN), tmp_path / name


def test_beam_dose_fallback_when_no_target_prescription(tmp_path: Path) -> None:
    ds, path = edited_plan(tmp_path)
    del ds.DoseReferenceSequence
    plan = read_rtplan(save_dataset(ds, path))
    assert plan.rx_gy == pytest.approx(1.0275401 * 30)
    assert plan.rx_source == "BeamDose"
    assert plan.targets == []
    assert any("derived from the beam doses" in w for w in plan.warnings)


def two_beam_plan(tmp_path: Path, second_point: list[str] | None) -> Path:
    ds, path = edited_plan(tmp_path)
    del ds.DoseReferenceSequence
    group = ds.FractionGroupSequence[0]
    first = group.ReferencedBeamSequence[0]
    second = Dataset()
    second.BeamDoseSpecificationPoint = second_point or list(first.BeamDoseSpecificationPoint)
    second.BeamDose = "2.0"
    second.BeamMeterset = "50"
    second.ReferencedBeamNumber = "2"
    group.ReferencedBeamSequence.append(second)
    group.NumberOfBeams = "2"
    return save_dataset(ds, path)


def test_beam_doses_at_one_point_add_up(tmp_path: Path) -> None:
    plan = read_rtplan(two_beam_plan(tmp_path, None))
    assert plan.rx_gy == pytest.approx((1.0275401 + 2.0) * 30)


def test_beam_doses_at_different_points_give_no_prescription(tmp_path: Path) -> None:
    plan = read_rtplan(two_beam_plan(tmp_path, ["0", "0", "0"]))
    assert plan.rx_gy is None and plan.rx_source is None and plan.dose_per_fraction_gy is None
    assert plan.fractions == 30
    assert any("different points" in w for w in plan.warnings)


def test_no_prescription_at_all(tmp_path: Path) -> None:
    ds, path = edited_plan(tmp_path)
    del ds.DoseReferenceSequence
    del ds.FractionGroupSequence[0].ReferencedBeamSequence[0].BeamDose
    plan = read_rtplan(save_dataset(ds, path))
    assert plan.rx_gy is None and plan.fractions == 30
    assert any("no prescription" in w for w in plan.warnings)


def test_largest_target_prescription_is_used(tmp_path: Path) -> None:
    ds, path = edited_plan(tmp_path)
    boost = Dataset()
    boost.DoseReferenceNumber = "3"
    boost.DoseReferenceStructureType = "VOLUME"
    boost.ReferencedROINumber = "4"
    boost.DoseReferenceType = "TARGET"
    boost.TargetPrescriptionDose = "36"
    ds.DoseReferenceSequence.append(boost)
    plan = read_rtplan(save_dataset(ds, path), roi_names={4: "GTV_boost"})
    assert plan.rx_gy == 36.0
    assert [(t.roi_number, t.name, t.prescription_gy) for t in plan.targets] == [
        (None, "PTV", pytest.approx(30.826203)),
        (4, "GTV_boost", 36.0),
    ]
    assert any("several target prescriptions" in w for w in plan.warnings)
    assert any("beam doses x fractions give" in w for w in plan.warnings)  # 30.8 Gy vs 36 Gy


def test_bad_numbers_are_input_errors(tmp_path: Path) -> None:
    ds, path = edited_plan(tmp_path)
    ds.FractionGroupSequence[0].NumberOfFractionsPlanned = "2.5"
    with pytest.raises(InputError, match="NumberOfFractionsPlanned 2.5 is not a whole number") as err:
        read_rtplan(save_dataset(ds, path))
    assert "RP.dcm" in str(err.value)
    ds, path = edited_plan(tmp_path, "neg.dcm")
    ds.DoseReferenceSequence[1].TargetPrescriptionDose = "-3"
    with pytest.raises(InputError, match="not positive"):
        read_rtplan(save_dataset(ds, path))


def test_zero_fractions_is_unknown(tmp_path: Path) -> None:
    ds, path = edited_plan(tmp_path)
    ds.FractionGroupSequence[0].NumberOfFractionsPlanned = "0"
    plan = read_rtplan(save_dataset(ds, path))
    assert plan.fractions is None and plan.dose_per_fraction_gy is None
    assert plan.rx_gy == pytest.approx(30.826203)


@pytest.mark.parametrize(("name", "kind"), [("rtdose.dcm", "RTDOSE"), ("rtstruct.dcm", "RTSTRUCT")])
def test_wrong_object_type_is_named(name: str, kind: str) -> None:
    with pytest.raises(InputError, match=f"expected a DICOM RTPLAN object, found {kind}") as err:
        read_rtplan(get_testdata_file(name))
    assert name in str(err.value)


# ------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------


@pytest.fixture
def study() -> StudyInfo:
    return StudyInfo(patient_id="RP-TEST")


@pytest.fixture
def written(tmp_path: Path, study: StudyInfo) -> Path:
    return write_rtplan(
        tmp_path / "RP.dcm",
        study=study,
        rx_gy=54.0,
        fractions=3,
        target_roi_number=7,
        referenced_structure_set_uid="1.2.3.4.5",
        label="Lung SBRT",
        target_name="PTV_5400",
        beams=3,
        isocenter_mm=(12.5, -30.0, 105.0),
    )


def test_round_trip(written: Path, study: StudyInfo) -> None:
    plan = read_rtplan(written)
    assert plan.label == "Lung SBRT"
    assert plan.rx_gy == 54.0 and plan.fractions == 3 and plan.dose_per_fraction_gy == 18.0
    assert plan.rx_source == "DoseReferenceSequence"
    assert [(t.roi_number, t.name, t.prescription_gy) for t in plan.targets] == [(7, "PTV_5400", 54.0)]
    assert plan.referenced_structure_set_uid == "1.2.3.4.5"
    assert plan.frame_of_reference_uid == study.frame_of_reference_uid
    assert plan.study.study_instance_uid == study.study_instance_uid
    assert plan.study.patient_id == "RP-TEST"
    assert [b.number for b in plan.beams] == [1, 2, 3]
    assert plan.warnings == []


def test_written_plan_is_an_rt_plan_iod(written: Path) -> None:
    ds = pydicom.dcmread(str(written))
    assert ds.SOPClassUID == RT_PLAN_STORAGE and ds.file_meta.MediaStorageSOPClassUID == RT_PLAN_STORAGE
    assert ds.Modality == "RTPLAN"
    for keyword in (
        "PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber",
        "FrameOfReferenceUID", "PositionReferenceIndicator", "Manufacturer", "RTPlanLabel",
        "RTPlanDate", "RTPlanTime", "ApprovalStatus", "SOPInstanceUID",
    ):  # fmt: skip
        assert keyword in ds, keyword
    assert ds.RTPlanGeometry == "PATIENT"
    ss = ds.ReferencedStructureSetSequence[0]
    assert (ss.ReferencedSOPClassUID, ss.ReferencedSOPInstanceUID) == (RT_STRUCTURE_SET_STORAGE, "1.2.3.4.5")
    ref = ds.DoseReferenceSequence[0]
    assert (ref.DoseReferenceStructureType, ref.DoseReferenceType) == ("VOLUME", "TARGET")
    assert int(ref.ReferencedROINumber) == 7 and float(ref.TargetPrescriptionDose) == 54.0
    group = ds.FractionGroupSequence[0]
    assert int(group.NumberOfFractionsPlanned) == 3 and int(group.NumberOfBeams) == 3
    assert [int(b.ReferencedBeamNumber) for b in group.ReferencedBeamSequence] == [1, 2, 3]
    mu = [float(b.BeamMeterset) for b in group.ReferencedBeamSequence]
    assert mu == pytest.approx([2.5 * 1800 / 3] * 3)  # 2.5 MU/cGy x 1800 cGy per fraction over 3 arcs
    assert len(ds.BeamSequence) == 3
    directions = []
    for beam in ds.BeamSequence:
        assert (beam.BeamType, beam.RadiationType, beam.TreatmentMachineName) == (
            "DYNAMIC",
            "PHOTON",
            "SBRT-Linac",
        )
        assert int(beam.NumberOfControlPoints) == 2 == len(beam.ControlPointSequence)
        first, last = beam.ControlPointSequence
        assert float(first.NominalBeamEnergy) == 6.0
        assert [float(v) for v in first.IsocenterPosition] == [12.5, -30.0, 105.0]
        assert (float(first.CumulativeMetersetWeight), float(last.CumulativeMetersetWeight)) == (0.0, 1.0)
        assert float(beam.FinalCumulativeMetersetWeight) == 1.0
        assert {float(first.GantryAngle), float(last.GantryAngle)} == {179.0, 181.0}
        directions.append(first.GantryRotationDirection)
        assert len(first.BeamLimitingDevicePositionSequence) == len(beam.BeamLimitingDeviceSequence) == 2
    assert directions == ["CW", "CC", "CW"]


def test_default_plan_has_two_arcs(tmp_path: Path, study: StudyInfo) -> None:
    path = write_rtplan(
        tmp_path / "RP.dcm",
        study=study,
        rx_gy=50,
        fractions=5,
        target_roi_number=1,
        referenced_structure_set_uid="1.2",
    )
    ds = pydicom.dcmread(str(path))
    assert ds.RTPlanLabel == "SBRT" and ds.DoseReferenceSequence[0].DoseReferenceDescription == "PTV"
    assert len(ds.BeamSequence) == 2
    plan = read_rtplan(path)
    assert (plan.rx_gy, plan.fractions, plan.dose_per_fraction_gy) == (50.0, 5, 10.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rx_gy": 0.0}, "positive"),
        ({"rx_gy": float("nan")}, "positive"),
        ({"fractions": 0}, "fractions"),
        ({"fractions": 2.5}, "fractions"),
        ({"beams": 0}, "beams"),
        ({"label": "a label longer than 16"}, "plan label"),
    ],
)
def test_write_rejects_bad_inputs(tmp_path: Path, study: StudyInfo, changes: dict, message: str) -> None:
    args = {"rx_gy": 50.0, "fractions": 5, "target_roi_number": 1, "referenced_structure_set_uid": "1.2"}
    args.update(changes)
    with pytest.raises(InputError, match=message):
        write_rtplan(tmp_path / "RP.dcm", study=study, **args)
    assert not (tmp_path / "RP.dcm").exists()
