"""``sbrt batch`` on a DICOM archive: DICOMweb and DIMSE C-GET against a folder run and a naive script.

The archive is a private Orthanc 1.10 with its DICOMweb plugin (``Testing/orthanc_server.py``: HTTP
basic authentication, one known calling AE title) on this machine. It holds ``--studies`` studies
(20), each a copy of one synthetic lung case (``sbrt phantom``, seed 5) under new UIDs and its own
patient (the UID map of ``Testing/archive_cases.py``): the planning CT series (140 slices) AND its
RTSTRUCT, RTDOSE and RTPLAN, like a real planning study; every fifth study has its dose scaled by
1.2 (it fails constraints). Each run is a command in its own process (interpreter start-up and
imports included, as a user meets them); ``sbrt batch`` with protocol ``cn-lung-sbrt``:

1. folder: the same RS/RD/RP as folders, the compute-only reference (``--workers 2``, and ``0``);
2. DICOMweb and DIMSE C-GET (fresh out dirs and caches): only the RT objects are fetched and each
   case goes to the workers as soon as its objects are cached (fetch and compute overlap);
3. the DICOMweb run again: ``--resume`` on its finished out dir, and a fresh out dir sharing its
   cache (``--cache``, i.e. ``ArchiveOptions(cache_dir=...)``): nothing may be fetched;
4. naive baseline, what a script does without this tool (:func:`naive_fetch`, its own process):
   QIDO-RS for the studies, then dicomweb-client's ``retrieve_study`` for each (the whole study,
   CT included), written to one folder per study; then ``sbrt batch`` on that folder tree;
5. the DICOMweb run with ``--workers 0``: fetch, then compute, case after case (no overlap).

Printed per run: wall time, cases per minute, MB fetched (DICOM Part 10 bytes received: the cache
files of ``sbrt batch``, the files the naive script wrote), instances fetched / taken from the
cache, CPU seconds of the client process, of its Dask workers (its waited-for children) and of
Orthanc, and the client's peak RSS (VmHWM). Then the ratios: naive / ours, DIMSE / DICOMweb, the
cached runs / DICOMweb, and how much of the fetching the workers hide. Every ``results.csv`` is
checked against the folder run's (case keys mapped to the hashed study keys); the DICOMweb and
DIMSE files must be byte-identical. A check that fails makes the exit status 1.

The archive is local: no network latency or bandwidth limit, and the archive takes CPU from the
same 2 cores as the workers, so overlap can hide little here; on a hospital network the bytes
fetched (RT only against whole studies) weigh far more than these times show: the transfer time at
100 Mbit/s is printed, computed from the bytes, not measured. On a shared machine, ``--repeats 3``
prints the fastest of three rounds for each run (~3.5 min a round at 20 studies on 2 cores).

Run: ``.venv/bin/python benchmarks/archive.py [--studies 20] [--workers 2] [--repeats 1] [--keep]``
(needs ``apt-get install orthanc orthanc-dicomweb``; Orthanc and the temporary folder are removed).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Testing"))

from archive_cases import UidMap, reuid  # noqa: E402
from orthanc_server import MISSING, OrthancServer  # noqa: E402

from sbrtstandards.archive.address import ENV_PASSWORD, ENV_USER  # noqa: E402
from sbrtstandards.archive.cases import study_key  # noqa: E402
from sbrtstandards.batch import read_rows  # noqa: E402

PROTOCOL = "cn-lung-sbrt"
SCU_AET = "SBRTQA"
SEED = 5
HOT_EVERY = 5  # every fifth study: dose x DOSE_SCALE_HOT
DOSE_SCALE_HOT = 1.2
RT_FILES = ("RS_planning.dcm", "RD.dcm", "RP.dcm")
MB = 1e6
LINK_MBIT_S = 100.0  # for the computed transfer time of the bytes fetched


def process_usage() -> dict[str, float]:
    """Peak RSS (kB) and CPU seconds of this process and of its waited-for children (Dask's nanny and
    workers). The RSS is VmHWM: ru_maxrss would carry the parent's peak through fork and exec."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    rss_kb = own.ru_maxrss  # kB on Linux
    try:
        with open("/proc/self/status") as fh:
            rss_kb = int(next(line for line in fh if line.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration, ValueError):
        pass
    return {"rss_kb": rss_kb, "cpu_s": own.ru_utime + own.ru_stime,
            "children_cpu_s": children.ru_utime + children.ru_stime}


def naive_fetch(url: str, dest: str) -> None:
    """What a script does without this tool: find the studies, retrieve each WHOLE (CT included) with
    dicomweb-client and write its instances to one folder per study, named by its Study Instance UID."""
    import json
    import os
    from pathlib import Path

    import requests
    from dicomweb_client.api import DICOMwebClient

    from sbrtstandards.dicom.common import save_dataset  # pydicom's save_as, for pydicom 2.4 and 3

    session = requests.Session()
    session.auth = (os.environ["SBRT_ARCHIVE_USER"], os.environ["SBRT_ARCHIVE_PASSWORD"])  # run standalone
    client = DICOMwebClient(url, session=session)
    files = written = 0
    for study in client.search_for_studies(get_remaining=True):
        study_uid = study["0020000D"]["Value"][0]
        folder = Path(dest) / study_uid
        folder.mkdir(parents=True)
        for ds in client.retrieve_study(study_uid):
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            save_dataset(ds, path)
            files += 1
            written += path.stat().st_size
    print(json.dumps({"files": files, "bytes": written}))


def launcher(call: str) -> str:
    """Python source for ``python -c``: run ``call`` and, at exit, write :func:`process_usage` (JSON)
    to the file named by the first argument (taken out of ``sys.argv``)."""
    return "\n".join([
        "from __future__ import annotations",
        "import atexit, json, sys",
        inspect.getsource(process_usage),
        "def _record(path):",
        "    with open(path, 'w') as fh:",
        "        json.dump(process_usage(), fh)",
        "atexit.register(_record, sys.argv.pop(1))",
        call,
    ])


SBRT = launcher("from sbrtstandards.cli.main import main\nmain(sys.argv[1:])\n")
NAIVE = launcher(inspect.getsource(naive_fetch) + "naive_fetch(sys.argv[1], sys.argv[2])\n")


@dataclass(frozen=True)
class Study:
    folder: str  # its RS/RD/RP folder name in the folder tree
    study_uid: str


@dataclass
class Run:
    """One measured run (a row of the table)."""

    label: str
    workers: int | None
    seconds: float
    cases: int
    out: Path | None = None
    mb_fetched: float | None = None
    fetched: int | None = None
    from_cache: int | None = None
    peak_rss_mb: float | None = None
    client_cpu_s: float | None = None
    workers_cpu_s: float | None = None
    archive_cpu_s: float | None = None

    @property
    def per_min(self) -> float:
        return 60.0 * self.cases / self.seconds if self.seconds > 0 else float("nan")


# ----------------------------------------------------------------------------- the studies


def build_studies(work: Path, n: int) -> tuple[list[Study], list[Path]]:
    """``n`` re-UID'd copies of the phantom's planning study: RT files under ``work/folder/<case>``,
    CT under ``work/ct/<case>``. Returns the studies and every file to upload."""
    from sbrtstandards.dicom.common import read_dataset, save_dataset
    from sbrtstandards.phantom import write_case

    truth = write_case("lung", work / "phantom", phases=2, seed=SEED)
    plan = Path(truth["files"]["planning_rtstruct"]).parent
    ct_files = sorted((plan / "CT").glob("*.dcm"))
    studies, uploads = [], []
    for i in range(n):
        name = f"case_{i:03d}"
        uid_map = UidMap(SEED, f"archive-bench-{name}")
        hot = i % HOT_EVERY == HOT_EVERY - 1
        rt_dir, ct_dir = work / "folder" / name, work / "ct" / name
        rt_dir.mkdir(parents=True)
        ct_dir.mkdir(parents=True)
        targets = [(plan / f, rt_dir / f) for f in RT_FILES] + [(p, ct_dir / p.name) for p in ct_files]
        study_uid = ""
        for source, target in targets:
            ds = read_dataset(source)
            if hot and source.name == "RD.dcm":
                ds.DoseGridScaling = float(ds.DoseGridScaling) * DOSE_SCALE_HOT
            reuid(ds, uid_map)
            ds.PatientID = f"BENCH-{i:04d}"
            ds.PatientName = f"Bench^Patient{i:03d}"
            ds.StudyDate = f"2025{1 + i % 12:02d}{1 + i % 28:02d}"
            ds.StudyDescription = "SBRT lung"
            ds.StudyID = str(i + 1)
            ds.AccessionNumber = f"BENCH{i:04d}"
            save_dataset(ds, target)
            study_uid = str(ds.StudyInstanceUID)
            uploads.append(target)
        studies.append(Study(name, study_uid))
    shutil.rmtree(work / "phantom")
    return studies, uploads


def upload(server: OrthancServer, paths: list[Path]) -> None:
    """POST every file (two threads: Orthanc stores in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    halves = [paths[0::2], paths[1::2]]
    with ThreadPoolExecutor(2) as pool:
        stored = sum(pool.map(server.upload, halves))
    if stored != len(paths) or server.instance_count() != len(paths):
        raise SystemExit(f"Orthanc stored {stored} of {len(paths)} instances")


# ----------------------------------------------------------------------------- running a process


def _env(server: OrthancServer) -> dict[str, str]:
    user, password = server.auth
    return {**os.environ, ENV_USER: user, ENV_PASSWORD: password}


def _archive_cpu_s(server: OrthancServer) -> float | None:
    """CPU seconds used so far by the Orthanc process (``/proc/PID/stat``), None where unavailable."""
    process = getattr(server, "_process", None)  # OrthancServer does not expose its pid
    if process is None:
        return None
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def timed_process(label: str, code: str, args: list[str], work: Path,
                  server: OrthancServer) -> tuple[Run, str]:
    """``python -c code args`` with the archive's credentials in its environment (a failure stops the
    benchmark). Returns the run's time and resources (the caller fills in the rest) and its stdout."""
    usage_file = work / f"usage_{len(list(work.glob('usage_*.json'))):02d}.json"
    archive_before = _archive_cpu_s(server)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(usage_file), *args], env=_env(server),
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    archive_after = _archive_cpu_s(server)
    if proc.returncode != 0:
        raise SystemExit(f"{label}: exit status {proc.returncode}:\n{proc.stderr[-3000:]}")
    usage = json.loads(usage_file.read_text())
    archive_cpu = None if archive_before is None or archive_after is None else archive_after - archive_before
    run = Run(label, None, seconds, 0, peak_rss_mb=usage["rss_kb"] / 1024.0, client_cpu_s=usage["cpu_s"],
              workers_cpu_s=usage["children_cpu_s"], archive_cpu_s=archive_cpu)
    return run, proc.stdout


