"""Structure names to the roles that the standards' rules are written for.

A rule of the catalogue names a *role* (``spinal_cord``, ``lungs_minus_target``, ``PTV``),
never a structure name; this module finds, in a structure set, the structure(s) that play
each role. Why a module of its own: clinics name structures in many ways (TG-263
``SpinalCord``, ``Spinal Cord``, ``Cord``, the Chinese ``脊髓`` of the seed standards), and a
rule silently evaluated on the wrong structure, or silently skipped, is worse than no check.

Matching, in order:

1. Explicit ``--map NAME=ROLE`` pairs (:func:`parse_map_option`) win over everything. A
   mapped name must exist in the structure set. ``NAME=ignore`` keeps a structure out of
   automatic matching (it is listed in ``ignored``, not dropped).
2. Every other name is compared with each role's aliases after normalisation: Unicode
   NFKC (full-width characters), case folding, and removal of spaces, ``_``, ``-``, ``.``,
   ``/`` and brackets (``Spinal_Cord`` = ``spinal cord`` = ``SPINAL-CORD``). Aliases are
   anchored patterns, so ``SpinalCord_PRV05`` is *not* the cord and ``PTV_opt`` is not the
   PTV. Each alias has a rank: 0 = the TG-263 name (from :mod:`sbrtstandards.tg263`),
   1 = a common variant or a Chinese name of the seeds, 2 = a loose synonym (``Cord``,
   ``SpinalCanal`` for the cord: seed 001 §5.2(1) contours the cord on the bony canal).
3. Subtractions are read before normalisation (TG-263 writes them with ``-``):
   ``Lungs-GTV``, ``全肺-ITV``, ``Liver - PTV`` give ``lungs_minus_target`` /
   ``normal_liver``, ranked GTV (0) before ITV/CTV (1) before PTV (2).
4. Per role the best rank wins. A tie at the best rank is *ambiguous* (``PTV1`` and
   ``PTV2``) and nothing is chosen, except for roles whose limit applies to each structure
   (paired serial organs such as the brachial plexus, ribs: ``how = "each"``) or to their
   union (``renal_cortex`` from left and right cortex: ``how = "union"``). A role with no
   structure of its own but whose parts exist is filled by their union (``lungs`` from
   ``Lung_L`` + ``Lung_R``, ``kidneys`` from ``Kidney_L`` + ``Kidney_R``).

Nothing is dropped: :class:`NameMatch` lists the structures that got no role
(``unmatched``, with a reason in ``notes`` when one is known, e.g. a PRV), the ambiguous
roles, and (given the roles a protocol needs) the roles with no structure (``missing``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sbrtstandards import tg263
from sbrtstandards.errors import InputError

IGNORE = "ignore"  # pseudo-role of --map: keep a structure out of automatic matching
PLAN = "plan"  # pseudo-role of plan-level metrics (CI, GI, R50, D2cm, dose grid): no structure


@dataclass(frozen=True)
class RoleInfo:
    """One role: what it is, how it is recognised and how several structures combine."""

    role: str
    description: str
    tg263_roles: tuple[str, ...] = ()  # rows of tg263.STRUCTURES whose names are rank-0 names
    names: tuple[str, ...] = ()  # literal rank-1 names (variants, Chinese names)
    loose: tuple[str, ...] = ()  # literal rank-2 names
    patterns: tuple[tuple[str, int], ...] = ()  # (regex on the normalised name, rank)
    multiple: str = ""  # "" (one structure), "each" (each tie evaluated), "union" (ties united)
    union_of: tuple[str, ...] = ()  # roles whose union stands in when this role has no structure
    is_structure: bool = True  # False for the "plan" pseudo-role

    @property
    def tg263_name(self) -> str:
        """The TG-263 name to show for this role ('' when TG-263 has none)."""
        return tg263.standard_name(self.tg263_roles[0]) if self.tg263_roles else ""


def _r(role: str, description: str, **kw: object) -> RoleInfo:
    return RoleInfo(role, description, **kw)  # type: ignore[arg-type]


_SIDE_L = ("l", "lt", "left", "左", "左侧")
_SIDE_R = ("r", "rt", "right", "右", "右侧")


def _sided(bases: Sequence[str], sides: Sequence[str]) -> tuple[str, ...]:
    """Both word orders of a base name and a side (``Lung_L``, ``Left Lung``, ``左肺``)."""
    out = []
    for b in bases:
        for s in sides:
            out += [b + s, s + b]
    return tuple(out)


_TARGET_SUB = r"(?P<kind>gtv|itv|ctv|ptv|igtv|肿瘤靶区|内靶区|临床靶区|计划靶区)\d*"

ROLES: dict[str, RoleInfo] = {
    r.role: r
    for r in (
        # Targets (upper case, as in the check JSON of the CLI contract)
        _r(
            "GTV",
            "gross tumour volume",
            tg263_roles=("gtv",),
            names=("肿瘤靶区", "大体肿瘤靶区"),
            patterns=((r"gtv(p|t)?\d*", 1),),
        ),
        _r("CTV", "clinical target volume", tg263_roles=("ctv",), names=("临床靶区",), patterns=((r"ctv\d+", 1),)),
        _r(
            "ITV",
            "internal target volume",
            tg263_roles=("itv",),
            names=("内靶区", "igtv"),
            patterns=((r"itv\d+", 1), (r"igtv\d+", 1)),
        ),
        _r(
            "PTV",
            "planning target volume",
            tg263_roles=("ptv",),
            names=("计划靶区",),
            patterns=((r"ptv\d+(c?gy)?", 1), (r"ptveval\d*(c?gy)?", 1)),
        ),
        _r(PLAN, "plan-level metrics (CI, GI, R50%, D2cm, hot spots, dose grid): no structure", is_structure=False),
        _r("body", "patient outline", tg263_roles=("body",), names=("external", "outline", "体表", "外轮廓")),
        _r(
            "ring_2cm",
            "body outside the PTV grown by 2 cm (the D2cm region of RTOG 0813/0915)",
            tg263_roles=("body_minus_ptv_20mm",),
            names=("ring2cm", "d2cm", "bodyptv20mm", "bodyminusptv20mm"),
        ),
        # Thorax
        _r(
            "lungs",
            "both lungs",
            tg263_roles=("lungs",),
            names=("lungtotal", "totallung", "lungstotal", "lungboth", "bothlungs", "lung", "全肺", "双肺", "肺"),
            union_of=("lung_left", "lung_right"),
        ),
        _r("lung_left", "left lung", tg263_roles=("lung_l",), names=_sided(("lung",), _SIDE_L) + ("左肺",)),
        _r("lung_right", "right lung", tg263_roles=("lung_r",), names=_sided(("lung",), _SIDE_R) + ("右肺",)),
        _r(
            "lungs_minus_target",
            "both lungs minus the target (GTV preferred, then ITV, then PTV)",
            tg263_roles=("lungs_gtv",),
        ),
        _r("trachea", "trachea", tg263_roles=("trachea",), names=("气管",)),
        _r(
            "bronchus_main",
            "main bronchi",
            tg263_roles=("bronchus_main",),
            names=("mainbronchus", "mainbronchi", "主支气管", "左主支气管", "右主支气管")
            + _sided(("bronchusmain", "mainbronchus"), _SIDE_L + _SIDE_R),
            patterns=((r"bronchus(l|r)", 1),),
            multiple="each",
        ),
        _r(
            "pbt",
            "proximal bronchial tree: distal 2 cm of trachea, carina, main, intermediate and lobar bronchi",
            tg263_roles=("proximal_bronchial_tree",),
            names=(
                "pbt",
                "proximalbronchialtree",
                "proxbronchtree",
                "bronchialtree",
                "bronchusprox",
                "airwayproximal",
                "气管与主支气管",
                "气管和主支气管",
                "支气管树",
                "近端支气管树",
            ),
        ),
        _r(
            "bronchus",
            "bronchi / smaller airways",
            tg263_roles=("bronchus",),
            names=("bronchi", "airwaydist", "支气管"),
        ),
        _r(
            "pbt_zone",
            "2 cm zone around the proximal bronchial tree",
            tg263_roles=("pbt_zone",),
            names=("pbt2cm", "pbtzone", "noflyzone"),
        ),
        _r(
            "esophagus",
            "oesophagus",
            tg263_roles=("esophagus",),
            names=("oesophagus", "esoph", "oesoph", "食管", "食道"),
        ),
        _r(
            "heart",
            "heart / pericardium",
            tg263_roles=("heart",),
            names=("pericardium", "heartpericardium", "心脏", "心", "心包"),
        ),
        _r(
            "great_vessels",
            "great vessels (aorta, venae cavae, pulmonary artery and veins)",
            tg263_roles=("great_vessels",),
            names=("greatvessels", "greatvessel", "大血管"),
        ),
        _r(
            "spinal_cord",
            "spinal cord (seed 001 §5.2(1): contoured on the bony spinal canal)",
            tg263_roles=("spinal_cord",),
            names=("cord", "脊髓"),
            loose=("spinalcanal", "canal", "椎管"),
        ),
        _r(
            "spinal_cord_subvolume",
            "cord sub-volume 5-6 mm above and below the treated level (TG-101); map explicitly",
        ),
        _r(
            "brachial_plexus",
            "brachial plexus (each side evaluated)",
            tg263_roles=("brachial_plexus", "brachial_plexus_l", "brachial_plexus_r"),
            names=("brachialplexus", "臂丛", "臂丛神经", "左臂丛", "右臂丛", "左臂丛神经", "右臂丛神经")
            + _sided(("brachialplexus", "brachialplex"), _SIDE_L + _SIDE_R),
            multiple="each",
        ),
        _r(
            "chest_wall",
            "chest wall (each side evaluated)",
            tg263_roles=("chest_wall", "chest_wall_l", "chest_wall_r"),
            names=("胸壁", "左胸壁", "右胸壁") + _sided(("chestwall",), _SIDE_L + _SIDE_R),
            multiple="each",
        ),
        _r(
            "ribs",
            "ribs (each rib structure evaluated)",
            tg263_roles=("ribs", "rib"),
            names=("肋骨",),
            patterns=((r"ribs?\d{0,2}(l|r)?", 0), (r"ribs?(l|r)\d{0,2}", 1)),
            multiple="each",
        ),
        _r("skin", "skin", tg263_roles=("skin",), names=("皮肤",)),
        # Abdomen
        _r("liver", "whole liver", tg263_roles=("liver",), names=("肝", "肝脏", "全肝")),
        _r(
            "normal_liver",
            "normal liver: liver minus the target (GTV preferred, then ITV, then PTV)",
            tg263_roles=("liver_gtv",),
            names=("normalliver", "livernormal", "正常肝", "正常肝脏", "正常肝组织"),
        ),
        _r("stomach", "stomach", tg263_roles=("stomach",), names=("胃",)),
        _r("duodenum", "duodenum", tg263_roles=("duodenum",), names=("duod", "十二指肠")),
        _r(
            "bowel_small",
            "small bowel (jejunum and ileum)",
            tg263_roles=("bowel_small",),
            names=(
                "smallbowel",
                "jejunumileum",
                "jejunum",
                "ileum",
                "小肠",
                "空肠",
                "回肠",
                "空回肠",
                "空肠回肠",
            ),
        ),
        _r(
            "bowel_large",
            "large bowel / colon",
            tg263_roles=("bowel_large", "colon"),
            names=("largebowel", "结肠", "大肠"),
        ),
        _r("rectum", "rectum", names=("rectum", "直肠")),
        _r(
            "kidneys",
            "both kidneys",
            tg263_roles=("kidneys",),
            names=("kidney", "bothkidneys", "kidneyboth", "肾", "肾脏", "双肾"),
            union_of=("kidney_left", "kidney_right"),
        ),
        _r("kidney_left", "left kidney", tg263_roles=("kidney_l",), names=_sided(("kidney",), _SIDE_L) + ("左肾",)),
        _r("kidney_right", "right kidney", tg263_roles=("kidney_r",), names=_sided(("kidney",), _SIDE_R) + ("右肾",)),
        _r(
            "renal_cortex",
            "renal cortex of both kidneys (left and right cortex united)",
            names=("kidneycortex", "renalcortex", "肾皮质")
            + _sided(("kidneycortex", "renalcortex"), _SIDE_L + _SIDE_R),
            multiple="union",
        ),
        _r(
            "renal_hilum",
            "renal hilum / vascular trunk (left and right united)",
            names=("kidneyhilum", "renalhilum", "肾门") + _sided(("kidneyhilum", "renalhilum"), _SIDE_L + _SIDE_R),
            multiple="union",
        ),
        _r(
            "bile_duct_common",
            "common bile duct",
            tg263_roles=("bile_duct",),
            names=("cbd", "commonbileduct", "胆总管"),
            loose=("胆管",),
        ),
        _r("bladder", "bladder", names=("bladder", "膀胱")),
        _r("bladder_wall", "bladder wall", names=("bladderwall", "膀胱壁")),
        # CNS, head and pelvis (TG-101 and the Michigan table)
        _r("brainstem", "brainstem", names=("brainstem", "脑干")),
        _r("optic_chiasm", "optic chiasm", names=("opticchiasm", "chiasm", "视交叉")),
        _r(
            "optic_nerve",
            "optic nerve (each side evaluated)",
            names=("opticnrv", "opticnerve", "视神经", "左视神经", "右视神经")
            + _sided(("opticnrv", "opticnerve"), _SIDE_L + _SIDE_R),
            multiple="each",
        ),
        _r(
            "optic_pathway",
            "optic pathway: chiasm and optic nerves (TG-101)",
            names=("opticpathway", "视路"),
            union_of=("optic_chiasm", "optic_nerve"),
        ),
        _r(
            "retina",
            "retina (each side evaluated)",
            names=("retina", "视网膜") + _sided(("retina",), _SIDE_L + _SIDE_R),
            multiple="each",
        ),
        _r(
            "cochlea",
            "cochlea (each side evaluated)",
            names=("cochlea", "耳蜗") + _sided(("cochlea",), _SIDE_L + _SIDE_R),
            multiple="each",
        ),
        _r("cauda_equina", "cauda equina", names=("caudaequina", "cauda", "马尾", "马尾神经")),
        _r("sacral_plexus", "sacral plexus", names=("sacralplex", "sacralplexus", "骶丛", "骶丛神经")),
        _r("penile_bulb", "penile bulb", names=("penilebulb", "阴茎球")),
        _r(
            "femoral_head",
            "femoral head (each side evaluated)",
            names=("femurhead", "femoralhead", "股骨头") + _sided(("femurhead", "femoralhead"), _SIDE_L + _SIDE_R),
            multiple="each",
        ),
    )
}

# Subtraction bases: "<base>-<target>" structures get these roles.
_MINUS_TARGET_BASES = {"lungs": "lungs_minus_target", "liver": "normal_liver"}
_MINUS_RANK = {
    "gtv": 0,
    "肿瘤靶区": 0,
    "itv": 1,
    "igtv": 1,
    "内靶区": 1,
    "ctv": 1,
    "临床靶区": 1,
    "ptv": 2,
    "计划靶区": 2,
}
_SUBTRACTION = re.compile(r"^(?P<base>.+?)\s*(?:-|−|–|\bminus\b)\s*(?P<sub>[^-−–]+)$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s_\-./()\[\]{}（）]+")


def normalise(name: str) -> str:
    """Comparison key: NFKC, case-folded, without spaces, ``_ - . /`` and brackets."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", name)).casefold()


