"""The standards catalogue: loading, schema errors, search path, conditions, conformality table."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sbrtstandards import catalogue, names
from sbrtstandards.catalogue import Rule, list_protocols, load_protocol, load_protocol_file
from sbrtstandards.errors import InputError

REQUIRED_IDS = {"cn-lung-sbrt", "cn-liver-sbrt", "tg101", "uk-sabr-liver-5fx", "michigan-reirradiation"}

HEADER = """
schema_version = 1
id = "{pid}"
title = "test protocol"
source = "test document"
version = "1"
sites = ["lung"]
fractions = [3, 5]
"""

GOOD_RULE = """
[[rules]]
id = "t.ptv.v100"
structure = "PTV"
metric = "V100%[%]"
comparator = ">="
limit = 95
source = "test document §1"
"""


def _write(folder: Path, text: str, pid: str = "user-test", name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{pid}.toml")
    path.write_text(textwrap.dedent(HEADER.format(pid=pid)) + textwrap.dedent(text), encoding="utf-8")
    return path


def _error_of(folder: Path, text: str) -> str:
    path = _write(folder, text)
    with pytest.raises(InputError) as exc:
        load_protocol_file(path)
    message = str(exc.value)
    assert str(path) in message, message  # the file is always named
    return message


# --------------------------------------------------------------------------- built-in protocols


def test_every_required_protocol_loads_and_is_listed() -> None:
    infos = list_protocols()
    ids = [p.id for p in infos]
    assert set(ids) >= REQUIRED_IDS
    assert ids == sorted(ids)
    for info in infos:
        p = load_protocol(info.id)
        assert p.rules or p.conformality is not None
        assert all(r.source.strip() for r in p.rules)
        assert info.builtin
        json.dumps(p.to_json(), allow_nan=False)  # machine-readable without NaN


def test_every_rule_role_is_a_known_role_and_ids_are_unique() -> None:
    for pid in REQUIRED_IDS:
        p = load_protocol(pid)
        assert set(p.roles()) <= set(names.ROLES)
        ids = [r.id for r in p.rules] + ([c.id for c in p.conformality.columns] if p.conformality else [])
        assert len(ids) == len(set(ids))


def test_tg101_has_serial_and_parallel_organs_for_1_3_and_5_fractions() -> None:
    p = load_protocol("tg101")
    assert p.fractions == (1, 3, 5)
    for n in (1, 3, 5):
        rules = {r.id: r for r in p.rules_for(n)}
        cord = rules[f"tg101.{n}fx.spinal_cord.d0_35cc"]
        assert cord.metric == "D0.35cc[Gy]" and cord.comparator == "<"
        lung = rules[f"tg101.{n}fx.lungs.cv1500cc"]
        assert lung.metric.startswith("CV") and lung.comparator == ">=" and lung.limit == 1500
    # the published 1/3/5-fraction cord thresholds (TG-101 Table III)
    assert [p.rule(f"tg101.{n}fx.spinal_cord.d0_35cc").limit for n in (1, 3, 5)] == [10, 18, 23]
    assert p.rule("tg101.5fx.liver.cv700cc").metric == "CV21Gy[cc]"
    # 3-fraction lung values are not confirmed in a readable copy: shipped flagged
    assert not p.rule("tg101.3fx.lungs.cv1500cc").confirmed
    assert p.rule("tg101.5fx.lungs.cv1500cc").confirmed


def test_cn_liver_includes_its_appendices_with_the_appendix_cited() -> None:
    p = load_protocol("cn-liver-sbrt")
    cord = p.rule("tg101.5fx.spinal_cord.d0_35cc")
    assert cord.included_from == "tg101"
    assert "Appendix A.1" in cord.source and "TG-101" in cord.source
    uk = p.rule("uk.stomach.d0_5cc")
    assert (uk.limit, uk.minor_limit) == (33, 35) and "Appendix A.2" in uk.source
    mich = p.rule("michigan.heart")
    assert mich.conditions["reirradiation"] is True  # added by the include
    assert load_protocol("michigan-reirradiation").rule("michigan.heart").conditions == {}


def test_fractionation_schemes_carry_the_seed_bed_and_the_computed_one() -> None:
    p = load_protocol("cn-lung-sbrt")
    schemes = {s.id: s for s in p.fractionation}
    assert schemes["cn-lung.fx.peripheral.54-3"].bed10_gy() == pytest.approx(151.2)
    assert schemes["cn-lung.fx.peripheral.54-3"].bed10_stated_gy == 151
    assert schemes["cn-lung.fx.central.60-8"].bed10_gy() == pytest.approx(105.0)
    assert schemes["cn-lung.fx.mediastinal_nodes.60"].bed10_gy() is None  # fraction range
    central = p.fractionation_for("central")
    assert {s.id for s in central} == {"cn-lung.fx.central.60-8", "cn-lung.fx.central.50-5"} | {
        s.id for s in p.fractionation if not s.conditions
    }
    assert schemes["cn-lung.fx.central.50-5"].to_json()["bed10_gy"] == 100.0


# --------------------------------------------------------------------------- selection by conditions


def test_fractions_not_covered_is_an_input_error_naming_the_covered_ones() -> None:
    with pytest.raises(InputError, match=r"tg101 covers 1, 3, 5 fractions.*4"):
        load_protocol("tg101").rules_for(4)
    with pytest.raises(InputError, match="whole number"):
        load_protocol("tg101").rules_for(0)


def test_rules_for_applies_site_class_and_reports_skipped_rules_with_reasons() -> None:
    p = load_protocol("cn-lung-sbrt")
    sel = p.rules_for(4, "ultracentral", {"gtv_diameter_cm": 2.0})
    ids = {r.id for r in sel}
    assert "cn-lung.uc.trachea.max" in ids and "cn-lung.ptv.v100" in ids
    assert "rtog0915.4fx.spinal_cord.d0_35cc" not in ids  # peripheral only
    skipped = {s.rule.id: s for s in sel.skipped}
    assert "site_class" in skipped["rtog0915.4fx.spinal_cord.d0_35cc"].reason
    assert not skipped["rtog0915.4fx.spinal_cord.d0_35cc"].undetermined
    # no PTV volume: the conformality columns are reported, not dropped
    assert skipped["rtog0915.r50"].undetermined and "ptv_cc" in skipped["rtog0915.r50"].reason
    assert len(sel) + len(sel.skipped) == len(p.rules) + len(p.conformality.columns)


def test_a_condition_that_is_not_given_leaves_the_rule_undetermined() -> None:
    p = load_protocol("cn-liver-sbrt")
    sel = p.rules_for(5)
    skipped = {s.rule.id: s for s in sel.skipped}
    assert skipped["cn-liver.liver.spared_700cc"].undetermined
    assert "child_pugh" in skipped["cn-liver.liver.spared_700cc"].reason
    # a condition that fails wins over one that cannot be decided
    assert not skipped["michigan.spinal_cord"].undetermined
    assert "reirradiation" in skipped["michigan.spinal_cord"].reason
    sel = p.rules_for(5, conditions={"child_pugh": "a", "histology": "hcc"})  # case-insensitive values
    ids = {r.id for r in sel}
    assert {"cn-liver.liver.spared_700cc", "cn-liver.rx.bed_hcc"} <= ids
    assert "cn-liver.rx.bed_icc" not in ids


def test_gtv_diameter_picks_the_small_target_exception() -> None:
    p = load_protocol("cn-lung-sbrt")
    small = {r.id for r in p.rules_for(5, "central", {"gtv_diameter_cm": 1.2})}
    large = {r.id for r in p.rules_for(5, "central", {"gtv_diameter_cm": 1.5})}
    assert "cn-lung.plan.ci_rtog_small_target" in small and "cn-lung.plan.ci_rtog" not in small
    assert "cn-lung.plan.ci_rtog" in large and "cn-lung.plan.ci_rtog_small_target" not in large


def test_bad_plan_conditions_are_input_errors() -> None:
    p = load_protocol("cn-lung-sbrt")
    with pytest.raises(InputError, match="peripheral, central, ultracentral"):
        p.rules_for(5, "middle")
    with pytest.raises(InputError, match="unknown plan condition 'childpugh'"):
        p.rules_for(5, conditions={"childpugh": "A"})
    with pytest.raises(InputError, match="must be a number"):
        p.rules_for(5, conditions={"gtv_diameter_cm": "big"})


# --------------------------------------------------------------------------- conformality table


@pytest.mark.parametrize(
    ("ptv_cc", "r50", "r50_minor", "d2cm", "d2cm_minor", "clamped"),
    [
        # hand-computed from the RTOG 0813/0915 rows (standards-facts section 2)
        (30.0, 4.5 + (8 / 12) * (4.3 - 4.5), 5.5 + (8 / 12) * (5.3 - 5.5), 54 + (8 / 12) * 4, 63 + (8 / 12) * 5, False),
        (50.0, 4.0, 5.0, 62.0, 77.0, False),
        (10.3, 4.9, 5.9, 50.0, 58.0, False),  # half-way between 7.4 and 13.2 cc
        (
            100.0,
            3.3 + (5 / 31) * (3.1 - 3.3),
            4.4 + (5 / 31) * (4.0 - 4.4),
            70 + (5 / 31) * 3,
            89 + (5 / 31) * 2,
            False,
        ),
        (1.0, 5.9, 7.5, 50.0, 57.0, True),  # below the table: first row
        (400.0, 2.9, 3.7, 77.0, 94.0, True),  # above the table: last row
    ],
)
def test_conformality_limits_interpolate_linearly_in_ptv_volume(
    ptv_cc: float, r50: float, r50_minor: float, d2cm: float, d2cm_minor: float, clamped: bool
) -> None:
    limits = load_protocol("cn-lung-sbrt").conformality_limits(ptv_cc)
    assert limits["R50"].limit == pytest.approx(r50)
    assert limits["R50"].minor_limit == pytest.approx(r50_minor)
    assert limits["D2cm[%]"].limit == pytest.approx(d2cm)
    assert limits["D2cm[%]"].minor_limit == pytest.approx(d2cm_minor)
    assert (limits["CI_RTOG"].limit, limits["CI_RTOG"].minor_limit) == (1.2, 1.5)
    assert limits["V20Gy[%]"].limit == 10 and limits["V20Gy[%]"].minor_limit is None
    assert limits["R50"].clamped is clamped


def test_conformality_rules_come_with_ptv_volume_and_evaluate() -> None:
    p = load_protocol("cn-lung-sbrt")
    rules = {r.id: r for r in p.rules_for(5, "central", {"ptv_cc": 30.0})}
    r50 = rules["rtog0915.r50"]
    assert r50.limit == pytest.approx(4.3667, abs=1e-4) and r50.comparator == "<="
    assert "30.0 cc" in r50.source and "RTOG" in r50.source
    assert r50.evaluate(4.0).status == "pass"
    assert r50.evaluate(5.0).status == "minor"
    assert r50.evaluate(5.5).status == "fail"
    with pytest.raises(InputError, match="> 0 cc"):
        p.conformality_limits(0)
    with pytest.raises(InputError, match="no conformality table"):
        load_protocol("tg101").conformality_limits(30)


# --------------------------------------------------------------------------- evaluation semantics


def _rule(**kw: object) -> Rule:
    base = {"id": "x", "structure": "PTV", "metric": "Max[Gy]", "comparator": "<", "limit": 10.0, "source": "s"}
    base.update(kw)
    return Rule(**base)  # type: ignore[arg-type]


def test_rule_evaluation_pass_minor_fail_and_not_evaluated() -> None:
    assert _rule().evaluate(9.99).status == "pass"
    assert _rule().evaluate(10.0).status == "fail"  # strict comparator, no hidden tolerance
    assert _rule(comparator="<=").evaluate(10.0).status == "pass"
    assert _rule(minor_limit=12.0).evaluate(11.0).status == "minor"
    assert _rule(minor_limit=12.0).evaluate(12.5).status == "fail"
    assert _rule(priority="optimal").evaluate(50.0).status == "minor"
    assert _rule(comparator=">=", limit=95.0, minor_limit=90.0).evaluate(92.0).status == "minor"
    assert _rule(comparator="range", limit=(110.0, 150.0)).evaluate(151.0).status == "fail"
    assert _rule(comparator="range", limit=(110.0, 150.0)).evaluate(110.0).status == "pass"
    none = _rule().evaluate(None)
    assert none.status == "not_evaluated" and none.reason == "no value"
    report = _rule(comparator="report", limit=None, limit_text="ALARA").evaluate(3.0)
    assert (report.status, report.reason) == ("not_evaluated", "ALARA")


def test_per_fraction_limits_scale_with_the_fractions() -> None:
    rule = load_protocol("cn-lung-sbrt").rule("cn-lung.uc.trachea.max_per_fraction")
    assert rule.limits(4) == (16.0, None)  # 4 Gy x 4 fractions
    assert rule.evaluate(17.0, fractions=4).status == "fail"
    assert rule.evaluate(17.0, fractions=8).status == "pass"
    with pytest.raises(InputError, match="number of fractions"):
        rule.evaluate(17.0)


# --------------------------------------------------------------------------- schema errors


def test_unknown_key_in_a_rule_names_file_rule_and_field(tmp_path: Path) -> None:
    message = _error_of(tmp_path, GOOD_RULE.replace("limit = 95", "limt = 95"))
    assert "rule 't.ptv.v100'" in message and "field 'limt'" in message and "unknown key" in message


def test_bad_comparator_is_named(tmp_path: Path) -> None:
    message = _error_of(tmp_path, GOOD_RULE.replace('">="', '"=>"'))
    assert "rule 't.ptv.v100'" in message and "field 'comparator'" in message and "'=>'" in message


def test_missing_field_is_named(tmp_path: Path) -> None:
    message = _error_of(tmp_path, GOOD_RULE.replace('source = "test document §1"\n', ""))
    assert "rule 't.ptv.v100'" in message and "field 'source': missing" in message


def test_duplicate_rule_id(tmp_path: Path) -> None:
    message = _error_of(tmp_path, GOOD_RULE + GOOD_RULE)
    assert "rule 't.ptv.v100'" in message and "duplicate id" in message


def test_wrong_types_are_named(tmp_path: Path) -> None:
    message = _error_of(tmp_path, GOOD_RULE.replace("limit = 95", 'limit = "ninety-five"'))
    assert "field 'limit': must be a number" in message
    message = _error_of(tmp_path, GOOD_RULE.replace("limit = 95", "limit = [90, 95]"))
    assert "field 'limit'" in message
    message = _error_of(tmp_path, GOOD_RULE + "confirmed = 1\n")
    assert "field 'confirmed': must be true or false" in message


def test_unknown_metric_syntax_and_role(tmp_path: Path) -> None:
    message = _error_of(tmp_path, GOOD_RULE.replace("V100%[%]", "V100"))
    assert "field 'metric'" in message and "TG-263" in message
    message = _error_of(tmp_path, GOOD_RULE.replace('structure = "PTV"', 'structure = "spinalcord"'))
    assert "field 'structure'" in message and "spinal_cord" in message  # the known roles are listed
    message = _error_of(tmp_path, GOOD_RULE.replace('metric = "V100%[%]"', 'metric = "CI_RTOG"'))
    assert 'needs structure = "plan"' in message


def test_minor_limit_must_be_more_lenient(tmp_path: Path) -> None:
    message = _error_of(tmp_path, GOOD_RULE + "minor_limit = 97\n")
    assert "field 'minor_limit'" in message and "lenient" in message


def test_unit_must_match_the_metric(tmp_path: Path) -> None:
    message = _error_of(tmp_path, GOOD_RULE + 'unit = "Gy"\n')
    assert "field 'unit'" in message


def test_condition_errors(tmp_path: Path) -> None:
    message = _error_of(tmp_path, GOOD_RULE + "conditions = { fraction = 3 }\n")
    assert "field 'conditions.fraction': unknown condition" in message
    message = _error_of(tmp_path, GOOD_RULE + 'conditions = { site_class = "centre" }\n')
    assert "field 'conditions.site_class'" in message and "ultracentral" in message
    message = _error_of(tmp_path, GOOD_RULE + "conditions = { gtv_diameter_cm = 1.5 }\n")
    assert "comparison" in message


def test_top_level_errors(tmp_path: Path) -> None:
    message = _error_of(tmp_path, GOOD_RULE + "\ntitel = 'x'\n")
    assert "field 'titel': unknown key" in message
    path = tmp_path / "broken.toml"
    path.write_text("id = [unclosed\n", encoding="utf-8")
    with pytest.raises(InputError, match="not valid TOML") as exc:
        load_protocol_file(path)
    assert str(path) in str(exc.value)


def test_stated_bed_must_match_the_computed_bed(tmp_path: Path) -> None:
    scheme = """
