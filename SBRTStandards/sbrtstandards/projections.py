"""4D-CT intensity projections: MIP, AVG and MinIP of the breathing phases.

The phases are streamed one at a time: the running maximum and minimum stay int16 and the
sum is an int32 accumulator (exact for any realistic number of int16 phases), so memory is
about five phase volumes whatever the number of phases, never all phases as float64.
The lung standard plans on the AVG and draws the ITV on the MIP; MinIP shows liver tumours
that are darker than the liver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from sbrtstandards.errors import FrameOfReferenceError, GeometryError
from sbrtstandards.grid import Grid

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
AIR_HU = -1000


@dataclass
class PhaseImage:
    """One breathing phase's CT: HU array [k, j, i] and its geometry."""

    label: str
    hu: np.ndarray
    grid: Grid
    source: str = ""


@dataclass
class Projections:
    mip: np.ndarray  # int16 HU
    avg: np.ndarray  # int16 HU (mean rounded to the nearest HU)
    minip: np.ndarray  # int16 HU
    grid: Grid
    labels: list[str]
    resampled: list[str]  # labels of phases that were resampled onto the first phase's grid

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"MIP": self.mip, "AVG": self.avg, "MinIP": self.minip}


def project_phases(
    phases: Iterable[PhaseImage],
    *,
    resample: bool = False,
    n_phases: int | None = None,
    progress: Progress | None = None,
) -> Projections:
    """MIP, AVG and MinIP of ``phases`` (an iterable, so phases can be read lazily one by one).

    All phases must share the first phase's grid and Frame of Reference; a phase on another grid
    raises :class:`GeometryError` unless ``resample`` is true, in which case it is resampled onto the
    first phase's grid (trilinear, air outside) and listed in ``Projections.resampled``.
    """
    mip = minip = total = None
    grid: Grid | None = None
    labels: list[str] = []
    resampled: list[str] = []
    for n, phase in enumerate(phases):
        hu = phase.hu
        if grid is None:
            grid = phase.grid
            mip = np.array(hu, dtype=np.int16, copy=True)
            minip = mip.copy()
            total = mip.astype(np.int32)
        else:
            _check_frame_of_reference(grid, phase)
            if not grid.same_geometry(phase.grid):
                if not resample:
                    raise GeometryError(
                        f"phase {phase.label} ({phase.source or 'phase image'}) has geometry "
                        f"{phase.grid.describe()}, phase {labels[0]} has {grid.describe()}; "
                        "use --resample to resample every phase onto the first phase's grid"
                    )
                hu = np.rint(resample_to_grid(hu, phase.grid, grid))
                resampled.append(phase.label)
                logger.warning("phase %s resampled onto the grid of phase %s", phase.label, labels[0])
            hu16 = np.asarray(hu, dtype=np.int16)
            np.maximum(mip, hu16, out=mip)
            np.minimum(minip, hu16, out=minip)
            total += hu16
        labels.append(phase.label)
        if progress and n_phases:
            progress((n + 1) / n_phases, f"projections: phase {phase.label}")
    if grid is None or len(labels) < 2:
        raise GeometryError(f"4D-CT projections need at least 2 phases, got {len(labels)}")
    assert mip is not None and minip is not None and total is not None
    avg = np.rint(total / len(labels)).astype(np.int16)
    return Projections(mip, avg, minip, grid, labels, resampled)


def resample_to_grid(array: np.ndarray, src: Grid, dst: Grid, *, default: float = AIR_HU) -> np.ndarray:
    """Trilinear resampling of an image from ``src`` onto ``dst`` (both LPS), ``default`` outside."""
    image = src.image(array.astype(np.float32))
    ref = dst.image(np.zeros(dst.shape, dtype=np.float32))
    out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, float(default), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def _check_frame_of_reference(grid: Grid, phase: PhaseImage) -> None:
    a, b = grid.frame_of_reference_uid, phase.grid.frame_of_reference_uid
    if a and b and a != b:
        raise FrameOfReferenceError(
            f"phase {phase.label} ({phase.source or 'phase image'}) has Frame of Reference {b}, "
            f"the first phase has {a}: the phases of one 4D-CT must share one Frame of Reference"
        )