def sbrt_batch(work: Path, label: str, source: str | Path, out: Path, workers: int, server: OrthancServer,
               *extra: str) -> Run:
    """``sbrt batch SOURCE --out OUT --workers W --json ...`` in a fresh interpreter."""
    report_path = Path(f"{out}.{len(list(work.glob('*.report.json'))):02d}.report.json")
    args = ["batch", str(source), "--protocol", PROTOCOL, "--out", str(out), "--workers", str(workers),
            "--json", str(report_path), "--quiet", *extra]
    run, _ = timed_process(label, SBRT, args, work, server)
    report = json.loads(report_path.read_text())
    archive = report.get("archive") or {}
    run.workers, run.cases, run.out = workers, report["cases"], out
    if archive:
        run.mb_fetched, run.fetched, run.from_cache = (archive["bytes_fetched"] / MB, archive["fetched"],
                                                       archive["from_cache"])
    return run


def naive(work: Path, server: OrthancServer, workers: int) -> tuple[Run, Run, Run]:
    """The naive script (:func:`naive_fetch`, its own process), then ``sbrt batch`` on the tree it wrote."""
    dest = work / "naive_tree"
    fetch, stdout = timed_process("naive fetch", NAIVE, [server.dicomweb_url, str(dest)], work, server)
    got = json.loads(stdout.strip().splitlines()[-1])
    fetch.label = "naive: retrieve_study to disk"
    fetch.mb_fetched, fetch.fetched = got["bytes"] / MB, got["files"]
    batch = sbrt_batch(work, "naive: sbrt batch on that tree", dest, work / "out_naive", workers, server)
    total = Run("naive total", workers, fetch.seconds + batch.seconds, batch.cases, batch.out,
                fetch.mb_fetched, fetch.fetched, None,
                peak_rss_mb=max(fetch.peak_rss_mb or 0.0, batch.peak_rss_mb or 0.0),
                client_cpu_s=_sum(fetch.client_cpu_s, batch.client_cpu_s),
                workers_cpu_s=_sum(fetch.workers_cpu_s, batch.workers_cpu_s),
                archive_cpu_s=_sum(fetch.archive_cpu_s, batch.archive_cpu_s))
    return fetch, batch, total


