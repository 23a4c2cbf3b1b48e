"""``sbrt oars``: organs at risk by the standards' rules, and the lung tumour location class."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option, progress_bar, quiet_option


@click.command(name="oars")
@click.option("--ct", "ct_path", required=True, type=click.Path(), metavar="DIR",
              help="Planning CT series (the AVG of a 4D-CT): a folder or files.")
@click.option("--rtstruct", "rtstruct_path", required=True, type=click.Path(), metavar="RS",
              help="Structure set on that CT (its ROIs are kept in the output).")
@click.option("--target", required=True, metavar="NAME", help="The ITV or PTV that the rules refer to.")
@click.option("--site", type=click.Choice(["lung", "liver"]), default=None,
              help="Which standard's rules (default: liver if the tumour lies in a liver structure, else lung).")
@click.option("--side", type=click.Choice(["auto", "left", "right"]), default="auto", show_default=True,
              help="Tumour side for the chest wall (auto: from the tumour centroid and the body midline).")
@click.option("--map", "mapping", multiple=True, metavar="NAME=ROLE",
              help="Give a structure's role (e.g. 'Cord=spinal_cord', 'VB=vertebra', 'Aorta_CE=vessel_lumen', "
                   "'Junk=ignore'). Repeatable.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), metavar="RS_OUT",
              help="New RT Structure Set: the input ROIs plus the ones built.")
@click.option("--chest-wall-within-mm", type=float, default=None, metavar="MM",
              help="Keep only the chest wall within MM of the PTV (the standard allows 30).")
@click.option("--skin-mm", type=float, default=5.0, show_default=True,
              help="Skin depth removed from the chest wall.")
@click.option("--cord-prv-mm", type=float, default=None, metavar="MM", help="Also build SpinalCord_PRVnn.")
@json_option
@quiet_option
def oars(
    ct_path: str,
    rtstruct_path: str,
    target: str,
    site: str | None,
    side: str,
    mapping: tuple[str, ...],
    out_path: str,
    chest_wall_within_mm: float | None,
    skin_mm: float,
    cord_prv_mm: float | None,
    json_path: str | None,
    quiet: bool,
) -> None:
    """Build the OARs the SBRT standards derive by rule, and classify a lung tumour.

    Chest wall (ipsilateral lung + 2 cm lateral/anterior/posterior, medially limited by the
    sternum and the vertebral body, without skin), great vessels (+ 5 mm, 3 cm above and
    below the PTV), lungs minus GTV, normal liver, the proximal bronchial tree and its 2 cm
    zone, the D2cm region (body minus PTV + 2 cm); a missing body and missing lungs are
    found on the CT. The tumour is classed peripheral, central or ultra-central and the
    lung standard's fractionation options for that class are listed.

    Example: sbrt oars --ct case/AVG --rtstruct case/RS.dcm --target PTV --out case/RS_oars.dcm --json -
    """
    from sbrtstandards.errors import InputError
    from sbrtstandards.oars.build import OarOptions
    from sbrtstandards.oars.dicom_io import run_oars

    for value, option in ((chest_wall_within_mm, "--chest-wall-within-mm"), (skin_mm, "--skin-mm"),
                          (cord_prv_mm, "--cord-prv-mm")):
        if value is not None and not (0.0 <= value <= 50.0):
            raise InputError(f"{option} {value:g}: give a distance between 0 and 50 mm")
    options = OarOptions(site=site, side=side, chest_wall_limit_mm=chest_wall_within_mm, skin_mm=skin_mm,
                         cord_prv_mm=cord_prv_mm)
    with progress_bar("oars", quiet) as progress:
        result = run_oars(ct_path, rtstruct_path, target, out_path, options=options, mapping=mapping,
                          progress=progress)
    emit_json(result, json_path)
    if json_path != "-" and not quiet:
        loc = result["location"]
        if loc["class"] is not None:
            info(f"location: {loc['class']} ({loc['reason']})", json_path)
            options_text = ", ".join(f"{o['dose_gy']:g} Gy / {o['fractions']} fx (BED10 {o['bed10_gy']:g} Gy)"
                                     for o in result["fractionation_options"] if o["bed10_gy"] is not None)
            if options_text:
                info(f"fractionation options: {options_text}", json_path)
        for b in result["built"]:
            info(f"built {b['name']} ({b['role']}): {b['volume_cc']:.1f} cc", json_path)
        info(f"written to {result['rtstruct']}", json_path)
    if not quiet:
        for w in result["warnings"]:
            click.echo(f"warning: {w}", err=True)
