"""IGRT position-error logs: thresholds from the standards catalogue, vector/axis errors, units, errors, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from sbrtstandards.catalogue import load_protocol
from sbrtstandards.cli.igrt_cmd import igrt as igrt_cmd
from sbrtstandards.errors import InputError
from sbrtstandards.programme_qa.igrt import check_fraction, load_site_rules, magnitude, read_log


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "igrt.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_thresholds_are_the_catalogue_items() -> None:
    lung_qa = {q.id: q for q in load_protocol("cn-lung-sbrt").qa_items}
    liver_qa = {q.id: q for q in load_protocol("cn-liver-sbrt").qa_items}
    rules = load_site_rules()
    lung = {t.id: t for t in rules["lung"].thresholds}
    assert lung["cn-lung.qa.igrt_error_peripheral"].value == lung_qa["cn-lung.qa.igrt_error_peripheral"].value == 3
    assert lung["cn-lung.qa.igrt_error_central"].value == lung_qa["cn-lung.qa.igrt_error_central"].value == 2
    assert rules["liver"].thresholds[0].value == liver_qa["cn-liver.qa.isocentre_verification"].value == 2
    assert rules["liver"].residual is not None and rules["liver"].residual.value == 1


@pytest.mark.parametrize(
    ("error", "site", "site_class", "expected"),
    [
        ((2.0, 2.0, 1.0), "lung", "peripheral", "pass"),  # |(2, 2, 1)| = 3: "≤3mm"
        ((2.0, 2.0, 1.1), "lung", "peripheral", "fail"),
        ((1.2, 1.6, 0.0), "lung", "central", "pass"),  # 2.0
        ((1.2, 1.6, 0.1), "lung", "ultracentral", "fail"),
        ((1.2, 1.6, 0.0), "liver", None, "pass"),
        ((1.2, 1.6, 0.5), "liver", None, "fail"),
    ],
)
def test_site_thresholds(error: tuple[float, float, float], site: str, site_class: str | None, expected: str) -> None:
    f = check_fraction(error, site, site_class)
    assert f.status == expected
    if expected == "fail":
        assert f.action


def test_vector_or_largest_axis() -> None:
    assert magnitude((2.0, 2.0, 1.0), "vector") == pytest.approx(3.0)
    assert magnitude((2.0, -2.5, 1.0), "axis") == 2.5
    assert check_fraction((2.0, 2.0, 1.5), "lung", "peripheral", metric="axis").status == "pass"
    assert check_fraction((2.0, 2.0, 1.5), "lung", "peripheral", metric="vector").status == "fail"


def test_lung_needs_the_site_class() -> None:
    with pytest.raises(InputError, match="site class"):
        check_fraction((1.0, 0.0, 0.0), "lung")
    with pytest.raises(InputError, match="no IGRT threshold"):
        check_fraction((1.0, 0.0, 0.0), "prostate")


def test_log_with_cm_columns_residuals_and_per_row_sites(tmp_path: Path) -> None:
    log = _write(tmp_path, "patient,fraction,date,site,site_class,lr_cm,ap_cm,si_cm,residual_lr_mm,residual_ap_mm,"
                           "residual_si_mm\n"
                           "P1,1,2025-03-01,lung,peripheral,0.1,0.2,0.2,0.2,0.1,0.3\n"
                           "P1,2,2025-03-02,lung,peripheral,0.2,0.2,0.2,0.8,0.6,0.0\n"
                           "P2,1,2025-03-02,liver,,0.1,0.1,0.1,0.1,0.1,0.1\n")
    result = read_log(str(log))
    f1, f2, f3 = result.fractions
    assert f1.value_mm == pytest.approx(3.0) and f1.status == "pass"  # 1, 2, 2 mm
    assert f2.value_mm == pytest.approx(math.sqrt(12.0)) and f2.status == "fail"
    assert f2.residual_value_mm == pytest.approx(1.0) and f2.residual_status == "fail"  # "< 1 mm"
    assert f3.status == "pass" and f3.threshold.id == "cn-liver.qa.isocentre_verification"
    out = result.to_json()
    assert [p["exceeded"] for p in out["patients"]] == [1, 0]
    assert {t["id"] for t in out["thresholds"]} == {"cn-lung.qa.igrt_error_peripheral",
                                                     "cn-liver.qa.isocentre_verification"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("patient,fraction,lr,ap_mm,si_mm\nP1,1,1,1,1\n", "column 'lr': no unit"),
        ("patient,fraction,ap_mm,si_mm\nP1,1,1,1\n", "missing column lr_mm"),
        ("patient,fraction,lr_mm,lr_cm,ap_mm,si_mm\nP1,1,1,0.1,1,1\n", "give the LR error once"),
        ("patient,fraction,site,lr_mm,ap_mm,si_mm\nP1,1,liver,x,1,1\n", "row 2, column 'lr_mm'"),
        ("patient,fraction,site,lr_mm,ap_mm,si_mm\nP1,1,,1,1,1\n", "row 2, column 'site'"),
        ("patient,fraction,date,site,lr_mm,ap_mm,si_mm\nP1,1,2999-01-01,liver,1,1,1\n", "in the future"),
        ("patient,fraction,site,lr_mm,ap_mm,si_mm\nP1,1,lung,1,1,1\n", "site_class"),
    ],
)
def test_bad_logs_name_the_row_and_column(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(InputError) as exc:
        read_log(str(_write(tmp_path, text)))
    assert fragment in str(exc.value)


def test_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    log = _write(tmp_path, "patient,fraction,lr_mm,ap_mm,si_mm\nP1,1,1,1,1\nP1,2,2,2,2\n")
    res = CliRunner().invoke(igrt_cmd, [str(log), "--site", "lung", "--site-class", "central", "--json", "-"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["counts"] == {"pass": 1, "fail": 1} and out["exceeded"][0]["fraction"] == "2"
    text = CliRunner().invoke(igrt_cmd, [str(log), "--site", "liver"])
    assert "cn-liver.qa.isocentre_verification" in text.output and "investigate" in text.output

    from sbrtstandards.cli import main as main_mod

    monkeypatch.setitem(main_mod.SUBCOMMANDS, "igrt", ("sbrtstandards.cli.igrt_cmd", "igrt"))
    with pytest.raises(SystemExit) as exc:
        main_mod.main(["igrt", str(log), "--site", "lung"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "site_class" in err[0]
