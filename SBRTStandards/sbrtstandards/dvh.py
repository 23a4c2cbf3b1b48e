"""Dose-volume histograms from planar structure contours and a dose grid (no CT needed).

Why not voxels: a small SBRT target covers a few hundred dose voxels, so counting voxels
by their centre (as most DVH tools do) loses or gains whole voxel layers at the surface and
misplaces D99 by Gy in a steep gradient. Here the structure is sampled on its own lattice,
finer than the dose grid when the structure is small, and the dose is interpolated there.

Conventions (the README copies this section):

* **Structure model.** Each contour plane at height ``z`` stands for a slab of the
  structure; the contour is extruded through the slab. Between two contour planes the slab
  boundary is half-way between them. Several contours on one plane combine by the
  even-odd rule (a contour inside another is a hole, disjoint ones are islands), as DICOM
  RTSTRUCT encodes holes.
* **End caps** (``end_cap``): ``"half-slice"`` (default, what treatment planning systems
  do) extends the first and last plane of each piece of the structure by half its
  neighbour's spacing beyond the plane; ``"none"`` stops the structure at its end planes
  (the end planes get only the half slab inward). Where consecutive planes are more than
  1.5 times the typical (median) plane spacing apart the structure is cut into separate
  pieces, each with its own end caps, and nothing is interpolated across the gap; a plane
  alone in its piece gets half the typical spacing on each side, and the plane of a
  one-plane structure half of ``slice_spacing_mm`` (the CLI uses the median plane spacing
  of the whole structure set). These slabs are :func:`sbrtstandards.contours.plane_slabs`,
  shared with the structure masks and ``contours.roi_volume_cc``.
* **Volume.** The structure volume is the exact polygon volume: sum over planes of the
  even-odd polygon area times the slab thickness. Samples carry volume weights that add
  up to it exactly, plane by plane, so the DVH's total never depends on the sampling.
* **Sampling (adaptive).** ``h = (V / target_samples) ** (1/3)``: about 100 000 samples
  per structure whatever its size (0.35 mm for a 4 cc target, 0.7 mm for 35 cc), finer
  than the dose grid where the structure is small; large structures are sampled at most
  two dose voxels apart (a few mm for lungs and body: their volume is exact anyway), never
  finer than 0.05 mm, and a plane is refined so that it has at least about 100 samples
  (small end contours are not lost). Each plane gets a lattice of spacing ``h``, shifted
  from plane to plane by a low-discrepancy sequence, whose cell centres inside the
  contours are found by :func:`sbrtstandards.polygons.fill_polygons`; the slab is cut
  into ``ceil(t / h)`` sub-slabs in z. Each sample is then placed anywhere within its
  cell and sub-slab (stratified, low-discrepancy offsets with zero mean), so a dose
  gradient yields a continuum of sample doses instead of one dose per lattice row or
  sub-slab: without this the cumulative DVH of a cylinder in a gradient is a staircase
  and D99 is off by half a sample spacing times the gradient.
* **Dose.** Trilinear interpolation of the dose grid at every sample. The grid covers
  its voxels: centres plus half a voxel on every side; in that outer half voxel the dose
  of the outermost voxel plane is used. A sample outside that box has an unknown dose
  (not zero): its volume is reported as ``volume_outside_cc`` and a warning is added;
  **the DVH and every metric then describe the part of the structure inside the dose
  grid** (percentages are of the inside volume). A structure entirely outside the dose
  grid is an error.
* **Statistics.** ``max_gy``/``min_gy`` are the extremes of the interpolated dose over
  points inside the structure: the cell centres of the hottest and coldest samples, the
  contour vertices on the slab faces and on the dose planes between them, and the dose
  voxel centres inside (at least half a sample spacing from the surface; nearer, the
  vertices stand for them), so a hot voxel centre or a hot surface is not missed: for a
  trilinear dose the extremes over a slab lie at voxel centres or on its surface.
  ``mean_gy`` is the volume-weighted mean of the samples. The cumulative DVH ``V(d)``
  (volume receiving at least ``d``) is the piecewise-linear curve through the sorted
  sample doses, each sample placed at the middle of its own volume interval;
  ``D(v)`` (the minimum dose received by the hottest volume ``v``: D95% is the minimum dose
  to the hottest 95 % of the volume, D0.03cc the minimum dose to the hottest 0.03 cc) is
  its inverse, with ``D(0) = max_gy`` and ``D(V) = min_gy``. Both are computed on all the
  sorted samples, never from histogram bins. Binned cumulative and differential DVHs
  (default 0.01 Gy bins) are available for display.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.ndimage import map_coordinates

from sbrtstandards.contours import even_odd_area_mm2, plane_slabs
from sbrtstandards.dicom.rtstruct import Roi, StructureSet
from sbrtstandards.errors import FrameOfReferenceError, GeometryError, InputError
from sbrtstandards.grid import Grid
from sbrtstandards.polygons import fill_polygons

END_CAPS = ("half-slice", "none")
DEFAULT_TARGET_SAMPLES = 100_000
MAX_SAMPLES = 1_000_000
COARSEST_SAMPLE_IN_DOSE_VOXELS = 2.0  # large structures: samples at most 2 dose voxels apart
MIN_SAMPLE_SPACING_MM = 0.05
MIN_SAMPLES_PER_PLANE = 100
MAX_LATTICE_POINTS = 4_000_000
DEFAULT_BIN_WIDTH_GY = 0.01

Planes = Mapping[float, Sequence[np.ndarray]]
ProgressCallback = Callable[[float, str], None]


class DoseLike(Protocol):
    """What the engine needs from a dose: an array [k, j, i] in Gy and its grid."""

    dose_gy: np.ndarray
    grid: Grid


# --------------------------------------------------------------------------------------------
# Dose interpolation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DoseVolume:
    """A dose array ``[k, j, i]`` in Gy on ``grid``, with the interpolation the DVH uses."""

    dose_gy: np.ndarray
    grid: Grid

    def __post_init__(self) -> None:
        arr = np.asarray(self.dose_gy, dtype=float)
        if arr.shape != self.grid.shape:
            raise InputError(f"dose array shape {arr.shape} does not match its grid {self.grid.shape}")
        object.__setattr__(self, "dose_gy", arr)
        axial = self.grid.is_axial
        object.__setattr__(self, "_axial", axial)
        axes = tuple(self.grid.axis_coords_mm(a) for a in range(3)) if axial else None
        object.__setattr__(self, "_axes", axes)

    @property
    def is_axial(self) -> bool:
        return bool(self._axial)  # type: ignore[attr-defined]

    @property
    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates along x, y, z (axial grids only)."""
        return self._axes  # type: ignore[attr-defined,no-any-return]

    @property
    def max_gy(self) -> float:
        return float(np.max(self.dose_gy)) if self.dose_gy.size else 0.0

    def _index_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        size = np.asarray(self.grid.size, dtype=float)  # (ni, nj, nk)
        return np.full(3, -0.5), size - 0.5

    def sample(self, points_mm: np.ndarray) -> np.ndarray:
        """Trilinear dose at LPS points (N, 3); NaN outside the grid's voxel box."""
        pts = np.asarray(points_mm, dtype=float).reshape(-1, 3)
        if self.is_axial:
            return self.sample_points(pts[:, 0], pts[:, 1], pts[:, 2])
        ijk = self.grid.lps_to_index(pts)
        lo, hi = self._index_bounds()
        tol = 1e-9
        inside = np.all((ijk >= lo - tol) & (ijk <= hi + tol), axis=1)
        out = np.full(len(pts), np.nan)
        if inside.any():
            size = np.asarray(self.grid.size, dtype=float)
            idx = np.clip(ijk[inside], 0.0, size - 1.0)
            coords = idx[:, ::-1].T  # (k, j, i) rows for map_coordinates
            out[inside] = map_coordinates(self.dose_gy, coords, order=1, mode="nearest", prefilter=False)
        return out

    def sample_points(self, x_mm: np.ndarray, y_mm: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        """Trilinear dose at the points (x[i], y[i], z[i]); NaN outside the grid's voxel box.

        On an axial grid: eight gathers from the flat dose array with separable weights,
        several times faster than scipy's map_coordinates on millions of points.
        """
        if not self.is_axial:
            return self.sample(np.column_stack([x_mm, y_mm, z_mm]))
        ni, nj, nk = self.grid.size
        org, sp = self.grid.origin_mm, self.grid.spacing_mm
        i0, fx, okx = _axis_weights(x_mm, org[0], sp[0], ni)
        j0, fy, oky = _axis_weights(y_mm, org[1], sp[1], nj)
        k0, fz, okz = _axis_weights(z_mm, org[2], sp[2], nk)
        di = (i0 + 1 < ni).astype(np.int64)
        dj = (j0 + 1 < nj).astype(np.int64) * ni
        dk = (k0 + 1 < nk).astype(np.int64) * (ni * nj)
        flat = self.dose_gy.ravel()
        base = (k0 * nj + j0) * ni + i0
        gx = 1.0 - fx
        c00 = flat[base] * gx + flat[base + di] * fx
        c01 = flat[base + dj] * gx + flat[base + dj + di] * fx
        c10 = flat[base + dk] * gx + flat[base + dk + di] * fx
        c11 = flat[base + dk + dj] * gx + flat[base + dk + dj + di] * fx
        c0 = c00 + (c01 - c00) * fy
        c1 = c10 + (c11 - c10) * fy
        out = c0 + (c1 - c0) * fz
        out[~(okx & oky & okz)] = np.nan
        return out


def _axis_weights(
    coords_mm: np.ndarray, origin_mm: float, spacing_mm: float, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower voxel index, fraction towards the next one, and in-grid flag along one axis."""
    f = (np.asarray(coords_mm, dtype=float) - origin_mm) / spacing_mm
    ok = (f >= -0.5 - 1e-9) & (f <= n - 0.5 + 1e-9)
    f = np.clip(f, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(f).astype(np.int64), max(n - 2, 0))
    a = f - i0
    if n == 1:
        a = np.zeros_like(f)
    return i0, a, ok


def as_dose_volume(dose: DoseLike | DoseVolume) -> DoseVolume:
    """Accept a :class:`DoseVolume` or any object with ``dose_gy`` and ``grid`` (e.g. DoseGrid)."""
    if isinstance(dose, DoseVolume):
        return dose
    if hasattr(dose, "dose_gy") and hasattr(dose, "grid"):
        return DoseVolume(np.asarray(dose.dose_gy, dtype=float), dose.grid)
    raise TypeError(f"expected a dose with .dose_gy and .grid, got {type(dose).__name__}")


# --------------------------------------------------------------------------------------------
# Structure geometry: slabs, areas, volume
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slab:
    """One contour plane and the z extent of structure it stands for."""

    z_mm: float
    z_lo_mm: float
    z_hi_mm: float
    polygons: tuple[np.ndarray, ...]
    area_mm2: float

    @property
    def thickness_mm(self) -> float:
        return self.z_hi_mm - self.z_lo_mm

    @property
    def volume_mm3(self) -> float:
        return self.area_mm2 * self.thickness_mm


def check_planes(what: str, planes: Planes) -> None:
    """Reject what a DVH cannot use: no contours, or a contour with < 3 points or no area."""
    if not planes:
        raise GeometryError(f"{what} has no closed planar contours: no volume for a DVH")
    for z, polys in planes.items():
        for p in polys:
            arr = np.asarray(p, dtype=float)
            if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 3:
                raise GeometryError(
                    f"{what}: degenerate contour on plane z={float(z):.2f} mm "
                    f"({len(arr)} point(s); a closed contour needs at least 3)"
                )
            if not np.all(np.isfinite(arr)):
                raise GeometryError(f"{what}: contour on plane z={float(z):.2f} mm has non-finite points")
            if _area_mm2(arr) <= 1e-9:
                raise GeometryError(
                    f"{what}: degenerate contour on plane z={float(z):.2f} mm (zero area: "
                    f"its {len(arr)} points are collinear or repeated)"
                )


def _area_mm2(xy: np.ndarray) -> float:
    """Shoelace area without temporary rolled copies (hot path for large body contours)."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]) + x[-1] * y[0] - x[0] * y[-1]))


def _plane_area_mm2(polygons: Sequence[np.ndarray]) -> float:
    """Even-odd area of one plane (one polygon: its area; several: contours.even_odd_area_mm2)."""
    if len(polygons) == 1:
        return _area_mm2(polygons[0])
    lo = np.array([p.min(axis=0) for p in polygons])
    hi = np.array([p.max(axis=0) for p in polygons])
    nested = (lo[:, None, :] <= lo[None, :, :]).all(-1) & (hi[:, None, :] >= hi[None, :, :]).all(-1)
    np.fill_diagonal(nested, False)
    if not nested.any():  # no bounding box inside another: no holes, the islands just add up
        return float(sum(_area_mm2(p) for p in polygons))
    return float(even_odd_area_mm2(polygons))


def build_slabs(
    what: str,
    planes: Planes,
    *,
    end_cap: str = "half-slice",
    slice_spacing_mm: float | None = None,
) -> list[Slab]:
    """The slab each contour plane stands for, under the end-cap convention (module doc).

    ``what`` names the structure in error messages (e.g. ``"RS.dcm: ROI 'PTV'"``).
    The slabs are those of :func:`sbrtstandards.contours.plane_slabs` (masks and polygon
    volumes use the same ones), so the DVH volume equals ``contours.roi_volume_cc``.
    ``slice_spacing_mm`` is the thickness of the plane of a one-plane structure.
    """
    if end_cap not in END_CAPS:
        raise InputError(f"unknown end cap '{end_cap}': expected one of {', '.join(END_CAPS)}")
    check_planes(what, planes)
    by_z = {float(z): planes[z] for z in planes}
    if len(by_z) == 1 and end_cap == "half-slice" and not slice_spacing_mm:
        raise GeometryError(
            f"{what} has a single contour plane and the slice spacing is unknown: cannot give it a thickness"
        )
    raw = plane_slabs(list(by_z), single_plane_half_mm=(slice_spacing_mm or 0.0) / 2.0, clip_ends=end_cap == "none")
    slabs = []
    for z, lo, hi in raw:
        polys = tuple(np.asarray(p, dtype=float)[:, :2] for p in by_z[z])
        slabs.append(Slab(z, lo, hi, polys, _plane_area_mm2(polys)))
    if sum(s.volume_mm3 for s in slabs) <= 0.0:
        raise GeometryError(
            f"{what} has zero volume with end cap '{end_cap}' ({len(by_z)} contour plane(s)); use --end-cap half-slice"
        )
    return slabs


def planes_volume_cc(
    planes: Planes,
    *,
    end_cap: str = "half-slice",
    slice_spacing_mm: float | None = None,
    name: str = "structure",
) -> float:
    """Exact polygon volume of a structure (cc) under the end-cap convention."""
    slabs = build_slabs(f"ROI '{name}'", planes, end_cap=end_cap, slice_spacing_mm=slice_spacing_mm)
    return sum(s.volume_mm3 for s in slabs) / 1000.0


# --------------------------------------------------------------------------------------------
# The DVH
# --------------------------------------------------------------------------------------------


@dataclass
class Dvh:
    """The dose distribution of one structure (the part inside the dose grid).

    ``doses_gy`` are the sample doses sorted from hot to cold and ``cum_mid_cc[i]`` the
    volume hotter than sample ``i`` plus half its own volume (module doc).
    """

    name: str
    volume_cc: float
    volume_outside_cc: float
    doses_gy: np.ndarray
    weights_cc: np.ndarray
    cum_mid_cc: np.ndarray
    min_gy: float | None
    max_gy: float | None
    mean_gy: float | None
    sample_spacing_mm: float
    end_cap: str
    warnings: list[str] = field(default_factory=list)

    @property
    def volume_inside_cc(self) -> float:
        return float(self.weights_cc.sum()) if len(self.weights_cc) else 0.0

    @property
    def n_samples(self) -> int:
        return len(self.doses_gy)

    def dose_at_volume_cc(self, volume_cc: float) -> float:
        """Minimum dose (Gy) received by the hottest ``volume_cc`` (D at an absolute volume)."""
        if self.n_samples == 0:
            raise ValueError(f"ROI '{self.name}' has no dose samples")
        v = float(volume_cc)
        total = self.volume_inside_cc
        if v <= 1e-12 * total:  # D0 is the maximum, D100% the minimum (round-off tolerated)
            return float(self.max_gy)  # type: ignore[arg-type]
        if v >= total * (1.0 - 1e-12):
            return float(self.min_gy)  # type: ignore[arg-type]
        return float(np.interp(v, self.cum_mid_cc, self.doses_gy))

    def dose_at_volume_percent(self, percent: float) -> float:
        """Minimum dose received by the hottest ``percent`` % of the (inside) volume."""
        return self.dose_at_volume_cc(self.volume_inside_cc * float(percent) / 100.0)

    def volume_at_dose_cc(self, dose_gy: float) -> float:
        """Volume (cc) receiving at least ``dose_gy``."""
        if self.n_samples == 0:
            return 0.0
        d = float(dose_gy)
        if d > self.doses_gy[0]:
            return 0.0
        if d <= self.doses_gy[-1]:
            return self.volume_inside_cc
        return float(np.interp(-d, -self.doses_gy, self.cum_mid_cc))

    def volume_below_dose_cc(self, dose_gy: float) -> float:
        """Volume (cc) receiving less than ``dose_gy`` (the spared volume of a CV metric)."""
        return self.volume_inside_cc - self.volume_at_dose_cc(dose_gy)

    def cold_dose_at_volume_cc(self, volume_cc: float) -> float:
        """The dose that the coldest ``volume_cc`` receive at most (DC metrics)."""
        return self.dose_at_volume_cc(self.volume_inside_cc - float(volume_cc))

    def differential(self, bin_width_gy: float = DEFAULT_BIN_WIDTH_GY) -> tuple[np.ndarray, np.ndarray]:
        """Bin edges (Gy, n+1) and the volume (cc) whose dose falls in each bin (n)."""
        if bin_width_gy <= 0:
            raise InputError(f"bin width must be positive, got {bin_width_gy} Gy")
        top = float(self.doses_gy[0]) if self.n_samples else 0.0
        nbins = max(1, int(math.floor(max(top, 0.0) / bin_width_gy)) + 1)
        if self.n_samples:
            idx = np.clip(np.floor(np.maximum(self.doses_gy, 0.0) / bin_width_gy).astype(np.int64), 0, nbins - 1)
            counts = np.bincount(idx, weights=self.weights_cc, minlength=nbins)
        else:
            counts = np.zeros(nbins)
        edges = np.arange(nbins + 1) * bin_width_gy
        return edges, counts

    def cumulative(self, bin_width_gy: float = DEFAULT_BIN_WIDTH_GY) -> tuple[np.ndarray, np.ndarray]:
        """Bin lower edges (Gy) and the volume (cc) receiving at least each of them."""
        edges, counts = self.differential(bin_width_gy)
        cum = np.cumsum(counts[::-1])[::-1]
        return edges[:-1], cum

    def curve(self, n_points: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """A compact cumulative DVH: ``n_points`` doses from 0 to the maximum and V(>= d) in cc."""
        if self.n_samples == 0:
            return np.zeros(1), np.zeros(1)
        top = float(self.max_gy if self.max_gy is not None else self.doses_gy[0])
        doses = np.linspace(0.0, top, max(2, n_points))
        vols = np.array([self.volume_at_dose_cc(d) for d in doses])
        vols[0] = self.volume_inside_cc if doses[0] <= self.doses_gy[-1] else vols[0]
        return doses, vols

    def to_json(self, n_points: int = 256) -> dict[str, Any]:
        """The structure's summary and compact curve, JSON-ready (metrics are added by the caller)."""
        doses, vols = self.curve(n_points)
        return {
            "name": self.name,
            "volume_cc": round(self.volume_cc, 6),
            "volume_inside_dose_cc": round(self.volume_inside_cc, 6),
            "volume_outside_dose_cc": round(self.volume_outside_cc, 6),
            "min_gy": _r(self.min_gy),
            "mean_gy": _r(self.mean_gy),
            "max_gy": _r(self.max_gy),
            "samples": self.n_samples,
            "sample_spacing_mm": round(self.sample_spacing_mm, 4),
            "warnings": list(self.warnings),
            "dvh": {
                "dose_gy": [round(float(d), 4) for d in doses],
                "volume_cc": [round(float(v), 6) for v in vols],
            },
        }


def _r(value: float | None, nd: int = 4) -> float | None:
    return None if value is None else round(float(value), nd)


def sample_spacing_mm(
    volume_mm3: float, dose: DoseVolume | None, target_samples: int = DEFAULT_TARGET_SAMPLES
) -> float:
    """Lattice spacing: about ``target_samples`` samples, at least the dose grid's resolution,
    and at most ``MAX_SAMPLES`` samples for the largest structures (body: a few mm)."""
    v = max(volume_mm3, 1e-9)
    h = (v / float(target_samples)) ** (1.0 / 3.0)
    if dose is not None:
        h = min(
            h, max(COARSEST_SAMPLE_IN_DOSE_VOXELS * float(min(dose.grid.spacing_mm)), (v / MAX_SAMPLES) ** (1.0 / 3.0))
        )
    return max(h, MIN_SAMPLE_SPACING_MM)


def structure_dvh(
    name: str,
    planes: Planes,
    dose: DoseLike | DoseVolume,
    *,
    end_cap: str = "half-slice",
    slice_spacing_mm: float | None = None,
    target_samples: int = DEFAULT_TARGET_SAMPLES,
    sample_spacing: float | None = None,
    what: str | None = None,
) -> Dvh:
    """The DVH of one structure given as ``{z_mm: [(N, 2) xy polygons]}`` in ``dose``.

    ``sample_spacing`` forces the lattice spacing (mm) instead of the adaptive choice;
    ``what`` names the structure in messages (default ``ROI 'name'``).
    """
    what = what or f"ROI '{name}'"
    dv = as_dose_volume(dose)
    slabs = build_slabs(what, planes, end_cap=end_cap, slice_spacing_mm=slice_spacing_mm)
    volume_mm3 = sum(s.volume_mm3 for s in slabs)
    h = sample_spacing if sample_spacing is not None else sample_spacing_mm(volume_mm3, dv, target_samples)
    parts: list[tuple[np.ndarray, ...]] = []
    lattices: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    weights: list[float] = []
    used: list[Slab] = []
    for index, slab in enumerate(slabs):
        if slab.volume_mm3 <= 0.0:
            continue
        points, lattice = _slab_points(slab, h, index)
        parts.append(points)
        lattices.append(lattice)
        weights.append(slab.volume_mm3 / 1000.0 / len(points[0]))
        used.append(slab)
    x, y, z, cx, cy = (np.concatenate(c) for c in zip(*parts))
    slab_of = np.repeat(np.arange(len(parts), dtype=np.int64), [len(p[0]) for p in parts])
    vals = dv.sample_points(x, y, z)  # one vectorised call for the whole structure
    extremes = [_inside_extremes(dv, vals, cx, cy, z)]
    if len(extremes[0]):  # surface points and voxel centres beyond the sampled extremes
        extremes += _surface_and_node_extremes(dv, used, lattices, float(extremes[0][0]), float(extremes[0][1]))
    else:
        extremes += _surface_and_node_extremes(dv, used, lattices, np.inf, -np.inf)
    return _assemble(name, what, volume_mm3, vals, slab_of, weights, extremes, h, end_cap)


_R2 = 1.3247179572447460  # the plastic number (x**3 = x + 1): the R-sequence in 2 dimensions
_R2_ALPHA = np.array([1.0 / _R2, 1.0 / _R2**2])


def _lattice_offset(n: int) -> np.ndarray:
    """Offsets in [0, 1)^2 of the n-th plane's lattice (additive low-discrepancy sequence).

    Every contour plane gets its own lattice shift, so the rows and columns of successive
    planes interleave instead of stacking: the dose values of a structure whose cross
    sections repeat (a cylinder) do not bunch on a few lattice rows.
    """
    return np.mod(0.5 + n * _R2_ALPHA, 1.0)


def _plane_lattice(slab: Slab, h: float, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lattice of spacing ``h`` (shifted by ``offset`` cells) over the plane, and its inside mask."""
    allxy = np.concatenate(slab.polygons)
    (x0, y0), (x1, y1) = allxy.min(axis=0), allxy.max(axis=0)
    hp = min(h, math.sqrt(slab.area_mm2 / MIN_SAMPLES_PER_PLANE))
    for _ in range(4):
        nx = int(math.ceil((x1 - x0) / hp)) + 1
        ny = int(math.ceil((y1 - y0) / hp)) + 1
        if nx * ny > MAX_LATTICE_POINTS:
            hp *= math.sqrt(nx * ny / MAX_LATTICE_POINTS)
            continue
        xs = x0 + (np.arange(nx) + offset[0]) * hp
        ys = y0 + (np.arange(ny) + offset[1]) * hp
        mask = fill_polygons(slab.polygons, xs, ys)
        if mask.any():
            return xs, ys, mask
        hp /= 4.0  # a sliver thinner than the lattice: refine
    # Last resort: the vertices themselves stand for the plane.
    xs = np.unique(allxy[:, 0])
    ys = np.unique(allxy[:, 1])
    mask = np.zeros((len(ys), len(xs)), dtype=bool)
    mask[np.searchsorted(ys, allxy[:, 1]), np.searchsorted(xs, allxy[:, 0])] = True
    return xs, ys, mask


_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_jitter_table = np.empty(0)


_jitter_xy_table = np.empty((2, 0))


def _jitter_xy(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` in-cell offsets in [-1/2, 1/2)^2 from the 2-D R-sequence, shifted to mean 0."""
    global _jitter_xy_table
    if _jitter_xy_table.shape[1] < n:
        m = np.arange(max(n, 2 * _jitter_xy_table.shape[1], 4096))
        _jitter_xy_table = np.mod(0.5 + np.outer(_R2_ALPHA[::-1], m + 7), 1.0) - 0.5
    u, v = _jitter_xy_table[0, :n], _jitter_xy_table[1, :n]
    return np.clip(u - float(u.mean()), -0.5, 0.5), np.clip(v - float(v.mean()), -0.5, 0.5)


def _jitter(n: int) -> np.ndarray:
    """``n`` heights in [0, 1) from the golden-ratio sequence, shifted to mean exactly 1/2."""
    global _jitter_table
    if len(_jitter_table) < n:
        _jitter_table = np.mod(0.5 + _GOLDEN * np.arange(max(n, 2 * len(_jitter_table), 4096)), 1.0)
    j = _jitter_table[:n]
    return np.clip(j + (0.5 - float(j.mean())), 0.0, 1.0)  # inside the sub-slab, never beyond


EXTREME_CANDIDATES = 32  # hottest and coldest samples re-sampled at their cell centres for Max/Min


def _slab_points(
    slab: Slab, h: float, index: int
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Sample points of one slab (x, y, z and the (x, y) of each one's lattice cell centre),
    and the lattice (xs, ys, inside mask).

    The slab gets its own shifted lattice in-plane, repeated on ``ceil(t / h)`` sub-slabs in
    z (all points of a slab carry the same volume, so the slab's weights add up to area x
    thickness). Each point sits anywhere in its lattice cell and, within its sub-slab, at
    its own height (low-discrepancy sequences, mean offsets zero), so a gradient gives a
    continuum of doses rather than one dose level per lattice row or sub-slab (which would
    turn the cumulative DVH into a staircase). A point can so lie up to half a cell outside
    the contour: harmless for the DVH (it stands for its cell), but Max/Min only use points
    inside (cell centres, contour vertices, voxel centres).
    """
    xs, ys, mask = _plane_lattice(slab, h, _lattice_offset(index))
    yy, xx = np.nonzero(mask)
    n_in = len(xx)
    hx = xs[1] - xs[0] if len(xs) > 1 else 0.0
    hy = ys[1] - ys[0] if len(ys) > 1 else 0.0
    ju, jv = _jitter_xy(n_in)
    cx, cy = xs[xx], ys[yy]
    nz = max(1, int(math.ceil(slab.thickness_mm / h - 1e-9)))
    dz = slab.thickness_mm / nz
    z = (slab.z_lo_mm + (np.arange(nz)[:, None] + _jitter(n_in)[None, :]) * dz).ravel()
    points = (np.tile(cx + ju * hx, nz), np.tile(cy + jv * hy, nz), z, np.tile(cx, nz), np.tile(cy, nz))
    return points, (xs, ys, mask)


def _inside_extremes(dose: DoseVolume, vals: np.ndarray, cx: np.ndarray, cy: np.ndarray, z: np.ndarray) -> np.ndarray:
    """[min, max] of the dose at the cell centres (inside the contours by construction) of the
    hottest and coldest samples."""
    finite = np.isfinite(vals)
    if not finite.any():
        return np.empty(0)
    k = EXTREME_CANDIDATES
    hot = np.where(finite, vals, -np.inf)
    cold = np.where(finite, vals, np.inf)
    if len(vals) > 2 * k:
        cand = np.unique(np.concatenate([np.argpartition(-hot, k)[:k], np.argpartition(cold, k)[:k]]))
    else:
        cand = np.arange(len(vals))
    centre = dose.sample_points(cx[cand], cy[cand], z[cand])
    centre = centre[np.isfinite(centre)]
    return np.array([centre.min(), centre.max()]) if len(centre) else np.empty(0)


def _surface_and_node_extremes(
    dose: DoseVolume, slabs: list[Slab], lattices: list[tuple[np.ndarray, ...]], lo: float, hi: float
) -> list[np.ndarray]:
    """[min, max] of the dose at the contour vertices (on the slab faces and on the dose
    planes between them, all in one interpolation call) and at the dose voxel centres well
    inside the structure that lie outside [lo, hi]."""
    out: list[np.ndarray] = []
    gz = dose.axes_mm[2] if dose.is_axial else np.empty(0)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    zs: list[np.ndarray] = []
    for slab in slabs:
        xy = np.concatenate(slab.polygons)
        levels = np.concatenate([[slab.z_lo_mm, slab.z_hi_mm], gz[(gz > slab.z_lo_mm) & (gz < slab.z_hi_mm)]])
        xs.append(np.tile(xy[:, 0], len(levels)))
        ys.append(np.tile(xy[:, 1], len(levels)))
        zs.append(np.repeat(levels, len(xy)))
    v = dose.sample_points(np.concatenate(xs), np.concatenate(ys), np.concatenate(zs))
    v = v[np.isfinite(v)]
    if len(v):
        out.append(np.array([v.min(), v.max()]))
    if dose.is_axial and np.isfinite(lo) and np.isfinite(hi):
        out.extend(_node_extremes(dose, slabs, lattices, lo, hi))
    return out


def _node_extremes(
    dose: DoseVolume, slabs: list[Slab], lattices: list[tuple[np.ndarray, ...]], lo: float, hi: float
) -> list[np.ndarray]:
    """Doses of the voxel centres inside the structure that are below ``lo`` or above ``hi``.

    One block test finds the candidates; a candidate counts when the four lattice cell
    centres around it are inside the contours (so it is inside, at least half a sample
    spacing from the surface; nearer the surface the contour vertices stand for it).
    """
    gx, gy, gz = dose.axes_mm
    xy = np.concatenate([np.concatenate(s.polygons) for s in slabs])
    z_lo = np.array([s.z_lo_mm for s in slabs])
    z_hi = np.array([s.z_hi_mm for s in slabs])
    ks = np.nonzero((gz >= z_lo.min()) & (gz < z_hi.max()))[0]
    ix = np.nonzero((gx >= xy[:, 0].min()) & (gx <= xy[:, 0].max()))[0]
    iy = np.nonzero((gy >= xy[:, 1].min()) & (gy <= xy[:, 1].max()))[0]
    if len(ks) == 0 or len(ix) == 0 or len(iy) == 0:
        return []
    block = dose.dose_gy[ks[0] : ks[-1] + 1, iy[0] : iy[-1] + 1, ix[0] : ix[-1] + 1]
    kk, jj, ii = np.nonzero((block > hi) | (block < lo))
    if len(kk) == 0:
        return []
    node_z = gz[ks[0] + kk]
    which = np.searchsorted(z_lo, node_z, side="right") - 1  # slabs are sorted by z
    ok = (which >= 0) & (node_z < z_hi[np.maximum(which, 0)])
    out = []
    for n in np.unique(which[ok]):
        sel = np.nonzero(ok & (which == n))[0]
        xs, ys, mask = lattices[n]
        if len(xs) < 2 or len(ys) < 2:
            continue
        u = (gx[ix[ii[sel]]] - xs[0]) / (xs[1] - xs[0])
        v = (gy[iy[jj[sel]]] - ys[0]) / (ys[1] - ys[0])
        u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
        good = (u0 >= 0) & (v0 >= 0) & (u0 + 1 < len(xs)) & (v0 + 1 < len(ys))
        u0, v0, sel = u0[good], v0[good], sel[good]
        inside = mask[v0, u0] & mask[v0, u0 + 1] & mask[v0 + 1, u0] & mask[v0 + 1, u0 + 1]
        if inside.any():
            sel = sel[inside]
            out.append(block[kk[sel], jj[sel], ii[sel]])
    return out


_KEY_QUANTUM = 2.0**-24  # Gy: resolution of the sort key (6e-8 Gy)
_KEY_SHIFT = 20  # low bits of the key carry the slab index (up to a million slabs)


def _sort_descending(vals: np.ndarray, slab_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Doses from hot to cold with their slab indices.

    One integer sort of ``(dose, slab)`` keys is about twice as fast as an argsort followed
    by two gathers. Keys quantise the dose to 6e-8 Gy (the sorted doses carry that
    rounding; Max/Min use the raw values); ranges beyond 500 000 Gy fall back to argsort.
    """
    top = float(vals.max())
    span = top - float(vals.min())
    if len(vals) == 0 or span / _KEY_QUANTUM >= 2.0 ** (62 - _KEY_SHIFT) or slab_of.max() >= 2**_KEY_SHIFT:
        order = np.argsort(-vals)
        return vals[order], slab_of[order]
    keys = (np.rint((top - vals) / _KEY_QUANTUM).astype(np.int64) << _KEY_SHIFT) | slab_of
    keys.sort()
    return top - (keys >> _KEY_SHIFT) * _KEY_QUANTUM, keys & (2**_KEY_SHIFT - 1)


def _assemble(
    name: str,
    what: str,
    volume_mm3: float,
    vals: np.ndarray,
    slab_of: np.ndarray,
    weights: list[float],
    extremes: list[np.ndarray],
    h: float,
    end_cap: str,
) -> Dvh:
    slab_w = np.asarray(weights, dtype=float)
    inside = np.isfinite(vals)
    volume_cc = volume_mm3 / 1000.0
    outside_cc = float(np.dot(np.bincount(slab_of[~inside], minlength=len(slab_w)), slab_w))
    if not inside.any():
        raise InputError(f"{what} ({volume_cc:.3f} cc) lies entirely outside the dose grid: no dose is known there")
    vals, slab_of = vals[inside], slab_of[inside]
    vals, slab_of = _sort_descending(vals, slab_of)
    w = slab_w[slab_of]
    cum = np.cumsum(w)
    mid = cum - w / 2.0
    known = np.concatenate(extremes) if extremes else np.empty(0)
    known = known[np.isfinite(known)]
    vmax = float(known.max()) if len(known) else float(vals[0])
    vmin = float(known.min()) if len(known) else float(vals[-1])
    mean = float(np.dot(vals, w) / cum[-1])
    warnings: list[str] = []
    if outside_cc > 1e-6 * max(volume_cc, 1e-9):
        pct = 100.0 * outside_cc / volume_cc
        warnings.append(
            f"{outside_cc:.3f} cc ({pct:.1f}%) of {what} lies outside the dose grid (dose unknown there); "
            f"its DVH and metrics describe the {cum[-1]:.3f} cc inside"
        )
    else:
        outside_cc = 0.0
    return Dvh(
        name=name,
        volume_cc=volume_cc,
        volume_outside_cc=outside_cc,
        doses_gy=vals,
        weights_cc=w,
        cum_mid_cc=mid,
        min_gy=vmin,
        max_gy=vmax,
        mean_gy=mean,
        sample_spacing_mm=h,
        end_cap=end_cap,
        warnings=warnings,
    )


def compute_dvhs(
    structures: Mapping[str, Planes],
    dose: DoseLike | DoseVolume,
    *,
    end_cap: str = "half-slice",
    slice_spacing_mm: float | None = None,
    target_samples: int = DEFAULT_TARGET_SAMPLES,
    progress: ProgressCallback | None = None,
) -> list[Dvh]:
    """DVHs of many structures in one dose (the dose array is prepared once)."""
    dv = as_dose_volume(dose)
    out: list[Dvh] = []
    names = list(structures)
    for n, name in enumerate(names):
        if progress is not None:
            progress(n / max(len(names), 1), name)
        out.append(
            structure_dvh(
                name,
                structures[name],
                dv,
                end_cap=end_cap,
                slice_spacing_mm=slice_spacing_mm,
                target_samples=target_samples,
            )
        )
    if progress is not None:
        progress(1.0, "done")
    return out


# --------------------------------------------------------------------------------------------
# Structure sets (RTSTRUCT) and doses (RTDOSE)
# --------------------------------------------------------------------------------------------


@dataclass
class StructureSetDvhs:
    """DVHs of the ROIs of one structure set, and the ROIs left out with the reason."""

    dvhs: list[Dvh]
    skipped: list[tuple[str, str]]  # (ROI name, reason)
    slice_spacing_mm: float | None


def roi_planes(roi: Roi) -> dict[float, list[np.ndarray]]:
    """The closed planar contours of an ROI, or :class:`InputError` saying why it has no DVH."""
    if roi.is_empty:
        raise InputError(f"{roi.describe()} has no contour data: no DVH")
    if roi.is_point:
        raise GeometryError(f"{roi.describe()} is a POINT ROI (a marker, no volume): no DVH")
    open_types = sorted({c.geometric_type for c in roi.contours if c.geometric_type != "CLOSED_PLANAR"})
    if open_types:
        n_open = sum(c.geometric_type != "CLOSED_PLANAR" for c in roi.contours)
        raise GeometryError(
            f"{roi.describe()} has {n_open} contour(s) of type {', '.join(open_types)}: an open contour "
            "encloses no volume, so no DVH"
        )
    planes = roi.planes()
    check_planes(roi.describe(), planes)
    return planes


def structure_set_spacing_mm(structure_set: StructureSet) -> float | None:
    """Median spacing of all contour planes of the structure set (thickness of one-plane ROIs)."""
    zs: set[float] = set()
    for roi in structure_set.rois:
        if roi.is_empty or roi.is_point:
            continue
        zs.update(round(float(c.points_mm[0][2]), 3) for c in roi.contours if c.geometric_type == "CLOSED_PLANAR")
    if len(zs) < 2:
        return None
    steps = np.diff(sorted(zs))
    steps = steps[steps > 1e-3]
    return float(np.median(steps)) if len(steps) else None


def check_frame_of_reference(structure_set: StructureSet, dose: Any, dose_label: str = "the dose") -> None:
    """Structures and dose must share a Frame of Reference (no registration is done here)."""
    ss_for = structure_set.study.frame_of_reference_uid if structure_set.study else None
    dose_for = getattr(dose.grid, "frame_of_reference_uid", None)
    if ss_for and dose_for and ss_for != dose_for:
        raise FrameOfReferenceError(
            f"{structure_set.describe()} (Frame of Reference {ss_for}) and {dose_label} (Frame of "
            f"Reference {dose_for}) are not in the same Frame of Reference: a DVH needs them registered"
        )


def structure_set_dvhs(
    structure_set: StructureSet,
    dose: DoseLike | DoseVolume,
    names: Sequence[str] | None = None,
    *,
    end_cap: str = "half-slice",
    target_samples: int = DEFAULT_TARGET_SAMPLES,
    dose_label: str = "the dose",
    progress: ProgressCallback | None = None,
) -> StructureSetDvhs:
    """DVHs of the named ROIs (errors for each that has none), or of every ROI that has one.

    With ``names``, an ROI that is unknown, empty, a POINT, open, degenerate or entirely
    outside the dose grid is an :class:`InputError`. Without, such ROIs are skipped and
    listed with the reason, so one odd ROI (a couch, a marker) does not stop the rest.
    """
    if end_cap not in END_CAPS:
        raise InputError(f"unknown end cap '{end_cap}': expected one of {', '.join(END_CAPS)}")
    check_frame_of_reference(structure_set, dose, dose_label)
    dv = as_dose_volume(dose)
    strict = names is not None
    rois = [structure_set.roi(n) for n in names] if names is not None else list(structure_set.rois)
    spacing = structure_set_spacing_mm(structure_set)

    def one(roi: Roi) -> Dvh | InputError:
        try:
            return structure_dvh(
                roi.name,
                roi_planes(roi),
                dv,
                end_cap=end_cap,
                slice_spacing_mm=spacing,
                target_samples=target_samples,
                what=roi.describe(),
            )
        except InputError as exc:
            return exc

    results: list[Dvh | InputError] = []
    for n, roi in enumerate(rois):
        if progress is not None:
            progress(n / max(len(rois), 1), roi.name)
        results.append(one(roi))
    dvhs: list[Dvh] = []
    skipped: list[tuple[str, str]] = []
    for roi, result in zip(rois, results):
        if isinstance(result, InputError):
            if strict:
                raise result
            skipped.append((roi.name, str(result)))
        else:
            dvhs.append(result)
    if progress is not None:
        progress(1.0, "done")
    return StructureSetDvhs(dvhs, skipped, spacing)
