"""DVH accuracy and speed: SBRT Standards against dicompyler-core 0.5.6, on the same DICOM files.

Usage:  .venv/bin/python benchmarks/dvh.py [--quick] [--peer-python PATH] [--keep DIR]

* Accuracy: the analytic cases of ``Testing/analytic_shapes.py`` (spheres, cylinders, cones,
  upright and tilted, contours 1-3 mm apart, linear dose along AP or SI on 1, 2 and 3 mm
  dose grids) are written as RTSTRUCT + RTDOSE files; both engines compute the DVH from the
  files, and their volume, D99, D95, D5, D1, D0.03cc and mean are compared with the closed
  forms for the TRUE SOLID. Printed: median and 90th percentile of |error| per dose grid.
* Speed: a 15-ROI thoracic case (the synthetic lung case of ``sbrtstandards.phantom`` with
  its body contour; a 15-ROI synthetic of spheres and cylinders if that package is absent):
  reading both files and computing the 15 DVHs, best of ``--repeats`` runs (5), each engine in
  its own process, interpreter start-up and imports excluded; the load average is printed
  (the machine may be shared).

dicompyler-core runs in a separate virtual environment with ``pydicom<3`` (it does not
support pydicom 3): a benchmark-time peer, not a dependency. It is created on first use
under ``benchmarks/.peers/dicompyler-core`` with pip (PyPI access needed once).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Testing"))

import analytic_shapes as an  # noqa: E402

from sbrtstandards.dicom.common import CT_IMAGE_STORAGE, SeriesReference, StudyInfo, new_uid  # noqa: E402
from sbrtstandards.dicom.rtdose import read_rtdose, write_rtdose  # noqa: E402
from sbrtstandards.dicom.rtstruct import Contour, Roi, read_rtstruct, write_rtstruct  # noqa: E402
from sbrtstandards.dvh import structure_set_dvhs  # noqa: E402
from sbrtstandards.grid import Grid  # noqa: E402

PEER_DIR = ROOT / "benchmarks" / ".peers" / "dicompyler-core"
PEER_REQUIREMENTS = ["dicompyler-core==0.5.6", "pydicom<3"]
THORAX_ROIS = (
    "Body", "Lung_L", "Lung_R", "Heart", "Esophagus", "Trachea", "Bronchus", "A_Aorta", "SpinalCord",
    "SpinalCanal", "Ribs", "Liver", "AirWay_Prox", "ITV", "PTV",
)  # fmt: skip
STATS = ("volume", "D99", "D95", "D5", "D1", "D0.03cc", "mean")

PEER_SCRIPT = r"""
import json, sys, time
from dicompylercore import dvhcalc

def stats(d):
    out = {"volume": float(d.volume), "mean": float(d.mean), "max": float(d.max), "min": float(d.min)}
    for name in ("D99", "D95", "D5", "D1", "D0.03cc"):
        try:
            out[name] = float(d.statistic(name).value)
        except Exception:
            out[name] = None
    return out

job = json.load(sys.stdin)
result = {"cases": [], "timing": []}
for case in job["cases"]:
    d = dvhcalc.get_dvh(case["rs"], case["rd"], case["roi"])
    result["cases"].append(stats(d))
for _ in range(job.get("repeats", 0)):
    t0 = time.perf_counter()
    for roi in job["timing_rois"]:
        dvhcalc.get_dvh(job["timing_rs"], job["timing_rd"], roi)
    result["timing"].append(time.perf_counter() - t0)
