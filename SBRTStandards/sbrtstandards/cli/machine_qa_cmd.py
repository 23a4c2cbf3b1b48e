"""``sbrt machine-qa``: a log of machine QA measurements against the tolerance and frequency tables."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option
from sbrtstandards.errors import InputError


@click.command(name="machine-qa")
@click.argument("log", metavar="LOG.csv", required=False)
@click.option("--as-of", "as_of", default=None, metavar="YYYY-MM-DD", help="Date of the review (default: today).")
@click.option(
    "--machine",
    "machines",
    multiple=True,
    metavar="NAME=KIND[+KIND]",
    help="Machine kinds (linac, cobalt, kv, sbrt): every item of those kinds must be in the log.",
)
@click.option(
    "--level",
    type=click.Choice(["standard", "tight", "graded"]),
    default="standard",
    show_default=True,
    help="standard: the tolerance; tight: the bracketed value; graded: minor between them.",
)
@click.option("--list", "list_items", is_flag=True, help="List the QA items (id, tolerance, frequency, source).")
@json_option
def machine_qa(
    log: str | None,
    as_of: str | None,
    machines: tuple[str, ...],
    level: str,
    list_items: bool,
    json_path: str | None,
) -> None:
    """Check LOG.csv (columns machine, date, item, value, unit; optional reference, note) against
    annex 1 of the TBI specification and the SBRT machine QA of the liver standard (§9.2):
    out-of-tolerance measurements and overdue checks, per machine.

    Values need their unit (mm, cm, degree, %, min, s, MU); functional items take pass/fail.

    Example: sbrt machine-qa qa_log.csv --as-of 2025-03-31 --machine LA1=linac+sbrt --json qa.json
    """
    from sbrtstandards.programme_qa.common import parse_as_of
    from sbrtstandards.programme_qa.machine_qa import check_log, load_catalogue, parse_machine_kinds, read_log

    catalogue = load_catalogue()
    if list_items:
        emit_json({"items": [it.to_json() for it in catalogue.items]}, json_path)
        for it in catalogue.items:
            info(f"{it.id:<40} {it.frequency.id:<13} {it.tolerance_text():<40} {it.source}", json_path)
        return
    if not log:
        raise InputError("give the measurement log LOG.csv (or --list to see the QA items)")
    day = parse_as_of(as_of)
    result = check_log(
        read_log(log, catalogue, as_of=day),
        as_of=day,
        level=level,
        machine_kinds=parse_machine_kinds(machines),
        catalogue=catalogue,
    )
    result.log = log
    emit_json(result.to_json(), json_path)
    if json_path == "-":
        return
    for rep in result.machines:
        c = {s: sum(m.status == s for m in rep.measurements) for s in ("pass", "minor", "fail", "not_evaluated")}
        info(f"{rep.machine} ({'+'.join(rep.kinds) or 'kinds not given'}) as of {day}: {len(rep.measurements)} "
             f"measurements, {c['pass']} pass, {c['minor']} minor, {c['fail']} fail, {c['not_evaluated']} not "
             f"evaluated; {len(rep.overdue)} item(s) overdue", json_path)
        for m in rep.out_of_tolerance:
            info(f"  {m.status:<6} {m.date} {m.item.id:<38} {m.value:g} {m.unit}  (tolerance {m.limit_text})",
                 json_path)
        for m in rep.measurements:
            if m.status == "not_evaluated":
                info(f"  not evaluated {m.date} {m.item.id}: {m.reason}", json_path)
        for s in rep.overdue:
            last = s.last_checked.isoformat() if s.last_checked else "never"
            late = f", {s.days_overdue} day(s) late" if s.days_overdue else ""
            info(f"  overdue {s.item.id:<38} {s.item.frequency.id:<13} last {last}{late}", json_path)
        for note in rep.notes:
            info(f"  note: {note}", json_path)
