"""Report figures: CT slices with structure outlines and isodose lines (matplotlib, Agg).

Display conventions: axial slices are seen from the feet (patient right on the image left,
anterior up), coronal and sagittal slices have superior up; axes are in mm, so anisotropic
voxels keep their true aspect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbrtstandards.grid import Grid
from sbrtstandards.report import Figure, figure_from_matplotlib

ISODOSE_PERCENTS = (50.0, 80.0, 100.0, 110.0)
ISODOSE_COLORS = ("#2f81f7", "#3fb950", "#f0c000", "#ff3b30")
WINDOWS = {"lung": (-600.0, 1600.0), "soft": (40.0, 400.0)}  # (level, width) in HU


@dataclass
class Overlay:
    name: str
    mask: np.ndarray  # bool on the CT grid, [k, j, i]
    color: tuple[float, float, float]  # 0..1


def _use_agg() -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)


def slice_figures(
    ct_hu: np.ndarray,
    grid: Grid,
    center_lps: Sequence[float],
    overlays: Sequence[Overlay] = (),
    *,
    dose_on_ct: np.ndarray | None = None,
    rx_gy: float | None = None,
    window: str = "lung",
    title: str = "",
    planes: Sequence[str] = ("axial", "coronal", "sagittal"),
) -> list[Figure]:
    """Axial, coronal and sagittal slices through ``center_lps`` (an axial grid is required).

    ``dose_on_ct`` is the dose resampled onto the CT grid (Gy, NaN where unknown); its
    isodose lines are drawn at :data:`ISODOSE_PERCENTS` of ``rx_gy``.
    """
    _use_agg()
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    grid.require_axial("slice figures")
    level, width = WINDOWS[window]
    i, j, k = (int(round(v)) for v in grid.lps_to_index(np.asarray(center_lps, dtype=float)))
    i, j, k = (int(np.clip(v, 0, n - 1)) for v, n in zip((i, j, k), grid.size))
    xs, ys, zs = (grid.axis_coords_mm(a) for a in range(3))
    cuts = {
        "axial": (lambda a: a[k], xs, ys, "x (R→L) mm", "y (A→P) mm", True),
        "coronal": (lambda a: a[:, j, :], xs, zs, "x (R→L) mm", "z (I→S) mm", False),
        "sagittal": (lambda a: a[:, :, i], ys, zs, "y (A→P) mm", "z (I→S) mm", False),
    }
    figures = []
    for plane in planes:
        take, h, v, hl, vl, flip_v = cuts[plane]
        fig, ax = plt.subplots(figsize=(5.2, 5.2 * (v[-1] - v[0]) / max(h[-1] - h[0], 1e-6) + 0.6))
        extent = (h[0], h[-1], v[-1], v[0]) if flip_v else (h[0], h[-1], v[0], v[-1])
        ax.imshow(
            take(ct_hu),
            cmap="gray",
            vmin=level - width / 2,
            vmax=level + width / 2,
            extent=extent,
            origin="upper" if flip_v else "lower",
            interpolation="nearest",
        )
        handles = []
        for ov in overlays:
            sl = take(ov.mask)
            if sl.any():
                ax.contour(h, v, sl.astype(np.float32), levels=[0.5], colors=[ov.color], linewidths=1.2)
                handles.append(Line2D([], [], color=ov.color, label=ov.name))
        if dose_on_ct is not None and rx_gy:
            dsl = np.nan_to_num(take(dose_on_ct), nan=0.0)
            for pct, col in zip(ISODOSE_PERCENTS, ISODOSE_COLORS):
                lvl = rx_gy * pct / 100.0
                if dsl.max() >= lvl:
                    ax.contour(h, v, dsl, levels=[lvl], colors=[col], linewidths=0.9, linestyles="--")
                    handles.append(Line2D([], [], color=col, ls="--", label=f"{pct:g}% ({lvl:.1f} Gy)"))
        ax.set_xlabel(hl)
        ax.set_ylabel(vl)
        ax.set_title(f"{title} {plane}".strip(), fontsize=10)
        if handles:
            ax.legend(handles=handles, fontsize=6.5, loc="lower right", framealpha=0.7)
        figures.append(figure_from_matplotlib(fig, caption=f"{title} — {plane} slice", alt=f"{plane} slice"))
    return figures


def dose_on_grid(dose: Any, grid: Grid) -> np.ndarray:
    """A dose (anything with ``sample(points_mm)``) resampled trilinearly onto ``grid``, NaN outside."""
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    pts = grid.index_to_lps(np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1))
    return np.asarray(dose.sample(pts)).reshape(grid.shape)
