"""``sbrt phantom``: write a synthetic 4D-CT SBRT case (lung or liver) with its known answers."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option, progress_bar, quiet_option


@click.command(name="phantom")
@click.option(
    "--site", type=click.Choice(["lung", "liver"]), required=True, help="Thorax (lung) or upper abdomen (liver)."
)
@click.option(
    "--out", "out_dir", required=True, metavar="DIR", help="Folder to write the case to (new, or a previous case)."
)
@click.option(
    "--phases",
    default=10,
    show_default=True,
    type=click.IntRange(2, 20),
    help="Number of breathing phases (0% = end-inhale, 50% = end-exhale).",
)
@click.option(
    "--amplitude-mm",
    type=click.FloatRange(0.0, 30.0),
    default=None,
    metavar="A",
    help="Peak-to-peak SI excursion of the tumour "
    "[default: 15 peripheral lung, 10 central, 8 ultra-central, 12 liver].",
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the CT noise.")
@click.option(
    "--location",
    type=click.Choice(["peripheral", "central", "ultracentral"]),
    default=None,
    help="Lung tumour location relative to the proximal bronchial tree [default: peripheral].",
)
@click.option("--side", type=click.Choice(["right", "left"]), default=None, help="Lung tumour side [default: right].")
@json_option
@quiet_option
def phantom(
    site: str,
    out_dir: str,
    phases: int,
    amplitude_mm: float | None,
    seed: int,
    location: str | None,
    side: str | None,
    json_path: str | None,
    quiet: bool,
) -> None:
    """Write a synthetic 4D-CT case: N phase CT series with one RTSTRUCT each (the phase GTV),
    the average CT with the planning structures, an RTPLAN, an RTDOSE and DIR/truth.json
    with the known answers (phase GTV volumes and centroids, ITV and PTV volumes, motion).

    Example: sbrt phantom --site lung --out case_lung --phases 10 --amplitude-mm 15
    """
    from sbrtstandards.phantom import write_case

    with progress_bar(f"phantom ({site})", quiet) as progress:
        truth = write_case(
            site,
            out_dir,
            phases=phases,
            amplitude_mm=amplitude_mm,
            seed=seed,
            location=location,
            side=side,
            progress=progress,
        )
    emit_json(truth, json_path)
    motion = truth["motion_mm"]
    info(
        f"{site} case written to {truth['root']}: {phases} phases, ITV {truth['itv_cc']:.2f} cc, "
        f"PTV {truth['ptv_cc']:.2f} cc, motion SI {motion['SI']:.1f} / AP {motion['AP']:.1f} / "
        f"LR {motion['LR']:.1f} mm; answers in truth.json",
        json_path,
        quiet,
    )
