"""The three Slicer modules (SBRT 4D-CT, SBRT Targets & OARs, SBRT Plan Check) in a Slicer-like environment.

The PyPI ``slicer-core`` package gives MRML, VTK and ``slicer.util``, not the application's Python
layer that module files import: ``qt``, ``ctk``, ``slicer.ScriptedLoadableModule``,
``slicer.parameterNodeWrapper`` and ``slicer.i18n``. :func:`slicer_stubs` inserts minimal stand-ins
for those into ``sys.modules`` -- only the ones that are missing, and only while a test runs -- so the
module files import as they do in Slicer. The stand-in ``parameterNodeWrapper`` checks each field the
way Slicer's wrapper needs it (a supported type, a default inside its ``WithinRange`` / in its
``Choice``) and gives the class plain attributes with those defaults, so a parameter node can be
filled and handed to the logic. Widgets need Qt and are not exercised (``test_ui_files.py`` checks
them against the .ui files statically); the logic runs on real MRML nodes of a headless scene.

Expected values are analytic (voxel counts of spheres computed here with numpy, known shifts, known
margins) or come from an independent path (the core called directly on the same contours).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import math
import subprocess
import sys
import types
import typing
import unittest
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "SBRTStandards"
MODULES = ("SBRT4DCT", "SBRTTargetsOARs", "SBRTPlanCheck", "SBRTProgrammeQA", "SBRTContourQA")

# --------------------------------------------------------------------------------------------
# The Slicer-like environment
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WithinRange:
    minimum: float
    maximum: float


@dataclasses.dataclass(frozen=True)
class Choice:
    choices: tuple

    def __init__(self, choices: Any) -> None:
        object.__setattr__(self, "choices", tuple(choices))


def _is_node_type(datatype: Any) -> bool:
    """A MRML node class, or Optional/Union of node classes (what qMRMLNodeComboBox binds to)."""
    import slicer

    if isinstance(datatype, type):
        return issubclass(datatype, slicer.vtkMRMLNode)
    if typing.get_origin(datatype) is typing.Union:
        args = typing.get_args(datatype)
        return all(a is type(None) or (isinstance(a, type) and issubclass(a, slicer.vtkMRMLNode)) for a in args)
    return False


def parameter_node_wrapper(cls: type) -> type:
    """Stand-in for ``slicer.parameterNodeWrapper``: validates the fields, then gives plain attributes."""
    hints = typing.get_type_hints(cls, include_extras=True)  # resolves the annotations as Slicer does
    fields: dict[str, tuple[Any, tuple[Any, ...], Any]] = {}
    for name, hint in hints.items():
        base, extras = hint, ()
        if typing.get_origin(hint) is typing.Annotated:
            base, *rest = typing.get_args(hint)
            extras = tuple(rest)
        default = getattr(cls, name, None)
        if _is_node_type(base):
            assert default is None, f"{cls.__name__}.{name}: node fields default to None"
        elif base in (bool, int, float, str):
            assert isinstance(default, base) and (base is not int or not isinstance(default, bool)), (
                f"{cls.__name__}.{name}: default {default!r} is not a {base.__name__}"
            )
        else:
            raise AssertionError(f"{cls.__name__}.{name}: type {base!r} has no GUI connector in Slicer")
        for extra in extras:
            if isinstance(extra, WithinRange):
                assert extra.minimum <= default <= extra.maximum, f"{cls.__name__}.{name}: default out of range"
            elif isinstance(extra, Choice):
                assert default in extra.choices, f"{cls.__name__}.{name}: default not among the choices"
        fields[name] = (base, extras, default)

    def __init__(self: Any, parameterNode: Any = None) -> None:  # noqa: N807 - mimics the wrapper
        self.parameterNode = parameterNode
        for field_name, (_base, _extras, field_default) in fields.items():
            setattr(self, field_name, field_default)

    cls.__init__ = __init__
    cls.allParameters = fields
    return cls


class _ScriptedLoadableModule:
    def __init__(self, parent: Any) -> None:
        self.parent = parent
        self.moduleName = type(self).__name__


class _ScriptedLoadableModuleWidget:
    def __init__(self, parent: Any = None) -> None:
        self.parent = parent


class _ScriptedLoadableModuleLogic:
    def __init__(self, parent: Any = None) -> None:
        self.moduleName = type(self).__name__[: -len("Logic")]

    def getParameterNode(self) -> Any:
        raise NotImplementedError("no application scene in tests: pass the parameter node explicitly")


class _ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message: str, msec: int = 0) -> None:  # noqa: N802 - Slicer's name
        pass


def stub_modules() -> dict[str, types.ModuleType]:
    """The stand-in modules (by module name)."""
    qt = types.ModuleType("qt")
    ctk = types.ModuleType("ctk")
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    slm.ScriptedLoadableModule = _ScriptedLoadableModule
    slm.ScriptedLoadableModuleWidget = _ScriptedLoadableModuleWidget
    slm.ScriptedLoadableModuleLogic = _ScriptedLoadableModuleLogic
    slm.ScriptedLoadableModuleTest = _ScriptedLoadableModuleTest
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = parameter_node_wrapper
    pnw.WithinRange = WithinRange
    pnw.Choice = Choice
    return {"qt": qt, "ctk": ctk, "slicer.ScriptedLoadableModule": slm, "slicer.i18n": i18n,
            "slicer.parameterNodeWrapper": pnw}


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


@contextlib.contextmanager
def slicer_stubs() -> Iterator[dict[str, types.ModuleType]]:
    """Import the three module files with stand-ins for the missing Slicer modules; undo on exit."""
    import slicer

    inserted: list[str] = []
    saved_attrs = {}
    for name, module in stub_modules().items():
        if _missing(name):
            sys.modules[name] = module
            inserted.append(name)
            if name.startswith("slicer."):
                attr = name.split(".", 1)[1]
                saved_attrs[attr] = getattr(slicer, attr, None)
                setattr(slicer, attr, module)
    sys.path.insert(0, str(MODULE_DIR))
    loaded = {}
    try:
        for name in MODULES:
            sys.modules.pop(name, None)
            loaded[name] = importlib.import_module(name)
        yield loaded
    finally:
        sys.path.remove(str(MODULE_DIR))
        for name in MODULES:
            sys.modules.pop(name, None)
        for name in inserted:
            sys.modules.pop(name, None)
        for attr, value in saved_attrs.items():
            if value is None:
                delattr(slicer, attr)
            else:
                setattr(slicer, attr, value)


slicer = pytest.importorskip("slicer", reason="needs the PyPI slicer-core package (headless MRML)")

import vtk  # noqa: E402 - ships with slicer-core

from sbrtstandards.errors import InputError  # noqa: E402
from sbrtstandards.grid import Grid  # noqa: E402
from sbrtstandards.slicer import (  # noqa: E402
    DOSE_VOLUME_ATTRIBUTE,
    ROLE_TAG,
    add_masks_to_segmentation,
    masks_from_segmentation,
    new_scene,
    rows_from_table_node,
    segment_ids_by_name,
    segment_tag,
    sequence_from_phases,
    volume_node_from_image,
)

pytestmark = pytest.mark.slicer


@pytest.fixture(scope="module")
def mods() -> Iterator[dict[str, types.ModuleType]]:
    with slicer_stubs() as loaded:
        yield loaded


@pytest.fixture
def scene() -> Any:
    return new_scene()


def ball(grid: Grid, centre_mm: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """Voxel centres of ``grid`` within ``radius_mm`` of ``centre_mm`` (LPS), computed here independently."""
    z, y, x = np.meshgrid(*(grid.axis_coords_mm(a) for a in (2, 1, 0)), indexing="ij")
    cx, cy, cz = centre_mm
    return (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius_mm**2


def segment_id(seg: Any, name: str) -> str:
    return segment_ids_by_name(seg)[name]


# --------------------------------------------------------------------------------------------
# Module files: import, registration, parameter nodes, shared helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "title", "words"),
    [
        ("SBRT4DCT", "SBRT 4D-CT", ("MIP", "AVG", "MinIP", "ITV", "motion")),
        ("SBRTTargetsOARs", "SBRT Targets & OARs", ("margin", "PRV", "chest wall", "ultra-central")),
        ("SBRTPlanCheck", "SBRT Plan Check", ("constraint", "SlicerRT", "DVH", "pass", "minor", "fail")),
    ],
)
def test_module_registers_with_title_category_help_and_five_parts(mods, name, title, words) -> None:
    module = mods[name]
    parent = types.SimpleNamespace(path=str(MODULE_DIR / f"{name}.py"))
    getattr(module, name)(parent)
    assert parent.title == title
    assert parent.categories == ["Radiotherapy"]
    assert "Segmentations" in parent.dependencies or "Sequences" in parent.dependencies
    for word in words:
        assert word in parent.helpText, f"{name} help does not mention {word!r}"
    assert "T/CNHAW-B-0020-2025" in parent.acknowledgementText
    assert all(parent.contributors)
    # The five parts, in Slicer's order.
    order = [getattr(module, f"{name}{suffix}") for suffix in ("", "ParameterNode", "Widget", "Logic", "Test")]
    source = (MODULE_DIR / f"{name}.py").read_text(encoding="utf-8")
    positions = [source.index(f"\nclass {cls.__name__}(") if cls.__name__ != f"{name}ParameterNode"
                 else source.index(f"\nclass {cls.__name__}:") for cls in order]
    assert positions == sorted(positions), f"{name}: module, parameter node, widget, logic, test out of order"
    assert issubclass(getattr(module, f"{name}Test"), unittest.TestCase)


@pytest.mark.parametrize("name", MODULES)
def test_parameter_node_fields_are_slicer_types_with_valid_defaults(mods, name) -> None:
    node_class = getattr(mods[name], f"{name}ParameterNode")
    fields = node_class.allParameters  # checked by the stand-in wrapper when the module was imported
    assert fields, f"{name}: the parameter node has no fields"
    instance = node_class()
    for field_name, (_base, _extras, default) in fields.items():
        assert getattr(instance, field_name) == default


def test_ensure_requirements_installs_only_what_is_missing(mods, tmp_path, monkeypatch) -> None:
    m = mods["SBRT4DCT"]
    calls: list[list[str]] = []

    def refuse(specs: list[str]) -> None:
        calls.append(specs)
        raise AssertionError("nothing should be installed")

    assert m.missingRequirements() == []  # the test environment has every package of the core
    assert m.ensureRequirements(install=refuse) == []
    assert calls == []

    monkeypatch.syspath_prepend(str(tmp_path))
    wanted = [("numpy", "numpy"), ("sbrt_fake_extra_pkg", "sbrt-fake-extra-pkg>=1")]

    def fake_pip(specs: list[str]) -> None:
        calls.append(list(specs))
        (tmp_path / "sbrt_fake_extra_pkg.py").write_text("VALUE = 1\n", encoding="utf-8")

    assert m.ensureRequirements(wanted, install=fake_pip) == ["sbrt-fake-extra-pkg>=1"]
    assert calls == [["sbrt-fake-extra-pkg>=1"]]
    with pytest.raises(ImportError, match="sbrt-other-missing"):
        m.ensureRequirements([("sbrt_other_missing", "sbrt-other-missing")], install=lambda specs: None)


def test_reload_order_puts_every_module_after_its_sbrtstandards_imports(mods) -> None:
    import sbrtstandards.check  # noqa: F401 - load a deep part of the core
    import sbrtstandards.oars.dicom_io  # noqa: F401

    m = mods["SBRT4DCT"]
    order = m.sbrtModulesInReloadOrder()
    assert "sbrtstandards.errors" in order and "sbrtstandards.check" in order
    position = {name: n for n, name in enumerate(order)}
    for name in order:
        for dep in m._sbrtImports(sys.modules[name], name):
            if dep in position and dep != name:
                assert position[dep] < position[name], f"{dep} must be reloaded before {name}"


def test_reload_leaves_no_stale_objects_in_any_module() -> None:
    """After reloadSbrtStandards, every imported core object is the reloaded one (run apart: it reloads)."""
    code = (
        "import sys, types\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_slicer_modules as t\n"
        "with t.slicer_stubs() as mods:\n"
        "    import sbrtstandards.check, sbrtstandards.oars.dicom_io, sbrtstandards.slicer\n"
        "    names = mods['SBRT4DCT'].reloadSbrtStandards()\n"
        "    stale = []\n"
        "    for name in names:\n"
        "        for attr, value in vars(sys.modules[name]).items():\n"
        "            home = getattr(value, '__module__', None)\n"
        "            if isinstance(value, (type, types.FunctionType)) and home in names and home != name:\n"
        "                if getattr(sys.modules[home], value.__name__, None) is not value:\n"
        "                    stale.append(f'{name}.{attr}')\n"
        "    print(len(names), stale)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    count, stale = result.stdout.strip().split(" ", 1)
    assert int(count) > 20
    assert stale == "[]"


def test_lps_to_ras_flips_the_first_two_axes(mods) -> None:
    assert mods["SBRT4DCT"].lpsToRas([10.0, -20.0, 30.0]) == [-10.0, 20.0, 30.0]


# --------------------------------------------------------------------------------------------
# SBRT 4D-CT
# --------------------------------------------------------------------------------------------

# 1.5 x 1.5 x 2.5 mm voxels; the tumour moves by whole slices along S-I and 2 voxels along A-P.
FOURD_GRID = Grid((-30.0, -30.0, -40.0), (1.5, 1.5, 2.5), (41, 41, 33), frame_of_reference_uid="1.2.826.0.1.4")
PHASE_LABELS = ("0%", "25%", "50%", "75%")
SHIFTS_MM = ((0.0, 0.0, 0.0), (0.0, 1.5, 5.0), (0.0, 3.0, 10.0), (0.0, 1.5, 5.0))  # LPS (x, y, z)
TUMOUR_RADIUS_MM = 8.0


def phase_gtvs() -> list[np.ndarray]:
    return [ball(FOURD_GRID, (0.0 + sx, -6.0 + sy, -12.5 + sz), TUMOUR_RADIUS_MM) for sx, sy, sz in SHIFTS_MM]


def phase_cts(gtvs: list[np.ndarray]) -> list[np.ndarray]:
    """Lung at -800 HU with a 40 HU tumour, plus seeded noise so every voxel differs between phases."""
    rng = np.random.default_rng(7)
    out = []
    for gtv in gtvs:
        hu = np.full(FOURD_GRID.shape, -800, dtype=np.int16) + rng.integers(-30, 31, FOURD_GRID.shape).astype(np.int16)
        hu[gtv] = 40
        out.append(hu)
    return out


def test_projections_from_a_sequence_equal_voxelwise_max_mean_min(mods, scene) -> None:
    logic = mods["SBRT4DCT"].SBRT4DCTLogic()
    cts = phase_cts(phase_gtvs())
    sequence = sequence_from_phases(scene, list(zip(PHASE_LABELS, cts, [FOURD_GRID] * 4)), "4D-CT")
    volumes = logic.computeProjections(sequence)
    stack = np.stack(cts).astype(np.float64)
    expected = {"MIP": stack.max(axis=0), "AVG": np.rint(stack.mean(axis=0)), "MinIP": stack.min(axis=0)}
    from sbrtstandards.slicer import image_from_volume_node

    for key, node in volumes.items():
        array, grid = image_from_volume_node(node)
        assert np.array_equal(array.astype(np.float64), expected[key]), key
        assert grid.same_geometry(FOURD_GRID)
        assert node.GetName() == f"4D-CT {key}"
    assert logic.phaseLabels(sequence) == list(PHASE_LABELS)
    # Run again into the same nodes: overwritten, not duplicated.
    again = logic.computeProjections(sequence, volumes)
    assert {k: v.GetID() for k, v in again.items()} == {k: v.GetID() for k, v in volumes.items()}
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 3


def _check_itv_outputs(mods: Any, outputs: Any, gtvs: list[np.ndarray]) -> None:
    union = np.logical_or.reduce(gtvs)
    itv = masks_from_segmentation(outputs.segmentation, FOURD_GRID)
    assert np.array_equal(itv["ITV"], union)
    assert segment_tag(outputs.segmentation, segment_id(outputs.segmentation, "ITV"), ROLE_TAG) == "ITV"
    columns, rows = rows_from_table_node(outputs.table)
    assert columns == list(mods["SBRT4DCT"].PHASE_TABLE_COLUMNS)
    assert [r[0] for r in rows] == [*PHASE_LABELS, "Motion (peak-to-peak)"]
    voxel_cc = FOURD_GRID.voxel_volume_cc
    for row, gtv, (sx, sy, sz) in zip(rows, gtvs, SHIFTS_MM):
        assert row[1] == pytest.approx(gtv.sum() * voxel_cc)
        # Centroid in RAS: the ball's voxel centroid is its centre (symmetric lattice), flipped in x and y.
        assert row[2:5] == pytest.approx([-(0.0 + sx), -(-6.0 + sy), -12.5 + sz], abs=1e-9)
        assert row[5] == pytest.approx(100.0)
    assert rows[-1][2:5] == pytest.approx([0.0, 3.0, 10.0], abs=1e-9)  # peak-to-peak L-R, A-P, S-I
    assert float(outputs.table.GetAttribute("SBRTStandards.MotionVector_mm")) == pytest.approx(math.hypot(3, 10),
                                                                                               abs=1e-3)


def test_itv_from_one_segmentation_with_a_segment_per_phase(mods, scene) -> None:
    logic = mods["SBRT4DCT"].SBRT4DCTLogic()
    gtvs = phase_gtvs()
    avg = volume_node_from_image(scene, (phase_cts(gtvs)[0], FOURD_GRID), "AVG")
    names = ["GTV 0%", "gtv_25", "GTV-phase 50", "GTV 75 %"]
    seg = add_masks_to_segmentation(None, scene, dict(zip(names, gtvs)), FOURD_GRID, name="phase GTVs")
    before = masks_from_segmentation(seg, FOURD_GRID)
    outputs = logic.buildItv(list(PHASE_LABELS), seg, "GTV", avg)
    _check_itv_outputs(mods, outputs, gtvs)
    assert outputs.segmentation is not seg  # a new segmentation on the AVG
    after = masks_from_segmentation(seg, FOURD_GRID)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)


def test_itv_from_a_sequence_of_segmentations_and_the_whole_run_from_the_parameter_node(mods, scene) -> None:
    m = mods["SBRT4DCT"]
    logic = m.SBRT4DCTLogic()
    gtvs = phase_gtvs()
    cts = phase_cts(gtvs)
    sequence = sequence_from_phases(scene, list(zip(PHASE_LABELS, cts, [FOURD_GRID] * 4)), "4D-CT")
    seg_sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "GTV sequence")
    seg_sequence.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
    seg_sequence.SetIndexUnit("%")
    for label, gtv in zip(PHASE_LABELS, gtvs):
        data = add_masks_to_segmentation(None, scene, {"GTV": gtv}, FOURD_GRID, name=f"GTV {label}")
        seg_sequence.SetDataNodeAtValue(data, label.rstrip("%"))
        scene.RemoveNode(data)  # the sequence keeps its own copy
    p = m.SBRT4DCTParameterNode()
    p.phaseSequence, p.gtvSource, p.thresholdAssist, p.assistMode = sequence, seg_sequence, True, "mip"
    progress: list[float] = []
    result = logic.process(p, progress=lambda f, msg: progress.append(f))
    assert p.avgVolume is result.volumes["AVG"] and p.itvSegmentation is result.segmentation
    assert progress == sorted(progress) and progress[-1] == 1.0
    outputs = types.SimpleNamespace(segmentation=p.itvSegmentation, table=p.phaseTable)
    _check_itv_outputs(mods, outputs, gtvs)
    # Threshold assist on the MIP: the tumour (40 HU) is the only tissue above -400 HU near the GTVs.
    assist = masks_from_segmentation(p.itvSegmentation, FOURD_GRID)["ITV_assist"]
    assert np.array_equal(assist, np.logical_or.reduce(gtvs))
    assert "S-I 10.0 mm" in result.motionText()


def test_missing_phase_gtv_is_reported_and_the_itv_built_from_the_others(mods, scene) -> None:
    logic = mods["SBRT4DCT"].SBRT4DCTLogic()
    gtvs = phase_gtvs()
    avg = volume_node_from_image(scene, (phase_cts(gtvs)[0], FOURD_GRID), "AVG")
    seg = add_masks_to_segmentation(None, scene, {"GTV 0%": gtvs[0], "GTV 50%": gtvs[2]}, FOURD_GRID)
    outputs = logic.buildItv(list(PHASE_LABELS), seg, "GTV", avg)
    assert np.array_equal(masks_from_segmentation(outputs.segmentation, FOURD_GRID)["ITV"], gtvs[0] | gtvs[2])
    assert any("25%" in w for w in outputs.warnings) and any("75%" in w for w in outputs.warnings)
    with pytest.raises(InputError, match="no segment named 'CTV'"):
        logic.buildItv(list(PHASE_LABELS), seg, "CTV", avg)


def test_phase_segment_names_and_volume_names(mods) -> None:
    m = mods["SBRT4DCT"]
    names = ["GTV 0%", "GTV_10", "gtv phase 20", "GTV-30 %", "GTVp 40%", "GTV", "ITV"]
    got = m.matchPhaseSegments(names, "GTV", ["0%", "10%", "20%", "30%", "40%"])
    assert got == {"0%": "GTV 0%", "10%": "GTV_10", "20%": "gtv phase 20", "30%": "GTV-30 %", "40%": None}
    with pytest.raises(InputError, match="both the GTV of phase 10"):
        m.matchPhaseSegments(["GTV 10%", "GTV_10"], "GTV", ["10%"])
    assert m.phaseLabelsFromNames(["4D-CT 0%", "4D-CT 50 %", "CT 12.5%"]) == ["0%", "50%", "12.5%"]
    assert m.phaseLabelsFromNames(["CT a", "CT b"]) == ["phase 1", "phase 2"]
    assert m.phaseLabelsFromNames(["T 10%", "U 10%"]) == ["phase 1", "phase 2"]  # ambiguous: numbered


def test_phase_sequence_from_volume_nodes(mods, scene) -> None:
    logic = mods["SBRT4DCT"].SBRT4DCTLogic()
    cts = phase_cts(phase_gtvs())
    nodes = [volume_node_from_image(scene, (ct, FOURD_GRID), f"Lung 4D {lab}") for lab, ct in zip(PHASE_LABELS, cts)]
    sequence = logic.createPhaseSequence(nodes[::-1])  # any order: the numeric index sorts them
    assert logic.phaseLabels(sequence) == list(PHASE_LABELS)
    from sbrtstandards.slicer import phases_from_sequence

    for (label, array, grid), ct in zip(phases_from_sequence(sequence), cts):
        assert np.array_equal(array, ct) and grid.same_geometry(FOURD_GRID), label
    with pytest.raises(InputError):
        logic.createPhaseSequence(nodes[:1])


# --------------------------------------------------------------------------------------------
# SBRT Targets & OARs
# --------------------------------------------------------------------------------------------

TARGET_GRID = Grid((-40.0, -40.0, -30.0), (1.0, 1.0, 2.0), (81, 81, 31), frame_of_reference_uid="1.2.826.0.1.5")


def targets_case(scene: Any) -> tuple[Any, Any]:
    ct = volume_node_from_image(scene, (np.zeros(TARGET_GRID.shape, dtype=np.int16), TARGET_GRID), "CT")
    itv = ball(TARGET_GRID, (0.0, 0.0, 0.0), 10.0)
    box = np.zeros(TARGET_GRID.shape, dtype=bool)
    box[10:16, 30:41, 35:46] = True  # k (z), j (y), i (x)
    cord = np.zeros(TARGET_GRID.shape, dtype=bool)
    cord[:, 60:64, 38:42] = True
    seg = add_masks_to_segmentation(None, scene, {"ITV": itv, "Box": box, "SpinalCord": cord}, TARGET_GRID)
    return ct, seg


def test_ptv_from_itv_isotropic_margin_matches_the_analytic_volume(mods, scene) -> None:
    m = mods["SBRTTargetsOARs"]
    logic = m.SBRTTargetsOARsLogic()
    ct, seg = targets_case(scene)
    before = masks_from_segmentation(seg, TARGET_GRID)
    p = m.SBRTTargetsOARsParameterNode()
    p.referenceVolume, p.segmentation, p.marginSourceId = ct, seg, segment_id(seg, "ITV")
    assert p.marginOutputName == "PTV" and p.isotropicMm == 5.0 and not p.perDirection
    ptv_id = logic.applyMargin(p)
    ptv = masks_from_segmentation(seg, TARGET_GRID, [ptv_id])["PTV"]
    analytic_cc = 4.0 / 3.0 * math.pi * 15.0**3 / 1000.0
    assert ptv.sum() * TARGET_GRID.voxel_volume_cc == pytest.approx(analytic_cc, rel=0.02)
    assert segment_tag(seg, ptv_id, ROLE_TAG) == "PTV"
    assert "5 mm" in segment_tag(seg, ptv_id, m.RULE_TAG)
    assert logic.describeSegment(seg, ptv_id) == "PTV: ITV grown by 5 mm (exact Euclidean margin)"
    after = masks_from_segmentation(seg, TARGET_GRID)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # inputs untouched
    # Again: the PTV is replaced in place, not duplicated.
    assert logic.applyMargin(p) == ptv_id
    assert list(segment_ids_by_name(seg)).count("PTV") == 1


def _extent(mask: np.ndarray) -> list[tuple[int, int]]:
    return [(int(np.flatnonzero(mask.any(axis=a))[0]), int(np.flatnonzero(mask.any(axis=a))[-1]))
            for a in ((1, 2), (0, 2), (0, 1))]


def test_per_direction_margin_moves_each_face_by_its_own_margin(mods, scene) -> None:
    m = mods["SBRTTargetsOARs"]
    logic = m.SBRTTargetsOARsLogic()
    ct, seg = targets_case(scene)
    p = m.SBRTTargetsOARsParameterNode()
    p.referenceVolume, p.segmentation, p.marginSourceId = ct, seg, segment_id(seg, "Box")
    p.perDirection, p.marginOutputName = True, "Box_grown"
    p.marginRMm, p.marginLMm, p.marginAMm, p.marginPMm, p.marginSMm, p.marginIMm = 2.0, 0.0, 0.0, 4.0, 6.0, 0.0
    assert str(logic.marginFromParameters(p)) == "R 2, L 0, A 0, P 4, S 6, I 0 mm"
    grown = masks_from_segmentation(seg, TARGET_GRID, [logic.applyMargin(p)])["Box_grown"]
    # LPS: R = -x (i), P = +y (j), S = +z (k, 2 mm slices). Box: k 10..15, j 30..40, i 35..45.
    assert _extent(grown) == [(10, 15 + 3), (30, 40 + 4), (35 - 2, 45)]


@pytest.mark.filterwarnings("ignore:SpinalCord grown extends beyond the output grid")
def test_prv_ring_and_shrink(mods, scene) -> None:
    m = mods["SBRTTargetsOARs"]
    logic = m.SBRTTargetsOARsLogic()
    ct, seg = targets_case(scene)
    cord_id, itv_id = segment_id(seg, "SpinalCord"), segment_id(seg, "ITV")
    prv_id = logic.makePrv(seg, cord_id, ct, 3)
    masks = masks_from_segmentation(seg, TARGET_GRID)
    assert seg.GetSegmentation().GetSegment(prv_id).GetName() == "SpinalCord_PRV03"
    assert np.all(masks["SpinalCord_PRV03"] >= masks["SpinalCord"])
    assert _extent(masks["SpinalCord_PRV03"])[2] == (38 - 3, 41 + 3)  # 1 mm columns: 3 voxels each side
    ring_id = logic.makeRing(seg, itv_id, ct, 0.0, 5.0)
    ring = masks_from_segmentation(seg, TARGET_GRID, [ring_id])[seg.GetSegmentation().GetSegment(ring_id).GetName()]
    assert seg.GetSegmentation().GetSegment(ring_id).GetName() == "Ring_ITV_5mm"
    assert not np.any(ring & masks["ITV"])
    shell_cc = 4.0 / 3.0 * math.pi * (15.0**3 - 10.0**3) / 1000.0
    assert ring.sum() * TARGET_GRID.voxel_volume_cc == pytest.approx(shell_cc, rel=0.03)
    shrunk_id = logic.growSegment(seg, itv_id, ct, 3.0, "ITV_minus3", shrink=True)
    shrunk = masks_from_segmentation(seg, TARGET_GRID, [shrunk_id])["ITV_minus3"]
    assert shrunk.sum() * TARGET_GRID.voxel_volume_cc == pytest.approx(4.0 / 3.0 * math.pi * 7.0**3 / 1000, rel=0.05)
    with pytest.raises(InputError, match="needs a name"):
        logic.growSegment(seg, itv_id, ct, 3.0, " ")
    with pytest.raises(InputError, match="no segment with ID"):
        logic.growSegment(seg, "nonexistent", ct, 3.0, "X")


def load_margin_effect() -> types.ModuleType:
    """The SBRT Margin effect file, with a stand-in for Slicer's SegmentEditorEffects base classes."""
    base = types.ModuleType("SegmentEditorEffects")
    base.AbstractScriptedSegmentEditorEffect = type("AbstractScriptedSegmentEditorEffect", (), {})
    inserted = _missing("SegmentEditorEffects")
    if inserted:
        sys.modules["SegmentEditorEffects"] = base
    try:
        path = MODULE_DIR / "SegmentEditorSBRTMarginLib" / "SegmentEditorEffect.py"
        spec = importlib.util.spec_from_file_location("SBRTMarginEffectUnderTest", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if inserted:
            del sys.modules["SegmentEditorEffects"]
    return module


def test_margin_effect_fills_the_modifier_labelmap_with_exact_per_direction_margins(mods, scene) -> None:
    from sbrtstandards.margins import Margin
    from sbrtstandards.slicer.geometry import vtk_matrix

    effect = load_margin_effect()
    box = np.zeros(TARGET_GRID.shape, dtype=bool)
    box[10:16, 30:41, 35:46] = True
    seg = add_masks_to_segmentation(None, scene, {"Box": box}, TARGET_GRID)
    selected = seg.GetBinaryLabelmapInternalRepresentation(segment_id(seg, "Box"))  # cropped to the box
    assert selected.GetExtent() == (35, 45, 30, 40, 10, 15)
    modifier = slicer.vtkOrientedImageData()  # the editor's modifier: the whole reference geometry
    ni, nj, nk = TARGET_GRID.size
    modifier.SetExtent(0, ni - 1, 0, nj - 1, 0, nk - 1)
    from sbrtstandards.slicer import ijk_to_ras_from_grid

    modifier.SetImageToWorldMatrix(vtk_matrix(ijk_to_ras_from_grid(TARGET_GRID)))
    modifier.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    modifier.GetPointData().GetScalars().Fill(0)
    assert effect.orientedImageGrid(modifier).same_geometry(TARGET_GRID)
    effect.marginLabelmap(selected, modifier, Margin(2, 0, 0, 4, 6, 0), name="Box")
    grown = effect.orientedImageArray(modifier) > 0
    assert _extent(grown) == [(10, 15 + 3), (30, 40 + 4), (35 - 2, 45)]  # as the Targets module's margin
    effect.marginLabelmap(selected, modifier, Margin.isotropic(2.0), shrink=True, name="Box")
    assert _extent(effect.orientedImageArray(modifier) > 0) == [(11, 14), (32, 38), (37, 43)]


def test_structure_map_text(mods) -> None:
    m = mods["SBRTTargetsOARs"]
    assert m.SBRTTargetsOARsLogic.parseStructureMap(" Cord=spinal_cord; VB=vertebra ;\n") == [
        "Cord=spinal_cord", "VB=vertebra"]


# --------------------------------------------------------------------------------------------
# SBRT Plan Check
# --------------------------------------------------------------------------------------------

CHECK_GRID = Grid((-36.0, -36.0, -32.0), (2.0, 2.0, 2.0), (37, 37, 33), frame_of_reference_uid="1.2.826.0.1.6")
PTV_RADIUS_MM = 10.0


def plan_case(scene: Any) -> tuple[Any, Any, np.ndarray]:
    """A 10 mm PTV, a cord, a body; dose 60 Gy within 11 mm of the centre falling 3 Gy/mm outside."""
    z, y, x = np.meshgrid(*(CHECK_GRID.axis_coords_mm(a) for a in (2, 1, 0)), indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    dose = np.clip(60.0 - 3.0 * np.maximum(r - 11.0, 0.0), 0.0, None)
    ptv = ball(CHECK_GRID, (0.0, 0.0, 0.0), PTV_RADIUS_MM)
    cord = np.zeros(CHECK_GRID.shape, dtype=bool)
    cord[:, 27:30, 17:20] = True
    body = ball(CHECK_GRID, (0.0, 0.0, 0.0), 34.0)
    dose_node = volume_node_from_image(scene, (dose, CHECK_GRID), "RD", dose=True)
    seg = add_masks_to_segmentation(None, scene, {"PTV": ptv, "SpinalCord": cord, "Body": body, "Couch": ~body},
                                    CHECK_GRID, name="RS")
    return dose_node, seg, dose


def test_plan_check_fills_the_tables_and_the_chart_like_the_core(mods, scene) -> None:
    m = mods["SBRTPlanCheck"]
    logic = m.SBRTPlanCheckLogic()
    dose_node, seg, dose = plan_case(scene)
    p = m.SBRTPlanCheckParameterNode()
    p.doseVolume, p.segmentation, p.protocolId, p.rxGy, p.fractions = dose_node, seg, "tg101", 54.0, 3
    outputs = logic.evaluateFromParameters(p)

    # Independent path: the core on the same contours.
    from sbrtstandards.check import check_plan
    from sbrtstandards.dicom.rtdose import DoseGrid
    from sbrtstandards.margins import mask_to_planes

    masks = masks_from_segmentation(seg, CHECK_GRID)
    planes = {n: (mask_to_planes(masks[n], CHECK_GRID) if n != "Couch" else {}) for n in masks}
    direct = check_plan(planes, DoseGrid.from_array(dose, CHECK_GRID), protocol_id="tg101", rx_gy=54.0,
                        fractions=3, slice_spacing_mm=2.0).to_json()
    assert outputs.json["constraints"] == direct["constraints"]
    assert outputs.json["plan_metrics"] == direct["plan_metrics"]
    assert outputs.json["unmatched"] == ["Couch"]
    ptv = next(s for s in outputs.json["structures"] if s["name"] == "PTV")
    assert ptv["volume_cc"] == pytest.approx(4.0 / 3.0 * math.pi * PTV_RADIUS_MM**3 / 1000.0, rel=0.03)
    assert ptv["max_gy"] == pytest.approx(60.0, abs=1e-6)

    columns, rows = rows_from_table_node(p.constraintsTable)
    assert columns == list(m.CONSTRAINT_COLUMNS)
    assert len(rows) == len(direct["constraints"]) > 0
    for row, c in zip(rows, direct["constraints"]):
        assert row[0] == c["status"] and row[1] == c["structure"] and row[10] == c["id"]
        if c.get("location_mm"):
            x, y, z = c["location_mm"]
            assert row[11:14] == pytest.approx([-x, -y, z])  # LPS -> RAS
    metric_columns, metric_rows = rows_from_table_node(p.metricsTable)
    assert metric_columns == ["Metric", "Value", "Note"]
    assert [r[0] for r in metric_rows] == list(direct["plan_metrics"])
    series = {p.dvhChart.GetNthPlotSeriesNode(n).GetName() for n in range(p.dvhChart.GetNumberOfPlotSeriesNodes())}
    assert series == {name for name, d in outputs.result.dvhs.items() if d.volume_inside_cc > 0}

    # Evaluate again into the same nodes: the chart's series are replaced, not accumulated.
    logic.evaluateFromParameters(p)
    assert p.dvhChart.GetNumberOfPlotSeriesNodes() == len(series)
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == 1


def test_plan_check_needs_a_dose_volume_by_attribute_not_by_name(mods, scene) -> None:
    logic = mods["SBRTPlanCheck"].SBRTPlanCheckLogic()
    dose_node, seg, dose = plan_case(scene)
    named_dose = volume_node_from_image(scene, (dose, CHECK_GRID), "Dose")  # no SlicerRT attribute
    assert logic.doseVolumes(scene) == [dose_node]
    with pytest.raises(InputError, match=DOSE_VOLUME_ATTRIBUTE):
        logic.evaluate(named_dose, seg, "tg101", 54.0, 3)
    # SlicerRT stores the dose unit on the study item: a relative dose is refused.
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "patient"), "study")
    item = sh.GetItemByDataNode(dose_node)  # Slicer's subject hierarchy logic adds items; headless, we do
    if item:
        sh.SetItemParent(item, study)
    else:
        sh.CreateItem(study, dose_node)
    sh.SetItemAttribute(study, "DicomRtImport.DoseUnitName", "RELATIVE")
    assert logic.doseUnit(dose_node) == "RELATIVE"
    with pytest.raises(InputError, match="not in Gy"):
        logic.evaluate(dose_node, seg, "tg101", 54.0, 3)