def _literal_index() -> dict[str, list[tuple[str, int]]]:
    """normalised literal name -> [(role, rank)]; built once from ROLES and tg263."""
    index: dict[str, list[tuple[str, int]]] = {}

    def add(text: str, role: str, rank: int) -> None:
        entries = index.setdefault(normalise(text), [])
        if all(r != role for r, _ in entries):
            entries.append((role, rank))

    for info in ROLES.values():
        add(info.role, info.role, 0)
        for tg_role in info.tg263_roles:
            add(tg263.standard_name(tg_role), info.role, 0)
        for text in info.names:
            add(text, info.role, 1)
        for text in info.loose:
            add(text, info.role, 2)
    return index


_LITERALS = _literal_index()
_PATTERNS: list[tuple[re.Pattern[str], str, int]] = [
    (re.compile(rf"(?:{p})", re.IGNORECASE), info.role, rank) for info in ROLES.values() for p, rank in info.patterns
]


def role_names() -> list[str]:
    """Every role, in table order (for error messages and ``--help``)."""
    return list(ROLES)


def canonical_role(text: str) -> str | None:
    """The role spelled ``text`` (case-insensitive: ``ptv`` -> ``PTV``), else None."""
    key = text.strip()
    if key in ROLES:
        return key
    folded = {r.casefold(): r for r in ROLES}
    return folded.get(key.casefold())


