"""Deterministic dose-grid pairs for gamma tests and the gamma benchmark (no random numbers).

Every dose is a closed-form function of position, so the same arrays come out on any machine
and any numpy version: the stored pymedphys results in ``Testing/data/programme_qa`` were
computed from exactly these arrays (see ``benchmarks/gamma.py --store``).

The reference is an SBRT-like distribution: a spherical target at the prescription (a sigmoid
edge with a realistic penumbra), three oblique "beam" lobes entering from outside and a low dose
bath. The evaluated dose is the same distribution moved by a set-up shift, scaled by an output
error and modulated by a smooth ripple, optionally on another grid (spacing and origin).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbrtstandards.grid import Grid


@dataclass(frozen=True)
class GammaCase:
    name: str
    n_ref: int  # voxels per axis of the reference grid
    spacing_ref_mm: float
    n_eval: int
    spacing_eval_mm: float
    eval_origin_shift_mm: tuple[float, float, float]  # evaluated grid origin minus reference origin
    shift_mm: tuple[float, float, float]  # the evaluated dose is the reference dose moved by this
    scale: float  # and multiplied by this
    ripple: float  # and modulated by 1 + ripple * sin(x/L1) sin(y/L2) cos(z/L3)
    dose_percent: float
    distance_mm: float
    cutoff_percent: float
    local: bool
    target_radius_mm: float = 15.0
    beam_sigma_mm: float = 14.0
    bath_gy: float = 3.0


CASES: dict[str, GammaCase] = {
    c.name: c
    for c in (
        GammaCase("shift_scale_2_2", 40, 2.5, 40, 2.5, (0.0, 0.0, 0.0), (1.2, -0.8, 0.5), 1.02, 0.0, 2, 2, 10, False),
        GammaCase("shift_scale_1_1", 40, 2.5, 40, 2.5, (0.0, 0.0, 0.0), (1.2, -0.8, 0.5), 1.02, 0.0, 1, 1, 10, False),
        GammaCase("ripple_local_3_2", 40, 2.5, 40, 2.5, (0.0, 0.0, 0.0), (0.6, 0.9, -1.1), 0.99, 0.03, 3, 2, 10, True),
        GammaCase("other_grid_2_2", 40, 2.5, 34, 3.0, (0.7, -0.4, 0.9), (-1.0, 0.5, 1.5), 1.015, 0.02, 2, 2, 10, False),
        # the benchmark pair: 100^3 voxels of 2 mm (a 20 cm cube)
        GammaCase(
            "bench_100", 100, 2.0, 100, 2.0, (0.0, 0.0, 0.0), (1.0, -1.2, 0.8), 1.02, 0.015, 2, 2, 10, False,
            target_radius_mm=30.0, beam_sigma_mm=30.0, bath_gy=8.0,
        ),
    )
}


def reference_dose_gy(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: np.ndarray, case: GammaCase
) -> np.ndarray:
    """The SBRT-like dose (Gy) at LPS points, target centred on ``centre``."""
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    r = np.sqrt(dx * dx + dy * dy + dz * dz)
    # 50 Gy sphere with a sigmoid edge of 2.5 mm scale (about 7 mm from 80 % to 20 %)
    target = 50.0 / (1.0 + np.exp((r - case.target_radius_mm) / 2.5))
    dose = target + case.bath_gy * np.exp(-(r / (3.0 * case.target_radius_mm)) ** 2)  # low-dose bath
    for ux, uy, uz, weight in ((1.0, 0.3, 0.1, 6.0), (-0.4, 1.0, -0.2, 5.0), (0.2, -0.5, 1.0, 4.0)):
        u = np.array([ux, uy, uz]) / np.linalg.norm([ux, uy, uz])
        along = dx * u[0] + dy * u[1] + dz * u[2]
        across2 = r * r - along * along
        beam = weight / (1.0 + np.exp(-along / 8.0)) * np.exp(-np.maximum(across2, 0.0) / (2 * case.beam_sigma_mm**2))
        dose = dose + beam
    return dose


def case_arrays(case: GammaCase) -> tuple[np.ndarray, Grid, np.ndarray, Grid]:
    """(reference dose, its grid, evaluated dose, its grid) of ``case``; doses indexed [k, j, i]."""
    ref_grid = Grid((0.0, 0.0, 0.0), (case.spacing_ref_mm,) * 3, (case.n_ref,) * 3)
    centre = np.full(3, (case.n_ref - 1) * case.spacing_ref_mm / 2.0)
    ev_grid = Grid(tuple(float(v) for v in case.eval_origin_shift_mm), (case.spacing_eval_mm,) * 3,
                   (case.n_eval,) * 3)  # type: ignore[arg-type]
    ref = _on_grid(ref_grid, lambda x, y, z: reference_dose_gy(x, y, z, centre, case))
    s = np.asarray(case.shift_mm)

    def evaluated(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        base = reference_dose_gy(x - s[0], y - s[1], z - s[2], centre, case)
        ripple = 1.0 + case.ripple * np.sin(x / 9.0) * np.sin(y / 13.0) * np.cos(z / 11.0)
        return case.scale * base * ripple

    return ref, ref_grid, _on_grid(ev_grid, evaluated), ev_grid


def axes_mm(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, y, x) voxel-centre coordinates: the axis order of an array indexed [k, j, i]."""
    return grid.axis_coords_mm(2), grid.axis_coords_mm(1), grid.axis_coords_mm(0)


def _on_grid(grid: Grid, fn: object) -> np.ndarray:
    z, y, x = np.meshgrid(*axes_mm(grid), indexing="ij")
    return np.asarray(fn(x, y, z), dtype=np.float64)  # type: ignore[operator]
