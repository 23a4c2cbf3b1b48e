"""Independent readers the tests check our DICOM files with (plastimatch's binary from its wheel)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def plastimatch_binary() -> str | None:
    """plastimatch beside the running Python (a venv's bin/, where the PyPI wheel puts it), else on PATH."""
    beside = Path(sys.executable).with_name("plastimatch")
    return str(beside) if beside.exists() else shutil.which("plastimatch")


PLASTIMATCH = plastimatch_binary()
requires_plastimatch = pytest.mark.skipif(PLASTIMATCH is None, reason="plastimatch binary not installed")
