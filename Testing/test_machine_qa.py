"""Machine QA: the annex-1 tables and the liver standard's §9.2 as data, tolerances, due dates, errors, CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sbrtstandards.catalogue import load_protocol
from sbrtstandards.cli.machine_qa_cmd import machine_qa as machine_qa_cmd
from sbrtstandards.errors import InputError
from sbrtstandards.programme_qa.machine_qa import (
    Measurement,
    add_months,
    check_log,
    evaluate,
    load_catalogue,
    parse_machine_kinds,
    read_log,
)

HEADER = "machine,date,item,value,unit,reference\n"


def _log(tmp_path: Path, rows: str, name: str = "log.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + rows, encoding="utf-8")
    return path


def _item(item_id: str):  # noqa: ANN202 - a catalogue item
    return load_catalogue().item(item_id, "test")


def _measure(item_id: str, value: float | bool, unit: str, reference: float | None = None,
             level: str = "standard") -> Measurement:
    m = Measurement("LA1", dt.date(2025, 3, 1), _item(item_id), value, unit, reference, 2)
    return evaluate(m, level)


# ------------------------------------------------------------------------------------ the tables


def test_annex_1_tables_are_complete() -> None:
    items = load_catalogue().items
    annex = [i for i in items if i.id.startswith("tbi-a1.")]
    assert len([i for i in annex if i.source.endswith("table 1-1")]) == 17
    assert len([i for i in annex if i.source.endswith("table 1-2")]) == 17
    assert len({i.id for i in items}) == len(items)


@pytest.mark.parametrize(
    ("item_id", "tolerance", "unit", "tight", "frequency"),
    [
        ("tbi-a1.gantry_angle", 0.5, "degree", 0.2, "yearly"),
        ("tbi-a1.gantry_isocentre", 2, "mm", 1, "yearly"),
        ("tbi-a1.distance_indicator", 2, "mm", 1, "weekly"),
        ("tbi-a1.light_field_indicator", 2, "mm", None, "weekly"),
        ("tbi-a1.couch_sag", 5, "mm", None, "yearly"),
        ("tbi-a1.lasers", 2, "mm", 1, "weekly"),
        ("tbi-a1.linac_output", 2, "%", None, "twice_weekly"),
        ("tbi-a1.monitor_linearity", 1, "%", None, "weekly"),
        ("tbi-a1.cobalt_timer", 0.01, "min", None, "monthly"),
        ("tbi-a1.linac_x_flatness", 3, "%", None, "twice_monthly"),
        ("tbi-a1.tray_factor", 2, "%", None, "yearly"),
    ],
)
def test_annex_1_values(item_id: str, tolerance: float, unit: str, tight: float | None, frequency: str) -> None:
    it = _item(item_id)
    assert (it.tolerances[0].value, it.tolerances[0].unit, it.tight, it.frequency.id) == (
        tolerance, unit, tight, frequency)


def test_sbrt_items_take_their_numbers_from_the_standards_catalogue() -> None:
    qa = {q.id: q for q in load_protocol("cn-liver-sbrt").qa_items}
    for item_id, frequency in (("cn-liver.qa.daily_lasers", "daily"), ("cn-liver.qa.monthly_couch_angle", "monthly"),
                               ("cn-liver.qa.annual_isocentre", "yearly")):
        it = _item(item_id)
        assert it.tolerances[0].value == qa[item_id].value and it.tolerances[0].unit == qa[item_id].unit
        assert it.source == qa[item_id].source and it.frequency.id == frequency and it.machines == ("sbrt",)
    arc = _item("sbrt.arc_output")
    assert [t.unit for t in arc.tolerances] == ["MU", "%"] and arc.combine == "either"


# ------------------------------------------------------------------------------------ tolerances


@pytest.mark.parametrize(
    ("value", "unit", "level", "expected"),
    [
        (1.5, "mm", "standard", "pass"),
        (1.5, "mm", "tight", "fail"),
        (1.5, "mm", "graded", "minor"),
        (-0.8, "mm", "graded", "pass"),
        (0.15, "cm", "graded", "minor"),
        (2.0, "mm", "standard", "pass"),  # "±2mm" includes 2
        (2.5, "mm", "graded", "fail"),
    ],
)
def test_tolerance_and_bracketed_value(value: float, unit: str, level: str, expected: str) -> None:
    assert _measure("tbi-a1.lasers", value, unit, level=level).status == expected


@pytest.mark.parametrize(
    ("value", "unit", "reference", "expected"),
    [
        (1.5, "MU", 100.0, "pass"),  # 1.5 % of the setting: within 2 %
        (2.5, "MU", 100.0, "fail"),  # 2.5 MU and 2.5 %
        (0.9, "MU", 10.0, "pass"),  # 9 % but within 1.0 MU: the larger tolerance applies
        (1.5, "%", None, "pass"),
        (3.0, "%", None, "not_evaluated"),  # beyond 2 %; 1.0 MU needs the setting
        (3.0, "%", 20.0, "pass"),  # 0.6 MU
    ],
)
def test_whichever_larger_tolerance(value: float, unit: str, reference: float | None, expected: str) -> None:
    assert _measure("sbrt.arc_output", value, unit, reference).status == expected


def test_functional_items_take_pass_fail() -> None:
    assert _measure("sbrt.daily_stereotactic_device", False, "").status == "fail"
    assert _measure("tbi-a1.blocks_compensators", True, "").status == "pass"


# ------------------------------------------------------------------------------------ frequencies


def test_add_months_clamps_the_day() -> None:
    assert add_months(dt.date(2025, 1, 31), 1) == dt.date(2025, 2, 28)
    assert add_months(dt.date(2024, 2, 29), 12) == dt.date(2025, 2, 28)
    assert add_months(dt.date(2025, 11, 15), 3) == dt.date(2026, 2, 15)


@pytest.mark.parametrize(
    ("rows", "as_of", "item", "state", "days"),
    [
        ("LA1,2025-03-05,cn-liver.qa.daily_lasers,0.5,mm,\n", "2025-03-06", "cn-liver.qa.daily_lasers", "due", 0),
        ("LA1,2025-03-05,cn-liver.qa.daily_lasers,0.5,mm,\n", "2025-03-08", "cn-liver.qa.daily_lasers", "overdue", 2),
        ("LA1,2025-03-01,tbi-a1.linac_output,1,%,\nLA1,2025-03-05,tbi-a1.linac_output,1,%,\n", "2025-03-08",
         "tbi-a1.linac_output", "due", 0),  # the second most recent check + 7 days
        ("LA1,2025-03-01,tbi-a1.linac_output,1,%,\nLA1,2025-03-05,tbi-a1.linac_output,1,%,\n", "2025-03-10",
         "tbi-a1.linac_output", "overdue", 2),
        ("LA1,2025-03-05,tbi-a1.linac_output,1,%,\n", "2025-03-06", "tbi-a1.linac_output", "overdue", None),
        ("LA1,2025-01-31,tbi-a1.central_axis,1,mm,\n", "2025-02-28", "tbi-a1.central_axis", "due", 0),
        ("LA1,2024-02-29,tbi-a1.gantry_isocentre,1,mm,\n", "2025-02-27", "tbi-a1.gantry_isocentre", "ok", None),
    ],
)
def test_due_dates(tmp_path: Path, rows: str, as_of: str, item: str, state: str, days: int | None) -> None:
    day = dt.date.fromisoformat(as_of)
    result = check_log(read_log(str(_log(tmp_path, rows)), as_of=day), as_of=day)
    s = next(x for x in result.machines[0].items if x.item.id == item)
    assert (s.state, s.days_overdue) == (state, days)


def test_machine_kinds_decide_which_items_are_owed(tmp_path: Path) -> None:
    log = _log(tmp_path, "CO1,2025-03-01,tbi-a1.cobalt_timer,0.3,s,\nLA1,2025-03-01,tbi-a1.lasers,1,mm,\n")
    day = dt.date(2025, 3, 2)
    with_kinds = check_log(read_log(str(log), as_of=day), as_of=day, machine_kinds={"CO1": ("cobalt",)})
    co1, la1 = with_kinds.machines
    owed = {s.item.id for s in co1.items}
    assert "tbi-a1.cobalt_output" in owed and "tbi-a1.linac_output" not in owed
    assert {s.item.id: s.state for s in co1.items}["tbi-a1.cobalt_output"] == "never"
    assert [s.item.id for s in la1.items] == ["tbi-a1.lasers"]  # no kinds: only what the log holds
    assert la1.notes and "kinds not given" in la1.notes[0]
    assert co1.measurements[0].status == "pass"  # 0.3 s = 0.005 min, within ±0.01 min
    assert _measure("tbi-a1.cobalt_timer", 0.9, "s").status == "fail"  # 0.015 min
    assert parse_machine_kinds(["LA1=linac+sbrt", "CO1=cobalt"]) == {"LA1": ("linac", "sbrt"), "CO1": ("cobalt",)}


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ("LA1,2025-03-01,tbi-a1.laser,1,mm,\n", "did you mean tbi-a1.lasers"),
        ("LA1,2025-03-01,tbi-a1.lasers,1,,\n", "row 3, column 'unit': missing unit"),
        ("LA1,2025-03-01,tbi-a1.linac_output,1,mm,\n", "column 'unit'"),
        ("LA1,2025-03-01,tbi-a1.lasers,1,furlong,\n", "unknown unit"),
        ("LA1,2099-03-01,tbi-a1.lasers,1,mm,\n", "in the future"),
        ("LA1,01/03/2025,tbi-a1.lasers,1,mm,\n", "YYYY-MM-DD"),
        ("LA1,2025-03-01,tbi-a1.lasers,one,mm,\n", "column 'value'"),
        ("LA1,2025-03-01,tbi-a1.linac_output,1,MU,\n", "column 'reference'"),
        ("LA1,2025-03-01,sbrt.arc_output,1,MU,-5\n", "column 'reference'"),
        (",2025-03-01,tbi-a1.lasers,1,mm,\n", "column 'machine'"),
        ("LA1,2025-03-01,sbrt.daily_stereotactic_device,maybe,,\n", "yes/no"),
    ],
)
def test_bad_rows_name_the_row_and_column(tmp_path: Path, rows: str, fragment: str) -> None:
    with pytest.raises(InputError) as exc:
        read_log(str(_log(tmp_path, "LA1,2025-02-01,tbi-a1.lasers,1,mm,\n" + rows)), as_of=dt.date(2025, 3, 2))
    assert fragment in str(exc.value) and "log.csv" in str(exc.value)
    assert "row 3" in str(exc.value) or "did you mean" in str(exc.value)


def test_missing_columns_and_kinds(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("machine,date,item,value\nLA1,2025-03-01,tbi-a1.lasers,1\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing column"):
        read_log(str(path))
    with pytest.raises(InputError, match="unknown kind"):
        parse_machine_kinds(["LA1=tomotherapy"])


# ------------------------------------------------------------------------------------------ CLI


def test_cli_reports_out_of_tolerance_and_overdue(tmp_path: Path) -> None:
    log = _log(tmp_path, "LA1,2025-03-01,tbi-a1.lasers,2.5,mm,\nLA1,2025-02-01,cn-liver.qa.daily_lasers,0.4,mm,\n")
    res = CliRunner().invoke(machine_qa_cmd, [str(log), "--as-of", "2025-03-03", "--machine", "LA1=linac+sbrt",
                                              "--json", "-"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    la1 = out["machines"][0]
    assert [m["item"] for m in la1["out_of_tolerance"]] == ["tbi-a1.lasers"]
    overdue = {o["item"]: o for o in la1["overdue"]}
    assert overdue["cn-liver.qa.daily_lasers"]["days_overdue"] == 29  # due 2025-02-02
    assert overdue["tbi-a1.gantry_isocentre"]["state"] == "never"
    text = CliRunner().invoke(machine_qa_cmd, [str(log), "--as-of", "2025-03-03"])
    assert "fail" in text.output and "tbi-a1.lasers" in text.output
    listing = CliRunner().invoke(machine_qa_cmd, ["--list"])
    assert "tbi-a1.cobalt_timer" in listing.output


def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from sbrtstandards.cli import main as main_mod

    monkeypatch.setitem(main_mod.SUBCOMMANDS, "machine-qa", ("sbrtstandards.cli.machine_qa_cmd", "machine_qa"))
    log = _log(tmp_path, "LA1,2025-03-01,tbi-a1.lasers,1,cm?,\n")
    for args, fragment in (([str(log)], "row 2, column 'unit'"), ([str(log), "--as-of", "2999-01-01"], "future"),
                           ([], "LOG.csv")):
        with pytest.raises(SystemExit) as exc:
            main_mod.main(["machine-qa", *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
