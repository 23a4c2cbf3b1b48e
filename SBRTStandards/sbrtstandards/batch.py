"""``sbrt batch``: plan checks (and contour comparisons) over a folder tree of cases, on Dask.

What a case is
--------------
Every file under ROOT is sniffed (DICOM header only). Folders are visited bottom-up; each
folder collects its own RT objects plus those of its sub-folders that are not cases
themselves. A folder becomes a **case** as soon as what it collected holds an RTSTRUCT and
an RTDOSE, an RTPLAN, or a file named ``*.dcm`` that is not readable DICOM (a damaged export
is reported as a failed case, not skipped). So ``case/planning/{RS,RD,RP}.dcm`` is the case
``case/planning``; an export with one sub-folder per series (``study/RS/``, ``study/RD/``) is
the case ``study``; 4D-CT phase folders holding only a CT and a phase RTSTRUCT are not cases.
The output folder is never searched, nor are hidden folders and unfinished atomic writes
(``*.part``).

In a case, the **reference** structure set (for ``compare``) is an RTSTRUCT whose file name,
Structure Set Label, Structure Set Name or Series Description contains the word ``REF`` or
``reference`` (any case: ``RS_REF.dcm``, label ``Reference``). The other RTSTRUCT is the
plan's; when there are several, the one the RTPLAN references is taken. The prescription
comes from the RTPLAN, else from ``--rx-gy``/``--fractions``.

Results and crash safety
------------------------
The rows of each case are written to ``DIR/cases/<id>.csv`` (``<id>``: 16 hex digits of the
SHA-1 of the case's path relative to ROOT) by the client, atomically (temporary name, then
rename), as the case finishes. ``DIR/results.csv`` (and ``summary.html``) are assembled from
those files, in case order, only when every case has one, and are deleted when a run starts
(so a ``results.csv`` that exists is complete). A run killed at any moment leaves whole case
files only; ``--resume`` keeps the cases that succeeded, runs the missing ones and re-runs the
failed ones, each writing its one file again, so no case is missing or repeated. The run's
settings are kept in ``DIR/batch.json``; resuming with other settings or another ROOT is
refused.

Rows (``results.csv`` columns, :data:`COLUMNS`): one per constraint (``kind`` =
``constraint``, the ``sbrt check`` JSON's fields), per plan metric (``plan_metric``) and per
structure and agreement metric (``compare``); a failed case is one ``error`` row with the
message. Workers need ROOT at the same path (a shared file system) and this package
installed; the client alone writes DIR.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sbrtstandards.atomic import write_text_atomic
from sbrtstandards.errors import InputError

Progress = Callable[[float, str], None]

COLUMNS = (
    "case", "kind", "constraint_id", "structure", "compared_with", "metric", "value", "unit", "comparator",
    "limit", "minor_limit", "status", "reason", "error",
)
# Appended only with --include-identifiers (left out by default: results are shared and published).
IDENTIFIER_COLUMNS = ("patient_id", "patient_name", "study_instance_uid")
FORMAT = "sbrt-batch"
FORMAT_VERSION = 1
CASES_DIR = "cases"
RESULTS = "results.csv"
SUMMARY_HTML = "summary.html"
SETTINGS = "batch.json"
REFERENCE_WORDS = re.compile(r"(?<![a-z0-9])(ref|reference)(?![a-z])", re.IGNORECASE)
DICOM_SUFFIXES = (".dcm", ".dicom")
RT_KINDS = ("RTSTRUCT", "RTDOSE", "RTPLAN")


# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One case: its key (a folder relative to ROOT, POSIX separators, or an archive study key) and its RT files.

    ``problem`` is set for a case that cannot run (a study the archive would not give); ``identifiers``
    are the archive's patient ID, name and study UID (kept only with ``--include-identifiers``).
    """

    relpath: str
    folder: str
    rtstructs: tuple[str, ...] = ()
    rtdoses: tuple[str, ...] = ()
    rtplans: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()
    problem: str = ""
    identifiers: tuple[tuple[str, str], ...] = ()
    hide_uids: bool = False  # archive cases without --include-identifiers: no UID in an error message

    @property
    def case_id(self) -> str:
        return case_id(self.relpath)