def test_structures_are_outlined_on_the_segmentation_reference_grid_else_the_dose_grid(mods, scene) -> None:
    logic = mods["SBRTPlanCheck"].SBRTPlanCheckLogic()
    _ct, seg = targets_case(scene)  # drawn on TARGET_GRID (1 x 1 x 2 mm), not on the dose grid
    assert logic.structureGrid(seg, CHECK_GRID).same_geometry(TARGET_GRID)
    bare = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "no geometry")
    assert logic.structureGrid(bare, CHECK_GRID) is CHECK_GRID
    planes = logic.structurePlanes(seg, TARGET_GRID, wanted=["ITV"])
    assert planes["Box"] == {} and planes["SpinalCord"] == {}  # not wanted: not outlined
    assert sorted(planes["ITV"]) == [float(z) for z in range(-10, 11, 2)]  # ball r = 10 mm on 2 mm slices


def test_selected_constraint_jumps_views_to_ras_and_highlights_the_segment(mods, scene) -> None:
    logic = mods["SBRTPlanCheck"].SBRTPlanCheckLogic()
    _dose, seg, _ = plan_case(scene)
    slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    slice_node.SetLayoutName("Red")
    assert logic.jumpToLocation(scene, [12.0, -7.5, 20.0]) == [-12.0, 7.5, 20.0]
    matrix = slice_node.GetSliceToRAS()
    assert [matrix.GetElement(i, 3) for i in range(3)] == pytest.approx([-12.0, 7.5, 20.0])

    display = seg.GetDisplayNode()
    ids = segment_ids_by_name(seg)
    display.SetSegmentOpacity2DFill(ids["Body"], 0.5)
    saved = logic.highlightStructure(seg, "PTV+SpinalCord")
    assert display.GetSegmentOpacity2DFill(ids["PTV"]) == pytest.approx(0.8)
    assert display.GetSegmentOpacity2DFill(ids["SpinalCord"]) == pytest.approx(0.8)
    assert display.GetSegmentOpacity2DFill(ids["Body"]) == pytest.approx(0.1)
    logic.restoreDisplay(seg, saved)
    assert display.GetSegmentOpacity2DFill(ids["Body"]) == pytest.approx(0.5)
    assert logic.highlightStructure(seg, "plan") == {}  # plan metrics have no segment


