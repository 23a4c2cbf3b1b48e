"""``sbrt batch``: ``check`` (and ``compare``) over a folder tree of cases, on a Dask cluster."""

from __future__ import annotations

import re

import click

from sbrtstandards.cli.common import emit_json, info, json_option, progress_bar, quiet_option
from sbrtstandards.errors import InputError

_NETWORK_ROOT = re.compile(r"^(https?|dimse)://", re.IGNORECASE)


@click.command(name="batch")
@click.argument("root", metavar="ROOT")
@click.option("--protocol", "protocol_id", required=True, metavar="ID", help="Protocol id (see `sbrt protocols`).")
@click.option("--out", "out_dir", required=True, metavar="DIR", help="Output folder (results.csv, summary.html).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Address of a running Dask scheduler (tcp://host:8786); default: a local cluster.")
@click.option("--workers", type=click.IntRange(0, 256), default=None, metavar="N",
              help="Worker processes of the local cluster (default: the CPU count, at most 8; 0: no Dask, "
                   "run in this process).")
@click.option("--resume", is_flag=True, help="Finish a killed run in DIR: keep finished cases, retry failed ones.")
@click.option("--rx-gy", type=float, default=None, metavar="D", help="Prescription (Gy) for cases without an RTPLAN.")
@click.option("--fractions", type=click.IntRange(1, 60), default=None, metavar="N",
              help="Fractions for cases without an RTPLAN.")
@click.option("--site-class", type=click.Choice(["peripheral", "central", "ultracentral"]), default=None,
              help="Tumour location class of every case.")
@click.option("--map", "maps", multiple=True, metavar="NAME=ROLE", help="Assign a structure name to a role.")
@click.option("--condition", "condition_texts", multiple=True, metavar="KEY=VALUE",
              help="Plan facts that rules depend on (as for `sbrt check`).")
@click.option("--tolerance-mm", type=click.FloatRange(0.0, 50.0), default=2.0, show_default=True,
              help="Surface Dice tolerance of the comparisons with reference sets.")
@click.option("--protocol-dir", "protocol_dirs", multiple=True, metavar="DIR", help="Folder of your own protocols.")
@click.option("--query", "queries", multiple=True, metavar="KEY=VALUE", hidden=True)
@click.option("--aet", default=None, metavar="AET", hidden=True)
@json_option
@quiet_option
def batch(
    root: str,
    protocol_id: str,
    out_dir: str,
    scheduler: str | None,
    workers: int | None,
    resume: bool,
    rx_gy: float | None,
    fractions: int | None,
    site_class: str | None,
    maps: tuple[str, ...],
    condition_texts: tuple[str, ...],
    tolerance_mm: float,
    protocol_dirs: tuple[str, ...],
    queries: tuple[str, ...],
    aet: str | None,
    json_path: str | None,
    quiet: bool,
) -> None:
    """Run `check` on every case under ROOT (and `compare` where a reference set exists).

    A case is a folder holding an RTSTRUCT and an RTDOSE (or RTPLAN); a second RTSTRUCT whose
    file name or label says REF/reference is its reference set. Writes DIR/results.csv (one row
    per case and constraint, plan metric or agreement metric; a failed case is one row with its
    error) and DIR/summary.html. Killed at any moment, run it again with --resume.

    Example: sbrt batch /data/sbrt_cases --protocol cn-lung-sbrt --out audit --workers 2
    """
    from sbrtstandards.batch import BatchOptions, run_batch
    from sbrtstandards.check import parse_conditions
    from sbrtstandards.names import parse_map_options

    if _NETWORK_ROOT.match(root) or queries or aet:
        raise InputError(f"ROOT {root}: DICOMweb and DIMSE sources (--query, --aet) are not available in this "
                         "version; give a folder")
    if (rx_gy is None) != (fractions is None):
        raise InputError("give --rx-gy and --fractions together (they apply to cases without an RTPLAN)")
    mapping = tuple(sorted(parse_map_options(maps).items()))
    conditions = tuple(sorted(parse_conditions(condition_texts).items()))
    options = BatchOptions(protocol_id=protocol_id, rx_gy=rx_gy, fractions=fractions, site_class=site_class,
                           mapping=mapping, conditions=conditions, tolerance_mm=tolerance_mm,
                           protocol_dirs=tuple(protocol_dirs))
    with progress_bar("batch", quiet) as progress:
        run = run_batch(root, out_dir, options, scheduler=scheduler, workers=workers, resume=resume,
                        progress=progress)
    emit_json(run.to_json(), json_path)
    if not quiet and json_path != "-":
        info(f"{run.cases} cases ({run.ran} run, {run.skipped} kept), {run.failed} failed, {run.rows} rows in "
             f"{run.seconds:.1f} s", json_path)
        for f in run.failures[:10]:
            info(f"  failed: {f['error']}", json_path)
        info(f"results: {run.results}", json_path)
        info(f"summary: {run.summary_html}", json_path)
