"""Contour agreement between two structures: overlap, surface distances, volume and position.

Metrics (the ``sbrt compare`` contract; distances in mm, areas weighted, nothing voxel-counted
on a coarse grid):

* ``dice`` = 2|A∩B| / (|A| + |B|), ``jaccard`` = |A∩B| / |A∪B| (volumes);
* ``hd_mm``: Hausdorff distance, the largest distance from a point of either surface to the other
  surface; ``hd95_mm``: the larger of the two directed 95th percentiles (surface-area weighted);
* ``msd_mm``: mean surface distance, the area-weighted mean of both directed distance sets
  (the symmetric "average surface distance");
* ``surface_dice``: surface Dice at ``tolerance_mm`` (Nikolov et al. 2018): the area of both
  surfaces lying within the tolerance of the other surface, over the total area;
* ``volume_ratio`` = V_test / V_reference; ``centroid_shift_mm`` = |c_test - c_reference|.

Which solid a stack of planar contours stands for (the model)
--------------------------------------------------------------
On each contour plane the structure is the even-odd fill of its polygons
(:func:`sbrtstandards.polygons.fill_polygons`, the project's rasteriser). Between two planes of
one piece (pieces as in :mod:`sbrtstandards.contours`: planes more than 1.5 typical spacings
apart are separate pieces) the in-plane signed distance to the contours is interpolated
linearly in z (shape-based interpolation), so a surface that slopes between planes is a sloping
surface and not a staircase; beyond the end planes of a piece the end contour extends half a
spacing and stops flat (the half-slice end cap of the slab convention, as TPS volumes assume).
A staircase (each plane's contour extruded over its slab) would add steps of up to half a slice
to the surface distances wherever the surface slopes; the interpolated model gives concentric
spheres 2 mm apart, drawn on 2 mm slices, a Hausdorff distance of 2.1 mm.

How it is computed
------------------
Both structures are sampled on one isotropic lattice over their common bounding box. Its
spacing ``s`` is 0.25 mm for small targets and coarser for large ones (the surface may have
:data:`MAX_SURFACE_ELEMENTS` elements: about 1.5 mm for a lung), but never so coarse that the
thinnest structure spans fewer than two samples per half-thickness (volume / area; ribs get
about 1.4 mm) and within the voxel budgets. The level-set function ``phi`` (in-plane signed
distance: exact within a band around the contours, from a Euclidean distance transform further
away) is evaluated at the samples, and the surface is the set of points where ``phi`` crosses
zero between two neighbouring samples, placed by linear interpolation (sub-voxel). Each
crossing along axis ``a`` is a surface element of area ``s^2 |n_a|`` (``n`` the unit normal,
from the gradient of ``phi``), so the element areas add up to the surface area whatever its
slope. The distance from an element to the other surface is its distance to the nearest of
that surface's elements, each taken as a small tangent disc (radius ``0.75 s``): exact for
flat surfaces, within ``s / 4`` elsewhere. Elements within 20 samples of the other surface
find its nearest elements by a bounded k-d tree search; farther ones (a k-d tree search would
visit every element within their distance) start from a thinned copy of the surface and walk
to the foot of the perpendicular. Volumes, overlaps and centroids sum the share of each
sample's voxel inside (:func:`inside_fraction`: partial volumes at the surface), the
intersection taking the smaller share of the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from sbrtstandards.contours import plane_slabs
from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.polygons import fill_polygons

Planes = Mapping[float, Sequence[np.ndarray]]
Progress = Callable[[float, str], None]

DEFAULT_TOLERANCE_MM = 2.0
MIN_SPACING_MM = 0.25  # finest lattice (small targets)
MAX_SPACING_MM = 1.5  # coarsest lattice the surface budget may choose (thin structures: ribs, skin)
MAX_VOXELS = 4_000_000  # lattice size budget per structure (float32: 16 MB) ...
HARD_MAX_VOXELS = 16_000_000  # ... which thin structures may exceed up to this
THICKNESS_FRACTION = 0.5  # spacing <= this x (volume / area) of the thinnest structure
MAX_SURFACE_ELEMENTS = 25_000  # surface elements per structure (the distance queries' cost)
PAD_SAMPLES = 4  # empty samples around the common bounding box
BAND_SAMPLES = 2.5  # exact in-plane distances within this many samples of a contour
DISC_RADIUS_SAMPLES = 0.75  # radius of a surface element's tangent disc
NEAR_SAMPLES = 20.0  # elements closer than this (in samples) to the other surface: direct k-d search
COARSE_SAMPLES = 4  # thinning of the target surface for the first search of far elements
COARSE_SEEDS = 3  # thinned elements nearest to a far element whose surroundings are searched
FAR_CANDIDATES = 12  # elements examined around each estimate of a far element's foot point
FAR_ITERATIONS = 2  # refinements of that estimate (projection on the best element's tangent plane)
FAR = 1.0e4  # level-set value far outside every piece (mm)
_EPS_MM = 1e-6

METRIC_KEYS = ("dice", "jaccard", "hd95_mm", "hd_mm", "msd_mm", "surface_dice", "volume_ratio", "centroid_shift_mm")


# ----------------------------------------------------------------------------- results


@dataclass
class Agreement:
    """Agreement of a test structure with a reference structure (see the module docstring)."""

    dice: float | None
    jaccard: float | None
    hd95_mm: float | None
    hd_mm: float | None
    msd_mm: float | None
    surface_dice: float | None
    volume_ratio: float | None
    centroid_shift_mm: float | None
    tolerance_mm: float
    reference_volume_cc: float
    test_volume_cc: float
    spacing_mm: float
    reference_surface_mm2: float = 0.0
    test_surface_mm2: float = 0.0
    # directed distances: reference surface -> test surface, and test -> reference
    hd95_ref_to_test_mm: float | None = None
    hd95_test_to_ref_mm: float | None = None
    msd_ref_to_test_mm: float | None = None
    msd_test_to_ref_mm: float | None = None
    # 5th, 50th and 95th percentiles of the directed distances (area weighted)
    percentiles_ref_to_test_mm: tuple[float, float, float] | None = None
    percentiles_test_to_ref_mm: tuple[float, float, float] | None = None
    hd_point_mm: list[float] | None = None  # where the Hausdorff distance is reached (on either surface)
    worst_slice_z_mm: float | None = None  # contour plane with the largest area of disagreement
    worst_slice_area_mm2: float | None = None
    reasons: dict[str, str] = field(default_factory=dict)  # metric -> why it is None

    def metrics(self) -> dict[str, float | None]:
        return {k: getattr(self, k) for k in METRIC_KEYS}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: _r(v) for k, v in self.metrics().items()}
        out.update(
            {
                "tolerance_mm": self.tolerance_mm,
                "reference_volume_cc": _r(self.reference_volume_cc),
                "test_volume_cc": _r(self.test_volume_cc),
                "reference_surface_mm2": _r(self.reference_surface_mm2, 1),
                "test_surface_mm2": _r(self.test_surface_mm2, 1),
                "directed": {
                    "hd95_reference_to_test_mm": _r(self.hd95_ref_to_test_mm),
                    "hd95_test_to_reference_mm": _r(self.hd95_test_to_ref_mm),
                    "msd_reference_to_test_mm": _r(self.msd_ref_to_test_mm),
                    "msd_test_to_reference_mm": _r(self.msd_test_to_ref_mm),
                },
                "distance_percentiles_mm": {
                    "p5_p50_p95_reference_to_test": _rlist(self.percentiles_ref_to_test_mm),
                    "p5_p50_p95_test_to_reference": _rlist(self.percentiles_test_to_ref_mm),
                },
                "hd_point_mm": None if self.hd_point_mm is None else [round(v, 2) for v in self.hd_point_mm],
                "worst_slice_z_mm": _r(self.worst_slice_z_mm, 3),
                "worst_slice_area_mm2": _r(self.worst_slice_area_mm2, 2),
                "sampling_mm": self.spacing_mm,
            }
        )
        if self.reasons:
            out["reasons"] = dict(self.reasons)
        return out


def _r(value: float | None, nd: int = 4) -> float | None:
    return None if value is None else round(float(value), nd)


def _rlist(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else [round(float(v), 3) for v in values]


@dataclass
class Surface:
    """Surface elements of a sampled structure: centres (mm), unit normals and areas (mm^2)."""

    points_mm: np.ndarray
    normals: np.ndarray
    areas_mm2: np.ndarray

    @property
    def area_mm2(self) -> float:
        return float(self.areas_mm2.sum())

    def __len__(self) -> int:
        return len(self.points_mm)


# ----------------------------------------------------------------------------- public API


def compare_planes(
    reference: Planes,
    test: Planes,
    *,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    slice_thickness_mm: float | None = None,
    spacing_mm: float | None = None,
    max_voxels: int = MAX_VOXELS,
    names: tuple[str, str] = ("reference", "test"),
) -> Agreement:
    """Agreement of ``test`` with ``reference``, both planar contours ``{z_mm: [(N, 2) xy]}`` (LPS mm).

    ``slice_thickness_mm`` is the thickness of a structure drawn on one plane only (default:
    the typical plane spacing of the two structures together). ``spacing_mm`` forces the
    lattice spacing (default: adaptive, see the module docstring).
    """
    tol = _checked_tolerance(tolerance_mm)
    ref_planes = _clean(reference, names[0])
    test_planes = _clean(test, names[1])
    if not ref_planes and not test_planes:
        raise InputError(f"{names[0]} and {names[1]} both have no closed contours: nothing to compare")
    half = _single_plane_half_mm(ref_planes, test_planes, slice_thickness_mm)
    ref_slabs = plane_slabs(list(ref_planes), single_plane_half_mm=half) if ref_planes else []
    test_slabs = plane_slabs(list(test_planes), single_plane_half_mm=half) if test_planes else []
    grid = lattice([(ref_planes, ref_slabs), (test_planes, test_slabs)], spacing_mm=spacing_mm, max_voxels=max_voxels)
    s = grid.spacing_mm[0]
    phi_ref = level_set(ref_planes, ref_slabs, grid)
    phi_test = level_set(test_planes, test_slabs, grid)
    return agreement_of_fields(phi_ref, phi_test, grid, tol, planes_z=sorted(set(ref_planes) | set(test_planes)),
                               spacing=s)


def agreement_of_fields(
    phi_ref: np.ndarray, phi_test: np.ndarray, grid: Grid, tolerance_mm: float, *, planes_z: Sequence[float] = (),
    spacing: float | None = None,
) -> Agreement:
    """The metrics of two level sets (negative inside) sampled on one isotropic lattice ``grid``."""
    s = float(spacing if spacing is not None else grid.spacing_mm[0])
    voxel_cc = s**3 / 1000.0
    in_ref = phi_ref < 0
    in_test = phi_test < 0
    if not (in_ref.any() or in_test.any()):
        raise InputError("both structures are empty on the comparison lattice (contours smaller than "
                         f"{s:g} mm): nothing to compare")
    f_ref, f_test = inside_fraction(phi_ref), inside_fraction(phi_test)
    n_ref, n_test = float(f_ref.sum(dtype=np.float64)), float(f_test.sum(dtype=np.float64))
    n_both = float(np.minimum(f_ref, f_test).sum(dtype=np.float64))
    v_ref, v_test = n_ref * voxel_cc, n_test * voxel_cc
    result = Agreement(None, None, None, None, None, None, None, None, tolerance_mm, v_ref, v_test, s)
    result.dice = 2.0 * n_both / (n_ref + n_test)
    result.jaccard = n_both / (n_ref + n_test - n_both)
    if n_ref > 0:
        result.volume_ratio = v_test / v_ref
    else:
        result.reasons["volume_ratio"] = "the reference structure is empty"
    if n_ref > 0 and n_test > 0:
        c_ref, c_test = _centroid_mm(f_ref, grid), _centroid_mm(f_test, grid)
        result.centroid_shift_mm = float(np.linalg.norm(c_test - c_ref))
    else:
        result.reasons["centroid_shift_mm"] = "one structure is empty"
    _worst_slice(result, in_ref, in_test, grid, planes_z)
    surf_ref, surf_test = surface_elements(phi_ref, grid), surface_elements(phi_test, grid)
    result.reference_surface_mm2, result.test_surface_mm2 = surf_ref.area_mm2, surf_test.area_mm2
    if len(surf_ref) == 0 or len(surf_test) == 0:
        why = "one structure has no surface (empty)"
        for key in ("hd95_mm", "hd_mm", "msd_mm", "surface_dice"):
            result.reasons[key] = why
        return result
    d_rt = surface_distances(surf_ref, surf_test, grid)
    d_tr = surface_distances(surf_test, surf_ref, grid)
    w_r, w_t = surf_ref.areas_mm2, surf_test.areas_mm2
    result.hd95_ref_to_test_mm = weighted_percentile(d_rt, w_r, 95.0)
    result.hd95_test_to_ref_mm = weighted_percentile(d_tr, w_t, 95.0)
    result.hd95_mm = max(result.hd95_ref_to_test_mm, result.hd95_test_to_ref_mm)
    result.percentiles_ref_to_test_mm = _percentiles(d_rt, w_r)
    result.percentiles_test_to_ref_mm = _percentiles(d_tr, w_t)
    i_rt, i_tr = int(np.argmax(d_rt)), int(np.argmax(d_tr))
    if d_rt[i_rt] >= d_tr[i_tr]:
        result.hd_mm, point = float(d_rt[i_rt]), surf_ref.points_mm[i_rt]
    else:
        result.hd_mm, point = float(d_tr[i_tr]), surf_test.points_mm[i_tr]
    result.hd_point_mm = [float(v) for v in point]
    result.msd_ref_to_test_mm = float(np.average(d_rt, weights=w_r))
    result.msd_test_to_ref_mm = float(np.average(d_tr, weights=w_t))
    total = float(w_r.sum() + w_t.sum())
    result.msd_mm = float((np.dot(d_rt, w_r) + np.dot(d_tr, w_t)) / total)
    within = float(w_r[d_rt <= tolerance_mm].sum() + w_t[d_tr <= tolerance_mm].sum())
    result.surface_dice = within / total
    return result


# ----------------------------------------------------------------------------- the lattice


def lattice(
    structures: Sequence[tuple[Planes, Sequence[tuple[float, float, float]]]],
    *,
    spacing_mm: float | None = None,
    max_voxels: int = MAX_VOXELS,
) -> Grid:
    """An isotropic axial lattice over the structures' bounding box (polygons in xy, slabs in z), padded."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for planes, slabs in structures:
        if not planes:
            continue
        pts = np.concatenate([np.asarray(p, dtype=float) for polys in planes.values() for p in polys])
        lo[:2] = np.minimum(lo[:2], pts.min(axis=0))
        hi[:2] = np.maximum(hi[:2], pts.max(axis=0))
        lo[2] = min(lo[2], min(sl[1] for sl in slabs))
        hi[2] = max(hi[2], max(sl[2] for sl in slabs))
    if not np.all(np.isfinite(lo)):
        raise InputError("no contours to build a comparison lattice on")
    extent = np.maximum(hi - lo, 1e-3)
    if spacing_mm is None:
        s = _adaptive_spacing(structures, extent, max_voxels)
    else:
        s = float(spacing_mm)
        if not (math.isfinite(s) and s > 0):
            raise InputError(f"lattice spacing must be a positive number of mm, not {spacing_mm!r}")
    pad = PAD_SAMPLES * s
    origin = lo - pad
    size = tuple(int(math.ceil((extent[a] + 2 * pad) / s)) + 1 for a in range(3))
    return Grid(tuple(float(v) for v in origin), (s, s, s), size)  # type: ignore[arg-type]


