"""A plausible SBRT dose for the synthetic cases, with analytically known isodose volumes.

The dose is a function of one number, the signed distance ``s`` (mm) of a point to the
true PTV surface, ``s = min_k |p - c_k| - R`` over the phase centres ``c_k`` of the tumour,
with ``R`` = tumour radius + PTV margin (the PTV is the union of those balls):

* inside the PTV (``s < 0``) the dose rises from the surface value towards a hot spot
  ``hot`` x the surface dose, ``f = 1 + (hot - 1) (1 - exp(s / depth_mm))``, so the
  maximum lies deep in the ITV (the standards allow the hot spot only inside the ITV);
* outside it falls steeply, then leaves a low-dose bath:
  ``f = (1 - bath) / (1 + (s / s50_mm)^p) + bath exp(-s / bath_mm)``.

The dose is ``rx * scale * f(s)`` with ``scale`` set so that ``coverage`` (97 %) of the PTV
receives the prescription (plans are normalised that way), and 0 outside the body. Since
``f`` is decreasing in ``s``, every isodose surface of level ``L`` is again a union of balls
of radius ``R + f^-1(L / scale)``, whose volume :mod:`.balls` integrates exactly; this gives
the truth of V100%, R50%, GI, CI and D2cm without any grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from sbrtstandards.grid import Grid
from sbrtstandards.phantom.balls import union_of_balls_volume_mm3


@dataclass(frozen=True)
class DoseModel:
    """Shape of the synthetic dose around the PTV (see the module docstring)."""

    hot: float = 1.35
    depth_mm: float = 5.0
    s50_mm: float = 11.0
    power: float = 1.5
    bath: float = 0.10
    bath_mm: float = 50.0
    coverage: float = 0.97

    def relative(self, s_mm: np.ndarray) -> np.ndarray:
        """f(s): 1 on the PTV surface."""
        s = np.asarray(s_mm, dtype=np.float64)
        inside = 1.0 + (self.hot - 1.0) * (1.0 - np.exp(np.minimum(s, 0.0) / self.depth_mm))
        out = np.maximum(s, 0.0)
        outside = (1.0 - self.bath) / (1.0 + (out / self.s50_mm) ** self.power) + self.bath * np.exp(
            -out / self.bath_mm
        )
        return np.where(s < 0.0, inside, outside)

    def distance_for(self, level: float, radius_mm: float) -> float:
        """The s where f(s) = level (f decreases from ``hot`` at s = -radius to 0 far away)."""
        if level >= float(self.relative(np.array(-radius_mm))):
            return -radius_mm
        return float(brentq(lambda s: float(self.relative(np.array(s))) - level, -radius_mm, 2000.0, xtol=1e-9))


def signed_distance_mm(points_mm: np.ndarray, centres_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """s for points (..., 3): distance to the nearest centre minus the PTV radius."""
    best = None
    for c in np.unique(np.asarray(centres_mm, dtype=float), axis=0):
        d = np.sqrt(((points_mm - c) ** 2).sum(axis=-1))
        best = d if best is None else np.minimum(best, d)
    assert best is not None
    return best - radius_mm


def normalisation(model: DoseModel, centres_mm: np.ndarray, radius_mm: float, step_mm: float = 0.5) -> float:
    """Scale such that ``model.coverage`` of the PTV gets f * scale >= 1 (fine regular sampling)."""
    c = np.asarray(centres_mm, dtype=float)
    lo = c.min(axis=0) - radius_mm
    hi = c.max(axis=0) + radius_mm
    axes = [np.arange(lo[a] + step_mm / 2, hi[a], step_mm) for a in range(3)]
    values = []
    for z in axes[2]:
        pts = np.stack(np.meshgrid(axes[0], axes[1], [z], indexing="ij"), axis=-1).reshape(-1, 3)
        s = signed_distance_mm(pts, c, radius_mm)
        values.append(model.relative(s[s <= 0.0]))
    f = np.concatenate(values)
    return float(1.0 / np.quantile(f, 1.0 - model.coverage))


def dose_on_grid(
    model: DoseModel,
    grid: Grid,
    centres_mm: np.ndarray,
    radius_mm: float,
    rx_gy: float,
    scale: float,
    body: np.ndarray,
) -> np.ndarray:
    """The dose (Gy, float32) on ``grid``; ``body`` (grid-shaped bool) zeroes it outside the body."""
    xs, ys, zs = (grid.axis_coords_mm(a) for a in range(3))
    dose = np.zeros(grid.shape, dtype=np.float32)
    xy = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1)  # (nj, ni, 2)
    for k, z in enumerate(zs):
        pts = np.concatenate([xy, np.full(xy.shape[:2] + (1,), z)], axis=-1)
        s = signed_distance_mm(pts, centres_mm, radius_mm)
        dose[k] = (rx_gy * scale * model.relative(s)).astype(np.float32)
    dose[~body] = 0.0
    return dose


def analytic_metrics(
    model: DoseModel, centres_mm: np.ndarray, radius_mm: float, scale: float, ptv_cc: float
) -> dict[str, float]:
    """Isodose volumes and plan metrics of the continuous dose (body cut-off ignored)."""

    def volume_cc(level: float) -> float:
        s = model.distance_for(level / scale, radius_mm)
        return union_of_balls_volume_mm3(centres_mm, radius_mm + s) / 1000.0

    v100 = volume_cc(1.0)
    v50 = volume_cc(0.5)
    max_rel = scale * float(model.relative(np.array(-radius_mm)))
    return {
        "max_percent": 100.0 * max_rel,
        "v100_cc": v100,
        "v50_cc": v50,
        "ptv_v100_percent": 100.0 * model.coverage,
        "ci_rtog": v100 / ptv_cc,
        "r50": v50 / ptv_cc,
        "gi": v50 / v100,
        "d2cm_percent": 100.0 * scale * float(model.relative(np.array(20.0))),
        "surface_percent": 100.0 * scale,
    }
