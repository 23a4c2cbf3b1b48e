"""CT image series: read them (sorted, checked, in HU) and write them (CT Image Storage).

Reading trusts geometry, not names: slices are sorted by their position along the slice
normal (row cosine x column cosine, dotted with ImagePositionPatient), never by file name or
InstanceNumber, and a series whose slices do not make one regular volume (duplicates,
missing or unevenly spaced slices, mixed sizes, spacings, orientations or Frames of
Reference) is refused with a message that names the folder and the positions, unless the
caller explicitly asks for the documented resampling. A silently wrong CT geometry would
shift every contour, margin and dose statistic computed on it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from sbrtstandards.atomic import atomic_dir
from sbrtstandards.dicom.common import (
    CT_IMAGE_STORAGE,
    SeriesReference,
    StudyInfo,
    new_dataset,
    new_uid,
    read_dataset,
    save_dataset,
)
from sbrtstandards.dicom.scan import DicomFile, group_series, scan_dicom
from sbrtstandards.errors import FrameOfReferenceError, GeometryError, InputError
from sbrtstandards.grid import Grid

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]

AXIAL_TOLERANCE = 1e-4  # direction cosines within this of [1,0,0,0,1,0] count as axial
DUPLICATE_TOLERANCE_MM = 0.01  # two slices closer than this along the normal are duplicates
UNEVEN_ABS_TOLERANCE_MM = 0.01  # a gap may differ from the median gap by max(0.01 mm, 1%)
UNEVEN_REL_TOLERANCE = 0.01
MISSING_SLICE_FACTOR = 1.5  # a gap larger than 1.5x the median gap means missing slices
SHEAR_TOLERANCE_MM = 0.01  # in-plane drift of slice origins beyond this is a sheared (tilted) stack
PIXEL_SPACING_TOLERANCE_MM = 1e-4
AIR_HU = -1000.0  # value of resampled voxels that fall outside the stored volume

DEFAULT_WINDOWS: tuple[tuple[float, float, str], ...] = (
    (-600.0, 1600.0, "LUNG"),
    (40.0, 400.0, "SOFT TISSUE"),
)

# Attributes that write_ct_series computes itself; extra_tags may not override them.
_PROTECTED_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
        "Modality",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SliceThickness",
        "SliceLocation",
        "InstanceNumber",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PixelData",
        "RescaleIntercept",
        "RescaleSlope",
        "RescaleType",
    }
)


@dataclass
class CtSeries:
    """One CT volume in HU with its geometry and the DICOM identity of the stored series.

    ``files`` and ``reference`` list the stored slices sorted along the slice normal; they
    match the image's k axis one to one unless ``resampled`` is set (uneven slices or a
    non-axial series were interpolated), in which case they still name the stored slices,
    which is what a derived object must reference.
    """

    image: sitk.Image  # HU; Int16 when the rescale is integral (usual), else Float32
    grid: Grid
    reference: SeriesReference
    description: str
    files: list[Path]
    warnings: list[str] = field(default_factory=list)
    resampled: str | None = None  # None, or what was interpolated and how

    def array_hu(self) -> np.ndarray:
        """The HU values as an array indexed ``[k, j, i]``."""
        return sitk.GetArrayFromImage(self.image)

    @property
    def series_instance_uid(self) -> str:
        return self.reference.series_instance_uid


# ---------------------------------------------------------------------------------------
# reading


def _sub_progress(progress: ProgressCallback | None, start: float, stop: float) -> ProgressCallback | None:
    """A callback mapping 0..1 onto start..stop of the caller's bar."""
    if progress is None:
        return None

    def report(fraction: float, message: str) -> None:
        progress(start + (stop - start) * min(max(fraction, 0.0), 1.0), message)

    return report


