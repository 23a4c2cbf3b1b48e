"""``sbrt fourd``: MIP/AVG/MinIP, ITV (union of phase GTVs) and PTV from a 4D-CT."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option, progress_bar, quiet_option


@click.command(name="fourd")
@click.argument("phases", nargs=-1, required=True, type=click.Path(), metavar="PHASE...")
@click.option(
    "--gtv", "gtv_name", required=True, metavar="NAME", help="Name of the GTV in each phase's RTSTRUCT."
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Output folder: MIP/, AVG/, MinIP/ and RS_ITV_PTV.dcm.",
)
@click.option(
    "--ptv-margin",
    default="5",
    show_default=True,
    metavar="MM|R,L,A,P,S,I",
    help="PTV = ITV + this margin: one value (isotropic) or six, in R,L,A,P,S,I order.",
)
@click.option(
    "--resample",
    is_flag=True,
    help="Resample phases whose grid differs from the first phase's (default: refuse them).",
)
@click.option(
    "--assist",
    type=click.Choice(["mip", "minip"]),
    default=None,
    help="Also write ITV_assist: a threshold of the MIP (lung) or MinIP (liver) to edit.",
)
@json_option
@quiet_option
def fourd(
    phases: tuple[str, ...],
    gtv_name: str,
    out_dir: str,
    ptv_margin: str,
    resample: bool,
    assist: str | None,
    json_path: str | None,
    quiet: bool,
) -> None:
    """Build the 4D-CT projections, the ITV on the AVG and the PTV.

    Each PHASE is a folder with one phase CT series and that phase's RTSTRUCT, or give one
    folder holding the whole 4D-CT (phases are told apart by series, by the phase percent in
    the description, or by temporal position).

    Example: sbrt fourd case/phase_* --gtv GTV --out case/4d --ptv-margin 5 --json -
    """
    from sbrtstandards.fourdct import run_fourd
    from sbrtstandards.margins import Margin

    margin = Margin.parse(ptv_margin)
    with progress_bar("fourd", quiet) as progress:
        result = run_fourd(
            phases, gtv_name, out_dir, ptv_margin=margin, resample=resample, assist=assist, progress=progress
        )
    out = result.json
    emit_json(out, json_path)
    if json_path != "-" and not quiet:
        info(
            f"ITV {out['itv_cc']:.2f} cc, PTV {out['ptv_cc']:.2f} cc; motion LR {out['motion_mm']['LR']:.1f} "
            f"AP {out['motion_mm']['AP']:.1f} SI {out['motion_mm']['SI']:.1f} mm; written to {out_dir}",
            json_path,
        )
        for w in out["warnings"]:
            click.echo(f"warning: {w}", err=True)
