"""Structure names to roles: TG-263, variants, Chinese names of the seeds, --map; nothing dropped."""

from __future__ import annotations

import pytest

from sbrtstandards import names
from sbrtstandards.errors import InputError
from sbrtstandards.names import match_structures, parse_map_option, parse_map_options


def _role(name: str) -> str | None:
    found = names.candidates(name)
    return found[0][0] if found else None


@pytest.mark.parametrize(
    ("name", "role"),
    [
        # TG-263 names
        ("SpinalCord", "spinal_cord"),
        ("Esophagus", "esophagus"),
        ("Heart", "heart"),
        ("GreatVes", "great_vessels"),
        ("Trachea", "trachea"),
        ("Bronchus_Main", "bronchus_main"),
        ("AirWay_Prox", "pbt"),
        ("Lungs", "lungs"),
        ("Lung_L", "lung_left"),
        ("Lung_R", "lung_right"),
        ("Lungs-GTV", "lungs_minus_target"),
        ("Chestwall_L", "chest_wall"),
        ("Rib03_R", "ribs"),
        ("BrachialPlex_R", "brachial_plexus"),
        ("Liver", "liver"),
        ("Liver-GTV", "normal_liver"),
        ("Stomach", "stomach"),
        ("Duodenum", "duodenum"),
        ("Bowel_Small", "bowel_small"),
        ("Bowel_Large", "bowel_large"),
        ("Colon", "bowel_large"),
        ("Kidney_L", "kidney_left"),
        ("Kidneys", "kidneys"),
        ("BileDuct_Common", "bile_duct_common"),
        ("PTV", "PTV"),
        ("ITV", "ITV"),
        ("GTV", "GTV"),
        # common variants (case, spaces, hyphens, underscores, word order)
        ("Spinal Cord", "spinal_cord"),
        ("spinal_cord", "spinal_cord"),
        ("SPINAL-CORD", "spinal_cord"),
        ("Cord", "spinal_cord"),
        ("Oesophagus", "esophagus"),
        ("Lung Total", "lungs"),
        ("Left Lung", "lung_left"),
        ("RT LUNG", "lung_right"),
        ("Lungs - ITV", "lungs_minus_target"),
        ("Lung minus GTV", "lungs_minus_target"),
        ("GTV1", "GTV"),
        ("PTV_5000", "PTV"),
        ("PTV 60Gy", "PTV"),
        ("iGTV", "ITV"),
        ("Jejunum_Ileum", "bowel_small"),
        ("Great Vessels", "great_vessels"),
        ("ＰＴＶ", "PTV"),  # full-width letters
        # Chinese names of the seeds
        ("脊髓", "spinal_cord"),
        ("食管", "esophagus"),
        ("食道", "esophagus"),
        ("心脏", "heart"),
        ("胃", "stomach"),
        ("十二指肠", "duodenum"),
        ("小肠", "bowel_small"),
        ("空肠/回肠", "bowel_small"),
        ("结肠", "bowel_large"),
        ("大肠", "bowel_large"),
        ("肝", "liver"),
        ("肝脏", "liver"),
        ("正常肝", "normal_liver"),
        ("肾", "kidneys"),
        ("左肾", "kidney_left"),
        ("肾皮质", "renal_cortex"),
        ("胸壁", "chest_wall"),
        ("肋骨", "ribs"),
        ("气管", "trachea"),
        ("主支气管", "bronchus_main"),
        ("气管与主支气管", "pbt"),
        ("臂丛", "brachial_plexus"),
        ("臂丛神经", "brachial_plexus"),
        ("大血管", "great_vessels"),
        ("全肺", "lungs"),
        ("双肺", "lungs"),
        ("左肺", "lung_left"),
        ("右肺", "lung_right"),
        ("全肺-GTV", "lungs_minus_target"),
        ("胆总管", "bile_duct_common"),
        ("计划靶区", "PTV"),
    ],
)
def test_name_to_role(name: str, role: str) -> None:
    assert _role(name) == role


@pytest.mark.parametrize(
    "name",
    ["SpinalCord_PRV05", "Cord PRV 5mm", "PTV_opt", "PTV-GTV", "Lung_L-GTV", "z_Ring", "Couch", "Lungs_GTV_ring"],
)
def test_names_that_are_not_the_organ_get_no_role(name: str) -> None:
    assert _role(name) is None


def test_prv_is_left_unmatched_with_a_reason() -> None:
    m = match_structures(["SpinalCord_PRV05", "PTV"])
    assert "spinal_cord" not in m.roles
    assert m.unmatched == ["SpinalCord_PRV05"]
    assert "PRV" in m.notes["SpinalCord_PRV05"] and "--map" in m.notes["SpinalCord_PRV05"]