def _describe_source(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    items = list(source)
    paths = [str(i.path) if isinstance(i, DicomFile) else str(i) for i in items]
    if len(paths) == 1:
        return paths[0]
    parents = sorted({str(Path(p).parent) for p in paths})
    if len(parents) == 1:
        return f"{len(paths)} files in {parents[0]}"
    return f"{len(paths)} files in {', '.join(parents[:3])}" + (" ..." if len(parents) > 3 else "")


def _records(source: Any, progress: ProgressCallback | None) -> list[DicomFile]:
    if isinstance(source, (str, os.PathLike)):
        return scan_dicom([source], progress=progress)
    items = list(source)
    if not items:
        raise InputError("no CT files or folders given")
    records = [i for i in items if isinstance(i, DicomFile)]
    paths = [i for i in items if not isinstance(i, DicomFile)]
    if paths:
        records.extend(scan_dicom(paths, progress=progress))
    return records


def _series_label(files: Sequence[DicomFile]) -> str:
    return f"{files[0].describe_series()}, {len(files)} image{'s' if len(files) != 1 else ''}"


def _select_series(records: Sequence[DicomFile], series_uid: str | None, where: str) -> list[DicomFile]:
    """The CT slices of the one series meant: the only volume series, or ``series_uid``."""
    ct = [r for r in records if r.modality == "CT"]
    if not ct:
        kinds: dict[str, int] = {}
        for r in records:
            kinds[r.modality or "unknown"] = kinds.get(r.modality or "unknown", 0) + 1
        found = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        raise InputError(f"no CT image series in {where} (found {found})")
    groups = group_series(ct)
    if series_uid is not None:
        if series_uid not in groups:
            listing = "; ".join(_series_label(g) for g in groups.values())
            raise InputError(f"CT series {series_uid} is not in {where}; CT series there: {listing}")
        return groups[series_uid]
    volumes = {uid: g for uid, g in groups.items() if any(f.is_image and not f.is_localizer for f in g)}
    if not volumes:
        raise InputError(
            f"no CT image volume in {where}: its CT objects have no slice position/orientation "
            f"or are localizers ({'; '.join(_series_label(g) for g in groups.values())})"
        )
    if len(volumes) > 1:
        listing = "; ".join(_series_label(g) for g in volumes.values())
        raise InputError(f"{len(volumes)} CT series in {where}; choose one by its series UID: {listing}")
    return next(iter(volumes.values()))


@dataclass
class _Stack:
    """Geometry of the stored slices, sorted along the slice normal."""

    files: list[DicomFile]
    ipp_mm: np.ndarray  # (n, 3) ImagePositionPatient, sorted
    s_mm: np.ndarray  # (n,) position along the normal, ascending
    row: np.ndarray  # direction of increasing column index i (first IOP triplet)
    col: np.ndarray  # direction of increasing row index j
    normal: np.ndarray
    drift_per_mm: np.ndarray  # in-plane shift of the slice origin per mm along the normal (row, col)
    pixel_spacing_mm: tuple[float, float]  # (along i, along j)
    rows: int
    columns: int
    frame_of_reference_uid: str | None
    is_axial_orientation: bool

    @property
    def sheared(self) -> bool:
        """Slice origins that shift in-plane along the stack (gantry tilt stored as a sheared stack)."""
        return bool(np.any(self.drift_per_mm != 0.0))

    @property
    def stack_direction(self) -> np.ndarray:
        """Vector from one slice origin to the next, per mm along the normal."""
        return self.normal + self.drift_per_mm[0] * self.row + self.drift_per_mm[1] * self.col


def _check_uniform_headers(files: Sequence[DicomFile], where: str, uid: str) -> None:
    """Same orientation, matrix and pixel spacing on every slice; one Frame of Reference."""
    first = files[0]
    no_spacing = [f.path.name for f in files if f.pixel_spacing_mm is None]
    if no_spacing:
        raise GeometryError(
            f"{where}: CT series {uid}: {len(no_spacing)} slice(s) lack PixelSpacing "
            f"({', '.join(no_spacing[:5])})"
        )
    for f in files[1:]:
        if not np.allclose(f.image_orientation, first.image_orientation, atol=AXIAL_TOLERANCE):  # type: ignore[arg-type]
            raise GeometryError(
                f"{where}: slices of CT series {uid} have different orientations: {first.path.name} "
                f"{list(first.image_orientation or ())} vs {f.path.name} {list(f.image_orientation or ())}"
            )
        if (f.rows, f.columns) != (first.rows, first.columns):
            raise GeometryError(
                f"{where}: slices of CT series {uid} have different sizes: {first.path.name} "
                f"{first.rows}x{first.columns} vs {f.path.name} {f.rows}x{f.columns} (rows x columns)"
            )
        if not np.allclose(f.pixel_spacing_mm, first.pixel_spacing_mm, atol=PIXEL_SPACING_TOLERANCE_MM):  # type: ignore[arg-type]
            raise GeometryError(
                f"{where}: slices of CT series {uid} have different pixel spacings: {first.path.name} "
                f"{first.pixel_spacing_mm} vs {f.path.name} {f.pixel_spacing_mm} mm"
            )
    frames = sorted({f.frame_of_reference_uid or "(none)" for f in files})
    if len(frames) > 1:
        raise FrameOfReferenceError(
            f"{where}: CT series {uid} mixes {len(frames)} Frames of Reference ({', '.join(frames)}); "
            "its slices do not share one patient coordinate system"
        )


def _stack_geometry(files: Sequence[DicomFile], where: str) -> _Stack:
    """Sort the slices along the normal and derive the stack geometry from the headers."""
    uid = files[0].series_instance_uid
    no_geometry = [f.path.name for f in files if not f.is_image]
    if no_geometry:
        raise GeometryError(
            f"{where}: CT series {uid}: {len(no_geometry)} file(s) lack ImagePositionPatient or "
            f"ImageOrientationPatient ({', '.join(no_geometry[:5])})"
        )
    multi = [f.path.name for f in files if (f.number_of_frames or 1) > 1]
    if multi:
        raise InputError(
            f"{where}: CT series {uid} is stored as multi-frame (Enhanced CT) objects "
            f"({', '.join(multi[:3])}); export it as CT Image Storage, one file per slice"
        )
    if any(f.rows is None or f.columns is None for f in files):
        raise GeometryError(f"{where}: CT series {uid}: some slices lack Rows/Columns")
    _check_uniform_headers(files, where, uid)
    if len(files) < 2:
        raise GeometryError(f"{where}: CT series {uid} has a single slice; a CT volume needs at least two")

    iop = np.asarray(files[0].image_orientation, dtype=float)
    row, col = iop[:3], iop[3:]
    unit = abs(np.linalg.norm(row) - 1.0) < 1e-3 and abs(np.linalg.norm(col) - 1.0) < 1e-3
    if not unit or abs(float(row @ col)) > 1e-3:
        raise GeometryError(
            f"{where}: CT series {uid} has invalid ImageOrientationPatient {iop.tolist()} "
            "(the row and column cosines must be orthogonal unit vectors)"
        )
    axial = bool(np.allclose(iop, [1, 0, 0, 0, 1, 0], atol=AXIAL_TOLERANCE))
    if axial:  # snap: the rest of the project treats axial grids as exactly the identity
        row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    else:
        row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)

    ipp = np.array([f.image_position_mm for f in files], dtype=float)
    s = ipp @ normal
    order = np.argsort(s, kind="stable")
    ipp, s = ipp[order], s[order]
    sorted_files = [files[int(i)] for i in order]

    _check_duplicates(sorted_files, s, where, uid)
    offsets = np.column_stack([(ipp - ipp[0]) @ row, (ipp - ipp[0]) @ col])  # in-plane drift
    extent = float(s[-1] - s[0])
    drift = offsets[-1] / extent
    residual = np.abs(offsets - np.outer(s - s[0], drift)).max()
    if residual > SHEAR_TOLERANCE_MM:
        raise GeometryError(
            f"{where}: CT series {uid}: the slice origins do not lie on a straight line (in-plane "
            f"deviation up to {residual:.3f} mm); the slices do not form one volume"
        )
    if np.all(np.abs(offsets[-1]) <= SHEAR_TOLERANCE_MM):
        drift = np.zeros(2)  # rounding noise in the origins: a straight stack along the normal
    ps = files[0].pixel_spacing_mm or (1.0, 1.0)
    return _Stack(
        files=sorted_files,
        ipp_mm=ipp,
        s_mm=s,
        row=row,
        col=col,
        normal=normal,
        drift_per_mm=drift,
        pixel_spacing_mm=(float(ps[1]), float(ps[0])),
        rows=int(files[0].rows or 0),
        columns=int(files[0].columns or 0),
        frame_of_reference_uid=files[0].frame_of_reference_uid,
        is_axial_orientation=axial,
    )


