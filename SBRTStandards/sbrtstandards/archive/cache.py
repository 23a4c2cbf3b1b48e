"""The local copy of fetched instances, one file per SOP Instance UID.

A file is written under a temporary name and renamed when whole, so a run killed during a
transfer leaves no truncated instance; what is in the cache is never fetched again (``--resume``).
The cache holds patient data: it lives in ``DIR/cache`` unless ``--cache`` says where, and is
kept after the run for resuming and re-checking; delete it when the audit is done.
"""

from __future__ import annotations

import os
from pathlib import Path

from sbrtstandards.archive.common import ArchiveError, valid_uid
from sbrtstandards.atomic import atomic_path


class InstanceCache:
    """``root/<SOPInstanceUID>.dcm`` files."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if os.name == "posix":
            os.chmod(self.root, 0o700)  # patient data: the owner only

    def path(self, sop_uid: str) -> Path:
        # A UID becomes a file name: refuse anything else (a server could send '../x').
        if not valid_uid(sop_uid):
            raise ArchiveError(f"the archive sent an invalid SOP Instance UID {sop_uid[:80]!r}")
        return self.root / f"{sop_uid}.dcm"

    def has(self, sop_uid: str) -> bool:
        return self.path(sop_uid).is_file()

    def store_bytes(self, sop_uid: str, data: bytes) -> int:
        """Write one received instance (DICOM Part 10 bytes); returns its size."""
        target = self.path(sop_uid)
        with atomic_path(target, suffix=".dcm") as tmp:
            tmp.write_bytes(data)
        return len(data)

    def count(self) -> int:
        return sum(1 for p in self.root.glob("*.dcm") if valid_uid(p.stem))
