"""Planar polygons to sample masks (even-odd rule) and polygon areas.

This is the one polygon rasteriser of the project: structure masks on image grids, the
DVH's fine sampling and contour comparison all call :func:`fill_polygons` (the DVH calls
its batched core, :func:`scanline_spans`, for all the planes of a structure at once).

Convention: a sample point is inside when a horizontal ray from it crosses the polygon
edges an odd number of times (even-odd rule). Several polygons on one slice are combined
with the same rule, so a contour inside another is a hole and two disjoint contours are
two islands, which is how DICOM RTSTRUCT encodes holes (C.8.8.6).

Half-open rules, so that a sample on a vertex or an edge is counted exactly once: an edge
from ``y0`` to ``y1`` crosses the row ``y`` when ``min(y0, y1) <= y < max(y0, y1)``
(horizontal edges never cross), and between two sorted crossings ``a <= b`` of a row the
samples with ``a <= x < b`` are inside (to 1e-9 sample spacing on uniform rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

X_TOLERANCE_CELLS = 1e-9  # uniform rows: a crossing within this of a sample counts as on it


def polygon_area_mm2(xy: np.ndarray) -> float:
    """Unsigned area of a closed polygon (shoelace formula), vertices (N, 2) in mm."""
    x, y = xy[:, 0], xy[:, 1]
    y_next = np.concatenate((y[1:], y[:1]))  # np.roll(y, -1), without its overhead
    x_next = np.concatenate((x[1:], x[:1]))
    return float(abs(np.dot(x, y_next) - np.dot(y, x_next)) / 2.0)


def fill_polygons(polygons: Sequence[np.ndarray], xs_mm: np.ndarray, ys_mm: np.ndarray) -> np.ndarray:
    """Boolean mask, shape ``(len(ys_mm), len(xs_mm))``, of the sample points inside ``polygons``.

    ``polygons`` are (N, 2) arrays of in-plane (x, y) vertices in mm (closed implicitly);
    ``xs_mm`` and ``ys_mm`` are increasing sample coordinates. Scanline algorithm without a
    loop over rows: each edge yields its crossings with the rows it spans, the crossings
    are sorted by (row, x) and paired, and the samples between pairs are set, so the cost
    is O(crossings log crossings + samples).
    """
    xs_mm = np.asarray(xs_mm, dtype=float)
    ys_mm = np.asarray(ys_mm, dtype=float)
    nx = len(xs_mm)
    mask = np.zeros((len(ys_mm), nx), dtype=bool)
    polys = [np.asarray(p, dtype=float) for p in polygons if len(p) >= 3]
    if not polys or nx == 0 or len(ys_mm) == 0:
        return mask
    x0, y0, x1, y1 = polygon_edges(polys)
    # Rows crossed by each edge: ys[r] in [min(y0, y1), max(y0, y1)) (half-open on y).
    r_lo = np.searchsorted(ys_mm, np.minimum(y0, y1), side="left")
    r_hi = np.searchsorted(ys_mm, np.maximum(y0, y1), side="left")
    rows, a, b = scanline_spans(x0, y0, x1, y1, r_lo, r_hi, ys_mm)
    if len(rows) == 0:
        return mask
    i0, i1 = columns_of_spans(a, b, xs_mm)
    return spans_mask(rows * nx + i0, rows * nx + i1, mask.size).reshape(mask.shape)


def fill_polygon_stack(planes: Sequence[Sequence[np.ndarray]], xs_mm: np.ndarray, ys_mm: np.ndarray) -> np.ndarray:
    """``[fill_polygons(p, xs_mm, ys_mm) for p in planes]`` as one (len(planes), ny, nx) array,
    all planes in one scanline pass (no per-plane numpy overhead: many small contours)."""
    xs_mm = np.asarray(xs_mm, dtype=float)
    ys_mm = np.asarray(ys_mm, dtype=float)
    nx, ny = len(xs_mm), len(ys_mm)
    mask = np.zeros((len(planes), ny, nx), dtype=bool)
    polys = [np.asarray(p, dtype=float) for polys in planes for p in polys if len(p) >= 3]
    if not polys or nx == 0 or ny == 0:
        return mask
    plane_of = np.repeat(np.arange(len(planes)), [sum(1 for p in polys_ if len(p) >= 3) for polys_ in planes])
    x0, y0, x1, y1 = polygon_edges(polys)
    edge_plane = np.repeat(plane_of, [len(p) for p in polys]) * ny
    r_lo = edge_plane + np.searchsorted(ys_mm, np.minimum(y0, y1), side="left")
    r_hi = edge_plane + np.searchsorted(ys_mm, np.maximum(y0, y1), side="left")
    rows, a, b = scanline_spans(x0, y0, x1, y1, r_lo, r_hi, np.tile(ys_mm, len(planes)))
    if len(rows) == 0:
        return mask
    i0, i1 = columns_of_spans(a, b, xs_mm)
    return spans_mask(rows * nx + i0, rows * nx + i1, mask.size).reshape(mask.shape)


def polygon_edges(polygons: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(x0, y0) -> (x1, y1)`` of closed polygons (each closed implicitly), concatenated."""
    parts = [np.asarray(p, dtype=float)[:, :2] for p in polygons]
    xy = np.concatenate(parts) if len(parts) > 1 else parts[0]
    lengths = np.fromiter((len(p) for p in polygons), dtype=np.int64, count=len(polygons))
    nxt = np.arange(1, len(xy) + 1)
    ends = np.cumsum(lengths)
    nxt[ends - 1] = ends - lengths  # the last vertex of each polygon joins its first
    return xy[:, 0], xy[:, 1], xy[nxt, 0], xy[nxt, 1]


