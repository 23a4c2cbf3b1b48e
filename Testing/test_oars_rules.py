"""The standards' contouring rules as checks: which structures are asked for, and their extent."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtstandards.grid import Grid
from sbrtstandards.oars.rules import RULES, CaseFacts, check_contouring, upper_lobe

GRID = Grid((0.0, 0.0, 0.0), (2.0, 2.0, 5.0), (20, 20, 40))  # z = 0 .. 195 mm


def slab(z0: float, z1: float) -> np.ndarray:
    zs = GRID.axis_coords_mm(2)
    m = np.zeros(GRID.shape, dtype=bool)
    m[(zs >= z0) & (zs <= z1), 5:10, 5:10] = True
    return m


def facts(site: str = "lung", **kw: object) -> CaseFacts:
    base = dict(site=site, site_class="peripheral", upper_lobe=False, upper_lobe_basis="below the carina",
                present={}, built={}, masks={}, grid=GRID)
    base.update(kw)
    return CaseFacts(**base)  # type: ignore[arg-type]


def by_role(checks: list[dict]) -> dict[str, dict]:
    return {c["role"]: c for c in checks}


def test_every_rule_cites_its_clause() -> None:
    for rule in RULES:
        assert "§" in rule.source or "Appendix" in rule.source, rule.id
    assert {r.role for r in RULES if r.site == "lung"} >= {"spinal_cord", "lungs", "heart", "esophagus",
                                                            "brachial_plexus", "pbt", "chest_wall", "great_vessels"}


def test_brachial_plexus_only_for_upper_lobe_tumours() -> None:
    low = by_role(check_contouring(facts(upper_lobe=False)))
    assert low["brachial_plexus"]["status"] == "not_required"
    assert "below the carina" in low["brachial_plexus"]["detail"]
    high = by_role(check_contouring(facts(upper_lobe=True)))
    assert high["brachial_plexus"]["status"] == "missing"
    unknown = by_role(check_contouring(facts(upper_lobe=None)))
    assert unknown["brachial_plexus"]["status"] == "missing"  # when in doubt, ask for it


def test_statuses_present_built_missing_optional() -> None:
    checks = by_role(check_contouring(facts(present={"heart": ["Heart"]}, built={"chest_wall": "Chestwall_L"})))
    assert checks["heart"]["status"] == "present" and checks["heart"]["structures"] == ["Heart"]
    assert checks["chest_wall"]["status"] == "built" and checks["chest_wall"]["structures"] == ["Chestwall_L"]
    assert checks["esophagus"]["status"] == "missing"
    assert checks["ribs"]["status"] == "not_required"  # optional: the chest wall may stand in
    assert checks["trachea"]["status"] == "not_required"  # ultra-central only
    uc = by_role(check_contouring(facts(site_class="ultracentral")))
    assert uc["trachea"]["status"] == "missing"


def test_cord_must_span_the_lungs() -> None:
    lungs = slab(50.0, 150.0)
    short = by_role(check_contouring(facts(present={"spinal_cord": ["Cord"]},
                                           masks={"spinal_cord": slab(60.0, 200.0), "lungs": lungs})))
    assert short["spinal_cord"]["status"] == "review"
    assert "L2" in short["spinal_cord"]["detail"]
    long = by_role(check_contouring(facts(present={"spinal_cord": ["Cord"]},
                                          masks={"spinal_cord": slab(0.0, 195.0), "lungs": lungs})))
    assert long["spinal_cord"]["status"] == "present"


def test_great_vessels_3_cm_above_and_below_the_ptv() -> None:
    ptv = slab(90.0, 110.0)
    ok = by_role(check_contouring(facts(present={"great_vessels": ["GreatVes"]},
                                        masks={"great_vessels": slab(60.0, 140.0), "PTV": ptv})))
    assert ok["great_vessels"]["status"] == "present"
    short = by_role(check_contouring(facts(present={"great_vessels": ["GreatVes"]},
                                           masks={"great_vessels": slab(80.0, 120.0), "PTV": ptv})))
    assert short["great_vessels"]["status"] == "review"
    assert "60.0..140.0" in short["great_vessels"]["detail"]


def test_liver_rules() -> None:
    checks = by_role(check_contouring(facts(site="liver", site_class=None, present={"liver": ["Liver"]})))
    assert set(checks) == {"liver", "stomach", "duodenum", "bowel_small", "bowel_large", "kidneys", "spinal_cord",
                           "esophagus", "ribs"}
    assert checks["liver"]["status"] == "present" and checks["duodenum"]["status"] == "missing"


def test_upper_lobe_heuristic() -> None:
    above, basis = upper_lobe(np.array([0.0, 0.0, 60.0]), 30.0, None, GRID)
    assert above is True and "carina" in basis
    below, _ = upper_lobe(np.array([0.0, 0.0, 10.0]), 30.0, None, GRID)
    assert below is False
    lung = slab(0.0, 150.0)  # upper third: above 100 mm
    assert upper_lobe(np.array([0.0, 0.0, 120.0]), None, lung, GRID)[0] is True
    assert upper_lobe(np.array([0.0, 0.0, 80.0]), None, lung, GRID)[0] is False
    assert upper_lobe(None, None, None, GRID) == (None, "no tumour")


@pytest.mark.parametrize("site", ["lung", "liver"])
def test_every_check_has_the_contract_fields(site: str) -> None:
    for c in check_contouring(facts(site=site)):
        assert {"id", "role", "requirement", "status", "structures", "detail", "source"} <= set(c)
        assert c["status"] in {"present", "built", "missing", "not_required", "review"}
