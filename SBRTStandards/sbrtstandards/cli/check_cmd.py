"""``sbrt check``: a plan against a protocol of the standards catalogue."""

from __future__ import annotations

import sys
from typing import Any

import click

from sbrtstandards.cli.common import emit_json, info, json_option, progress_bar, quiet_option
from sbrtstandards.errors import InputError


@click.command(name="check")
@click.option("--rtstruct", required=True, metavar="RS", help="RTSTRUCT file (or a folder holding one).")
@click.option("--rtdose", required=True, metavar="RD", help="RTDOSE file (or a folder holding one).")
@click.option("--rtplan", default=None, metavar="RP", help="RTPLAN: prescription and fractions when not given.")
@click.option("--ct", "ct_dir", default=None, metavar="DIR", help="CT series: slices with isodoses in the HTML report.")
@click.option("--protocol", "protocol_id", required=True, metavar="ID", help="Protocol id (see `sbrt protocols`).")
@click.option("--rx-gy", type=float, default=None, metavar="D", help="Total prescription dose (Gy).")
@click.option("--fractions", type=click.IntRange(1, 60), default=None, metavar="N", help="Number of fractions.")
@click.option(
    "--site-class",
    type=click.Choice(["peripheral", "central", "ultracentral"]),
    default=None,
    help="Tumour location class (selects the rules that depend on it; see `sbrt oars`).",
)
@click.option("--map", "maps", multiple=True, metavar="NAME=ROLE", help="Assign a structure to a role explicitly.")
@click.option(
    "--condition",
    "condition_texts",
    multiple=True,
    metavar="KEY=VALUE",
    help="Plan facts that rules depend on: child_pugh=A, histology=HCC, reirradiation=true ...",
)
@click.option("--prior-eqd2", "prior_texts", multiple=True, metavar="ROLE=GY",
              help="Re-irradiation: the prior course's EQD2 (alpha/beta 2.5) of an organ, e.g. spinal_cord=30.")
@click.option("--interval-months", type=float, default=None, metavar="M",
              help="Re-irradiation: months since the prior course (selects the Michigan discount).")
@click.option("--end-cap", type=click.Choice(["half-slice", "none"]), default="half-slice", show_default=True)
@click.option("--protocol-dir", "protocol_dirs", multiple=True, metavar="DIR", help="Folder of your own protocols.")
@click.option("--html", "html_path", default=None, metavar="PATH", help="Write the HTML report.")
@click.option("--fail-on-violation", is_flag=True, help="Exit with status 1 when a constraint fails.")
@json_option
@quiet_option
def check(
    rtstruct: str,
    rtdose: str,
    rtplan: str | None,
    ct_dir: str | None,
    protocol_id: str,
    rx_gy: float | None,
    fractions: int | None,
    site_class: str | None,
    maps: tuple[str, ...],
    condition_texts: tuple[str, ...],
    prior_texts: tuple[str, ...],
    interval_months: float | None,
    end_cap: str,
    protocol_dirs: tuple[str, ...],
    html_path: str | None,
    fail_on_violation: bool,
    json_path: str | None,
    quiet: bool,
) -> None:
    """Evaluate a plan (structures + dose) against a protocol of the standards catalogue.

    The prescription comes from --rx-gy/--fractions, else from the RTPLAN.

    Example: sbrt check --rtstruct RS.dcm --rtdose RD.dcm --rtplan RP.dcm --protocol cn-lung-sbrt
    --site-class peripheral --html report.html --json result.json
    """
    from sbrtstandards.check import check_files, parse_conditions
    from sbrtstandards.names import parse_map_options

    mapping = parse_map_options(maps)
    conditions = parse_conditions(condition_texts)
    prior = _prior_eqd2(prior_texts)
    with progress_bar("check", quiet) as progress:
        result, inputs = check_files(
            rtstruct,
            rtdose,
            protocol_id=protocol_id,
            rtplan=rtplan,
            rx_gy=rx_gy,
            fractions=fractions,
            site_class=site_class,
            mapping=mapping,
            conditions=conditions,
            end_cap=end_cap,
            extra_dirs=protocol_dirs,
            progress=progress,
            prior_eqd2_gy=prior,
            interval_months=interval_months,
        )
    out = result.to_json()
    out["protocol"]["rx_source"] = inputs.rx_source
    emit_json(out, json_path)
    if html_path:
        from sbrtstandards.check_report import constraint_slices, write_check_html

        slices = []
        if ct_dir:
            from sbrtstandards.dicom.ct import read_ct_series

            slices = constraint_slices(result, read_ct_series(ct_dir), inputs.dose)
        write_check_html(result, html_path, slices=slices)
    if not quiet and json_path != "-":
        _print_table(result)
        if html_path:
            info(f"report: {html_path}", json_path)
    if fail_on_violation and result.counts["fail"]:
        sys.exit(1)


def _prior_eqd2(texts: tuple[str, ...]) -> dict[str, float]:
    from sbrtstandards.names import ROLES

    out: dict[str, float] = {}
    for text in texts:
        role, sep, value = text.partition("=")
        role = role.strip()
        try:
            gy = float(value)
        except ValueError:
            gy = float("nan")
        if not sep or role not in ROLES or not gy >= 0:
            raise InputError(f"--prior-eqd2 {text!r}: expected ROLE=GY with a known role (e.g. spinal_cord=30)")
        out[role] = gy
    return out


def _print_table(result: Any) -> None:
    c = result.counts
    click.echo(
        f"{result.protocol.id}: {result.rx_gy:g} Gy / {result.fractions} fx — {c['pass']} pass, "
        f"{c['minor']} minor, {c['fail']} fail, {c['not_evaluated']} not evaluated"
    )
    order = {"fail": 0, "minor": 1, "not_evaluated": 2, "pass": 3}
    for con in sorted(result.constraints, key=lambda x: (order.get(x.status, 9), x.id)):
        value = "—" if con.value is None else f"{con.value:.2f}"
        limit = con.limit if not isinstance(con.limit, float) else f"{con.limit:g}"
        click.echo(f"  {con.status:<13} {con.structure[:18]:<18} {con.metric:<22} {value:>9} {con.comparator} {limit}")