def scanline_spans(
    x0: np.ndarray,
    y0: np.ndarray,
    x1: np.ndarray,
    y1: np.ndarray,
    row_lo: np.ndarray,
    row_hi: np.ndarray,
    row_y: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inside spans ``[a, b)`` of scanlines under the even-odd rule.

    Edge ``e`` crosses the rows ``row_lo[e] <= r < row_hi[e]`` (the caller has applied the
    half-open rule: those are exactly the rows with ``min(y0, y1) <= row_y[r] < max(y0, y1)``);
    rows are numbered globally, so the edges of many planes (each with its own rows) are
    handled in one call. Returns ``(row, a, b)`` of each span: the crossings of a row sorted
    by x and taken in pairs. Spans of one row never overlap.
    """
    counts = np.maximum(np.asarray(row_hi, dtype=np.int64) - np.asarray(row_lo, dtype=np.int64), 0)
    edge = np.repeat(np.arange(len(counts)), counts)
    if len(edge) == 0:
        empty = np.empty(0)
        return np.empty(0, dtype=np.int64), empty, empty
    rows = expand_spans(np.asarray(row_lo, dtype=np.int64)[counts > 0], counts[counts > 0])
    ey0 = y0[edge]
    ex0 = x0[edge]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (row_y[rows] - ey0) / (y1[edge] - ey0)
    xc = ex0 + t * (x1[edge] - ex0)
    order = np.lexsort((xc, rows))
    rows, xc = rows[order], xc[order]
    n = len(rows)
    if n % 2 == 0 and np.array_equal(rows[0::2], rows[1::2]):  # every row crossed an even number of times
        return rows[0::2], xc[0::2], xc[1::2]
    # Odd crossing counts (only with non-finite vertices): pair within each row, drop the odd one out.
    start = np.searchsorted(rows, rows, side="left")
    pos = np.arange(n) - start
    first = np.nonzero((pos % 2 == 0) & (np.arange(n) + 1 < n))[0]
    first = first[rows[np.minimum(first + 1, n - 1)] == rows[first]]
    return rows[first], xc[first], xc[first + 1]


def columns_of_spans(a: np.ndarray, b: np.ndarray, xs_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column range ``[i0, i1)`` of the samples ``xs_mm`` inside each span ``[a, b)``, clipped to the row."""
    nx = len(xs_mm)
    dx = xs_mm[1] - xs_mm[0] if nx > 1 else 1.0
    if nx > 1 and np.allclose(np.diff(xs_mm), dx):
        i0 = np.ceil((a - xs_mm[0]) / dx - X_TOLERANCE_CELLS)
        i1 = np.ceil((b - xs_mm[0]) / dx - X_TOLERANCE_CELLS)
        i0 = np.clip(np.nan_to_num(i0, nan=0.0), 0, nx).astype(np.int64)
        i1 = np.clip(np.nan_to_num(i1, nan=0.0), 0, nx).astype(np.int64)
    else:
        i0 = np.searchsorted(xs_mm, a, side="left")
        i1 = np.searchsorted(xs_mm, b, side="left")
    return i0, np.maximum(i1, i0)


def spans_mask(starts: np.ndarray, ends: np.ndarray, size: int) -> np.ndarray:
    """Flat boolean array of ``size`` that is True on the spans ``[starts, ends)`` (sorted,
    not overlapping; empty spans allowed): one run-length expansion, no index array."""
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    lengths = np.empty(2 * len(starts) + 1, dtype=np.int64)
    lengths[0:-1:2] = starts - np.concatenate(([0], ends[:-1]))  # the gaps before the spans
    lengths[1::2] = ends - starts
    lengths[-1] = size - (ends[-1] if len(ends) else 0)
    values = np.zeros(len(lengths), dtype=bool)
    values[1::2] = True
    return np.repeat(values, lengths)


def expand_spans(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])`` without the loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    keep = lengths > 0
    starts, lengths = np.asarray(starts, dtype=np.int64)[keep], lengths[keep]
    steps = np.ones(total, dtype=np.int64)
    heads = np.cumsum(lengths) - lengths
    steps[0] = starts[0]
    steps[heads[1:]] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
    return np.cumsum(steps)
