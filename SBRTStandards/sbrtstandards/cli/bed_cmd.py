"""``sbrt bed``: BED and EQD2 of a fractionation scheme (linear-quadratic model)."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option


@click.command(name="bed")
@click.option("--dose-gy", "dose_gy", required=True, type=float, metavar="D", help="Total physical dose in Gy.")
@click.option("--fractions", required=True, type=int, metavar="N", help="Number of equal fractions.")
@click.option(
    "--alpha-beta",
    "alpha_beta_gy",
    default=10.0,
    show_default=True,
    type=float,
    metavar="AB",
    help="alpha/beta in Gy: 10 tumour, 3 late normal tissue, 2.5 as the Michigan re-irradiation table.",
)
@json_option
def bed(dose_gy: float, fractions: int, alpha_beta_gy: float, json_path: str | None) -> None:
    """BED = D (1 + d / ab) and EQD2 = D (d + ab) / (2 + ab) of D Gy in N fractions of d = D / N.

    Example: sbrt bed --dose-gy 54 --fractions 3 --json -
    (BED 151.2 Gy, EQD2 126 Gy: the lung standard's 54 Gy / 3 fx, BED10 151 Gy.)
    """
    from sbrtstandards.radiobiology import summary

    result = summary(dose_gy, fractions, alpha_beta_gy)
    emit_json(result, json_path)
    info(
        f"{result['dose_gy']:g} Gy / {result['fractions']} fx ({result['dose_per_fraction_gy']:g} Gy per fraction), "
        f"alpha/beta {result['alpha_beta_gy']:g} Gy: BED {result['bed_gy']:g} Gy, EQD2 {result['eqd2_gy']:g} Gy",
        json_path,
    )