def test_prescription_from_rtplan_conditions_and_report(mods, scene, tmp_path) -> None:
    m = mods["SBRTPlanCheck"]
    logic = m.SBRTPlanCheckLogic()
    from sbrtstandards.dicom.common import StudyInfo
    from sbrtstandards.dicom.rtplan import write_rtplan

    rp = write_rtplan(tmp_path / "RP.dcm", study=StudyInfo(), rx_gy=48.0, fractions=4, target_roi_number=1,
                      referenced_structure_set_uid="1.2.3", label="SBRT", target_name="PTV",
                      isocenter_mm=(0.0, 0.0, 0.0))
    rx, fractions, _warnings = logic.prescriptionFromRtplan(str(rp))
    assert (rx, fractions) == (48.0, 4)
    with pytest.raises(InputError):
        logic.prescriptionFromRtplan("")
    facts = logic.parseConditions("child_pugh=A; reirradiation=true")
    assert facts["child_pugh"] == "A" and facts["reirradiation"] is True
    with pytest.raises(InputError, match="KEY=VALUE"):
        logic.parseConditions("child_pugh")
    assert logic.parseStructureMap("Cord=spinal_cord") == {"Cord": "spinal_cord"}
    with pytest.raises(ValueError, match="Evaluate the plan first"):
        logic.exportReport(str(tmp_path / "r.html"))
    dose_node, seg, _ = plan_case(scene)
    logic.evaluate(dose_node, seg, "tg101", 54.0, 3)
    path = logic.exportReport(str(tmp_path / "report.html"))
    html = Path(path).read_text(encoding="utf-8")
    assert "tg101" in html and "SpinalCord" in html
    assert [p.id for p in logic.protocols()] == sorted(p.id for p in logic.protocols())
    assert {"cn-lung-sbrt", "cn-liver-sbrt", "tg101"} <= {p.id for p in logic.protocols()}


