"""The SBRT Contour QA Slicer module: its logic on real MRML nodes of a headless scene (slicer-core).

The module file is imported with the Slicer stand-ins of ``test_slicer_modules.py``. Expected values:
two spheres of radius r whose centres are d apart overlap in a lens, Dice = 1 - 3d/(4r) + d^3/(16 r^3)
(the lens volume over the sphere volume, in closed form); identical segmentations agree perfectly
(Dice 1, Hausdorff 0); and the module's numbers equal :func:`sbrtstandards.compare.compare_planes`
run directly on contours outlined here from masks computed independently with numpy.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the PyPI slicer-core package (headless MRML)")

from test_slicer_modules import MODULE_DIR, slicer_stubs  # noqa: E402

from sbrtstandards import compare  # noqa: E402
from sbrtstandards.errors import InputError  # noqa: E402
from sbrtstandards.grid import Grid  # noqa: E402
from sbrtstandards.margins import mask_to_planes  # noqa: E402
from sbrtstandards.slicer import (  # noqa: E402
    add_masks_to_segmentation,
    new_scene,
    rows_from_table_node,
    volume_node_from_image,
)

pytestmark = pytest.mark.slicer
NAME = "SBRTContourQA"
GRID = Grid((-16.0, -14.0, -14.0), (1.0, 1.0, 1.0), (33, 29, 29))
RADIUS_MM = 10.0
SHIFT_MM = 4.0


@pytest.fixture(scope="module")
def mod() -> Iterator[types.ModuleType]:
    with slicer_stubs() as loaded:
        yield loaded[NAME]


@pytest.fixture
def scene() -> Any:
    return new_scene()


@pytest.fixture
def logic(mod: types.ModuleType) -> Any:
    return mod.SBRTContourQALogic()


def ball(centre_mm: tuple[float, float, float], radius_mm: float = RADIUS_MM) -> np.ndarray:
    """Voxel centres of GRID within ``radius_mm`` of ``centre_mm`` (LPS), computed here independently."""
    z, y, x = np.meshgrid(*(GRID.axis_coords_mm(a) for a in (2, 1, 0)), indexing="ij")
    cx, cy, cz = centre_mm
    return (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius_mm**2


def _setup(scene: Any, reference: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> tuple[Any, Any, Any]:
    volume = volume_node_from_image(scene, (np.zeros(GRID.shape), GRID), "CT")
    ref = add_masks_to_segmentation(None, scene, reference, GRID, name="Expert")
    tst = add_masks_to_segmentation(None, scene, test, GRID, name="Trainee")
    return ref, tst, volume


def _rows(table: Any) -> list[dict[str, Any]]:
    columns, rows = rows_from_table_node(table)
    return [dict(zip(columns, row)) for row in rows]


def test_module_registers_in_radiotherapy_with_help_and_five_parts(mod: types.ModuleType) -> None:
    parent = types.SimpleNamespace(path=str(MODULE_DIR / f"{NAME}.py"))
    mod.SBRTContourQA(parent)
    assert parent.title == "SBRT Contour QA"
    assert parent.categories == ["Radiotherapy"]
    assert "SBRT4DCT" in parent.dependencies and "Segmentations" in parent.dependencies
    for word in ("Dice", "HD95", "surface Dice", "Score sheet", "RTSTRUCT"):
        assert word in parent.helpText
    source = (MODULE_DIR / f"{NAME}.py").read_text(encoding="utf-8")
    parts = [f"class {NAME}(", f"class {NAME}ParameterNode:", f"class {NAME}Widget(", f"class {NAME}Logic(",
             f"class {NAME}Test("]
    positions = [source.index(p) for p in parts]
    assert positions == sorted(positions)


def test_default_tolerance_is_the_cores(mod: types.ModuleType) -> None:
    """The module repeats the core's default (to declare the parameter node before importing the core)."""
    assert mod.DEFAULT_TOLERANCE_MM == compare.DEFAULT_TOLERANCE_MM
    assert mod.SBRTContourQAParameterNode().toleranceMm == compare.DEFAULT_TOLERANCE_MM


