"""``sbrt igrt``: an IGRT position-error log against the site thresholds of the SBRT standards."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option


@click.command(name="igrt")
@click.argument("log", metavar="LOG.csv")
@click.option("--site", type=click.Choice(["lung", "liver"]), default=None,
              help="Site of every row (else the log's 'site' column).")
@click.option("--site-class", type=click.Choice(["peripheral", "central", "ultracentral"]), default=None,
              help="Lung tumour class of every row (else the log's 'site_class' column).")
@click.option("--metric", type=click.Choice(["vector", "axis"]), default="vector", show_default=True,
              help="Compare the 3D vector length or the largest single-axis error.")
@click.option("--as-of", "as_of", default=None, metavar="YYYY-MM-DD", help="Rows dated later are refused.")
@json_option
def igrt(log: str, site: str | None, site_class: str | None, metric: str, as_of: str | None,
         json_path: str | None) -> None:
    """Check the position errors found by online imaging: lung <= 3 mm (peripheral) / <= 2 mm
    (central), liver above 2 mm investigate; residuals after correction < 1 mm when logged.

    LOG.csv columns: patient, fraction, lr_mm, ap_mm, si_mm (or _cm), optional date, site,
    site_class, residual_lr_mm, residual_ap_mm, residual_si_mm.

    Example: sbrt igrt cbct_shifts.csv --site lung --site-class peripheral --json igrt.json
    """
    from sbrtstandards.programme_qa.common import parse_as_of
    from sbrtstandards.programme_qa.igrt import read_log

    result = read_log(log, site=site, site_class=site_class, metric=metric, as_of=parse_as_of(as_of))
    emit_json(result.to_json(), json_path)
    if json_path == "-":
        return
    n_fail = sum(f.status == "fail" for f in result.fractions)
    info(f"{len(result.fractions)} fractions, {n_fail} beyond the threshold ({metric} error)", json_path)
    for t in result.thresholds:
        classes = f" ({'/'.join(t['site_class'])})" if t["site_class"] else ""
        info(f"  threshold {t['id']}{classes}: {t['comparator']} {t['limit']:g} {t['unit']} - {t['source']}", json_path)
    for f in result.exceeded:
        res = f", residual {f.residual_value_mm:.1f} mm {f.residual_status}" if f.residual_value_mm is not None else ""
        info(f"  {f.status:<5} row {f.row} {f.patient} fx {f.fraction}: {f.value_mm:.1f} mm "
             f"(limit {f.threshold.describe() if f.threshold else '?'}){res} - {f.action}", json_path)
