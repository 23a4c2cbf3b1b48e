"""DICOM helpers shared by the readers and writers (pydicom 2.4 and 3.x).

Slicer bundles its own pydicom, so nothing here depends on one major version.
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from sbrtstandards import __version__
from sbrtstandards.atomic import atomic_path
from sbrtstandards.errors import InputError

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"

SOP_CLASS_MODALITY = {
    CT_IMAGE_STORAGE: "CT",
    RT_DOSE_STORAGE: "RTDOSE",
    RT_STRUCTURE_SET_STORAGE: "RTSTRUCT",
    RT_PLAN_STORAGE: "RTPLAN",
}

MANUFACTURER = "SBRT Standards"
PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])


def new_uid() -> str:
    return str(generate_uid())


def read_dataset(
    path: str | os.PathLike[str], *, stop_before_pixels: bool = False, expect: str | None = None
) -> Dataset:
    """Read one DICOM file, with or without file meta (some TPS exports lack it).

    ``expect`` is a modality (``"RTSTRUCT"``, ``"RTDOSE"``, ``"RTPLAN"``, ``"CT"``); a file of
    another kind raises :class:`InputError` naming both.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a DICOM file")
    try:
        with warnings.catch_warnings():  # pydicom warns about oddities of non-DICOM files; we raise instead
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a readable DICOM file ({exc})") from None
    if "SOPClassUID" not in ds and "Modality" not in ds:
        raise InputError(f"{path}: not a DICOM file (no SOP Class UID or Modality)")
    if not stop_before_pixels:
        ensure_transfer_syntax(ds)
    if expect is not None:
        kind = modality_of(ds)
        if kind != expect:
            raise InputError(f"{path}: expected a DICOM {expect} object, found {kind or 'an unknown object'}")
    return ds


def ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a file without file meta the transfer syntax it was read with, so its pixels decode."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    if "TransferSyntaxUID" in meta:
        return
    encoding = getattr(ds, "original_encoding", None)  # pydicom 3: (implicit, little endian)
    if encoding is not None and encoding[0] is not None:
        implicit, little = encoding
    else:  # pragma: no cover - pydicom 2.4
        implicit, little = getattr(ds, "is_implicit_VR", True), getattr(ds, "is_little_endian", True)
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def modality_of(ds: Dataset) -> str | None:
    """The object's kind: RTSTRUCT/RTDOSE/RTPLAN/CT by SOP class, else the Modality tag."""
    sop = str(ds.get("SOPClassUID", ""))
    if sop in SOP_CLASS_MODALITY:
        return SOP_CLASS_MODALITY[sop]
    mod = ds.get("Modality")
    return str(mod) if mod else None


def new_dataset(sop_class_uid: str, sop_instance_uid: str | None = None) -> FileDataset:
    """An empty dataset with file meta (Explicit VR Little Endian) and the SOP Common module."""
    sop_instance_uid = sop_instance_uid or new_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    if PYDICOM_MAJOR < 3:  # pragma: no cover - pydicom 2.4 needs the encoding on the dataset
        ds.is_little_endian = True
        ds.is_implicit_VR = False
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: Chinese ROI names round-trip
    now = _dt.datetime.now()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = __version__
    return ds


def save_dataset(ds: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` as a DICOM Part 10 file, atomically (temporary name, then rename)."""
    with atomic_path(path, suffix=".dcm") as tmp:
        if PYDICOM_MAJOR >= 3:
            ds.save_as(str(tmp), enforce_file_format=True)
        else:  # pragma: no cover - pydicom 2.4
            ds.save_as(str(tmp), write_like_original=False)
    return Path(path)


def copy_patient_study(src: Dataset, dst: Dataset) -> None:
    """Copy the Patient and General Study module attributes that identify the study."""
    for kw in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "ReferringPhysicianName",
        "AccessionNumber",
        "StudyDescription",
    ):
        if kw in src:
            setattr(dst, kw, src.data_element(kw).value)


@dataclass
class StudyInfo:
    """Patient and study identity that every object of one synthetic or derived case shares."""

    patient_name: str = "SBRT^Phantom"
    patient_id: str = "SBRT-PHANTOM"
    study_instance_uid: str = field(default_factory=new_uid)
    frame_of_reference_uid: str = field(default_factory=new_uid)
    study_date: str = "20260101"
    study_time: str = "080000"
    study_id: str = "1"
    study_description: str = "SBRT"

    @classmethod
    def from_dataset(cls, ds: Dataset) -> StudyInfo:
        """Identity of an existing object, so derived objects join its study and Frame of Reference."""
        return cls(
            patient_name=str(ds.get("PatientName", "")),
            patient_id=str(ds.get("PatientID", "")),
            study_instance_uid=str(ds.get("StudyInstanceUID", "")) or new_uid(),
            frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
            study_date=str(ds.get("StudyDate", "")),
            study_time=str(ds.get("StudyTime", "")),
            study_id=str(ds.get("StudyID", "")),
            study_description=str(ds.get("StudyDescription", "")),
        )

    def apply(self, ds: Dataset) -> None:
        """Write the Patient and General Study modules (and the Frame of Reference UID) into ``ds``."""
        ds.PatientName = self.patient_name
        ds.PatientID = self.patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = self.study_instance_uid
        ds.StudyDate = self.study_date
        ds.StudyTime = self.study_time
        ds.StudyID = self.study_id
        ds.StudyDescription = self.study_description
        ds.ReferringPhysicianName = ""
        ds.AccessionNumber = ""
        ds.FrameOfReferenceUID = self.frame_of_reference_uid


@dataclass(frozen=True)
class SeriesReference:
    """What an RTSTRUCT needs to reference an image series (and each of its slices).

    ``sop_instance_uids[k]`` and ``slice_positions_mm[k]`` belong to slice ``k`` of the image
    (the same order as the image's k axis); positions are along the slice normal, in mm.
    """

    study: StudyInfo
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    slice_positions_mm: tuple[float, ...]
    series_description: str = ""
