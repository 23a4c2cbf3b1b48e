"""``sbrt batch`` at scale: throughput, memory per worker, and a 1000-case run killed and resumed.

1. Throughput on synthetic lung cases (``sbrt phantom``, its planning RTSTRUCT, RTDOSE and RTPLAN;
   half of the cases with the dose scaled by 1.2 so they fail constraints): the same cases on a
   local Dask cluster of 2 worker processes and in one process (``--workers 0``). Reported: cases
   per minute (the time spent on the cases, including the cluster's start), the whole run's wall
   time, and the largest peak RSS of a worker process (``ru_maxrss``: Dask's own ~100 MB included).
2. A 1000-case run: one small synthetic case (structures drawn as analytic shapes, a 4 mm dose
   grid) linked into 1000 case folders (every 100th with a damaged ``RD.dcm``, so 10 cases fail),
   run as ``sbrt batch`` in a subprocess, SIGKILLed (the whole process group: client, nanny and
   workers) once a third of the case files exist, then finished with ``--resume``. Checked: every
   case exactly once in results.csv, the same rows per case as an uninterrupted single-case run,
   no repeated row, the 10 failed cases retried and still one error row each.

Run: ``.venv/bin/python benchmarks/batch.py [--cases 1000] [--phantom-cases 40] [--workers 2] [--only PART]``
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))

from batch_process import kill_batch_after  # noqa: E402

from sbrtstandards.batch import BatchOptions, read_rows, run_batch  # noqa: E402

PROTOCOL = "cn-lung-sbrt"


# ----------------------------------------------------------------------------- part 1: throughput


def phantom_root(work: Path, n: int) -> Path:
    from sbrtstandards.phantom import write_case

    truth = write_case("lung", work / "phantom", phases=2, seed=11)
    plan = Path(truth["files"]["planning_rtstruct"]).parent
    root = work / "phantom_cases"
    hot = work / "hot"
    hot.mkdir()
    ds = pydicom.dcmread(plan / "RD.dcm")
    ds.DoseGridScaling = float(ds.DoseGridScaling) * 1.2
    ds.save_as(hot / "RD.dcm")
    for i in range(n):
        case = root / f"case_{i:03d}"
        case.mkdir(parents=True)
        for name in ("RS_planning.dcm", "RP.dcm"):
            os.symlink(plan / name, case / name)
        os.symlink((hot if i % 2 else plan) / "RD.dcm", case / "RD.dcm")
    return root


def throughput(work: Path, n: int, workers: int) -> None:
    root = phantom_root(work, n)
    print(f"\n1. Throughput: {n} synthetic lung cases (phantom, 25 structures, 2 mm dose grid), {PROTOCOL}")
    for label, w in ((f"local Dask cluster, {workers} worker processes", workers), ("one process (--workers 0)", 0)):
        out = work / f"out_{w}"
        run = run_batch(root, out, BatchOptions(PROTOCOL), workers=w)
        per_min = 60.0 * run.cases / run.cases_seconds
        print(f"   {label:<44} {per_min:6.1f} cases/min  (cases {run.cases_seconds:5.1f} s, whole run "
              f"{run.seconds:5.1f} s, peak worker RSS {run.peak_rss_mb:.0f} MB, {run.failed} failed)")


# ----------------------------------------------------------------------------- part 2: 1000 cases, kill, resume


def _circle(cx: float, cy: float, rx: float, ry: float | None = None) -> np.ndarray:
    ry = rx if ry is None else ry
    t = np.linspace(0.0, 2 * math.pi, max(24, int(2 * math.pi * max(rx, ry) / 1.5)), endpoint=False)
    return np.column_stack([cx + rx * np.cos(t), cy + ry * np.sin(t)])


def small_case(folder: Path) -> None:
    """RS (body, lungs, cord, oesophagus, heart, ITV, PTV), RP (54 Gy / 3), RD on a 4 mm grid."""
    from sbrtstandards.dicom.common import CT_IMAGE_STORAGE, SeriesReference, StudyInfo, new_uid
    from sbrtstandards.dicom.rtdose import write_rtdose
    from sbrtstandards.dicom.rtplan import write_rtplan
    from sbrtstandards.dicom.rtstruct import Contour, Roi, write_rtstruct
    from sbrtstandards.grid import Grid

    study = StudyInfo()
    zs = [float(z) for z in np.arange(-60.0, 60.1, 3.0)]
    itv_c, itv_r, ptv_r = (-70.0, 0.0, 0.0), 12.0, 17.0

    def stack(f) -> list[Contour]:  # type: ignore[no-untyped-def]
        out = []
        for z in zs:
            for poly in f(z):
                out.append(Contour(np.column_stack([poly, np.full(len(poly), z)]), "CLOSED_PLANAR"))
        return out

    def ball(c: tuple[float, float, float], r: float):  # type: ignore[no-untyped-def]
        return lambda z: [_circle(c[0], c[1], math.sqrt(r * r - (z - c[2]) ** 2))] if abs(z - c[2]) < r - 0.01 else []

    def lung(cx: float):  # type: ignore[no-untyped-def]
        return lambda z: [_circle(cx, 0.0, 55 * math.sqrt(1 - (z / 75) ** 2), 70 * math.sqrt(1 - (z / 75) ** 2))]

    rois = [
        Roi(1, "Body", None, "EXTERNAL", stack(lambda z: [_circle(0.0, 0.0, 160.0, 110.0)])),
        Roi(2, "Lung_R", None, "ORGAN", stack(lung(-75.0))),
        Roi(3, "Lung_L", None, "ORGAN", stack(lung(75.0))),
        Roi(4, "SpinalCord", None, "ORGAN", stack(lambda z: [_circle(0.0, 80.0, 6.0)])),
        Roi(5, "Esophagus", None, "ORGAN", stack(lambda z: [_circle(0.0, 55.0, 8.0)])),
        Roi(6, "Heart", None, "ORGAN", stack(ball((10.0, -20.0, -45.0), 45.0))),
        Roi(7, "ITV", None, "CTV", stack(ball(itv_c, itv_r))),
        Roi(8, "PTV", None, "PTV", stack(ball(itv_c, ptv_r))),
    ]
    ref = SeriesReference(study, new_uid(), CT_IMAGE_STORAGE, tuple(new_uid() for _ in zs), tuple(zs))
    rs = write_rtstruct(folder / "RS.dcm", rois, reference=ref, label="small")
    rs_uid = str(pydicom.dcmread(rs, stop_before_pixels=True).SOPInstanceUID)
    rp = write_rtplan(folder / "RP.dcm", study=study, rx_gy=54.0, fractions=3, target_roi_number=8,
                      referenced_structure_set_uid=rs_uid, target_name="PTV", isocenter_mm=itv_c)
    rp_uid = str(pydicom.dcmread(rp, stop_before_pixels=True).SOPInstanceUID)
    grid = Grid((-170.0, -120.0, -64.0), (4.0, 4.0, 4.0), (86, 61, 33),
                frame_of_reference_uid=study.frame_of_reference_uid)
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    pts = grid.index_to_lps(np.stack([ii, jj, kk], axis=-1).reshape(-1, 3))
    r = np.linalg.norm(pts - np.asarray(itv_c), axis=1)
    dose = np.where(r <= ptv_r, 54.0 * (1.25 - 0.25 * (r / ptv_r) ** 2), 54.0 * np.exp(-(r - ptv_r) / 12.0))
    write_rtdose(folder / "RD.dcm", dose.reshape(grid.shape), grid, study=study, referenced_plan_uid=rp_uid)


def thousand(work: Path, n: int, workers: int) -> None:
    template = work / "template"
    template.mkdir()
    small_case(template)
    junk = work / "junk.dcm"
    junk.write_text("not DICOM\n")
    root = work / "many"
    for i in range(n):
        case = root / f"group_{i // 100:02d}" / f"case_{i:04d}"
        case.mkdir(parents=True)
        for name in ("RS.dcm", "RP.dcm"):
            os.symlink(template / name, case / name)
        os.symlink(junk if i % 100 == 99 else template / "RD.dcm", case / "RD.dcm")
    print(f"\n2. {n} small synthetic cases (8 structures, 4 mm dose grid; {n // 100} with a damaged RD.dcm), "
          f"{workers} workers")
    # reference rows: the template case alone, in process
    one = run_batch(template, work / "one", BatchOptions(PROTOCOL), workers=0)
    rows_per_case = one.rows
    out = work / "many_out"
    batch_args = [str(root), "--protocol", PROTOCOL, "--out", str(out), "--workers", str(workers), "--quiet"]
    t0 = time.perf_counter()
    kill_batch_after(batch_args, out, work, cases=n // 3, deadline_s=math.inf, poll_s=0.2)
    t_kill = time.perf_counter() - t0
    done = len(list((out / "cases").glob("*.csv")))
    print(f"   killed (SIGKILL to the process group) after {t_kill:.1f} s with {done} case files written; "
          f"results.csv present: {(out / 'results.csv').exists()}")
    t1 = time.perf_counter()
    result = subprocess.run([sys.executable, str(work / "launch_batch.py"), "batch", *batch_args, "--resume"],
                            capture_output=True, text=True)
    t_resume = time.perf_counter() - t1
    if result.returncode != 0:
        raise SystemExit(f"resume failed: {result.stderr}")
    rows = read_rows(out / "results.csv")
    per_case = collections.Counter(r["case"] for r in rows)
    errors = [r for r in rows if r["kind"] == "error"]
    keys = [tuple(r.values()) for r in rows]
    ok_cases = [c for c in per_case if not c.endswith(("99",))]
    wrong = [c for c in ok_cases if per_case[c] != rows_per_case]
    repeated = len(keys) - len(set(keys))
    print(f"   resumed: {t_resume:.1f} s; results.csv: {len(rows)} rows, {len(per_case)} cases (expected {n}), "
          f"{len(errors)} error rows (expected {n // 100}), repeated rows: {repeated}, "
          f"cases with a wrong row count: {len(wrong)} ({rows_per_case} rows each)")
    total = t_kill + t_resume
    print(f"   {n} cases in {total:.0f} s of wall time over both runs: {60.0 * n / total:.0f} cases/min")
    assert len(per_case) == n and len(keys) == len(set(keys)) and not wrong and len(errors) == n // 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--phantom-cases", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", choices=("throughput", "thousand"), default=None, help="run one part")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sbrt-batch-bench-"))
    print(f"sbrt batch benchmark ({os.cpu_count()} CPUs), working folder {work}")
    try:
        if opts.only in (None, "throughput"):
            throughput(work, opts.phantom_cases, opts.workers)
        if opts.only in (None, "thousand"):
            thousand(work, opts.cases, opts.workers)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
