"""MIP/AVG/MinIP equal the voxelwise max/mean/min of the phases; bad geometry is refused."""

from __future__ import annotations

import numpy as np
import pytest

from sbrtstandards.errors import FrameOfReferenceError, GeometryError
from sbrtstandards.grid import Grid
from sbrtstandards.projections import PhaseImage, project_phases

GRID = Grid((-20.0, -30.0, 10.0), (1.5, 1.5, 2.0), (24, 20, 12), frame_of_reference_uid="1.2.3")


def _phases(n: int, seed: int = 0) -> list[PhaseImage]:
    rng = np.random.default_rng(seed)
    return [
        PhaseImage(f"{10 * p}%", rng.integers(-1024, 3000, GRID.shape).astype(np.int16), GRID) for p in range(n)
    ]


def test_projections_equal_voxelwise_max_mean_min() -> None:
    phases = _phases(10)
    stack = np.stack([p.hu.astype(np.float64) for p in phases])
    proj = project_phases(iter(phases))
    assert proj.mip.dtype == np.int16 and proj.avg.dtype == np.int16
    np.testing.assert_array_equal(proj.mip, stack.max(axis=0))
    np.testing.assert_array_equal(proj.minip, stack.min(axis=0))
    # AVG is the exact mean rounded to the nearest HU (ties to even)
    np.testing.assert_array_equal(proj.avg, np.rint(stack.mean(axis=0)))
    assert proj.labels == [f"{10 * p}%" for p in range(10)]
    assert proj.grid == GRID


def test_phase_with_other_geometry_is_refused_or_resampled() -> None:
    phases = _phases(3)
    shifted = Grid((-19.0, -30.0, 10.0), GRID.spacing_mm, GRID.size, frame_of_reference_uid="1.2.3")
    ramp = np.broadcast_to(np.arange(GRID.size[0], dtype=np.int16) * 10, GRID.shape).copy()
    phases[2] = PhaseImage("20%", ramp, shifted, source="phase_20")
    with pytest.raises(GeometryError, match="phase 20%.*resample"):
        project_phases(phases)
    proj = project_phases(phases, resample=True)
    assert proj.resampled == ["20%"]
    # ramp of 10 HU per column shifted by +1 mm = 2/3 column: value at column i is 10*(i - 2/3)
    # wherever the first two phases are both below that value, the MIP shows it
    i = 10
    expected = 10 * (i - 1 / 1.5)
    col = np.maximum(np.maximum(phases[0].hu[:, :, i], phases[1].hu[:, :, i]), np.rint(expected))
    np.testing.assert_array_equal(proj.mip[:, :, i], col)


def test_phases_with_different_frames_of_reference_are_refused() -> None:
    phases = _phases(2)
    other = Grid(GRID.origin_mm, GRID.spacing_mm, GRID.size, frame_of_reference_uid="9.9.9")
    phases[1] = PhaseImage("10%", phases[1].hu, other)
    with pytest.raises(FrameOfReferenceError, match="Frame of Reference"):
        project_phases(phases, resample=True)


def test_fewer_than_two_phases_is_an_error() -> None:
    with pytest.raises(GeometryError, match="at least 2 phases"):
        project_phases(_phases(1))
