"""BED and EQD2 (linear-quadratic model) and the Michigan cumulative re-irradiation check.

Formulas (seed 002 §7.2 note; reference section 4): for a total dose ``D`` in ``n``
fractions of ``d = D / n``,

* ``BED  = D * (1 + d / (alpha/beta))``
* ``EQD2 = D * (d + alpha/beta) / (2 + alpha/beta) = BED / (1 + 2 / (alpha/beta))``

Default alpha/beta: 10 Gy for tumour (the liver seed's value for HCC, seed 002 §7.2),
3 Gy for late-responding normal tissue (the common convention; not a seed rule) and 2.5 Gy
for every organ of the Michigan re-irradiation table (seed 002 Table A.3).

Voxelwise EQD2 converts each voxel's total dose with its own dose per fraction
(``d = D_voxel / n``), which is what an EQD2 DVH needs: converting a DVH's dose axis
after the fact gives the same numbers only because the map is monotonic in ``D``.

Re-irradiation (seed 002 Table A.3, University of Michigan): a prior course's EQD2 is
*discounted* by a percentage that grows with the time since that course (tissue repair),
then added to the new course's EQD2 and compared with the organ's cumulative EQD2 limit
(maximum dose to 0.1 cc, alpha/beta 2.5). The percentages and limits are data, in the
``michigan-reirradiation`` protocol of the catalogue; this module only applies them.
Interval bands: ``< 3 months``, ``3-6 months``, ``6-12 months``, ``1-3 years`` and, by the
table's footnote, ``> 3 years`` (prior dose reduced by 50 %). Band edges belong to the
later band (3.0 months is "3-6 months"), except 36 months which is still "1-3 years"
(the footnote says *more than* 3 years).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbrtstandards.errors import InputError

ALPHA_BETA_TUMOUR_GY = 10.0
ALPHA_BETA_LATE_GY = 3.0
ALPHA_BETA_MICHIGAN_GY = 2.5

INTERVAL_BANDS: tuple[str, ...] = ("lt_3mo", "3_6mo", "6_12mo", "1_3y", "gt_3y")
INTERVAL_BAND_LABELS: dict[str, str] = {
    "lt_3mo": "< 3 months",
    "3_6mo": "3-6 months",
    "6_12mo": "6-12 months",
    "1_3y": "1-3 years",
    "gt_3y": "> 3 years",
}


def _check_positive(value: float, what: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{what} must be a positive number, got {value!r}")
    return v


def _check_dose(total_gy: float) -> float:
    v = float(total_gy)
    if not math.isfinite(v) or v < 0:
        raise InputError(f"dose must be a non-negative number of Gy, got {total_gy!r}")
    return v


def _check_fractions(fractions: int) -> int:
    if isinstance(fractions, bool) or int(fractions) != fractions or fractions < 1:
        raise InputError(f"fractions must be a whole number >= 1, got {fractions!r}")
    return int(fractions)


def bed(total_gy: float, fractions: int, alpha_beta_gy: float = ALPHA_BETA_TUMOUR_GY) -> float:
    """Biologically effective dose (Gy) of ``total_gy`` in ``fractions`` equal fractions."""
    dose = _check_dose(total_gy)
    n = _check_fractions(fractions)
    ab = _check_positive(alpha_beta_gy, "alpha/beta (Gy)")
    return dose * (1.0 + dose / n / ab)


def eqd2(total_gy: float, fractions: int, alpha_beta_gy: float = ALPHA_BETA_TUMOUR_GY) -> float:
    """Equivalent dose in 2 Gy fractions (Gy)."""
    ab = _check_positive(alpha_beta_gy, "alpha/beta (Gy)")
    return bed(total_gy, fractions, ab) / (1.0 + 2.0 / ab)


def eqd2_from_bed(bed_gy: float, alpha_beta_gy: float) -> float:
    """EQD2 of a BED (both in Gy)."""
    ab = _check_positive(alpha_beta_gy, "alpha/beta (Gy)")
    return float(bed_gy) / (1.0 + 2.0 / ab)


def physical_dose_for_eqd2(eqd2_gy: float, fractions: int, alpha_beta_gy: float) -> float:
    """Total physical dose in ``fractions`` fractions that gives ``eqd2_gy`` (inverse of :func:`eqd2`).

    Solves ``D^2 / (n ab) + D - EQD2 (1 + 2/ab) = 0`` for the positive root; used to show a
    cumulative EQD2 allowance as the physical dose still available for the new course.
    """
    n = _check_fractions(fractions)
    ab = _check_positive(alpha_beta_gy, "alpha/beta (Gy)")
    target_bed = max(0.0, float(eqd2_gy)) * (1.0 + 2.0 / ab)
    a = 1.0 / (n * ab)
    return (-1.0 + math.sqrt(1.0 + 4.0 * a * target_bed)) / (2.0 * a)


def eqd2_array(dose_gy: Any, fractions: int, alpha_beta_gy: float = ALPHA_BETA_LATE_GY) -> np.ndarray:
    """Voxelwise EQD2 of a total-dose array (any shape), each voxel with its own dose per fraction."""
    n = _check_fractions(fractions)
    ab = _check_positive(alpha_beta_gy, "alpha/beta (Gy)")
    dose = np.asarray(dose_gy, dtype=np.float64)
    if dose.size and (not np.all(np.isfinite(dose)) or float(dose.min()) < 0):
        raise InputError("dose array for EQD2 holds negative or non-finite values")
    return dose * (dose / n + ab) / (2.0 + ab)


def bed_array(dose_gy: Any, fractions: int, alpha_beta_gy: float = ALPHA_BETA_LATE_GY) -> np.ndarray:
    """Voxelwise BED of a total-dose array."""
    ab = _check_positive(alpha_beta_gy, "alpha/beta (Gy)")
    return eqd2_array(dose_gy, fractions, ab) * (1.0 + 2.0 / ab)


def summary(total_gy: float, fractions: int, alpha_beta_gy: float = ALPHA_BETA_TUMOUR_GY) -> dict[str, float]:
    """What ``sbrt bed`` writes (CLI contract); BED and EQD2 rounded to 1e-4 Gy (54/3 gives 151.2 exactly)."""
    dose = _check_dose(total_gy)
    n = _check_fractions(fractions)
    ab = _check_positive(alpha_beta_gy, "alpha/beta (Gy)")
    return {
        "dose_gy": _num(dose),
        "fractions": n,
        "dose_per_fraction_gy": _num(round(dose / n, 4)),
        "alpha_beta_gy": _num(ab),
        "bed_gy": round(bed(dose, n, ab), 4),
        "eqd2_gy": round(eqd2(dose, n, ab), 4),
    }


def _num(value: float) -> float | int:
    """Whole numbers as int (54, not 54.0) so the JSON reads as the contract shows it."""
    return int(value) if float(value).is_integer() else float(value)


# --------------------------------------------------------------------------- re-irradiation


def interval_band(interval_months: float) -> str:
    """The Michigan table's band of the time since the prior course (see the module docstring)."""
    m = float(interval_months)
    if not math.isfinite(m) or m < 0:
        raise InputError(f"interval since the prior course must be >= 0 months, got {interval_months!r}")
    if m < 3:
        return "lt_3mo"
    if m < 6:
        return "3_6mo"
    if m < 12:
        return "6_12mo"
    if m <= 36:
        return "1_3y"
    return "gt_3y"


