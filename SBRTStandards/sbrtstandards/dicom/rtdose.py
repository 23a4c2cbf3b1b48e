"""DICOM RT Dose: read a dose grid into Gy on an axial :class:`~sbrtstandards.grid.Grid`, sum, write.

Conventions (the DVH engine and the plan check rely on them):

* ``DoseGrid.dose_gy`` is float64, indexed ``[k, j, i]``, on an axial grid whose i, j, k axes
  are +x, +y, +z of the patient (LPS). Files whose ImageOrientationPatient is a flip or swap of
  the patient x/y axes (prone, feet-first exports) are reordered to that form; oblique,
  sagittal or coronal dose planes raise :class:`GeometryError`.
* Values are what the file states times DoseGridScaling. ``summation_type`` is always the
  file's DoseSummationType; ``per_fraction`` and ``fractions_applied`` say whether the values
  are per fraction or were multiplied to the course total.
* RELATIVE dose is a fraction (``relative_unit="fraction"``: 1.0 = prescription) or a
  percentage (``"percent"``: 100 = prescription) of the prescription ``rx_gy``, which is the
  TOTAL course prescription (the same number as ``sbrt check --rx-gy``). Scaled values are
  therefore course totals whatever the summation type (a RELATIVE FRACTION dose of 1.0 is the
  fraction's share of the prescription, i.e. the course prescription after all fractions),
  so ``fractions`` is not applied to RELATIVE doses.
* :meth:`DoseGrid.sample` interpolates trilinearly between voxel centres; a point outside
  the box spanned by the voxel centres gets NaN: the dose there is unknown, not zero.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from sbrtstandards.dicom.common import (
    RT_DOSE_STORAGE,
    RT_PLAN_STORAGE,
    StudyInfo,
    ensure_transfer_syntax,
    new_dataset,
    new_uid,
    read_dataset,
    save_dataset,
)
from sbrtstandards.errors import FrameOfReferenceError, GeometryError, InputError
from sbrtstandards.grid import IDENTITY, Grid

SUMMATION_TYPES = ("PLAN", "MULTI_PLAN", "FRACTION", "BEAM", "BRACHY", "CONTROL_POINT", "RECORD")
DOSE_TYPES = ("PHYSICAL", "EFFECTIVE", "ERROR")
RELATIVE_UNITS = ("fraction", "percent")
GRID_FRAME_OFFSET_VECTOR_TAG = 0x3004000C

# Tolerances: DS strings carry at most 16 characters, so positions written by a TPS are exact
# to far better than these; anything beyond them is a real inconsistency of the file.
ORIENTATION_TOL = 1e-4  # direction cosine components
POSITION_TOL_MM = 0.01  # first offset vs 0 / Image Position z, slice-spacing evenness
INSIDE_TOL_INDEX = 1e-6  # sample(): voxel-index slack for points on the grid's boundary
WRITE_MAX_INT = 4_000_000_000  # the maximum dose maps here: 93% of the uint32 range
SAMPLE_CHUNK = 1_000_000  # points per chunk in sample(), to bound temporary memory


@dataclass
class DoseGrid:
    """A dose distribution in Gy with its geometry and provenance."""

    path: Path | None
    dose_gy: np.ndarray  # float64 [k, j, i], Gy (see the module docstring for the summation)
    grid: Grid
    summation_type: str
    dose_units_in_file: str
    dose_type: str
    referenced_plan_uid: str | None
    sop_instance_uid: str
    study: StudyInfo
    per_fraction: bool = False  # True: a FRACTION dose kept per fraction (no fraction count given)
    fractions_applied: int | None = None  # a FRACTION dose multiplied by this many fractions
    rx_gy_applied: float | None = None  # the prescription that scaled a RELATIVE dose
    relative_unit: str | None = None  # "fraction" or "percent" for a RELATIVE dose
    referenced_beam_numbers: tuple[int, ...] = ()
    warnings: list[str] = field(default_factory=list)
    source_paths: tuple[Path, ...] = ()  # the files summed into this dose (sum_doses)

    @property
    def max_gy(self) -> float:
        """The true grid maximum (no interpolation)."""
        return float(np.max(self.dose_gy)) if self.dose_gy.size else 0.0

    @property
    def label(self) -> str:
        """How messages name this dose: its file, else its SOP Instance UID."""
        return str(self.path) if self.path is not None else f"RTDOSE {self.sop_instance_uid}"

    def describe_summation(self) -> str:
        """One line for reports: what the values are a total of."""
        if self.fractions_applied is not None:
            return f"{self.summation_type} x {self.fractions_applied} fractions (course total)"
        if self.per_fraction:
            return f"{self.summation_type} (per fraction)"
        if self.rx_gy_applied is not None:
            return f"{self.summation_type} (RELATIVE, scaled to Rx {self.rx_gy_applied:g} Gy)"
        return self.summation_type

    def sample(self, points_mm: np.ndarray, *, fill_value: float = math.nan) -> np.ndarray:
        """Trilinear dose (Gy) at LPS points of shape (..., 3); returns shape (...).

        Points outside the box spanned by the voxel centres get ``fill_value`` (NaN by default:
        the dose there is unknown, not zero). The interpolation is exact for doses linear in
        x, y and z, which is what the tests check.
        """
        pts = np.asarray(points_mm, dtype=float)
        if pts.shape[-1:] != (3,):
            raise ValueError(f"points must have shape (..., 3), got {pts.shape}")
        flat = pts.reshape(-1, 3)
        out = np.empty(len(flat), dtype=float)
        for start in range(0, len(flat), SAMPLE_CHUNK):
            stop = start + SAMPLE_CHUNK
            out[start:stop] = self._sample_flat(flat[start:stop], fill_value)
        return out.reshape(pts.shape[:-1])

    def _sample_flat(self, pts: np.ndarray, fill_value: float) -> np.ndarray:
        size = np.asarray(self.grid.size)  # (ni, nj, nk)
        idx = self.grid.lps_to_index(pts)
        inside = np.all((idx >= -INSIDE_TOL_INDEX) & (idx <= size - 1 + INSIDE_TOL_INDEX), axis=1)
        out = np.full(len(pts), fill_value, dtype=float)
        if not inside.any():
            return out
        q = np.clip(idx[inside], 0.0, size - 1)
        lo = np.minimum(np.floor(q).astype(np.intp), np.maximum(size - 2, 0))
        hi = np.minimum(lo + 1, size - 1)
        t = q - lo
        d = self.dose_gy
        i0, j0, k0 = lo.T
        i1, j1, k1 = hi.T
        ti, tj, tk = t.T
        c00 = d[k0, j0, i0] * (1 - ti) + d[k0, j0, i1] * ti
        c01 = d[k0, j1, i0] * (1 - ti) + d[k0, j1, i1] * ti
        c10 = d[k1, j0, i0] * (1 - ti) + d[k1, j0, i1] * ti
        c11 = d[k1, j1, i0] * (1 - ti) + d[k1, j1, i1] * ti
        c0 = c00 * (1 - tj) + c01 * tj
        c1 = c10 * (1 - tj) + c11 * tj
        out[inside] = c0 * (1 - tk) + c1 * tk
        return out

    @classmethod
    def from_array(
        cls,
        dose_gy: np.ndarray,
        grid: Grid,
        *,
        study: StudyInfo | None = None,
        summation_type: str = "PLAN",
        referenced_plan_uid: str | None = None,
    ) -> DoseGrid:
        """An in-memory dose (computed, resampled or synthetic), not read from a file."""
        dose = np.asarray(dose_gy, dtype=np.float64)
        if dose.shape != grid.shape:
            raise ValueError(f"dose shape {dose.shape} does not match grid shape {grid.shape}")
        if study is None:
            study = StudyInfo(frame_of_reference_uid=grid.frame_of_reference_uid or new_uid())
        if grid.frame_of_reference_uid is None:
            grid = _with_for(grid, study.frame_of_reference_uid)
        return cls(
            path=None,
            dose_gy=dose,
            grid=grid,
            summation_type=summation_type,
            dose_units_in_file="GY",
            dose_type="PHYSICAL",
            referenced_plan_uid=referenced_plan_uid,
            sop_instance_uid=new_uid(),
            study=study,
        )


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_rtdose(
    path: str | os.PathLike[str],
    *,
    rx_gy: float | None = None,
    relative_unit: str = "fraction",
    fractions: int | None = None,
    uneven_slices: str = "error",
) -> DoseGrid:
    """Read an RT Dose file into Gy on an axial grid.

    ``rx_gy`` (total prescription) is needed for RELATIVE doses only; ``fractions`` turns a
    FRACTION dose in Gy into the course total. ``uneven_slices="resample"`` interpolates
    linearly along z onto the smallest slice spacing instead of raising GeometryError.
    """
    path = Path(path)
    if relative_unit not in RELATIVE_UNITS:
        raise ValueError(f"relative_unit must be one of {RELATIVE_UNITS}, got {relative_unit!r}")
    if uneven_slices not in ("error", "resample"):
        raise ValueError(f"uneven_slices must be 'error' or 'resample', got {uneven_slices!r}")
    ds = read_dataset(path, expect="RTDOSE")
    warnings: list[str] = []

    units = _required_str(ds, "DoseUnits", path)
    if units not in ("GY", "RELATIVE"):
        raise InputError(f"{path}: RTDOSE DoseUnits {units!r} not supported (expected GY or RELATIVE)")
    if units == "RELATIVE" and rx_gy is None:
        raise InputError(f"{path}: dose in RELATIVE units; give the prescription (--rx-gy) to scale it")
    summation = _required_str(ds, "DoseSummationType", path)
    if summation not in SUMMATION_TYPES:
        raise InputError(f"{path}: RTDOSE DoseSummationType {summation!r} is not one of {SUMMATION_TYPES}")
    dose_type = str(ds.get("DoseType", "") or "").strip().upper()
    if not dose_type:
        dose_type = "PHYSICAL"
        warnings.append("DoseType missing; taken as PHYSICAL")
    elif dose_type not in DOSE_TYPES:
        warnings.append(f"DoseType {dose_type!r} is not a DICOM defined term")

    values = _scaled_pixels(ds, path)  # [frame, row, column]
    dose, grid = _axial_geometry(ds, path, values, uneven_slices, warnings)
    if dose_type != "ERROR" and dose.size and float(dose.min()) < 0.0:
        warnings.append(f"negative dose values (min {float(dose.min()):.4g}) in a {dose_type} dose")

    per_fraction = False
    fractions_applied: int | None = None
    rx_applied: float | None = None
    rel_unit: str | None = None
    if units == "RELATIVE":  # course total by the module's convention: no fraction multiplier
        rx_applied = _check_rx(rx_gy, path)  # type: ignore[arg-type]
        rel_unit = relative_unit
        dose = dose * (rx_applied if relative_unit == "fraction" else rx_applied / 100.0)
    elif summation == "FRACTION" and fractions is None:
        per_fraction = True
        warnings.append("FRACTION dose kept per fraction (no number of fractions given)")
    elif summation == "FRACTION":
        fractions_applied = _check_fractions(fractions, path)  # type: ignore[arg-type]
        dose = dose * fractions_applied

    plan_uid, beams = _referenced_plan(ds)
    return DoseGrid(
        path=path,
        dose_gy=np.ascontiguousarray(dose, dtype=np.float64),
        grid=grid,
        summation_type=summation,
        dose_units_in_file=units,
        dose_type=dose_type,
        referenced_plan_uid=plan_uid,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")) or new_uid(),
        study=StudyInfo.from_dataset(ds),
        per_fraction=per_fraction,
        fractions_applied=fractions_applied,
        rx_gy_applied=rx_applied,
        relative_unit=rel_unit,
        referenced_beam_numbers=beams,
        warnings=warnings,
        source_paths=(path,),
    )


def _required_str(ds: Dataset, keyword: str, path: Path) -> str:
    value = str(ds.get(keyword, "") or "").strip().upper()
    if not value:
        raise InputError(f"{path}: RTDOSE has no {keyword}")
    return value


def _check_rx(rx_gy: float, path: Path) -> float:
    try:
        rx = float(rx_gy)
    except (TypeError, ValueError):
        raise InputError(f"{path}: prescription {rx_gy!r} is not a number") from None
    if not math.isfinite(rx) or rx <= 0:
        raise InputError(f"{path}: prescription must be a positive dose in Gy, got {rx_gy!r}")
    return rx


def _check_fractions(fractions: int, path: Path) -> int:
    if isinstance(fractions, bool) or int(fractions) != fractions or fractions < 1:
        raise InputError(f"{path}: number of fractions must be a whole number >= 1, got {fractions!r}")
    return int(fractions)


def _float_list(ds: Dataset, keyword: str, path: Path, count: int | None = None) -> list[float]:
    """A numeric multi-value attribute as floats, with an InputError naming it if absent or bad."""
    try:
        raw = ds.get(keyword)
    except (TypeError, ValueError) as exc:  # pydicom set to raise on invalid values
        raise InputError(f"{path}: RTDOSE {keyword} is not valid ({exc})") from None
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InputError(f"{path}: RTDOSE has no {keyword}")
    items = list(raw) if isinstance(raw, (list, tuple, MultiValue)) else [raw]
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        raise InputError(f"{path}: RTDOSE {keyword} {raw!r} is not numeric") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{path}: RTDOSE {keyword} {values} is not finite")
    if count is not None and len(values) != count:
        raise InputError(f"{path}: RTDOSE {keyword} has {len(values)} values, expected {count}")
    return values


def _scaled_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Pixel data times DoseGridScaling, float64 [frame, row, column]."""
    if "PixelData" not in ds:
        raise InputError(f"{path}: RTDOSE has no pixel data (a DVH-only dose object?)")
    scaling = _float_list(ds, "DoseGridScaling", path, count=1)[0]
    if scaling <= 0:
        raise InputError(f"{path}: RTDOSE DoseGridScaling {scaling} is not positive")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        raise InputError(f"{path}: RTDOSE has no Rows/Columns")
    ensure_transfer_syntax(ds)
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:  # decoder errors differ across pydicom versions and plugins
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        raise InputError(
            f"{path}: cannot decode the RTDOSE pixel data (transfer syntax {syntax}): {exc}"
        ) from None
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputError(f"{path}: RTDOSE has SamplesPerPixel {ds.SamplesPerPixel}, expected 1")
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if arr.shape != (n_frames, rows, cols):
        raise InputError(
            f"{path}: RTDOSE pixel data has shape {arr.shape}, header says {n_frames} frames of {rows}x{cols}"
        )
    return arr.astype(np.float64) * scaling


