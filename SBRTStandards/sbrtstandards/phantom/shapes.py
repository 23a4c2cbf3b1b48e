"""Signed-distance primitives (mm) that the synthetic anatomy is built from.

Every shape is a function of broadcastable LPS coordinate arrays ``x`` (1, 1, ni),
``y`` (1, nj, 1) and ``z`` (nk, 1, 1) returning the signed distance to its surface in mm
(negative inside), as ``float32``. The distances are exact for spheres, slabs and tubes and
a first-order estimate for ellipsoids and ellipses (exact on the surface, which is all that
matters: a voxel is inside when its centre has ``sdf <= 0``, and the estimate only shapes
the partial-volume ramp of the image). Shapes combine by ``max`` (intersection), ``min``
(union) and ``max(a, -b)`` (difference).

Each shape also knows a bounding box (mm) so that it is evaluated only where it can be.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Sdf = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
Box = tuple[tuple[float, float, float], tuple[float, float, float]]  # (lo xyz, hi xyz) in mm

FAR_MM = 1.0e4  # "outside everything" for shapes cut away by a condition


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def ellipsoid(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: Sequence[float], semi: Sequence[float]
) -> np.ndarray:
    """Ellipsoid: k0 (k0 - 1) / k1 with k0 = |p/a|, k1 = |p/a^2| (exact on the surface)."""
    u = (x - centre[0]) / semi[0]
    v = (y - centre[1]) / semi[1]
    w = (z - centre[2]) / semi[2]
    k0 = np.sqrt(u * u + v * v + w * w)
    k1 = np.sqrt((u / semi[0]) ** 2 + (v / semi[1]) ** 2 + (w / semi[2]) ** 2)
    return _f32(k0 * (k0 - 1.0) / np.maximum(k1, 1e-9))


def ellipse_xy(x: np.ndarray, y: np.ndarray, centre: Sequence[float], semi: Sequence[float]) -> np.ndarray:
    """Infinite elliptic cylinder along z (2D ellipse estimate)."""
    u = (x - centre[0]) / semi[0]
    v = (y - centre[1]) / semi[1]
    k0 = np.sqrt(u * u + v * v)
    k1 = np.sqrt((u / semi[0]) ** 2 + (v / semi[1]) ** 2)
    return _f32(k0 * (k0 - 1.0) / np.maximum(k1, 1e-9))


def sphere(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: Sequence[float], radius: float) -> np.ndarray:
    return _f32(np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) - radius)


def slab(coord: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """lo <= coord <= hi along one axis."""
    return _f32(np.maximum(lo - coord, coord - hi))


def box(x: np.ndarray, y: np.ndarray, z: np.ndarray, lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    """Axis-aligned box (exact outside along each axis, max-norm inside)."""
    return _f32(np.maximum(np.maximum(slab(x, lo[0], hi[0]), slab(y, lo[1], hi[1])), slab(z, lo[2], hi[2])))


@dataclass(frozen=True)
class Tube:
    """A tube (capsule chain) along a polyline, with a radius interpolated along each segment."""

    points: tuple[tuple[float, float, float], ...]
    radii: tuple[float, ...]  # one per point

    def __post_init__(self) -> None:
        if len(self.points) < 2 or len(self.radii) != len(self.points):
            raise ValueError("a tube needs >= 2 points and one radius per point")

    def bbox(self, grow_mm: float = 0.0) -> Box:
        p = np.asarray(self.points, dtype=float)
        r = max(self.radii) + grow_mm
        lo = p.min(axis=0) - r
        hi = p.max(axis=0) + r
        return (tuple(lo.tolist()), tuple(hi.tolist()))  # type: ignore[return-value]

    def segments(self) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
        p = np.asarray(self.points, dtype=float)
        return [(p[n], p[n + 1], self.radii[n], self.radii[n + 1]) for n in range(len(p) - 1)]


def segment_distance(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the segment ab and the parameter t in [0, 1] of the closest point."""
    d = b - a
    dd = float(np.dot(d, d))
    px, py, pz = x - a[0], y - a[1], z - a[2]
    t = (px * d[0] + py * d[1] + pz * d[2]) / dd if dd > 0 else 0.0 * px
    t = np.clip(t, 0.0, 1.0)
    qx, qy, qz = px - t * d[0], py - t * d[1], pz - t * d[2]
    return _f32(np.sqrt(qx * qx + qy * qy + qz * qz)), _f32(t)