json.dump(result, sys.stdout)
"""


# ------------------------------------------------------------------------------------------ peer


def peer_python(explicit: str | None) -> Path:
    """The peer environment's interpreter; created with pip on first use."""
    if explicit:
        return Path(explicit)
    py = PEER_DIR / "bin" / "python"
    if not py.exists():
        print(f"creating the dicompyler-core peer environment in {PEER_DIR} ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(PEER_DIR)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEER_REQUIREMENTS], check=True)
    return py


def run_peer(py: Path, job: dict) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(PEER_SCRIPT)
        script = f.name
    try:
        res = subprocess.run(
            [str(py), script], input=json.dumps(job), capture_output=True, text=True, env={**os.environ,
                                                                                          "PYTHONWARNINGS": "ignore"}
        )  # fmt: skip
    finally:
        os.unlink(script)
    if res.returncode != 0:
        raise SystemExit(f"dicompyler-core peer failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout)


# ------------------------------------------------------------------------------------------ analytic cases


def write_case_files(out: Path, solid: an.Solid, contour_mm: float, dose_mm: float, gradient: str,
                     cache: dict) -> tuple[Path, Path]:  # fmt: skip
    """RTSTRUCT (one ROI, the solid's contours) and RTDOSE (the linear dose) of one case."""
    study = cache.setdefault("study", StudyInfo())
    key = (solid, contour_mm)
    if key not in cache:
        planes = solid.planes(contour_mm, phase_mm=an.CONTOUR_PHASE_MM)
        zs = tuple(sorted(planes))
        ref = SeriesReference(study, new_uid(), CT_IMAGE_STORAGE, tuple(new_uid() for _ in zs), zs)
        contours = [Contour(np.column_stack([p, np.full(len(p), z)]), "CLOSED_PLANAR") for z in zs for p in planes[z]]
        rs = out / f"RS_{len(cache)}.dcm"
        write_rtstruct(rs, [Roi(1, "Solid", (255, 0, 0), "PTV", contours)], reference=ref)
        cache[key] = rs
    lo, hi = solid.bounding_box()
    dose, grid = an.linear_dose(gradient).on_grid(lo, hi, dose_mm, offset_mm=an.DOSE_OFFSET_MM)
    grid = Grid(grid.origin_mm, grid.spacing_mm, grid.size, frame_of_reference_uid=study.frame_of_reference_uid)
    rd = out / f"RD_{len(cache)}_{dose_mm:g}_{gradient}.dcm"
    write_rtdose(rd, np.maximum(dose, 0.0), grid, study=study)
    return cache[key], rd


def ours(rs: Path, rd: Path, names: list[str] | None = None) -> list:
    return structure_set_dvhs(read_rtstruct(rs), read_rtdose(rd), names).dvhs


def our_stats(dvh) -> dict:
    return {
        "volume": dvh.volume_cc,
        "mean": dvh.mean_gy,
        "D99": dvh.dose_at_volume_percent(99),
        "D95": dvh.dose_at_volume_percent(95),
        "D5": dvh.dose_at_volume_percent(5),
        "D1": dvh.dose_at_volume_percent(1),
        "D0.03cc": dvh.dose_at_volume_cc(0.03),
    }


def errors(stats: dict, exact: an.ExactDvh) -> dict:
    truth = {
        "volume": exact.volume_cc,
        "mean": exact.mean_gy,
        "D99": exact.d_percent[99.0],
        "D95": exact.d_percent[95.0],
        "D5": exact.d_percent[5.0],
        "D1": exact.d_percent[1.0],
        "D0.03cc": exact.d_cc[0.03],
    }
    out = {}
    for k in STATS:
        if stats.get(k) is None:
            out[k] = np.nan
        elif k == "volume":
            out[k] = 100.0 * (stats[k] / truth[k] - 1.0)
        else:
            out[k] = stats[k] - truth[k]
    return out


def accuracy(py: Path, work: Path, quick: bool) -> None:
    solids = an.validation_solids()
    spacings = (2.0,) if quick else (1.0, 2.0, 3.0)
    grids = (2.0,) if quick else an.DOSE_SPACINGS_MM
    cache: dict = {}
    cases = []
    for solid in solids:
        for cs in spacings:
            for dg in grids:
                for grad in an.GRADIENTS:
                    rs, rd = write_case_files(work, solid, cs, dg, grad, cache)
                    cases.append((solid, cs, dg, grad, rs, rd))
    print(f"{len(cases)} analytic cases written; computing ...", file=sys.stderr)
    exact = {(s, g): an.exact_dvh(s, an.linear_dose(g)) for s in solids for g in an.GRADIENTS}
    peer = run_peer(py, {"cases": [{"rs": str(c[4]), "rd": str(c[5]), "roi": 1} for c in cases]})["cases"]
    rows = []
    for (solid, _cs, dg, grad, rs, rd), p in zip(cases, peer):
        e_ours = errors(our_stats(ours(rs, rd)[0]), exact[(solid, grad)])
        e_peer = errors(p, exact[(solid, grad)])
        rows.append((dg, e_ours, e_peer))
    print("\nAccuracy against the analytic solids (gradient 1 Gy/mm; volume in %, doses in Gy)")
    print("median |error| (90th percentile) per dose grid; ours vs dicompyler-core 0.5.6")
    header = f"{'grid':>5} {'n':>4}  " + "  ".join(f"{k:>22}" for k in STATS)
    print(header)
    for dg in [*grids, "all"]:
        sel = [r for r in rows if dg == "all" or r[0] == dg]
        cells = []
        for k in STATS:
            a = np.abs([r[1][k] for r in sel])
            b = np.abs([r[2][k] for r in sel])
            cells.append(f"{np.nanmedian(a):5.2f}({np.nanpercentile(a, 90):4.2f})/{np.nanmedian(b):5.2f}"
                         f"({np.nanpercentile(b, 90):4.2f})")  # fmt: skip
        label = f"{dg:g}mm" if dg != "all" else "all"
        print(f"{label:>5} {len(sel):>4}  " + "  ".join(f"{c:>22}" for c in cells))
    signed = np.median([r[2]["volume"] for r in rows])
    print(f"dicompyler-core median signed volume error: {signed:+.2f} %")
    better = all(
        np.nanmedian(np.abs([r[1][k] for r in rows])) < np.nanmedian(np.abs([r[2][k] for r in rows])) for k in STATS
    )
    print(f"ours better on every statistic (median |error|): {better}")


# ------------------------------------------------------------------------------------------ speed


def thorax_case(work: Path) -> tuple[Path, Path, list[str]]:
    try:
        from sbrtstandards.phantom import write_case
    except ImportError:
        return synthetic_thorax(work)
    folder = work / "thorax"
    write_case("lung", folder, phases=2)
    rs, rd = folder / "planning" / "RS_planning.dcm", folder / "planning" / "RD.dcm"
    names = read_rtstruct(rs).names
    chosen = [n for n in THORAX_ROIS if n in names]
    chosen += [n for n in names if n not in chosen][: 15 - len(chosen)]
    return rs, rd, chosen[:15]


def synthetic_thorax(work: Path) -> tuple[Path, Path, list[str]]:
    """15 spheres and cylinders of 1-16000 cc in a Gaussian dose (fallback without the phantom)."""
    study = StudyInfo()
    solids = [an.Solid("cylinder", (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), 160.0, 200.0)]
    solids += [an.Solid("sphere", (60.0 * np.cos(t), 60.0 * np.sin(t), 0.0), (0, 0, 1.0), 8.0 + 3.0 * k)
               for k, t in enumerate(np.linspace(0, 2 * np.pi, 14, endpoint=False))]  # fmt: skip
    zs = tuple(np.arange(-99.0, 100.0, 3.0))
    ref = SeriesReference(study, new_uid(), CT_IMAGE_STORAGE, tuple(new_uid() for _ in zs), zs)
    rois = []
    for n, s in enumerate(solids, start=1):
        planes = s.planes(3.0, phase_mm=0.0, max_edge_mm=1.0)
        contours = [
            Contour(np.column_stack([p, np.full(len(p), z)]), "CLOSED_PLANAR") for z in planes for p in planes[z]
        ]
        rois.append(Roi(n, f"S{n}", (255, 0, 0), "ORGAN", contours))
    rs = write_rtstruct(work / "RS_thorax.dcm", rois, reference=ref)
    origin = np.array([-170.0, -170.0, -110.0])
    size = (171, 171, 111)
    xs, ys, zz = (origin[a] + 2.0 * np.arange(size[a]) for a in range(3))
    z3, y3, x3 = np.meshgrid(zz, ys, xs, indexing="ij")
    dose = 60.0 * np.exp(-((x3 - 40) ** 2 + y3**2 + z3**2) / (2 * 25.0**2)) + 1.0
    grid = Grid(tuple(origin), (2.0, 2.0, 2.0), size, frame_of_reference_uid=study.frame_of_reference_uid)
    rd = write_rtdose(work / "RD_thorax.dcm", dose, grid, study=study)
    return rs, rd, [r.name for r in rois]


def speed(py: Path, work: Path, repeats: int) -> None:
    rs, rd, names = thorax_case(work)
    numbers = {r.name: r.number for r in read_rtstruct(rs).rois}
    load_before = os.getloadavg()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ss = read_rtstruct(rs)
        t1 = time.perf_counter()
        dose = read_rtdose(rd)
        t2 = time.perf_counter()
        dvhs = structure_set_dvhs(ss, dose, names).dvhs
        t3 = time.perf_counter()
        runs.append((t3 - t0, t1 - t0, t2 - t1, t3 - t2))
    peer = run_peer(py, {"cases": [], "repeats": repeats, "timing_rs": str(rs), "timing_rd": str(rd),
                         "timing_rois": [numbers[n] for n in names]})  # fmt: skip
    t_ours, t_rs, t_rd, t_dvh = min(runs)
    t_peer = min(peer["timing"])
    samples = sum(d.n_samples for d in dvhs)
    print(f"\nSpeed, {len(names)}-ROI thoracic case ({', '.join(names)}), best of {repeats}")
    print(f"  SBRT Standards : {t_ours:6.3f} s  (read RTSTRUCT {t_rs:.3f} + RTDOSE {t_rd:.3f}, "
          f"{len(names)} DVHs {t_dvh:.3f}; {samples} samples)")  # fmt: skip
    print(f"  dicompyler-core: {t_peer:6.3f} s  ({len(names)} x get_dvh)")
    print(f"  ratio          : {t_peer / t_ours:6.1f} x faster")
    print(f"  load average (1, 5, 15 min): before {_load(load_before)}, after {_load(os.getloadavg())}")


def _load(values: tuple[float, ...]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 mm contours and dose grid only")
    parser.add_argument("--peer-python", help="interpreter of an existing dicompyler-core environment")
    parser.add_argument("--keep", help="write the DICOM files to this folder and keep them")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--repeats", type=int, default=5, help="speed runs of each engine (best is kept)")
    args = parser.parse_args()
    py = peer_python(args.peer_python)
    with tempfile.TemporaryDirectory(prefix="sbrt-dvh-bench-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_accuracy:
            accuracy(py, work, args.quick)
        if not args.skip_speed:
            speed(py, work, max(1, args.repeats))


if __name__ == "__main__":
    main()