def candidates(name: str) -> list[tuple[str, int]]:
    """Every (role, rank) that ``name`` looks like, best rank first."""
    found: dict[str, int] = {}
    sub = _SUBTRACTION.match(unicodedata.normalize("NFKC", name).strip())
    if sub:
        base_roles = {r for r, _ in _LITERALS.get(normalise(sub.group("base")), [])}
        kind = re.fullmatch(_TARGET_SUB, normalise(sub.group("sub")))
        for base, role in _MINUS_TARGET_BASES.items():
            if base in base_roles and kind:
                found[role] = _MINUS_RANK[kind.group("kind")]
    key = normalise(name)
    for role, rank in _LITERALS.get(key, []):
        found[role] = min(rank, found.get(role, rank))
    for pattern, role, rank in _PATTERNS:
        if pattern.fullmatch(key):
            found[role] = min(rank, found.get(role, rank))
    return sorted(found.items(), key=lambda item: (item[1], item[0]))


def _why_unmatched(name: str) -> str:
    key = normalise(name)
    tokens = {t.casefold() for t in _SEPARATORS.split(unicodedata.normalize("NFKC", name)) if t}
    if "prv" in key:
        return "a PRV (organ plus margin) is not the organ itself; use --map NAME=ROLE if intended"
    if tokens & {"opt", "optim", "ring", "avoid", "dummy", "help", "helper", "tmp", "temp", "shell"}:
        return "looks like a planning helper structure"
    if len(name) > 1 and name[0] == "z" and (name[1].isupper() or name[1] in "_-"):
        return "TG-263: names starting with 'z' are not for evaluation"
    return "no role recognised; use --map NAME=ROLE"


