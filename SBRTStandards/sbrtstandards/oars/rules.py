"""Contouring rules of the standards as checks (teaching and QA): which OARs, over what extent.

Each :class:`ContouringRule` names a role (as :mod:`sbrtstandards.names` matches it), when
the standard asks for it, and its clause. :func:`check_contouring` says for each one
whether the structure set has it (``present``), ``sbrt oars`` built it (``built``), it is
``missing``, ``not_required`` for this case (with the reason), or present but worth a
``review`` (its extent falls short of what the clause asks).

Extent checks that need anatomy the software does not find (cricoid, L2) are replaced by
a necessary condition it can check: the spinal cord, which runs from below the cricoid to
the lower edge of L2 (seed 001 §5.2(1)), must at least span the lungs' cranio-caudal
extent; the great vessels must reach 3 cm above and below the PTV (§5.2(8)) wherever the
CT does. "Upper-lobe tumour" (brachial plexus, §5.2(5)) is judged from the tumour's
centroid: above the carina, or in the upper third of the ipsilateral lung when the carina
is unknown; the basis is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbrtstandards.grid import Grid
from sbrtstandards.oars.geometry import z_range_mm

LUNG_DOC = "T/CNHAW-B-0020-2025 explanatory note"
LIVER_DOC = "T/CNHAW-B-0017-2025"


@dataclass(frozen=True)
class ContouringRule:
    id: str
    site: str
    role: str
    requirement: str
    source: str
    when: str = "always"  # "always", "upper_lobe", "ultracentral", "optional"


RULES: tuple[ContouringRule, ...] = (
    ContouringRule("lung.spinal_cord", "lung", "spinal_cord",
                   "spinal cord on the bony canal, from below the cricoid (skull base for apex tumours) to the "
                   "lower edge of L2", f"{LUNG_DOC} §5.2(1)"),
    ContouringRule("lung.lungs", "lung", "lungs",
                   "both lungs on the lung window, with vessels < 1 cm beyond the hilum; without GTV, hilum, "
                   "trachea and main bronchi", f"{LUNG_DOC} §5.2(2)"),
    ContouringRule("lung.heart", "lung", "heart",
                   "heart along the pericardial sac, from where the pulmonary artery crosses the midline to the "
                   "apex", f"{LUNG_DOC} §5.2(3)"),
    ContouringRule("lung.esophagus", "lung", "esophagus",
                   "oesophagus from below the cricoid to the gastro-oesophageal junction", f"{LUNG_DOC} §5.2(4)"),
    ContouringRule("lung.brachial_plexus", "lung", "brachial_plexus",
                   "ipsilateral brachial plexus (C5 to T1 roots through the foramina), upper-lobe tumours only",
                   f"{LUNG_DOC} §5.2(5)", when="upper_lobe"),
    ContouringRule("lung.pbt", "lung", "pbt",
                   "trachea and proximal bronchial tree: distal 2 cm of trachea, carina, main, upper-lobe, "
                   "intermediate, middle-lobe, lingular and lower-lobe bronchi to the segmental split",
                   f"{LUNG_DOC} §5.2(6)"),
    ContouringRule("lung.trachea", "lung", "trachea",
                   "trachea (its Dmax <= 20 Gy for ultra-central tumours)", f"{LUNG_DOC} §6.2(3)",
                   when="ultracentral"),
    ContouringRule("lung.chest_wall", "lung", "chest_wall",
                   "chest wall: ipsilateral lung + 2 cm laterally, anteriorly and posteriorly (or ribs within "
                   "3 cm of the PTV)", f"{LUNG_DOC} §5.2(7)"),
    ContouringRule("lung.great_vessels", "lung", "great_vessels",
                   "great vessels (aorta, pulmonary artery, venae cavae), enhanced wall + 5 mm, from 3 cm below to "
                   "3 cm above the PTV", f"{LUNG_DOC} §5.2(8)"),
    ContouringRule("lung.ribs", "lung", "ribs", "ribs within 3 cm of the PTV (alternative to the chest wall)",
                   f"{LUNG_DOC} §5.2(7)", when="optional"),
    ContouringRule("liver.liver", "liver", "liver",
                   "whole liver, for the normal liver (liver minus GTV), spared volume >= 700 mL and mean < 15 Gy",
                   f"{LIVER_DOC} §7.3.1 (draft, seed 002); explanatory note §4.2.1 (seed 000)"),
    ContouringRule("liver.stomach", "liver", "stomach", "stomach (GI organs < 25 Gy)",
                   f"{LIVER_DOC} §7.3.2; Appendix A.1"),
    ContouringRule("liver.duodenum", "liver", "duodenum", "duodenum (GI organs < 25 Gy)",
                   f"{LIVER_DOC} §7.3.2; Appendix A.1"),
    ContouringRule("liver.bowel_small", "liver", "bowel_small", "small bowel (GI organs < 25 Gy)",
                   f"{LIVER_DOC} §7.3.2; Appendix A.1"),
    ContouringRule("liver.bowel_large", "liver", "bowel_large", "colon (GI organs < 25 Gy)",
                   f"{LIVER_DOC} §7.3.2; Appendix A.1"),
    ContouringRule("liver.kidneys", "liver", "kidneys", "kidneys / renal cortex (TG-101 200 cc spared)",
                   f"{LIVER_DOC} Appendix A.1"),
    ContouringRule("liver.spinal_cord", "liver", "spinal_cord", "spinal cord",
                   f"{LIVER_DOC} Appendix A.1; explanatory note §4.2.2"),
    ContouringRule("liver.esophagus", "liver", "esophagus", "oesophagus", f"{LIVER_DOC} Appendix A.1"),
    ContouringRule("liver.ribs", "liver", "ribs", "ribs near the PTV (< 30 Gy in 3 fractions)",
                   f"{LIVER_DOC} §7.3.2", when="optional"),
)


@dataclass
class CaseFacts:
    """What the checks need to know about the case."""

    site: str
    site_class: str | None
    upper_lobe: bool | None
    upper_lobe_basis: str
    present: Mapping[str, list[str]]  # role -> structure names in the input structure set
    built: Mapping[str, str]  # role -> name of the structure sbrt oars built
    masks: Mapping[str, np.ndarray]  # role -> mask, for extent checks (spinal_cord, lungs, great_vessels, PTV)
    grid: Grid


def upper_lobe(tumour_centroid_mm: np.ndarray | None, carina_z_mm: float | None,
               lung_ipsilateral: np.ndarray | None, grid: Grid) -> tuple[bool | None, str]:
    """Whether the tumour is in an upper lobe (heuristic, see the module docstring) and why."""
    if tumour_centroid_mm is None:
        return None, "no tumour"
    z = float(tumour_centroid_mm[2])
    if carina_z_mm is not None:
        return z > carina_z_mm, f"tumour centroid z {z:.1f} mm vs carina z {carina_z_mm:.1f} mm"
    if lung_ipsilateral is not None:
        zr = z_range_mm(lung_ipsilateral, grid)
        if zr is not None:
            limit = zr[1] - (zr[1] - zr[0]) / 3.0
            return z > limit, f"tumour centroid z {z:.1f} mm vs upper third of the lung (above {limit:.1f} mm)"
    return None, "no carina and no ipsilateral lung to judge the lobe"


def check_contouring(facts: CaseFacts) -> list[dict[str, Any]]:
    """One entry per rule of the site: ``{id, role, requirement, status, structures, detail, source}``."""
    out = []
    for rule in RULES:
        if rule.site != facts.site:
            continue
        names = list(facts.present.get(rule.role, []))
        built = facts.built.get(rule.role)
        detail = ""
        needed, why_not = _needed(rule, facts)
        if names:
            status = "present"
            problem = _extent_problem(rule.role, facts)
            if problem:
                status, detail = "review", problem
        elif built:
            status, names, detail = "built", [built], "built by sbrt oars from the standard's rule"
        elif not needed:
            status, detail = "not_required", why_not
        else:
            status = "missing"
            detail = "optional: " + why_not if rule.when == "optional" else "the standard asks for this structure"
        if rule.when == "optional" and status == "missing":
            status = "not_required"
        out.append({
            "id": rule.id,
            "role": rule.role,
            "requirement": rule.requirement,
            "status": status,
            "structures": names,
            "detail": detail,
            "source": rule.source,
        })
    return out


def _needed(rule: ContouringRule, facts: CaseFacts) -> tuple[bool, str]:
    if rule.when == "upper_lobe":
        if facts.upper_lobe is None:
            return True, ""
        if not facts.upper_lobe:
            return False, f"not an upper-lobe tumour ({facts.upper_lobe_basis})"
        return True, ""
    if rule.when == "ultracentral":
        if facts.site_class != "ultracentral":
            return False, f"only for ultra-central tumours (class: {facts.site_class})"
        return True, ""
    if rule.when == "optional":
        return False, "the chest wall may stand in for the ribs"
    return True, ""


def _extent_problem(role: str, facts: CaseFacts) -> str:
    grid = facts.grid
    mask = facts.masks.get(role)
    if mask is None or not mask.any():
        return ""
    zr = z_range_mm(mask, grid)
    assert zr is not None
    tol = grid.spacing_mm[2] + 1e-6
    if role == "spinal_cord":
        lungs = facts.masks.get("lungs")
        lz = z_range_mm(lungs, grid) if lungs is not None else None
        if lz is not None and (zr[0] > lz[0] + tol or zr[1] < lz[1] - tol):
            return (f"the cord spans z {zr[0]:.1f}..{zr[1]:.1f} mm but the lungs span {lz[0]:.1f}..{lz[1]:.1f} mm; "
                    "the cord should run from below the cricoid to the lower edge of L2")
    if role == "great_vessels":
        ptv = facts.masks.get("PTV")
        pz = z_range_mm(ptv, grid) if ptv is not None else None
        if pz is not None:
            want_lo = max(pz[0] - 30.0, float(grid.axis_coords_mm(2)[0]))
            want_hi = min(pz[1] + 30.0, float(grid.axis_coords_mm(2)[-1]))
            if zr[0] > want_lo + tol or zr[1] < want_hi - tol:
                return (f"the great vessels span z {zr[0]:.1f}..{zr[1]:.1f} mm; the standard asks for 3 cm above and "
                        f"below the PTV: {want_lo:.1f}..{want_hi:.1f} mm")
    return ""