def test_shifted_spheres_give_the_lens_dice_and_the_cores_numbers(logic, scene) -> None:
    """r = 10 mm, centres 4 mm apart: Dice = 1 - 3d/(4r) + d^3/(16 r^3) = 0.704."""
    ref_mask, test_mask = ball((-2.0, 0.0, 0.0)), ball((2.0, 0.0, 0.0))
    ref, tst, volume = _setup(scene, {"GTV": ref_mask}, {"GTV": test_mask})
    table = logic.compareSegmentations(ref, tst, volume, toleranceMm=2.0)
    d, r = SHIFT_MM, RADIUS_MM
    lens = 1.0 - 3.0 * d / (4.0 * r) + d**3 / (16.0 * r**3)
    (name_ref, name_test, how, agreement), = logic.lastAgreements
    assert (name_ref, name_test, how) == ("GTV", "GTV", "name")
    assert agreement.dice == pytest.approx(lens, abs=0.02)
    assert agreement.centroid_shift_mm == pytest.approx(SHIFT_MM, abs=0.1)
    assert agreement.volume_ratio == pytest.approx(1.0, abs=0.02)

    direct = compare.compare_planes(mask_to_planes(ref_mask, GRID), mask_to_planes(test_mask, GRID),
                                    tolerance_mm=2.0)
    (row,) = _rows(table)
    assert row["Reference"] == "GTV" and row["Test"] == "GTV" and row["Matched by"] == "name"
    for column, key in (("Dice", "dice"), ("Jaccard", "jaccard"), ("HD95 [mm]", "hd95_mm"), ("HD [mm]", "hd_mm"),
                        ("MSD [mm]", "msd_mm"), ("Surface Dice", "surface_dice"), ("Volume ratio", "volume_ratio"),
                        ("Centroid shift [mm]", "centroid_shift_mm")):
        assert row[column] == pytest.approx(getattr(direct, key), abs=1e-9), column
    assert row["Tolerance [mm]"] == 2.0


def test_identical_segmentations_agree_perfectly_and_the_table_is_reused(mod, logic, scene) -> None:
    sphere = ball((0.0, 0.0, 0.0))
    ref, tst, volume = _setup(scene, {"GTV": sphere}, {"GTV": sphere})
    p = mod.SBRTContourQAParameterNode()
    p.referenceSegmentation, p.testSegmentation, p.referenceVolume = ref, tst, volume
    first = logic.compareFromParameters(p)
    (row,) = _rows(first)
    assert row["Dice"] == pytest.approx(1.0, abs=1e-9)
    assert row["HD [mm]"] == pytest.approx(0.0, abs=1e-9)
    assert row["Surface Dice"] == pytest.approx(1.0, abs=1e-9)
    assert logic.compareFromParameters(p) is first
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1


def test_structures_are_paired_by_role_and_unpaired_ones_reported(logic, scene) -> None:
    """'Cord' pairs with 'SpinalCord' (same TG-263 role); a structure without partner gets no row."""
    cord = ball((0.0, 0.0, 0.0), 4.0)
    ref, tst, volume = _setup(scene, {"SpinalCord": cord, "Heart": ball((6.0, 0.0, 0.0), 5.0)}, {"Cord": cord})
    table = logic.compareSegmentations(ref, tst, volume)
    rows = _rows(table)
    assert [(r["Reference"], r["Test"]) for r in rows] == [("SpinalCord", "Cord")]
    assert rows[0]["Dice"] == pytest.approx(1.0, abs=1e-9)
    assert logic.lastUnmatchedReference == ["Heart"] and logic.lastUnmatchedTest == []
    assert "Heart" in logic.summary()


def test_bad_inputs_are_named(logic, scene) -> None:
    sphere = ball((0.0, 0.0, 0.0))
    ref, tst, volume = _setup(scene, {"GTV": sphere}, {"GTV": np.zeros(GRID.shape, bool)})
    with pytest.raises(InputError, match="'Expert' is both the reference and the test"):
        logic.compareSegmentations(ref, ref, volume)
    with pytest.raises(ValueError, match="reference volume"):
        logic.compareSegmentations(ref, tst, None)
    # An empty test structure: the distance metrics are None with the reason, the row says why.
    (row,) = _rows(logic.compareSegmentations(ref, tst, volume))
    assert row["Dice"] == 0.0 and row["Test volume [cc]"] == 0.0
    assert np.isnan(row["HD [mm]"]) and "hd_mm: one structure has no surface" in row["Notes"]
    with pytest.raises(InputError, match="no reference RTSTRUCT"):
        logic.exportScoreSheet("", "trainee.dcm", "sheet.html")
