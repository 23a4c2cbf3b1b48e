"""Hand-made DICOM objects for the CT, scan and 4D-CT tests, written with pydicom directly.

These files do not come from the project's own writer, so the readers are tested against
series whose geometry is set slice by slice here: shuffled names, tilted or oblique
orientations, gaps, several Frames of Reference, non-integral rescales, no file meta.
Pixel values come from a known function of the LPS position of each pixel centre, so a
test can check any voxel against its analytic value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def ramp_hu(points_mm: np.ndarray) -> np.ndarray:
    """A linear HU field of the LPS position: steep enough that 0.1 mm of error shows as > 2 HU."""
    p = np.asarray(points_mm, dtype=float)
    return 20.0 * p[..., 0] - 25.0 * p[..., 1] + 30.0 * p[..., 2] - 200.0


def uid() -> str:
    return str(generate_uid())


def _save(ds: Dataset, path: Path, file_meta: bool) -> None:
    """Write a Part 10 file, or a bare dataset without preamble and file meta."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if file_meta:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        if PYDICOM_MAJOR >= 3:
            ds.save_as(str(path), enforce_file_format=True)
        else:  # pragma: no cover
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.preamble = b"\0" * 128
            ds.save_as(str(path), write_like_original=False)
    elif PYDICOM_MAJOR >= 3:
        pydicom.dcmwrite(str(path), ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    else:  # pragma: no cover
        ds.is_little_endian, ds.is_implicit_VR = True, True
        pydicom.dcmwrite(str(path), ds, write_like_original=True)


def pixel_points(
    position: Sequence[float],
    orientation: Sequence[float],
    shape: tuple[int, int],
    pixel_spacing: tuple[float, float],
) -> np.ndarray:
    """LPS centres (rows, columns, 3) of the pixels of one slice (DICOM Image Plane equation)."""
    row_dir, col_dir = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    j, i = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return (
        np.asarray(position, float)
        + (i[..., None] * pixel_spacing[1]) * row_dir
        + (j[..., None] * pixel_spacing[0]) * col_dir
    )


def write_slices(
    folder: Path,
    positions: Sequence[Sequence[float]],
    *,
    orientation: Sequence[float] = AXIAL,
    shape: tuple[int, int] = (12, 16),
    pixel_spacing: tuple[float, float] = (1.5, 1.25),
    values: Callable[[np.ndarray], np.ndarray] = ramp_hu,
    slope: float = 1.0,
    intercept: float = 0.0,
    unsigned: bool = False,
    series_uid: str | None = None,
    study_uid: str | None = None,
    for_uid: str | Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    instance_numbers: Sequence[int] | None = None,
    file_meta: bool = True,
    series_description: str = "CT",
    series_number: int = 2,
    per_slice: Sequence[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """One CT Image Storage file per position; returns the paths in the order of ``positions``.

    ``shape`` is (rows, columns) and ``pixel_spacing`` (row spacing, column spacing) as in
    DICOM. ``for_uid`` may give one Frame of Reference per slice.
    """
    series_uid = series_uid or uid()
    study_uid = study_uid or uid()
    for_uids = (
        [for_uid or uid()] * len(positions) if not isinstance(for_uid, (list, tuple)) else list(for_uid)
    )
    paths = []
    for n, position in enumerate(positions):
        hu = values(pixel_points(position, orientation, shape, pixel_spacing))
        stored = np.rint((hu - intercept) / slope)
        ds = Dataset()
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = uid()
        ds.Modality = "CT"
        ds.PatientName = "Test^Factory"
        ds.PatientID = "FACTORY"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = series_description
        ds.SeriesNumber = series_number
        ds.FrameOfReferenceUID = for_uids[n]
        ds.InstanceNumber = instance_numbers[n] if instance_numbers is not None else n + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
        ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
        ds.SliceThickness = "1"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = shape
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0 if unsigned else 1
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        dtype = "<u2" if unsigned else "<i2"
        limits = np.iinfo(np.uint16 if unsigned else np.int16)
        if stored.min() < limits.min or stored.max() > limits.max:
            raise ValueError(f"test values {stored.min()}..{stored.max()} do not fit the {dtype} store")
        ds.add_new(0x7FE00010, "OW", stored.astype(dtype).tobytes())
        for keyword, value in {**(extra or {}), **(per_slice[n] if per_slice else {})}.items():
            setattr(ds, keyword, value)
        path = folder / (names[n] if names is not None else f"slice_{n:03d}.dcm")
        _save(ds, path, file_meta)
        paths.append(path)
    return paths


def axial_positions(
    n: int, *, x0: float = -10.0, y0: float = 5.0, z0: float = -20.0, dz: float = 2.5
) -> list:
    return [(x0, y0, z0 + k * dz) for k in range(n)]


def write_rtstruct(
    path: Path,
    *,
    study_uid: str,
    for_uid: str,
    series_uid: str | None = None,
    sop_uids: Sequence[str] = (),
    label: str = "RS",
    file_meta: bool = True,
) -> Path:
    """A minimal structure set (no ROIs) that references a series and some of its images."""
    ds = Dataset()
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = uid()
    ds.Modality = "RTSTRUCT"
    ds.PatientName = "Test^Factory"
    ds.PatientID = "FACTORY"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = uid()
    ds.StructureSetLabel = label
    frame = Dataset()
    frame.FrameOfReferenceUID = for_uid
    if series_uid is not None:
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        images = []
        for sop in sop_uids:
            item = Dataset()
            item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
            item.ReferencedSOPInstanceUID = sop
            images.append(item)
        series.ContourImageSequence = images
        study = Dataset()
        study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        study.ReferencedSOPInstanceUID = study_uid
        study.RTReferencedSeriesSequence = [series]
        frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    ds.StructureSetROISequence = []
    _save(ds, path, file_meta)
    return path