@dataclass(frozen=True)
class ReirradiationResult:
    """One organ's cumulative check."""

    role: str
    rule_id: str
    interval_band: str
    discount_percent: float
    prior_eqd2_gy: float
    prior_counted_eqd2_gy: float
    current_eqd2_gy: float
    cumulative_eqd2_gy: float
    limit_eqd2_gy: float | None
    remaining_eqd2_gy: float | None
    status: str  # pass | fail | not_evaluated
    reason: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def discounted_prior_eqd2(prior_eqd2_gy: float, discount_percent: float) -> float:
    """The part of a prior course's EQD2 that still counts: ``prior * (1 - discount/100)``."""
    prior = _check_dose(prior_eqd2_gy)
    pct = float(discount_percent)
    if not 0.0 <= pct <= 100.0:
        raise InputError(f"prior-dose discount must be 0-100 %, got {discount_percent!r}")
    return prior * (1.0 - pct / 100.0)


def cumulative_check(
    role: str,
    prior_eqd2_gy: float,
    current_eqd2_gy: float,
    interval_months: float,
    discounts: Mapping[str, float] | None = None,
    limit_eqd2_gy: float | None = None,
    protocol: Any = None,
    conditions: Mapping[str, Any] | None = None,
) -> ReirradiationResult:
    """Cumulative EQD2 (alpha/beta 2.5, D0.1cc) of one organ against the Michigan table.

    The organ's limit and discount percentages come from the ``michigan-reirradiation``
    protocol (``protocol`` if given, else the catalogue's), unless ``discounts`` and
    ``limit_eqd2_gy`` are given explicitly. ``conditions`` picks between rules of the same
    organ (the cord: ``{"cord_distance_to_target_mm": 1.5}``). Both EQD2 values must
    already be EQD2 with alpha/beta 2.5 (see :func:`eqd2_array` for dose grids).
    """
    rule_id, source = "", ""
    if discounts is None:
        if protocol is None:
            from sbrtstandards.catalogue import load_protocol

            protocol = load_protocol("michigan-reirradiation")
        rule = _reirradiation_rule(protocol, role, conditions or {})
        discounts = rule.prior_dose_discount_percent or {}
        rule_id, source = rule.id, rule.source
        if limit_eqd2_gy is None and rule.comparator != "report":
            limit_eqd2_gy = float(rule.limit)  # type: ignore[arg-type]
        reason_no_limit = rule.limit_text
    else:
        reason_no_limit = "no cumulative limit given"
    band = interval_band(interval_months)
    if band not in discounts:
        raise InputError(f"re-irradiation of {role}: no prior-dose discount for interval band {band}")
    pct = float(discounts[band])
    counted = discounted_prior_eqd2(prior_eqd2_gy, pct)
    current = _check_dose(current_eqd2_gy)
    total = counted + current
    if limit_eqd2_gy is None:
        status, reason, remaining = "not_evaluated", reason_no_limit, None
    else:
        remaining = float(limit_eqd2_gy) - total
        status = "pass" if total <= float(limit_eqd2_gy) else "fail"
        reason = ""
    return ReirradiationResult(
        role=role,
        rule_id=rule_id,
        interval_band=band,
        discount_percent=pct,
        prior_eqd2_gy=float(prior_eqd2_gy),
        prior_counted_eqd2_gy=counted,
        current_eqd2_gy=current,
        cumulative_eqd2_gy=total,
        limit_eqd2_gy=None if limit_eqd2_gy is None else float(limit_eqd2_gy),
        remaining_eqd2_gy=remaining,
        status=status,
        reason=reason,
        source=source,
    )


