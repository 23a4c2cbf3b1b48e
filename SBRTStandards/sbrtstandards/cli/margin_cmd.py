"""``sbrt margin``: grow or shrink one structure by an exact Euclidean margin."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option, quiet_option


@click.command(name="margin")
@click.option("--rtstruct", required=True, metavar="RS", help="Input RTSTRUCT file (never modified).")
@click.option("--structure", required=True, metavar="NAME", help="Structure to grow or shrink.")
@click.option(
    "--mm",
    "mm",
    required=True,
    metavar="MM|R,L,A,P,S,I",
    help="Margin in mm: one value (isotropic) or six in R,L,A,P,S,I order (0-50 mm each).",
)
@click.option(
    "--shrink", is_flag=True, help="Shrink instead of grow (each side moves inwards by its margin)."
)
@click.option(
    "--out",
    "out_path",
    required=True,
    metavar="RS_OUT",
    help="New RTSTRUCT: the input structures plus the result.",
)
@click.option(
    "--result",
    "result_name",
    default=None,
    metavar="NAME",
    help="Name of the new structure (default NAME+5mm, NAME-5mm or NAME+asym).",
)
@click.option(
    "--ct",
    "ct_dir",
    default=None,
    metavar="DIR",
    help="The CT series: sample the result on its grid and reference its slices.",
)
@json_option
@quiet_option
def margin(
    rtstruct: str,
    structure: str,
    mm: str,
    shrink: bool,
    out_path: str,
    result_name: str | None,
    ct_dir: str | None,
    json_path: str | None,
    quiet: bool,
) -> None:
    """Grow (or shrink) one structure by an exact Euclidean margin and write it as a new ROI.

    The distance is Euclidean in mm on the structure's contours, so a 5 mm margin is 5 mm in
    every direction whatever the slice spacing.

    Example: sbrt margin --rtstruct RS.dcm --structure ITV --mm 5 --result PTV --out RS_PTV.dcm
    """
    from sbrtstandards.margins import Margin
    from sbrtstandards.structure_margin import margin_structure

    result = margin_structure(
        rtstruct, structure, Margin.parse(mm), out_path, shrink=shrink, result_name=result_name, ct_dir=ct_dir
    ).json
    emit_json(result, json_path)
    if not quiet and json_path != "-":
        info(
            f"{result['result']}: {result['volume_cc']:.2f} cc (from {result['structure']} "
            f"{result['input_volume_cc']:.2f} cc) written to {result['rtstruct']}",
            json_path,
        )
