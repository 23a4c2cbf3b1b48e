"""Voxel grids in DICOM patient coordinates (LPS, mm).

Arrays in the core are indexed ``[k, j, i]`` (slice, row, column), as
``SimpleITK.GetArrayFromImage`` returns them; :class:`Grid` holds the geometry that goes
with such an array: the LPS position of the centre of voxel (0, 0, 0), the spacing along
i, j, k, and the direction cosines (columns are the i, j, k axes, as in SimpleITK).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from sbrtstandards.errors import GeometryError

IDENTITY: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Grid:
    """Geometry of a 3D voxel array indexed ``[k, j, i]``."""

    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    size: tuple[int, int, int]  # (ni, nj, nk): columns, rows, slices
    direction: tuple[float, ...] = field(default=IDENTITY)
    frame_of_reference_uid: str | None = None

    @classmethod
    def from_image(cls, image: sitk.Image, frame_of_reference_uid: str | None = None) -> Grid:
        return cls(
            origin_mm=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
            spacing_mm=tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
            size=tuple(int(v) for v in image.GetSize()),  # type: ignore[arg-type]
            direction=tuple(float(v) for v in image.GetDirection()),
            frame_of_reference_uid=frame_of_reference_uid,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Numpy shape ``(nk, nj, ni)`` of arrays on this grid."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def voxel_volume_cc(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def is_axial(self) -> bool:
        """True when the axes are the patient axes (identity direction, within 1e-4)."""
        return bool(np.allclose(self.direction_matrix, np.eye(3), atol=1e-4))

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) indices, shape (..., 3), to LPS mm."""
        ijk = np.asarray(ijk, dtype=float)
        return np.asarray(self.origin_mm) + (ijk * np.asarray(self.spacing_mm)) @ self.direction_matrix.T

    def lps_to_index(self, xyz_mm: np.ndarray) -> np.ndarray:
        """LPS mm, shape (..., 3), to continuous (i, j, k) indices."""
        xyz_mm = np.asarray(xyz_mm, dtype=float)
        return ((xyz_mm - np.asarray(self.origin_mm)) @ self.direction_matrix) / np.asarray(self.spacing_mm)

    def axis_coords_mm(self, axis: int) -> np.ndarray:
        """Voxel-centre coordinates along axis 0 (x/i), 1 (y/j) or 2 (z/k) of an axial grid."""
        self.require_axial("axis coordinates")
        return self.origin_mm[axis] + self.spacing_mm[axis] * np.arange(self.size[axis])

    def require_axial(self, what: str) -> None:
        if not self.is_axial:
            raise GeometryError(
                f"{what} needs an axial grid (identity direction cosines); this grid has direction "
                f"{np.round(self.direction_matrix, 4).tolist()}"
            )

    def same_geometry(self, other: Grid, tol_mm: float = 1e-3) -> bool:
        return (
            self.size == other.size
            and np.allclose(self.spacing_mm, other.spacing_mm, atol=tol_mm)
            and np.allclose(self.origin_mm, other.origin_mm, atol=tol_mm)
            and np.allclose(self.direction, other.direction, atol=1e-5)
        )

    def describe(self) -> str:
        sp = "x".join(f"{v:g}" for v in self.spacing_mm)
        sz = "x".join(str(v) for v in self.size)
        org = ", ".join(f"{v:.2f}" for v in self.origin_mm)
        return f"{sz} voxels of {sp} mm at ({org})"

    def image(self, array: np.ndarray) -> sitk.Image:
        """A SimpleITK image of ``array`` (shape :attr:`shape`) with this geometry."""
        if array.shape != self.shape:
            raise ValueError(f"array shape {array.shape} does not match grid shape {self.shape}")
        if array.dtype == bool:
            array = array.astype(np.uint8)
        img = sitk.GetImageFromArray(array)
        img.SetOrigin(self.origin_mm)
        img.SetSpacing(self.spacing_mm)
        img.SetDirection(self.direction)
        return img
