"""MRML adapters (sbrtstandards.slicer) against a headless scene from the PyPI slicer-core package.

Expected values are written by hand or computed independently of the adapters (SimpleITK's
index-to-point, voxel centres tested against box bounds in mm); round trips check that what goes
into a node comes back unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the PyPI slicer-core package (headless MRML)")

import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402

from sbrtstandards.errors import GeometryError, InputError  # noqa: E402
from sbrtstandards.grid import Grid  # noqa: E402
from sbrtstandards.slicer import (  # noqa: E402
    DOSE_VOLUME_ATTRIBUTE,
    ROLE_TAG,
    TG263_TAG,
    add_masks_to_segmentation,
    add_sequence_browser,
    dvh_plot,
    grid_from_ijk_to_ras,
    grid_from_volume_node,
    ijk_to_ras_from_grid,
    image_from_volume_node,
    is_dose_volume,
    masks_from_segmentation,
    new_scene,
    phases_from_sequence,
    rows_from_table_node,
    segment_ids_by_name,
    segment_tag,
    sequence_from_phases,
    show_chart,
    table_node_from_rows,
    volume_node_from_image,
)
from sbrtstandards.slicer.geometry import numpy_matrix  # noqa: E402

pytestmark = pytest.mark.slicer

# Columns (i, j, k axes in LPS): i runs posterior, j runs inferior (a flip), k runs left.
PERMUTED_FLIPPED = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def rotated_direction(degrees: float) -> tuple[float, ...]:
    """PERMUTED_FLIPPED followed by a rotation about the patient's z axis: nothing axis-aligned."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    rot_z = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return tuple((rot_z @ np.asarray(PERMUTED_FLIPPED).reshape(3, 3)).ravel())


PERMUTED_GRID = Grid((-12.5, 40.0, 7.25), (0.8, 1.5, 2.5), (5, 4, 3), PERMUTED_FLIPPED, "1.2.3.4")
ROTATED_GRID = Grid((3.0, -7.0, 11.0), (1.1, 0.9, 2.0), (7, 6, 5), rotated_direction(30.0), "1.2.3.5")


@pytest.fixture
def scene() -> slicer.vtkMRMLScene:
    return new_scene()


def asymmetric_pattern(grid: Grid, dtype: type = np.float64) -> np.ndarray:
    """Different value in every voxel, so any transposition or flip of axes shows."""
    values = np.arange(np.prod(grid.shape)).reshape(grid.shape)
    if np.issubdtype(dtype, np.floating):
        return (values * 1.5 - 7.25).astype(dtype)
    return ((values * 7) % 251 + 1).astype(dtype)  # distinct over the small test grids, fits uint8


