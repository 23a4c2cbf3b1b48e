"""DIMSE archive: C-FIND (Study Root) to find, C-GET or C-MOVE to retrieve (pynetdicom).

C-GET brings the instances back on the same association (nothing to open on this machine); a
PACS that only offers C-MOVE sends them to a storage SCP that this client runs on ``move_port``
under the calling AE title (the PACS must know that title, host and port). The SCP accepts only
the instances that the run asked for.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sbrtstandards.archive.address import ArchiveAddress, matches
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
from sbrtstandards.errors import InputError

_PENDING = (0xFF00, 0xFF01)
_REFUSED_NOT_AUTHORISED = 0x0124  # C-STORE status for an instance this run did not ask for
_STORAGE_CLASSES = ("RTStructureSetStorage", "RTDoseStorage", "RTPlanStorage", "RTIonPlanStorage")


class DimseArchive:
    """C-FIND/C-GET (or C-MOVE) against ``address`` as ``calling_aet``."""

    def __init__(self, address: ArchiveAddress, *, calling_aet: str, timeout_s: float = 60.0,
                 retrieve: str = "get", move_port: int | None = None) -> None:
        from pynetdicom import AE

        if retrieve not in ("get", "move"):
            raise ValueError(retrieve)
        if retrieve == "move" and not move_port:
            raise ArchiveUnavailable("--retrieve move needs --move-port (the port the archive sends the instances to)")
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # its logs would carry identifiers
        self.url = address.url
        self._address = address
        self._calling = calling_aet
        self._retrieve = retrieve
        self._timeout_s = timeout_s
        self._ae = AE(ae_title=calling_aet)
        for attr in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            if hasattr(self._ae, attr):
                setattr(self._ae, attr, timeout_s)
        self._cache: InstanceCacheLike | None = None
        self._expected: set[str] = set()
        self._received = 0
        self._lock = threading.Lock()
        self._server: Any = None
        if retrieve == "move":
            self._start_store_scp(int(move_port or 0))

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # ------------------------------------------------------------------ queries

    def find_studies(self, filters: Mapping[str, str]) -> list[StudyRecord]:
        query = _identifier("STUDY", **dict.fromkeys(STUDY_RETURN_KEYS, ""))
        for key, value in filters.items():
            setattr(query, key, value)
        with self._association() as assoc:
            found = self._find(assoc, query, "C-FIND of studies")
        records = []
        for ds in found:
            modalities = ds.get("ModalitiesInStudy", None) or ()
            modalities = (modalities,) if isinstance(modalities, str) else tuple(str(m) for m in modalities)
            records.append(StudyRecord(_text(ds, "StudyInstanceUID"), _text(ds, "StudyDate"), _text(ds, "PatientID"),
                                       _text(ds, "PatientName"), _text(ds, "StudyDescription"),
                                       _text(ds, "AccessionNumber"), modalities))
        return select_studies(records, filters, list(filters), self.url)

    def find_rt_instances(self, study_uid: str, series_filters: Mapping[str, str]) -> list[InstanceRef]:
        refs: list[InstanceRef] = []
        with self._association() as assoc:
            series = self._find(assoc, _identifier("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID="",
                                                   Modality="", SeriesDescription=""),
                                f"C-FIND of the series of study {study_uid}")
            for item in series:
                modality = _text(item, "Modality").upper()
                series_uid = _text(item, "SeriesInstanceUID")
                if modality not in RT_MODALITIES or not series_uid:
                    continue
                if not all(matches(_text(item, k), p) for k, p in series_filters.items()):
                    continue
                instances = self._find(assoc, _identifier("IMAGE", StudyInstanceUID=study_uid,
                                                          SeriesInstanceUID=series_uid, SOPInstanceUID=""),
                                       f"C-FIND of the instances of series {series_uid}")
                for inst in instances:
                    sop = _text(inst, "SOPInstanceUID")
                    if sop:
                        refs.append(InstanceRef(study_uid, series_uid, sop, modality))
        return refs

    # ------------------------------------------------------------------ retrieval

    def fetch(self, refs: Sequence[InstanceRef], cache: InstanceCacheLike) -> int:
        from pynetdicom.sop_class import (
            StudyRootQueryRetrieveInformationModelGet,
            StudyRootQueryRetrieveInformationModelMove,
        )

        with self._lock:
            self._cache, self._expected, self._received = cache, {r.sop_uid for r in refs}, 0
        try:
            with self._association() as assoc:
                for ref in refs:
                    query = _identifier("IMAGE", StudyInstanceUID=ref.study_uid, SeriesInstanceUID=ref.series_uid,
                                        SOPInstanceUID=ref.sop_uid)
                    what = f"C-{self._retrieve.upper()} of {ref.modality} {ref.sop_uid}"
                    if self._retrieve == "get":
                        replies = assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
                    else:
                        replies = assoc.send_c_move(query, self._calling, StudyRootQueryRetrieveInformationModelMove)
                    self._final_status(assoc, replies, what)
                    if not cache.has(ref.sop_uid):
                        raise ArchiveError(f"{what}: {self.url} reported success but sent no instance")
            return self._received
        finally:
            with self._lock:
                self._cache, self._expected = None, set()

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _association(self) -> Iterator[Any]:
        from pynetdicom import build_role, evt, sop_class

        self._ae.requested_contexts = []
        self._ae.add_requested_context(sop_class.StudyRootQueryRetrieveInformationModelFind)
        roles = []
        if self._retrieve == "get":
            self._ae.add_requested_context(sop_class.StudyRootQueryRetrieveInformationModelGet)
            for name in _STORAGE_CLASSES:
                uid = getattr(sop_class, name)
                self._ae.add_requested_context(uid)
                roles.append(build_role(uid, scp_role=True))
        else:
            self._ae.add_requested_context(sop_class.StudyRootQueryRetrieveInformationModelMove)
        a = self._address
        try:
            assoc = self._ae.associate(a.host, a.port, ae_title=a.called_aet, ext_neg=roles,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        except (OSError, RuntimeError) as exc:
            raise TransientArchiveError(f"{self.url}: {short_reason(exc)}") from None
        if not assoc.is_established:
            if assoc.is_rejected:
                raise self._rejected(assoc)
            raise TransientArchiveError(f"{self.url}: no association (connection refused, aborted or timed out)")
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _rejected(self, assoc: Any) -> InputError:
        answer = getattr(assoc.acceptor, "primitive", None)
        result, source, reason = (getattr(answer, k, None) for k in ("result", "result_source", "diagnostic"))
        a = self._address
        if result == 0x02:  # rejected, transient (busy, too many associations)
            reason_text = getattr(answer, "reason_str", "")
            return TransientArchiveError(f"{self.url}: association rejected for now ({reason_text})")
        if source == 0x01 and reason == 0x07:
            why = f"the archive does not recognise the called AE title {a.called_aet!r}"
        elif source == 0x01 and reason == 0x03:
            why = (f"the archive does not know the calling AE title {self._calling!r} (--aet) from this host; "
                   "register this tool (AE title, host, port) in the archive")
        else:
            why = (f"check the called AE title {a.called_aet!r} and that the archive knows the calling AE title "
                   f"{self._calling!r} (--aet) and this host")
        return ArchiveUnavailable(f"{self.url}: association rejected: {why}")

    def _find(self, assoc: Any, query: Any, what: str) -> list[Any]:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        found = []
        final = None
        started = time.monotonic()
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            code = _status(status)
            if code is None:
                raise self._lost(assoc, what, started)
            if code in _PENDING:
                if identifier is not None:
                    found.append(identifier)
                continue
            final = code
        if final is None:
            raise TransientArchiveError(f"{what}: {self.url} sent no final status")
        if final != 0x0000:
            raise _status_error(final, what, self.url)
        return found

    def _final_status(self, assoc: Any, replies: Any, what: str) -> None:
        final = None
        started = time.monotonic()
        for status, _ in replies:
            code = _status(status)
            if code is None:
                raise self._lost(assoc, what, started)
            if code not in _PENDING:
                final = code
        if final is None:
            raise TransientArchiveError(f"{what}: {self.url} sent no final status")
        if final != 0x0000:
            raise _status_error(final, what, self.url)

    def _lost(self, assoc: Any, what: str, started: float) -> TransientArchiveError:
        # pynetdicom flags the abort a moment after it hands back the empty status: tell by the time taken
        if assoc.is_aborted or time.monotonic() - started < 0.9 * self._timeout_s:
            return TransientArchiveError(
                f"{what}: {self.url} aborted the association (does it allow the calling AE title {self._calling!r} "
                "(--aet) to query and retrieve from this host?)")
        return TransientArchiveError(f"{what}: {self.url} stopped answering (timed out)")

    def _on_store(self, event: Any) -> int:
        sop = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            cache, wanted = self._cache, sop in self._expected
        if cache is None or not wanted:
            return _REFUSED_NOT_AUTHORISED
        try:
            size = cache.store_bytes(sop, _encoded(event))
        except (OSError, ArchiveError):
            return 0xA700  # out of resources: the sender reports a failed sub-operation
        with self._lock:
            self._received += size
        return 0x0000

    def _start_store_scp(self, port: int) -> None:
        from pynetdicom import AE, evt, sop_class

        scp = AE(ae_title=self._calling)
        for name in _STORAGE_CLASSES:
            scp.add_supported_context(getattr(sop_class, name))
        try:
            self._server = scp.start_server(("", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        except OSError as exc:
            raise ArchiveUnavailable(f"--move-port {port}: cannot listen ({short_reason(exc)})") from None


def _identifier(level: str, **keys: str) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "") if ds is not None else ""
    return "" if value is None else str(value).strip()


def _status(status: Any) -> int | None:
    """The Status of a reply, or None for the empty dataset pynetdicom returns when the association died."""
    if status is None or "Status" not in status:
        return None
    return int(status.Status)


def _status_error(code: int, what: str, url: str) -> ArchiveError:
    text = f"{what}: {url} answered status 0x{code:04X}"
    if code in (0xA700, 0xA701, 0xA702):
        return TransientArchiveError(text + " (out of resources)")
    if code == 0xA801:
        return ArchiveUnavailable(text + " (move destination unknown: register this tool's AE title, host and "
                                         "--move-port in the archive)")
    if code == 0xB000:
        return ArchiveError(text + " (some instances were not sent)")
    return ArchiveError(text)


def _encoded(event: Any) -> bytes:
    """The received instance as Part 10 bytes (pynetdicom >= 2.0)."""
    data = event.encoded_dataset(include_meta=True)
    return bytes(data)