# --------------------------------------------------------------------------------------------
# The synthetic cases end to end (slow: the phantom's full-size grids)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lung_case() -> Any:
    from sbrtstandards.phantom import make_case

    return make_case("lung", phases=3, location="central", side="right")


@pytest.mark.slow
def test_phantom_itv_ptv_oars_and_plan_check(mods, lung_case) -> None:
    case = lung_case
    scene = new_scene()
    labels = [ph["label"] for ph in case.truth["phases"]]
    sequence = sequence_from_phases(scene, [(lab, case.phase_hu[n], case.grid) for n, lab in enumerate(labels)],
                                    "Phantom 4D-CT")
    gtvs = add_masks_to_segmentation(None, scene, {f"GTV {lab}": g for lab, g in zip(labels, case.gtv_masks)},
                                     case.grid, name="phase GTVs")
    fourd = mods["SBRT4DCT"]
    p4 = fourd.SBRT4DCTParameterNode()
    p4.phaseSequence, p4.gtvSource = sequence, gtvs
    result = fourd.SBRT4DCTLogic().process(p4)
    assert result.itv.motion_mm["SI"] == pytest.approx(case.truth["motion_voxel_mm"]["SI"], abs=0.01)
    itv_seg = p4.itvSegmentation
    assert masks_from_segmentation(itv_seg, case.grid)["ITV"].sum() * case.grid.voxel_volume_cc == pytest.approx(
        case.truth["itv"]["voxel_cc"], rel=1e-6)

    # Planning structures next to the ITV, then PTV = ITV + 5 mm and the OARs.
    keep = ("Body", "Lung_L", "Lung_R", "Trachea", "Bronchus", "Esophagus", "Heart", "SpinalCord", "VB", "Sternum")
    add_masks_to_segmentation(itv_seg, scene, {n: case.structures[n] for n in keep}, case.grid)
    targets = mods["SBRTTargetsOARs"]
    logic = targets.SBRTTargetsOARsLogic()
    pt = targets.SBRTTargetsOARsParameterNode()
    pt.referenceVolume, pt.segmentation, pt.marginSourceId = p4.avgVolume, itv_seg, segment_id(itv_seg, "ITV")
    ptv_id = logic.applyMargin(pt)
    ptv = masks_from_segmentation(itv_seg, case.grid, [ptv_id])["PTV"]
    assert ptv.sum() * case.grid.voxel_volume_cc == pytest.approx(case.truth["ptv"]["cc"], rel=0.03)
    pt.oarTargetId = ptv_id
    oars = logic.generateOarsFromParameters(pt)
    assert oars.result.location.site_class == case.truth["tumour"]["location_class"]
    built = {b.role for b in oars.result.built}
    assert {"chest_wall", "lungs_minus_target", "ring_2cm"} <= built
    for b in oars.result.built:
        sid = oars.segmentIds[b.name]
        assert segment_tag(itv_seg, sid, targets.RULE_TAG) == b.rule
    _, fx_rows = rows_from_table_node(pt.fractionationTable)
    assert fx_rows and all(r[1] in (5.0, 8.0) or isinstance(r[1], str) for r in fx_rows)

    # Plan check of the phantom's plan on these structures.
    check = mods["SBRTPlanCheck"]
    dose = volume_node_from_image(scene, (case.dose_gy, case.dose_grid), "RD", dose=True)
    pc = check.SBRTPlanCheckParameterNode()
    pc.doseVolume, pc.segmentation, pc.protocolId = dose, itv_seg, "cn-lung-sbrt"
    pc.rxGy, pc.fractions, pc.siteClass = case.rx_gy, case.fractions, oars.result.location.site_class
    out = check.SBRTPlanCheckLogic().evaluateFromParameters(pc)
    assert pc.constraintsTable.GetNumberOfRows() == len(out.json["constraints"]) > 0
    ptv_entry = next(s for s in out.json["structures"] if s["name"] == "PTV")
    assert ptv_entry["volume_cc"] == pytest.approx(case.truth["ptv"]["cc"], rel=0.03)
    json.dumps(out.json)  # the contract's JSON: serialisable as is