def node_ijk_to_ras(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return numpy_matrix(matrix)


def assert_same_grid(actual: Grid, expected: Grid) -> None:
    assert actual.size == expected.size
    np.testing.assert_allclose(actual.origin_mm, expected.origin_mm, atol=1e-9)
    np.testing.assert_allclose(actual.spacing_mm, expected.spacing_mm, atol=1e-9)
    np.testing.assert_allclose(actual.direction, expected.direction, atol=1e-9)


# --- LPS <-> RAS -------------------------------------------------------------------------------


def test_known_voxel_maps_to_hand_computed_point_through_grid_sitk_and_node(scene):
    # Voxel (i, j, k) = (4, 1, 2): 4 x 0.8 mm posterior, 1 x 1.5 mm inferior, 2 x 2.5 mm left of
    # the origin (-12.5, 40, 7.25) LPS -> (-7.5, 43.2, 5.75) LPS = (7.5, -43.2, 5.75) RAS.
    expected_lps = np.array([-7.5, 43.2, 5.75])
    expected_ras = np.array([7.5, -43.2, 5.75])
    ijk = (4, 1, 2)
    np.testing.assert_allclose(PERMUTED_GRID.index_to_lps(np.array(ijk)), expected_lps, atol=1e-12)
    sitk_point = PERMUTED_GRID.image(np.zeros(PERMUTED_GRID.shape)).TransformIndexToPhysicalPoint(ijk)
    np.testing.assert_allclose(sitk_point, expected_lps, atol=1e-12)

    array = np.zeros(PERMUTED_GRID.shape, dtype=np.int16)
    array[2, 1, 4] = 1000  # [k, j, i]
    array[0, 0, 1] = 7  # a second marker, so a mirrored layout cannot pass
    node = volume_node_from_image(scene, (array, PERMUTED_GRID), "asymmetric")
    ras = node_ijk_to_ras(node) @ np.array([*ijk, 1.0])
    np.testing.assert_allclose(ras[:3], expected_ras, atol=1e-12)
    # The voxel value sits at (i, j, k) in VTK's own indexing.
    image_data = node.GetImageData()
    assert image_data.GetScalarComponentAsDouble(4, 1, 2, 0) == 1000
    assert image_data.GetScalarComponentAsDouble(1, 0, 0, 0) == 7
    # And Slicer's inverse matrix brings the RAS point back to that voxel.
    ras_to_ijk = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(ras_to_ijk)
    np.testing.assert_allclose((numpy_matrix(ras_to_ijk) @ ras)[:3], ijk, atol=1e-9)


@pytest.mark.parametrize("grid", [PERMUTED_GRID, ROTATED_GRID], ids=["permuted-flipped", "rotated"])
def test_every_voxel_centre_agrees_between_grid_and_ijk_to_ras(grid):
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in grid.size), indexing="ij"), axis=-1).reshape(-1, 3)
    matrix = ijk_to_ras_from_grid(grid)
    ras = (matrix @ np.column_stack([ijk, np.ones(len(ijk))]).T).T[:, :3]
    lps_from_ras = ras * np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(lps_from_ras, grid.index_to_lps(ijk), atol=1e-9)
    assert_same_grid(grid_from_ijk_to_ras(matrix, grid.size), grid)


def test_sheared_matrix_is_a_geometry_error():
    sheared = np.eye(4)
    sheared[0, 1] = 0.3
    with pytest.raises(GeometryError, match="not orthogonal"):
        grid_from_ijk_to_ras(sheared, (2, 2, 2), what="volume 'CT'")


# --- volumes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.int16, np.uint8])
@pytest.mark.parametrize("grid", [PERMUTED_GRID, ROTATED_GRID], ids=["permuted-flipped", "rotated"])
def test_volume_round_trip_keeps_values_dtype_and_geometry(scene, grid, dtype):
    array = asymmetric_pattern(grid, dtype)
    node = volume_node_from_image(scene, (array, grid), "CT")
    back, back_grid = image_from_volume_node(node)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    assert_same_grid(back_grid, grid)
    assert back_grid.frame_of_reference_uid == grid.frame_of_reference_uid
    assert_same_grid(grid_from_volume_node(node), grid)
    back += 1  # a copy: the node is untouched
    np.testing.assert_array_equal(image_from_volume_node(node)[0], array)
    assert node.GetDisplayNode() is not None


def test_volume_from_simpleitk_image(scene):
    image = ROTATED_GRID.image(asymmetric_pattern(ROTATED_GRID, np.float32))
    node = volume_node_from_image(scene, image, "from sitk")
    back, back_grid = image_from_volume_node(node)
    np.testing.assert_array_equal(back, sitk.GetArrayFromImage(image))
    assert_same_grid(back_grid, Grid.from_image(image))


