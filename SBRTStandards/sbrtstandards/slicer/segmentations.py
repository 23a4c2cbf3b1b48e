"""Segmentation node segments <-> boolean masks on a grid, with names, colours and tags.

Reading: every segment is brought to the caller's reference grid (the CT, the dose grid).
A segment stored as a binary labelmap (what the Segment Editor makes) is placed on that grid,
resampled by nearest neighbour when the geometries differ: a reference voxel is inside when its
centre lies in an inside voxel of the segment. A segment stored in another representation
(closed surface; planar contours from SlicerRT's RTSTRUCT import) is rasterised directly on the
reference grid, on a copy of the segmentation, the way SlicerRT's DVH module does; the user's node
is not modified.

Writing: each mask becomes a segment whose labelmap keeps the mask's grid, cropped to the mask's
bounding box (a 512x512x200 CT grid per structure would cost 50 MB each).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
from sbrtstandards.slicer.scene import register_converter_rules

#: Segment tag holding the structure's role for this package (e.g. "GTV", "ITV", "PTV", "OAR").
ROLE_TAG = "SBRTStandards.Role"
#: Segment tag holding the TG-263 standard name of the structure (e.g. "Lung_L").
TG263_TAG = "SBRTStandards.TG263Name"

BINARY_LABELMAP = "Binary labelmap"
_REFERENCE_GEOMETRY = "Reference image geometry"
_OVERSAMPLING = "Oversampling factor"

Color = Sequence[float]


def segment_ids_by_name(seg_node: slicer.vtkMRMLSegmentationNode) -> dict[str, str]:
    """Segment name -> segment ID; InputError when two segments share a name."""
    segmentation = _segmentation(seg_node)
    result: dict[str, str] = {}
    for segment_id in segmentation.GetSegmentIDs():
        name = segmentation.GetSegment(segment_id).GetName()
        if name in result:
            raise InputError(
                f"segmentation '{seg_node.GetName()}' has two segments named '{name}'; rename one of them"
            )
        result[name] = segment_id
    return result


def segment_tag(seg_node: slicer.vtkMRMLSegmentationNode, segment_id: str, key: str) -> str | None:
    """The value of tag ``key`` of a segment, None when the segment has no such tag."""
    segment = _segmentation(seg_node).GetSegment(segment_id)
    if segment is None:
        raise InputError(f"segmentation '{seg_node.GetName()}' has no segment with ID '{segment_id}'")
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else None


def masks_from_segmentation(
    seg_node: slicer.vtkMRMLSegmentationNode, reference: Grid, segment_ids: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Segment name -> bool mask ``[k, j, i]`` on ``reference`` (all segments by default)."""
    segmentation = _segmentation(seg_node)
    ids = list(segmentation.GetSegmentIDs()) if segment_ids is None else list(segment_ids)
    names = _names(seg_node, ids)
    to_world = node_to_world(seg_node)
    labelmaps = _labelmaps_on(seg_node, ids, reference, to_world)
    masks: dict[str, np.ndarray] = {}
    for segment_id, name in zip(ids, names):
        image, label_value = labelmaps[segment_id]
        masks[name] = _place_on(image, label_value, to_world, reference, f"segment '{name}'")
    return masks