def case_id(relpath: str) -> str:
    """Stable file name of a case's results: 16 hex digits of the SHA-1 of its relative path."""
    return hashlib.sha1(relpath.encode("utf-8")).hexdigest()[:16]


def discover_cases(
    root: str | os.PathLike[str], *, exclude: Sequence[str | os.PathLike[str]] = (), progress: Progress | None = None
) -> list[Case]:
    """The cases under ``root`` (module docstring), sorted by relative path."""
    import pydicom  # noqa: F401  (fail early if missing)

    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise InputError(f"{root}: not a folder (ROOT must be a folder of cases)")
    skip = {Path(p).resolve() for p in exclude}
    folders: list[tuple[Path, list[str]]] = []
    for dirpath, dirnames, filenames in os.walk(root_path):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not d.endswith(".part")
                             and (here / d).resolve() not in skip)
        folders.append((here, sorted(f for f in filenames if not f.startswith(".") and not f.endswith(".part"))))
    total = sum(len(f) for _, f in folders) or 1
    done = 0
    found: dict[Path, dict[str, list[str]]] = {}
    for here, files in folders:
        kinds: dict[str, list[str]] = {k: [] for k in (*RT_KINDS, "unreadable")}
        for name in files:
            path = here / name
            kind = _kind_of(path)
            if kind in kinds:
                kinds[kind].append(str(path))
            done += 1
            if progress is not None and done % 200 == 0:
                progress(done / total, f"scanning {done}/{total} files")
        found[here] = kinds
    cases: list[Case] = []
    pending: dict[Path, dict[str, list[str]]] = {}
    for here in sorted(found, key=lambda p: len(p.parts), reverse=True):  # deepest folders first
        mine = {k: list(v) for k, v in found[here].items()}
        for child, theirs in list(pending.items()):
            if child.parent == here:
                for k, v in theirs.items():
                    mine[k].extend(v)
                del pending[child]
        if mine["RTSTRUCT"] and (mine["RTDOSE"] or mine["RTPLAN"] or mine["unreadable"]):
            rel = here.relative_to(root_path).as_posix()
            cases.append(Case(rel, str(here), *(tuple(sorted(mine[k])) for k in (*RT_KINDS, "unreadable"))))
        elif here != root_path:
            pending[here] = mine
    if progress is not None:
        progress(1.0, f"{len(cases)} cases")
    return sorted(cases, key=lambda c: c.relpath)


def _kind_of(path: Path) -> str | None:
    """RTSTRUCT / RTDOSE / RTPLAN / another modality / "unreadable" (a ``*.dcm`` that is not DICOM)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from sbrtstandards.dicom.common import modality_of

    named_dicom = path.suffix.lower() in DICOM_SUFFIXES
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return "unreadable" if named_dicom else None
    part10 = len(head) >= 132 and head[128:132] == b"DICM"
    bare = len(head) >= 8 and int.from_bytes(head[0:2], "little") in (0x0002, 0x0008)
    if not (part10 or bare):
        return "unreadable" if named_dicom else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True,
                                 specific_tags=["SOPClassUID", "Modality"])
        return modality_of(ds) or ("unreadable" if named_dicom else None)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
        return "unreadable" if named_dicom else None


# ----------------------------------------------------------------------------- one case (runs on a worker)


@dataclass(frozen=True)
class BatchOptions:
    """What every case is checked with (kept in ``batch.json``; resuming needs the same)."""

    protocol_id: str
    rx_gy: float | None = None
    fractions: int | None = None
    site_class: str | None = None
    mapping: tuple[tuple[str, str], ...] = ()
    conditions: tuple[tuple[str, Any], ...] = ()
    tolerance_mm: float = 2.0
    protocol_dirs: tuple[str, ...] = ()
    include_identifiers: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        return COLUMNS + IDENTIFIER_COLUMNS if self.include_identifiers else COLUMNS

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["mapping"] = [list(p) for p in self.mapping]
        out["conditions"] = [list(p) for p in self.conditions]
        out["protocol_dirs"] = list(self.protocol_dirs)
        return out


@dataclass
class CaseOutcome:
    """What a worker sends back: the case's rows, or one error row; timing and memory."""

    relpath: str
    rows: list[dict[str, Any]]
    error: str = ""
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    worker_pid: int = 0
    notes: list[str] = field(default_factory=list)