def test_closest_name_wins_and_the_others_are_listed() -> None:
    m = match_structures(["Cord", "SpinalCord", "SpinalCanal", "Lungs-PTV", "Lungs-ITV", "Lungs-GTV"])
    assert m.roles["spinal_cord"] == ["SpinalCord"] and m.how["spinal_cord"] == "single"
    assert m.roles["lungs_minus_target"] == ["Lungs-GTV"]  # GTV before ITV before PTV
    assert set(m.unmatched) == {"Cord", "SpinalCanal", "Lungs-PTV", "Lungs-ITV"}
    assert "closer name" in m.notes["Cord"]


def test_ties_are_ambiguous_not_guessed() -> None:
    m = match_structures(["PTV1", "PTV2", "GTV"])
    assert "PTV" not in m.roles
    assert m.ambiguous == {"PTV": ["PTV1", "PTV2"]}
    assert set(m.unmatched) == {"PTV1", "PTV2"}
    assert m.missing_roles(["PTV", "GTV", "plan"]) == ["PTV"]


def test_paired_organs_are_each_evaluated_and_unions_fill_whole_organs() -> None:
    m = match_structures(["BrachialPlex_L", "BrachialPlex_R", "Lung_L", "Lung_R", "Kidney_L", "Kidney_R"])
    assert m.how["brachial_plexus"] == "each" and m.roles["brachial_plexus"] == ["BrachialPlex_L", "BrachialPlex_R"]
    assert m.how["lungs"] == "union" and m.roles["lungs"] == ["Lung_L", "Lung_R"]
    assert m.how["kidneys"] == "union" and m.roles["kidneys"] == ["Kidney_L", "Kidney_R"]
    assert m.name_of("lung_left") == "Lung_L" and m.name_of("lungs") is None
    assert m.role_of("Lung_L") == ["lung_left", "lungs"]
    whole = match_structures(["Lungs", "Lung_L", "Lung_R"])
    assert whole.roles["lungs"] == ["Lungs"] and whole.how["lungs"] == "single"
    cortex = match_structures(["Kidney_Cortex_L", "Kidney_Cortex_R"])
    assert cortex.how["renal_cortex"] == "union"


def test_map_overrides_and_ignore() -> None:
    mapping = parse_map_options(["MyCord=spinal_cord", "Lung_L=ignore", "Tumour=ptv"])
    assert mapping == {"MyCord": "spinal_cord", "Lung_L": "ignore", "Tumour": "PTV"}
    m = match_structures(
        ["MyCord", "SpinalCord", "Lung_L", "Tumour", "PTV_eval"], mapping, wanted_roles=["PTV", "heart"]
    )
    assert m.roles["spinal_cord"] == ["MyCord"] and m.source["spinal_cord"] == "map"
    assert m.roles["PTV"] == ["Tumour"]
    assert "SpinalCord" in m.unmatched and "--map chose" in m.notes["SpinalCord"]
    assert m.ignored == ["Lung_L"] and "lung_left" not in m.roles
    assert m.missing == ["heart"]
    # a mapped name matches case/space-insensitively when that is unambiguous
    assert match_structures(["Spinal Cord X"], {"spinal cord x": "spinal_cord"}).roles["spinal_cord"] == [
        "Spinal Cord X"
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("Cord", "expected NAME=ROLE"),
        ("=spinal_cord", "expected NAME=ROLE"),
        ("Cord=", "expected NAME=ROLE"),
        ("Cord=spine", "unknown role 'spine'; known roles: GTV"),
        ("Cord=plan", "unknown role 'plan'"),
    ],
)
def test_bad_map_options(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_map_option(text)


def test_map_errors_name_the_structure() -> None:
    with pytest.raises(InputError, match=r"no such structure in the structure set \(structures: PTV, Heart\)"):
        match_structures(["PTV", "Heart"], {"Hart": "heart"})
    with pytest.raises(InputError, match="mapped twice"):
        parse_map_options(["A=heart", "A=stomach"])
    assert parse_map_option("Name=with=equals=heart") == ("Name=with=equals", "heart")


def test_unmatched_structures_are_listed_and_duplicates_noted() -> None:
    m = match_structures(["Couch", "PTV", "PTV", "Heart"])
    assert m.unmatched == ["Couch"]
    assert "2 structures named 'PTV'" in m.notes["PTV"]
    assert m.to_json()["unmatched"] == ["Couch"]


def test_the_alias_table_is_consistent() -> None:
    # every normalised alias points to one role only, and every TG-263 row referenced exists
    for key, entries in names._LITERALS.items():
        assert len({role for role, _ in entries}) == 1, (key, entries)
    for info in names.ROLES.values():
        if info.tg263_roles:
            assert info.tg263_name
    assert names.canonical_role("ptv") == "PTV" and names.canonical_role("Spinal_Cord") == "spinal_cord"
    assert "ignore" not in names.ROLES and "plan" in names.ROLES
