"""Hot-spot volumes outside the target (lung standard §6.1(5): >105 % of Rx only inside the PTV),
on a cone-shaped dose whose isodose surfaces are spheres."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_check_geometry import cone_dose

from sbrtstandards.check import check_plan
from sbrtstandards.dicom.rtdose import DoseGrid


def _sphere_planes(r_mm: float, dz: float = 1.0) -> dict[float, list[np.ndarray]]:
    t = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    planes = {}
    for z in np.arange(-r_mm + dz / 2, r_mm, dz):
        rz = math.sqrt(r_mm**2 - z**2)
        planes[round(float(z), 3)] = [np.c_[rz * np.cos(t), rz * np.sin(t)]]
    return planes


def test_volumes_of_105_and_110_percent_outside_the_ptv_are_the_analytic_shells() -> None:
    cone = cone_dose(1.0)  # D = 60 (1 - r / 30 mm)
    dose = DoseGrid.from_array(cone.dose_gy, cone.grid)
    rx = 40.0  # 105 % = 42 Gy at r = 9 mm, 110 % = 44 Gy at r = 8 mm
    res = check_plan({"PTV": _sphere_planes(6.0), "ITV": _sphere_planes(4.0)}, dose, protocol_id="cn-lung-sbrt",
                     rx_gy=rx, fractions=5, site_class="central")
    m = res.plan_metrics

    def shell(r_out: float, r_in: float) -> float:
        return 4 / 3 * math.pi * (r_out**3 - r_in**3) / 1000

    assert m["V105%_outside_PTV[cc]"] == pytest.approx(shell(9, 6), rel=0.05)
    assert m["V110%_outside_PTV[cc]"] == pytest.approx(shell(8, 6), rel=0.05)
    assert m["V110%_outside_ITV[cc]"] == pytest.approx(shell(8, 4), rel=0.05)
    assert m["Dmax_outside_PTV[%]"] == pytest.approx(100 * 60 * (1 - 6 / 30) / rx, abs=100 * 2 / rx)


def test_voxelwise_eqd2_dvh_moves_every_sample_by_the_lq_model() -> None:
    from sbrtstandards.check import biological_dvh
    from sbrtstandards.dvh import structure_dvh
    from sbrtstandards.metrics import evaluate
    from sbrtstandards.radiobiology import eqd2, physical_dose_for_eqd2

    cone = cone_dose(1.0)
    dvh = structure_dvh("PTV", _sphere_planes(12.0), DoseGrid.from_array(cone.dose_gy, cone.grid))
    n, ab = 5, 3.0
    bio = biological_dvh(dvh, "eqd2", n, ab)
    # a dose metric converts pointwise, a volume metric by the inverse of the LQ model
    assert evaluate("D50%[Gy]", bio).value == pytest.approx(eqd2(evaluate("D50%[Gy]", dvh).value, n, ab), rel=1e-9)
    threshold = physical_dose_for_eqd2(60.0, n, ab)
    assert evaluate("V60Gy[cc]", bio).value == pytest.approx(dvh.volume_at_dose_cc(threshold), rel=1e-9)
    # the mean EQD2 is the volume-weighted mean of the converted samples, not the EQD2 of the mean
    assert bio.mean_gy > eqd2(dvh.mean_gy, n, ab)
