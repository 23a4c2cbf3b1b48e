"""TG-263 table: names as the TG-263 list spells them, valid DICOM types, colours, helpers."""

from __future__ import annotations

import re

import pytest

from sbrtstandards import tg263
from sbrtstandards.errors import InputError

# DICOM PS3.3 C.8.8.8.1 defined terms for RT ROI Interpreted Type.
DICOM_TYPES = {
    "EXTERNAL", "PTV", "CTV", "GTV", "AVOIDANCE", "ORGAN", "MARKER", "REGISTRATION", "ISOCENTER",
    "CONTRAST_AGENT", "CAVITY", "BRACHY_CHANNEL", "BRACHY_ACCESSORY", "BRACHY_SRC_APP",
    "BRACHY_CHNL_SHLD", "SUPPORT", "FIXATION", "DOSE_REGION", "CONTROL", "DOSE_MEASUREMENT",
}  # fmt: skip


@pytest.mark.parametrize(
    ("role", "name"),
    [
        # Spellings checked against the TG-263 list (shared/reference/standards-facts.md, section 6).
        ("gtv", "GTV"),
        ("itv", "ITV"),
        ("ptv", "PTV"),
        ("body", "Body"),
        ("external", "External"),
        ("lung_l", "Lung_L"),
        ("lung_r", "Lung_R"),
        ("lungs", "Lungs"),
        ("lungs_gtv", "Lungs-GTV"),
        ("lungs_itv", "Lungs-ITV"),
        ("heart", "Heart"),
        ("esophagus", "Esophagus"),
        ("trachea", "Trachea"),
        ("bronchus", "Bronchus"),
        ("bronchus_main", "Bronchus_Main"),
        ("proximal_bronchial_tree", "AirWay_Prox"),
        ("spinal_cord", "SpinalCord"),
        ("spinal_canal", "SpinalCanal"),
        ("chest_wall", "Chestwall"),
        ("great_vessels", "GreatVes"),
        ("aorta", "A_Aorta"),
        ("pulmonary_artery", "A_Pulmonary"),
        ("brachial_plexus_l", "BrachialPlex_L"),
        ("brachial_plexus_r", "BrachialPlex_R"),
        ("ribs", "Ribs"),
        ("liver", "Liver"),
        ("liver_gtv", "Liver-GTV"),
        ("stomach", "Stomach"),
        ("duodenum", "Duodenum"),
        ("bowel_small", "Bowel_Small"),
        ("bowel_large", "Bowel_Large"),
        ("kidney_l", "Kidney_L"),
        ("kidney_r", "Kidney_R"),
        ("bile_duct", "BileDuct_Common"),
    ],
)
def test_standard_names_follow_tg263(role: str, name: str) -> None:
    assert tg263.standard_name(role) == name


def test_every_row_obeys_tg263_conventions() -> None:
    roles = [s.role for s in tg263.STRUCTURES]
    names = [s.name for s in tg263.STRUCTURES]
    assert len(set(roles)) == len(roles)
    assert len(set(names)) == len(names)
    for s in tg263.STRUCTURES:
        assert len(s.name) <= 16, s.name
        assert re.fullmatch(r"[A-Za-z0-9_\-]+", s.name), s.name
        assert s.interpreted_type in DICOM_TYPES, s
        assert len(s.color_rgb) == 3 and all(0 <= c <= 255 and isinstance(c, int) for c in s.color_rgb)


def test_unknown_role_lists_the_roles() -> None:
    with pytest.raises(InputError, match="unknown structure role 'lungg'.*lung_l"):
        tg263.standard_name("lungg")


def test_colour_and_type_by_role_name_or_loose_name() -> None:
    cord = tg263.entry("spinal_cord")
    assert tg263.color_for("spinal_cord") == cord.color_rgb
    assert tg263.color_for("SpinalCord") == cord.color_rgb
    assert tg263.color_for("spinal cord") == cord.color_rgb  # case/space/underscore-insensitive
    assert tg263.interpreted_type_for("Body") == "EXTERNAL"
    assert tg263.interpreted_type_for("ptv") == "PTV"
    assert tg263.interpreted_type_for("ITV") == "CTV"  # DICOM has no ITV term
    assert tg263.interpreted_type_for("Lungs-ITV") == "ORGAN"


def test_names_outside_the_table() -> None:
    assert tg263.interpreted_type_for("PTV_5000") == "PTV"
    assert tg263.interpreted_type_for("GTV1") == "GTV"
    assert tg263.interpreted_type_for("PTV-GTV") == "ORGAN"
    assert tg263.interpreted_type_for("SpinalCord_PRV05") == "AVOIDANCE"
    assert tg263.interpreted_type_for("zPTV_Opt") == "CONTROL"
    assert tg263.interpreted_type_for("Ring_PTV_30mm") == "CONTROL"
    assert tg263.interpreted_type_for("Zygoma") == "ORGAN"
    assert tg263.color_for("PTV_5000") == tg263.entry("ptv").color_rgb
    # PRV: half-way to white from SpinalCord's (255, 255, 0) -> (255, 255, 128)
    assert tg263.entry("spinal_cord").color_rgb == (255, 255, 0)
    assert tg263.color_for("SpinalCord_PRV05") == (255, 255, 128)
    # laterality after the PRV suffix still finds BrachialPlex_L (255, 140, 160)
    assert tg263.color_for("BrachialPlex_PRV05_L") == (255, 198, 208)
    unknown = tg263.color_for("Pacemaker")
    assert unknown == tg263.color_for("Pacemaker")  # stable
    assert all(0 <= c <= 255 for c in unknown)


def test_prv_and_ring_names() -> None:
    assert tg263.prv_name("SpinalCord", 5) == "SpinalCord_PRV05"
    assert tg263.prv_name("Esophagus", 10) == "Esophagus_PRV10"
    assert tg263.prv_name("BrachialPlex_L", 5) == "BrachialPlex_PRV05_L"
    assert tg263.ring_name("PTV", 20) == "Ring_PTV_20mm"
    assert tg263.ring_name("PTV", 40, 20) == "Ring_PTV_20_40mm"
    with pytest.raises(InputError):
        tg263.prv_name("SpinalCord", 2.5)
    with pytest.raises(InputError):
        tg263.ring_name("PTV", 10, 20)
