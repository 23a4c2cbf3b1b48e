"""Independent MU and point-dose checks within 3 %: the catalogue's wording per standard, units, errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sbrtstandards.cli.mu_check_cmd import mu_check as mu_check_cmd
from sbrtstandards.errors import InputError
from sbrtstandards.programme_qa.pointdose import compare, read_log, tolerance


def test_tolerances_come_from_the_catalogue() -> None:
    lung, liver = tolerance("mu", "cn-lung-sbrt"), tolerance("mu", "cn-liver-sbrt")
    assert (lung.comparator, lung.value) == ("abs<=", 3.0)  # "±3% 以内"
    assert (liver.comparator, liver.value) == ("abs<", 3.0)  # "误差 <±3%"
    assert tolerance("point_dose", "cn-lung-sbrt").value == 3.0


def test_exactly_three_percent_passes_the_lung_wording_only() -> None:
    assert compare(100.0, 103.0, "mu", unit="MU").status == "pass"
    assert compare(100.0, 103.0, "mu", unit="MU", protocol_id="cn-liver-sbrt").status == "fail"
    c = compare(812.0, 790.0, "mu", unit="MU")
    assert c.deviation_percent == pytest.approx((790 - 812) / 812 * 100) and c.status == "pass"


def test_point_dose_in_cgy_or_gy() -> None:
    assert compare(200.0, 205.0, "point_dose", unit="cGy").deviation_percent == pytest.approx(2.5)
    assert compare(2.0, 2.07, "point_dose", unit="Gy").status == "fail"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((100.0, 101.0, "mu", "Gy"), "does not fit"),
        ((2.0, 2.01, "point_dose", "MU"), "does not fit"),
        ((2.0, 2.01, "point_dose", ""), "missing unit"),
        ((0.0, 2.01, "point_dose", "Gy"), "denominator of zero"),
        ((2.0, -1.0, "point_dose", "Gy"), ">= 0"),
    ],
)
def test_bad_single_checks(args: tuple, fragment: str) -> None:
    planned, check, kind, unit = args
    with pytest.raises(InputError, match=fragment):
        compare(planned, check, kind, unit=unit)


def test_log_rows(tmp_path: Path) -> None:
    log = tmp_path / "checks.csv"
    log.write_text("case,item,kind,planned,check,unit\nP1,arc1,mu,812,826,MU\nP1,iso,point dose,2.0,1.93,Gy\n",
                   encoding="utf-8")
    a, b = read_log(str(log))
    assert (a.status, b.status) == ("pass", "fail") and b.kind == "point_dose" and b.row == 3
    bad = tmp_path / "bad.csv"
    bad.write_text("case,item,kind,planned,check,unit\nP1,arc1,mu,0,826,MU\n", encoding="utf-8")
    with pytest.raises(InputError, match="row 2, column 'planned'"):
        read_log(str(bad))
    bad.write_text("case,item,kind,planned,check,unit\nP1,arc1,gamma,1,1,%\n", encoding="utf-8")
    with pytest.raises(InputError, match="row 2, column 'kind'"):
        read_log(str(bad))


def test_cli(tmp_path: Path) -> None:
    res = CliRunner().invoke(mu_check_cmd, ["--kind", "mu", "--planned", "812", "--check", "826", "--unit", "MU",
                                            "--json", "-"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["checks"][0]["deviation_percent"] == pytest.approx(1.724, abs=1e-3) and out["counts"]["pass"] == 1
    res = CliRunner().invoke(mu_check_cmd, ["--kind", "mu", "--planned", "812"])
    assert res.exit_code != 0