def _check_duplicates(files: Sequence[DicomFile], s: np.ndarray, where: str, uid: str) -> None:
    gaps = np.diff(s)
    dup = np.nonzero(gaps < DUPLICATE_TOLERANCE_MM)[0]
    if dup.size == 0:
        return
    pairs = ", ".join(f"{files[i].path.name} and {files[i + 1].path.name} at {s[i]:.2f} mm" for i in dup[:5])
    more = f" and {dup.size - 5} more" if dup.size > 5 else ""
    raise GeometryError(
        f"{where}: CT series {uid} has {dup.size} duplicate slice position(s): {pairs}{more} "
        "(several phases of a 4D-CT in one series? split them into phases first)"
    )


def _spacing_problems(s: np.ndarray) -> tuple[float, list[str]]:
    """The median gap along the normal and a description of each missing/uneven gap."""
    gaps = np.diff(s)
    median = float(np.median(gaps))
    tolerance = max(UNEVEN_ABS_TOLERANCE_MM, UNEVEN_REL_TOLERANCE * median)
    problems = []
    for i, gap in enumerate(gaps):
        if gap > MISSING_SLICE_FACTOR * median:
            problems.append(
                f"missing slice(s): gap of {gap:.2f} mm between positions {s[i]:.2f} and {s[i + 1]:.2f} mm"
            )
        elif abs(gap - median) > tolerance:
            problems.append(f"uneven gap of {gap:.3f} mm between positions {s[i]:.2f} and {s[i + 1]:.2f} mm")
    return median, problems


