"""DICOMweb archive: QIDO-RS to find studies, series and instances, WADO-RS to fetch them (dicomweb-client).

The requests session carries the credentials (basic or bearer), verifies TLS (the system's CAs
or ``ca_file``) and applies one timeout to every request; dicomweb-client's own retrying is off
so that one policy (:func:`.common.with_retries`) governs every failure.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sbrtstandards.archive.address import ArchiveAddress, Credentials, matches
from sbrtstandards.archive.common import (
    RT_MODALITIES,
    STUDY_RETURN_KEYS,
    ArchiveError,
    ArchiveUnavailable,
    InstanceCacheLike,
    InstanceRef,
    StudyRecord,
    TransientArchiveError,
    select_studies,
    short_reason,
)

_TRANSIENT_STATUS = (408, 425, 429, 500, 502, 503, 504)
_TAGS = {"StudyInstanceUID": "0020000D", "StudyDate": "00080020", "PatientID": "00100020",
         "PatientName": "00100010", "StudyDescription": "00081030", "AccessionNumber": "00080050",
         "ModalitiesInStudy": "00080061", "SeriesInstanceUID": "0020000E", "Modality": "00080060",
         "SeriesDescription": "0008103E", "SOPInstanceUID": "00080018"}
_SERVER_KEYS = ("StudyDate", "StudyInstanceUID", "ModalitiesInStudy", "PatientID", "AccessionNumber")
_PLAIN = re.compile(r"^[A-Za-z0-9._-]+$")


class DicomWebArchive:
    """QIDO-RS/WADO-RS at ``address.url`` with ``credentials``."""

    def __init__(self, address: ArchiveAddress, credentials: Credentials, *, timeout_s: float = 60.0,
                 ca_file: str | None = None) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.url = address.url
        self._credentials = credentials
        session = _session_with_timeout(timeout_s)
        session.verify = ca_file or credentials.ca_file or True
        if credentials.username:
            session.auth = (credentials.username, credentials.password)
        elif credentials.token:
            session.headers["Authorization"] = f"Bearer {credentials.token}"
        self._session = session
        try:
            self._client = DICOMwebClient(self.url, session=session, timeout=timeout_s)
        except TypeError:  # dicomweb-client < 0.60 (pydicom 2.4 era): the session's default timeout applies
            self._client = DICOMwebClient(self.url, session=session)
        self._client.set_http_retry_params(retry=False)

    def close(self) -> None:
        self._session.close()

    # ------------------------------------------------------------------ queries

    def find_studies(self, filters: Mapping[str, str]) -> list[StudyRecord]:
        # Only plain values go to the server: some (Orthanc's DICOMweb plugin 1.7) do not decode a
        # percent-encoded query, so '*', '^' or a space would silently match nothing. The rest is
        # matched here, on the answers (select_studies).
        sent = {k: v for k, v in filters.items() if k in _SERVER_KEYS and _PLAIN.match(v)}
        found = self._call("QIDO-RS study search", lambda: self._client.search_for_studies(
            search_filters=sent, fields=list(STUDY_RETURN_KEYS), get_remaining=True))
        records = [StudyRecord(_value(item, "StudyInstanceUID"), _value(item, "StudyDate"),
                               _value(item, "PatientID"), _value(item, "PatientName"),
                               _value(item, "StudyDescription"), _value(item, "AccessionNumber"),
                               _values(item, "ModalitiesInStudy")) for item in found]
        return select_studies(records, filters, list(sent), self.url)

    def find_rt_instances(self, study_uid: str, series_filters: Mapping[str, str]) -> list[InstanceRef]:
        series = self._call(f"QIDO-RS series search of study {study_uid}", lambda: self._client.search_for_series(
            study_uid, fields=["Modality", "SeriesDescription"], get_remaining=True))
        refs: list[InstanceRef] = []
        for item in series:
            modality = _value(item, "Modality").upper()
            series_uid = _value(item, "SeriesInstanceUID")
            if modality not in RT_MODALITIES or not series_uid or not _series_selected(item, series_filters):
                continue
            instances = self._call(f"QIDO-RS instance search of series {series_uid}",
                                   lambda uid=series_uid: self._client.search_for_instances(
                                       study_uid, uid, get_remaining=True))
            for inst in instances:
                sop = _value(inst, "SOPInstanceUID")
                if sop:
                    refs.append(InstanceRef(study_uid, series_uid, sop, modality))
        return refs

    # ------------------------------------------------------------------ retrieval

    def fetch(self, refs: Sequence[InstanceRef], cache: InstanceCacheLike) -> int:
        received = 0
        for ref in refs:
            ds = self._call(f"WADO-RS retrieve of {ref.modality} {ref.sop_uid}", lambda r=ref: (
                self._client.retrieve_instance(r.study_uid, r.series_uid, r.sop_uid)))
            sop = str(ds.get("SOPInstanceUID", ""))
            if sop != ref.sop_uid:
                raise ArchiveError(f"{self.url}: asked for instance {ref.sop_uid}, received {sop or 'no UID'}")
            received += cache.store_bytes(sop, _part10(ds))
        return received

    def _call(self, what: str, call: Any) -> Any:
        import requests

        try:
            return call()
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                raise ArchiveUnavailable(
                    f"{self.url}: authentication refused (HTTP {status}) for {self._describe_credentials()}"
                ) from None
            if status in _TRANSIENT_STATUS:
                raise TransientArchiveError(f"{what}: {self.url} answered HTTP {status}") from None
            raise ArchiveError(f"{what}: {self.url} answered HTTP {status}") from None
        except requests.exceptions.SSLError as exc:
            raise ArchiveUnavailable(f"{self.url}: TLS verification failed ({short_reason(exc)}); if the archive "
                                     "uses a hospital CA, trust it with --ca-file") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientArchiveError(f"{what}: {self.url}: {short_reason(exc)}") from None
        except (ValueError, KeyError) as exc:  # a reply that is not DICOM JSON / multipart DICOM
            raise ArchiveError(f"{what}: {self.url} sent an unreadable reply ({short_reason(exc)})") from None

    def _describe_credentials(self) -> str:
        c = self._credentials
        if c.username:
            return f"user {c.username!r} (from {c.origin})"
        if c.token:
            return f"the token from {c.origin}"
        return ("no credentials (set SBRT_ARCHIVE_USER and SBRT_ARCHIVE_PASSWORD, or use --archive-config)")


def _session_with_timeout(timeout_s: float) -> Any:
    """A requests session whose requests time out after ``timeout_s`` and verify TLS as the session says.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override ``session.verify``; passing it with
    each request keeps ``--ca-file`` in force where those variables are set (many hospital machines).
    """
    import requests

    class _Session(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout_s
            if kwargs.get("verify") is None:
                kwargs["verify"] = self.verify
            return super().request(*args, **kwargs)

    return _Session()


def _value(item: Mapping[str, Any], keyword: str) -> str:
    """First value of ``keyword`` in a DICOM JSON object ('' when absent); person names as text."""
    element = item.get(_TAGS[keyword]) or {}
    values = element.get("Value") or []
    if not values:
        return ""
    first = values[0]
    if isinstance(first, Mapping):  # PN: {"Alphabetic": "Doe^Jane"}
        return str(first.get("Alphabetic", ""))
    return str(first)


def _values(item: Mapping[str, Any], keyword: str) -> tuple[str, ...]:
    element = item.get(_TAGS[keyword]) or {}
    return tuple(str(v) for v in element.get("Value") or [])


def _series_selected(item: Mapping[str, Any], series_filters: Mapping[str, str]) -> bool:
    return all(matches(_value(item, key), pattern) for key, pattern in series_filters.items())


def _part10(ds: Any) -> bytes:
    """The dataset as DICOM Part 10 bytes (file meta added when the reply had none)."""
    from sbrtstandards.dicom.common import PYDICOM_MAJOR

    buffer = io.BytesIO()
    if PYDICOM_MAJOR >= 3:
        ds.save_as(buffer, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.4
        ds.save_as(buffer, write_like_original=False)
    return buffer.getvalue()
