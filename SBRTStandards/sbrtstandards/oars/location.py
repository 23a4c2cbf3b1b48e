"""Tumour location class (peripheral / central / ultra-central), the PBT 2 cm zone and what they select.

Definitions (seed 001 §5.3 and §6.2; project reference ``standards-facts.md`` §5):

* **Proximal bronchial tree** (PBT, seed 001 §5.2(6)): the distal 2 cm of the trachea, the
  carina, both main bronchi, both upper-lobe bronchi, the bronchus intermedius, the
  middle-lobe and lingular bronchi and both lower-lobe bronchi up to their segmental split.
  Built from a PBT contour when there is one, else from the trachea (only its lowest 2 cm,
  :func:`distal_trachea`) and the bronchus contours, else from the airways found on the CT.
* **PBT zone** (:data:`PBT_ZONE_MM`): the PBT grown by 2 cm in all directions (the RTOG 0813
  "no-fly zone"), an exact isotropic Euclidean margin.
* **Peripheral**: the tumour is 2 cm or more from the bronchial tree; **central**: less than
  2 cm (seed 001 §5.3 / §6.2(1)-(2)). The tumour is the GTV when the structure set has one,
  else the ITV, else the target given (which one is reported). The distance is the exact
  Euclidean gap between the voxel representations of the tumour and of the PBT on the
  anisotropic grid (:func:`sbrtstandards.oars.geometry.gap_mm`), 0 when they touch.
* **Ultra-central**: the PTV touches or overlaps the trachea, the PBT or the oesophagus
  (seed 001 §5.3 / §6.2(3): "abutting the trachea / oesophagus"; the PBT as in the Montreal
  definition, Lenglet 2019, reference §5). "Touches" means a gap of 0 between voxel boxes.
  Ultra-central takes precedence over central.

The class selects the standard's fractionation options and, for ultra-central tumours,
the extra limits of §6.2(3), both read from the ``cn-lung-sbrt`` protocol of the catalogue
(one source of truth; :data:`FALLBACK_SCHEMES` is used only if the catalogue cannot be
loaded, and a note says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sbrtstandards.grid import Grid
from sbrtstandards.oars.geometry import gap_mm
from sbrtstandards.radiobiology import bed

CENTRAL_DISTANCE_MM = 20.0
PBT_ZONE_MM = 20.0
DISTAL_TRACHEA_MM = 20.0
CLASSES = ("peripheral", "central", "ultracentral")
PROTOCOL_ID = "cn-lung-sbrt"
SOURCE = "T/CNHAW-B-0020-2025 explanatory note §5.3 (table), §6.2(1)-(3)"
PBT_SOURCE = "T/CNHAW-B-0020-2025 explanatory note §5.2(6); RTOG 0813 no-fly zone (PBT + 2 cm)"

# Used only when the catalogue cannot be read: (class, dose Gy, fractions, source).
FALLBACK_SCHEMES: tuple[tuple[str, float, int, str], ...] = (
    ("peripheral", 54.0, 3, "T/CNHAW-B-0020-2025 explanatory note §5.3; §6.2(1)"),
    ("peripheral", 50.0, 4, "T/CNHAW-B-0020-2025 explanatory note §5.3; §6.2(1)"),
    ("central", 60.0, 8, "T/CNHAW-B-0020-2025 explanatory note §5.3; §6.2(2)"),
    ("central", 50.0, 5, "T/CNHAW-B-0020-2025 explanatory note §5.3; §6.2(2)"),
    ("ultracentral", 48.0, 4, "T/CNHAW-B-0020-2025 explanatory note §5.3; §6.2(3)"),
    ("ultracentral", 60.0, 8, "T/CNHAW-B-0020-2025 explanatory note §5.3; §6.2(3)"),
)
FALLBACK_ULTRACENTRAL_LIMITS: tuple[tuple[str, str, str, float, bool], ...] = (
    ("trachea", "Max[Gy]", "<=", 20.0, False),
    ("trachea", "Max[Gy]", "<=", 4.0, True),
    ("esophagus", "Max[Gy]", "<=", 20.0, False),
    ("esophagus", "Max[Gy]", "<=", 4.0, True),
    ("great_vessels", "Max[Gy]", "<", 40.0, False),
    ("great_vessels", "Max[Gy]", "<=", 8.0, True),
    ("lungs_minus_target", "V20Gy[%]", "<", 5.0, False),
)


@dataclass
class Location:
    """The location class and what decided it."""

    site_class: str | None  # "peripheral", "central", "ultracentral", or None (could not be decided)
    distance_to_pbt_mm: float | None
    touches: list[str]
    tumour: str  # name of the structure the distance was measured from
    ptv: str | None  # name of the structure tested for contact
    reason: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.site_class,
            "distance_to_pbt_mm": None if self.distance_to_pbt_mm is None else round(self.distance_to_pbt_mm, 2),
            "touches": list(self.touches),
            "measured_from": self.tumour,
            "contact_tested_with": self.ptv,
            "central_if_closer_than_mm": CENTRAL_DISTANCE_MM,
            "reason": self.reason,
            "source": SOURCE,
        }


def distal_trachea(trachea: np.ndarray, grid: Grid, length_mm: float = DISTAL_TRACHEA_MM) -> np.ndarray:
    """The lowest ``length_mm`` of the trachea (the part that belongs to the PBT, §5.2(6)).

    The trachea contour ends at the carina, so its lowest slice is taken as the carina and
    the slices up to ``length_mm`` above it are kept.
    """
    ks = np.flatnonzero(trachea.any(axis=(1, 2)))
    if len(ks) == 0:
        return trachea.copy()
    zs = grid.axis_coords_mm(2)
    keep = zs <= zs[ks[0]] + length_mm + 1e-6
    return trachea & keep[:, None, None]


def classify_location(
    tumour: np.ndarray,
    tumour_name: str,
    grid: Grid,
    *,
    pbt: np.ndarray | None,
    ptv: np.ndarray | None,
    ptv_name: str | None,
    contact: Mapping[str, np.ndarray | None],
) -> Location:
    """Peripheral / central / ultra-central (see the module docstring).

    ``contact`` maps a role (``trachea``, ``pbt``, ``esophagus``) to its mask (None = not
    available); the PTV touching any of them makes the tumour ultra-central.
    """
    notes: list[str] = []
    touches: list[str] = []
    tester = ptv if ptv is not None and ptv.any() else None
    if tester is None:
        notes.append(f"location: no PTV; contact with the trachea/PBT/oesophagus tested with {tumour_name}")
        tester, ptv_name = tumour, tumour_name
    for role, organ in contact.items():
        if organ is None or not organ.any():
            continue
        if gap_mm(tester, organ, grid) == 0.0:
            touches.append(role)
    missing = [role for role, organ in contact.items() if organ is None or not organ.any()]
    if missing:
        notes.append("location: no " + ", ".join(missing) + " to test for contact (ultra-central test incomplete)")
    distance = gap_mm(tumour, pbt, grid) if pbt is not None else None
    if touches:
        reason = f"{ptv_name} touches or overlaps " + ", ".join(touches) + " (ultra-central, §5.3 / §6.2(3))"
        return Location("ultracentral", distance, touches, tumour_name, ptv_name, reason, notes)
    if distance is None:
        notes.append("location: no proximal bronchial tree (contour or CT airways): the class cannot be decided")
        return Location(None, None, touches, tumour_name, ptv_name,
                        "no proximal bronchial tree to measure the distance to", notes)
    if distance < CENTRAL_DISTANCE_MM:
        reason = (f"{tumour_name} is {distance:.1f} mm from the proximal bronchial tree "
                  f"(< {CENTRAL_DISTANCE_MM:g} mm: central, §5.3 / §6.2(2))")
        return Location("central", distance, touches, tumour_name, ptv_name, reason, notes)
    reason = (f"{tumour_name} is {distance:.1f} mm from the proximal bronchial tree "
              f"(>= {CENTRAL_DISTANCE_MM:g} mm: peripheral, §5.3 / §6.2(1))")
    return Location("peripheral", distance, touches, tumour_name, ptv_name, reason, notes)


# ----------------------------------------------------------------------------- what the class selects


def fractionation_options(site_class: str | None, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """The lung standard's schemes for ``site_class``: ``[{dose_gy, fractions, bed10_gy, ...}]``."""
    if site_class is None:
        return []
    if site_class not in CLASSES:
        raise ValueError(f"unknown location class {site_class!r}")
    protocol = _protocol(notes)
    if protocol is not None:
        out = []
        for s in protocol.fractionation:
            spec = s.conditions.get("site_class")
            if spec is None or site_class not in (spec if isinstance(spec, (tuple, list)) else (spec,)):
                continue
            bed10 = s.bed10_gy()
            out.append({
                "dose_gy": _number(s.dose_gy),
                "fractions": s.fractions if not isinstance(s.fractions, tuple) else list(s.fractions),
                "bed10_gy": None if bed10 is None else round(bed10, 1),
                "id": s.id,
                "indication": s.indication,
                "evidence": s.evidence,
                "source": s.source,
            })
        return out
    return [
        {"dose_gy": dose, "fractions": n, "bed10_gy": round(bed(dose, n, 10.0), 1), "id": "", "indication": "",
         "evidence": "", "source": src}
        for cls, dose, n, src in FALLBACK_SCHEMES
        if cls == site_class
    ]