def _describe_orientation(stack: _Stack) -> str:
    """What kind of non-axial series this is, in the words of a CT user."""
    if stack.is_axial_orientation and stack.sheared:
        return "the slice origins shift in-plane from slice to slice (a gantry-tilted, sheared stack)"
    row, col, normal = stack.row, stack.col, stack.normal
    if abs(abs(normal[2]) - 1.0) < AXIAL_TOLERANCE:
        return "axial but with flipped axes (prone or feet-first orientation)"
    if np.allclose(np.abs(row), [1, 0, 0], atol=AXIAL_TOLERANCE) and abs(col[0]) < AXIAL_TOLERANCE:
        tilt = math.degrees(math.acos(min(1.0, abs(float(normal[2])))))
        return f"gantry tilt of {tilt:.1f} degrees"
    if abs(abs(normal[0]) - 1.0) < AXIAL_TOLERANCE:
        return "sagittal"
    if abs(abs(normal[1]) - 1.0) < AXIAL_TOLERANCE:
        return "coronal"
    return "oblique"


def _load_pixels(
    stack: _Stack, where: str, progress: ProgressCallback | None
) -> tuple[np.ndarray, Dataset, list[str]]:
    """The HU array [k, j, i] (int16 when every rescale is integral, else float32)."""
    n = len(stack.files)
    array: np.ndarray = np.empty((n, stack.rows, stack.columns), dtype=np.int16)
    notes: list[str] = []
    first: Dataset | None = None
    for k, record in enumerate(stack.files):
        ds = read_dataset(record.path, expect="CT")
        if first is None:
            first = ds
        hu = _slice_hu(ds, record.path, stack)
        if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
            note = f"{record.path}: no RescaleSlope/RescaleIntercept; stored values taken as HU"
            if note not in notes and len(notes) < 5:
                notes.append(note)
        if array.dtype == np.int16 and not _fits_int16(hu):
            array = array.astype(np.float32)
        array[k] = hu
        if progress is not None:
            progress((k + 1) / n, f"reading CT slices ({k + 1}/{n})")
    assert first is not None
    return array, first, notes


