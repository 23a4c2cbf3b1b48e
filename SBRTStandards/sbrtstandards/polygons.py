"""Planar polygons to sample masks (even-odd rule) and polygon areas.

This is the one polygon rasteriser of the project: structure masks on image grids, the
DVH's fine sampling and contour comparison all call :func:`fill_polygons`.

Convention: a sample point is inside when a horizontal ray from it crosses the polygon
edges an odd number of times (even-odd rule). Several polygons on one slice are combined
with the same rule, so a contour inside another is a hole and two disjoint contours are
two islands, which is how DICOM RTSTRUCT encodes holes (C.8.8.6).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def polygon_area_mm2(xy: np.ndarray) -> float:
    """Unsigned area of a closed polygon (shoelace formula), vertices (N, 2) in mm."""
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def fill_polygons(polygons: Sequence[np.ndarray], xs_mm: np.ndarray, ys_mm: np.ndarray) -> np.ndarray:
    """Boolean mask, shape ``(len(ys_mm), len(xs_mm))``, of the sample points inside ``polygons``.

    ``polygons`` are (N, 2) arrays of in-plane (x, y) vertices in mm (closed implicitly);
    ``xs_mm`` and ``ys_mm`` are increasing sample coordinates. Scanline algorithm: for each
    row, the x of every edge crossing is computed at once, and the samples between pairs of
    sorted crossings are set, so the cost is O(edges x rows + samples).
    """
    xs_mm = np.asarray(xs_mm, dtype=float)
    ys_mm = np.asarray(ys_mm, dtype=float)
    mask = np.zeros((len(ys_mm), len(xs_mm)), dtype=bool)
    edges = [_edges(p) for p in polygons if len(p) >= 3]
    if not edges or len(xs_mm) == 0 or len(ys_mm) == 0:
        return mask
    x0, y0, x1, y1 = (np.concatenate(parts) for parts in zip(*edges))
    # Half-open rule on y so a vertex on a scanline is counted once.
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    keep = yhi > ylo
    x0, y0, x1, y1, ylo, yhi = x0[keep], y0[keep], x1[keep], y1[keep], ylo[keep], yhi[keep]
    if len(x0) == 0:
        return mask
    rows = np.nonzero((ys_mm >= ylo.min()) & (ys_mm < yhi.max()))[0]
    if len(rows) == 0:
        return mask
    y = ys_mm[rows][:, None]
    crosses = (y >= ylo[None, :]) & (y < yhi[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (y - y0[None, :]) / (y1 - y0)[None, :]
    xc = np.where(crosses, x0[None, :] + t * (x1 - x0)[None, :], np.inf)
    xc.sort(axis=1)
    ncross = crosses.sum(axis=1)
    dx = xs_mm[1] - xs_mm[0] if len(xs_mm) > 1 else 1.0
    uniform = len(xs_mm) > 1 and np.allclose(np.diff(xs_mm), dx)
    for r, xrow, n in zip(rows, xc, ncross):
        for a, b in zip(xrow[0 : n - 1 : 2], xrow[1:n:2]):
            if uniform:
                i0 = int(np.ceil((a - xs_mm[0]) / dx - 1e-9))
                i1 = int(np.ceil((b - xs_mm[0]) / dx - 1e-9))
            else:
                i0 = int(np.searchsorted(xs_mm, a, side="left"))
                i1 = int(np.searchsorted(xs_mm, b, side="left"))
            i0, i1 = max(i0, 0), min(i1, len(xs_mm))
            if i1 > i0:
                mask[r, i0:i1] = True  # sorted crossings: intervals never overlap
    return mask


def _edges(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xy = np.asarray(xy, dtype=float)
    nxt = np.roll(xy, -1, axis=0)
    return xy[:, 0], xy[:, 1], nxt[:, 0], nxt[:, 1]
