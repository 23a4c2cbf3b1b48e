"""``sbrt batch`` in a child process, SIGKILLed (client, nanny and Dask workers) once some cases are written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# The package's command, launched through a script with a __main__ guard (Dask spawns its workers).
LAUNCHER = (
    "import sys\n"
    "from sbrtstandards.cli.main import SUBCOMMANDS, main\n"
    "SUBCOMMANDS.setdefault('batch', ('sbrtstandards.cli.batch_cmd', 'batch'))\n"
    "if __name__ == '__main__':\n"
    "    main(sys.argv[1:])\n"
)


def kill_batch_after(args: Sequence[str], out: Path, scratch: Path, *, cases: int = 1,
                     env: Mapping[str, str] | None = None, deadline_s: float = 120.0, poll_s: float = 0.02) -> bool:
    """Run ``sbrt batch *args`` (writing ``out``) and kill its process group as soon as ``out/cases`` holds
    ``cases`` case files; True when it was still running then (killed midway), False when it had ended."""
    launcher = scratch / "launch_batch.py"
    launcher.write_text(LAUNCHER)
    proc = subprocess.Popen([sys.executable, str(launcher), "batch", *args], start_new_session=True,
                            env=None if env is None else dict(env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "cases").is_dir() and sum(1 for _ in (out / "cases").glob("*.csv")) >= cases:
                break
            time.sleep(poll_s)
        killed_midway = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    return killed_midway