def _fits_int16(hu: np.ndarray) -> bool:
    if not np.issubdtype(hu.dtype, np.integer):
        return False
    return bool(hu.size == 0 or (hu.min() >= -32768 and hu.max() <= 32767))


def _slice_hu(ds: Dataset, path: Path, stack: _Stack) -> np.ndarray:
    """One slice in HU: integer array when slope and intercept are integers, else float."""
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputError(f"{path}: CT slice with {ds.SamplesPerPixel} samples per pixel (expected 1)")
    if "PixelData" not in ds:
        raise InputError(f"{path}: CT slice without pixel data")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise InputError(
            f"{path}: cannot decode the CT pixel data (transfer syntax {syntax}): {exc}; "
            "compressed data needs pylibjpeg or GDCM for pydicom"
        ) from None
    if stored.shape != (stack.rows, stack.columns):
        raise GeometryError(
            f"{path}: pixel data of shape {stored.shape} does not match Rows x Columns "
            f"{stack.rows}x{stack.columns}"
        )
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope.is_integer() and intercept.is_integer():
        return stored.astype(np.int64) * int(slope) + int(intercept)
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def _resample_along_normal(array: np.ndarray, s: np.ndarray, s_new: np.ndarray) -> np.ndarray:
    """Linear interpolation between the two stored slices that bracket each new position."""
    out = np.empty((len(s_new),) + array.shape[1:], dtype=np.float32)
    below = np.clip(np.searchsorted(s, s_new, side="right") - 1, 0, len(s) - 2)
    for m, (pos, k) in enumerate(zip(s_new, below)):
        t = float(np.clip((pos - s[k]) / (s[k + 1] - s[k]), 0.0, 1.0))
        out[m] = (1.0 - t) * array[k].astype(np.float32) + t * array[k + 1].astype(np.float32)
    return out


def _round_like(values: np.ndarray, integral: bool) -> np.ndarray:
    """Interpolated values back to whole HU (int16) when the stored series was integral."""
    if integral:
        rounded = np.rint(values)
        if rounded.min() >= -32768 and rounded.max() <= 32767:
            return rounded.astype(np.int16)
    return values.astype(np.float32)


def _stack_image(array: np.ndarray, stack: _Stack, origin: np.ndarray, slice_step_mm: float) -> sitk.Image:
    """The stored (or along-normal resampled) slices as an image; sheared stacks get a skewed axis."""
    direction = stack.stack_direction
    step_length = float(np.linalg.norm(direction))
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing((stack.pixel_spacing_mm[0], stack.pixel_spacing_mm[1], slice_step_mm * step_length))
    matrix = np.column_stack([stack.row, stack.col, direction / step_length])
    image.SetDirection(tuple(float(v) for v in matrix.ravel()))
    return image


def _resample_to_axial(image: sitk.Image, slice_spacing_mm: float, integral: bool) -> sitk.Image:
    """Linear resampling onto the axial grid covering the stored voxel centres, air outside."""
    size = image.GetSize()
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))
            for i in (0, size[0] - 1)
            for j in (0, size[1] - 1)
            for k in (0, size[2] - 1)
        ]
    )
    low, high = corners.min(axis=0), corners.max(axis=0)
    spacing = np.array([image.GetSpacing()[0], image.GetSpacing()[1], slice_spacing_mm])
    out_size = [int(math.ceil((high[a] - low[a]) / spacing[a] - 1e-6)) + 1 for a in range(3)]
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputOrigin(tuple(float(v) for v in low))
    resampler.SetOutputSpacing(tuple(float(v) for v in spacing))
    resampler.SetOutputDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    resampler.SetSize(out_size)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(AIR_HU)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    resampled = resampler.Execute(sitk.Cast(image, sitk.sitkFloat32))
    values = _round_like(sitk.GetArrayFromImage(resampled), integral)
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(resampled)
    return out