def add_masks_to_segmentation(
    seg_node: slicer.vtkMRMLSegmentationNode | None,
    scene: slicer.vtkMRMLScene,
    masks: Mapping[str, np.ndarray],
    grid: Grid,
    *,
    colors: Mapping[str, Color] | None = None,
    tags: Mapping[str, Mapping[str, str]] | None = None,
    name: str = "Segmentation",
    convert_source: bool = False,
) -> slicer.vtkMRMLSegmentationNode:
    """Add one segment per mask (bool ``[k, j, i]`` on ``grid``) and return the segmentation node.

    ``seg_node=None`` creates a segmentation node called ``name`` whose reference geometry is
    ``grid``. A segment whose name already exists is replaced in place (same ID, same position in
    the list, its colour and tags kept unless given), so running a step twice does not duplicate
    structures. ``colors`` are RGB in 0..1 as MRML stores them; ``tags`` are extra segment tags such
    as ``{ROLE_TAG: "PTV", TG263_TAG: "PTV"}``.

    A segmentation whose segments are stored as contours or surfaces (an RTSTRUCT loaded by
    SlicerRT) would convert every new labelmap back to that representation; with
    ``convert_source=True`` it is switched to binary labelmaps first, as the Segment Editor does,
    otherwise InputError.
    """
    register_converter_rules()
    colors = colors or {}
    tags = tags or {}
    for mask_name, mask in masks.items():
        if np.shape(mask) != grid.shape:
            raise ValueError(f"mask '{mask_name}' has shape {np.shape(mask)}, grid shape is {grid.shape}")
        if mask_name in colors:
            _check_color(mask_name, colors[mask_name])
    if seg_node is None:
        seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        seg_node.CreateDefaultDisplayNodes()
    segmentation = _segmentation(seg_node)
    # Segments are stored in the node's own frame; undo its parent transform, if any.
    local_grid = _grid_in_node_frame(grid, node_to_world(seg_node), seg_node.GetName())
    if not segmentation.GetConversionParameter(_REFERENCE_GEOMETRY):
        # Without it, Slicer picks a fine default lattice for surface -> labelmap conversions.
        segmentation.SetConversionParameter(_REFERENCE_GEOMETRY, _serialized_geometry(local_grid))
    _ensure_labelmap_source(seg_node, convert_source)
    existing = segment_ids_by_name(seg_node)
    for mask_name, mask in masks.items():
        _add_segment(
            segmentation,
            mask_name,
            np.asarray(mask, dtype=bool),
            local_grid,
            existing.get(mask_name),
            colors.get(mask_name),
            tags.get(mask_name, {}),
        )
    return seg_node


def _add_segment(
    segmentation: slicer.vtkSegmentation,
    segment_name: str,
    mask: np.ndarray,
    grid: Grid,
    existing_id: str | None,
    color: Color | None,
    tags: Mapping[str, str],
) -> None:
    segment = slicer.vtkSegment()
    insert_before = ""
    if existing_id is not None:
        old = segmentation.GetSegment(existing_id)
        segment.DeepCopyMetadata(old)  # name, colour, tags, terminology
        index = segmentation.GetSegmentIndex(existing_id)
        if index + 1 < segmentation.GetNumberOfSegments():
            insert_before = segmentation.GetNthSegmentID(index + 1)
        segmentation.RemoveSegment(existing_id)
    segment.SetName(segment_name)
    if color is not None:
        segment.SetColor(*(float(c) for c in color))
    for key, value in tags.items():
        segment.SetTag(key, str(value))
    segment.AddRepresentation(BINARY_LABELMAP, _cropped_labelmap(mask, grid))
    if not segmentation.AddSegment(segment, existing_id or "", insert_before):
        raise InputError(f"segment '{segment_name}' could not be added to the segmentation")


def _cropped_labelmap(mask: np.ndarray, grid: Grid) -> slicer.vtkOrientedImageData:
    """The mask's bounding box as an oriented image whose extent is in ``grid`` index space."""
    if not mask.any():
        return _oriented_image(np.zeros((0, 0, 0), dtype=np.uint8), grid, (0, 0, 0))
    (k0, k1), (j0, j1), (i0, i1) = _bounds(mask)
    return _oriented_image(mask[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1].astype(np.uint8), grid, (i0, j0, k0))


def _oriented_image(
    array: np.ndarray, grid: Grid, start_ijk: tuple[int, int, int]
) -> slicer.vtkOrientedImageData:
    image = slicer.vtkOrientedImageData()
    nk, nj, ni = array.shape
    i0, j0, k0 = start_ijk
    image.SetExtent(i0, i0 + ni - 1, j0, j0 + nj - 1, k0, k0 + nk - 1)
    image.SetImageToWorldMatrix(vtk_matrix(ijk_to_ras_from_grid(grid)))
    scalars = numpy_support.numpy_to_vtk(
        np.ascontiguousarray(array, dtype=np.uint8).ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR
    )
    image.GetPointData().SetScalars(scalars)
    return image


def _serialized_geometry(grid: Grid) -> str:
    """A grid as the segmentation's "Reference image geometry" conversion parameter."""
    extent = [0, grid.size[0] - 1, 0, grid.size[1] - 1, 0, grid.size[2] - 1]
    return str(
        slicer.vtkSegmentationConverter.SerializeImageGeometry(vtk_matrix(ijk_to_ras_from_grid(grid)), extent)
    )


