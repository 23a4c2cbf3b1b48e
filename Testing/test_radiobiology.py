"""BED / EQD2 and the Michigan cumulative re-irradiation check, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtstandards import radiobiology as rb
from sbrtstandards.errors import InputError


@pytest.mark.parametrize(
    ("dose", "fx", "bed10"),
    [
        (54, 3, 151.2),  # seed 001 §5.3: "BED=151Gy"
        (50, 4, 112.5),  # seed 001 §5.3: "BED=112.5Gy"
        (60, 8, 105.0),  # seed 001 §5.3: "BED=105Gy"
        (50, 5, 100.0),  # seed 001 §5.3: "BED=100Gy"
        (48, 4, 105.6),
        (34, 1, 149.6),
    ],
)
def test_bed_of_the_seed_schemes(dose: float, fx: int, bed10: float) -> None:
    assert rb.bed(dose, fx, 10) == pytest.approx(bed10, abs=1e-9)


def test_eqd2_by_hand() -> None:
    assert rb.eqd2(54, 3, 10) == pytest.approx(126.0)  # 151.2 / 1.2
    assert rb.eqd2(50, 5, 10) == pytest.approx(250 / 3)  # 100 / 1.2
    assert rb.eqd2(54, 3, 3) == pytest.approx(54 * (18 + 3) / 5)  # 226.8
    assert rb.eqd2(60, 30, 2.5) == pytest.approx(60.0)  # 2 Gy fractions are their own EQD2
    assert rb.eqd2_from_bed(151.2, 10) == pytest.approx(126.0)
    assert rb.bed(0, 5, 3) == 0.0


def test_physical_dose_for_eqd2_inverts_eqd2() -> None:
    for dose, fx, ab in ((30.0, 5, 2.5), (54.0, 3, 10.0), (8.0, 1, 3.0)):
        assert rb.physical_dose_for_eqd2(rb.eqd2(dose, fx, ab), fx, ab) == pytest.approx(dose)


def test_voxelwise_eqd2_uses_each_voxels_own_dose_per_fraction() -> None:
    dose = np.array([[0.0, 10.0], [25.0, 50.0]])
    out = rb.eqd2_array(dose, 5, 2.5)
    assert out.shape == dose.shape
    expected = [[rb.eqd2(float(d), 5, 2.5) for d in row] for row in dose]
    np.testing.assert_allclose(out, expected)
    # 50 Gy in 5: d = 10, EQD2 = 50 * 12.5 / 4.5
    assert out[1, 1] == pytest.approx(50 * 12.5 / 4.5)
    np.testing.assert_allclose(rb.bed_array(dose, 5, 10.0), [[rb.bed(float(d), 5, 10.0) for d in r] for r in dose])
    with pytest.raises(InputError, match="negative or non-finite"):
        rb.eqd2_array(np.array([1.0, -0.5]), 5)


def test_summary_is_the_contract_json() -> None:
    assert rb.summary(54, 3) == {
        "dose_gy": 54,
        "fractions": 3,
        "dose_per_fraction_gy": 18,
        "alpha_beta_gy": 10,
        "bed_gy": 151.2,
        "eqd2_gy": 126.0,
    }
    s = rb.summary(50, 4, 3)
    assert s["dose_per_fraction_gy"] == 12.5 and s["bed_gy"] == pytest.approx(50 * (1 + 12.5 / 3), abs=1e-4)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((54, 0, 10), "fractions"),
        ((54, 2.5, 10), "fractions"),
        ((-1, 3, 10), "non-negative"),
        ((54, 3, 0), "alpha/beta"),
        ((float("nan"), 3, 10), "non-negative"),
    ],
)
def test_bad_inputs_are_input_errors(args: tuple[float, float, float], match: str) -> None:
    with pytest.raises(InputError, match=match):
        rb.bed(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("months", "band"),
    [
        (0, "lt_3mo"),
        (2.99, "lt_3mo"),
        (3, "3_6mo"),
        (5.9, "3_6mo"),
        (6, "6_12mo"),
        (12, "1_3y"),
        (36, "1_3y"),
        (36.5, "gt_3y"),
    ],
)
def test_interval_bands(months: float, band: str) -> None:
    assert rb.interval_band(months) == band


def test_negative_interval_is_an_error() -> None:
    with pytest.raises(InputError, match=">= 0 months"):
        rb.interval_band(-1)


def test_michigan_discounts_from_table_a3() -> None:
    # Seed 002 Table A.3, typed here: stomach 54 Gy, discounts 0 / 0 / 25 / 25 %.
    early = rb.cumulative_check("stomach", prior_eqd2_gy=40, current_eqd2_gy=30, interval_months=4)
    assert (early.discount_percent, early.cumulative_eqd2_gy, early.limit_eqd2_gy) == (0.0, 70.0, 54.0)
    assert early.status == "fail" and early.remaining_eqd2_gy == pytest.approx(-16.0)
    late = rb.cumulative_check("stomach", 40, 20, 8)
    assert late.discount_percent == 25.0 and late.cumulative_eqd2_gy == pytest.approx(50.0)
    assert late.status == "pass" and late.rule_id == "michigan.stomach" and "Table A.3" in late.source
    # duodenum 0 / 0 / 10 / 25 %; brainstem 64 Gy, 0 / 10 / 25 / 50 %
    assert rb.cumulative_check("duodenum", 40, 0, 9).discount_percent == 10.0
    bs = rb.cumulative_check("brainstem", 60, 30, 24)
    assert (bs.discount_percent, bs.prior_counted_eqd2_gy, bs.remaining_eqd2_gy) == (50.0, 30.0, 4.0)
    # footnote: more than 3 years -> prior dose reduced by 50 %
    assert rb.cumulative_check("stomach", 40, 0, 48).discount_percent == 50.0


def test_michigan_cord_needs_its_distance_to_the_target() -> None:
    far = rb.cumulative_check("spinal_cord", 40, 20, 8, conditions={"cord_distance_to_target_mm": 5})
    assert (far.limit_eqd2_gy, far.cumulative_eqd2_gy, far.status) == (50.0, 50.0, "pass")  # 40 x 0.75 + 20
    near = rb.cumulative_check("spinal_cord", 40, 24, 8, conditions={"cord_distance_to_target_mm": 1})
    assert (near.limit_eqd2_gy, near.status) == (55.0, "pass")
    with pytest.raises(InputError, match="cord_distance_to_target_mm"):
        rb.cumulative_check("spinal_cord", 40, 20, 8)


def test_michigan_organs_without_a_numeric_limit_are_not_evaluated() -> None:
    kid = rb.cumulative_check("kidneys", 10, 10, 2)
    assert kid.status == "not_evaluated" and "ALARA" in kid.reason and kid.limit_eqd2_gy is None
    liver = rb.cumulative_check("liver", 40, 10, 18)
    assert liver.discount_percent == 100.0 and liver.prior_counted_eqd2_gy == 0.0


def test_unknown_role_and_explicit_table() -> None:
    with pytest.raises(InputError, match="no re-irradiation limit for role 'ptv'"):
        rb.cumulative_check("ptv", 1, 1, 1)
    own = rb.cumulative_check(
        "x", 50, 10, 13, discounts={"lt_3mo": 0, "3_6mo": 0, "6_12mo": 0, "1_3y": 20, "gt_3y": 50}, limit_eqd2_gy=45
    )
    assert own.cumulative_eqd2_gy == pytest.approx(50.0) and own.status == "fail"
    with pytest.raises(InputError, match="0-100"):
        rb.discounted_prior_eqd2(10, 120)