[[fractionation]]
id = "t.fx"
dose_gy = 54
fractions = 3
bed10_gy = 160
source = "test"
"""
    message = _error_of(tmp_path, GOOD_RULE + scheme)
    assert "fractionation 't.fx'" in message and "field 'bed10_gy'" in message and "151.20" in message


def test_include_errors(tmp_path: Path) -> None:
    include = """
[[include]]
protocol = "tg101"
rules = ["tg101.5fx.nosuch"]
source = "appendix"
"""
    message = _error_of(tmp_path, GOOD_RULE + include)
    assert "include[0]" in message and "tg101.5fx.nosuch" in message
    cyc = tmp_path / "cycle"
    _write(cyc, GOOD_RULE + '[[include]]\nprotocol = "cyc-b"\nrules = ["t.ptv.v100"]\nsource = "x"\n', pid="cyc-a")
    _write(
        cyc,
        GOOD_RULE.replace("t.ptv", "b.ptv") + '[[include]]\nprotocol = "cyc-a"\nrules = ["t.ptv.v100"]\nsource = "x"\n',
        pid="cyc-b",
    )
    with pytest.raises(InputError, match="include each other"):
        load_protocol("cyc-a", [cyc])


# --------------------------------------------------------------------------- search path


def test_user_folder_and_environment_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "mine"
    _write(folder, GOOD_RULE, pid="my-centre")
    assert load_protocol("my-centre", [folder]).rule("t.ptv.v100").limit == 95
    with pytest.raises(InputError, match="unknown protocol 'my-centre'; known protocols: cn-liver-sbrt"):
        load_protocol("my-centre")
    monkeypatch.setenv(catalogue.ENV_VAR, str(folder))
    info = {p.id: p for p in list_protocols()}["my-centre"]
    assert not info.builtin and info.path.endswith("my-centre.toml")
    monkeypatch.setenv(catalogue.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="SBRT_PROTOCOL_PATH entry .*nowhere.* is not a folder"):
        list_protocols()


def test_a_user_file_reusing_a_builtin_id_is_an_error_naming_both_files(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD_RULE, pid="tg101")
    with pytest.raises(InputError, match="also defined in") as exc:
        load_protocol("tg101", [tmp_path])
    assert str(path) in str(exc.value) and "tg101.toml" in str(exc.value)


def test_validating_a_file_that_reuses_a_builtin_id_fails(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD_RULE, pid="cn-lung-sbrt")
    with pytest.raises(InputError, match="also defined in"):
        load_protocol_file(path)
    assert load_protocol_file(load_protocol("tg101").path).id == "tg101"  # a built-in file validates as itself