def _ensure_labelmap_source(seg_node: slicer.vtkMRMLSegmentationNode, convert_source: bool) -> None:
    segmentation = _segmentation(seg_node)
    source = segmentation.GetSourceRepresentationName()
    if source == BINARY_LABELMAP:
        return
    if segmentation.GetNumberOfSegments() == 0:
        segmentation.SetSourceRepresentationName(BINARY_LABELMAP)
        return
    if not convert_source:
        raise InputError(
            f"segmentation '{seg_node.GetName()}' stores its segments as '{source}'; new masks need binary "
            "labelmaps: convert it (Segmentations module, or convert_source=True) or use a new segmentation"
        )
    if not segmentation.CreateRepresentation(BINARY_LABELMAP):
        raise InputError(
            f"segmentation '{seg_node.GetName()}': '{source}' cannot be converted to a binary labelmap"
        )
    segmentation.SetSourceRepresentationName(BINARY_LABELMAP)


def _labelmaps_on(
    seg_node: slicer.vtkMRMLSegmentationNode, ids: list[str], reference: Grid, to_world: np.ndarray
) -> dict[str, tuple[slicer.vtkOrientedImageData, int]]:
    """Segment ID -> (labelmap in the node's frame, label value of the segment in it)."""
    register_converter_rules()
    segmentation = _segmentation(seg_node)
    source = segmentation.GetSourceRepresentationName()
    if source == BINARY_LABELMAP:
        return {
            sid: (
                seg_node.GetBinaryLabelmapInternalRepresentation(sid),
                segmentation.GetSegment(sid).GetLabelValue(),
            )
            for sid in ids
        }
    # Rasterise a copy on the reference grid (expressed in the node's frame), leaving the node as is.
    copy = slicer.vtkSegmentation()
    copy.SetSourceRepresentationName(source)
    copy.CopyConversionParameters(segmentation)
    for sid in ids:
        copy.CopySegmentFromSegmentation(segmentation, sid)
    local = _grid_in_node_frame(reference, to_world, seg_node.GetName())
    copy.SetConversionParameter(_REFERENCE_GEOMETRY, _serialized_geometry(local))
    copy.SetConversionParameter(_OVERSAMPLING, "1")
    if not copy.CreateRepresentation(BINARY_LABELMAP, True):
        raise InputError(
            f"segmentation '{seg_node.GetName()}': segments stored as '{source}' cannot be converted to "
            "binary labelmaps here (planar contours need the SlicerRT extension)"
        )
    return {
        sid: (copy.GetSegment(sid).GetRepresentation(BINARY_LABELMAP), copy.GetSegment(sid).GetLabelValue())
        for sid in ids
    }


def _place_on(
    image: slicer.vtkOrientedImageData | None,
    label_value: int,
    to_world: np.ndarray,
    reference: Grid,
    what: str,
) -> np.ndarray:
    """The voxels of ``image`` equal to ``label_value``, on the reference grid."""
    result = np.zeros(reference.shape, dtype=bool)
    if image is None or image.GetPointData().GetScalars() is None:
        return result
    extent = image.GetExtent()
    size = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    if min(size) <= 0:
        return result
    image_to_world = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(image_to_world)
    matrix = to_world @ numpy_matrix(image_to_world)
    matrix[:3, 3] = (matrix @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
    grid = grid_from_ijk_to_ras(matrix, size, what=what)
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    inside, grid = _crop(scalars.reshape(grid.shape) == label_value, grid)
    if inside is None:
        return result
    offset = _integer_offset(grid, reference)
    if offset is None:
        # Resample only the part of the reference grid that the segment's box can reach.
        offset, sub_grid = _reference_window(grid, reference)
        if sub_grid is None:
            return result
        inside = sitk.GetArrayFromImage(
            sitk.Resample(
                grid.image(inside),
                [int(v) for v in sub_grid.size],
                sitk.Transform(),
                sitk.sitkNearestNeighbor,
                sub_grid.origin_mm,
                sub_grid.spacing_mm,
                sub_grid.direction,
                0,
                sitk.sitkUInt8,
            )
        ).astype(bool)
    _paste(result, inside, offset)
    return result


def _crop(inside: np.ndarray, grid: Grid) -> tuple[np.ndarray | None, Grid]:
    """The bounding box of ``inside`` and its grid (labelmap layers often span the whole CT)."""
    if not inside.any():
        return None, grid
    (k0, k1), (j0, j1), (i0, i1) = _bounds(inside)
    origin = grid.index_to_lps(np.array([i0, j0, k0], dtype=float))
    cropped = Grid(
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing_mm=grid.spacing_mm,
        size=(i1 - i0 + 1, j1 - j0 + 1, k1 - k0 + 1),
        direction=grid.direction,
    )
    return inside[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1], cropped


def _bounds(mask: np.ndarray) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(first, last) index of the True voxels along k, j, i."""
    result = []
    for axes in ((1, 2), (0, 2), (0, 1)):
        hits = np.flatnonzero(mask.any(axis=axes))
        result.append((int(hits[0]), int(hits[-1])))
    return result[0], result[1], result[2]


def _reference_window(grid: Grid, reference: Grid) -> tuple[tuple[int, int, int], Grid | None]:
    """The sub-grid of ``reference`` that covers ``grid``'s voxels (None when they do not meet)."""
    corners = np.array(
        [
            [i, j, k]
            for i in (-0.5, grid.size[0] - 0.5)
            for j in (-0.5, grid.size[1] - 0.5)
            for k in (-0.5, grid.size[2] - 0.5)
        ]
    )
    ijk = reference.lps_to_index(grid.index_to_lps(corners))
    low = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(ijk.max(axis=0)).astype(int), np.asarray(reference.size) - 1)
    if np.any(high < low):
        return (0, 0, 0), None
    origin = reference.index_to_lps(low.astype(float))
    window = Grid(
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing_mm=reference.spacing_mm,
        size=tuple(int(v) for v in high - low + 1),  # type: ignore[arg-type]
        direction=reference.direction,
    )
    return (int(low[0]), int(low[1]), int(low[2])), window