def _reirradiation_rule(protocol: Any, role: str, conditions: Mapping[str, Any]) -> Any:
    """The protocol's re-irradiation rule of ``role`` whose conditions hold."""
    from sbrtstandards.catalogue import check_condition_values, conditions_hold

    hits = [r for r in protocol.rules if r.structure == role and r.prior_dose_discount_percent]
    if not hits:
        known = sorted({r.structure for r in protocol.rules if r.prior_dose_discount_percent})
        raise InputError(
            f"protocol {protocol.id}: no re-irradiation limit for role '{role}'; roles: {', '.join(known)}"
        )
    facts = check_condition_values({**conditions, "reirradiation": True})
    verdicts = [(r, conditions_hold(r.conditions, facts)) for r in hits]
    chosen = [r for r, v in verdicts if v is None]
    if len(chosen) == 1:
        return chosen[0]
    reasons = "; ".join(f"{r.id}: {v[0]}" for r, v in verdicts if v is not None)
    if not chosen:
        raise InputError(f"protocol {protocol.id}: no re-irradiation rule of '{role}' applies ({reasons})")
    raise InputError(
        f"protocol {protocol.id}: several re-irradiation rules for '{role}' apply "
        f"({', '.join(r.id for r in chosen)}); give the conditions that tell them apart"
    )
