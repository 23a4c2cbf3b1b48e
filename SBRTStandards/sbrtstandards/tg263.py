"""AAPM TG-263 names, default colours and DICOM interpreted types of the structures we use.

One table, :data:`STRUCTURES`, keyed by a *role* (the project's stable key, e.g.
``"lung_l"``, ``"chest_wall"``) gives the TG-263 primary name, a default display colour
and the RT ROI Interpreted Type (0x3006,0x00A4) to write. The OAR generators, the writers
and the rule catalogue use roles so that the spelling of a name lives in one place.

Names follow the TG-263 list (verified ones are marked ``verified=True``: found in the
974-entry TG-263 copy cited in the project's standards facts). Where TG-263 has no entry
(the PBT 2 cm zone, rings) the name follows the TG-263 conventions: major category
first, ``_L``/``_R`` last, ``-`` for subtraction, ``_PRVnn`` for expansions in mm, no
spaces, at most 16 characters.

Interpreted types use the DICOM defined terms (PS3.3 C.8.8.8.1). DICOM has no ``ITV``
term: the ITV is written as ``CTV`` (an internal-margin-expanded clinical target), the
nearest defined term, so every TPS accepts it; the name still says ITV.

Colours are this project's defaults (TG-263 does not define colours): targets red →
orange → blue from GTV to PTV, airways cyan, bones ivory, vessels magenta/purple.

Matching user names, aliases and Chinese names to roles is done elsewhere; this module
only answers "what is the standard name / colour / type of X".
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from sbrtstandards.errors import InputError

RGB = tuple[int, int, int]

# DICOM RT ROI Interpreted Type defined terms used here.
EXTERNAL = "EXTERNAL"
PTV = "PTV"
CTV = "CTV"
GTV = "GTV"
ORGAN = "ORGAN"
AVOIDANCE = "AVOIDANCE"
CONTROL = "CONTROL"

MAX_NAME_CHARS = 16  # TG-263: names of at most 16 characters for TPS compatibility


@dataclass(frozen=True)
class Structure:
    """One row of the table."""

    role: str
    name: str  # TG-263 primary name (or a TG-263-style name where the list has none)
    color_rgb: RGB
    interpreted_type: str
    description: str
    verified: bool = True  # name found in the TG-263 list; False = built by its conventions


def _s(role: str, name: str, rgb: RGB, itype: str, description: str, verified: bool = True) -> Structure:
    return Structure(role, name, rgb, itype, description, verified)


STRUCTURES: tuple[Structure, ...] = (
    # Targets
    _s("gtv", "GTV", (255, 0, 0), GTV, "gross tumour volume"),
    _s("ctv", "CTV", (255, 215, 0), CTV, "clinical target volume"),
    _s("itv", "ITV", (255, 128, 0), CTV, "internal target volume (union of the 4D-CT phase GTVs)"),
    _s("ptv", "PTV", (0, 96, 255), PTV, "planning target volume (ITV + set-up margin)"),
    # Body
    _s("body", "Body", (0, 200, 0), EXTERNAL, "patient outline only"),
    _s("external", "External", (0, 200, 0), EXTERNAL, "body plus external items (couch excluded)"),
    _s("skin", "Skin", (255, 200, 160), ORGAN, "skin (TG-263 spelling unconfirmed)", verified=False),
    # Lungs and airways
    _s("lung_l", "Lung_L", (150, 200, 255), ORGAN, "left lung"),
    _s("lung_r", "Lung_R", (110, 170, 240), ORGAN, "right lung"),
    _s("lungs", "Lungs", (130, 185, 250), ORGAN, "both lungs"),
    _s("lungs_gtv", "Lungs-GTV", (165, 210, 255), ORGAN, "both lungs minus the GTV"),
    _s("lungs_itv", "Lungs-ITV", (165, 210, 255), ORGAN, "both lungs minus the ITV"),
    _s("trachea", "Trachea", (80, 220, 220), ORGAN, "trachea"),
    _s("bronchus", "Bronchus", (60, 190, 200), ORGAN, "bronchi (bronchial tree)"),
    _s("bronchus_l", "Bronchus_L", (60, 190, 200), ORGAN, "left bronchial tree"),
    _s("bronchus_r", "Bronchus_R", (60, 190, 200), ORGAN, "right bronchial tree"),
    _s("bronchus_main", "Bronchus_Main", (50, 170, 190), ORGAN, "main bronchi"),
    _s("carina", "Carina", (40, 160, 170), ORGAN, "carina"),
    _s(
        "proximal_bronchial_tree",
        "AirWay_Prox",
        (0, 150, 160),
        ORGAN,
        "proximal bronchial tree: distal trachea, carina, main, intermediate and lobar bronchi",
    ),
    _s(
        "pbt_zone",
        "AirWay_Prox_Zone",
        (150, 230, 230),
        CONTROL,
        "2 cm zone around the proximal bronchial tree (central/peripheral classification)",
        verified=False,
    ),
    # Mediastinum and vessels
    _s("heart", "Heart", (220, 40, 110), ORGAN, "heart"),
    _s("pericardium", "Pericardium", (240, 110, 150), ORGAN, "pericardium"),
    _s("esophagus", "Esophagus", (160, 100, 40), ORGAN, "oesophagus"),
    _s("great_vessels", "GreatVes", (200, 0, 200), ORGAN, "great vessels: aorta, venae cavae, pulmonary A/V"),
    _s("aorta", "A_Aorta", (220, 20, 60), ORGAN, "aorta"),
    _s("pulmonary_artery", "A_Pulmonary", (120, 60, 220), ORGAN, "pulmonary artery"),
    _s("vena_cava_s", "V_Venacava_S", (60, 60, 200), ORGAN, "superior vena cava"),
    _s("vena_cava_i", "V_Venacava_I", (60, 60, 200), ORGAN, "inferior vena cava"),
    # Nerves and spine
    _s("spinal_cord", "SpinalCord", (255, 255, 0), ORGAN, "spinal cord"),
    _s("spinal_canal", "SpinalCanal", (230, 230, 120), ORGAN, "spinal canal"),
    _s("brachial_plexus_l", "BrachialPlex_L", (255, 140, 160), ORGAN, "left brachial plexus"),
    _s("brachial_plexus_r", "BrachialPlex_R", (255, 140, 160), ORGAN, "right brachial plexus"),
    _s("brachial_plexus", "BrachialPlexs", (255, 140, 160), ORGAN, "both brachial plexuses"),
    # Chest wall and bones
    _s("chest_wall", "Chestwall", (200, 120, 255), ORGAN, "chest wall"),
    _s("chest_wall_l", "Chestwall_L", (200, 120, 255), ORGAN, "left chest wall"),
    _s("chest_wall_r", "Chestwall_R", (200, 120, 255), ORGAN, "right chest wall"),
    _s("vertebra", "VB", (230, 220, 190), ORGAN, "vertebral bodies", verified=False),
    _s("sternum", "Sternum", (240, 230, 200), ORGAN, "sternum", verified=False),
    _s("rib", "Rib", (250, 240, 210), ORGAN, "one rib"),
    _s("ribs", "Ribs", (250, 240, 210), ORGAN, "ribs"),
    # Abdomen
    _s("liver", "Liver", (165, 42, 42), ORGAN, "liver"),
    _s("liver_gtv", "Liver-GTV", (200, 110, 90), ORGAN, "normal liver: liver minus GTV"),
    _s("liver_itv", "Liver-ITV", (200, 110, 90), ORGAN, "normal liver: liver minus ITV", verified=False),
    _s("stomach", "Stomach", (255, 160, 122), ORGAN, "stomach"),
    _s("duodenum", "Duodenum", (244, 164, 96), ORGAN, "duodenum"),
    _s("bowel_small", "Bowel_Small", (255, 222, 173), ORGAN, "small bowel"),
    _s("bowel_large", "Bowel_Large", (210, 180, 140), ORGAN, "large bowel"),
    _s("colon", "Colon", (205, 133, 63), ORGAN, "colon"),
    _s("kidney_l", "Kidney_L", (150, 50, 150), ORGAN, "left kidney"),
    _s("kidney_r", "Kidney_R", (120, 40, 160), ORGAN, "right kidney"),
    _s("kidneys", "Kidneys", (135, 45, 155), ORGAN, "both kidneys"),
    _s("bile_duct", "BileDuct_Common", (0, 128, 0), ORGAN, "common bile duct"),
    _s("spleen", "Spleen", (120, 120, 200), ORGAN, "spleen"),
    # Evaluation structures
    _s(
        "ring_ptv_20mm",
        "Ring_PTV_20mm",
        (128, 128, 128),
        CONTROL,
        "shell from the PTV surface out to 20 mm",
        verified=False,
    ),
    _s(
        "body_minus_ptv_20mm",
        "Body-PTV_20mm",
        (160, 160, 160),
        CONTROL,
        "body outside the PTV grown by 20 mm: where D2cm is read (RTOG 0813/0915)",
        verified=False,
    ),
)

_BY_ROLE: dict[str, Structure] = {s.role: s for s in STRUCTURES}
_BY_NAME: dict[str, Structure] = {s.name: s for s in STRUCTURES}


def _key(text: str) -> str:
    """Comparison key: case, spaces and underscores do not count (hyphens do: Lungs-GTV)."""
    return re.sub(r"[\s_]+", "", text).casefold()


_BY_KEY: dict[str, Structure] = {}
for _st in STRUCTURES:
    _BY_KEY.setdefault(_key(_st.name), _st)
    _BY_KEY.setdefault(_key(_st.role), _st)

_PRV = re.compile(r"^(?P<base>.+?)_PRV(?P<mm>\d{2,3})(?P<side>_[LR])?$", re.IGNORECASE)
_TARGET = re.compile(r"^(?:z_?)?(?P<kind>GTV|CTV|ITV|PTV)", re.IGNORECASE)
_TARGET_TYPE = {"GTV": GTV, "CTV": CTV, "ITV": CTV, "PTV": PTV}

# Fallback palette for names the table does not know: a stable pick from the name.
_PALETTE: tuple[RGB, ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (67, 99, 216),
    (245, 130, 49),
    (145, 30, 180),
    (66, 212, 244),
    (240, 50, 230),
    (191, 239, 69),
    (250, 190, 212),
    (70, 153, 144),
    (220, 190, 255),
    (154, 99, 36),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
)


def roles() -> list[str]:
    """All role keys of the table, in table order."""
    return [s.role for s in STRUCTURES]


def entry(role: str) -> Structure:
    """The table row of ``role``; :class:`InputError` listing the roles if it is unknown."""
    try:
        return _BY_ROLE[role]
    except KeyError:
        raise InputError(f"unknown structure role '{role}'; known roles: {', '.join(roles())}") from None


def standard_name(role: str) -> str:
    """TG-263 name of ``role`` (e.g. ``"chest_wall"`` -> ``"Chestwall"``)."""
    return entry(role).name


def lookup(name_or_role: str) -> Structure | None:
    """Table row for a role or a standard name (exact, then case/space/underscore-insensitive)."""
    text = name_or_role.strip()
    return _BY_ROLE.get(text) or _BY_NAME.get(text) or _BY_KEY.get(_key(text))


def color_for(name_or_role: str) -> RGB:
    """Default display colour: the table's, else by target prefix / PRV base, else a stable pick."""
    hit = lookup(name_or_role)
    if hit is not None:
        return hit.color_rgb
    text = name_or_role.strip()
    prv = _PRV.match(text)
    if prv:
        base = lookup(prv.group("base") + (prv.group("side") or ""))
        base = base or lookup(prv.group("base"))
        if base is not None:
            return _lighten(base.color_rgb)
    target = _TARGET.match(text)
    if target:
        return _BY_ROLE[target.group("kind").lower()].color_rgb
    if text.casefold().startswith("ring"):
        return _BY_ROLE["ring_ptv_20mm"].color_rgb
    return _PALETTE[zlib.crc32(text.encode("utf-8")) % len(_PALETTE)]