def _sum(*values: float | None) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


# ----------------------------------------------------------------------------- checks


def rows_keyed(results: Path, keys: dict[str, str]) -> list[dict[str, str]]:
    """The rows of ``results``, each case renamed by ``keys`` (in ``case`` and ``error``), in key order."""
    rows = []
    for row in read_rows(results):
        key = keys[row["case"]]
        rows.append({k: v.replace(row["case"], key) if k in ("case", "error") else v for k, v in row.items()})
    return sorted(rows, key=lambda r: r["case"])  # stable: rows keep their order within a case


def check(runs: dict[str, Run], studies: list[Study]) -> list[str]:
    """Every archive (and naive) run gives the folder run's rows; DICOMweb and DIMSE byte-identical;
    only the RT instances fetched, each once; nothing fetched again from a filled cache."""
    def results(name: str) -> Path:
        return runs[name].out / "results.csv"  # type: ignore[operator]

    problems = []
    reference = rows_keyed(results("folder"), {s.folder: study_key(s.study_uid, False) for s in studies})
    if len({r["case"] for r in reference}) != len(studies) or any(r["kind"] == "error" for r in reference):
        problems.append(f"folder run: {len({r['case'] for r in reference})} cases, expected {len(studies)} "
                        "without error rows")
    if results("folder_w0").read_bytes() != results("folder").read_bytes():
        problems.append("folder runs: --workers 0 and 2 give different results.csv")
    naive_keys = {s.study_uid: study_key(s.study_uid, False) for s in studies}
    if rows_keyed(results("naive_batch"), naive_keys) != reference:
        problems.append("naive: results.csv differs from the folder run's")
    for name in ("web", "dimse", "resume", "shared_cache", "web_w0"):
        if read_rows(results(name)) != reference:
            problems.append(f"{runs[name].label}: results.csv differs from the folder run's")
    if results("web").read_bytes() != results("dimse").read_bytes():
        problems.append("DICOMweb and DIMSE results.csv are not byte-identical")
    rt = len(RT_FILES) * len(studies)
    # a fresh out dir on a shared cache lists every instance and finds it cached; --resume of a finished
    # run does not even ask the archive again (every study's cases are done: DIR/studies)
    for name, expected in (("shared_cache", (0, rt)), ("resume", (0, 0))):
        if (runs[name].fetched, runs[name].from_cache) != expected:
            problems.append(f"{runs[name].label}: fetched {runs[name].fetched}, from the cache "
                            f"{runs[name].from_cache}; expected {expected[0]} and {expected[1]}")
    for name in ("web", "dimse", "web_w0"):
        if (runs[name].fetched, runs[name].from_cache) != (rt, 0):
            problems.append(f"{runs[name].label}: fetched {runs[name].fetched}, from the cache "
                            f"{runs[name].from_cache}; expected the {rt} RT instances fetched")
    return problems


