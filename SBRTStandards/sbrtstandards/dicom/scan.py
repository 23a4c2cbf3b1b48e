"""Find the DICOM objects in files and folders, reading headers only.

Users hand the tools whatever their TPS or PACS exported: folders with thousands of slices,
several series, RT objects, a README or a DICOMDIR beside them. :func:`scan_dicom` walks it
all once, keeps a small :class:`DicomFile` record per object (the header fields that the CT
reader, the 4D-CT splitter and the RT readers need to pick and sort objects) and skips what
is not DICOM, so the callers never open a file twice just to learn what it is.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from sbrtstandards.dicom.common import modality_of
from sbrtstandards.errors import InputError

ProgressCallback = Callable[[float, str], None]

# Values larger than this are left on disk while scanning (contour points, overlays...).
_DEFER_SIZE = "16 KB"
# First tag groups of a DICOM file written without the 128-byte preamble and "DICM".
_HEADERLESS_GROUPS = (0x0000, 0x0002, 0x0008)


@dataclass(frozen=True)
class DicomFile:
    """Header summary of one DICOM object, enough to group, pick and sort without re-reading."""

    path: Path
    modality: str | None  # "CT", "RTSTRUCT", "RTDOSE", "RTPLAN", "MR", ... (common.modality_of)
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str | None  # RTSTRUCT: from ReferencedFrameOfReferenceSequence
    series_description: str
    series_number: int | None
    # image-only header fields (None for RT objects) used for sorting and 4D-CT splitting:
    image_position_mm: tuple[float, float, float] | None
    image_orientation: tuple[float, ...] | None
    temporal_position_index: int | None
    image_comments: str
    instance_number: int | None = None
    image_type: tuple[str, ...] = ()
    rows: int | None = None
    columns: int | None = None
    pixel_spacing_mm: tuple[float, float] | None = None  # (row spacing, column spacing) as in DICOM
    number_of_frames: int | None = None
    trigger_time_ms: float | None = None
    nominal_cardiac_phase_percent: float | None = None  # NominalPercentageOfCardiacPhase
    acquisition_time: str = ""
    # RTSTRUCT: the image series and image instances that its contours refer to
    referenced_series_uids: tuple[str, ...] = ()
    referenced_sop_instance_uids: tuple[str, ...] = ()

    @property
    def is_image(self) -> bool:
        """True for a single-frame image with a position and an orientation (a slice)."""
        return self.image_position_mm is not None and self.image_orientation is not None

    @property
    def is_localizer(self) -> bool:
        """Scout / topogram images: CT modality but not part of a volume."""
        return "LOCALIZER" in self.image_type

    def describe_series(self) -> str:
        """``UID (series 3, 'CT 4D 20%')`` for messages that list series."""
        bits = []
        if self.series_number is not None:
            bits.append(f"series {self.series_number}")
        if self.series_description:
            bits.append(repr(self.series_description))
        return f"{self.series_instance_uid} ({', '.join(bits)})" if bits else self.series_instance_uid


PathsOrFiles = Union[str, Path, Iterable[Union[str, Path, DicomFile]]]


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    """A multi-valued DS as floats, or None when absent or malformed."""
    if value is None or value == "":
        return None
    try:
        scalar = isinstance(value, (str, bytes, float, int))
        items = [float(value)] if scalar else [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return tuple(items) if len(items) == count else None


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return None


def _float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _looks_like_dicom(path: Path) -> bool:
    """Cheap sniff: Part 10 preamble + "DICM", or a headerless dataset starting in group 0/2/8."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    group_le = int.from_bytes(head[0:2], "little")
    return group_le in _HEADERLESS_GROUPS


def _rtstruct_references(ds: Dataset) -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
    """Frame of Reference, image series and image instances that a structure set points to."""
    for_uid: str | None = None
    series: list[str] = []
    sops: list[str] = []
    for frame in ds.get("ReferencedFrameOfReferenceSequence", None) or []:
        if for_uid is None and frame.get("FrameOfReferenceUID"):
            for_uid = str(frame.FrameOfReferenceUID)
        for study in frame.get("RTReferencedStudySequence", None) or []:
            for ser in study.get("RTReferencedSeriesSequence", None) or []:
                uid = _text(ser.get("SeriesInstanceUID"))
                if uid and uid not in series:
                    series.append(uid)
                for img in ser.get("ContourImageSequence", None) or []:
                    sop = _text(img.get("ReferencedSOPInstanceUID"))
                    if sop:
                        sops.append(sop)
    return for_uid, tuple(series), tuple(sops)


