"""Margin accuracy and speed against voxel-dilation baselines (issue 4, items 3 and 5).

Accuracy: a radius-10 mm sphere grown (shrunk) by 5 mm, volume on the CT grid (voxel count
x voxel volume) against the analytic radius-15 (radius-5) sphere, on 1x1x1, 1x1x3 and
1x1x5 mm grids, averaged over sphere positions (centre on a slice, 1/4 and 1/2 slice off):

* ours, contours: the sphere drawn as one exact circle per slice (``grow_planes``);
* ours, mask: the sphere rasterised on the grid (voxel centres inside), ``grow``/``shrink``;
* voxel ball: every voxel whose centre is within 5 mm of an inside voxel centre (scipy
  Euclidean distance transform with the voxel spacing): the exact voxel-centre dilation;
* SimpleITK BinaryDilate/BinaryErode with a ball kernel of round(5 mm / spacing) voxels per
  axis, what a straightforward voxel margin (and, conceptually, Slicer's margin effect) does.

Speed: PTV = ITV + 5 mm for a ~30 cc ITV on a 512 x 512 x 160 CT grid (0.98 x 0.98 x 2.5 mm),
ours against SimpleITK BinaryDilate on the whole grid, and ours with a 6-value margin.

Run: ``.venv/bin/python benchmarks/margins.py``
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from sbrtstandards import margins as mg
from sbrtstandards.grid import Grid

MARGIN_MM = 5.0


def sphere_volume(r: float) -> float:
    return 4.0 / 3.0 * math.pi * r**3


def make_grid(spacing: tuple[float, float, float], phase: float) -> Grid:
    n = [int(round(64.0 / s)) + 1 for s in spacing]
    offset = (0.3, 0.1, phase * spacing[2])
    origin = tuple(-(n[a] - 1) / 2 * spacing[a] + offset[a] for a in range(3))
    return Grid(origin, spacing, tuple(n))


def sphere_mask(r: float, grid: Grid) -> np.ndarray:
    x, y, z = (grid.axis_coords_mm(a) for a in range(3))
    return x[None, None, :] ** 2 + y[None, :, None] ** 2 + z[:, None, None] ** 2 <= r * r


def sphere_planes(r: float, grid: Grid) -> dict[float, list[np.ndarray]]:
    planes = {}
    for z in grid.axis_coords_mm(2):
        if abs(z) < r:
            rho = math.sqrt(r * r - z * z)
            t = np.linspace(0.0, 2 * math.pi, max(24, int(2 * math.pi * rho / 0.25)), endpoint=False)
            planes[float(z)] = [np.column_stack([rho * np.cos(t), rho * np.sin(t)])]
    return planes


def voxel_ball(mask: np.ndarray, grid: Grid, shrinking: bool) -> np.ndarray:
    sampling = (grid.spacing_mm[2], grid.spacing_mm[1], grid.spacing_mm[0])
    if shrinking:
        return ndimage.distance_transform_edt(mask, sampling=sampling) > MARGIN_MM
    return ndimage.distance_transform_edt(~mask, sampling=sampling) <= MARGIN_MM


def sitk_kernel(mask: np.ndarray, grid: Grid, shrinking: bool) -> np.ndarray:
    image = grid.image(mask.astype(np.uint8))
    radius = [max(1, int(round(MARGIN_MM / s))) for s in grid.spacing_mm]
    f = sitk.BinaryErodeImageFilter() if shrinking else sitk.BinaryDilateImageFilter()
    f.SetKernelType(sitk.sitkBall)
    f.SetKernelRadius(radius)
    f.SetForegroundValue(1)
    return sitk.GetArrayFromImage(f.Execute(image)).astype(bool)


def accuracy_table() -> None:
    print(f"Sphere r = 10 mm grown by {MARGIN_MM:g} mm (vs r = 15) and shrunk (vs r = 5):")
    print("volume error %, mean [min, max] over 3 sphere positions; time per grow in s\n")
    header = f"{'grid (mm)':<12}{'method':<26}{'grow %':>24}{'shrink %':>26}{'time s':>9}"
    print(header)
    print("-" * len(header))
    for spacing in ((1.0, 1.0, 1.0), (1.0, 1.0, 3.0), (1.0, 1.0, 5.0)):
        rows: dict[str, list[tuple[float, float, float]]] = {}
        ideal: list[tuple[float, float]] = []
        for phase in (0.0, 0.25, 0.5):
            grid = make_grid(spacing, phase)
            voxel = float(np.prod(spacing))
            mask = sphere_mask(10.0, grid)
            planes = sphere_planes(10.0, grid)
            ideal.append((sphere_mask(15.0, grid).sum() * voxel, sphere_mask(5.0, grid).sum() * voxel))
            methods = {
                "ours, contours": (lambda g=grid, p=planes: mg.grow_planes(p, MARGIN_MM, g),
                                   lambda g=grid, p=planes: mg.shrink_planes(p, MARGIN_MM, g)),
                "ours, voxel mask": (lambda g=grid, m=mask: mg.grow(m, g, MARGIN_MM),
                                     lambda g=grid, m=mask: mg.shrink(m, g, MARGIN_MM, allow_empty=True)),
                "voxel ball (EDT)": (lambda g=grid, m=mask: voxel_ball(m, g, False),
                                     lambda g=grid, m=mask: voxel_ball(m, g, True)),
                "SimpleITK ball kernel": (lambda g=grid, m=mask: sitk_kernel(m, g, False),
                                          lambda g=grid, m=mask: sitk_kernel(m, g, True)),
            }
            for name, (grow_fn, shrink_fn) in methods.items():
                start = time.perf_counter()
                grown = grow_fn()
                elapsed = time.perf_counter() - start
                shrunk = shrink_fn()
                rows.setdefault(name, []).append(
                    (100 * (grown.sum() * voxel / sphere_volume(15.0) - 1),
                     100 * (shrunk.sum() * voxel / sphere_volume(5.0) - 1), elapsed)
                )
        label = "x".join(f"{s:g}" for s in spacing)
        for name, values in rows.items():
            arr = np.array(values)
            g = f"{arr[:, 0].mean():+6.2f} [{arr[:, 0].min():+6.2f}, {arr[:, 0].max():+6.2f}]"
            s = f"{arr[:, 1].mean():+6.1f} [{arr[:, 1].min():+6.1f}, {arr[:, 1].max():+6.1f}]"
            print(f"{label:<12}{name:<26}{g:>24}{s:>26}{arr[:, 2].mean():9.3f}")
        ia = np.array(ideal)
        g = 100 * (ia[:, 0] / sphere_volume(15.0) - 1)
        s = 100 * (ia[:, 1] / sphere_volume(5.0) - 1)
        print(f"{label:<12}{'(exact sphere on grid)':<26}{f'{g.mean():+6.2f} [{g.min():+6.2f}, {g.max():+6.2f}]':>24}"
              f"{f'{s.mean():+6.1f} [{s.min():+6.1f}, {s.max():+6.1f}]':>26}")
        print()


def ptv_timing() -> None:
    grid = Grid((-250.0, -250.0, -200.0), (0.977, 0.977, 2.5), (512, 512, 160))
    x, y, z = (grid.axis_coords_mm(a) for a in range(3))
    centre, radius = (30.3, -20.1, 10.4), 16.8
    itv = np.zeros(grid.shape, dtype=bool)
    for shift in np.linspace(-5.0, 5.0, 10):  # a tumour moving 10 mm SI: a capsule
        itv |= ((x[None, None, :] - centre[0]) ** 2 + (y[None, :, None] - centre[1]) ** 2
                + (z[:, None, None] - centre[2] - shift) ** 2 <= radius**2)
    exact_ptv = sphere_volume(radius + MARGIN_MM) + math.pi * (radius + MARGIN_MM) ** 2 * 10.0
    print(f"PTV = ITV + {MARGIN_MM:g} mm, ITV {itv.sum() * grid.voxel_volume_cc:.1f} cc (capsule r {radius} mm, "
          f"10 mm SI) on {grid.describe()}")
    print(f"exact PTV volume {exact_ptv / 1000:.2f} cc\n")

    def run(label: str, fn: Callable[[], np.ndarray], exact: bool = True) -> float:
        fn()  # warm-up (imports, caches)
        start = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - start
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        vol = out.sum() * grid.voxel_volume_cc
        error = f"({100 * (vol * 1000 / exact_ptv - 1):+.2f}%)" if exact else ""
        print(f"  {label:<44}{elapsed:7.3f} s  peak {peak:7.0f} MB  result {vol:6.2f} cc {error}")
        return elapsed

    t_ours = run("ours, grow (5 mm)", lambda: mg.grow(itv, grid, MARGIN_MM))
    run("ours, grow (R,L,A,P,S,I = 5,5,5,5,8,8)", lambda: mg.grow(itv, grid, mg.Margin(5, 5, 5, 5, 8, 8)), False)
    run("ours, grow (R,L,A,P,S,I = 3,7,2,9,10,4)", lambda: mg.grow(itv, grid, mg.Margin(3, 7, 2, 9, 10, 4)), False)
    run("ours, shrink ITV by 5 mm", lambda: mg.shrink(itv, grid, MARGIN_MM), False)
    t_sitk = run("SimpleITK BinaryDilate, whole grid", lambda: sitk_kernel(itv, grid, False))
    print(f"\n  speed-up of ours over the whole-grid SimpleITK dilation: x{t_sitk / t_ours:.0f}")


if __name__ == "__main__":
    accuracy_table()
    ptv_timing()
