"""From an archive to cases: query the studies, fetch their RT objects, group them.

A **case** is the RTSTRUCT(s), RTDOSE and RTPLAN of one study that share a Frame of Reference.
A study holding neither an RTPLAN nor an RTDOSE (a diagnostic CT, a 4D-CT still being contoured)
is not a case. A study with several Frames of Reference gives one case per frame; a frame with
several plans whose doses each name their plan (ReferencedRTPlanSequence) gives one case per plan.

The ``case`` key in the results is, by default, ``study-`` and 16 hex digits of the SHA-1 of the
Study Instance UID (the same on every run and through either protocol; it identifies the study to
whoever can read the archive, and to no one else); ``--include-identifiers`` makes it the Study
Instance UID itself. A study with several cases appends ``/`` and a hash of the frame (or plan)
UID, or the UID itself with ``--include-identifiers``.

Faults: each call gets bounded retries with back-off; a study that still cannot be read becomes
one failed case (an error row; ``--resume`` retries it); when :data:`MAX_CONSECUTIVE_FAILURES`
studies in a row fail that way the archive is taken as gone and the run stops with an error,
keeping every finished case for ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbrtstandards.archive.address import ArchiveQuery
from sbrtstandards.archive.cache import InstanceCache
from sbrtstandards.archive.common import (
    Archive,
    ArchiveError,
    ArchiveUnavailable,
    InstanceRef,
    StudyRecord,
    TransientArchiveError,
    with_retries,
)
from sbrtstandards.atomic import write_text_atomic
from sbrtstandards.batch import Case, without_uids

MAX_CONSECUTIVE_FAILURES = 2
Progress = Callable[[float, str], None]


@dataclass
class ArchiveStats:
    """What the archive part of a run did (in the ``--json`` of ``sbrt batch``)."""

    studies: int = 0  # matched by the query
    studies_kept: int = 0  # --resume: every case of the study finished before, not asked for again
    studies_without_plan_or_dose: int = 0
    instances: int = 0  # RT instances of the matched studies
    fetched: int = 0  # retrieved in this run
    from_cache: int = 0  # already in the cache: not retrieved again
    bytes_fetched: int = 0
    retries: int = 0
    failed_studies: list[str] = field(default_factory=list)  # case keys

    def to_json(self) -> dict[str, Any]:
        return {"studies": self.studies, "studies_kept": self.studies_kept,
                "studies_without_plan_or_dose": self.studies_without_plan_or_dose,
                "instances": self.instances, "fetched": self.fetched, "from_cache": self.from_cache,
                "bytes_fetched": self.bytes_fetched, "retries": self.retries,
                "failed_studies": list(self.failed_studies)}


class StudyLedger:
    """Which cases each study gave, ``DIR/studies/<hash of the Study Instance UID>.json``, so that
    ``--resume`` skips a study whose cases are all finished without asking the archive again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, study_uid: str) -> Path:
        return self.folder / f"{hashlib.sha1(study_uid.encode('ascii')).hexdigest()[:16]}.json"

    def cases_of(self, study_uid: str) -> list[str] | None:
        try:
            data = json.loads(self._path(study_uid).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        cases = data.get("cases") if isinstance(data, dict) else None
        return [str(c) for c in cases] if isinstance(cases, list) else None

    def record(self, study_uid: str, cases: list[str]) -> None:
        write_text_atomic(self._path(study_uid), json.dumps({"cases": cases}) + "\n")


def study_key(study_uid: str, include_identifiers: bool) -> str:
    """The ``case`` of a study: its UID, or a stable pseudonymous hash of it (module docstring)."""
    if include_identifiers:
        return study_uid
    return "study-" + hashlib.sha1(study_uid.encode("ascii")).hexdigest()[:16]


def _part_key(uid: str, include_identifiers: bool) -> str:
    return uid if include_identifiers else hashlib.sha1(uid.encode("ascii")).hexdigest()[:8]


def find_studies(archive: Archive, query: ArchiveQuery, *, attempts: int = 3, backoff_s: float = 1.0,
                 stats: ArchiveStats | None = None) -> list[StudyRecord]:
    """The studies that ``query`` selects, in case-key order; an archive that cannot be queried stops the run."""
    stats = stats if stats is not None else ArchiveStats()

    def retried(attempt: int, exc: TransientArchiveError) -> None:
        stats.retries += 1

    try:
        studies = with_retries(lambda: archive.find_studies(dict(query.study)), attempts=attempts,
                               backoff_s=backoff_s, on_retry=retried)
    except TransientArchiveError as exc:
        raise ArchiveUnavailable(f"{archive.url}: cannot query the archive ({exc})") from None
    except ArchiveError as exc:
        raise ArchiveUnavailable(str(exc)) from None
    unique = sorted({s.study_uid: s for s in studies}.values(), key=lambda s: study_key(s.study_uid, False))
    stats.studies = len(unique)
    return unique


def study_cases(
    archive: Archive,
    studies: list[StudyRecord],
    query: ArchiveQuery,
    cache: InstanceCache,
    *,
    include_identifiers: bool = False,
    attempts: int = 3,
    backoff_s: float = 1.0,
    stats: ArchiveStats | None = None,
    progress: Progress | None = None,
    ledger: StudyLedger | None = None,
    done: Callable[[str], bool] | None = None,
) -> Iterator[Case]:
    """Yield the cases of ``studies``, each once its RT objects are in ``cache`` (fetching what is missing).

    With ``ledger`` and ``done`` (resuming), a study whose recorded cases are all ``done`` is not asked for
    again: its cases are yielded as they were recorded (keys only; they are not run again).
    """
    stats = stats if stats is not None else ArchiveStats()
    last = [0.0]

    def report(fraction: float, message: str) -> None:
        last[0] = fraction
        if progress is not None:
            progress(fraction, message)

    def retried(attempt: int, exc: TransientArchiveError) -> None:
        stats.retries += 1
        report(last[0], f"retry {attempt} after: {exc}")

    def call(fn: Callable[[], Any]) -> Any:
        return with_retries(fn, attempts=attempts, backoff_s=backoff_s, on_retry=retried)

    failures_in_a_row = 0
    for number, study in enumerate(studies, 1):
        key = study_key(study.study_uid, include_identifiers)
        report((number - 1) / max(len(studies), 1), f"fetching study {number}/{len(studies)}")
        recorded = ledger.cases_of(study.study_uid) if ledger is not None and done is not None else None
        if recorded is not None and all(done(k) for k in recorded):  # type: ignore[misc]
            stats.studies_kept += 1
            yield from (Case(k, str(cache.root), hide_uids=not include_identifiers) for k in recorded)
            continue
        try:
            refs = call(lambda s=study: archive.find_rt_instances(s.study_uid, dict(query.series)))
            stats.instances += len(refs)
            missing = [r for r in refs if not cache.has(r.sop_uid)]
            stats.from_cache += len(refs) - len(missing)
            for ref in missing:  # one instance per call: a retry repeats only what failed
                stats.bytes_fetched += call(lambda r=ref: archive.fetch([r], cache))
                stats.fetched += 1
            cases = group_study(study, refs, cache, include_identifiers)
        except TransientArchiveError as exc:
            failures_in_a_row += 1
            stats.failed_studies.append(key)
            if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                reason = str(exc) if include_identifiers else without_uids(str(exc))
                raise ArchiveUnavailable(
                    f"{archive.url} stopped answering ({reason}); the finished cases are kept: run the same command "
                    "with --resume when the archive is back") from None
            yield _failed(study, key, f"could not retrieve the study: {exc}", cache, include_identifiers)
            continue
        except ArchiveError as exc:
            stats.failed_studies.append(key)
            yield _failed(study, key, str(exc), cache, include_identifiers)
            continue
        failures_in_a_row = 0
        if not cases:
            stats.studies_without_plan_or_dose += 1
        if ledger is not None:
            ledger.record(study.study_uid, [c.relpath for c in cases])
        yield from cases
    report(1.0, f"{len(studies)} studies")


def _failed(study: StudyRecord, key: str, message: str, cache: InstanceCache, include_identifiers: bool) -> Case:
    return Case(key, str(cache.root), problem=message, identifiers=_identifiers(study, include_identifiers),
                hide_uids=not include_identifiers)


def _identifiers(study: StudyRecord, include_identifiers: bool) -> tuple[tuple[str, str], ...]:
    if not include_identifiers:
        return ()
    return (("patient_id", study.patient_id), ("patient_name", study.patient_name),
            ("study_instance_uid", study.study_uid))


@dataclass
class _Object:
    path: str
    modality: str
    sop_uid: str
    frame_uid: str
    references: tuple[str, ...]  # RTPLAN: its structure sets; RTDOSE: its plans


def group_study(study: StudyRecord, refs: list[InstanceRef], cache: InstanceCache,
                include_identifiers: bool) -> list[Case]:
    """The cases of one study whose RT instances are all in ``cache`` (module docstring)."""
    objects = [_read(cache.path(r.sop_uid), r) for r in refs]
    if not any(o.modality in ("RTPLAN", "RTDOSE") for o in objects):
        return []
    by_sop = {o.sop_uid: o for o in objects}
    for o in objects:  # a plan without a Frame of Reference takes its structure set's
        if o.modality == "RTPLAN" and not o.frame_uid:
            o.frame_uid = next((by_sop[s].frame_uid for s in o.references if s in by_sop), "")
    frames = sorted({o.frame_uid for o in objects if o.modality in ("RTPLAN", "RTDOSE") and o.frame_uid})
    key = study_key(study.study_uid, include_identifiers)
    ids = _identifiers(study, include_identifiers)
    folder = str(cache.root)
    if len(frames) <= 1:
        groups = [("", objects)]
    else:
        unplaced = [o for o in objects if not o.frame_uid]
        if unplaced:
            names = ", ".join(f"{o.modality} {o.sop_uid}" for o in unplaced)
            return [Case(key, folder, problem=f"the study has {len(frames)} Frames of Reference and {names} names "
                                              "none: cannot tell which case it belongs to", identifiers=ids,
                         hide_uids=not include_identifiers)]
        groups = [(f, [o for o in objects if o.frame_uid == f]) for f in frames]
    parts: list[tuple[str, list[_Object]]] = []
    for frame, members in groups:
        plans = [o for o in members if o.modality == "RTPLAN"]
        doses = [o for o in members if o.modality == "RTDOSE"]
        plan_uids = {p.sop_uid for p in plans}
        if len(plans) > 1 and doses and all(len(plan_uids.intersection(d.references)) == 1 for d in doses):
            structs = [o for o in members if o.modality == "RTSTRUCT"]
            for plan in plans:
                mine = [d for d in doses if plan.sop_uid in d.references]
                parts.append((plan.sop_uid, [*structs, plan, *mine]))
        else:
            parts.append((frame, members))
    cases = []
    for discriminator, members in parts:
        case_key = key if len(parts) == 1 else f"{key}/{_part_key(discriminator, include_identifiers)}"
        kinds = {m: tuple(sorted(o.path for o in members if o.modality == m)) for m in ("RTSTRUCT", "RTDOSE", "RTPLAN")}
        cases.append(Case(case_key, folder, kinds["RTSTRUCT"], kinds["RTDOSE"], kinds["RTPLAN"], identifiers=ids,
                          hide_uids=not include_identifiers))
    return sorted(cases, key=lambda c: c.relpath)


def _read(path: Path, ref: InstanceRef) -> _Object:
    from sbrtstandards.dicom.common import read_dataset
    from sbrtstandards.dicom.scan import dicom_file_from_dataset

    try:
        ds = read_dataset(path, stop_before_pixels=True)
    except Exception as exc:  # a damaged cached file: report it, the user deletes it and resumes
        raise ArchiveError(f"cached {ref.modality} {path} is not readable ({exc}); delete it and --resume") from None
    summary = dicom_file_from_dataset(ds, path)
    if summary.sop_instance_uid != ref.sop_uid:
        raise ArchiveError(f"cached file {path} holds instance {summary.sop_instance_uid}, not {ref.sop_uid}")
    modality = summary.modality or ref.modality
    if modality == "RTPLAN":
        refs = tuple(str(i.get("ReferencedSOPInstanceUID", ""))
                     for i in ds.get("ReferencedStructureSetSequence", None) or [])
    elif modality == "RTDOSE":
        refs = tuple(str(i.get("ReferencedSOPInstanceUID", "")) for i in ds.get("ReferencedRTPlanSequence", None) or [])
    else:
        refs = ()
    return _Object(str(path), modality, ref.sop_uid, summary.frame_of_reference_uid or "", refs)