@dataclass
class NameMatch:
    """The outcome of matching: nothing is silently dropped.

    ``roles[role]`` lists the structure names of the role; ``how[role]`` says how to use
    them: ``"single"``, ``"each"`` (evaluate every structure separately) or ``"union"``
    (evaluate their union as one volume). ``source[role]`` is ``"map"`` for ``--map``,
    else ``"name"``.
    """

    roles: dict[str, list[str]] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def name_of(self, role: str) -> str | None:
        """The one structure of a single-structure role, else None."""
        names = self.roles.get(role)
        return names[0] if names and self.how.get(role) == "single" else None

    def role_of(self, name: str) -> list[str]:
        """Roles that a structure plays."""
        return [role for role, names in self.roles.items() if name in names]

    def missing_roles(self, wanted: Iterable[str]) -> list[str]:
        """Roles of ``wanted`` with no structure (the ``plan`` pseudo-role never is)."""
        return [r for r in dict.fromkeys(wanted) if r not in self.roles and r != PLAN]

    def to_json(self) -> dict[str, object]:
        return {
            "roles": {r: list(n) for r, n in self.roles.items()},
            "how": dict(self.how),
            "unmatched": list(self.unmatched),
            "ambiguous": {r: list(n) for r, n in self.ambiguous.items()},
            "ignored": list(self.ignored),
            "missing": list(self.missing),
            "notes": dict(self.notes),
        }