def _integer_offset(grid: Grid, reference: Grid) -> tuple[int, int, int] | None:
    """(i, j, k) of ``grid``'s first voxel on ``reference`` when both share one lattice, else None."""
    if not (
        np.allclose(grid.direction, reference.direction, atol=1e-6)
        and np.allclose(grid.spacing_mm, reference.spacing_mm, rtol=1e-6, atol=1e-6)
    ):
        return None
    ijk = reference.lps_to_index(np.asarray(grid.origin_mm))
    rounded = np.round(ijk)
    if not np.allclose(ijk, rounded, atol=1e-3):
        return None
    return int(rounded[0]), int(rounded[1]), int(rounded[2])


def _paste(target: np.ndarray, block: np.ndarray, offset_ijk: tuple[int, int, int]) -> None:
    """target |= block placed with its voxel (0, 0, 0) at ``offset_ijk`` of target, cropped."""
    src: list[slice] = []
    dst: list[slice] = []
    for axis, start in zip((0, 1, 2), (offset_ijk[2], offset_ijk[1], offset_ijk[0])):
        lo, hi = max(start, 0), min(start + block.shape[axis], target.shape[axis])
        if lo >= hi:
            return
        dst.append(slice(lo, hi))
        src.append(slice(lo - start, hi - start))
    target[tuple(dst)] |= block[tuple(src)]


def _grid_in_node_frame(grid: Grid, to_world: np.ndarray, node_name: str) -> Grid:
    if np.allclose(to_world, np.eye(4)):
        return grid
    local = np.linalg.inv(to_world) @ ijk_to_ras_from_grid(grid)
    return grid_from_ijk_to_ras(
        local, grid.size, grid.frame_of_reference_uid, what=f"segmentation '{node_name}'"
    )


def _names(seg_node: slicer.vtkMRMLSegmentationNode, ids: list[str]) -> list[str]:
    segmentation = _segmentation(seg_node)
    names: list[str] = []
    for sid in ids:
        segment = segmentation.GetSegment(sid)
        if segment is None:
            available = ", ".join(segmentation.GetSegment(s).GetName() for s in segmentation.GetSegmentIDs())
            raise InputError(
                f"segmentation '{seg_node.GetName()}' has no segment with ID '{sid}' (segments: {available})"
            )
        if segment.GetName() in names:
            raise InputError(
                f"segmentation '{seg_node.GetName()}' has two segments named '{segment.GetName()}'; "
                "rename one of them"
            )
        names.append(segment.GetName())
    return names


def _check_color(name: str, color: Color) -> None:
    values = np.asarray(color, dtype=float)
    if values.shape != (3,) or np.any(values < 0) or np.any(values > 1):
        raise InputError(
            f"colour of segment '{name}' must be three numbers in 0..1 (MRML), got {list(color)}"
        )


def _segmentation(seg_node: slicer.vtkMRMLSegmentationNode) -> slicer.vtkSegmentation:
    if seg_node is None or seg_node.GetSegmentation() is None:
        raise InputError("no segmentation node given")
    return seg_node.GetSegmentation()
