"""3D gamma: SBRT Standards against pymedphys 0.41 on the same dose grids (pass rate and speed).

Usage:  .venv/bin/python benchmarks/gamma.py [--repeats N] [--store] [--peer-python PATH]

* The dose pairs are the closed-form cases of ``Testing/gamma_cases.py`` (no random numbers):
  ``bench_100`` is a 100^3 pair of 2 mm voxels (an SBRT-like target, oblique beam lobes and a
  low-dose bath; the evaluated dose shifted by (1.0, -1.2, 0.8) mm, scaled by 1.02 and rippled
  by 1.5 %), compared at 2 %/2 mm global with a 10 % low-dose threshold.
* Both tools run as separate processes on the same ``.npy`` grids; the time is the whole
  process (interpreter start, imports, loading the grids, gamma, pass rate), best of
  ``--repeats`` runs. pymedphys runs with its defaults (``interp_fraction=10``, no
  ``max_gamma``), its numba interpolation compiled and cached by a first, untimed run.
* ``--store`` also runs pymedphys on the small test cases, at its default ``interp_fraction=10``
  and at ``interp_fraction=40`` (converged), and writes the numbers with their provenance to
  ``Testing/data/programme_qa/pymedphys_gamma.json``, which ``Testing/test_gamma.py`` compares
  against.

pymedphys runs in its own virtual environment (``benchmarks/.peers/pymedphys``, created on first
use with pip: PyPI access needed once), so it is a benchmark-time peer, not a dependency.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Testing"))

import gamma_cases as gc  # noqa: E402

PEER_DIR = ROOT / "benchmarks" / ".peers" / "pymedphys"
PEER_REQUIREMENTS = ["pymedphys==0.41.0", "numba", "scipy"]
STORE = ROOT / "Testing" / "data" / "programme_qa" / "pymedphys_gamma.json"
TEST_CASES = ("shift_scale_2_2", "shift_scale_1_1", "ripple_local_3_2", "other_grid_2_2")

PEER_SCRIPT = r"""
import json, sys
import numpy as np
import pymedphys
job = json.loads(sys.argv[1])
ref = np.load(job["ref"]); ev = np.load(job["ev"])
axes = json.load(open(job["axes"]))
g = pymedphys.gamma(
    tuple(np.array(a) for a in axes["ref"]), ref, tuple(np.array(a) for a in axes["ev"]), ev,
    job["dose_percent"], job["distance_mm"], lower_percent_dose_cutoff=job["cutoff_percent"],
    local_gamma=job["local"], interp_fraction=job["interp_fraction"])
v = g[~np.isnan(g)]
print(json.dumps({"pass_rate_percent": 100.0 * float(np.sum(v <= 1)) / v.size, "points_evaluated": int(v.size),
                  "gamma_max": float(v.max()), "gamma_mean": float(v.mean()),
                  "pymedphys": pymedphys.__version__, "numpy": np.__version__}))
"""

OURS_SCRIPT = r"""
import json, sys
import numpy as np
from sbrtstandards.gamma import GammaCriteria, gamma_index
from sbrtstandards.grid import Grid
job = json.loads(sys.argv[1])
ref = np.load(job["ref"]); ev = np.load(job["ev"])
axes = json.load(open(job["axes"]))
def grid(zyx):
    z, y, x = (np.array(a) for a in zyx)
    return Grid((x[0], y[0], z[0]), (x[1] - x[0], y[1] - y[0], z[1] - z[0]), (len(x), len(y), len(z)))
crit = GammaCriteria(job["dose_percent"], job["distance_mm"], job["cutoff_percent"], job["local"])
g, _ = gamma_index(ref, grid(axes["ref"]), ev, grid(axes["ev"]), crit)
v = g[np.isfinite(g)]
print(json.dumps({"pass_rate_percent": 100.0 * float(np.sum(v <= 1)) / v.size, "points_evaluated": int(v.size),
                  "gamma_max": float(v.max()), "gamma_mean": float(v.mean())}))