# ----------------------------------------------------------------------------- report


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_table(runs: dict[str, Run]) -> None:
    print(f"\n{'run':<40}{'workers':>8}{'wall s':>8}{'cases/min':>10}{'MB fetched':>11}{'fetched/cached':>15}"
          f"{'CPU s: client':>14}{'workers':>8}{'archive':>8}{'client RSS MB':>14}")
    for run in runs.values():
        cached = f"{run.fetched}/{_num(run.from_cache, 'd')}" if run.fetched is not None else "-"
        per_min = _num(run.per_min, ".1f") if run.cases else "-"
        print(f"{run.label:<40}{_num(run.workers, 'd'):>8}{run.seconds:8.1f}{per_min:>10}"
              f"{_num(run.mb_fetched, '.1f'):>11}{cached:>15}{_num(run.client_cpu_s, '.1f'):>14}"
              f"{_num(run.workers_cpu_s, '.1f'):>8}{_num(run.archive_cpu_s, '.1f'):>8}"
              f"{_num(run.peak_rss_mb, '.0f'):>14}")


def print_ratios(runs: dict[str, Run]) -> None:
    web, fetch = runs["web"], runs["naive_fetch"]
    print("Ratios")
    print(f"   naive / DICOMweb: wall time x{runs['naive_total'].seconds / web.seconds:.2f}, "
          f"MB fetched x{(fetch.mb_fetched or 0) / (web.mb_fetched or 1):.2f}, "
          f"instances x{(fetch.fetched or 0) / (web.fetched or 1):.1f}")
    for key in ("dimse", "resume", "shared_cache"):
        print(f"   {runs[key].label} / DICOMweb: wall time x{runs[key].seconds / web.seconds:.2f}")
    for run in (web, fetch):
        print(f"   {run.label}: {run.mb_fetched:.0f} MB take {(run.mb_fetched or 0) * 8 / LINK_MBIT_S:.0f} s "
              f"at {LINK_MBIT_S:.0f} Mbit/s (computed, not measured)")
    f0, f2, w0, w2 = (runs[k].seconds for k in ("folder_w0", "folder", "web_w0", "web"))
    in_series = w0 - f0  # what fetching adds when it is not overlapped with the compute
    print("Overlap of fetch and compute")
    print(f"   speed-up --workers 0 -> 2: folder x{f0 / f2:.2f}, DICOMweb x{w0 / w2:.2f}")
    print(f"   fetching adds {in_series:.1f} s in process (DICOMweb w0 - folder w0) and {w2 - f2:.1f} s with "
          f"workers (DICOMweb w2 - folder w2): {in_series - (w2 - f2):.1f} s hidden behind the compute")