def _in_plane_axis(cosines: np.ndarray, what: str, path: Path) -> tuple[int, float]:
    """(patient axis 0=x / 1=y, sign) of an image row or column direction; GeometryError if oblique."""
    for axis in (0, 1):
        unit = np.zeros(3)
        unit[axis] = 1.0
        for sign in (1.0, -1.0):
            if np.allclose(cosines, sign * unit, atol=ORIENTATION_TOL):
                return axis, sign
    raise GeometryError(
        f"{path}: RTDOSE ImageOrientationPatient {what} direction {np.round(cosines, 6).tolist()} "
        "is not along the patient x or y axis: only axial dose grids are supported"
    )


def _slice_offsets(ds: Dataset, path: Path, n_frames: int, warnings: list[str]) -> list[float]:
    """GridFrameOffsetVector, checked against the number of frames."""
    if "GridFrameOffsetVector" not in ds or not ds.get("GridFrameOffsetVector"):
        if n_frames == 1:
            return [0.0]
        raise GeometryError(f"{path}: RTDOSE has {n_frames} frames but no GridFrameOffsetVector")
    offsets = _float_list(ds, "GridFrameOffsetVector", path)
    if len(offsets) == n_frames:
        return offsets
    if n_frames == 1 and "NumberOfFrames" not in ds:
        warnings.append(
            f"single-frame RTDOSE lists {len(offsets)} GridFrameOffsetVector values; the first "
            "one locates the frame"
        )
        return offsets[:1]
    raise GeometryError(
        f"{path}: RTDOSE GridFrameOffsetVector has {len(offsets)} values for {n_frames} frames"
    )


