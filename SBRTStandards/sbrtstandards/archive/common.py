"""What the DICOMweb and DIMSE clients share: the records they return, their errors, retries."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sbrtstandards.errors import InputError

RT_MODALITIES = ("RTSTRUCT", "RTPLAN", "RTDOSE")
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
T = TypeVar("T")


class ArchiveError(InputError):
    """One study cannot be read (its case gets an error row; the other studies go on)."""


class TransientArchiveError(ArchiveError):
    """A failure worth another attempt: no connection, a timeout, HTTP 408/429/5xx, an aborted association."""


class ArchiveUnavailable(InputError):
    """The run cannot go on: authentication refused, association rejected, server gone."""


@dataclass(frozen=True)
class StudyRecord:
    """A study found by the query (identifiers stay in memory; only hashes reach the results by default)."""

    study_uid: str
    study_date: str = ""
    patient_id: str = ""
    patient_name: str = ""
    study_description: str = ""
    accession_number: str = ""
    modalities: tuple[str, ...] = ()

    def value(self, key: str) -> str | tuple[str, ...]:
        return {"StudyInstanceUID": self.study_uid, "StudyDate": self.study_date, "PatientID": self.patient_id,
                "PatientName": self.patient_name, "StudyDescription": self.study_description,
                "AccessionNumber": self.accession_number, "ModalitiesInStudy": self.modalities}[key]


# Study attributes asked back from every study query, so that the filters can be checked on the answers.
STUDY_RETURN_KEYS = ("StudyInstanceUID", "StudyDate", "PatientID", "PatientName", "StudyDescription",
                     "AccessionNumber", "ModalitiesInStudy")
_CASE_INSENSITIVE = ("PatientName", "StudyDescription")


def select_studies(studies: Sequence[StudyRecord], filters: Mapping[str, str], sent: Sequence[str],
                   url: str) -> list[StudyRecord]:
    """The studies that match every filter, checked on the answers: a server that ignores a filter (or
    one that was not sent, ``sent`` lists those that were) can neither widen nor silently narrow a query."""
    from sbrtstandards.archive.address import in_date_range, matches

    chosen = []
    for study in studies:
        keep = bool(study.study_uid)
        for key, pattern in filters.items():
            value = study.value(key)
            if not value:
                if key in sent:
                    continue  # the server applied it and did not echo the value: trust it
                raise ArchiveUnavailable(f"{url}: its answers do not include {key}, so --query {key}=... cannot be "
                                         "applied; filter on another attribute")
            if key == "StudyDate":
                keep &= in_date_range(str(value), pattern)
            elif key == "ModalitiesInStudy":
                keep &= pattern.upper() in {str(m).upper() for m in value}
            elif key in _CASE_INSENSITIVE:
                keep &= matches(str(value).upper(), pattern.upper())
            else:
                keep &= matches(str(value), pattern)
        if keep:
            chosen.append(study)
    return chosen


@dataclass(frozen=True)
class InstanceRef:
    """One RT instance of a study, enough to retrieve it."""

    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str


class Archive(Protocol):
    """The three things a batch needs from an archive (implemented for DICOMweb and DIMSE)."""

    url: str  # for messages: never holds credentials

    def find_studies(self, filters: Mapping[str, str]) -> list[StudyRecord]: ...

    def find_rt_instances(self, study_uid: str, series_filters: Mapping[str, str]) -> list[InstanceRef]: ...

    def fetch(self, refs: Sequence[InstanceRef], cache: InstanceCacheLike) -> int:
        """Retrieve ``refs`` into the cache; returns the bytes received."""
        ...

    def close(self) -> None: ...


class InstanceCacheLike(Protocol):
    def has(self, sop_uid: str) -> bool: ...

    def store_bytes(self, sop_uid: str, data: bytes) -> int: ...


def valid_uid(value: str) -> bool:
    """A DICOM UID (digits and dots, at most 64 characters): safe as a file name."""
    return len(value) <= 64 and bool(UID.match(value))


def with_retries(call: Callable[[], T], *, attempts: int, backoff_s: float = 1.0,
                 on_retry: Callable[[int, TransientArchiveError], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, retried after a :class:`TransientArchiveError` up to ``attempts`` tries in all,
    waiting ``backoff_s``, 2x, 4x... between them (bounded: the last error is raised)."""
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return call()
        except TransientArchiveError as exc:
            if attempt >= attempts:
                raise TransientArchiveError(f"{exc} (gave up after {attempts} attempts)") from None
            if on_retry is not None:
                on_retry(attempt, exc)
            sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover


def short_reason(exc: BaseException) -> str:
    """A one-line reason for a network error, without the long chains requests/urllib3 print."""
    text = str(exc)
    lowered = text.lower()
    for needle, reason in (("refused", "connection refused"), ("timed out", "timed out"),
                           ("read timeout", "timed out"), ("name or service not known", "unknown host"),
                           ("temporary failure in name resolution", "unknown host"),
                           ("no route to host", "no route to host"), ("reset by peer", "connection reset"),
                           ("remote end closed", "connection closed by the server"),
                           ("connection aborted", "connection aborted"),
                           ("certificate verify failed", "TLS certificate not trusted")):
        if needle in lowered:
            return reason
    first = " ".join(text.split())[:160]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