def dicom_file_from_dataset(ds: Dataset, path: str | os.PathLike[str]) -> DicomFile:
    """The :class:`DicomFile` summary of an already read dataset."""
    modality = modality_of(ds)
    for_uid = _text(ds.get("FrameOfReferenceUID")) or None
    ref_series: tuple[str, ...] = ()
    ref_sops: tuple[str, ...] = ()
    if modality == "RTSTRUCT":
        struct_for, ref_series, ref_sops = _rtstruct_references(ds)
        for_uid = for_uid or struct_for
    position = _floats(ds.get("ImagePositionPatient"), 3)
    orientation = _floats(ds.get("ImageOrientationPatient"), 6)
    spacing = _floats(ds.get("PixelSpacing"), 2)
    image_type = ds.get("ImageType")
    if image_type is None or image_type == "":
        image_types: tuple[str, ...] = ()
    elif isinstance(image_type, str):
        image_types = tuple(v.strip().upper() for v in image_type.split("\\"))
    else:
        image_types = tuple(str(v).strip().upper() for v in image_type)
    return DicomFile(
        path=Path(path),
        modality=modality,
        sop_class_uid=_text(ds.get("SOPClassUID")),
        sop_instance_uid=_text(ds.get("SOPInstanceUID")),
        study_instance_uid=_text(ds.get("StudyInstanceUID")),
        series_instance_uid=_text(ds.get("SeriesInstanceUID")),
        frame_of_reference_uid=for_uid,
        series_description=_text(ds.get("SeriesDescription")),
        series_number=_int_or_none(ds.get("SeriesNumber")),
        image_position_mm=position,  # type: ignore[arg-type]
        image_orientation=orientation,
        temporal_position_index=_int_or_none(ds.get("TemporalPositionIndex")),
        image_comments=_text(ds.get("ImageComments")),
        instance_number=_int_or_none(ds.get("InstanceNumber")),
        image_type=image_types,
        rows=_int_or_none(ds.get("Rows")),
        columns=_int_or_none(ds.get("Columns")),
        pixel_spacing_mm=spacing,  # type: ignore[arg-type]
        number_of_frames=_int_or_none(ds.get("NumberOfFrames")),
        trigger_time_ms=_float_or_none(ds.get("TriggerTime")),
        nominal_cardiac_phase_percent=_float_or_none(ds.get("NominalPercentageOfCardiacPhase")),
        acquisition_time=_text(ds.get("AcquisitionTime")),
        referenced_series_uids=ref_series,
        referenced_sop_instance_uids=ref_sops,
    )


def read_header(path: str | os.PathLike[str]) -> DicomFile | None:
    """The header summary of one file, or None when it is not a DICOM object."""
    path = Path(path)
    if not _looks_like_dicom(path):
        return None
    # Garbage that merely starts like DICOM, and odd values in real headers, make pydicom warn;
    # the scan is a sniff, the readers that use an object read it again in full.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True, defer_size=_DEFER_SIZE)
            if "SOPClassUID" not in ds and "Modality" not in ds:
                return None
            return dicom_file_from_dataset(ds, path)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
            # A header so broken that its own tags cannot be decoded is treated as not DICOM.
            return None


def _candidate_files(paths: Sequence[Path]) -> list[Path]:
    """Every regular file under ``paths`` (folders recursively), in a stable order, once."""
    found: dict[Path, None] = {}
    for root in paths:
        if not root.exists():
            raise InputError(f"{root}: no such file or folder")
        if root.is_file():
            found.setdefault(root, None)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            # Folders and files that atomic writers are still filling in (".name.XXXX.part").
            dirnames[:] = sorted(d for d in dirnames if not d.endswith(".part"))
            for name in sorted(filenames):
                if name.endswith(".part"):
                    continue
                found.setdefault(Path(dirpath) / name, None)
    return list(found)


def _as_paths(paths: PathsOrFiles) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]  # type: ignore[arg-type]