def read_ct_series(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str] | DicomFile],
    *,
    series_uid: str | None = None,
    resample_non_axial: bool = False,
    allow_uneven: bool = False,
    progress: ProgressCallback | None = None,
) -> CtSeries:
    """Read one CT series (a folder, a file list, or a folder with several series) in HU.

    ``source`` may also hold :class:`DicomFile` records from :func:`scan_dicom`. Non-CT objects
    are ignored; several CT volume series need ``series_uid`` (the error lists them). Slices
    are sorted along the slice normal. The image has the first slice's position as origin,
    spacing (column spacing, row spacing, slice spacing) and the row cosine, column cosine and
    normal as the columns of its direction matrix. HU = stored * RescaleSlope + RescaleIntercept;
    Int16 when every slope and intercept is an integer, else Float32.

    Refused with :class:`GeometryError` unless asked for:

    * missing slices (a gap > 1.5x the median gap) or uneven gaps (off the median by more than
      max(0.01 mm, 1%)): with ``allow_uneven=True`` the stack is resampled along the normal to
      ``round(extent / median gap) + 1`` evenly spaced slices spanning the first to the last
      stored slice, each by linear interpolation between the two stored slices around it;
    * a non-axial series (direction cosines not within 1e-4 of [1,0,0,0,1,0]: gantry tilt,
      sagittal, coronal, oblique, prone/feet-first flips, sheared stacks): with
      ``resample_non_axial=True`` it is resampled (SimpleITK, linear) onto the axial grid
      whose corners are the bounding box of the stored voxel centres, with the stored column,
      row and slice spacings along x, y, z; points outside the stored volume get -1000 HU.

    Interpolated values are rounded to whole HU when the stored series was integral. Duplicate
    positions, mixed matrix sizes, pixel spacings or orientations are always refused; several
    Frames of Reference raise :class:`FrameOfReferenceError`.
    """
    if not isinstance(source, (str, os.PathLike)):
        source = list(source)  # may be a generator: it is walked twice
    where = _describe_source(source)
    records = _records(source, _sub_progress(progress, 0.0, 0.2))
    chosen = _select_series(records, series_uid, where)
    notes: list[str] = []
    localizers = [f for f in chosen if f.is_localizer]
    if localizers and len(localizers) < len(chosen):
        chosen = [f for f in chosen if not f.is_localizer]
        notes.append(f"{where}: left out {len(localizers)} localizer image(s) of the series")
    uid = chosen[0].series_instance_uid
    stack = _stack_geometry(chosen, where)
    non_axial = (not stack.is_axial_orientation) or stack.sheared
    if non_axial and not resample_non_axial:
        iop = [round(float(v), 5) for v in (chosen[0].image_orientation or ())]
        raise GeometryError(
            f"{where}: CT series {uid} is not axial ({_describe_orientation(stack)}; "
            f"ImageOrientationPatient {iop}); resample it onto an axial grid (resample_non_axial) "
            "or reconstruct it axially"
        )
    median_gap, problems = _spacing_problems(stack.s_mm)
    if problems and not allow_uneven:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise GeometryError(
            f"{where}: CT series {uid} is not evenly spaced (median slice spacing {median_gap:.3f} mm): "
            f"{shown}; allow uneven spacing to resample it to a uniform spacing"
        )

    array, first_ds, load_notes = _load_pixels(stack, where, _sub_progress(progress, 0.2, 0.9))
    notes.extend(load_notes)
    integral = array.dtype == np.int16
    s = stack.s_mm
    resampled: list[str] = []
    if problems:
        count = int(round((s[-1] - s[0]) / median_gap)) + 1
        s_new = np.linspace(s[0], s[-1], count)
        array = _round_like(_resample_along_normal(array, s, s_new), integral)
        slice_step = float(s_new[1] - s_new[0])
        resampled.append(
            f"{len(s)} unevenly spaced slices ({'; '.join(problems[:3])}) linearly interpolated to "
            f"{count} slices {slice_step:.3f} mm apart along the slice normal"
        )
    else:
        slice_step = float((s[-1] - s[0]) / (len(s) - 1))
    image = _stack_image(array, stack, stack.ipp_mm[0], slice_step)
    if non_axial:
        if progress is not None:
            progress(0.92, "resampling onto an axial grid")
        image = _resample_to_axial(image, slice_step, integral)
        resampled.append(
            f"non-axial series ({_describe_orientation(stack)}) linearly resampled onto an axial grid "
            f"of {'x'.join(f'{v:g}' for v in image.GetSpacing())} mm"
        )
    for text in resampled:
        notes.append(f"{where}: CT series {uid}: {text}")
    for note in notes:
        logger.warning("%s", note)

    reference = SeriesReference(
        study=StudyInfo.from_dataset(first_ds),
        series_instance_uid=uid,
        sop_class_uid=stack.files[0].sop_class_uid or CT_IMAGE_STORAGE,
        sop_instance_uids=tuple(f.sop_instance_uid for f in stack.files),
        slice_positions_mm=tuple(float(v) for v in s),
        series_description=stack.files[0].series_description,
    )
    if progress is not None:
        progress(1.0, "CT series read")
    return CtSeries(
        image=image,
        grid=Grid.from_image(image, stack.frame_of_reference_uid),
        reference=reference,
        description=stack.files[0].series_description,
        files=[f.path for f in stack.files],
        warnings=notes,
        resampled="; ".join(resampled) or None,
    )


