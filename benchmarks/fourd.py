"""Benchmark: the 4D-CT chain (MIP + AVG + MinIP + ITV + PTV) on 10 phases of 512x512x160 int16.

Compares the project's chain (phases streamed, exact Euclidean PTV margin in a bounding box)
with a straightforward numpy/scipy implementation (all phases stacked as float64, max/mean/min,
union, PTV by binary dilation with a voxel ball), each in its own process so that peak memory
(ru_maxrss) is measured separately. Also prints the PTV volume error of both against the exact
union of radius-(r + 5 mm) spheres computed on a fine grid.

    python benchmarks/fourd.py            # full size (10 x 512 x 512 x 160)
    python benchmarks/fourd.py --small    # 10 x 256 x 256 x 80, for a quick look
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RADIUS_MM = 15.0
MARGIN_MM = 5.0
SPACING = (0.98, 0.98, 2.0)  # x, y, z mm (typical 4D-CT: 0.98 mm pixels, 2 mm slices)


def centres(n: int) -> np.ndarray:
    t = np.arange(n) / n
    w = np.cos(np.pi * t) ** 4
    return np.stack([np.zeros(n), 3.0 * w, 15.0 * w - 7.5], axis=1)  # LPS mm, 15 mm SI, 3 mm AP


def make_phases(folder: Path, shape: tuple[int, int, int], n: int) -> None:
    rng = np.random.default_rng(0)
    nk, nj, ni = shape
    origin = -(np.asarray([ni, nj, nk]) - 1) / 2 * np.asarray(SPACING)
    zz, yy, xx = np.meshgrid(
        *(origin[a] + SPACING[a] * np.arange(s) for a, s in ((2, nk), (1, nj), (0, ni))), indexing="ij", sparse=True
    )
    base = np.where(xx**2 + yy**2 < 160**2, -800, -1000).astype(np.int16) + np.zeros((nk, 1, 1), np.int16)
    for p, c in enumerate(centres(n)):
        r2 = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 + (zz - c[2]) ** 2
        hu = np.where(r2 <= RADIUS_MM**2, 40, base).astype(np.int16)
        hu += rng.integers(-15, 16, size=hu.shape, dtype=np.int16)
        np.save(folder / f"phase{p:02d}.npy", hu)
        np.save(folder / f"gtv{p:02d}.npy", r2 <= RADIUS_MM**2)
    (folder / "meta.json").write_text(json.dumps({"shape": shape, "n": n, "origin": origin.tolist()}))


def run_ours(folder: Path) -> dict:
    from sbrtstandards.grid import Grid
    from sbrtstandards.itv import PhaseGtv, build_itv
    from sbrtstandards.margins import grow
    from sbrtstandards.projections import PhaseImage, project_phases

    meta = json.loads((folder / "meta.json").read_text())
    nk, nj, ni = meta["shape"]
    grid = Grid(tuple(meta["origin"]), SPACING, (ni, nj, nk))
    t0 = time.perf_counter()
    phases = (PhaseImage(f"{10 * p}%", np.load(folder / f"phase{p:02d}.npy"), grid) for p in range(meta["n"]))
    proj = project_phases(phases)
    gtvs = [PhaseGtv(f"{10 * p}%", np.load(folder / f"gtv{p:02d}.npy")) for p in range(meta["n"])]
    itv = build_itv(gtvs, grid)
    ptv = grow(itv.mask, grid, MARGIN_MM)
    seconds = time.perf_counter() - t0
    del proj
    return {"seconds": seconds, "ptv_cc": float(ptv.sum()) * grid.voxel_volume_cc}


def run_naive(folder: Path) -> dict:
    from scipy import ndimage

    meta = json.loads((folder / "meta.json").read_text())
    t0 = time.perf_counter()
    stack = np.stack([np.load(folder / f"phase{p:02d}.npy").astype(np.float64) for p in range(meta["n"])])
    mip, avg, minip = stack.max(axis=0), stack.mean(axis=0), stack.min(axis=0)
    del stack, mip, avg, minip
    itv = np.zeros(meta["shape"], bool)
    for p in range(meta["n"]):
        itv |= np.load(folder / f"gtv{p:02d}.npy")
    # voxel ball of radius 5 mm in voxels (what a voxel-distance margin does)
    rk, rj, ri = (int(MARGIN_MM // s) for s in SPACING[::-1])
    kk, jj, ii = np.ogrid[-rk : rk + 1, -rj : rj + 1, -ri : ri + 1]
    ball = (kk * SPACING[2]) ** 2 + (jj * SPACING[1]) ** 2 + (ii * SPACING[0]) ** 2 <= MARGIN_MM**2
    ptv = ndimage.binary_dilation(itv, structure=ball)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "ptv_cc": float(ptv.sum()) * float(np.prod(SPACING)) / 1000.0}


def exact_ptv_cc(n: int) -> float:
    """Union of spheres of radius r + margin at the phase centres, on a 0.1 mm grid (to ~0.05%)."""
    c = centres(n)
    r = RADIUS_MM + MARGIN_MM
    lo, hi = c.min(axis=0) - r, c.max(axis=0) + r
    h = 0.1
    xs, ys = (np.arange(lo[a], hi[a] + h, h) for a in (0, 1))
    total = 0.0
    for z in np.arange(lo[2], hi[2] + h, h):
        inside = np.zeros((len(ys), len(xs)), bool)
        for cc in c:
            dz2 = (z - cc[2]) ** 2
            if dz2 > r * r:
                continue
            inside |= ((xs[None, :] - cc[0]) ** 2 + (ys[:, None] - cc[1]) ** 2) <= r * r - dz2
        total += inside.sum() * h**3
    return total / 1000.0


def child(impl: str, folder: str) -> None:
    out = (run_ours if impl == "ours" else run_naive)(Path(folder))
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    shape = (80, 256, 256) if args.small else (160, 512, 512)
    n = 10
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"writing {n} phases of {shape[2]}x{shape[1]}x{shape[0]} int16 ...", flush=True)
        make_phases(folder, shape, n)
        exact = exact_ptv_cc(n)
        results = {}
        for impl in ("ours", "naive"):
            res = subprocess.run(
                [sys.executable, __file__, "--child", impl, str(folder)], capture_output=True, text=True, check=True
            )
            results[impl] = json.loads(res.stdout.strip().splitlines()[-1])
    print(
        f"\n4D chain (MIP+AVG+MinIP+ITV+PTV), {n} phases of {shape[2]}x{shape[1]}x{shape[0]}, "
        f"{SPACING[0]}x{SPACING[1]}x{SPACING[2]} mm; exact PTV {exact:.2f} cc"
    )
    print(f"{'':8s} {'time (s)':>9s} {'peak (MB)':>10s} {'PTV (cc)':>9s} {'PTV err':>8s}")
    for impl, r in results.items():
        err = 100 * (r["ptv_cc"] - exact) / exact
        print(f"{impl:8s} {r['seconds']:9.2f} {r['peak_mb']:10.0f} {r['ptv_cc']:9.2f} {err:+7.2f}%")
    o, b = results["ours"], results["naive"]
    print(f"ratio naive/ours: time {b['seconds'] / o['seconds']:.1f}x, peak memory {b['peak_mb'] / o['peak_mb']:.1f}x")


if __name__ == "__main__":
    main()