def ultracentral_limits(notes: list[str] | None = None) -> list[dict[str, Any]]:
    """The extra limits of §6.2(3) for ultra-central tumours (trachea/oesophagus, great vessels, lung)."""
    protocol = _protocol(notes)
    if protocol is not None:
        out = []
        for r in protocol.rules:
            spec = r.conditions.get("site_class")
            only_uc = spec is not None and tuple(spec if isinstance(spec, (tuple, list)) else (spec,)) == (
                "ultracentral",)
            if not only_uc or "T/CNHAW-B-0020" not in r.source:
                continue
            out.append({"id": r.id, "structure": r.structure, "metric": r.metric, "comparator": r.comparator,
                        "limit": _number(r.limit), "per_fraction": r.per_fraction, "text": r.describe(),
                        "source": r.source})
        return out
    return [
        {"id": "", "structure": role, "metric": metric, "comparator": comp, "limit": limit, "per_fraction": per_fx,
         "text": f"{metric} {comp} {limit:g}" + (" per fraction" if per_fx else ""),
         "source": "T/CNHAW-B-0020-2025 explanatory note §6.2(3)"}
        for role, metric, comp, limit, per_fx in FALLBACK_ULTRACENTRAL_LIMITS
    ]


def _number(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_number(v) for v in value]
    f = float(value)
    return int(f) if f.is_integer() else f


def _protocol(notes: list[str] | None) -> Any:
    """The ``cn-lung-sbrt`` protocol, or None (with a note) when the catalogue cannot be read."""
    try:
        from sbrtstandards.catalogue import load_protocol

        return load_protocol(PROTOCOL_ID)
    except Exception as exc:  # noqa: BLE001 - any catalogue failure falls back to the built-in table
        if notes is not None:
            notes.append(f"catalogue protocol {PROTOCOL_ID} unavailable ({exc}); built-in fractionation table used")
        return None