def interpreted_type_for(name_or_role: str) -> str:
    """RT ROI Interpreted Type to write for a structure (``ORGAN`` when nothing says otherwise)."""
    hit = lookup(name_or_role)
    if hit is not None:
        return hit.interpreted_type
    text = name_or_role.strip()
    if _PRV.match(text):
        return AVOIDANCE
    folded = text.casefold()
    # TG-263: structures not used for evaluation start with "z" (zPTV_Opt) or "_".
    not_for_evaluation = text.startswith("_") or (len(text) > 1 and text[0] == "z" and not text[1].islower())
    if folded.startswith("ring") or not_for_evaluation:
        return CONTROL
    target = _TARGET.match(text)
    if target and "-" not in text:  # "PTV-GTV"-like derived volumes are not targets themselves
        return _TARGET_TYPE[target.group("kind").upper()]
    if folded in ("body", "external", "outline", "skin_outline"):
        return EXTERNAL
    return ORGAN


def prv_name(base_name: str, margin_mm: float) -> str:
    """TG-263 PRV name: ``SpinalCord_PRV05``; laterality stays last (``BrachialPlex_PRV05_L``)."""
    mm = int(round(margin_mm))
    if mm < 0 or abs(margin_mm - mm) > 1e-6:
        raise InputError(f"PRV margin {margin_mm} mm: TG-263 PRV names need a whole, non-negative mm margin")
    side = ""
    base = base_name
    if re.search(r"_[LR]$", base):
        base, side = base[:-2], base[-2:]
    return f"{base}_PRV{mm:02d}{side}"


def ring_name(target: str, outer_mm: float, inner_mm: float = 0.0) -> str:
    """Name of a shell around ``target``: ``Ring_PTV_20mm`` (0-20 mm), ``Ring_PTV_20_40mm``."""
    outer, inner = int(round(outer_mm)), int(round(inner_mm))
    if outer <= inner or inner < 0:
        raise InputError(f"ring around {target}: outer {outer_mm} mm must exceed inner {inner_mm} mm >= 0")
    span = f"{outer}mm" if inner == 0 else f"{inner}_{outer}mm"
    return f"Ring_{target}_{span}"


def _lighten(rgb: RGB, fraction: float = 0.5) -> RGB:
    """Half-way to white: PRVs are drawn in a paler tone of their organ."""
    r, g, b = (int(round(c + (255 - c) * fraction)) for c in rgb)
    return (r, g, b)