def _describe_paths(paths: Sequence[Path]) -> str:
    if len(paths) <= 3:
        return ", ".join(str(p) for p in paths)
    return ", ".join(str(p) for p in paths[:3]) + f" and {len(paths) - 3} more"


def scan_dicom(
    paths: Iterable[str | Path] | str | Path, *, progress: ProgressCallback | None = None
) -> list[DicomFile]:
    """Header summaries of every DICOM object in ``paths`` (files, or folders searched recursively).

    Non-DICOM files (README, JSON, images...) are skipped silently, but finding no DICOM
    object at all is an :class:`InputError` that names the paths. Only headers are read
    (pixel data and large values stay on disk), so thousands of slices scan quickly.
    """
    roots = _as_paths(paths)
    if not roots:
        raise InputError("no DICOM files or folders given")
    candidates = _candidate_files(roots)
    result: list[DicomFile] = []
    total = len(candidates)
    step = max(1, total // 100)
    for n, path in enumerate(candidates):
        record = read_header(path)
        if record is not None:
            result.append(record)
        if progress is not None and (n % step == 0 or n == total - 1):
            progress((n + 1) / total, f"scanning DICOM files ({n + 1}/{total})")
    if not result:
        plural = "s" if total != 1 else ""
        what = "no files" if not candidates else f"{total} file{plural}, none of them DICOM"
        raise InputError(f"no DICOM objects in {_describe_paths(roots)} ({what})")
    return result


def _as_files(paths_or_files: PathsOrFiles, progress: ProgressCallback | None = None) -> list[DicomFile]:
    """DicomFile records as given, or scanned from paths (a mix of both is allowed)."""
    if isinstance(paths_or_files, (str, os.PathLike)):
        return scan_dicom([paths_or_files], progress=progress)
    items = list(paths_or_files)
    records = [item for item in items if isinstance(item, DicomFile)]
    paths = [Path(item) for item in items if not isinstance(item, DicomFile)]  # type: ignore[arg-type]
    if paths:
        records.extend(scan_dicom(paths, progress=progress))
    if not items:
        raise InputError("no DICOM files or folders given")
    return records


def _where(paths_or_files: PathsOrFiles, files: Sequence[DicomFile]) -> str:
    """The user's input, as they gave it, for messages."""
    if isinstance(paths_or_files, (str, os.PathLike)):
        return str(paths_or_files)
    given = [Path(i) for i in paths_or_files if not isinstance(i, DicomFile)]  # type: ignore[arg-type]
    if given:
        return _describe_paths(given)
    parents = sorted({str(f.path.parent) for f in files})
    return _describe_paths([Path(p) for p in parents]) if parents else "the given files"


def find_objects(files: Sequence[DicomFile], modality: str) -> list[DicomFile]:
    """The objects of one modality (``"CT"``, ``"RTSTRUCT"``...), in the given order."""
    return [f for f in files if f.modality == modality]


def find_single(
    paths_or_files: PathsOrFiles, modality: str, *, what: str, progress: ProgressCallback | None = None
) -> DicomFile:
    """Exactly one object of ``modality`` among files/folders (or DicomFile records), else InputError.

    ``what`` says what the object is for (an option name such as ``--rtstruct``, or
    ``"structure set"``) and starts the message.
    """
    if not isinstance(paths_or_files, (str, os.PathLike)):
        paths_or_files = list(paths_or_files)
    files = _as_files(paths_or_files, progress)
    where = _where(paths_or_files, files)
    matches = find_objects(files, modality)
    if not matches:
        kinds = sorted({f.modality or "unknown" for f in files})
        raise InputError(f"{what}: no {modality} in {where} (found {', '.join(kinds)})")
    unique = {f.sop_instance_uid or str(f.path): f for f in matches}
    if len(unique) > 1:
        names = ", ".join(str(f.path) for f in matches)
        raise InputError(f"{what}: {len(unique)} {modality} files in {where}: {names}; give one file")
    return matches[0]


def group_series(files: Sequence[DicomFile]) -> dict[str, list[DicomFile]]:
    """Objects grouped by SeriesInstanceUID, groups and members in the order first seen."""
    groups: dict[str, list[DicomFile]] = {}
    for f in files:
        groups.setdefault(f.series_instance_uid, []).append(f)
    return groups
