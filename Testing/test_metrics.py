"""TG-263 metric names: parsing (good and malformed) and values on a DVH with a known answer.

The DVH used for values is a 20 x 10 x 12 mm box (2.4 cc) in a dose linear along z,
D = 10 + 2 z Gy with z from -1 to 11 mm: the dose is uniform in volume between 8 and 32 Gy,
so every metric has a closed form (e.g. V20Gy = 12/24 of the volume, D95% = 32 - 0.95 * 24).
"""

from __future__ import annotations

import numpy as np
import pytest

from sbrtstandards.dvh import DoseVolume, structure_dvh
from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.metrics import MetricSpec, evaluate, evaluate_many, parse_metric


@pytest.mark.parametrize(
    "name, kind, x, x_unit, out",
    [
        ("D95%[Gy]", "D", 95.0, "%", "Gy"),
        ("D0.03cc[Gy]", "D", 0.03, "cc", "Gy"),
        ("D0.1cc[Gy]", "D", 0.1, "cc", "Gy"),
        ("D2cc[cGy]", "D", 2.0, "cc", "cGy"),
        ("D98%[%]", "D", 98.0, "%", "%"),
        ("D.5cc[Gy]", "D", 0.5, "cc", "Gy"),
        ("DC700cc[Gy]", "DC", 700.0, "cc", "Gy"),
        ("DC10%[Gy]", "DC", 10.0, "%", "Gy"),
        ("V20Gy[%]", "V", 20.0, "Gy", "%"),
        ("V20Gy[cc]", "V", 20.0, "Gy", "cc"),
        ("V2000cGy[%]", "V", 2000.0, "cGy", "%"),
        ("V100%[%]", "V", 100.0, "%", "%"),
        ("V95%[cc]", "V", 95.0, "%", "cc"),
        ("V12.5Gy[cc]", "V", 12.5, "Gy", "cc"),
        ("CV15Gy[cc]", "CV", 15.0, "Gy", "cc"),
        ("CV50%[%]", "CV", 50.0, "%", "%"),
        ("  Mean[Gy] ", "Mean", None, None, "Gy"),
        ("Max[Gy]", "Max", None, None, "Gy"),
        ("Min[cGy]", "Min", None, None, "cGy"),
        ("Median[Gy]", "Median", None, None, "Gy"),
        ("mean[Gy]", "Mean", None, None, "Gy"),
        ("Max[%]", "Max", None, None, "%"),
    ],
)
def test_good_names(name: str, kind: str, x: float | None, x_unit: str | None, out: str) -> None:
    spec = parse_metric(name)
    assert (spec.kind, spec.x, spec.x_unit, spec.out_unit) == (kind, x, x_unit, out)
    assert spec.name == name.strip()


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("V20", "V20Gy[%]"),
        ("D95", "D95%[Gy]"),
        ("D95%", "missing the result unit"),
        ("V20Gy", "missing the result unit"),
        ("Mean", "missing the result unit"),
        ("D95Gy[Gy]", "takes a volume"),
        ("V20cc[%]", "takes a dose"),
        ("D95%[cc]", "is a dose"),
        ("V20Gy[Gy]", "is a volume"),
        ("D120%[Gy]", "between 0 and 100"),
        ("Mean[cc]", "is a dose"),
        ("Dmax", "unknown metric 'Dmax'"),
        ("Average[Gy]", "unknown metric"),
        ("V-5Gy[%]", "expected e.g."),
        ("D95%[Gy", "expected e.g."),
        ("", "empty name"),
        ("V 20Gy[%]", "expected e.g."),
        ("D1e2cc[Gy]", "expected e.g."),
    ],
)
def test_malformed_names(name: str, fragment: str) -> None:
    with pytest.raises(InputError) as err:
        parse_metric(name)
    message = str(err.value)
    assert message.startswith("malformed metric")
    assert fragment in message
    assert "\n" not in message


