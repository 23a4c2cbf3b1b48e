"""``sbrt batch``: ``check`` (and ``compare``) over a folder tree of cases or a DICOM archive, on a Dask cluster."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option, progress_bar, quiet_option
from sbrtstandards.errors import InputError


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
@click.option("--query", "queries", multiple=True, metavar="KEY=VALUE",
              help="Archive filter: PatientID, PatientName, StudyDate (20250101-20251231), StudyDescription, "
                   "AccessionNumber, StudyInstanceUID, Modality, SeriesDescription (wildcards * ?), SeriesInstanceUID.")
@click.option("--aet", default=None, metavar="AET",
              help="DIMSE: this tool's calling AE title (default SBRTSTANDARDS; the archive must know it).")
@click.option("--retrieve", type=click.Choice(["get", "move"]), default=None,
              help="DIMSE: C-GET (default) or C-MOVE to this tool's storage SCP on --move-port.")
@click.option("--move-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="DIMSE C-MOVE: the port this tool listens on (registered in the archive with --aet).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1.0, 3600.0), default=60.0, show_default=True,
              metavar="SECONDS", help="Archive: time allowed for each request or DIMSE message.")
@click.option("--retries", "attempts", type=click.IntRange(1, 10), default=3, show_default=True, metavar="N",
              help="Archive: attempts per request (waiting 1 s, 2 s, 4 s... between them).")
@click.option("--ca-file", default=None, metavar="PEM", help="DICOMweb over HTTPS: trust this CA certificate file.")
@click.option("--archive-config", default=None, metavar="FILE",
              help="Credentials file (TOML, readable by its owner only); default ~/.config/sbrt/archive.toml.")
@click.option("--cache", "cache_dir", default=None, metavar="DIR",
              help="Archive: where fetched instances are kept (default DIR/cache; holds patient data).")
@click.option("--include-identifiers", is_flag=True,
              help="Put patient ID, patient name and Study Instance UID in results.csv (left out by default).")
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
    retrieve: str | None,
    move_port: int | None,
    timeout_s: float,
    attempts: int,
    ca_file: str | None,
    archive_config: str | None,
    cache_dir: str | None,
    include_identifiers: bool,
    json_path: str | None,
    quiet: bool,
) -> None:
    """Run `check` on every case of ROOT (and `compare` where a reference set exists).

    ROOT is a folder, a DICOMweb base URL (https://host/dicom-web) or dimse://AET@host:port.
    In a folder a case is a folder holding an RTSTRUCT and an RTDOSE (or RTPLAN); in an archive
    it is the RTSTRUCT, RTDOSE and RTPLAN of a study sharing a Frame of Reference. A second
    RTSTRUCT whose file name or label says REF/reference is its reference set. Writes
    DIR/results.csv (one row per case and constraint, plan metric or agreement metric; a failed
    case is one row with its error) and DIR/summary.html. Killed at any moment, run it again
    with --resume. Archive credentials come from SBRT_ARCHIVE_USER/SBRT_ARCHIVE_PASSWORD (or
    SBRT_ARCHIVE_TOKEN) or --archive-config, never from the command line.

    Examples: sbrt batch /data/sbrt_cases --protocol cn-lung-sbrt --out audit --workers 2;
    sbrt batch https://pacs/dicom-web --query StudyDate=20250101-20251231 --protocol cn-lung-sbrt --out audit
    """
    from sbrtstandards.archive.address import is_archive_source
    from sbrtstandards.archive.connect import DEFAULT_CALLING_AET, ArchiveOptions
    from sbrtstandards.batch import BatchOptions, run_batch
    from sbrtstandards.check import parse_conditions
    from sbrtstandards.names import parse_map_options

    archive_only = {"--query": bool(queries), "--aet": aet is not None, "--retrieve": retrieve is not None,
                    "--move-port": move_port is not None, "--ca-file": ca_file is not None,
                    "--archive-config": archive_config is not None, "--cache": cache_dir is not None}
    if not is_archive_source(root) and any(archive_only.values()):
        given = ", ".join(k for k, v in archive_only.items() if v)
        raise InputError(f"{given}: for DICOMweb and DIMSE sources only; ROOT {root} is a folder")
    archive = ArchiveOptions(queries=tuple(queries), calling_aet=aet or DEFAULT_CALLING_AET,
                             retrieve=retrieve or "get", move_port=move_port, timeout_s=timeout_s, attempts=attempts,
                             ca_file=ca_file, config=archive_config, cache_dir=cache_dir)
    if archive.retrieve == "move" and move_port is None:
        raise InputError("--retrieve move needs --move-port (the port the archive sends the instances to)")
    if (rx_gy is None) != (fractions is None):
        raise InputError("give --rx-gy and --fractions together (they apply to cases without an RTPLAN)")
    mapping = tuple(sorted(parse_map_options(maps).items()))
    conditions = tuple(sorted(parse_conditions(condition_texts).items()))
    options = BatchOptions(protocol_id=protocol_id, rx_gy=rx_gy, fractions=fractions, site_class=site_class,
                           mapping=mapping, conditions=conditions, tolerance_mm=tolerance_mm,
                           protocol_dirs=tuple(protocol_dirs), include_identifiers=include_identifiers)
    with progress_bar("batch", quiet) as progress:
        run = run_batch(root, out_dir, options, scheduler=scheduler, workers=workers, resume=resume,
                        progress=progress, archive=archive)
    emit_json(run.to_json(), json_path)
    if not quiet and json_path != "-":
        info(f"{run.cases} cases ({run.ran} run, {run.skipped} kept), {run.failed} failed, {run.rows} rows in "
             f"{run.seconds:.1f} s", json_path)
        if run.archive is not None:
            a = run.archive
            info(f"archive: {a['studies']} studies, {a['instances']} RT instances ({a['fetched']} fetched, "
                 f"{a['from_cache']} from the cache {a['cache']})", json_path)
        for f in run.failures[:10]:
            info(f"  failed: {f['error']}", json_path)
        info(f"results: {run.results}", json_path)
        info(f"summary: {run.summary_html}", json_path)
