"""What every subcommand shares: JSON output, progress on standard error, path options."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import numpy as np

from sbrtstandards.atomic import write_text_atomic

ProgressCallback = Callable[[float, str], None]

json_option = click.option(
    "--json",
    "json_path",
    metavar="PATH",
    help="Write the machine-readable result to PATH ('-' for standard output).",
)
quiet_option = click.option("--quiet", is_flag=True, help="No progress output on standard error.")


def to_jsonable(value: Any) -> Any:
    """Plain JSON types; numpy scalars and arrays converted, NaN/inf refused (use None + reason)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        if not math.isfinite(f):
            raise ValueError("non-finite number in JSON output; report null with a reason instead")
        return f
    return value


def emit_json(result: dict[str, Any], json_path: str | None) -> None:
    """Write ``result`` to ``json_path`` atomically, or to standard output for ``-``."""
    if not json_path:
        return
    text = json.dumps(to_jsonable(result), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if json_path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text_atomic(json_path, text)


def info(message: str, json_path: str | None, quiet: bool = False) -> None:
    """A human-readable line: standard output unless it carries JSON (then standard error)."""
    if quiet:
        return
    click.echo(message, err=(json_path == "-"))


@contextmanager
def progress_bar(description: str, quiet: bool = False) -> Iterator[ProgressCallback]:
    """A ``progress(fraction, message)`` callback drawing a tqdm bar on a terminal's stderr."""
    if quiet or not sys.stderr.isatty():
        yield lambda fraction, message: None
        return
    from tqdm import tqdm

    bar = tqdm(
        total=1000, desc=description, file=sys.stderr, leave=False, bar_format="{l_bar}{bar}| {postfix}"
    )
    try:

        def update(fraction: float, message: str) -> None:
            bar.n = int(max(0.0, min(1.0, fraction)) * 1000)
            bar.set_postfix_str(message, refresh=False)
            bar.refresh()

        yield update
    finally:
        bar.close()