def test_rx_needs() -> None:
    assert parse_metric("V100%[%]").needs_rx
    assert parse_metric("D95%[%]").needs_rx
    assert parse_metric("Max[%]").needs_rx
    assert not parse_metric("D95%[Gy]").needs_rx
    assert not parse_metric("V20Gy[%]").needs_rx
    assert isinstance(parse_metric("CV15Gy[cc]"), MetricSpec)


@pytest.fixture(scope="module")
def box_dvh():
    origin = np.array([-30.0, -30.0, -10.0])
    size = np.array([31, 31, 21])
    xs, ys, zs = (origin[a] + 2.0 * np.arange(size[a]) for a in range(3))
    zz, _, _ = np.meshgrid(zs, ys, xs, indexing="ij")
    grid = Grid(tuple(origin), (2.0, 2.0, 2.0), tuple(int(v) for v in size))
    square = np.array([[-10.0, -5.0], [10.0, -5.0], [10.0, 5.0], [-10.0, 5.0]])
    planes = {float(z): [square] for z in range(0, 11, 2)}
    return structure_dvh("box", planes, DoseVolume(10.0 + 2.0 * zz, grid))


def uniform_d(x_percent: float) -> float:
    """Dose (Gy) of the hottest x % in a dose uniformly distributed over [8, 32] Gy."""
    return 32.0 - 24.0 * x_percent / 100.0


@pytest.mark.parametrize(
    "name, expected, tol",
    [
        ("D95%[Gy]", uniform_d(95), 0.01),
        ("D50%[Gy]", uniform_d(50), 0.01),
        ("D95%[cGy]", 100 * uniform_d(95), 1.0),
        ("D95%[%]", 100 * uniform_d(95) / 25.0, 0.05),  # Rx 25 Gy
        ("D0.24cc[Gy]", uniform_d(10), 0.01),  # 0.24 cc = 10 % of 2.4 cc
        ("DC0.24cc[Gy]", uniform_d(90), 0.01),  # the coldest 10 %
        ("DC25%[Gy]", uniform_d(75), 0.01),
        ("V20Gy[%]", 50.0, 0.1),
        ("V20Gy[cc]", 1.2, 0.003),
        ("V2000cGy[cc]", 1.2, 0.003),
        ("V80%[cc]", 1.2, 0.003),  # 80 % of 25 Gy = 20 Gy
        ("CV20Gy[cc]", 1.2, 0.003),
        ("CV14Gy[%]", 25.0, 0.1),  # below 14 Gy: (14 - 8) / 24
        ("Mean[Gy]", 20.0, 1e-6),
        ("Median[Gy]", 20.0, 0.01),
        ("Max[Gy]", 32.0, 1e-9),
        ("Min[Gy]", 8.0, 1e-9),
        ("Max[%]", 128.0, 1e-6),
        ("V40Gy[cc]", 0.0, 0.0),
        ("V5Gy[%]", 100.0, 1e-9),
    ],
)
def test_values_on_a_known_dvh(box_dvh, name: str, expected: float, tol: float) -> None:
    result = evaluate(name, box_dvh, rx_gy=25.0)
    assert result.reason is None
    assert result.value == pytest.approx(expected, abs=tol)


def test_nulls_carry_a_reason(box_dvh) -> None:
    values, reasons = evaluate_many(["V100%[%]", "D95%[%]", "D5cc[Gy]", "D95%[Gy]"], box_dvh)
    assert values["V100%[%]"] is None and "prescription" in reasons["V100%[%]"]
    assert values["D95%[%]"] is None
    assert values["D5cc[Gy]"] is None and "less than 5 cc" in reasons["D5cc[Gy]"]
    assert values["D95%[Gy]"] is not None and "D95%[Gy]" not in reasons


def test_edge_volumes(box_dvh) -> None:
    assert evaluate("D0%[Gy]", box_dvh).value == pytest.approx(32.0)
    assert evaluate("D100%[Gy]", box_dvh).value == pytest.approx(8.0)
    assert evaluate("D2.4cc[Gy]", box_dvh).value == pytest.approx(8.0)
