"""``sbrt gamma``: 3D gamma analysis of an evaluated dose against a reference dose (patient-specific QA)."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option, progress_bar, quiet_option


@click.command(name="gamma")
@click.option("--reference", required=True, metavar="RD", help="Reference RTDOSE (e.g. the TPS dose on the phantom).")
@click.option("--evaluated", required=True, metavar="RD", help="Evaluated RTDOSE (measured or recomputed).")
@click.option("--dose-percent", type=float, default=2.0, show_default=True, help="Dose-difference criterion (%).")
@click.option("--distance-mm", type=float, default=2.0, show_default=True, help="Distance-to-agreement criterion (mm).")
@click.option(
    "--cutoff-percent",
    type=float,
    default=10.0,
    show_default=True,
    help="Low-dose threshold: reference points below this % of the normalisation dose are not evaluated.",
)
@click.option("--local", is_flag=True, help="Local gamma: the dose criterion is a % of each point's reference dose.")
@click.option(
    "--normalisation-gy",
    type=float,
    default=None,
    metavar="GY",
    help="Global normalisation dose (default: the maximum reference dose).",
)
@click.option(
    "--max-gamma",
    type=float,
    default=None,
    metavar="G",
    help="Stop searching beyond this gamma (faster on bad pairs; larger values are reported as found).",
)
@click.option(
    "--threshold-percent",
    type=float,
    default=None,
    metavar="P",
    help="Pass-rate level (default: > 95 % pass, > 90 % minor, from the standards catalogue).",
)
@click.option(
    "--ignore-frame-of-reference",
    is_flag=True,
    help="Compare doses of different Frames of Reference at their file positions (a phantom measurement).",
)
@json_option
@quiet_option
def gamma(
    reference: str,
    evaluated: str,
    dose_percent: float,
    distance_mm: float,
    cutoff_percent: float,
    local: bool,
    normalisation_gy: float | None,
    max_gamma: float | None,
    threshold_percent: float | None,
    ignore_frame_of_reference: bool,
    json_path: str | None,
    quiet: bool,
) -> None:
    """3D gamma (global by default, 2 %/2 mm, 10 % low-dose threshold) and the pass rate against > 95 %.

    Doses are read in Gy from the RTDOSE files; the evaluated dose is interpolated trilinearly
    and searched around each reference voxel (see sbrtstandards.gamma).

    Example: sbrt gamma --reference RD_tps.dcm --evaluated RD_measured.dcm --json gamma.json
    """
    from sbrtstandards.gamma import GammaCriteria, gamma_files

    criteria = GammaCriteria(
        dose_percent=dose_percent,
        distance_mm=distance_mm,
        cutoff_percent=cutoff_percent,
        local=local,
        normalisation_gy=normalisation_gy,
        max_gamma=max_gamma,
    )
    with progress_bar("gamma", quiet) as progress:
        result = gamma_files(
            reference,
            evaluated,
            criteria,
            threshold_percent=threshold_percent,
            check_frame_of_reference=not ignore_frame_of_reference,
            progress=progress,
        )
    emit_json(result.to_json(), json_path)
    kind = "local" if local else "global"
    head = f"gamma {dose_percent:g} %/{distance_mm:g} mm {kind}, cutoff {cutoff_percent:g} %"
    if result.pass_rate_percent is None:
        info(f"{head}: no point evaluated ({result.points_above_cutoff} above the cutoff) - not_evaluated", json_path,
             quiet)
    else:
        info(
            f"{head}: {result.pass_rate_percent:.2f} % of {result.points_evaluated} points pass (gamma <= 1); "
            f"max {result.gamma_max:.2f}, mean {result.gamma_mean:.2f} - {result.status} "
            f"(level > {result.levels.threshold_percent:g} %)",
            json_path,
            quiet,
        )
    for warning in result.warnings:
        info(f"warning: {warning}", json_path, quiet)
