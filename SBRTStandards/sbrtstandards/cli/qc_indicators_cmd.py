"""``sbrt qc-indicators``: QC indicator rates of the TBI, seed implantation and ablation specifications."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option


@click.command(name="qc-indicators")
@click.argument("log", metavar="CASES.csv")
@click.option("--period", type=click.Choice(["month", "quarter", "year"]), default="month", show_default=True)
@click.option("--as-of", "as_of", default=None, metavar="YYYY-MM-DD",
              help="Rows dated after this day are refused (default: today).")
@click.option("--machine-qa", "machine_qa_log", default=None, metavar="LOG.csv",
              help="Machine QA log: its measurements give the equipment QA pass rate.")
@click.option("--csv", "csv_path", default=None, metavar="PATH", help="Write the per-period table as CSV.")
@click.option("--plot", "plot_path", default=None, metavar="PATH.png", help="Plot the rates per period (PNG).")
@json_option
def qc_indicators(
    log: str,
    period: str,
    as_of: str | None,
    machine_qa_log: str | None,
    csv_path: str | None,
    plot_path: str | None,
    json_path: str | None,
) -> None:
    """Rates of the QC indicators (formula, target, source of each) per period from a case log.

    CASES.csv columns: date, programme (tbi, seed_implant, ablation), optional record (case,
    staff, equipment) and case_id; case rows carry yes/no columns such as indication_met,
    body_centre_dose_ok, lung_block_accurate, complication (TBI), post_implant_dosimetry, response,
    serious_complication, followed_up (seed implants), technical_success, serious_complication,
    death, adverse_event, followed_up (ablation); staff rows staff_total and staff_qualified;
    equipment rows items_tested and items_passed.

    Example: sbrt qc-indicators cases.csv --period quarter --csv rates.csv --plot rates.png
    """
    from sbrtstandards.programme_qa.common import parse_as_of
    from sbrtstandards.programme_qa.qc_indicators import (
        compute_rates,
        equipment_rows_from_machine_qa,
        plot,
        read_case_log,
        write_csv,
    )

    day = parse_as_of(as_of)
    rows, columns = read_case_log(log, as_of=day)
    equipment: list = []
    if machine_qa_log:
        from sbrtstandards.programme_qa.machine_qa import check_log, equipment_pass_counts, read_log

        qa = check_log(read_log(machine_qa_log, as_of=day), as_of=day)
        equipment = equipment_rows_from_machine_qa(equipment_pass_counts(qa))
    result = compute_rates(rows, columns, period=period, equipment=equipment)
    result.log = log
    if csv_path:
        write_csv(result, csv_path)
    if plot_path:
        plot(result, plot_path)
    emit_json(result.to_json(), json_path)
    if json_path == "-":
        return
    for r in result.indicators:
        ind = r.indicator
        if r.status != "evaluated":
            info(f"{ind.id:<44} not evaluated: {r.reason}", json_path)
            continue
        o = r.overall
        rate = "-" if o is None or o.rate_percent is None else f"{o.rate_percent:6.1f} %"
        info(f"{ind.id:<44} {rate:>9} ({o.numerator}/{o.denominator} over all periods)  target: {ind.target_text}"
             if o else ind.id, json_path)
        for v in r.values:
            if v.rate_percent is not None:
                flag = f"  {v.status}" if v.status else ""
                info(f"    {v.period:<9} {v.rate_percent:6.1f} % ({v.numerator}/{v.denominator}){flag}", json_path)
    if csv_path:
        info(f"table: {csv_path}", json_path)
    if plot_path:
        info(f"plot: {plot_path}", json_path)
