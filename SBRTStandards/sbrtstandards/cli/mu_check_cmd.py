"""``sbrt mu-check``: independent MU and measured point doses against the plan, within 3 %."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option
from sbrtstandards.errors import InputError


@click.command(name="mu-check")
@click.argument("log", metavar="LOG.csv", required=False)
@click.option("--protocol", "protocol_id", type=click.Choice(["cn-lung-sbrt", "cn-liver-sbrt"]),
              default="cn-lung-sbrt", show_default=True, help="Standard whose tolerance applies.")
@click.option("--kind", type=click.Choice(["mu", "point_dose"]), default=None, help="One check: its kind.")
@click.option("--planned", type=float, default=None, help="One check: the TPS value.")
@click.option("--check", "check_value", type=float, default=None, help="One check: the independent/measured value.")
@click.option("--unit", default=None, help="One check: MU, Gy or cGy.")
@json_option
def mu_check(log: str | None, protocol_id: str, kind: str | None, planned: float | None,
             check_value: float | None, unit: str | None, json_path: str | None) -> None:
    """Deviation (check - planned) / planned of independent MU calculations and point-dose
    measurements against the standard's 3 % (from the standards catalogue).

    LOG.csv columns: case, item, kind (mu or point_dose), planned, check, unit (MU; Gy or cGy).

    Example: sbrt mu-check checks.csv --protocol cn-liver-sbrt --json checks.json
    (one value: sbrt mu-check --kind mu --planned 812 --check 826 --unit MU)
    """
    from sbrtstandards.programme_qa.pointdose import compare, read_log

    single = (kind, planned, check_value, unit)
    if log and any(v is not None for v in single):
        raise InputError("give LOG.csv or --kind/--planned/--check/--unit, not both")
    if log:
        results = read_log(log, protocol_id)
    elif all(v is not None for v in single):
        results = [compare(planned, check_value, kind, unit=unit, protocol_id=protocol_id)]  # type: ignore[arg-type]
    else:
        raise InputError("give LOG.csv, or all of --kind, --planned, --check and --unit")
    out = {"protocol": protocol_id, "checks": [c.to_json() for c in results],
           "counts": {s: sum(c.status == s for c in results) for s in ("pass", "fail")}}
    emit_json(out, json_path)
    if json_path == "-":
        return
    info(f"{len(results)} check(s) against {protocol_id}: {out['counts']['pass']} pass, {out['counts']['fail']} fail",
         json_path)
    for c in results:
        label = " ".join(x for x in (c.case, c.item) if x) or c.kind
        info(f"  {c.status:<5} {label:<24} {c.kind:<10} {c.planned:g} -> {c.check:g} {c.unit}: "
             f"{c.deviation_percent:+.2f} % (tolerance {c.tolerance.describe()})", json_path)