def test_linear_parent_transform_moves_the_grid_and_a_warp_is_refused(scene):
    node = volume_node_from_image(scene, (asymmetric_pattern(PERMUTED_GRID), PERMUTED_GRID), "CT")
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 10.0)  # 10 mm to the patient's right (+R) = -10 mm in L
    matrix.SetElement(2, 3, -4.0)  # 4 mm inferior
    shift.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(shift.GetID())
    moved = grid_from_volume_node(node)
    np.testing.assert_allclose(
        moved.origin_mm, np.add(PERMUTED_GRID.origin_mm, (-10.0, 0.0, -4.0)), atol=1e-9
    )
    np.testing.assert_allclose(moved.direction, PERMUTED_GRID.direction, atol=1e-12)

    warp = scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    spline = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for point in ((0, 0, 0), (50, 0, 0), (0, 50, 0), (0, 0, 50)):
        source.InsertNextPoint(point)
        target.InsertNextPoint(point[0] + 1.0, point[1], point[2])
    spline.SetSourceLandmarks(source)
    spline.SetTargetLandmarks(target)
    warp.SetAndObserveTransformToParent(spline)
    node.SetAndObserveTransformNodeID(warp.GetID())
    with pytest.raises(InputError, match="non-linear transform 'warp'"):
        image_from_volume_node(node)


def test_dose_volume_is_float_and_recognised_by_slicerrt_attribute(scene):
    dose_gy = (np.arange(np.prod(PERMUTED_GRID.shape)).reshape(PERMUTED_GRID.shape) % 7).astype(np.uint16)
    dose = volume_node_from_image(scene, (dose_gy, PERMUTED_GRID), "RTDOSE", dose=True)
    assert dose.GetAttribute(DOSE_VOLUME_ATTRIBUTE) == "1"
    assert is_dose_volume(dose)
    values, _ = image_from_volume_node(dose)
    assert np.issubdtype(values.dtype, np.floating)
    np.testing.assert_array_equal(values, dose_gy)

    named_dose = volume_node_from_image(scene, (dose_gy, PERMUTED_GRID), "Dose")  # name is not enough
    assert not is_dose_volume(named_dose)
    named_dose.SetAttribute(DOSE_VOLUME_ATTRIBUTE, "")  # SlicerRT: present = dose, whatever the value
    assert is_dose_volume(named_dose)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "t")
    table.SetAttribute(DOSE_VOLUME_ATTRIBUTE, "1")
    assert not is_dose_volume(table)
    assert not is_dose_volume(None)


def test_volume_without_voxels_is_an_input_error(scene):
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "not loaded")
    with pytest.raises(InputError, match="'not loaded' has no voxels"):
        image_from_volume_node(empty)


# --- segmentations ------------------------------------------------------------------------------


def structure_masks(grid: Grid) -> dict[str, np.ndarray]:
    nk, nj, ni = grid.shape
    gtv = np.zeros(grid.shape, dtype=bool)
    gtv[1:3, 2:4, 1:4] = True
    gtv[2, 3, 4] = True  # asymmetric bump
    ptv = np.zeros(grid.shape, dtype=bool)  # overlaps the GTV (contains it)
    ptv[0:4, 1:5, 0:6] = True
    edge = np.zeros(grid.shape, dtype=bool)  # touches the last voxel of every axis
    edge[nk - 1, nj - 1, ni - 2 :] = True
    return {"GTV": gtv, "PTV": ptv, "Empty": np.zeros(grid.shape, dtype=bool), "Edge": edge}


def test_segmentation_round_trip_keeps_masks_names_colours_and_tags(scene):
    masks = structure_masks(ROTATED_GRID)
    colors = {"GTV": (1.0, 0.0, 0.0), "PTV": (0.0, 0.5, 1.0)}
    tags = {"GTV": {ROLE_TAG: "GTV", TG263_TAG: "GTV"}, "PTV": {ROLE_TAG: "PTV", TG263_TAG: "PTV"}}
    seg = add_masks_to_segmentation(
        None, scene, masks, ROTATED_GRID, colors=colors, tags=tags, name="Targets"
    )
    assert seg.GetName() == "Targets"
    ids = segment_ids_by_name(seg)
    assert list(ids) == ["GTV", "PTV", "Empty", "Edge"]
    back = masks_from_segmentation(seg, ROTATED_GRID)
    assert list(back) == list(masks)
    for name, mask in masks.items():
        assert back[name].dtype == bool
        np.testing.assert_array_equal(back[name], mask, err_msg=name)
    segmentation = seg.GetSegmentation()
    for name, color in colors.items():
        np.testing.assert_allclose(segmentation.GetSegment(ids[name]).GetColor(), color)
    assert segment_tag(seg, ids["PTV"], ROLE_TAG) == "PTV"
    assert segment_tag(seg, ids["GTV"], TG263_TAG) == "GTV"
    assert segment_tag(seg, ids["Edge"], ROLE_TAG) is None
    # Only the selected segments, still keyed by name.
    assert list(masks_from_segmentation(seg, ROTATED_GRID, [ids["Edge"]])) == ["Edge"]