def parse_map_option(text: str) -> tuple[str, str]:
    """``"NAME=ROLE"`` -> (name, role); InputError for bad syntax or an unknown role."""
    name, sep, role_text = text.rpartition("=")
    name = name.strip()
    if not sep or not name or not role_text.strip():
        raise InputError(f"--map '{text}': expected NAME=ROLE, e.g. --map 'Cord=spinal_cord'")
    if role_text.strip().casefold() == IGNORE:
        return name, IGNORE
    role = canonical_role(role_text)
    if role is None or role == PLAN:
        known = ", ".join(r for r in ROLES if r != PLAN)
        raise InputError(f"--map '{text}': unknown role '{role_text.strip()}'; known roles: {known}, {IGNORE}")
    return name, role


def parse_map_options(texts: Iterable[str]) -> dict[str, str]:
    """Several ``--map`` options -> {name: role}; the same name twice with two roles is an error."""
    mapping: dict[str, str] = {}
    for text in texts:
        name, role = parse_map_option(text)
        if name in mapping and mapping[name] != role:
            raise InputError(f"--map: structure '{name}' mapped twice ({mapping[name]} and {role})")
        mapping[name] = role
    return mapping


def _resolve_mapped_name(name: str, names: Sequence[str]) -> str:
    if name in names:
        return name
    hits = [n for n in names if normalise(n) == normalise(name)]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(names) if names else "(none)"
    if hits:
        raise InputError(f"--map '{name}': several structures match ({', '.join(hits)}); give the exact name")
    raise InputError(f"--map '{name}': no such structure in the structure set (structures: {listing})")