# ---------------------------------------------------------------------------------------
# writing


def _ds_number(value: float) -> str:
    """A Decimal String of at most 16 characters (10 significant digits)."""
    text = f"{float(value):.10g}"
    return "0" if text in ("-0", "0") else text


def _stored_values(hu: np.ndarray) -> tuple[np.ndarray, int]:
    """HU as signed 16-bit stored values and the RescaleIntercept that restores them."""
    if np.issubdtype(hu.dtype, np.integer):
        values = hu.astype(np.int64)
    elif np.issubdtype(hu.dtype, np.floating):
        if not np.all(np.isfinite(hu)):
            raise ValueError("CT values contain NaN or infinity")
        values = np.rint(hu).astype(np.int64)
    else:
        raise ValueError(f"CT values must be integers or floats, not {hu.dtype}")
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low >= -32768 and high <= 32767:
        return values.astype(np.int16), 0
    if high - low > 65535:
        raise ValueError(f"CT values span {low}..{high} HU, more than 16 bits can store")
    intercept = low + 32768
    return (values - intercept).astype(np.int16), intercept


def _check_extra_tags(extra_tags: dict[str, Any]) -> None:
    for keyword in extra_tags:
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"extra_tags: {keyword!r} is not a DICOM keyword")
        if keyword in _PROTECTED_KEYWORDS:
            raise ValueError(f"extra_tags: {keyword} is set by write_ct_series itself")


