"""``sbrt compare``: contour agreement of a test structure set with a reference structure set."""

from __future__ import annotations

from typing import Any

import click

from sbrtstandards.cli.common import emit_json, json_option, progress_bar, quiet_option


@click.command(name="compare")
@click.option("--reference", "reference", required=True, metavar="RS_REF", help="Reference RTSTRUCT (or a folder).")
@click.option("--test", "test", required=True, metavar="RS_TEST", help="RTSTRUCT to assess (or a folder).")
@click.option(
    "--structure",
    "structures",
    multiple=True,
    metavar="NAME",
    help="Compare only this reference structure (repeatable); default: every structure with a counterpart.",
)
@click.option(
    "--tolerance-mm",
    type=click.FloatRange(0.0, 50.0),
    default=2.0,
    show_default=True,
    help="Tolerance of the surface Dice (mm).",
)
@json_option
@quiet_option
def compare(
    reference: str,
    test: str,
    structures: tuple[str, ...],
    tolerance_mm: float,
    json_path: str | None,
    quiet: bool,
) -> None:
    """Dice, Jaccard, HD95, HD, mean surface distance, surface Dice, volume ratio and centroid shift.

    Structures are paired by name, then by normalised name, then by TG-263 role ("Cord" pairs
    with "SpinalCord"). Both sets must share a Frame of Reference; no CT is needed: the
    contours are compared on a common fine lattice (0.25 mm for small targets, up to 1.5 mm for
    a lung), surfaces interpolated between the contour planes, distances sub-voxel.

    Example: sbrt compare --reference RS_expert.dcm --test RS_trainee.dcm --structure GTV
    --structure SpinalCord --tolerance-mm 2 --json agreement.json
    """
    from sbrtstandards.compare import compare_files

    with progress_bar("compare", quiet) as progress:
        result = compare_files(reference, test, structures=structures, tolerance_mm=tolerance_mm,
                               progress=progress)
    emit_json(result.to_json(), json_path)
    if not quiet and json_path != "-":
        _print_table(result)


def _print_table(result: Any) -> None:
    click.echo(f"reference: {result.reference_file}")
    click.echo(f"test:      {result.test_file}")
    head = (f"  {'structure':<18} {'test':<18} {'Dice':>6} {'Jacc':>6} {'HD95':>6} {'HD':>6} {'MSD':>6} "
            f"{'sDSC':>6} {'Vt/Vr':>6} {'shift':>6}")
    click.echo(head + f"   (mm; surface Dice at {result.tolerance_mm:g} mm)")
    for pair in result.pairs:
        a = pair.agreement
        values = [a.dice, a.jaccard, a.hd95_mm, a.hd_mm, a.msd_mm, a.surface_dice, a.volume_ratio,
                  a.centroid_shift_mm]
        cells = " ".join(f"{v:>6.3f}" if v is not None and v < 10 else (f"{v:>6.1f}" if v is not None else f"{'—':>6}")
                         for v in values)
        click.echo(f"  {pair.reference[:18]:<18} {pair.test[:18]:<18} {cells}")
    if result.unmatched_reference:
        click.echo("  no counterpart in the test set: " + ", ".join(result.unmatched_reference))
    if result.unmatched_test:
        click.echo("  not in the reference set: " + ", ".join(result.unmatched_test))