def run_case(case: Case, options: BatchOptions) -> CaseOutcome:
    """Check one case (and compare it with its reference set); never raises for a bad case."""
    t0 = time.perf_counter()
    notes: list[str] = []
    try:
        if case.problem:
            raise InputError(case.problem)
        rows = _case_rows(case, options, notes)
        error = ""
    except InputError as exc:
        rows, error = [], _one_line(str(exc))
    except MemoryError:
        rows, error = [], "out of memory"
    except Exception as exc:  # a bug or an unforeseen file: record it, go on with the other cases
        rows, error = [], _one_line(f"{type(exc).__name__}: {exc}")
    if error:
        rows = [error_row(case.relpath, without_uids(error) if case.hide_uids else error)]
    if options.include_identifiers:
        ids = dict(case.identifiers) or _identifiers_of(case)
        for row in rows:
            row.update({k: ids.get(k, "") for k in IDENTIFIER_COLUMNS})
    return CaseOutcome(case.relpath, rows, error, time.perf_counter() - t0, _peak_rss_mb(), os.getpid(), notes)


def error_row(relpath: str, message: str) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS, "")
    row.update({"case": relpath, "kind": "error", "error": _one_line(message) or "unknown error"})
    return row


def _identifiers_of(case: Case) -> dict[str, str]:
    """Patient ID, name and study UID from the case's dose (or structure set) header; {} if unreadable."""
    from sbrtstandards.dicom.common import read_dataset

    for path in (*case.rtdoses, *case.rtstructs):
        try:
            ds = read_dataset(path, stop_before_pixels=True)
        except InputError:
            continue
        return {"patient_id": str(ds.get("PatientID", "") or ""), "patient_name": str(ds.get("PatientName", "") or ""),
                "study_instance_uid": str(ds.get("StudyInstanceUID", "") or "")}
    return {}


_UID_IN_TEXT = re.compile(r"(?<![\w.])\d+(?:\.\d+){4,}(?!\w)(?!\.\d)")