def test_shared_labelmap_layers_are_split_by_label_value(scene):
    # The Segment Editor keeps non-overlapping segments in one layer with label values 1, 2, ...
    masks = structure_masks(ROTATED_GRID)
    del masks["PTV"]  # overlaps the GTV: it would keep its own layer
    seg = add_masks_to_segmentation(None, scene, masks, ROTATED_GRID)
    segmentation = seg.GetSegmentation()
    segmentation.CollapseBinaryLabelmaps(False)
    assert segmentation.GetNumberOfLayers() == 1
    assert {segmentation.GetSegment(sid).GetLabelValue() for sid in segmentation.GetSegmentIDs()} >= {1, 2}
    back = masks_from_segmentation(seg, ROTATED_GRID)
    for name, mask in masks.items():
        np.testing.assert_array_equal(back[name], mask, err_msg=name)


def box_mask_on(reference: Grid, low_lps: np.ndarray, high_lps: np.ndarray) -> np.ndarray:
    """Reference voxels whose centre lies strictly inside the box (independent of the adapters)."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in reference.size), indexing="ij"), axis=-1)
    centres = reference.index_to_lps(ijk.reshape(-1, 3)).reshape(*reference.size, 3)
    inside = np.all((centres > low_lps) & (centres < high_lps), axis=-1)  # [i, j, k]
    return inside.transpose(2, 1, 0)


@pytest.mark.parametrize(
    "reference",
    [
        Grid((1.2, -0.3, 0.4), (2.0, 2.5, 3.0), (15, 14, 10)),  # coarser, shifted, axial
        # i runs posterior (+y), j runs right (-x): the CT turned a quarter turn about z.
        Grid(
            (30.7, -0.6, 0.2), (1.5, 1.5, 2.0), (22, 20, 12), (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
        ),
        Grid((-2.0, -3.0, 10.0), (1.0, 1.0, 1.0), (30, 30, 30)),  # same lattice: placed, cropped in k
    ],
    ids=["coarser-axial", "rotated-90", "same-lattice"],
)
def test_box_segment_is_resampled_onto_a_different_reference_grid(scene, reference):
    # The box: voxels i 10..19, j 5..24, k 8..13 of a 1 mm grid at the origin, i.e. the LPS box
    # [9.5, 19.5] x [4.5, 24.5] x [7.5, 13.5] mm (voxel edges), given to the segment on its own grid.
    own = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (40, 40, 40))
    box = np.zeros(own.shape, dtype=bool)
    box[8:14, 5:25, 10:20] = True
    seg = add_masks_to_segmentation(None, scene, {"Box": box}, own)
    expected = box_mask_on(reference, np.array([9.5, 4.5, 7.5]), np.array([19.5, 24.5, 13.5]))
    assert expected.any()
    mask = masks_from_segmentation(seg, reference)["Box"]
    assert mask.shape == reference.shape
    np.testing.assert_array_equal(mask, expected)


def test_segmentation_under_a_linear_transform_is_read_and_written_in_world_coordinates(scene):
    grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (12, 10, 8))
    mask = np.zeros(grid.shape, dtype=bool)
    mask[2:5, 3:6, 4:7] = True
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "moved")
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "2 mm right")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 2.0)  # +2 mm R = -2 mm L: world LPS x = node x - 2
    shift.SetMatrixTransformToParent(matrix)
    seg.SetAndObserveTransformNodeID(shift.GetID())
    add_masks_to_segmentation(seg, scene, {"GTV": mask}, grid)
    np.testing.assert_array_equal(masks_from_segmentation(seg, grid)["GTV"], mask)  # world in, world out
    seg.SetAndObserveTransformNodeID(None)  # without the transform the segment sits 2 voxels further in i
    np.testing.assert_array_equal(masks_from_segmentation(seg, grid)["GTV"], np.roll(mask, 2, axis=2))


def test_closed_surface_segment_is_rasterised_on_the_reference_grid_without_changing_the_node(scene):
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "surfaces")
    seg.GetSegmentation().SetSourceRepresentationName("Closed surface")
    cube = vtk.vtkCubeSource()
    cube.SetBounds(-10.2, 10.2, -5.3, 5.3, 0.4, 20.4)  # RAS mm
    triangles = vtk.vtkTriangleFilter()
    triangles.SetInputConnection(cube.GetOutputPort())
    triangles.Update()
    seg.AddSegmentFromClosedSurfaceRepresentation(triangles.GetOutput(), "Cube", [0.2, 0.8, 0.2])
    reference = Grid((-20.0, -12.0, -3.0), (1.0, 1.0, 2.0), (41, 25, 14))
    # RAS x in [-10.2, 10.2] is LPS x in [-10.2, 10.2]; RAS y in [-5.3, 5.3] likewise (symmetric).
    expected = box_mask_on(reference, np.array([-10.2, -5.3, 0.4]), np.array([10.2, 5.3, 20.4]))
    mask = masks_from_segmentation(seg, reference)["Cube"]
    np.testing.assert_array_equal(mask, expected)
    assert int(mask.sum()) == 21 * 11 * 10
    assert seg.GetSegmentation().GetSourceRepresentationName() == "Closed surface"
    assert not seg.GetSegmentation().ContainsRepresentation("Binary labelmap")


def test_adding_masks_to_a_surface_segmentation_needs_consent(scene):
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "RTSTRUCT")
    seg.GetSegmentation().SetSourceRepresentationName("Closed surface")
    sphere = vtk.vtkSphereSource()
    sphere.SetRadius(5.0)
    sphere.Update()
    seg.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "Sphere", [1.0, 1.0, 0.0])
    grid = Grid((-8.0, -8.0, -8.0), (1.0, 1.0, 1.0), (17, 17, 17))
    ptv = np.zeros(grid.shape, dtype=bool)
    ptv[4:13, 4:13, 4:13] = True
    with pytest.raises(InputError, match="stores its segments as 'Closed surface'"):
        add_masks_to_segmentation(seg, scene, {"PTV": ptv}, grid)
    add_masks_to_segmentation(seg, scene, {"PTV": ptv}, grid, convert_source=True)
    assert seg.GetSegmentation().GetSourceRepresentationName() == "Binary labelmap"
    np.testing.assert_array_equal(masks_from_segmentation(seg, grid)["PTV"], ptv)
    assert set(segment_ids_by_name(seg)) == {"Sphere", "PTV"}


def test_existing_segment_is_replaced_in_place_keeping_id_colour_and_tags(scene):
    grid = PERMUTED_GRID
    first, second, other = (np.zeros(grid.shape, dtype=bool) for _ in range(3))
    first[0, 0, 0:2] = True
    second[1:3, 2:4, 3:5] = True
    other[2, 0, 0] = True
    seg = add_masks_to_segmentation(
        None,
        scene,
        {"ITV": first, "Lung_L": other},
        grid,
        colors={"ITV": (0.9, 0.1, 0.1)},
        tags={"ITV": {ROLE_TAG: "ITV"}},
    )
    ids = segment_ids_by_name(seg)
    seg.GetSegmentation().CollapseBinaryLabelmaps(False)  # ITV and Lung_L now share one layer
    assert seg.GetSegmentation().GetNumberOfLayers() == 1
    add_masks_to_segmentation(seg, scene, {"ITV": second}, grid)
    assert segment_ids_by_name(seg) == ids  # same IDs, same order, no duplicate
    assert list(seg.GetSegmentation().GetSegmentIDs()) == [ids["ITV"], ids["Lung_L"]]
    back = masks_from_segmentation(seg, grid)
    np.testing.assert_array_equal(back["ITV"], second)
    np.testing.assert_array_equal(back["Lung_L"], other)  # the layer-mate is untouched
    np.testing.assert_allclose(seg.GetSegmentation().GetSegment(ids["ITV"]).GetColor(), (0.9, 0.1, 0.1))
    assert segment_tag(seg, ids["ITV"], ROLE_TAG) == "ITV"


def test_segmentation_input_errors(scene):
    grid = PERMUTED_GRID
    mask = np.ones(grid.shape, dtype=bool)
    with pytest.raises(InputError, match="colour of segment 'GTV'"):
        add_masks_to_segmentation(None, scene, {"GTV": mask}, grid, colors={"GTV": (255, 0, 0)})
    seg = add_masks_to_segmentation(None, scene, {"GTV": mask}, grid)
    seg.GetSegmentation().AddEmptySegment("", "GTV")  # a second segment with the same name
    with pytest.raises(InputError, match="two segments named 'GTV'"):
        masks_from_segmentation(seg, grid)
    with pytest.raises(InputError, match="no segment with ID 'nope'"):
        masks_from_segmentation(seg, grid, ["nope"])


# --- sequences ----------------------------------------------------------------------------------


def breathing_phases(labels: list[str]) -> list[tuple[str, np.ndarray, Grid]]:
    grid = ROTATED_GRID
    phases = []
    for index, label in enumerate(labels):
        array = np.full(grid.shape, -1000, dtype=np.int16)
        array[1 + index % 3, 2:4, index : index + 2] = 40 + index  # the "tumour" moves along i
        phases.append((label, array, grid))
    return phases


@pytest.mark.parametrize(
    "labels", [["0%", "25%", "50%", "75%"], ["Insp", "Mid", "Exp"]], ids=["percent", "text"]
)
def test_sequence_round_trip(scene, labels):
    phases = breathing_phases(labels)
    sequence = sequence_from_phases(scene, phases, "4D-CT")
    assert sequence.GetNumberOfDataNodes() == len(labels)
    if labels[0].endswith("%"):
        assert sequence.GetIndexType() == slicer.vtkMRMLSequenceNode.NumericIndex
        assert sequence.GetIndexUnit() == "%"
        assert sequence.GetNthIndexValue(1) == "25"
    back = phases_from_sequence(sequence)
    assert [label for label, _, _ in back] == labels
    for (_, array, grid), (_, back_array, back_grid) in zip(phases, back):
        np.testing.assert_array_equal(back_array, array)
        assert_same_grid(back_grid, grid)

    browser = add_sequence_browser(scene, sequence)
    proxy = browser.GetProxyNode(sequence)
    assert proxy is not None and proxy.IsA("vtkMRMLScalarVolumeNode")
    from_browser = phases_from_sequence(browser)
    assert [label for label, _, _ in from_browser] == labels
    np.testing.assert_array_equal(from_browser[-1][1], phases[-1][1])


def test_sequence_of_non_volumes_and_bad_labels_are_input_errors(scene):
    with pytest.raises(InputError, match="phase labels repeat"):
        sequence_from_phases(scene, breathing_phases(["10%", "10%"]), "dup")
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "tables")
    with pytest.raises(InputError, match="'tables' is empty"):
        phases_from_sequence(sequence)
    sequence.SetDataNodeAtValue(slicer.vtkMRMLTableNode(), "0")
    with pytest.raises(InputError, match="not a scalar volume"):
        phases_from_sequence(sequence)


# --- tables and charts --------------------------------------------------------------------------


def test_table_node_columns_and_rows(scene):
    columns = ["Structure", "Metric", "Value (Gy)", "Limit (Gy)", "Pass"]
    rows = [
        ["SpinalCord", "Dmax", 18.25, 30, True],
        ["Esophagus", "D5cc", 21.0, None, False],
    ]
    node = table_node_from_rows(scene, "Constraints", columns, rows)
    table = node.GetTable()
    assert table.GetNumberOfRows() == 2
    assert table.GetColumnByName("Value (Gy)").IsA("vtkDoubleArray")
    assert table.GetColumnByName("Structure").IsA("vtkStringArray")
    back_columns, back_rows = rows_from_table_node(node)
    assert back_columns == columns
    assert back_rows[0] == ["SpinalCord", "Dmax", 18.25, 30.0, "true"]
    assert back_rows[1][:3] == ["Esophagus", "D5cc", 21.0]
    assert math.isnan(back_rows[1][3]) and back_rows[1][4] == "false"
    with pytest.raises(ValueError, match="row 0 has 2 cells"):
        table_node_from_rows(scene, "bad", ["a", "b", "c"], [[1, 2]])


def test_dvh_chart_has_one_series_and_one_slicerrt_style_table_per_structure(scene):
    dose_axis = np.linspace(0.0, 60.0, 121)
    curves = {
        "PTV": (dose_axis, 100.0 / (1.0 + np.exp((dose_axis - 50.0) / 1.5))),
        "SpinalCord": (dose_axis, 100.0 * np.exp(-dose_axis / 5.0)),
        "Lungs-ITV": (dose_axis, 100.0 * np.exp(-dose_axis / 8.0)),
    }
    dose = volume_node_from_image(scene, (np.zeros(PERMUTED_GRID.shape), PERMUTED_GRID), "RTDOSE", dose=True)
    chart = dvh_plot(
        scene,
        curves,
        chart_name="Plan check DVH",
        colors={"PTV": (1.0, 0.0, 0.0)},
        segment_ids={"PTV": "Segment_1"},
        dose_volume_node=dose,
    )
    assert chart.GetName() == "Plan check DVH"
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    for n, (structure, (dose_gy, volume_pct)) in enumerate(curves.items()):
        series = chart.GetNthPlotSeriesNode(n)
        assert series.GetName() == structure
        assert (series.GetXColumnName(), series.GetYColumnName()) == ("Dose", "Volume")
        table = series.GetTableNode()
        assert table.GetName() == f"{structure}_DvhTable"
        assert table.GetAttribute("DoseVolumeHistogram.DVH") == "1"
        assert table.GetNodeReference("doseVolumeRef") is dose
        columns, rows = rows_from_table_node(table)
        assert columns == ["Dose", "Volume"]
        np.testing.assert_allclose(np.array(rows), np.column_stack([dose_gy, volume_pct]))
    np.testing.assert_allclose(chart.GetNthPlotSeriesNode(0).GetColor(), (1.0, 0.0, 0.0))
    assert (
        chart.GetNthPlotSeriesNode(0).GetTableNode().GetAttribute("DoseVolumeHistogram.SegmentID")
        == "Segment_1"
    )
    # Adding to an existing chart (e.g. SlicerRT's) appends series.
    dvh_plot(scene, {"Heart": (dose_axis, 100.0 * np.exp(-dose_axis / 3.0))}, chart=chart)
    assert chart.GetNumberOfPlotSeriesNodes() == 4
    assert not show_chart(scene, chart)  # no plot view in a bare scene
    view = scene.AddNewNodeByClass("vtkMRMLPlotViewNode")
    assert show_chart(scene, chart)
    assert view.GetPlotChartNodeID() == chart.GetID()