def match_structures(
    names: Sequence[str],
    mapping: Mapping[str, str] | None = None,
    wanted_roles: Iterable[str] | None = None,
) -> NameMatch:
    """Assign structure names to roles (see the module docstring for the rules).

    ``mapping`` is {structure name: role} from ``--map`` (roles checked here as well);
    ``wanted_roles`` (e.g. the roles of a protocol's rules) fills ``NameMatch.missing``.
    """
    result = NameMatch()
    unique = list(dict.fromkeys(names))
    for name in unique:
        if names.count(name) > 1:
            result.notes[name] = f"the structure set has {names.count(name)} structures named '{name}'"
    taken: set[str] = set()
    for raw_name, raw_role in (mapping or {}).items():
        name = _resolve_mapped_name(raw_name, unique)
        role = parse_map_option(f"{raw_name}={raw_role}")[1]
        taken.add(name)
        if role == IGNORE:
            result.ignored.append(name)
            continue
        result.roles.setdefault(role, []).append(name)
        result.source[role] = "map"
    for role, mapped in result.roles.items():
        result.how[role] = "single" if len(mapped) == 1 else ("union" if ROLES[role].multiple == "union" else "each")

    by_role: dict[str, list[tuple[int, str]]] = {}
    for name in unique:
        if name in taken:
            continue
        for role, rank in candidates(name):
            by_role.setdefault(role, []).append((rank, name))
    assigned: set[str] = set(taken)
    for role, hits in by_role.items():
        if role in result.roles:
            for _, name in hits:
                result.notes.setdefault(name, f"looks like {role}, but --map chose '{result.roles[role][0]}'")
            continue
        best = min(rank for rank, _ in hits)
        top = [name for rank, name in hits if rank == best]
        multiple = ROLES[role].multiple
        if len(top) > 1 and not multiple:
            result.ambiguous[role] = top
            for name in top:
                result.notes.setdefault(name, f"one of several structures that look like {role}: use --map")
            continue
        result.roles[role] = top
        result.how[role] = "single" if len(top) == 1 else multiple
        result.source[role] = "name"
        assigned.update(top)
        for rank, name in hits:
            if rank > best:
                result.notes.setdefault(name, f"also looks like {role}, but '{top[0]}' is a closer name")
    _fill_unions(result)
    result.unmatched = [n for n in unique if n not in assigned and n not in result.ignored]
    for name in result.unmatched:
        result.notes.setdefault(name, _why_unmatched(name))
    if wanted_roles is not None:
        result.missing = result.missing_roles(wanted_roles)
    return result


def _fill_unions(result: NameMatch) -> None:
    """``lungs`` from ``lung_left`` + ``lung_right`` (etc.) when no structure is the whole organ."""
    for role, info in ROLES.items():
        if role in result.roles or not info.union_of:
            continue
        parts = [result.roles[p] for p in info.union_of if p in result.roles]
        if len(parts) == len(info.union_of):
            result.roles[role] = [n for part in parts for n in part]
            result.how[role] = "union"
            result.source[role] = "union of " + " + ".join(info.union_of)
