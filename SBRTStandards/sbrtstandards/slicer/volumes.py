"""Scalar volume nodes <-> numpy arrays on a :class:`Grid` (LPS) or SimpleITK images.

Arrays are indexed ``[k, j, i]`` and always copied, so the core never writes into a node's
memory and a node never changes under the core. The node's parent transform (if linear) is
applied: the grid returned is where the voxels are in the scene's world, like what the user sees.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.slicer.geometry import (
    grid_from_ijk_to_ras,
    ijk_to_ras_from_grid,
    node_to_world,
    numpy_matrix,
    vtk_matrix,
)

#: SlicerRT's DICOM-RT import marks RTDOSE volumes with this attribute (value "1").
DOSE_VOLUME_ATTRIBUTE = "DicomRtImport.DoseVolume"
#: Where this package keeps the DICOM Frame of Reference UID of a volume it created.
FRAME_OF_REFERENCE_ATTRIBUTE = "SBRTStandards.FrameOfReferenceUID"

ImageLike = Union[sitk.Image, "tuple[np.ndarray, Grid]"]


def is_dose_volume(node: object) -> bool:
    """True for a scalar volume node that SlicerRT (or this package) marked as dose.

    The same test as SlicerRT's ``vtkSlicerRtCommon::IsDoseVolumeNode``: the attribute is present,
    whatever its value. Never by name: users rename nodes.
    """
    return (
        node is not None
        and bool(node.IsA("vtkMRMLScalarVolumeNode"))  # type: ignore[attr-defined]
        and node.GetAttribute(DOSE_VOLUME_ATTRIBUTE) is not None  # type: ignore[attr-defined]
    )


def grid_from_volume_node(node: slicer.vtkMRMLVolumeNode) -> Grid:
    """The LPS grid of a volume node (world coordinates, parent transform applied)."""
    image_data = _image_data(node)
    return _grid(node, image_data, node_to_world(node))


def image_from_volume_node(node: slicer.vtkMRMLVolumeNode) -> tuple[np.ndarray, Grid]:
    """A copy of the voxels, indexed ``[k, j, i]``, and their LPS grid."""
    return volume_array_and_grid(node, node_to_world(node))


def volume_array_and_grid(node: slicer.vtkMRMLVolumeNode, to_world: np.ndarray) -> tuple[np.ndarray, Grid]:
    """Like :func:`image_from_volume_node` with an explicit node-to-world matrix.

    For volumes that are not in the scene (the data nodes inside a sequence), whose placement is
    that of the sequence browser's proxy node.
    """
    image_data = _image_data(node)
    grid = _grid(node, image_data, to_world)
    scalars = image_data.GetPointData().GetScalars()
    if scalars.GetNumberOfComponents() != 1:
        raise InputError(
            f"volume '{node.GetName()}' has {scalars.GetNumberOfComponents()} components per voxel; "
            "a scalar volume (CT, dose) is needed"
        )
    array = numpy_support.vtk_to_numpy(scalars).reshape(grid.shape).copy()
    return array, grid


def volume_node_from_image(
    scene: slicer.vtkMRMLScene, image: ImageLike, name: str, *, dose: bool = False
) -> slicer.vtkMRMLScalarVolumeNode:
    """A new scalar volume node in ``scene`` holding ``image`` (with display node).

    ``image`` is a SimpleITK image or ``(array [k, j, i], grid)``. With ``dose=True`` the voxels
    are stored as floating point and the node carries SlicerRT's dose attribute, so SlicerRT's
    Isodose and DVH modules accept it.
    """
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    update_volume_node(node, image, dose=dose)
    node.CreateDefaultDisplayNodes()
    return node


def update_volume_node(node: slicer.vtkMRMLScalarVolumeNode, image: ImageLike, *, dose: bool = False) -> None:
    """Replace the voxels and geometry of an existing volume node (an output chosen by the user).

    ``dose=True`` stores floats and marks the node as dose; ``dose=False`` leaves an existing mark.
    """
    array, grid = _array_and_grid(image)
    if dose:
        array = array.astype(np.float64) if not np.issubdtype(array.dtype, np.floating) else array
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    node.SetAndObserveImageData(_vtk_image(array))
    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras_from_grid(grid)))
    if grid.frame_of_reference_uid:
        node.SetAttribute(FRAME_OF_REFERENCE_ATTRIBUTE, grid.frame_of_reference_uid)
    else:
        node.RemoveAttribute(FRAME_OF_REFERENCE_ATTRIBUTE)
    if dose:
        node.SetAttribute(DOSE_VOLUME_ATTRIBUTE, "1")
    node.Modified()


def _array_and_grid(image: ImageLike) -> tuple[np.ndarray, Grid]:
    if isinstance(image, sitk.Image):
        if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
            raise InputError(
                f"a 3D scalar image is needed; got {image.GetDimension()}D with "
                f"{image.GetNumberOfComponentsPerPixel()} components per voxel"
            )
        return sitk.GetArrayFromImage(image), Grid.from_image(image)
    array, grid = image
    array = np.asarray(array)
    if array.shape != grid.shape:
        raise ValueError(f"array shape {array.shape} does not match grid shape {grid.shape}")
    return array, grid


def _vtk_image(array: np.ndarray) -> vtk.vtkImageData:
    """vtkImageData with MRML's convention: origin 0, spacing 1 (the node holds the geometry)."""
    nk, nj, ni = array.shape
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(ni, nj, nk)
    flat = np.ascontiguousarray(array).ravel()
    scalars = numpy_support.numpy_to_vtk(
        flat, deep=True, array_type=numpy_support.get_vtk_array_type(flat.dtype)
    )
    scalars.SetName("ImageScalars")
    image_data.GetPointData().SetScalars(scalars)
    return image_data


def _image_data(node: slicer.vtkMRMLVolumeNode) -> vtk.vtkImageData:
    image_data = node.GetImageData() if node is not None else None
    if node is None or image_data is None or image_data.GetPointData().GetScalars() is None:
        name = node.GetName() if node is not None else "(none)"
        raise InputError(f"volume '{name}' has no voxels (empty node or not loaded)")
    return image_data


def _grid(node: slicer.vtkMRMLVolumeNode, image_data: vtk.vtkImageData, to_world: np.ndarray) -> Grid:
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    extent = image_data.GetExtent()
    matrix = to_world @ numpy_matrix(ijk_to_ras)
    # MRML volumes have extents from 0; allow others by moving the origin to the first voxel.
    matrix[:3, 3] = (matrix @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
    size = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    return grid_from_ijk_to_ras(
        matrix, size, node.GetAttribute(FRAME_OF_REFERENCE_ATTRIBUTE), what=f"volume '{node.GetName()}'"
    )