# ----------------------------------------------------------------------------- main


def one_round(folder: Path, work: Path, server: OrthancServer, workers: int) -> dict[str, Run]:
    """Every run once, in this order (the resume and shared-cache runs need the DICOMweb run's out dir)."""
    web, runs = server.dicomweb_url, {}
    runs["folder"] = sbrt_batch(work, "folder (compute only)", folder, work / "out_folder", workers, server)
    runs["folder_w0"] = sbrt_batch(work, "folder, in process", folder, work / "out_folder_w0", 0, server)
    runs["web"] = sbrt_batch(work, "DICOMweb", web, work / "out_web", workers, server)
    runs["dimse"] = sbrt_batch(work, "DIMSE C-GET", server.dimse_address, work / "out_dimse", workers, server,
                               "--aet", SCU_AET)
    runs["resume"] = sbrt_batch(work, "DICOMweb --resume, finished out", web, work / "out_web", workers,
                                server, "--resume")
    runs["shared_cache"] = sbrt_batch(work, "DICOMweb, new out, shared cache", web, work / "out_web_cached",
                                      workers, server, "--cache", str(work / "out_web" / "cache"))
    runs["naive_fetch"], runs["naive_batch"], runs["naive_total"] = naive(work, server, workers)
    runs["web_w0"] = sbrt_batch(work, "DICOMweb, in process (no overlap)", web, work / "out_web_w0", 0,
                                server)
    return runs


def benchmark(work: Path, n: int, workers: int, repeats: int, keep: bool) -> int:
    t0 = time.perf_counter()
    studies, uploads = build_studies(work, n)
    t_build = time.perf_counter() - t0
    rounds: list[dict[str, Run]] = []
    problems: list[str] = []
    with OrthancServer(work / "orthanc", scu_aet=SCU_AET) as server:
        t1 = time.perf_counter()
        upload(server, uploads)
        mb_archive = sum(p.stat().st_size for p in uploads) / MB
        shutil.rmtree(work / "ct")
        print(f"{n} studies ({len(uploads)} instances, {mb_archive:.0f} MB; {n // HOT_EVERY} with dose "
              f"x{DOSE_SCALE_HOT}) built in {t_build:.0f} s, uploaded to Orthanc in "
              f"{time.perf_counter() - t1:.0f} s")
        load_before = os.getloadavg()[0]
        for number in range(1, repeats + 1):
            round_dir = work / f"round_{number}"
            round_dir.mkdir()
            rounds.append(one_round(work / "folder", round_dir, server, workers))
            problems += [f"round {number}: {p}" for p in check(rounds[-1], studies)]
            if not keep:  # each round writes ~1.3 GB (caches, the naive tree)
                shutil.rmtree(round_dir, ignore_errors=True)
        load_after = os.getloadavg()[0]
    best = {name: min((r[name] for r in rounds), key=lambda run: run.seconds) for name in rounds[0]}
    print_table(best)
    print(("" if repeats == 1 else f"(each row: the fastest of {repeats} rounds) ") +
          f"(load average {load_before:.2f} before the runs, {load_after:.2f} after: the machine may be "
          "shared)")
    print("CPU s: 'client' is the sbrt process (and the naive script), 'workers' its Dask processes, "
          "'archive' Orthanc")
    print_ratios(best)
    print("Checks: " + ("every results.csv equals the folder run's (keys mapped); DICOMweb and DIMSE files "
                        "byte-identical; only the RT instances fetched; nothing fetched on resume or from "
                        "the shared cache" if not problems else "FAILED\n   " + "\n   ".join(problems)))
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=20, help="studies in the archive (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers of parallel runs (default 2)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of every run; the fastest of each is printed (on a shared machine)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    opts = parser.parse_args()
    if MISSING:
        raise SystemExit("this benchmark needs " + "; ".join(MISSING))
    if min(opts.studies, opts.workers, opts.repeats) < 1:
        raise SystemExit("--studies, --workers and --repeats must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="sbrt-archive-bench-"))
    print(f"sbrt batch on a DICOM archive ({os.cpu_count()} CPUs), working folder {work}")
    try:
        status = benchmark(work, opts.studies, opts.workers, opts.repeats, opts.keep)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
