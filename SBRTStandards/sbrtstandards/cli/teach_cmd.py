"""``sbrt teach``: the teaching score sheet of a trainee's structure set (HTML, and JSON)."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option, progress_bar, quiet_option


@click.command(name="teach")
@click.option("--reference", "reference", required=True, metavar="RS_REF", help="The teacher's RTSTRUCT.")
@click.option("--trainee", "trainee", required=True, metavar="RS_TRAINEE", help="The trainee's RTSTRUCT.")
@click.option("--html", "html_path", required=True, metavar="PATH", help="Write the score sheet (one HTML file).")
@click.option("--ct", "ct_dir", default=None, metavar="DIR",
              help="The CT series: drawn behind the contours, and used by the OAR rules.")
@click.option("--site", type=click.Choice(["auto", "lung", "liver"]), default="auto", show_default=True,
              help="Which standard's rules apply (auto: liver when the tumour lies in a liver contour).")
@click.option("--site-class", type=click.Choice(["peripheral", "central", "ultracentral"]), default=None,
              help="Tumour location class (default: from the proximal bronchial tree, as `sbrt oars`).")
@click.option("--structure", "structures", multiple=True, metavar="NAME",
              help="Grade only this reference structure (repeatable); default: every structure with a counterpart.")
@click.option("--tolerance-mm", type=click.FloatRange(0.0, 50.0), default=2.0, show_default=True,
              help="Surface Dice tolerance (mm).")
@click.option("--good", "good", type=click.FloatRange(0.0, 1.0), default=0.90, show_default=True,
              help="Surface Dice at or above which a structure is graded good.")
@click.option("--review", "review", type=click.FloatRange(0.0, 1.0), default=0.75, show_default=True,
              help="Surface Dice at or above which a structure is graded review (below: redo).")
@click.option("--trainee-name", default="", metavar="TEXT", help="Name printed on the sheet.")
@click.option("--map", "maps", multiple=True, metavar="NAME=ROLE", help="Assign a trainee's structure to a role.")
@json_option
@quiet_option
def teach(
    reference: str,
    trainee: str,
    html_path: str,
    ct_dir: str | None,
    site: str,
    site_class: str | None,
    structures: tuple[str, ...],
    tolerance_mm: float,
    good: float,
    review: float,
    trainee_name: str,
    maps: tuple[str, ...],
    json_path: str | None,
    quiet: bool,
) -> None:
    """Score a trainee's contours against a reference set and the standards' contouring rules.

    One HTML page to hand out: agreement per structure (graded by surface Dice), PTV = ITV +
    5 mm, chest wall and great vessels as the rule builds them, the organs at risk the
    standard asks for, and each structure drawn on its slice of worst disagreement.

    Example: sbrt teach --reference RS_teacher.dcm --trainee RS_student.dcm --ct CT/
    --trainee-name "Dr Li" --html score_sheet.html
    """
    from sbrtstandards.errors import InputError
    from sbrtstandards.teaching import Grading, score_sheet, write_score_sheet_html

    if review > good:
        raise InputError(f"--review {review:g} must not exceed --good {good:g}")
    grading = Grading(tolerance_mm=tolerance_mm, good_surface_dice=good, review_surface_dice=review)
    with progress_bar("teach", quiet) as progress:
        sheet = score_sheet(reference, trainee, ct_dir=ct_dir, site=site, site_class=site_class,
                            structures=structures, grading=grading, trainee_name=trainee_name, mapping=maps,
                            progress=progress)
        path = write_score_sheet_html(sheet, html_path)
    data = sheet.to_json()
    data["html"] = str(path)
    emit_json(data, json_path)
    if not quiet and json_path != "-":
        s = sheet.summary
        info(f"{s['structures_compared']} structures: {s['grades']['pass']} good, {s['grades']['minor']} review, "
             f"{s['grades']['fail']} redo; rules: {s['rules']['pass']} good of {len(sheet.rules)}; required OARs "
             f"{s['required_oars_present']}/{s['required_oars']}", json_path)
        info(f"score sheet: {path}", json_path)