def _segment_windows(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, spec: Tube, reach_mm: float
) -> list[tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, float, float]]:
    """For axis-vector coordinates (x (1,1,n), y (1,n,1), z (n,1,1)): the sub-window of each
    segment (its box grown by its radius + ``reach_mm``), so far voxels are never evaluated."""
    xs, ys, zs = x.reshape(-1), y.reshape(-1), z.reshape(-1)
    out = []
    for a, b, ra, rb in spec.segments():
        grow = max(ra, rb) + reach_mm
        lo = np.minimum(a, b) - grow
        hi = np.maximum(a, b) + grow
        ranges = []
        for values, lo_v, hi_v in ((zs, lo[2], hi[2]), (ys, lo[1], hi[1]), (xs, lo[0], hi[0])):
            inside = np.nonzero((values >= lo_v) & (values <= hi_v))[0]
            if len(inside) == 0:
                break
            ranges.append(slice(int(inside[0]), int(inside[-1]) + 1))
        if len(ranges) == 3:
            out.append(((ranges[0], ranges[1], ranges[2]), a, b, ra, rb))
    return out


def _is_axis_grid(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> bool:
    return (
        x.ndim == 3
        and y.ndim == 3
        and z.ndim == 3
        and x.shape[:2] == (1, 1)
        and y.shape[::2] == (1, 1)
        and (z.shape[1:] == (1, 1))
    )


def tube(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, spec: Tube, grow_mm: float = 0.0, reach_mm: float = 8.0
) -> np.ndarray:
    """Signed distance to a tube (union of tapered capsules); ``grow_mm`` thickens it.

    On axis-vector coordinates each segment is evaluated only within ``reach_mm`` of its
    surface; farther voxels get :data:`FAR_MM` (they are outside, and beyond any partial-volume
    ramp, which is all that the painting needs).
    """
    if not _is_axis_grid(x, y, z):
        full: np.ndarray | None = None
        for a, b, ra, rb in spec.segments():
            dist, t = segment_distance(x, y, z, a, b)
            sd = dist - (ra + (rb - ra) * t) - grow_mm
            full = sd if full is None else np.minimum(full, sd)
        assert full is not None
        return _f32(full)
    out = np.full((z.shape[0], y.shape[1], x.shape[2]), FAR_MM, dtype=np.float32)
    for (sk, sj, si), a, b, ra, rb in _segment_windows(x, y, z, spec, reach_mm + max(grow_mm, 0.0)):
        dist, t = segment_distance(x[:, :, si], y[:, sj, :], z[sk, :, :], a, b)
        sd = dist - (ra + (rb - ra) * t) - grow_mm
        np.minimum(out[sk, sj, si], sd, out=out[sk, sj, si])
    return out


def tube_axis_y(x: np.ndarray, y: np.ndarray, z: np.ndarray, spec: Tube, reach_mm: float = 8.0) -> np.ndarray:
    """The y (AP) coordinate of the tube axis point closest to each sample (for gas levels);
    on axis-vector coordinates, only near the tube (0 elsewhere)."""
    shape = np.broadcast(x, y, z).shape
    best = np.full(shape, np.inf, dtype=np.float32)
    axis_y = np.zeros(shape, dtype=np.float32)
    windows = (
        _segment_windows(x, y, z, spec, reach_mm)
        if _is_axis_grid(x, y, z)
        else [((slice(None),) * 3, a, b, ra, rb) for a, b, ra, rb in spec.segments()]
    )
    for win, a, b, _ra, _rb in windows:
        sk, sj, si = win
        dist, t = segment_distance(x[:, :, si], y[:, sj, :], z[sk, :, :], a, b)
        dist = np.broadcast_to(dist, best[win].shape)
        t = np.broadcast_to(t, best[win].shape)
        closer = dist < best[win]
        best[win] = np.where(closer, dist, best[win])
        axis_y[win] = np.where(closer, a[1] + t * (b[1] - a[1]), axis_y[win])
    return axis_y


def pv_fraction(sdf: np.ndarray, width_mm: float) -> np.ndarray:
    """Partial-volume fraction of a voxel: 1 deep inside, 0 outside, 0.5 on the surface."""
    f = np.float32(0.5) - np.asarray(sdf, dtype=np.float32) * np.float32(1.0 / width_mm)
    np.maximum(f, 0.0, out=f)
    np.minimum(f, 1.0, out=f)
    return f
