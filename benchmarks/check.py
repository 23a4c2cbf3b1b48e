"""Plan-check speed: ``check_files`` (the ``sbrt check`` core) on the synthetic thoracic case, by stage.

Usage:  .venv/bin/python benchmarks/check.py [--repeats N] [--case DIR] [--protocol ID] [--keep DIR]

The case is the synthetic lung case of ``sbrtstandards.phantom`` (``sbrt phantom --site lung
--phases 2``: about 25 ROIs with a body contour, a 2 mm RTDOSE, an RTPLAN with the
prescription), or ``--case DIR`` holding ``planning/RS_planning.dcm``, ``planning/RD.dcm`` and
``planning/RP.dcm``. Each run reads the three files and does the whole check (DVH of every
structure that plays a role, every rule of the protocol, the plan metrics: CI, GI, R50,
D2cm, HI, hot spots), as ``sbrt check`` does before writing its outputs. The stages are timed
by wrapping the functions that ``check_files`` calls (the code itself is not changed); the
table gives the run with the best total of ``--repeats`` runs in one process (interpreter
start-up and imports excluded), with the median total next to it, and the load average before
and after: the machine is shared, and a busy neighbour shows there first. Target (issue 7):
the whole check of a thoracic case in under 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TARGET_S = 1.0

# (label, module, attribute, parent label or None): what is timed, in the order it is printed
STAGES = [
    ("read RTSTRUCT", "sbrtstandards.dicom.rtstruct", "read_rtstruct", None),
    ("read RTDOSE", "sbrtstandards.dicom.rtdose", "read_rtdose", None),
    ("read RTPLAN", "sbrtstandards.dicom.rtplan", "read_rtplan", None),
    ("contours -> planes", "sbrtstandards.dvh", "roi_planes", None),
    ("DVHs", "sbrtstandards.check", "compute_dvhs", None),
    ("plan metrics", "sbrtstandards.check", "_plan_metrics", None),
    ("  structure masks on the dose grid", "sbrtstandards.check", "_DoseGeometry.mask", "plan metrics"),
    ("  hottest / coldest voxels", "sbrtstandards.check", "_DoseGeometry._extreme", "plan metrics"),
    ("  isodose volumes (CI, GI, R50)", "sbrtstandards.check", "_DoseGeometry.isodose_volumes_cc", "plan metrics"),
    ("  D2cm: PTV grown by 20 mm", "sbrtstandards.margins", "grow", "plan metrics"),
    ("rules", "sbrtstandards.check", "_evaluate_rule", None),
]


@contextmanager
def timed_stages(totals: dict[str, float]) -> Iterator[None]:
    """Wrap each stage's function so that its time adds up in ``totals`` (outermost calls only)."""
    import importlib

    saved: list[tuple[Any, str, Any]] = []
    for label, module_name, attribute, _ in STAGES:
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name, None)
        if original is None:  # another version of the code: that stage is not reported
            continue
        saved.append((owner, name, original))
        setattr(owner, name, _timer(label, original, totals))
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def _timer(label: str, fn: Callable[..., Any], totals: dict[str, float]) -> Callable[..., Any]:
    depth = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        depth[0] += 1
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - start

    return wrapper


def thorax_case(work: Path) -> Path:
    from sbrtstandards.phantom import write_case

    folder = work / "thorax"
    write_case("lung", folder, phases=2)
    return folder


def run_once(case: Path, protocol: str) -> tuple[float, dict[str, float], Any]:
    from sbrtstandards.check import check_files

    planning = case / "planning"
    totals: dict[str, float] = {}
    with timed_stages(totals):
        start = time.perf_counter()
        result, _ = check_files(
            str(planning / "RS_planning.dcm"), str(planning / "RD.dcm"), rtplan=str(planning / "RP.dcm"),
            protocol_id=protocol,
        )  # fmt: skip
        total = time.perf_counter() - start
    return total, totals, result


def report(runs: list[tuple[float, dict[str, float], Any]], load_before: tuple[float, ...]) -> None:
    total, stages, result = min(runs, key=lambda r: r[0])
    median = statistics.median(r[0] for r in runs)
    counts = result.counts
    print(f"\nPlan check of the synthetic thoracic case, protocol {result.protocol.id} "
          f"({result.rx_gy:g} Gy in {result.fractions}): {len(result.dvhs)} DVHs, "
          f"{len(result.constraints)} constraints ({', '.join(f'{v} {k}' for k, v in counts.items())})")  # fmt: skip
    print(f"best of {len(runs)} runs (seconds):")
    top_level = 0.0
    for label, _, _, parent in STAGES:
        t = stages.get(label, 0.0)
        if parent is None:
            top_level += t
        print(f"  {label:<36} {t:7.3f}  {100.0 * t / total:5.1f} %")
    other = total - top_level
    print(f"  {'other (matching, protocol, checks)':<36} {other:7.3f}  {100.0 * other / total:5.1f} %")
    print(f"  {'total':<36} {total:7.3f}  (median {median:.3f}; target < {TARGET_S:g} s: "
          f"{'met' if total < TARGET_S else 'NOT met'})")  # fmt: skip
    print(f"load average (1, 5, 15 min): before {_load(load_before)}, after {_load(os.getloadavg())}")


def _load(values: tuple[float, ...]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs in one process (default 5)")
    parser.add_argument("--case", help="an existing case folder (with planning/RS_planning.dcm, RD.dcm, RP.dcm)")
    parser.add_argument("--protocol", default="cn-lung-sbrt")
    parser.add_argument("--keep", help="write the synthetic case to this folder and keep it")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sbrt-check-bench-") as tmp:
        if args.case:
            case = Path(args.case)
        else:
            work = Path(args.keep) if args.keep else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            print(f"writing the synthetic thoracic case to {work} ...", file=sys.stderr)
            case = thorax_case(work)
        runs = [run_once(case, args.protocol) for _ in range(max(1, args.repeats))]
    report(runs, load_before)


if __name__ == "__main__":
    main()