"""


def peer_python(explicit: str | None) -> Path:
    """The peer venv's interpreter, creating the venv on first use."""
    if explicit:
        return Path(explicit)
    py = PEER_DIR / "bin" / "python"
    if not py.exists():
        print(f"creating {PEER_DIR} (pip install {' '.join(PEER_REQUIREMENTS)}) ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(PEER_DIR)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEER_REQUIREMENTS], check=True)
    return py


def write_case(case: gc.GammaCase, folder: Path) -> dict[str, object]:
    ref, rg, ev, eg = gc.case_arrays(case)
    np.save(folder / f"{case.name}_ref.npy", ref)
    np.save(folder / f"{case.name}_ev.npy", ev)
    axes = {"ref": [a.tolist() for a in gc.axes_mm(rg)], "ev": [a.tolist() for a in gc.axes_mm(eg)]}
    (folder / f"{case.name}_axes.json").write_text(json.dumps(axes))
    return {
        "ref": str(folder / f"{case.name}_ref.npy"),
        "ev": str(folder / f"{case.name}_ev.npy"),
        "axes": str(folder / f"{case.name}_axes.json"),
        "dose_percent": case.dose_percent,
        "distance_mm": case.distance_mm,
        "cutoff_percent": case.cutoff_percent,
        "local": case.local,
    }


def run(python: Path, script: str, job: dict[str, object]) -> tuple[dict[str, float], float]:
    """(result, wall seconds) of one whole process."""
    t0 = time.perf_counter()
    done = subprocess.run([str(python), "-c", script, json.dumps(job)], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{python} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def best_of(python: Path, script: str, job: dict[str, object], repeats: int) -> tuple[dict[str, float], float]:
    results = [run(python, script, job) for _ in range(repeats)]
    return results[0][0], min(w for _, w in results)


def benchmark(peer: Path, folder: Path, repeats: int) -> None:
    case = gc.CASES["bench_100"]
    job = write_case(case, folder)
    n_above = int(np.count_nonzero(np.load(job["ref"]) >= case.cutoff_percent / 100 * np.load(job["ref"]).max()))
    print(f"case bench_100: {case.n_ref}^3 voxels of {case.spacing_ref_mm:g} mm, {n_above} above the 10 % cutoff; "
          "2 %/2 mm global")
    run(peer, PEER_SCRIPT, {**job, "interp_fraction": 10})  # compile and cache numba's kernels (untimed)
    theirs, t_theirs = best_of(peer, PEER_SCRIPT, {**job, "interp_fraction": 10}, repeats)
    ours, t_ours = best_of(Path(sys.executable), OURS_SCRIPT, job, repeats)
    print(f"{'':24}{'pass rate %':>12}{'gamma max':>11}{'gamma mean':>12}{'points':>9}{'whole process s':>17}")
    for label, r, t in (("SBRT Standards", ours, t_ours), (f"pymedphys {theirs['pymedphys']}", theirs, t_theirs)):
        print(f"{label:<24}{r['pass_rate_percent']:>12.3f}{r['gamma_max']:>11.3f}{r['gamma_mean']:>12.4f}"
              f"{r['points_evaluated']:>9}{t:>17.2f}")
    diff = ours["pass_rate_percent"] - theirs["pass_rate_percent"]
    print(f"pass-rate difference {diff:+.3f} points (requirement: within 0.5); "
          f"speed ratio {t_theirs / t_ours:.1f}x (requirement: at least 10x)")


def store(peer: Path, folder: Path) -> None:
    """pymedphys numbers for the small test cases, with provenance, for Testing/test_gamma.py."""
    out: dict[str, object] = {
        "provenance": {
            "produced_by": "benchmarks/gamma.py --store",
            "generator": "Testing/gamma_cases.py case_arrays(CASES[name]) (closed-form doses, no random numbers)",
            "tool": "pymedphys.gamma (shell search), default options except those listed per result",
            "date": dt.date.today().isoformat(),
        },
        "cases": {},
    }
    for name in TEST_CASES:
        case = gc.CASES[name]
        job = write_case(case, folder)
        results = {}
        for frac in (10, 40):
            r, _ = run(peer, PEER_SCRIPT, {**job, "interp_fraction": frac})
            out["provenance"]["pymedphys"] = r.pop("pymedphys")  # type: ignore[index]
            out["provenance"]["numpy"] = r.pop("numpy")  # type: ignore[index]
            results[f"interp_fraction_{frac}"] = r
            print(f"{name} interp_fraction {frac}: {r}", file=sys.stderr)
        out["cases"][name] = {  # type: ignore[index]
            "criteria": {"dose_percent": case.dose_percent, "distance_mm": case.distance_mm,
                         "cutoff_percent": case.cutoff_percent, "local": case.local},
            "results": results,
        }
    STORE.parent.mkdir(parents=True, exist_ok=True)
    STORE.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {STORE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", action="store_true", help="also store pymedphys results for the tests")
    parser.add_argument("--peer-python", default=None, help="an interpreter that has pymedphys (and numba)")
    args = parser.parse_args()
    peer = peer_python(args.peer_python)
    with tempfile.TemporaryDirectory() as tmp:
        benchmark(peer, Path(tmp), max(1, args.repeats))
        if args.store:
            store(peer, Path(tmp))


if __name__ == "__main__":
    main()
