"""DICOM RT Plan: the prescription that a plan check needs, and a minimal synthetic SBRT plan.

Reading takes only what the plan check needs (prescription, fractions, targets, references);
it never interprets beams or control points. Where the total prescription comes from, in order:

1. ``DoseReferenceSequence``: ``TargetPrescriptionDose`` of the dose references whose
   ``DoseReferenceType`` is TARGET. DICOM defines it as the prescribed dose to the target
   (the course total, as TPSs write it). Several targets (simultaneous boosts): the largest
   is taken and a warning lists them all.
2. Fallback, used only when it is unambiguous: the first fraction group's ``BeamDose`` values
   (Gy per fraction at each beam's dose specification point) summed over its beams, times
   ``NumberOfFractionsPlanned``. Unambiguous means every treatment beam states a BeamDose and
   all beams that deliver dose specify it at the same point (or there is one such beam);
   beam doses at different points do not add up to a prescription.
3. Otherwise ``rx_gy`` is None; the caller asks for ``--rx-gy``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from sbrtstandards.dicom.common import (
    RT_PLAN_STORAGE,
    RT_STRUCTURE_SET_STORAGE,
    StudyInfo,
    new_dataset,
    new_uid,
    read_dataset,
    save_dataset,
)
from sbrtstandards.dicom.rtdose import ds_number
from sbrtstandards.errors import InputError

SAME_POINT_TOL_MM = 0.01  # beam dose specification points closer than this are one point
CONSISTENCY_TOL = 0.01  # relative difference between the two prescription sources that warrants a warning
SYNTHETIC_DESCRIPTION = "Synthetic SBRT plan written by SBRT Standards (phantom); not for treatment"


@dataclass
class PlanTarget:
    """A TARGET dose reference of the plan."""

    roi_number: int | None
    name: str | None  # DoseReferenceDescription, else the ROI name if known
    prescription_gy: float | None


@dataclass
class PlanBeam:
    """A beam as the fraction scheme and the beam sequence describe it (for reports and BEAM doses)."""

    number: int
    name: str | None
    machine: str | None
    beam_type: str | None
    radiation_type: str | None
    meterset: float | None  # per fraction, in the primary dosimeter unit (MU)
    beam_dose_gy: float | None  # per fraction, at the beam dose specification point


@dataclass
class Plan:
    """The prescription and references of an RT Plan."""

    path: Path | None
    sop_instance_uid: str
    label: str
    rx_gy: float | None  # total prescription dose (Gy)
    fractions: int | None
    dose_per_fraction_gy: float | None
    targets: list[PlanTarget]
    frame_of_reference_uid: str | None
    referenced_structure_set_uid: str | None
    study: StudyInfo
    rx_source: str | None = None  # "DoseReferenceSequence", "BeamDose" or None
    beams: list[PlanBeam] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_rtplan(path: str | os.PathLike[str], *, roi_names: Mapping[int, str] | None = None) -> Plan:
    """Read the prescription, fractionation, targets and references of an RT Plan file.

    ``roi_names`` (ROI number -> name, from the referenced structure set) names targets whose
    dose reference has no description.
    """
    path = Path(path)
    ds = read_dataset(path, stop_before_pixels=True, expect="RTPLAN")
    warnings: list[str] = []
    targets = _targets(ds, path, roi_names or {})
    fractions = _fractions(ds, path, warnings)
    beams = _beams(ds, path)

    rx_gy: float | None = None
    rx_source: str | None = None
    prescribed = [t.prescription_gy for t in targets if t.prescription_gy is not None]
    beam_rx, beam_reason = _rx_from_beam_doses(ds, path, fractions)
    if prescribed:
        rx_gy, rx_source = max(prescribed), "DoseReferenceSequence"
        if len(set(prescribed)) > 1:
            listed = ", ".join(f"{t.name or t.roi_number}: {t.prescription_gy:g} Gy" for t in targets)
            warnings.append(f"several target prescriptions ({listed}); the largest, {rx_gy:g} Gy, is used")
        if beam_rx is not None and abs(beam_rx - rx_gy) > CONSISTENCY_TOL * rx_gy:
            warnings.append(
                f"beam doses x fractions give {beam_rx:.4g} Gy, the target prescription {rx_gy:.4g} Gy"
            )
    elif beam_rx is not None:
        rx_gy, rx_source = beam_rx, "BeamDose"
        warnings.append(
            f"no target prescription dose; {rx_gy:.4g} Gy derived from the beam doses x {fractions} fractions"
        )
    else:
        warnings.append(f"no prescription: no TARGET TargetPrescriptionDose, and {beam_reason}")

    ss_seq = ds.get("ReferencedStructureSetSequence") or []
    ss_uid = _text(ss_seq[0], "ReferencedSOPInstanceUID") if ss_seq else None
    return Plan(
        path=path,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        label=str(ds.get("RTPlanLabel", "") or ""),
        rx_gy=rx_gy,
        fractions=fractions,
        dose_per_fraction_gy=rx_gy / fractions if rx_gy is not None and fractions else None,
        targets=targets,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or "") or None,
        referenced_structure_set_uid=ss_uid,
        study=StudyInfo.from_dataset(ds),
        rx_source=rx_source,
        beams=beams,
        warnings=warnings,
    )


def _number(item: Dataset, keyword: str, path: Path, what: str) -> float | None:
    """A numeric attribute of a sequence item (None when absent or empty)."""
    try:
        raw = item.get(keyword)
    except (TypeError, ValueError) as exc:  # pydicom set to raise on invalid values
        raise InputError(f"{path}: RTPLAN {what} {keyword} is not valid ({exc})") from None
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InputError(f"{path}: RTPLAN {what} {keyword} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{path}: RTPLAN {what} {keyword} {raw!r} is not finite")
    return value


def _integer(item: Dataset, keyword: str, path: Path, what: str) -> int | None:
    value = _number(item, keyword, path, what)
    if value is None:
        return None
    if value != int(value):
        raise InputError(f"{path}: RTPLAN {what} {keyword} {value:g} is not a whole number")
    return int(value)


def _text(item: Dataset, keyword: str) -> str | None:
    value = str(item.get(keyword, "") or "").strip()
    return value or None


def _targets(ds: Dataset, path: Path, roi_names: Mapping[int, str]) -> list[PlanTarget]:
    targets = []
    for n, ref in enumerate(ds.get("DoseReferenceSequence") or [], start=1):
        if str(ref.get("DoseReferenceType", "")).strip().upper() != "TARGET":
            continue
        what = f"dose reference {n}"
        roi = _integer(ref, "ReferencedROINumber", path, what)
        rx = _number(ref, "TargetPrescriptionDose", path, what)
        if rx is not None and rx <= 0:
            raise InputError(f"{path}: RTPLAN {what} TargetPrescriptionDose {rx:g} Gy is not positive")
        name = _text(ref, "DoseReferenceDescription") or (roi_names.get(roi) if roi is not None else None)
        targets.append(PlanTarget(roi_number=roi, name=name, prescription_gy=rx))
    return targets


def _fractions(ds: Dataset, path: Path, warnings: list[str]) -> int | None:
    groups = ds.get("FractionGroupSequence") or []
    if not groups:
        warnings.append("no fraction group: number of fractions unknown")
        return None
    if len(groups) > 1:
        warnings.append(f"{len(groups)} fraction groups; the first one's fractions and beams are used")
    n = _integer(groups[0], "NumberOfFractionsPlanned", path, "fraction group 1")
    if n is None or n < 1:
        warnings.append(f"fraction group 1 has NumberOfFractionsPlanned {n}: number of fractions unknown")
        return None
    return n


def _beams(ds: Dataset, path: Path) -> list[PlanBeam]:
    """Beams of the first fraction group, joined to the beam sequence by beam number."""
    described: dict[int, Dataset] = {}
    for n, beam in enumerate(ds.get("BeamSequence") or ds.get("IonBeamSequence") or [], start=1):
        number = _integer(beam, "BeamNumber", path, f"beam {n}")
        if number is not None:
            described[number] = beam
    groups = ds.get("FractionGroupSequence") or []
    refs = (groups[0].get("ReferencedBeamSequence") or []) if groups else []
    beams = []
    for n, ref in enumerate(refs, start=1):
        what = f"fraction group 1 beam {n}"
        number = _integer(ref, "ReferencedBeamNumber", path, what)
        if number is None:
            continue
        beam = described.get(number, Dataset())
        beams.append(
            PlanBeam(
                number=number,
                name=_text(beam, "BeamName"),
                machine=_text(beam, "TreatmentMachineName"),
                beam_type=_text(beam, "BeamType"),
                radiation_type=_text(beam, "RadiationType"),
                meterset=_number(ref, "BeamMeterset", path, what),
                beam_dose_gy=_number(ref, "BeamDose", path, what),
            )
        )
    return beams


def _rx_from_beam_doses(ds: Dataset, path: Path, fractions: int | None) -> tuple[float | None, str]:
    """Sum of BeamDose x fractions when unambiguous, else (None, the reason)."""
    groups = ds.get("FractionGroupSequence") or []
    refs = (groups[0].get("ReferencedBeamSequence") or []) if groups else []
    if not refs:
        return None, "no beams in the fraction scheme"
    if fractions is None:
        return None, "no number of fractions"
    doses: list[float] = []
    points: list[Any] = []
    for n, ref in enumerate(refs, start=1):
        what = f"fraction group 1 beam {n}"
        dose = _number(ref, "BeamDose", path, what)
        if dose is None:
            return None, f"beam {n} of the fraction scheme has no BeamDose"
        if dose < 0:
            return None, f"beam {n} of the fraction scheme has a negative BeamDose"
        if dose > 0:
            doses.append(dose)
            points.append(ref.get("BeamDoseSpecificationPoint"))
    if not doses:
        return None, "all beam doses are zero"
    if len(doses) > 1:
        if any(p is None or len(p) != 3 for p in points):
            return None, "the beam doses have no common dose specification point"
        xyz = np.asarray([[float(v) for v in p] for p in points])
        if np.ptp(xyz, axis=0).max() > SAME_POINT_TOL_MM:
            return None, "the beam doses are specified at different points"
    return float(sum(doses)) * fractions, ""


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def write_rtplan(
    path: str | os.PathLike[str],
    *,
    study: StudyInfo,
    rx_gy: float,
    fractions: int,
    target_roi_number: int,
    referenced_structure_set_uid: str,
    label: str = "SBRT",
    target_name: str = "PTV",
    beams: int = 2,
    machine: str = "SBRT-Linac",
    isocenter_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    mu_per_cgy: float = 2.5,
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    series_number: int = 1,
) -> Path:
    """Write a minimal valid RT Plan: one TARGET prescription and ``beams`` 6 MV VMAT-like arcs.

    The arcs alternate clockwise 181->179 and counter-clockwise 179->181 degrees (two control
    points each) around ``isocenter_mm`` (LPS); the meterset per fraction is
    ``mu_per_cgy`` x the dose per fraction in cGy, split evenly over the arcs. The plan is
    synthetic: it describes the prescription for the plan check, not a deliverable treatment.
    """
    path = Path(path)
    rx_gy, fractions, beams = _check_plan_inputs(path, rx_gy, fractions, beams, label, machine, target_name)
    iso = [float(v) for v in isocenter_mm]
    if len(iso) != 3 or not all(math.isfinite(v) for v in iso):
        raise InputError(f"{path}: isocenter {isocenter_mm!r} is not a finite LPS point")

    ds = new_dataset(RT_PLAN_STORAGE, sop_instance_uid)
    study.apply(ds)
    ds.Modality = "RTPLAN"
    ds.SeriesInstanceUID = series_instance_uid or new_uid()
    ds.SeriesNumber = str(series_number)
    ds.SeriesDescription = f"{label} plan"
    ds.OperatorsName = ""
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = "1"
    _write_general_plan(ds, label, referenced_structure_set_uid)
    ds.DoseReferenceSequence = [_target_reference(rx_gy, target_roi_number, target_name)]
    meterset = mu_per_cgy * rx_gy / fractions * 100.0 / beams
    ds.FractionGroupSequence = [_fraction_group(fractions, beams, meterset)]
    ds.BeamSequence = [_arc_beam(n, machine, iso) for n in range(1, beams + 1)]
    setup = Dataset()
    setup.PatientPosition = "HFS"
    setup.PatientSetupNumber = "1"
    ds.PatientSetupSequence = [setup]
    ds.ApprovalStatus = "UNAPPROVED"
    return save_dataset(ds, path)


def _check_plan_inputs(
    path: Path, rx_gy: float, fractions: int, beams: int, label: str, machine: str, target_name: str
) -> tuple[float, int, int]:
    try:
        rx = float(rx_gy)
    except (TypeError, ValueError):
        raise InputError(f"{path}: prescription {rx_gy!r} is not a number") from None
    if not math.isfinite(rx) or rx <= 0:
        raise InputError(f"{path}: prescription must be a positive dose in Gy, got {rx_gy!r}")
    for name, value in (("fractions", fractions), ("beams", beams)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{path}: number of {name} must be a whole number >= 1, got {value!r}")
    for name, value, limit in (
        ("plan label", label, 16),
        ("machine name", machine, 16),
        ("target name", target_name, 64),
    ):
        if not value or len(value) > limit or "\\" in value:
            raise InputError(f"{path}: {name} {value!r} must have 1 to {limit} characters and no backslash")
    return rx, int(fractions), int(beams)


def _write_general_plan(ds: Dataset, label: str, structure_set_uid: str) -> None:
    """RT General Plan module: a PATIENT-geometry plan on a structure set."""
    ds.RTPlanLabel = label
    ds.RTPlanName = label
    ds.RTPlanDescription = SYNTHETIC_DESCRIPTION
    ds.RTPlanDate = ds.InstanceCreationDate
    ds.RTPlanTime = ds.InstanceCreationTime
    ds.RTPlanGeometry = "PATIENT"
    ref = Dataset()
    ref.ReferencedSOPClassUID = RT_STRUCTURE_SET_STORAGE
    ref.ReferencedSOPInstanceUID = structure_set_uid
    ds.ReferencedStructureSetSequence = [ref]


def _target_reference(rx_gy: float, roi_number: int, name: str) -> Dataset:
    """RT Prescription module item: the target volume and its total prescribed dose."""
    ref = Dataset()
    ref.DoseReferenceNumber = "1"
    ref.DoseReferenceUID = new_uid()
    ref.DoseReferenceStructureType = "VOLUME"
    ref.DoseReferenceDescription = name
    ref.ReferencedROINumber = str(int(roi_number))
    ref.DoseReferenceType = "TARGET"
    ref.TargetPrescriptionDose = ds_number(rx_gy)
    return ref


def _fraction_group(fractions: int, beams: int, meterset: float) -> Dataset:
    """RT Fraction Scheme module item: fractions and the meterset of every beam."""
    group = Dataset()
    group.FractionGroupNumber = "1"
    group.NumberOfFractionsPlanned = str(fractions)
    group.NumberOfBeams = str(beams)
    group.NumberOfBrachyApplicationSetups = "0"
    refs = []
    for n in range(1, beams + 1):
        ref = Dataset()
        ref.BeamMeterset = ds_number(round(meterset, 3))
        ref.ReferencedBeamNumber = str(n)
        refs.append(ref)
    group.ReferencedBeamSequence = refs
    return group


def _arc_beam(number: int, machine: str, iso: list[float]) -> Dataset:
    """RT Beams module item: a 6 MV photon arc with a start and an end control point."""
    clockwise = number % 2 == 1
    start, stop = (181.0, 179.0) if clockwise else (179.0, 181.0)
    beam = Dataset()
    beam.TreatmentMachineName = machine
    beam.PrimaryDosimeterUnit = "MU"
    beam.SourceAxisDistance = "1000"
    beam.BeamLimitingDeviceSequence = [_jaw_device("ASYMX"), _jaw_device("ASYMY")]
    beam.BeamNumber = str(number)
    beam.BeamName = f"Arc{number}"
    beam.BeamDescription = ("clockwise" if clockwise else "counter-clockwise") + " VMAT-like arc"
    beam.BeamType = "DYNAMIC"
    beam.RadiationType = "PHOTON"
    beam.TreatmentDeliveryType = "TREATMENT"
    beam.NumberOfWedges = "0"
    beam.NumberOfCompensators = "0"
    beam.NumberOfBoli = "0"
    beam.NumberOfBlocks = "0"
    beam.FinalCumulativeMetersetWeight = "1"
    beam.NumberOfControlPoints = "2"
    first = _control_point(0, start, "CW" if clockwise else "CC", 0.0)
    first.NominalBeamEnergy = "6"
    first.DoseRateSet = "600"
    first.BeamLimitingDevicePositionSequence = [_jaw_position("ASYMX"), _jaw_position("ASYMY")]
    first.BeamLimitingDeviceAngle = "30" if clockwise else "330"
    first.BeamLimitingDeviceRotationDirection = "NONE"
    first.PatientSupportAngle = "0"
    first.PatientSupportRotationDirection = "NONE"
    first.TableTopEccentricAngle = "0"
    first.TableTopEccentricRotationDirection = "NONE"
    first.TableTopPitchAngle = 0.0
    first.TableTopPitchRotationDirection = "NONE"
    first.TableTopRollAngle = 0.0
    first.TableTopRollRotationDirection = "NONE"
    first.TableTopVerticalPosition = ""
    first.TableTopLongitudinalPosition = ""
    first.TableTopLateralPosition = ""
    first.IsocenterPosition = [ds_number(v) for v in iso]
    last = _control_point(1, stop, "NONE", 1.0)
    beam.ControlPointSequence = [first, last]
    beam.ReferencedPatientSetupNumber = "1"
    return beam


def _control_point(index: int, gantry_deg: float, rotation: str, weight: float) -> Dataset:
    cp = Dataset()
    cp.ControlPointIndex = str(index)
    cp.GantryAngle = ds_number(gantry_deg)
    cp.GantryRotationDirection = rotation
    cp.CumulativeMetersetWeight = ds_number(weight)
    return cp


def _jaw_device(kind: str) -> Dataset:
    device = Dataset()
    device.RTBeamLimitingDeviceType = kind
    device.NumberOfLeafJawPairs = "1"
    return device


def _jaw_position(kind: str) -> Dataset:
    position = Dataset()
    position.RTBeamLimitingDeviceType = kind
    position.LeafJawPositions = ["-50", "50"]
    return position
