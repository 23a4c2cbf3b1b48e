"""``sbrt protocols`` and ``sbrt bed`` through the real command (exit codes, one-line errors, JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from sbrtstandards.catalogue import load_protocol
from sbrtstandards.cli.bed_cmd import bed
from sbrtstandards.cli.protocols_cmd import protocols

REQUIRED_IDS = ["cn-liver-sbrt", "cn-lung-sbrt", "michigan-reirradiation", "tg101", "uk-sabr-liver-5fx"]


def _sbrt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sbrtstandards", *args], capture_output=True, text=True, timeout=120)


def test_bed_json_is_exactly_the_contract() -> None:
    result = _sbrt("bed", "--dose-gy", "54", "--fractions", "3", "--json", "-")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "dose_gy": 54,
        "fractions": 3,
        "dose_per_fraction_gy": 18,
        "alpha_beta_gy": 10,
        "bed_gy": 151.2,
        "eqd2_gy": 126.0,
    }
    assert '"eqd2_gy": 126.0' in result.stdout and '"dose_gy": 54,' in result.stdout


def test_bed_text_and_alpha_beta_option() -> None:
    result = CliRunner().invoke(bed, ["--dose-gy", "60", "--fractions", "8", "--alpha-beta", "3"])
    assert result.exit_code == 0, result.output
    # 60 Gy in 8: d = 7.5, BED3 = 60 (1 + 2.5) = 210, EQD2 = 210 / (1 + 2/3) = 126
    assert "BED 210 Gy" in result.output and "EQD2 126 Gy" in result.output


def test_bed_bad_input_is_one_line_and_exit_2() -> None:
    for args in (
        ["--dose-gy", "54", "--fractions", "0"],
        ["--dose-gy", "abc", "--fractions", "3"],
        ["--dose-gy", "54"],
    ):
        result = _sbrt("bed", *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr


def test_protocols_lists_ids_titles_and_sources() -> None:
    result = _sbrt("protocols")
    assert result.returncode == 0, result.stderr
    for pid in REQUIRED_IDS:
        p = load_protocol(pid)
        assert pid in result.stdout and p.title in result.stdout and p.source in result.stdout
    listed = _sbrt("protocols", "--json", "-")
    data = json.loads(listed.stdout)
    assert [p["id"] for p in data["protocols"]] == REQUIRED_IDS
    assert {p["id"]: p["fractions"] for p in data["protocols"]}["tg101"] == [1, 3, 5]


def test_protocols_show_prints_every_rule_with_its_source() -> None:
    result = _sbrt("protocols", "show", "cn-lung-sbrt")
    assert result.returncode == 0, result.stderr
    p = load_protocol("cn-lung-sbrt")
    for rule in p.rules:
        assert rule.id in result.stdout and rule.source in result.stdout
    for col in p.conformality.columns:
        assert col.id in result.stdout
    assert "5.9 (7.5)" in result.stdout  # the R50 row of a 1.8 cc PTV: none (minor)
    for item in p.qa_items:
        assert item.id in result.stdout
    assert "54 Gy / 3 fx  BED10 151.2 Gy (document: 151)" in result.stdout
    assert "[UNCONFIRMED]" in result.stdout


def test_protocols_show_json_round_trips_the_catalogue() -> None:
    result = CliRunner().invoke(protocols, ["show", "cn-liver-sbrt", "--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    p = load_protocol("cn-liver-sbrt")
    assert [r["id"] for r in data["rules"]] == [r.id for r in p.rules]
    rule = {r["id"]: r for r in data["rules"]}["uk.liver.mean"]
    assert (rule["limit"], rule["minor_limit"], rule["structure"]) == (13, 15.2, "normal_liver")
    assert "Table A.2" in rule["source"]
    michigan = {r["id"]: r for r in data["rules"]}["michigan.stomach"]
    assert michigan["prior_dose_discount_percent"]["6_12mo"] == 25


def test_unknown_protocol_is_exit_2_listing_the_known_ids() -> None:
    result = _sbrt("protocols", "show", "cn-lung")
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown protocol 'cn-lung'; known protocols: " + ", ".join(REQUIRED_IDS))


def test_user_protocol_folder_and_validate(tmp_path: Path) -> None:
    good = tmp_path / "my-lung.toml"
    good.write_text(
        'schema_version = 1\nid = "my-lung"\ntitle = "My lung"\nsource = "local"\nversion = "1"\n'
        'sites = ["lung"]\nfractions = [5]\n'
        '[[rules]]\nid = "my.ptv"\nstructure = "PTV"\nmetric = "V100%[%]"\ncomparator = ">="\nlimit = 95\n'
        'source = "local §1"\n',
        encoding="utf-8",
    )
    listed = _sbrt("protocols", "--protocol-dir", str(tmp_path), "--json", "-")
    assert "my-lung" in [p["id"] for p in json.loads(listed.stdout)["protocols"]]
    ok = _sbrt("protocols", "validate", str(good))
    assert ok.returncode == 0 and "ok:" in ok.stdout and "my-lung" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text(encoding="utf-8").replace("comparator", "comparater"), encoding="utf-8")
    result = _sbrt("protocols", "validate", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "rule 'my.ptv'" in result.stderr and "'comparater'" in result.stderr
