"""QC indicator rates of seeds 003 and 004: definitions as data, hand-counted rates per period, errors, outputs."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sbrtstandards.cli.qc_indicators_cmd import qc_indicators as qc_cmd
from sbrtstandards.errors import InputError
from sbrtstandards.programme_qa.qc_indicators import (
    compute_rates,
    load_indicators,
    periods_between,
    read_case_log,
)

COLUMNS = ("date,programme,record,case_id,indication_met,body_centre_dose_ok,lung_block_accurate,complication,"
           "post_implant_dosimetry,staff_total,staff_qualified,items_tested,items_passed\n")
# Hand count: TBI cases Jan: T1 (indication yes, complication no), T2 (yes, yes); Feb: none; Mar: T3 (no, no).
# Seed implants Jan: S1 verified; Apr: S2 verified, S3 not, S4 verified -> 2/3 (< 80 % target) in Q2.
LOG = COLUMNS + """\
2025-01-05,tbi,case,T1,yes,yes,yes,no,,,,,
2025-01-20,tbi,case,T2,yes,no,yes,yes,,,,,
2025-03-11,tbi,case,T3,no,yes,no,no,,,,,
2025-01-31,tbi,staff,,,,,,,6,5,,
2025-03-31,tbi,staff,,,,,,,6,6,,
2025-02-28,tbi,equipment,,,,,,,,,40,38
2025-01-08,seed_implant,case,S1,,,,,yes,,,,
2025-04-02,seed_implant,case,S2,,,,,yes,,,,
2025-04-09,粒子植入,case,S3,,,,,否,,,,
2025-04-16,seed_implant,case,S4,,,,,1,,,,
"""


def _write(tmp_path: Path, text: str, name: str = "cases.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _result(tmp_path: Path, text: str = LOG, period: str = "month"):  # noqa: ANN202
    rows, cols = read_case_log(_write(tmp_path, text), as_of=dt.date(2025, 6, 30))
    return compute_rates(rows, cols, period=period)


def _by_id(result) -> dict:  # noqa: ANN001
    return {r.indicator.id: r for r in result.indicators}


def test_the_six_tbi_indicators_are_those_of_the_document() -> None:
    tbi = [i for i in load_indicators() if i.programme == "tbi"]
    assert [i.name_zh for i in tbi] == [
        "上岗人员资质符合率",
        "设备定期检测合格率",
        "临床适应症符合率",
        "体中心剂量控制合格率",
        "肺挡块位置放置准确率",
        "并发症发生率",
    ]
    assert all(i.defined and i.formula_zh.startswith(i.name_zh + "=") for i in tbi)
    assert [i.direction for i in tbi] == ["higher"] * 5 + ["lower"]
    seed = {i.id: i for i in load_indicators()}["seed_implant.post_implant_dosimetry_rate"]
    assert (seed.target_comparator, seed.target_percent) == (">", 80.0) and "§三（二）" in seed.source
    assert all(not i.defined for i in load_indicators() if i.programme == "ablation")


def test_rates_per_month_are_the_hand_counts(tmp_path: Path) -> None:
    r = _by_id(_result(tmp_path))
    ind = r["tbi.indication_conformity_rate"]
    assert [(v.period, v.numerator, v.denominator) for v in ind.values] == [
        ("2025-01", 2, 2), ("2025-02", 0, 0), ("2025-03", 0, 1), ("2025-04", 0, 0)]
    assert ind.values[1].rate_percent is None  # no TBI case in February: no rate, not 0 %
    assert ind.overall.rate_percent == pytest.approx(200 / 3)
    comp = r["tbi.complication_rate"]
    assert comp.values[0].rate_percent == 50.0 and comp.indicator.direction == "lower"
    staff = r["tbi.staff_qualification_rate"]
    assert (staff.overall.numerator, staff.overall.denominator) == (11, 12)
    equip = r["tbi.equipment_qa_pass_rate"]
    assert equip.values[1].rate_percent == 95.0


def test_quarters_and_the_numeric_target(tmp_path: Path) -> None:
    r = _by_id(_result(tmp_path, period="quarter"))
    seed = r["seed_implant.post_implant_dosimetry_rate"]
    assert [(v.period, v.numerator, v.denominator, v.status) for v in seed.values] == [
        ("2025-Q1", 1, 1, "pass"), ("2025-Q2", 2, 3, "fail")]
    assert r["tbi.indication_conformity_rate"].values[0].status is None  # no numeric target in the document


def test_indicators_without_data_are_not_evaluated(tmp_path: Path) -> None:
    r = _by_id(_result(tmp_path))
    assert r["ablation.success_rate"].status == "not_evaluated"
    assert "ablation" in r["ablation.success_rate"].reason
    assert r["seed_implant.response_rate"].status == "not_evaluated"
    assert "response" in r["seed_implant.response_rate"].reason


def test_periods_between_includes_quiet_periods() -> None:
    assert periods_between(dt.date(2024, 11, 3), dt.date(2025, 2, 1), "month") == [
        "2024-11", "2024-12", "2025-01", "2025-02"]
    assert periods_between(dt.date(2024, 11, 3), dt.date(2025, 7, 1), "quarter") == [
        "2024-Q4", "2025-Q1", "2025-Q2", "2025-Q3"]
    assert periods_between(dt.date(2024, 11, 3), dt.date(2025, 7, 1), "year") == ["2024", "2025"]


@pytest.mark.parametrize(
    ("bad_row", "fragment"),
    [
        ("2025-02-01,tbi,case,T9,,yes,yes,no,,,,,", "row 12, column 'indication_met': missing value"),
        ("2025-02-01,tbi,case,T9,perhaps,yes,yes,no,,,,,", "column 'indication_met'"),
        ("2099-02-01,tbi,case,T9,yes,yes,yes,no,,,,,", "in the future"),
        ("2025-02-01,tbi,staff,,,,,,,-3,1,,", "cannot be negative"),
        ("2025-02-01,tbi,staff,,,,,,,0,0,,", "denominator of zero"),
        ("2025-02-01,tbi,staff,,,,,,,3,4,,", "more than the denominator"),
        ("2025-02-01,tbi,equipment,,,,,,,,,2.5,1", "whole number"),
        ("2025-02-01,radiosurgery,case,X1,,,,,,,,,", "column 'programme'"),
        ("2025-02-01,tbi,audit,,,,,,,,,,", "column 'record'"),
    ],
)
def test_bad_rows_name_the_row_and_column(tmp_path: Path, bad_row: str, fragment: str) -> None:
    with pytest.raises(InputError) as exc:
        _result(tmp_path, LOG + bad_row + "\n")
    assert fragment in str(exc.value) and "row 12" in str(exc.value)


def test_missing_required_columns(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing column"):
        read_case_log(_write(tmp_path, "date,case_id\n2025-01-01,T1\n"))


def test_machine_qa_log_gives_the_equipment_rate(tmp_path: Path) -> None:
    qa = _write(tmp_path, "machine,date,item,value,unit\nLA1,2025-01-05,tbi-a1.lasers,1,mm\n"
                          "LA1,2025-01-06,tbi-a1.lasers,3,mm\nLA1,2025-01-07,tbi-a1.linac_output,1,%\n", "qa.csv")
    cases = _write(tmp_path, COLUMNS + "2025-01-05,tbi,case,T1,yes,yes,yes,no,,,,,\n")
    res = CliRunner().invoke(qc_cmd, [str(cases), "--machine-qa", str(qa), "--as-of", "2025-06-30", "--json", "-"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    equip = next(i for i in out["indicators"] if i["id"] == "tbi.equipment_qa_pass_rate")
    assert (equip["overall"]["numerator"], equip["overall"]["denominator"]) == (2, 3)


def test_cli_table_csv_and_plot(tmp_path: Path) -> None:
    log = _write(tmp_path, LOG)
    csv_path, png_path = tmp_path / "out" / "rates.csv", tmp_path / "out" / "rates.png"
    res = CliRunner().invoke(qc_cmd, [str(log), "--period", "quarter", "--csv", str(csv_path), "--plot",
                                      str(png_path), "--as-of", "2025-06-30"])
    assert res.exit_code == 0, res.output
    assert "seed_implant.post_implant_dosimetry_rate" in res.output and "target: > 80 %" in res.output
    with csv_path.open(encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    seed = [r for r in rows if r["indicator"] == "seed_implant.post_implant_dosimetry_rate"]
    assert [(r["period"], r["rate_percent"], r["status"]) for r in seed] == [("2025-Q1", "100.00", "pass"),
                                                                           ("2025-Q2", "66.67", "fail")]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png_path.parent.glob(".*part"))


def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from sbrtstandards.cli import main as main_mod

    monkeypatch.setitem(main_mod.SUBCOMMANDS, "qc-indicators", ("sbrtstandards.cli.qc_indicators_cmd",
                                                                "qc_indicators"))
    bad = _write(tmp_path, LOG + "2025-02-01,tbi,staff,,,,,,,0,0,,\n")
    with pytest.raises(SystemExit) as exc:
        main_mod.main(["qc-indicators", str(bad), "--as-of", "2025-06-30"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "staff_total" in err[0]
