"""``sbrt demo``: the whole chain on the bundled synthetic 4D-CT cases, ending in a report."""

from __future__ import annotations

import os
import sys
import webbrowser

import click

from sbrtstandards.cli.common import emit_json, info, json_option, progress_bar, quiet_option


@click.command(name="demo")
@click.option(
    "--out",
    "out_dir",
    default="sbrt-demo",
    show_default=True,
    metavar="DIR",
    help="Folder for the synthetic cases, the results and report.html.",
)
@click.option(
    "--phases",
    default=10,
    show_default=True,
    type=click.IntRange(2, 20),
    help="Breathing phases of each synthetic 4D-CT.",
)
@click.option("--open", "open_report", is_flag=True, help="Open report.html in the web browser when done.")
@json_option
@quiet_option
def demo(out_dir: str, phases: int, open_report: bool, json_path: str | None, quiet: bool) -> None:
    """Write the synthetic lung and liver cases to DIR, run the pipeline, write DIR/report.html.

    No network and no data outside the package are used.

    Example: sbrt demo --out sbrt-demo --open
    """
    from sbrtstandards.demo import run_demo

    with progress_bar("demo", quiet) as progress:
        result = run_demo(out_dir, phases=phases, progress=progress)
    emit_json(
        {
            "out_dir": result.out_dir,
            "report": result.report_path,
            "cases": [{"site": c.site, "folder": c.root} for c in result.cases],
            "results": result.results,
        },
        json_path,
    )
    info(f"report: {result.report_path}", json_path, quiet=False)
    if open_report:
        if _has_display() and webbrowser.open(result.report_path.as_uri()):
            return
        click.echo("(no display or web browser here: open the report above in a browser)", err=True)


def _has_display() -> bool:
    """A desktop to open a browser on (always on macOS and Windows; X11 or Wayland on Linux)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