def _adaptive_spacing(structures: Sequence[tuple[Planes, Sequence[tuple[float, float, float]]]],
                      extent: np.ndarray, max_voxels: int) -> float:
    """Fine enough for the thinnest structure, coarse enough for the time and memory budgets.

    The surface budget (:data:`MAX_SURFACE_ELEMENTS`) sets the speed; the structure's thickness
    (volume / area, half the radius of a tube) must span several samples, or partial volumes
    bias it (ribs at 2.5 mm come out 7% too large); the voxel budgets bound the memory.
    """
    sizes = [slab_area_and_volume(planes, slabs) for planes, slabs in structures if planes]
    area = max(a for a, _ in sizes)
    thin = min(THICKNESS_FRACTION * v / a for a, v in sizes if a > 0)
    s = max(math.sqrt(1.5 * area / MAX_SURFACE_ELEMENTS), choose_spacing(extent, max_voxels))
    s = min(s, MAX_SPACING_MM, max(thin, MIN_SPACING_MM))
    return max(s, choose_spacing(extent, HARD_MAX_VOXELS))


def slab_area_and_volume(planes: Planes, slabs: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """Surface area (mm^2: side walls plus the end caps of each piece) and volume (mm^3) of the slab model."""
    from sbrtstandards.contours import even_odd_area_mm2

    if not planes:
        return 0.0, 0.0
    area = volume = 0.0
    for z, lower, upper in slabs:
        perimeter = sum(float(np.hypot(*np.diff(np.vstack([p, p[:1]]), axis=0).T).sum()) for p in planes[z])
        area += perimeter * (upper - lower)
        volume += even_odd_area_mm2(planes[z]) * (upper - lower)
    for piece in _pieces(slabs):
        area += even_odd_area_mm2(planes[piece[0][0]]) + even_odd_area_mm2(planes[piece[-1][0]])
    return area, volume


def choose_spacing(extent_mm: np.ndarray, max_voxels: int = MAX_VOXELS) -> float:
    """The finest spacing >= :data:`MIN_SPACING_MM` whose padded lattice stays within ``max_voxels``."""
    s = MIN_SPACING_MM
    while True:
        n = np.prod([math.ceil(e / s) + 2 * PAD_SAMPLES + 1 for e in extent_mm])
        if n <= max_voxels:
            return s
        s = round(s * 1.1, 4)


# ----------------------------------------------------------------------------- the model


def level_set(planes: Planes, slabs: Sequence[tuple[float, float, float]], grid: Grid) -> np.ndarray:
    """``phi`` (float32, ``grid.shape``): negative inside the interpolated structure (module docstring)."""
    phi = np.full(grid.shape, FAR, dtype=np.float32)
    if not planes:
        return phi
    xs, ys, zs = (grid.axis_coords_mm(a) for a in range(3))
    s = grid.spacing_mm[0]
    plane_phi = {z: in_plane_distance(planes[z], xs, ys, s) for z in planes}
    for piece in _pieces(slabs):
        zk = np.array([sl[0] for sl in piece])
        lower, upper = piece[0][1], piece[-1][2]
        margin = 3 * s
        js = np.nonzero((zs >= lower - margin) & (zs <= upper + margin))[0]
        for j in js:
            z = float(zs[j])
            if z <= zk[0]:
                value = np.maximum(plane_phi[piece[0][0]], np.float32(lower - z))
            elif z >= zk[-1]:
                value = np.maximum(plane_phi[piece[-1][0]], np.float32(z - upper))
            else:
                k = int(np.searchsorted(zk, z, side="right")) - 1
                t = np.float32((z - zk[k]) / (zk[k + 1] - zk[k]))
                value = (1 - t) * plane_phi[piece[k][0]] + t * plane_phi[piece[k + 1][0]]
            np.minimum(phi[j], value, out=phi[j])
    return phi


def _pieces(slabs: Sequence[tuple[float, float, float]]) -> list[list[tuple[float, float, float]]]:
    """Consecutive slabs that touch form a piece (interpolated); a gap starts a new one."""
    pieces: list[list[tuple[float, float, float]]] = []
    for sl in slabs:
        if pieces and abs(sl[1] - pieces[-1][-1][2]) <= 1e-6:
            pieces[-1].append(sl)
        else:
            pieces.append([sl])
    return pieces


def in_plane_distance(polygons: Sequence[np.ndarray], xs: np.ndarray, ys: np.ndarray, s: float) -> np.ndarray:
    """Signed distance (mm, float32, ``(len(ys), len(xs))``) to the polygons of one plane, negative inside.

    Inside is the even-odd fill at the sample points. Within :data:`BAND_SAMPLES` of the
    contours the distance is exact (to the polygon edges); further away it comes from the
    Euclidean distance transform of the fill, within half a sample.
    """
    inside = fill_polygons(polygons, xs, ys)
    segments = _segments(polygons, s)
    if len(segments) == 0:
        return np.full((len(ys), len(xs)), FAR, dtype=np.float32)
    if inside.any() and not inside.all():
        d_out = ndimage.distance_transform_edt(~inside, sampling=s)
        d_in = ndimage.distance_transform_edt(inside, sampling=s)
        phi = np.where(inside, -(d_in - s / 2), d_out - s / 2).astype(np.float32)
        band = np.abs(phi) <= BAND_SAMPLES * s
    else:  # nothing inside at the samples (a contour smaller than a sample): exact everywhere
        phi = np.full((len(ys), len(xs)), FAR, dtype=np.float32)
        band = np.ones_like(inside)
    jj, ii = np.nonzero(band)
    pts = np.column_stack([xs[ii], ys[jj]])
    d = _distance_to_segments(pts, segments)
    phi[jj, ii] = np.where(inside[jj, ii], -d, d)
    return phi


def _segments(polygons: Sequence[np.ndarray], s: float) -> np.ndarray:
    """All polygon edges, split into pieces no longer than ``s / 2``: (M, 4) x0, y0, x1, y1."""
    parts = []
    max_len = s / 2.0
    for poly in polygons:
        p = np.asarray(poly, dtype=float)
        if len(p) < 2:
            continue
        q = np.roll(p, -1, axis=0)
        lengths = np.hypot(*(q - p).T)
        n = np.maximum(1, np.ceil(lengths / max_len).astype(int))
        rep = np.repeat(np.arange(len(p)), n)
        frac0 = np.concatenate([np.arange(k) / k for k in n])
        frac1 = frac0 + np.repeat(1.0 / n, n)
        a = p[rep] + (q - p)[rep] * frac0[:, None]
        b = p[rep] + (q - p)[rep] * frac1[:, None]
        parts.append(np.hstack([a, b]))
    return np.vstack(parts) if parts else np.empty((0, 4))


def _distance_to_segments(points: np.ndarray, segments: np.ndarray, k: int = 4) -> np.ndarray:
    """Exact distance from each point to the nearest segment (among the k with the nearest midpoints)."""
    if len(points) == 0:
        return np.empty(0)
    mid = (segments[:, :2] + segments[:, 2:]) / 2.0
    k = min(k, len(segments))
    _, idx = cKDTree(mid).query(points, k=k)
    idx = np.asarray(idx).reshape(len(points), k)
    a = segments[idx, :2]
    b = segments[idx, 2:]
    ab = b - a
    ap = points[:, None, :] - a
    denom = np.maximum(np.einsum("nkc,nkc->nk", ab, ab), 1e-300)
    t = np.clip(np.einsum("nkc,nkc->nk", ap, ab) / denom, 0.0, 1.0)
    foot = a + ab * t[..., None]
    d = np.linalg.norm(points[:, None, :] - foot, axis=2)
    return d.min(axis=1)


# ----------------------------------------------------------------------------- surfaces and distances


def inside_fraction(phi: np.ndarray) -> np.ndarray:
    """Share of each sample's voxel inside the structure (float32): 1 inside, 0 outside, and across
    the surface a linear ramp of ``phi`` over the voxel's extent along the gradient,
    ``clip(1/2 - phi / sum_a |dphi/da|, 0, 1)`` (exact for a plane parallel to a voxel face, the
    right mean for any plane). Without it, a face lying on a row of samples would lose (or gain)
    half a sample: 3% of a 2 cm cube's volume at 0.3 mm.
    """
    inside = phi < 0
    frac = inside.astype(np.float32)
    ends = []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(0, -1)
        hi[axis] = slice(1, None)
        k0 = np.stack(np.nonzero(inside[tuple(lo)] != inside[tuple(hi)]), axis=1)
        k1 = k0.copy()
        k1[:, axis] += 1
        ends += [k0, k1]
    if not ends or sum(len(e) for e in ends) == 0:
        return frac
    idx = np.unique(np.concatenate(ends), axis=0)
    g = np.abs(_gradient_at(phi, idx)).sum(axis=1)
    values = phi[tuple(idx.T)].astype(float)
    ramp = np.clip(0.5 - values / np.maximum(g, 1e-9), 0.0, 1.0)
    frac[tuple(idx.T)] = ramp.astype(np.float32)
    return frac


def surface_elements(phi: np.ndarray, grid: Grid) -> Surface:
    """Zero crossings of ``phi`` between neighbouring samples, with normals and areas (module docstring)."""
    s = grid.spacing_mm[0]
    neg = phi < 0
    pts_list, nrm_list, area_list = [], [], []
    origin = np.asarray(grid.origin_mm, dtype=float)
    for axis in range(3):  # numpy axes: 0 = z (k), 1 = y (j), 2 = x (i)
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(0, -1)
        hi[axis] = slice(1, None)
        cross = neg[tuple(lo)] != neg[tuple(hi)]
        idx = np.nonzero(cross)
        if len(idx[0]) == 0:
            continue
        k0 = np.stack(idx, axis=1)
        k1 = k0.copy()
        k1[:, axis] += 1
        f0 = phi[tuple(k0.T)].astype(float)
        f1 = phi[tuple(k1.T)].astype(float)
        t = f0 / (f0 - f1)
        kji = k0 + t[:, None] * (k1 - k0)
        g = (1 - t)[:, None] * _gradient_at(phi, k0) + t[:, None] * _gradient_at(phi, k1)
        norm = np.linalg.norm(g, axis=1)
        fallback = norm < 1e-9
        g[fallback] = 0.0
        g[fallback, axis] = 1.0
        norm[fallback] = 1.0
        n_kji = g / norm[:, None]
        pts_list.append(origin + kji[:, ::-1] * s)
        nrm_list.append(n_kji[:, ::-1])
        area_list.append(s * s * np.abs(n_kji[:, axis]))
    if not pts_list:
        return Surface(np.empty((0, 3)), np.empty((0, 3)), np.empty(0))
    return Surface(np.vstack(pts_list), np.vstack(nrm_list), np.concatenate(area_list))


def _gradient_at(phi: np.ndarray, kji: np.ndarray) -> np.ndarray:
    """Central-difference gradient of ``phi`` (per sample, index units) at integer indices (one-sided at edges)."""
    out = np.empty((len(kji), 3))
    shape = phi.shape
    for axis in range(3):
        up = kji.copy()
        dn = kji.copy()
        up[:, axis] = np.minimum(up[:, axis] + 1, shape[axis] - 1)
        dn[:, axis] = np.maximum(dn[:, axis] - 1, 0)
        step = np.maximum(up[:, axis] - dn[:, axis], 1)
        out[:, axis] = (phi[tuple(up.T)].astype(float) - phi[tuple(dn.T)].astype(float)) / step
    return out


def surface_distances(source: Surface, target: Surface, grid: Grid) -> np.ndarray:
    """Distance (mm) from each element of ``source`` to the surface ``target`` (tangent-disc elements).

    Elements within a few samples of ``target`` are compared with their nearest target
    elements directly. A k-d tree search for a far element would visit every target element
    within its distance, so far elements first find their nearest element in a thinned copy of
    ``target`` (one element per 4 x 4 x 4 samples), then the nearest elements around it.
    """
    s = grid.spacing_mm[0]
    tree = cKDTree(target.points_mm)
    near_k = min(4, len(target))
    dist, idx = tree.query(source.points_mm, k=near_k, distance_upper_bound=NEAR_SAMPLES * s)
    dist = np.asarray(dist).reshape(len(source), near_k)
    idx = np.asarray(idx).reshape(len(source), near_k)
    near = np.isfinite(dist[:, 0])
    out = np.empty(len(source))
    if near.any():
        # candidates beyond the bound come back as index len(target): use the nearest one instead
        cand = np.where(np.isfinite(dist[near]), idx[near], idx[near][:, :1])
        out[near] = _disc_distance(source.points_mm[near], target, cand, s)
    far = ~near
    if far.any():
        pts = source.points_mm[far]
        cells = np.floor((target.points_mm - np.asarray(grid.origin_mm)) / (COARSE_SAMPLES * s)).astype(np.int64)
        _, first = np.unique(cells, axis=0, return_index=True)
        coarse = target.points_mm[first]
        seeds = min(COARSE_SEEDS, len(coarse))
        _, nearest = cKDTree(coarse).query(pts, k=seeds)
        nearest = np.asarray(nearest).reshape(len(pts), seeds)
        k = min(FAR_CANDIDATES, len(target))
        # candidates around several thinned elements: near a ridge the nearest one may be on the wrong face
        cand = np.hstack([np.asarray(tree.query(coarse[nearest[:, i]], k=k)[1]).reshape(len(pts), k)
                          for i in range(seeds)])
        best = np.full(len(pts), np.inf)
        for _ in range(FAR_ITERATIONS):  # walk to the foot of the perpendicular: search around it again
            d, which = _disc_distance(pts, target, cand, s, return_index=True)
            best = np.minimum(best, d)
            q, n = target.points_mm[which], target.normals[which]
            foot = pts - np.einsum("nc,nc->n", pts - q, n)[:, None] * n
            _, cand = tree.query(foot, k=k)
        best = np.minimum(best, _disc_distance(pts, target, cand, s))
        out[far] = best
    return out


def _disc_distance(points: np.ndarray, target: Surface, idx: np.ndarray, s: float,
                   return_index: bool = False) -> Any:
    """Smallest distance from each point to the tangent discs of its candidate target elements
    (and, with ``return_index``, which element gives it)."""
    idx = np.asarray(idx).reshape(len(points), -1)
    diff = points[:, None, :] - target.points_mm[idx]
    dn = np.abs(np.einsum("nkc,nkc->nk", diff, target.normals[idx]))
    d2 = np.einsum("nkc,nkc->nk", diff, diff)
    dt = np.sqrt(np.maximum(d2 - dn * dn, 0.0))
    d = np.sqrt(dn * dn + np.maximum(dt - DISC_RADIUS_SAMPLES * s, 0.0) ** 2)
    if return_index:
        j = np.argmin(d, axis=1)
        rows = np.arange(len(points))
        return d[rows, j], idx[rows, j]
    return d.min(axis=1)


def _percentiles(values: np.ndarray, weights: np.ndarray) -> tuple[float, float, float]:
    p5, p50, p95 = (weighted_percentile(values, weights, p) for p in (5.0, 50.0, 95.0))
    return (p5, p50, p95)


def weighted_percentile(values: np.ndarray, weights: np.ndarray, percent: float) -> float:
    """The smallest value below which ``percent`` % of the total weight lies."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    i = int(np.searchsorted(cum, percent / 100.0 * cum[-1], side="left"))
    return float(values[order][min(i, len(values) - 1)])


# ----------------------------------------------------------------------------- helpers


def _centroid_mm(weights: np.ndarray, grid: Grid) -> np.ndarray:
    coords = [np.arange(n) for n in weights.shape]
    counts = [weights.sum(axis=tuple(a for a in range(3) if a != ax), dtype=np.float64) for ax in range(3)]
    mean_kji = np.array([np.dot(c, w) / w.sum() for c, w in zip(coords, counts)])
    return grid.index_to_lps(mean_kji[::-1])


def _worst_slice(result: Agreement, in_ref: np.ndarray, in_test: np.ndarray, grid: Grid,
                 planes_z: Sequence[float]) -> None:
    if not planes_z:
        return
    zs = grid.axis_coords_mm(2)
    s = grid.spacing_mm[0]
    best_z, best_area = None, -1.0
    for z in planes_z:
        j = int(np.clip(np.round((z - zs[0]) / s), 0, len(zs) - 1))
        area = float(np.count_nonzero(in_ref[j] ^ in_test[j])) * s * s
        if area > best_area:
            best_z, best_area = float(z), area
    result.worst_slice_z_mm, result.worst_slice_area_mm2 = best_z, best_area


def _checked_tolerance(tolerance_mm: float) -> float:
    try:
        tol = float(tolerance_mm)
    except (TypeError, ValueError):
        raise InputError(f"tolerance {tolerance_mm!r} is not a number of mm") from None
    if not (math.isfinite(tol) and 0.0 <= tol <= 50.0):
        raise InputError(f"tolerance {tolerance_mm!r} mm: give a distance between 0 and 50 mm")
    return tol


def _clean(planes: Planes, name: str) -> dict[float, list[np.ndarray]]:
    out: dict[float, list[np.ndarray]] = {}
    for z, polys in planes.items():
        kept = []
        for p in polys:
            a = np.asarray(p, dtype=float)
            if a.ndim != 2 or a.shape[1] != 2 or not np.all(np.isfinite(a)):
                raise InputError(f"{name}: contour on z = {z:g} mm is not a finite (N, 2) polygon in mm")
            if len(a) >= 3:
                kept.append(a)
        if kept:
            out[float(z)] = kept
    return dict(sorted(out.items()))


def _single_plane_half_mm(a: Planes, b: Planes, thickness_mm: float | None) -> float:
    if thickness_mm is not None:
        t = float(thickness_mm)
        if not (math.isfinite(t) and t > 0):
            raise InputError(f"slice thickness must be a positive number of mm, not {thickness_mm!r}")
        return t / 2.0
    from sbrtstandards.contours import typical_spacing_mm

    typical = typical_spacing_mm(sorted(set(a) | set(b)))
    if typical is None:
        raise InputError("both structures lie on one contour plane: give the slice thickness")
    return typical / 2.0


# ----------------------------------------------------------------------------- structure sets


@dataclass
class StructurePair:
    """A reference structure, its counterpart in the test set, and how they were matched."""

    reference: str
    test: str
    matched_by: str  # "name", "normalised name", "role <role>"
    agreement: Agreement | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.reference, "test_name": self.test, "matched_by": self.matched_by}
        if self.agreement is not None:
            out.update(self.agreement.to_json())
        return out


@dataclass
class CompareResult:
    """``sbrt compare``: the agreement of every matched structure, and what was left unmatched."""

    reference_file: str
    test_file: str
    tolerance_mm: float
    pairs: list[StructurePair]
    unmatched_reference: list[str]
    unmatched_test: list[str]
    notes: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference_file,
            "test": self.test_file,
            "tolerance_mm": self.tolerance_mm,
            "structures": [p.to_json() for p in self.pairs],
            "unmatched": {"reference": list(self.unmatched_reference), "test": list(self.unmatched_test)},
            "notes": dict(self.notes),
            "warnings": list(self.warnings),
        }


def match_pairs(
    reference_names: Sequence[str], test_names: Sequence[str]
) -> tuple[list[tuple[str, str, str]], list[str], list[str]]:
    """One-to-one pairs (reference, test, how): same name, then same normalised name, then same role.

    Roles are those of :mod:`sbrtstandards.names` (TG-263 names, variants, Chinese names), so
    ``Cord`` pairs with ``SpinalCord`` and ``脊髓``. Returns (pairs, unmatched reference,
    unmatched test), in the reference set's order.
    """
    from sbrtstandards import names as names_mod

    ref_left = list(dict.fromkeys(reference_names))
    test_left = list(dict.fromkeys(test_names))
    pairs: dict[str, tuple[str, str]] = {}

    def take(ref: str, test: str, how: str) -> None:
        pairs[ref] = (test, how)
        ref_left.remove(ref)
        test_left.remove(test)

    for ref in list(ref_left):
        if ref in test_left:
            take(ref, ref, "name")
    for ref in list(ref_left):
        hits = [t for t in test_left if names_mod.normalise(t) == names_mod.normalise(ref)]
        if len(hits) == 1:
            take(ref, hits[0], "normalised name")
    ref_roles = names_mod.match_structures(ref_left)
    test_roles = names_mod.match_structures(test_left)
    for role in ref_roles.roles:
        ref, test = ref_roles.name_of(role), test_roles.name_of(role)
        if ref and test and ref in ref_left and test in test_left:
            take(ref, test, f"role {role}")
    ordered = [(r, *pairs[r]) for r in reference_names if r in pairs]
    return ordered, ref_left, test_left


def compare_structure_sets(
    reference: Any,
    test: Any,
    *,
    structures: Sequence[str] = (),
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    progress: Progress | None = None,
) -> CompareResult:
    """Compare every structure of ``test`` with its counterpart in ``reference`` (both :class:`StructureSet`).

    ``structures`` limits the comparison to these reference structures (names as in the
    reference set, or names/roles that match one); each must have a counterpart in ``test``.
    """
    from sbrtstandards.dvh import structure_set_spacing_mm
    from sbrtstandards.errors import FrameOfReferenceError

    tol = _checked_tolerance(tolerance_mm)
    ref_for, test_for = reference.study.frame_of_reference_uid, test.study.frame_of_reference_uid
    if ref_for and test_for and ref_for != test_for:
        raise FrameOfReferenceError(
            f"{reference.describe()} (Frame of Reference {ref_for}) and {test.describe()} (Frame of Reference "
            f"{test_for}) are not in the same Frame of Reference: register them first"
        )
    notes: dict[str, str] = {}
    ref_rois = _usable_rois(reference, notes)
    test_rois = _usable_rois(test, notes)
    pairs_found, un_ref, un_test = match_pairs(list(ref_rois), list(test_rois))
    if structures:
        wanted = [_requested(reference, ref_rois, name) for name in structures]
        by_ref = {p[0]: p for p in pairs_found}
        for name in wanted:
            if name not in by_ref:
                listing = ", ".join(test_rois) or "(none)"
                raise InputError(f"{test.describe()}: no structure matches '{name}' of {reference.describe()} "
                                 f"(by name or TG-263 role); structures: {listing}")
        pairs_found = [by_ref[n] for n in dict.fromkeys(wanted)]
    thickness = structure_set_spacing_mm(reference) or structure_set_spacing_mm(test)
    result = CompareResult(str(reference.describe()), str(test.describe()), tol, [], un_ref, un_test, notes)
    for n, (ref_name, test_name, how) in enumerate(pairs_found):
        if progress is not None:
            progress(n / max(len(pairs_found), 1), ref_name)
        pair = StructurePair(ref_name, test_name, how)
        pair.agreement = _pair_agreement(ref_rois[ref_name], test_rois[test_name], tol, thickness)
        result.pairs.append(pair)
    if progress is not None:
        progress(1.0, "done")
    result.warnings = [f"reference: {w}" for w in reference.warnings] + [f"test: {w}" for w in test.warnings]
    return result


def compare_files(
    reference_path: str,
    test_path: str,
    *,
    structures: Sequence[str] = (),
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    progress: Progress | None = None,
) -> CompareResult:
    """Read two RT Structure Sets (files, or folders holding one) and compare them (``sbrt compare``)."""
    from sbrtstandards.dicom.rtstruct import read_rtstruct
    from sbrtstandards.dicom.scan import find_single

    ref_path = find_single([reference_path], "RTSTRUCT", what="--reference").path
    test_path_found = find_single([test_path], "RTSTRUCT", what="--test").path
    reference = read_rtstruct(ref_path)
    test = read_rtstruct(test_path_found)
    return compare_structure_sets(reference, test, structures=structures, tolerance_mm=tolerance_mm,
                                  progress=progress)


def _usable_rois(ss: Any, notes: dict[str, str]) -> dict[str, Any]:
    """ROIs that can be compared (closed contours, or none at all); POINT and open ROIs are noted."""
    out: dict[str, Any] = {}
    for roi in ss.rois:
        if roi.is_point:
            notes[roi.name] = f"{ss.describe()}: '{roi.name}' is a POINT ROI (no volume); not compared"
            continue
        if any(c.geometric_type != "CLOSED_PLANAR" for c in roi.contours):
            notes[roi.name] = f"{ss.describe()}: '{roi.name}' has open contours (no volume); not compared"
            continue
        if roi.name in out:
            notes[roi.name] = f"{ss.describe()}: several ROIs are named '{roi.name}'; the first is compared"
            continue
        out[roi.name] = roi
    return out


def _requested(ss: Any, rois: Mapping[str, Any], name: str) -> str:
    """The reference ROI a ``--structure`` value names: by name (exact, then loose), else by role."""
    from sbrtstandards import names as names_mod

    if name in rois:
        return name
    hits = [n for n in rois if names_mod.normalise(n) == names_mod.normalise(name)]
    if len(hits) == 1:
        return hits[0]
    role = names_mod.canonical_role(name) or next((r for r, _ in names_mod.candidates(name)), None)
    if role is not None:
        matched = names_mod.match_structures(list(rois)).name_of(role)
        if matched:
            return matched
    listing = ", ".join(rois) or "(none)"
    raise InputError(f"{ss.describe()}: no structure '{name}' with contours; structures: {listing}")


def _pair_agreement(ref_roi: Any, test_roi: Any, tol: float, thickness: float | None) -> Agreement:
    ref_planes = {} if ref_roi.is_empty else ref_roi.planes()
    test_planes = {} if test_roi.is_empty else test_roi.planes()
    if not ref_planes and not test_planes:
        out = Agreement(None, None, None, None, None, None, None, None, tol, 0.0, 0.0, 0.0)
        out.reasons = {k: "neither structure has contours" for k in METRIC_KEYS}
        return out
    if thickness is None and len(set(ref_planes) | set(test_planes)) < 2:
        out = Agreement(None, None, None, None, None, None, None, None, tol, 0.0, 0.0, 0.0)
        out.reasons = {k: "both structure sets hold a single contour plane: the slice thickness is unknown"
                       for k in METRIC_KEYS}
        return out
    return compare_planes(ref_planes, test_planes, tolerance_mm=tol, slice_thickness_mm=thickness,
                          names=(ref_roi.describe(), test_roi.describe()))