def _slice_dataset(
    stored: np.ndarray,
    z_mm: float,
    k: int,
    grid: Grid,
    study: StudyInfo,
    series: dict[str, Any],
    intercept: int,
    windows: Sequence[tuple[float, float, str]],
) -> Dataset:
    """One CT Image Storage dataset (all modules of the CT Image IOD) for slice ``k``."""
    ds = new_dataset(CT_IMAGE_STORAGE)
    study.apply(ds)  # Patient, General Study, Frame of Reference UID
    ds.PositionReferenceIndicator = ""
    # General Series
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series["uid"]
    ds.SeriesNumber = series["number"]
    ds.SeriesDescription = series["description"]
    ds.SeriesDate = study.study_date
    ds.SeriesTime = study.study_time
    ds.PatientPosition = "HFS"
    # General Equipment: Manufacturer and SoftwareVersions come from new_dataset
    ds.InstitutionName = ""
    # General Image
    ds.InstanceNumber = k + 1
    ds.PatientOrientation = ""
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AcquisitionNumber = 1
    # Image Plane
    ds.PixelSpacing = [_ds_number(grid.spacing_mm[1]), _ds_number(grid.spacing_mm[0])]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.ImagePositionPatient = [_ds_number(grid.origin_mm[0]), _ds_number(grid.origin_mm[1]), _ds_number(z_mm)]
    ds.SliceThickness = _ds_number(grid.spacing_mm[2])
    ds.SliceLocation = _ds_number(z_mm)
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.add_new(0x7FE00010, "OW", np.ascontiguousarray(stored, dtype="<i2").tobytes())
    # CT Image
    ds.KVP = "120"
    ds.RescaleIntercept = str(intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    # VOI LUT
    if windows:
        ds.WindowCenter = [_ds_number(w[0]) for w in windows]
        ds.WindowWidth = [_ds_number(w[1]) for w in windows]
        ds.WindowCenterWidthExplanation = [w[2] for w in windows]
    return ds


def write_ct_series(
    out_dir: str | os.PathLike[str],
    hu: np.ndarray,
    grid: Grid,
    *,
    study: StudyInfo,
    series_description: str,
    series_number: int = 1,
    series_instance_uid: str | None = None,
    extra_tags: dict[str, Any] | None = None,
    windows: Sequence[tuple[float, float, str]] = DEFAULT_WINDOWS,
    progress: ProgressCallback | None = None,
) -> SeriesReference:
    """Write ``hu`` (shape ``grid.shape``) as CT Image Storage files CT_0001.dcm... in ``out_dir``.

    The folder is written under a temporary name and then replaces ``out_dir`` as a whole, so
    a killed run never leaves a partial series. Values are rounded to whole HU and stored as
    signed 16-bit with RescaleSlope 1 and RescaleIntercept 0, or with an intercept offset when
    they do not fit in int16. The grid must be axial and share the study's Frame of Reference.
    ``extra_tags`` (DICOM keyword -> value, None deletes) are set on every slice, e.g.
    ``ImageType``, ``TemporalPositionIndex``, ``ImageComments``; geometry, pixel and UID
    attributes are computed here and cannot be overridden. ``windows`` are (centre, width,
    name) VOI windows, the first one being the viewer's default (lung window).
    """
    grid.require_axial("writing a CT series")
    if hu.ndim != 3 or tuple(hu.shape) != grid.shape:
        raise ValueError(f"CT array of shape {hu.shape} does not match the grid shape {grid.shape}")
    if grid.frame_of_reference_uid and grid.frame_of_reference_uid != study.frame_of_reference_uid:
        raise FrameOfReferenceError(
            f"writing CT series {series_description!r}: the grid's Frame of Reference "
            f"{grid.frame_of_reference_uid} differs from the study's {study.frame_of_reference_uid}"
        )
    extra_tags = dict(extra_tags or {})
    _check_extra_tags(extra_tags)
    stored, intercept = _stored_values(hu)
    series = {
        "uid": series_instance_uid or new_uid(),
        "number": int(series_number),
        "description": series_description,
    }
    nk = grid.shape[0]
    width = max(4, len(str(nk)))
    z_values = grid.axis_coords_mm(2)
    sop_uids: list[str] = []
    positions: list[float] = []
    with atomic_dir(out_dir) as tmp:
        for k in range(nk):
            ds = _slice_dataset(stored[k], float(z_values[k]), k, grid, study, series, intercept, windows)
            for keyword, value in extra_tags.items():
                if value is None:
                    if keyword in ds:
                        delattr(ds, keyword)
                else:
                    setattr(ds, keyword, value)
            save_dataset(ds, tmp / f"CT_{k + 1:0{width}d}.dcm")
            sop_uids.append(str(ds.SOPInstanceUID))
            positions.append(float(ds.ImagePositionPatient[2]))
            if progress is not None:
                progress((k + 1) / nk, f"writing CT slices ({k + 1}/{nk})")
    return SeriesReference(
        study=study,
        series_instance_uid=series["uid"],
        sop_class_uid=CT_IMAGE_STORAGE,
        sop_instance_uids=tuple(sop_uids),
        slice_positions_mm=tuple(positions),
        series_description=series_description,
    )
