"""Volume of a union of equal balls, to quadrature accuracy (the ITV and PTV "truth").

The ITV of the synthetic case is the union of the phase GTVs, each a ball of radius ``r``
about its phase centre; the PTV (ITV + m, an exact Euclidean margin) is the union of balls
of radius ``r + m`` about the same centres, and every isodose surface of the synthetic dose
is such a union too. Its volume is integrated slice by slice along z:

* on a plane ``z`` each ball cuts a disc; the area of the union of discs is exact, by
  Green's theorem over the boundary arcs that no other disc covers
  (area = 1/2 * sum of the integral of ``x dy - y dx`` over the uncovered arcs);
* the area is a continuous, piecewise smooth function of z whose breakpoints are the ball
  ends ``z_i +- R``; between breakpoints it is integrated by composite Gauss-Legendre on
  panels of at most ``panel_mm`` (default 0.5 mm, 8 nodes each).

The relative error is below 1e-7 for the cases here (checked against the closed form for
collinear centres, where union = ball + sum of (ball - lens) over consecutive gaps, and by
Monte Carlo in the tests).
"""

from __future__ import annotations

import math

import numpy as np

_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)


def _dedupe(centres: np.ndarray, tol_mm: float = 1e-9) -> np.ndarray:
    """Identical centres (e.g. phases symmetric about end-inhale) counted once."""
    kept: list[np.ndarray] = []
    for c in centres:
        if not any(float(np.linalg.norm(c - k)) <= tol_mm for k in kept):
            kept.append(c)
    return np.asarray(kept, dtype=float).reshape(-1, 3)


def disc_union_area(cx: np.ndarray, cy: np.ndarray, rho: np.ndarray) -> float:
    """Exact area of a union of discs (centres cx, cy; radii rho; radius <= 0 means absent)."""
    keep = rho > 0
    cx, cy, rho = cx[keep], cy[keep], rho[keep]
    n = len(rho)
    if n == 0:
        return 0.0
    two_pi = 2.0 * math.pi
    area = 0.0
    for i in range(n):
        dx = cx - cx[i]
        dy = cy - cy[i]
        d = np.hypot(dx, dy)
        intervals: list[tuple[float, float]] = []
        covered = False
        for j in range(n):
            if j == i:
                continue
            if d[j] + rho[i] <= rho[j] + 1e-12:
                # disc i inside disc j: its whole boundary is covered (an identical disc
                # covers it only when it comes later, so one of two equal discs remains)
                if d[j] > 1e-12 or rho[j] > rho[i] + 1e-12 or j > i:
                    covered = True
                    break
                continue
            if d[j] >= rho[i] + rho[j] or d[j] + rho[j] <= rho[i]:
                continue  # apart, or disc j inside disc i: no arc of i covered
            cos_b = (rho[i] ** 2 + d[j] ** 2 - rho[j] ** 2) / (2.0 * rho[i] * d[j])
            half = math.acos(min(1.0, max(-1.0, cos_b)))
            mid = math.atan2(dy[j], dx[j]) % two_pi
            lo, hi = mid - half, mid + half
            if lo < 0.0:
                intervals += [(lo + two_pi, two_pi), (0.0, hi)]
            elif hi > two_pi:
                intervals += [(lo, two_pi), (0.0, hi - two_pi)]
            else:
                intervals.append((lo, hi))
        if covered:
            continue
        r, x0, y0 = float(rho[i]), float(cx[i]), float(cy[i])
        for t1, t2 in _uncovered(intervals):
            area += 0.5 * (
                r * r * (t2 - t1) + r * x0 * (math.sin(t2) - math.sin(t1)) - r * y0 * (math.cos(t2) - math.cos(t1))
            )
    return area


def _uncovered(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Complement in [0, 2 pi) of a union of angle intervals (each within [0, 2 pi])."""
    two_pi = 2.0 * math.pi
    free: list[tuple[float, float]] = []
    cursor = 0.0
    for lo, hi in sorted(intervals):
        if lo > cursor:
            free.append((cursor, lo))
        cursor = max(cursor, hi)
    if cursor < two_pi:
        free.append((cursor, two_pi))
    return free


def union_of_balls_volume_mm3(centres_mm: np.ndarray, radius_mm: float, panel_mm: float = 0.5) -> float:
    """Volume (mm^3) of the union of balls of radius ``radius_mm`` about ``centres_mm`` (N, 3)."""
    if radius_mm <= 0:
        return 0.0
    c = _dedupe(np.asarray(centres_mm, dtype=float).reshape(-1, 3))
    if len(c) == 1:
        return 4.0 / 3.0 * math.pi * radius_mm**3
    breaks = np.unique(np.concatenate([c[:, 2] - radius_mm, c[:, 2] + radius_mm]))
    total = 0.0
    for z0, z1 in zip(breaks[:-1], breaks[1:]):
        panels = max(1, int(math.ceil((z1 - z0) / panel_mm)))
        edges = np.linspace(z0, z1, panels + 1)
        for a, b in zip(edges[:-1], edges[1:]):
            half = 0.5 * (b - a)
            for xg, wg in zip(_GL_X, _GL_W):
                z = 0.5 * (a + b) + half * xg
                rho2 = radius_mm**2 - (z - c[:, 2]) ** 2
                rho = np.sqrt(np.clip(rho2, 0.0, None)) * (rho2 > 0)
                total += wg * half * disc_union_area(c[:, 0], c[:, 1], rho)
    return float(total)


def lens_volume_mm3(radius_mm: float, distance_mm: float) -> float:
    """Volume of the intersection of two balls of equal radius whose centres are ``distance_mm`` apart."""
    r, d = radius_mm, distance_mm
    if d >= 2 * r:
        return 0.0
    return math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12.0


def collinear_union_volume_mm3(positions_mm: np.ndarray, radius_mm: float) -> float:
    """Closed form for balls whose centres lie on one line (``positions_mm``: coordinates along it).

    Sorted along the line, each ball adds its volume minus its lens with the previous one;
    the overlap with any earlier ball lies inside the previous one (convexity).
    """
    s = np.unique(np.asarray(positions_mm, dtype=float))
    v = 4.0 / 3.0 * math.pi * radius_mm**3
    return float(v + sum(v - lens_volume_mm3(radius_mm, float(g)) for g in np.diff(s)))