def _slice_positions_z(
    ds: Dataset, path: Path, offsets: list[float], ipp_z: float, normal_z: float
) -> np.ndarray:
    """Patient z of every frame from relative (first 0) or absolute (first == IPP z) offsets."""
    first = offsets[0]
    if abs(first) <= POSITION_TOL_MM:
        return ipp_z + normal_z * (np.asarray(offsets) - first)
    if abs(first - ipp_z) <= POSITION_TOL_MM:
        return np.asarray(offsets, dtype=float)  # absolute: the offsets are the z positions
    raise GeometryError(
        f"{path}: RTDOSE GridFrameOffsetVector starts at {first:g} mm, neither 0 (relative offsets) "
        f"nor the ImagePositionPatient z {ipp_z:g} mm (absolute positions)"
    )


def _even_spacing(
    z: np.ndarray, values: np.ndarray, path: Path, uneven_slices: str, warnings: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Sort frames by z and return (z, values) on evenly spaced slices (or raise)."""
    order = np.argsort(z, kind="stable")
    z, values = z[order], values[order]
    if len(z) < 2:
        return z, values
    steps = np.diff(z)
    if np.any(steps < POSITION_TOL_MM):
        raise GeometryError(f"{path}: RTDOSE has two frames at the same position (z {z.tolist()})")
    mean_step = (z[-1] - z[0]) / (len(z) - 1)
    if np.all(np.abs(steps - mean_step) <= POSITION_TOL_MM):
        return z[0] + mean_step * np.arange(len(z)), values
    if uneven_slices == "error":
        raise GeometryError(
            f"{path}: RTDOSE frames are unevenly spaced (steps {np.round(steps, 4).tolist()} mm); "
            "resample the dose to even slices"
        )
    step = float(steps.min())
    n_new = int(round((z[-1] - z[0]) / step)) + 1
    z_new = np.linspace(z[0], z[-1], n_new)
    upper = np.clip(np.searchsorted(z, z_new, side="right"), 1, len(z) - 1)
    t = ((z_new - z[upper - 1]) / (z[upper] - z[upper - 1]))[:, None, None]
    resampled = values[upper - 1] * (1 - t) + values[upper] * t
    warnings.append(
        f"uneven frame spacing resampled linearly to {n_new} slices of {z_new[1] - z_new[0]:.4g} mm"
    )
    return z_new, resampled


def _axial_geometry(
    ds: Dataset, path: Path, values: np.ndarray, uneven_slices: str, warnings: list[str]
) -> tuple[np.ndarray, Grid]:
    """Reorder [frame, row, column] values to [k, j, i] along +z, +y, +x and build the Grid."""
    n_frames, rows, cols = values.shape
    ipp = np.asarray(_float_list(ds, "ImagePositionPatient", path, count=3))
    iop = np.asarray(_float_list(ds, "ImageOrientationPatient", path, count=6))
    row_spacing, col_spacing = _float_list(ds, "PixelSpacing", path, count=2)
    if row_spacing <= 0 or col_spacing <= 0:
        raise GeometryError(f"{path}: RTDOSE PixelSpacing {[row_spacing, col_spacing]} is not positive")
    row_axis, row_sign = _in_plane_axis(iop[:3], "row", path)  # direction of increasing column
    col_axis, col_sign = _in_plane_axis(iop[3:], "column", path)  # direction of increasing row
    if row_axis == col_axis:
        raise GeometryError(f"{path}: RTDOSE ImageOrientationPatient {iop.tolist()} has parallel axes")
    normal_z = float(np.cross(iop[:3], iop[3:])[2])
    normal_z = 1.0 if normal_z > 0 else -1.0

    offsets = _slice_offsets(ds, path, n_frames, warnings)
    z = _slice_positions_z(ds, path, offsets, float(ipp[2]), normal_z)
    z, values = _even_spacing(z, values, path, uneven_slices, warnings)

    # in-plane: array axis 2 (columns) runs along row_axis, axis 1 (rows) along col_axis
    if row_axis == 1:  # rows along x: swap so the last axis is x
        values = values.transpose(0, 2, 1)
        sign_x, sign_y, dx, dy, nx, ny = col_sign, row_sign, row_spacing, col_spacing, rows, cols
    else:
        sign_x, sign_y, dx, dy, nx, ny = row_sign, col_sign, col_spacing, row_spacing, cols, rows
    if sign_x < 0:
        values = values[:, :, ::-1]
    if sign_y < 0:
        values = values[:, ::-1, :]
    x0 = ipp[0] + min(0.0, sign_x * (nx - 1) * dx)
    y0 = ipp[1] + min(0.0, sign_y * (ny - 1) * dy)
    if len(z) > 1:
        dz = float(z[1] - z[0])
    else:
        try:
            thickness = float(ds.get("SliceThickness", 0) or 0)
        except (TypeError, ValueError):
            thickness = 0.0
        dz = thickness if thickness > 0 else 1.0
        if thickness <= 0:
            warnings.append("single-frame RTDOSE without SliceThickness: 1 mm slice spacing assumed")
    for_uid = str(ds.get("FrameOfReferenceUID", "") or "")
    if not for_uid:
        raise InputError(f"{path}: RTDOSE has no FrameOfReferenceUID; it cannot be matched to structures")
    grid = Grid(
        origin_mm=(float(x0), float(y0), float(z[0])),
        spacing_mm=(float(dx), float(dy), dz),
        size=(int(nx), int(ny), int(len(z))),
        direction=IDENTITY,
        frame_of_reference_uid=for_uid,
    )
    return np.ascontiguousarray(values), grid


def _referenced_plan(ds: Dataset) -> tuple[str | None, tuple[int, ...]]:
    """The referenced RT Plan SOP Instance UID and the referenced beam numbers (BEAM doses)."""
    seq = ds.get("ReferencedRTPlanSequence") or []
    if not seq:
        return None, ()
    item = seq[0]
    uid = str(item.get("ReferencedSOPInstanceUID", "") or "") or None
    beams: list[int] = []
    for fg in item.get("ReferencedFractionGroupSequence") or []:
        for beam in fg.get("ReferencedBeamSequence") or []:
            number = str(beam.get("ReferencedBeamNumber", "") or "").strip()
            if number.isdigit():
                beams.append(int(number))
    return uid, tuple(beams)


def _with_for(grid: Grid, for_uid: str | None) -> Grid:
    return Grid(grid.origin_mm, grid.spacing_mm, grid.size, grid.direction, for_uid)


# --------------------------------------------------------------------------------------------
# summing
# --------------------------------------------------------------------------------------------


def sum_doses(doses: Sequence[DoseGrid]) -> DoseGrid:
    """Voxel-wise sum of doses on one grid and Frame of Reference (beam doses of a plan, plans).

    No resampling and no registration: doses on different grids or Frames of Reference raise
    InputError naming the files. BEAM doses that all reference one plan sum to that plan's
    dose (summation PLAN, provided the caller passes every beam); anything else is MULTI_PLAN.
    """
    doses = list(doses)
    if not doses:
        raise InputError("sum of doses: no dose given")
    first = doses[0]
    names = ", ".join(d.label for d in doses)
    uids = [d.sop_instance_uid for d in doses]
    if len(set(uids)) != len(uids):
        raise InputError(f"sum of doses: the same RTDOSE is given twice ({names})")
    for d in doses[1:]:
        if d.grid.frame_of_reference_uid != first.grid.frame_of_reference_uid:
            raise FrameOfReferenceError(
                f"sum of doses: {d.label} (Frame of Reference {d.grid.frame_of_reference_uid}) and "
                f"{first.label} ({first.grid.frame_of_reference_uid}) are not in one Frame of Reference"
            )
        if not d.grid.same_geometry(first.grid):
            raise GeometryError(
                f"sum of doses: {d.label} ({d.grid.describe()}) and {first.label} "
                f"({first.grid.describe()}) are on different dose grids; resample them first"
            )
        if d.per_fraction != first.per_fraction:
            raise InputError(
                f"sum of doses: {d.label} and {first.label} mix a per-fraction dose with a course "
                "total; give the number of fractions"
            )
        if d.dose_type != first.dose_type:
            raise InputError(
                f"sum of doses: {d.label} is a {d.dose_type} dose, {first.label} a {first.dose_type} dose"
            )
    summation, plan_uid = _sum_summation(doses)
    total = np.zeros_like(first.dose_gy)
    for d in doses:
        total += d.dose_gy
    units = {d.dose_units_in_file for d in doses}
    paths = tuple(p for d in doses for p in (d.source_paths or ((d.path,) if d.path else ())))
    return DoseGrid(
        path=None,
        dose_gy=total,
        grid=first.grid,
        summation_type=summation,
        dose_units_in_file=units.pop() if len(units) == 1 else "GY",
        dose_type=first.dose_type,
        referenced_plan_uid=plan_uid,
        sop_instance_uid=new_uid(),
        study=first.study,
        per_fraction=first.per_fraction,
        fractions_applied=first.fractions_applied if len({d.fractions_applied for d in doses}) == 1 else None,
        referenced_beam_numbers=tuple(b for d in doses for b in d.referenced_beam_numbers),
        warnings=[f"sum of {len(doses)} doses: {names}"] + [w for d in doses for w in d.warnings],
        source_paths=paths,
    )


def _sum_summation(doses: list[DoseGrid]) -> tuple[str, str | None]:
    """Summation type and plan of a sum; rejects BEAM doses that would be counted twice."""
    if all(d.summation_type == "BEAM" for d in doses):
        plans = {d.referenced_plan_uid for d in doses}
        if len(plans) > 1:
            raise InputError(
                "sum of doses: BEAM doses of different plans ("
                + ", ".join(f"{d.label}: plan {d.referenced_plan_uid}" for d in doses)
                + ")"
            )
        seen: dict[int, str] = {}
        for d in doses:
            for beam in d.referenced_beam_numbers:
                if beam in seen:
                    raise InputError(
                        f"sum of doses: beam {beam} is in both {seen[beam]} and {d.label}; "
                        "it would be counted twice"
                    )
                seen[beam] = d.label
        return "PLAN", plans.pop()
    plans = {d.referenced_plan_uid for d in doses}
    return "MULTI_PLAN", (plans.pop() if len(plans) == 1 else None)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def ds_number(value: float) -> str:
    """A DS string (at most 16 characters) holding ``value`` as exactly as it can."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"cannot write {value!r} as a DICOM decimal string")
    if value == 0:
        return "0"
    for digits in range(15, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot write {value!r} in 16 characters")  # pragma: no cover


def write_rtdose(
    path: str | os.PathLike[str],
    dose_gy: np.ndarray,
    grid: Grid,
    *,
    study: StudyInfo,
    referenced_plan_uid: str | None = None,
    summation_type: str = "PLAN",
    series_description: str = "SBRT dose",
    dose_type: str = "PHYSICAL",
    referenced_beam_number: int | None = None,
    referenced_fraction_group_number: int = 1,
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    series_number: int = 1,
) -> Path:
    """Write a dose in Gy (array [k, j, i] on an axial ``grid``) as an RT Dose file, atomically.

    Pixels are uint32 with DoseGridScaling chosen so that the maximum dose maps to about 93% of
    the integer range (quantisation step max/4e9). A BEAM dose names its beam
    (``referenced_beam_number``) and plan so that :func:`sum_doses` can check it.
    """
    path = Path(path)
    dose = np.asarray(dose_gy, dtype=np.float64)
    _check_dose_to_write(dose, grid, study, path)
    summation = summation_type.strip().upper()
    if summation not in SUMMATION_TYPES:
        raise InputError(f"{path}: DoseSummationType {summation_type!r} is not one of {SUMMATION_TYPES}")
    if summation == "BEAM" and (referenced_plan_uid is None or referenced_beam_number is None):
        raise InputError(f"{path}: a BEAM dose needs the referenced plan UID and beam number")
    if dose_type not in DOSE_TYPES:
        raise InputError(f"{path}: DoseType {dose_type!r} is not one of {DOSE_TYPES}")

    ds = new_dataset(RT_DOSE_STORAGE, sop_instance_uid)
    study.apply(ds)
    ds.Modality = "RTDOSE"
    ds.SeriesInstanceUID = series_instance_uid or new_uid()
    ds.SeriesNumber = str(series_number)
    ds.SeriesDescription = series_description
    ds.OperatorsName = ""
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = "1"
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    _write_image_plane(ds, grid)
    _write_pixels(ds, dose)
    ds.DoseUnits = "GY"
    ds.DoseType = dose_type
    ds.DoseSummationType = summation
    if referenced_plan_uid:
        _write_plan_reference(
            ds, referenced_plan_uid, summation, referenced_fraction_group_number, referenced_beam_number
        )
    return save_dataset(ds, path)


def _check_dose_to_write(dose: np.ndarray, grid: Grid, study: StudyInfo, path: Path) -> None:
    if dose.shape != grid.shape:
        raise InputError(f"{path}: dose array shape {dose.shape} does not match the grid {grid.shape}")
    if not np.all(np.isfinite(dose)):
        raise InputError(f"{path}: dose array has NaN or infinite values")
    if dose.size and float(dose.min()) < 0:
        raise InputError(f"{path}: dose array has negative values (min {float(dose.min()):g} Gy)")
    grid.require_axial(f"{path}: RTDOSE writing")
    if grid.frame_of_reference_uid and grid.frame_of_reference_uid != study.frame_of_reference_uid:
        raise FrameOfReferenceError(
            f"{path}: the dose grid is in Frame of Reference {grid.frame_of_reference_uid}, the study "
            f"in {study.frame_of_reference_uid}"
        )


def _write_image_plane(ds: Dataset, grid: Grid) -> None:
    """Image Plane and Multi-frame modules; offsets relative to the first frame."""
    dx, dy, dz = grid.spacing_mm
    ni, nj, nk = grid.size
    ds.ImagePositionPatient = [ds_number(v) for v in grid.origin_mm]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [ds_number(dy), ds_number(dx)]  # row spacing (along y), column spacing (x)
    ds.SliceThickness = ds_number(dz)
    ds.Rows = nj
    ds.Columns = ni
    ds.NumberOfFrames = str(nk)
    ds.FrameIncrementPointer = GRID_FRAME_OFFSET_VECTOR_TAG
    ds.GridFrameOffsetVector = [ds_number(k * dz) for k in range(nk)]


def _write_pixels(ds: Dataset, dose: np.ndarray) -> None:
    """Image Pixel module: uint32 pixels and the DoseGridScaling that maps them to Gy."""
    max_gy = float(dose.max()) if dose.size else 0.0
    scaling_text = ds_number(max_gy / WRITE_MAX_INT) if max_gy > 0 else "1e-06"
    scaling = float(scaling_text)
    pixels = np.clip(np.rint(dose / scaling), 0, np.iinfo(np.uint32).max).astype("<u4")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseGridScaling = scaling_text
    ds.add_new(0x7FE00010, "OW", pixels.tobytes())


def _write_plan_reference(
    ds: Dataset, plan_uid: str, summation: str, fraction_group: int, beam_number: int | None
) -> None:
    item = Dataset()
    item.ReferencedSOPClassUID = RT_PLAN_STORAGE
    item.ReferencedSOPInstanceUID = plan_uid
    if summation in ("FRACTION", "BEAM"):
        fg = Dataset()
        fg.ReferencedFractionGroupNumber = str(fraction_group)
        if summation == "BEAM":
            beam = Dataset()
            beam.ReferencedBeamNumber = str(beam_number)
            fg.ReferencedBeamSequence = [beam]
        item.ReferencedFractionGroupSequence = [fg]
    ds.ReferencedRTPlanSequence = [item]