def without_uids(text: str) -> str:
    """``text`` with every DICOM UID (5 or more numeric components) replaced by ``<UID>``."""
    return _UID_IN_TEXT.sub("<UID>", text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _peak_rss_mb() -> float:
    """Peak resident memory of this (worker) process in MB; 0 where the OS does not say (Windows).

    Linux: ``VmHWM`` of /proc/self/status, the peak of this process image only (``ru_maxrss``
    would carry over the peak of the process that spawned the worker).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _case_rows(case: Case, options: BatchOptions, notes: list[str]) -> list[dict[str, Any]]:
    from sbrtstandards.check import check_files

    where = case.relpath or "."
    if not case.rtdoses:
        extra = "".join(f"; {Path(p).name} is not readable DICOM" for p in case.unreadable)
        raise InputError(f"no RTDOSE in {where}{extra}")
    if len(case.rtdoses) > 1:
        listing = ", ".join(Path(p).name for p in case.rtdoses)
        raise InputError(f"{where}: {len(case.rtdoses)} RTDOSE files ({listing}); keep one dose per case")
    if len(case.rtplans) > 1:
        raise InputError(f"{where}: {len(case.rtplans)} RTPLAN files; keep one plan per case")
    plan = case.rtplans[0] if case.rtplans else None
    test, reference = pick_structure_sets(case, plan)
    if case.unreadable:
        notes.append("ignored unreadable files: " + ", ".join(Path(p).name for p in case.unreadable))
    result, _ = check_files(
        test, case.rtdoses[0], protocol_id=options.protocol_id, rtplan=plan, rx_gy=options.rx_gy,
        fractions=options.fractions, site_class=options.site_class, mapping=dict(options.mapping) or None,
        conditions=dict(options.conditions) or None, extra_dirs=options.protocol_dirs,
    )
    rows = check_rows(case.relpath, result.to_json())
    if reference is not None:
        from sbrtstandards.compare import compare_files

        comparison = compare_files(reference, test, tolerance_mm=options.tolerance_mm)
        rows += compare_rows(case.relpath, comparison.to_json())
    return rows


def pick_structure_sets(case: Case, plan: str | None) -> tuple[str, str | None]:
    """(the plan's RTSTRUCT, the reference RTSTRUCT or None), see the module docstring."""
    where = case.relpath or "."
    refs = [p for p in case.rtstructs if is_reference_set(p)]
    others = [p for p in case.rtstructs if p not in refs]
    if len(refs) > 1:
        raise InputError(f"{where}: {len(refs)} reference structure sets ({', '.join(Path(p).name for p in refs)}); "
                         "keep one")
    if not others:
        raise InputError(f"{where}: the only RTSTRUCT ({Path(refs[0]).name}) is marked as the reference set")
    if len(others) > 1:
        chosen = _referenced_by_plan(others, plan)
        if chosen is None:
            raise InputError(f"{where}: {len(others)} RTSTRUCTs ({', '.join(Path(p).name for p in others)}) and no "
                             "RTPLAN naming one of them; mark the reference set with REF in its label or file name")
        others = [chosen]
    return others[0], (refs[0] if refs else None)


def is_reference_set(path: str) -> bool:
    """True when the file name, label, name or series description says REF / reference."""
    if REFERENCE_WORDS.search(Path(path).stem.replace("_", " ")):
        return True
    from sbrtstandards.dicom.common import read_dataset

    ds = read_dataset(path, stop_before_pixels=True)
    for key in ("StructureSetLabel", "StructureSetName", "SeriesDescription"):
        if REFERENCE_WORDS.search(str(ds.get(key, "") or "").replace("_", " ")):
            return True
    return False


def _referenced_by_plan(paths: Sequence[str], plan: str | None) -> str | None:
    if plan is None:
        return None
    from sbrtstandards.dicom.common import read_dataset

    ds = read_dataset(plan, stop_before_pixels=True)
    items = ds.get("ReferencedStructureSetSequence", None) or []
    uids = {str(item.get("ReferencedSOPInstanceUID", "")) for item in items}
    hits = [p for p in paths if str(read_dataset(p, stop_before_pixels=True).get("SOPInstanceUID", "")) in uids]
    return hits[0] if len(hits) == 1 else None


def check_rows(relpath: str, check_json: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of one ``sbrt check`` JSON: its constraints, then its plan metrics."""
    rows = []
    for c in check_json["constraints"]:
        row = dict.fromkeys(COLUMNS, "")
        row.update({
            "case": relpath, "kind": "constraint", "constraint_id": c["id"], "structure": c["structure"],
            "metric": c["metric"], "value": _cell(c["value"]), "unit": c.get("unit", ""),
            "comparator": c["comparator"], "limit": _cell(c["limit"]), "minor_limit": _cell(c.get("minor_limit")),
            "status": c["status"], "reason": c.get("reason", ""),
        })
        rows.append(row)
    reasons = check_json.get("plan_metric_reasons", {})
    for key, value in check_json["plan_metrics"].items():
        row = dict.fromkeys(COLUMNS, "")
        row.update({"case": relpath, "kind": "plan_metric", "structure": "plan", "metric": key, "value": _cell(value),
                    "reason": reasons.get(key, "")})
        rows.append(row)
    return rows


def compare_rows(relpath: str, compare_json: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of one ``sbrt compare`` JSON: per structure, one row per agreement metric."""
    from sbrtstandards.compare import METRIC_KEYS

    rows = []
    for s in compare_json["structures"]:
        reasons = s.get("reasons", {})
        for key in METRIC_KEYS:
            row = dict.fromkeys(COLUMNS, "")
            row.update({"case": relpath, "kind": "compare", "constraint_id": "compare", "structure": s["name"],
                        "compared_with": s["test_name"], "metric": key, "value": _cell(s.get(key)),
                        "unit": "mm" if key.endswith("_mm") else "", "reason": reasons.get(key, "")})
            rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return json.dumps([float(v) for v in value])
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def rows_to_csv(rows: Iterable[Mapping[str, Any]], *, header: bool = True,
                columns: Sequence[str] = COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
    return buf.getvalue()


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a results or case file; a row with more or fewer cells than the header is an InputError."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    width = len(reader.fieldnames or ())
    for number, row in enumerate(rows, 2):
        if None in row or any(v is None for v in row.values()):
            cells = width + len(row.get(None) or ()) - sum(v is None for v in row.values())  # type: ignore[call-overload]
            raise InputError(f"{path}: line {number} has {cells} cells, the header {width}")
    return rows


# ----------------------------------------------------------------------------- the run (client side)


@dataclass
class BatchRun:
    """What a run did (the ``--json`` of ``sbrt batch``)."""

    root: str  # the folder, or the archive's address (never credentials)
    out_dir: str
    cases: int
    ran: int
    skipped: int
    failed: int
    rows: int
    seconds: float
    cases_seconds: float  # running the cases (without scanning ROOT and writing the summary)
    workers: int
    scheduler: str
    results: str
    summary_html: str
    peak_rss_mb: float
    failures: list[dict[str, str]]
    source: str = "folder"  # "folder" | "dicomweb" | "dimse"
    archive: dict[str, Any] | None = None  # studies, instances fetched / taken from the cache, cache folder

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_batch(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: BatchOptions,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    archive: Any = None,
) -> BatchRun:
    """Run every case of ``root`` (a folder, a DICOMweb URL or ``dimse://AET@host:port``); write
    ``out_dir/cases/*.csv``, ``results.csv`` and ``summary.html``. ``archive`` is an
    :class:`sbrtstandards.archive.connect.ArchiveOptions` (query, AE title, cache...) for archive sources."""
    from sbrtstandards.archive.address import is_archive_source
    from sbrtstandards.catalogue import load_protocol

    t0 = time.perf_counter()
    load_protocol(options.protocol_id, options.protocol_dirs)  # a bad id is a usage error, before any work
    out = Path(out_dir).resolve()
    report = progress or (lambda fraction, message: None)
    archive_json: dict[str, Any] | None = None
    if is_archive_source(str(root)):
        from sbrtstandards.archive.connect import ArchiveOptions, open_source

        source = open_source(str(root), archive or ArchiveOptions(), out, options.include_identifiers,
                             progress=lambda f, m: report(0.05 * f, m))
        try:
            _prepare_out_dir(out, source.root, options, resume, source.settings)
            done = (lambda key: case_done(out, Case(key, ""))) if resume else None
            cases_iter = source.cases(lambda f, m: report(0.05 + 0.9 * f, m), done=done)
            outcomes, cases, cases_seconds = _run_cases(cases_iter, source.expected, options, out, scheduler,
                                                        workers, resume, report, prestart=True)
        finally:
            source.close()
        if not cases:
            raise InputError(f"{source.root}: {source.expected} studies matched the query, none holds an RTPLAN "
                             "or RTDOSE (a case is the RTSTRUCT, RTDOSE and RTPLAN of a study)")
        root_text, kind, archive_json = source.root, source.kind, source.summary()
    else:
        if archive is not None and getattr(archive, "queries", ()):
            raise InputError("--query applies to DICOMweb and DIMSE sources, not to a folder")
        root_path = Path(root).resolve()
        found = discover_cases(root_path, exclude=[out], progress=lambda f, m: report(0.05 * f, m))
        if not found:
            raise InputError(f"{root}: no cases (a case is a folder holding an RTSTRUCT and an RTDOSE or RTPLAN)")
        if root_path == out:
            raise InputError(f"--out {out}: is ROOT itself; write the results elsewhere")
        _prepare_out_dir(out, str(root_path), options, resume)
        outcomes, cases, cases_seconds = _run_cases(iter(found), len(found), options, out, scheduler, workers,
                                                    resume, report)
        root_text, kind = str(root_path), "folder"
    report(0.96, "assembling results.csv")
    results = assemble_results(out, cases, options.columns)
    all_rows = read_rows(results)
    failures = [{"case": r["case"], "error": r["error"]} for r in all_rows if r["kind"] == "error"]
    report(0.98, "summary")
    from sbrtstandards.batch_report import write_summary_html

    run = BatchRun(
        root=root_text, out_dir=str(out), cases=len(cases), ran=len(outcomes), skipped=len(cases) - len(outcomes),
        failed=len(failures), rows=len(all_rows), seconds=round(time.perf_counter() - t0, 2),
        cases_seconds=round(cases_seconds, 2),
        workers=_worker_count(workers) if scheduler is None else 0, scheduler=scheduler or "local",
        results=str(results), summary_html=str(out / SUMMARY_HTML),
        peak_rss_mb=round(max((o.peak_rss_mb for o in outcomes), default=0.0), 1), failures=failures,
        source=kind, archive=archive_json,
    )
    write_summary_html(out / SUMMARY_HTML, all_rows, run, options)
    report(1.0, "done")
    return run


def _run_cases(found: Iterator[Case], expected: int, options: BatchOptions, out: Path, scheduler: str | None,
               workers: int | None, resume: bool, report: Progress,
               prestart: bool = False) -> tuple[list[CaseOutcome], list[Case], float]:
    """Run the cases as ``found`` yields them (those finished before are kept with ``resume``).

    Returns the outcomes of the cases run now, every case seen (sorted by key) and the seconds taken.
    """
    seen: dict[str, Case] = {}

    def todo() -> Iterator[Case]:
        for case in found:
            if case.relpath in seen:
                raise InputError(f"two cases have the key {case.relpath!r}")
            seen[case.relpath] = case
            if not (resume and case_done(out, case)):
                yield case

    t_cases = time.perf_counter()  # includes starting the local cluster
    outcomes = _execute(todo(), expected, options, out, scheduler, workers, lambda f, m: report(0.05 + 0.9 * f, m),
                        prestart=prestart)
    return outcomes, sorted(seen.values(), key=lambda c: c.relpath), time.perf_counter() - t_cases


def _prepare_out_dir(out: Path, root: str, options: BatchOptions, resume: bool,
                     source: Mapping[str, Any] | None = None) -> None:
    settings = {"format": FORMAT, "version": FORMAT_VERSION, "root": root, "options": options.to_json()}
    if source:
        settings["source"] = dict(source)
    path = out / SETTINGS
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; give a folder")
    if path.exists():
        if not resume:
            raise InputError(f"--out {out}: already holds a batch run; use --resume to finish it, or another folder")
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: unreadable batch settings ({exc})") from None
        if any(old.get(k) != settings.get(k) for k in ("root", "options", "source")):
            raise InputError(f"{path}: the batch in {out} was run on {old.get('root')} with other settings "
                             f"({old.get('options')}, {old.get('source')}); resume it with the same source and "
                             "options, or use another --out")
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: is not empty and holds no batch run; give a new or empty folder")
    (out / CASES_DIR).mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(settings, indent=2) + "\n")
    for derived in (RESULTS, SUMMARY_HTML):  # only a finished run has them
        (out / derived).unlink(missing_ok=True)


def case_file(out: Path, case: Case) -> Path:
    return out / CASES_DIR / f"{case.case_id}.csv"


def case_done(out: Path, case: Case) -> bool:
    """True when the case has a result file without an error (a failed case is retried)."""
    path = case_file(out, case)
    if not path.exists():
        return False
    try:
        rows = read_rows(path)
    except (OSError, csv.Error, UnicodeDecodeError, InputError):  # damaged: run the case again
        return False
    return bool(rows) and all(r.get("case") == case.relpath and r.get("kind") != "error" for r in rows)


def write_case_file(out: Path, case: Case, rows: Sequence[Mapping[str, Any]],
                    columns: Sequence[str] = COLUMNS) -> Path:
    return write_text_atomic(case_file(out, case), rows_to_csv(rows, columns=columns))


def assemble_results(out: Path, cases: Sequence[Case], columns: Sequence[str] = COLUMNS) -> Path:
    """``results.csv`` from the case files, in case order (atomic); every case must have its file."""
    parts = [rows_to_csv([], header=True, columns=columns)]
    for case in cases:
        path = case_file(out, case)
        if not path.exists():
            raise InputError(f"{path}: missing result of case {case.relpath}; run again with --resume")
        rows = read_rows(path)
        if any(r.get("case") != case.relpath for r in rows):
            raise InputError(f"{path}: holds rows of another case than {case.relpath}; delete it and --resume")
        parts.append(rows_to_csv(rows, header=False, columns=columns))
    return write_text_atomic(out / RESULTS, "".join(parts))


def _worker_count(workers: int | None) -> int:
    if workers is not None:
        return workers
    return max(1, min(os.cpu_count() or 1, 8))


def _execute(cases: Iterable[Case], expected: int, options: BatchOptions, out: Path, scheduler: str | None,
             workers: int | None, progress: Progress, prestart: bool = False) -> list[CaseOutcome]:
    """Run ``cases`` as they come (in process for ``workers == 0``, else on Dask); write each case file as it
    finishes. When ``cases`` fails midway (an archive gone), the cases already running finish first."""
    outcomes: list[CaseOutcome] = []

    def finished(case: Case, outcome: CaseOutcome) -> None:
        write_case_file(out, case, outcome.rows, options.columns)
        outcomes.append(outcome)
        state = "failed" if outcome.error else "done"
        fraction = min(1.0, len(outcomes) / max(expected, 1))
        progress(fraction, f"{len(outcomes)}/{expected} {case.relpath or '.'} {state}")

    iterator = iter(cases)
    if scheduler is None and workers == 0:
        for case in iterator:
            finished(case, run_case(case, options))
        return outcomes
    starting = None
    if prestart:  # an archive: the cluster starts while the first study is fetched
        pool = ThreadPoolExecutor(1, thread_name_prefix="sbrt-dask-start")
        starting = pool.submit(_dask_client, scheduler, _worker_count(workers))
        pool.shutdown(wait=False)
    try:
        first = next(iterator, None)
    except BaseException:
        if starting is not None:
            _close_dask(*starting.result())
        raise
    if first is None:
        if starting is not None:
            _close_dask(*starting.result())
        return outcomes
    client, cluster = starting.result() if starting is not None else _dask_client(scheduler, _worker_count(workers))
    try:
        from dask.distributed import as_completed

        running: dict[Any, Case] = {}
        pending = as_completed()

        def collect(fut: Any) -> None:
            case = running.pop(fut)
            try:
                outcome = fut.result()
            except Exception as exc:  # the worker died (KilledWorker), or the cluster went away
                outcome = CaseOutcome(case.relpath, [error_row(case.relpath, f"worker failure: {type(exc).__name__}: "
                                                                                 f"{exc}")], str(exc))
                if options.include_identifiers:
                    outcome.rows[0].update({k: dict(case.identifiers).get(k, "") for k in IDENTIFIER_COLUMNS})
            finished(case, outcome)

        try:
            for case in itertools.chain([first], iterator):
                if case.problem:  # nothing to compute: its error row is written at once
                    finished(case, run_case(case, options))
                else:
                    key = f"sbrt-case-{case.case_id}-{os.urandom(4).hex()}"
                    fut = client.submit(run_case, case, options, pure=False, key=key)
                    running[fut] = case
                    pending.add(fut)
                while pending.has_ready():  # while the next case is fetched, record the finished ones
                    collect(next(pending))
        finally:  # also when the source failed midway: keep what is running
            for fut in pending:
                collect(fut)
    finally:
        _close_dask(client, cluster)
    return outcomes


def _close_dask(client: Any, cluster: Any) -> None:
    client.close()
    if cluster is not None:
        cluster.close()


def _dask_client(scheduler: str | None, workers: int) -> tuple[Any, Any]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError("sbrt batch needs Dask: pip install 'dask[distributed]' (or use --workers 0 to run "
                         "in this process)") from None
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny",
                 "distributed.core", "distributed.client"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"--scheduler {scheduler}: cannot connect to the Dask scheduler ({exc})") from None
    import dask

    try:
        # Dask sets MALLOC_TRIM_THRESHOLD_=65536 in its workers (against fragmentation in long-lived
        # ones); it also freezes glibc's mmap threshold, so every array above 128 kB is mapped and
        # unmapped again: a plan check ran 1.5x slower. Our tasks are short and independent.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.ERROR)
    except Exception as exc:  # e.g. a script without a __main__ guard, or no free port
        raise InputError(f"could not start a local Dask cluster of {workers} workers ({exc}); "
                         "use --workers 0 to run in this process") from None
    return Client(cluster), cluster
