"""The one place where MRML's RAS geometry meets the core's DICOM LPS geometry.

MRML stores a volume as an image with an IJK-to-RAS matrix (4x4, columns i, j, k scaled by the
spacing, last column the RAS position of voxel (0, 0, 0)); segment labelmaps are oriented images
with the same kind of image-to-world matrix. The core works in DICOM LPS with :class:`Grid`
(origin, spacing, direction columns i, j, k). The two patient frames differ by a flip of the first
two axes, ``RAS = diag(-1, -1, 1) @ LPS``, so for a grid

    IJKToRAS = [[F @ D @ diag(spacing), F @ origin], [0, 0, 0, 1]]   with F = diag(-1, -1, 1)

and the voxel order is the same on both sides (VTK's i runs fastest, like the last numpy axis of
an array indexed ``[k, j, i]``). :func:`ijk_to_ras_from_grid` and :func:`grid_from_ijk_to_ras` are
that pair; every adapter goes through them and nothing else converts coordinates.
"""

from __future__ import annotations

import numpy as np
import vtk

from sbrtstandards.errors import GeometryError, InputError
from sbrtstandards.grid import Grid

#: Flips L<->R and P<->A; its own inverse, so it maps LPS to RAS and RAS to LPS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

_ORTHONORMAL_TOL = 1e-4


def ijk_to_ras_from_grid(grid: Grid) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of ``grid`` (voxel index -> RAS mm)."""
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ grid.direction_matrix @ np.diag(grid.spacing_mm)
    matrix[:3, 3] = LPS_TO_RAS @ np.asarray(grid.origin_mm, dtype=float)
    return matrix


def grid_from_ijk_to_ras(
    ijk_to_ras: np.ndarray,
    size: tuple[int, int, int],
    frame_of_reference_uid: str | None = None,
    *,
    what: str = "image",
) -> Grid:
    """The LPS :class:`Grid` of an image of ``size`` (ni, nj, nk) whose IJK-to-RAS matrix is given.

    Raises GeometryError when the matrix is not a rotation times positive spacings (a sheared or
    scaled transform cannot be a voxel grid of the core); ``what`` names the object in the message.
    """
    matrix = np.asarray(ijk_to_ras, dtype=float)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise GeometryError(f"{what}: IJK-to-RAS matrix is not a finite 4x4 matrix: {matrix.tolist()}")
    axes_ras = matrix[:3, :3]
    spacing = np.linalg.norm(axes_ras, axis=0)
    if np.any(spacing <= 0):
        raise GeometryError(f"{what}: IJK-to-RAS matrix has a zero-length axis (spacing {spacing.tolist()})")
    direction = LPS_TO_RAS @ axes_ras / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=_ORTHONORMAL_TOL):
        raise GeometryError(
            f"{what}: IJK-to-RAS axes are not orthogonal (sheared grid, or a non-rigid parent transform); "
            f"direction {np.round(direction, 5).tolist()}"
        )
    origin = LPS_TO_RAS @ matrix[:3, 3]
    return Grid(
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        size=(int(size[0]), int(size[1]), int(size[2])),
        direction=tuple(float(v) for v in direction.ravel()),
        frame_of_reference_uid=frame_of_reference_uid,
    )


def vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    """A vtkMatrix4x4 holding the 4x4 numpy ``matrix``."""
    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            result.SetElement(row, col, float(matrix[row, col]))
    return result


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """The 4x4 numpy array of a vtkMatrix4x4."""
    return np.array([[matrix.GetElement(row, col) for col in range(4)] for row in range(4)])


def node_to_world(node: object) -> np.ndarray:
    """The 4x4 matrix from ``node``'s own coordinates to world RAS (its parent transforms).

    Identity for a node without parent transform. A non-linear parent transform (a warp from
    deformable registration) cannot be carried by a grid: the user must harden it first.
    """
    transform = node.GetParentTransformNode()  # type: ignore[attr-defined]
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InputError(
            f"node '{node.GetName()}' is under the non-linear transform '{transform.GetName()}'; "  # type: ignore[attr-defined]
            "harden the transform (Data module, right-click > Harden transform) and try again"
        )
    to_world = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(to_world)
    return numpy_matrix(to_world)
