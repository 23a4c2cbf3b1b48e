"""Open an archive source for ``sbrt batch``: options, credentials, the client, the cache, the studies."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbrtstandards.archive.address import (
    ArchiveAddress,
    check_ae_title,
    load_credentials,
    parse_address,
    parse_queries,
)
from sbrtstandards.archive.cache import InstanceCache
from sbrtstandards.archive.cases import ArchiveStats, Progress, StudyLedger, find_studies, study_cases
from sbrtstandards.batch import Case
from sbrtstandards.errors import InputError

DEFAULT_CALLING_AET = "SBRTSTANDARDS"
CACHE_DIR = "cache"
STUDIES_DIR = "studies"  # which cases each study gave (for --resume)


@dataclass(frozen=True)
class ArchiveOptions:
    """How to reach the archive and what to take from it (the archive options of ``sbrt batch``)."""

    queries: tuple[str, ...] = ()  # --query KEY=VALUE
    calling_aet: str = DEFAULT_CALLING_AET  # --aet (DIMSE)
    retrieve: str = "get"  # --retrieve get|move (DIMSE)
    move_port: int | None = None  # --move-port (DIMSE C-MOVE)
    timeout_s: float = 60.0  # --timeout: per request / DIMSE message
    attempts: int = 3  # --retries: attempts per call, back-off 1 s, 2 s, 4 s...
    backoff_s: float = 1.0
    ca_file: str | None = None  # --ca-file: trust this CA (PEM) for HTTPS
    config: str | None = None  # --archive-config: the credentials file
    cache_dir: str | None = None  # --cache: default DIR/cache


class ArchiveSource:
    """An archive opened for a batch: queried at once (so a bad address or query fails before DIR is touched)."""

    def __init__(self, address: ArchiveAddress, options: ArchiveOptions, out: Path, include_identifiers: bool,
                 progress: Progress | None = None) -> None:
        query = parse_queries(options.queries)
        check_ae_title(options.calling_aet, "--aet")
        if options.ca_file and not Path(options.ca_file).is_file():
            raise InputError(f"--ca-file {options.ca_file}: no such file")
        for name in ("dicomweb_client", "pynetdicom", "urllib3", "retrying"):
            # their logs carry query URLs (a patient ID typed in --query) and UIDs; our errors say what failed
            logging.getLogger(name).setLevel(logging.CRITICAL)
        credentials = load_credentials(address, options.config)
        if address.kind == "dicomweb":
            from sbrtstandards.archive.dicomweb import DicomWebArchive

            self._archive: Any = DicomWebArchive(address, credentials, timeout_s=options.timeout_s,
                                                 ca_file=options.ca_file)
        else:
            from sbrtstandards.archive.dimse import DimseArchive

            self._archive = DimseArchive(address, calling_aet=options.calling_aet, timeout_s=options.timeout_s,
                                         retrieve=options.retrieve, move_port=options.move_port)
        self.root = address.url
        self.kind = address.kind
        self.settings = {"kind": address.kind, "query": query.to_json()}
        self.stats = ArchiveStats()
        self._options = options
        self._query = query
        self._include_identifiers = include_identifiers
        self._out = out
        self._cache_root = Path(options.cache_dir).resolve() if options.cache_dir else out / CACHE_DIR
        self._cache: InstanceCache | None = None
        try:
            if progress is not None:
                progress(0.0, f"querying {self.root}")
            self._studies = find_studies(self._archive, query, attempts=options.attempts,
                                         backoff_s=options.backoff_s, stats=self.stats)
        except BaseException:
            self.close()
            raise
        if not self._studies:
            self.close()
            raise InputError(f"{self.root}: no study matches the query ({query.describe()})")
        self.expected = len(self._studies)

    def cases(self, progress: Progress | None = None, done: Callable[[str], bool] | None = None) -> Iterator[Case]:
        """The cases, study by study; ``done`` (resuming) tells which case keys are finished."""
        self._cache = InstanceCache(self._cache_root)
        o = self._options
        return study_cases(self._archive, self._studies, self._query, self._cache,
                           include_identifiers=self._include_identifiers, attempts=o.attempts, backoff_s=o.backoff_s,
                           stats=self.stats, progress=progress, ledger=StudyLedger(self._out / STUDIES_DIR),
                           done=done)

    def summary(self) -> dict[str, Any]:
        return {**self.stats.to_json(), "cache": str(self._cache_root)}

    def close(self) -> None:
        self._archive.close()


def open_source(text: str, options: ArchiveOptions, out: Path, include_identifiers: bool,
                progress: Progress | None = None) -> ArchiveSource:
    """Parse ``text`` (a DICOMweb URL or ``dimse://AET@host:port``) and open it."""
    return ArchiveSource(parse_address(text), options, out, include_identifiers, progress)
