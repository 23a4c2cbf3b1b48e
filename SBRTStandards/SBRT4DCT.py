"""SBRT 4D-CT: MIP, AVG and MinIP of the breathing phases, the ITV on the AVG, phase coverage and motion.

Five parts, in Slicer's order: the module (metadata), the parameter node (all state, saved with the
scene), the widget (reads the GUI, calls the logic, shows results), the logic (usable from the Python
console: nodes in, nodes out) and the self-test for a real Slicer. The logic converts nodes through
the MRML adapters ``sbrtstandards.slicer`` and calls the same core functions as ``sbrt fourd``:
:func:`sbrtstandards.projections.project_phases`, :func:`sbrtstandards.itv.build_itv` and
:func:`sbrtstandards.itv.threshold_assist`.

This file also holds the helpers that every SBRT module uses (the other modules import them from
here): :func:`ensureRequirements`, which installs the core's packages that Slicer's Python lacks,
:func:`reloadSbrtStandards`, which re-imports the core before Slicer's Reload re-reads a module,
:func:`describeModule`, the metadata all modules share, and :class:`SBRTWidgetMixin`, the widget
lifecycle (parameter node binding, scene close, Reload) all modules share.

Phase GTVs come in one of two shapes, both usual in Slicer:

* a sequence of segmentations (the segmentation was added to the 4D-CT's sequence browser, so each
  phase has its own), each holding a segment named like the GTV name ("GTV");
* one segmentation whose segments are named by phase: "GTV 0%", "GTV_10", "GTV phase 20"...
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional, Union

import numpy as np
import slicer
import vtk
from slicer import (
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLSequenceBrowserNode,
    vtkMRMLSequenceNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.slicer import (
    LPS_TO_RAS,
    ROLE_TAG,
    TG263_TAG,
    add_masks_to_segmentation,
    masks_from_segmentation,
    segment_ids_by_name,
    sequence_from_phases,
    update_table_node,
    update_volume_node,
)

Progress = Callable[[float, str], None]

#: Packages that the core imports and that Slicer's bundled Python may lack: (import name, pip requirement).
#: numpy, SimpleITK, scipy and pydicom ship with Slicer and are never installed from here.
REQUIREMENTS: tuple[tuple[str, str], ...] = (
    ("contourpy", "contourpy>=1.0"),
    ("jinja2", "Jinja2>=3.1"),
    ("matplotlib", "matplotlib>=3.7"),
) + ((("tomli", "tomli>=2.0"),) if sys.version_info < (3, 11) else ())

DOCUMENTATION_URL = "https://github.com/sbrt-standards/SlicerSBRTStandards#modules"
CONTRIBUTORS = ["SBRT Standards contributors (SBRT Standards project)"]


#
# Helpers shared by the SBRT modules
#


def missingRequirements(requirements: Sequence[tuple[str, str]] = REQUIREMENTS) -> list[str]:
    """The pip requirements of ``requirements`` whose package cannot be imported."""
    return [spec for name, spec in requirements if importlib.util.find_spec(name) is None]


def ensureRequirements(
    requirements: Sequence[tuple[str, str]] = REQUIREMENTS,
    *,
    install: Callable[[list[str]], Any] | None = None,
) -> list[str]:
    """Install the core's packages that Slicer's Python lacks; returns the requirements installed.

    Only missing packages are installed (nothing happens when all import), with
    ``slicer.util.pip_install`` unless ``install`` is given. Raises ImportError naming the packages
    when they still cannot be imported (no network, no write access to Slicer's Python).
    """
    missing = missingRequirements(requirements)
    if not missing:
        return []
    logging.info("SBRT Standards: installing %s into Slicer's Python", ", ".join(missing))
    (install or slicer.util.pip_install)(missing)
    importlib.invalidate_caches()
    still = missingRequirements([(n, s) for n, s in requirements if s in missing])
    if still:
        raise ImportError(
            "SBRT Standards needs these Python packages and could not install them: "
            + ", ".join(still)
            + ". Install them from Slicer's Python console with slicer.util.pip_install()."
        )
    return missing


def sbrtModulesInReloadOrder(modules: Mapping[str, Any] | None = None) -> list[str]:
    """Loaded ``sbrtstandards`` modules, each after the ``sbrtstandards`` modules it imports.

    Reloading in this order gives every module the reloaded versions of its dependencies (reloading
    in import order would not: a module can be imported before one of its dependencies). The
    dependencies are read from each module's source with :mod:`ast`.
    """
    loaded = dict(sys.modules if modules is None else modules)
    names = sorted(n for n in loaded if n == "sbrtstandards" or n.startswith("sbrtstandards."))
    deps = {n: [d for d in _sbrtImports(loaded[n], n, names) if d in names and d != n] for n in names}
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:  # an import cycle: keep the order reached so far
            return
        state[name] = 1
        for dep in deps[name]:
            visit(dep)
        state[name] = 2
        order.append(name)

    for name in names:
        visit(name)
    return order


def _sbrtImports(module: Any, name: str, loaded: Iterable[str] | None = None) -> list[str]:
    """``sbrtstandards`` modules whose objects ``module`` binds when it runs (its module-level imports).

    Imports inside functions are left out: they look the module up when called, so they never hold a
    stale object (and they are how the core breaks import cycles). ``from package import submodule``
    depends on the submodule only (``loaded``, default ``sys.modules``, tells submodules apart).
    """
    modules = set(sys.modules if loaded is None else loaded)
    path = getattr(module, "__file__", None)
    if not path or not str(path).endswith(".py"):
        return []
    try:
        with open(path, encoding="utf-8") as stream:
            tree = ast.parse(stream.read(), filename=str(path))
    except (OSError, SyntaxError):
        return []
    package = name if str(path).endswith("__init__.py") else name.rpartition(".")[0]
    found: list[str] = []
    for node in _moduleLevelNodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:  # "import a.b.c" runs a, a.b and a.b.c
                parts = alias.name.split(".")
                found += [".".join(parts[: i + 1]) for i in range(len(parts))]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append(submodule if submodule in modules else base)
    return [n for n in dict.fromkeys(found) if n == "sbrtstandards" or n.startswith("sbrtstandards.")]


def _moduleLevelNodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` that runs at import time (function and lambda bodies are skipped)."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield child
        yield from _moduleLevelNodes(child)


def reloadSbrtStandards() -> list[str]:
    """Reload every loaded ``sbrtstandards`` module, dependencies first; returns their names.

    Slicer's Reload button re-reads only the module file; without this the core would keep running
    its old code during development.
    """
    order = sbrtModulesInReloadOrder()
    for name in order:
        importlib.reload(sys.modules[name])
    return order


def subProgress(progress: Progress | None, start: float, end: float) -> Progress | None:
    """A progress callback mapping 0..1 onto ``start``..``end`` of ``progress``."""
    if progress is None:
        return None

    def report(fraction: float, message: str) -> None:
        progress(start + (end - start) * min(max(float(fraction), 0.0), 1.0), message)

    return report


def rgb01(rgb: Sequence[float]) -> tuple[float, float, float]:
    """A 0..255 colour (TG-263 table) as MRML's 0..1."""
    return (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0)


def lpsToRas(point_mm: Sequence[float]) -> list[float]:
    """DICOM LPS mm -> Slicer RAS mm (the core reports LPS, the views and markups use RAS)."""
    return [float(v) for v in LPS_TO_RAS @ np.asarray(point_mm, dtype=float)]


def describeModule(
    parent: Any,
    *,
    title: str,
    dependencies: Sequence[str],
    helpText: str,
    acknowledgementText: str | None = None,
) -> None:
    """Fill the metadata every SBRT module shows in the same way: category, contributors, links, credits.

    ``title``, ``helpText`` and ``acknowledgementText`` come translated by the module (``_()``); the
    documentation link is appended to the help, and the default acknowledgement names the standards.
    """
    parent.title = title
    parent.categories = [translate("qSlicerAbstractCoreModule", "Radiotherapy")]
    parent.dependencies = list(dependencies)
    parent.contributors = list(CONTRIBUTORS)
    parent.helpText = helpText
    parent.helpText += f'<p><a href="{DOCUMENTATION_URL}">' + _("Documentation") + "</a></p>"
    if acknowledgementText is None:
        acknowledgementText = _(
            "SBRT Standards turns the Chinese lung/thoracic (T/CNHAW-B-0020-2025) and liver/biliary "
            "(T/CNHAW-B-0017-2025) SBRT standards, the TBI, seed implantation and ablation specifications, "
            "AAPM TG-101, RTOG 0813/0915, the UK SABR consensus and the Michigan re-irradiation limits into "
            "tools for 3D Slicer."
        )
    parent.acknowledgementText = acknowledgementText


def catalogueProtocols() -> list[Any]:
    """The catalogue's protocols (``ProtocolInfo``: id, title, source ...), sorted by id.

    Installs nothing (it runs when a panel opens): on Python < 3.11 without tomli it raises ImportError
    until :func:`ensureRequirements` has run.
    """
    from sbrtstandards.catalogue import list_protocols

    return list_protocols()


def fillProtocolComboBox(combo: Any) -> None:
    """One item per catalogue protocol (id as item data, "id - title" shown); when the catalogue cannot be
    read yet, a single item with the reason and empty data (the first run installs the requirements)."""
    wasBlocked = combo.blockSignals(True)
    combo.clear()
    try:
        for info in catalogueProtocols():
            combo.addItem(f"{info.id} \u2014 {info.title}", info.id)
    except ImportError as exc:
        combo.addItem(str(exc), "")
    finally:
        combo.blockSignals(wasBlocked)


def selectComboData(combo: Any, data: str, *, clearWhenMissing: bool = False) -> None:
    """Show the item holding ``data`` without emitting a change (the parameter node already has it);
    an unknown ``data`` leaves the selection, or clears it with ``clearWhenMissing``."""
    index = combo.findData(data)
    if (index >= 0 or clearWhenMissing) and index != combo.currentIndex:
        wasBlocked = combo.blockSignals(True)
        combo.currentIndex = index
        combo.blockSignals(wasBlocked)


class SBRTWidgetMixin:
    """The widget lifecycle every SBRT module shares (put it first in the bases, before Slicer's classes).

    The widget binds its .ui to the module's parameter node and calls ``self._updateGUI`` whenever the
    node changes; a closing scene drops the node and the re-opened scene gets a fresh one. Subclasses
    provide ``_updateGUI`` and ``initializeParameterNode`` (the node, then the default inputs), and build
    their GUI in ``setup`` with :meth:`setupWidget`.
    """

    def __init__(self, parent: Any = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Any = None
        self._parameterNode: Any = None
        self._parameterNodeGuiTag: Any = None

    def setupWidget(self, uiPath: str, logic: Any) -> None:
        """Load the .ui, give its MRML widgets the scene, keep the logic and follow the scene closing."""
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(uiPath))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = logic
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    def _updateGUI(self, caller: Any = None, event: Any = None) -> None:
        raise NotImplementedError

    def initializeParameterNode(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)

    def onSceneStartClose(self, caller: Any, event: Any) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller: Any, event: Any) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Re-import the core first: Slicer's Reload re-reads only the module file."""
        reloadSbrtStandards()
        ScriptedLoadableModuleWidget.onReload(self)

    def setParameterNode(self, inputParameterNode: Any) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Every bound widget has the "SlicerParameterName" dynamic property in the .ui file.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
            self._updateGUI()

    def _progress(self, fraction: float, message: str) -> None:
        """Progress of the logic on the .ui's ``progressBar`` and ``statusLabel`` (keeps the GUI alive)."""
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()


#
# SBRT4DCT
#


class SBRT4DCT(ScriptedLoadableModule):
    """4D-CT projections and ITV (module metadata)."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        helpText = _(
            "From the breathing phases of a 4D-CT (a phase sequence, or phase volumes gathered into one), "
            "builds the maximum (MIP), average (AVG) and minimum (MinIP) intensity projections. From the GTV "
            "of each phase, builds the ITV as the union of the phase GTVs on the AVG geometry, checks what "
            "part of every phase GTV lies inside it, and reports the tumour motion (peak-to-peak range of the"
            " GTV centroid along L-R, A-P and S-I, and the largest distance between two phase centroids). "
            "Optionally proposes a starting ITV by thresholding the MIP (lung) or the MinIP (liver) around "
            "the phase GTVs, for the user to edit. Phase GTVs: a sequence of segmentations (one per phase, "
            "each with a segment named like the GTV name), or one segmentation whose segments are named by "
            "phase ('GTV 0%', 'GTV_10', 'GTV phase 20'). Centroids in the table are in RAS millimetres. "
        )
        describeModule(
            self.parent, title=_("SBRT 4D-CT"), dependencies=["Sequences", "Segmentations"], helpText=helpText
        )


#
# SBRT4DCTParameterNode
#


@parameterNodeWrapper
class SBRT4DCTParameterNode:
    """The module's state (saved with the scene).

    phaseSequence - the 4D-CT: a sequence of phase volumes, or its browser.
    gtvSource - the phase GTVs: a sequence of segmentations, or one segmentation with a segment per phase.
    gtvName - the GTV segment name ("GTV"), followed by the phase in a single segmentation.
    resample - resample phases on another grid onto the first phase's grid (else an error).
    thresholdAssist / assistMode - add a thresholded starting ITV from the MIP or the MinIP.
    mipVolume, avgVolume, minipVolume, itvSegmentation, phaseTable - outputs (created when empty).
    """

    phaseSequence: Optional[Union[vtkMRMLSequenceNode, vtkMRMLSequenceBrowserNode]]
    gtvSource: Optional[Union[vtkMRMLSegmentationNode, vtkMRMLSequenceNode]]
    gtvName: str = "GTV"
    resample: bool = False
    thresholdAssist: bool = False
    assistMode: Annotated[str, Choice(["mip", "minip"])] = "mip"
    mipVolume: Optional[vtkMRMLScalarVolumeNode]
    avgVolume: Optional[vtkMRMLScalarVolumeNode]
    minipVolume: Optional[vtkMRMLScalarVolumeNode]
    itvSegmentation: Optional[vtkMRMLSegmentationNode]
    phaseTable: Optional[vtkMRMLTableNode]


#
# SBRT4DCTWidget
#


class SBRT4DCTWidget(SBRTWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: binds the .ui to the parameter node, runs the logic, shows the table and motion."""

    logic: SBRT4DCTLogic | None
    _parameterNode: SBRT4DCTParameterNode | None

    def setup(self) -> None:
        self.setupWidget("UI/SBRT4DCT.ui", SBRT4DCTLogic())

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.makeSequenceButton.connect("clicked(bool)", self.onMakeSequenceButton)
        self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.phaseSequence:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSequenceBrowserNode")
            if first:
                self._parameterNode.phaseSequence = first

    def _updateGUI(self, caller: Any = None, event: Any = None) -> None:
        ready = bool(self._parameterNode and self._parameterNode.phaseSequence)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = (
            _("Compute the projections, and the ITV when phase GTVs are given")
            if ready
            else _("Select the phase sequence (4D-CT)")
        )
        self.ui.assistModeComboBox.enabled = bool(self._parameterNode and self._parameterNode.thresholdAssist)
        if self._parameterNode:
            self.ui.phaseTableView.setMRMLTableNode(self._parameterNode.phaseTable)

    def onMakeSequenceButton(self) -> None:
        """Gather the checked phase volumes into a phase sequence (labels read from the volume names)."""
        with slicer.util.tryWithErrorDisplay(_("Failed to make the phase sequence."), waitCursor=True):
            volumes = list(self.ui.phaseVolumesSelector.checkedNodes())
            if len(volumes) < 2:
                raise ValueError(_("Check at least two phase volumes."))
            self._parameterNode.phaseSequence = self.logic.createPhaseSequence(volumes)

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(
            _("Failed to compute the 4D-CT projections and ITV."), waitCursor=True
        ):
            self.ui.progressBar.value = 0
            result = self.logic.process(self._parameterNode, progress=self._progress)
            self.ui.motionLabel.text = result.motionText()
            self.ui.warningsLabel.text = "\n".join(result.warnings)
            self.ui.phaseTableView.setMRMLTableNode(result.table)
            avg = result.volumes.get("AVG")
            if avg is not None:
                slicer.util.setSliceViewerLayers(background=avg, fit=True)


#
# SBRT4DCTLogic
#


PHASE_TABLE_COLUMNS = (
    "Phase",
    "GTV [cc]",
    "Centroid R [mm]",
    "Centroid A [mm]",
    "Centroid S [mm]",
    "GTV in ITV [%]",
)
MOTION_ROW_LABEL = "Motion (peak-to-peak)"
MOTION_VECTOR_ATTRIBUTE = "SBRTStandards.MotionVector_mm"
ITV_NAME = "ITV"
ASSIST_NAME = "ITV_assist"


@dataclass
class SBRT4DCTResult:
    """What one run produced: the projection volumes, the ITV segmentation, the table and the core result."""

    volumes: dict[str, Any]
    labels: list[str]
    itv: Any = None  # sbrtstandards.itv.ItvResult, None without phase GTVs
    segmentation: Any = None
    table: Any = None
    warnings: list[str] = field(default_factory=list)

    def motionText(self) -> str:
        if self.itv is None:
            return _("No phase GTVs: projections only.")
        m = self.itv.motion_mm
        return _(
            "Tumour motion (peak-to-peak): L-R {lr:.1f} mm, A-P {ap:.1f} mm, S-I {si:.1f} mm; "
            "largest centroid distance {vector:.1f} mm"
        ).format(lr=m["LR"], ap=m["AP"], si=m["SI"], vector=m["vector"])


class SBRT4DCTLogic(ScriptedLoadableModuleLogic):
    """4D-CT computations on MRML nodes, without the GUI (usable from the Python console).

    Example::

        logic = slicer.util.getModuleLogic("SBRT4DCT")
        volumes = logic.computeProjections(getNode("4D-CT"))
        itv = logic.buildItv(logic.phaseLabels(getNode("4D-CT")), getNode("GTVs"), "GTV", volumes["AVG"])
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._parameterNode: SBRT4DCTParameterNode | None = None

    def getParameterNode(self) -> SBRT4DCTParameterNode:
        node = super().getParameterNode()
        if self._parameterNode is None or self._parameterNode.parameterNode != node:
            self._parameterNode = SBRT4DCTParameterNode(node)
        return self._parameterNode

    # ------------------------------------------------------------------ the whole run

    def process(self, parameterNode: Any = None, progress: Progress | None = None) -> SBRT4DCTResult:
        """Projections, then (with phase GTVs) ITV, table and assist; the outputs go back into the node."""
        p = parameterNode or self.getParameterNode()
        ensureRequirements()
        if not p.phaseSequence:
            raise ValueError(_("No phase sequence selected"))
        start = time.time()
        logging.info("SBRT 4D-CT: started")
        volumes = self.computeProjections(
            p.phaseSequence,
            {"MIP": p.mipVolume, "AVG": p.avgVolume, "MinIP": p.minipVolume},
            resample=p.resample,
            progress=subProgress(progress, 0.0, 0.6),
        )
        p.mipVolume, p.avgVolume, p.minipVolume = volumes["MIP"], volumes["AVG"], volumes["MinIP"]
        labels = self.phaseLabels(p.phaseSequence)
        result = SBRT4DCTResult(volumes, labels)
        if p.gtvSource:
            assist = None
            if p.thresholdAssist:
                assist = volumes["MIP"] if p.assistMode == "mip" else volumes["MinIP"]
            itv = self.buildItv(
                labels,
                p.gtvSource,
                p.gtvName,
                volumes["AVG"],
                itvSegmentation=p.itvSegmentation,
                tableNode=p.phaseTable,
                assistVolume=assist,
                assistMode=p.assistMode,
                progress=subProgress(progress, 0.6, 1.0),
            )
            p.itvSegmentation, p.phaseTable = itv.segmentation, itv.table
            result.itv, result.segmentation, result.table = itv.itv, itv.segmentation, itv.table
            result.warnings = itv.warnings
        if progress:
            progress(1.0, _("Done"))
        logging.info("SBRT 4D-CT: completed in %.1f s", time.time() - start)
        return result

    # ------------------------------------------------------------------ projections

    def phaseLabels(self, phaseNode: Any) -> list[str]:
        """Phase labels of a sequence (or browser) in sequence order: index value and unit ("20%")."""
        return [label for label, _node in _sequenceItems(_sequenceOf(phaseNode))]

    def computeProjections(
        self,
        phaseNode: Any,
        outputs: Mapping[str, Any] | None = None,
        *,
        resample: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """MIP, AVG and MinIP volume nodes of a phase sequence (or its browser).

        ``outputs`` maps "MIP"/"AVG"/"MinIP" to existing volume nodes to overwrite; missing or None
        ones are created. Phases must share one grid unless ``resample`` is true.
        """
        from sbrtstandards.projections import PhaseImage, project_phases
        from sbrtstandards.slicer import phases_from_sequence

        if phaseNode is None:
            raise ValueError("computeProjections: no phase sequence given")
        scene = phaseNode.GetScene()
        phases = phases_from_sequence(phaseNode)
        images = (PhaseImage(label, hu, grid, source=phaseNode.GetName()) for label, hu, grid in phases)
        proj = project_phases(images, resample=resample, n_phases=len(phases), progress=progress)
        outputs = dict(outputs or {})
        base = _sequenceOf(phaseNode).GetName()
        result: dict[str, Any] = {}
        for key, array in proj.as_dict().items():
            node = outputs.get(key) or scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{base} {key}")
            update_volume_node(node, (array, proj.grid))
            if node.GetDisplayNode() is None:
                node.CreateDefaultDisplayNodes()
            node.SetAttribute("SBRTStandards.Projection", key)
            node.SetAttribute("SBRTStandards.Phases", ", ".join(proj.labels))
            result[key] = node
        if proj.resampled:
            logging.warning(
                "SBRT 4D-CT: phases resampled onto the first phase's grid: %s", ", ".join(proj.resampled)
            )
        return result

    def createPhaseSequence(self, volumeNodes: Sequence[Any], name: str = "4D-CT phases") -> Any:
        """A sequence node from phase volume nodes, labelled from their names ("CT 20%" -> "20%")."""
        from sbrtstandards.slicer import image_from_volume_node

        if len(volumeNodes) < 2:
            raise InputError(f"a phase sequence needs at least 2 volumes, got {len(volumeNodes)}")
        scene = volumeNodes[0].GetScene()
        labels = phaseLabelsFromNames([v.GetName() for v in volumeNodes])
        phases = []
        for label, node in zip(labels, volumeNodes):
            array, grid = image_from_volume_node(node)
            phases.append((label, array, grid))
        return sequence_from_phases(scene, phases, scene.GenerateUniqueName(name))

    # ------------------------------------------------------------------ ITV

    def phaseGtvs(
        self, gtvSource: Any, gtvName: str, labels: Sequence[str], referenceGrid: Grid
    ) -> tuple[list[Any], list[str]]:
        """One :class:`sbrtstandards.itv.PhaseGtv` per phase label (mask on ``referenceGrid``) and notes."""
        from sbrtstandards.itv import PhaseGtv

        notes: list[str] = []
        if gtvSource is None:
            raise ValueError("phaseGtvs: no GTV source given")
        if gtvSource.IsA("vtkMRMLSequenceNode"):
            found = _gtvsFromSegmentationSequence(gtvSource, gtvName, labels, notes)
            gtvs = []
            for label in labels:
                node, segment_id = found.get(label, (None, None))
                mask = None
                if node is not None:
                    name = node.GetSegmentation().GetSegment(segment_id).GetName()
                    mask = masks_from_segmentation(node, referenceGrid, [segment_id])[name]
                gtvs.append(PhaseGtv(label, mask))
            return gtvs, notes
        if not gtvSource.IsA("vtkMRMLSegmentationNode"):
            raise InputError(
                f"'{gtvSource.GetName()}' is neither a segmentation nor a sequence of segmentations"
            )
        ids = segment_ids_by_name(gtvSource)
        matched = matchPhaseSegments(list(ids), gtvName, labels)
        wanted = [name for name in matched.values() if name is not None]
        if not wanted:
            raise InputError(
                f"segmentation '{gtvSource.GetName()}' has no segment named '{gtvName}' followed by a phase "
                f"({', '.join(labels)}); segments: {', '.join(ids) or '(none)'}"
            )
        masks = masks_from_segmentation(gtvSource, referenceGrid, [ids[n] for n in wanted])
        for label, name in matched.items():
            if name is None:
                notes.append(f"phase {label}: no segment '{gtvName} {label}' in '{gtvSource.GetName()}'")
        return [PhaseGtv(label, masks[name] if name else None) for label, name in matched.items()], notes

    def buildItv(
        self,
        labels: Sequence[str],
        gtvSource: Any,
        gtvName: str,
        referenceVolume: Any,
        *,
        itvSegmentation: Any = None,
        tableNode: Any = None,
        assistVolume: Any = None,
        assistMode: str = "mip",
        progress: Progress | None = None,
    ) -> _ItvOutputs:
        """ITV (union of the phase GTVs) on ``referenceVolume``'s grid (the AVG), its table and assist.

        The ITV segment (and ``ITV_assist`` with ``assistVolume``, the MIP or MinIP) is added to
        ``itvSegmentation`` (created when None; a segment of the same name is replaced). The table
        gets one row per phase (GTV volume, RAS centroid, percentage inside the ITV) and a last row
        with the peak-to-peak motion per axis.
        """
        from sbrtstandards import tg263
        from sbrtstandards.itv import build_itv, threshold_assist
        from sbrtstandards.slicer import grid_from_volume_node, image_from_volume_node

        if referenceVolume is None:
            raise ValueError("buildItv: no reference volume (AVG) given")
        scene = referenceVolume.GetScene()
        grid = grid_from_volume_node(referenceVolume)
        if progress:
            progress(0.05, _("Reading the phase GTVs"))
        gtvs, notes = self.phaseGtvs(gtvSource, gtvName, labels, grid)
        if progress:
            progress(0.5, _("Building the ITV"))
        itv = build_itv(gtvs, grid)
        masks = {ITV_NAME: itv.mask}
        colors = {ITV_NAME: rgb01(tg263.color_for("ITV"))}
        tags = {ITV_NAME: {ROLE_TAG: "ITV", TG263_TAG: tg263.standard_name("itv")}}
        if assistVolume is not None:
            if progress:
                progress(0.7, _("Threshold assist"))
            union = np.zeros(grid.shape, dtype=bool)
            for g in gtvs:
                if g.mask is not None:
                    union |= g.mask
            hu, assistGrid = image_from_volume_node(assistVolume)
            if not assistGrid.same_geometry(grid):
                raise InputError(
                    f"volume '{assistVolume.GetName()}' is not on the grid of '{referenceVolume.GetName()}'"
                )
            masks[ASSIST_NAME] = threshold_assist(hu, grid, union, mode=assistMode)
            colors[ASSIST_NAME] = rgb01(tg263.color_for("CTV"))
            tags[ASSIST_NAME] = {ROLE_TAG: ASSIST_NAME}
        if progress:
            progress(0.85, _("Writing the ITV segment and the table"))
        segmentation = add_masks_to_segmentation(
            itvSegmentation,
            scene,
            masks,
            grid,
            colors=colors,
            tags=tags,
            name=scene.GenerateUniqueName(f"{referenceVolume.GetName()} ITV"),
        )
        if tableNode is None:
            tableNode = scene.AddNewNodeByClass(
                "vtkMRMLTableNode", scene.GenerateUniqueName("4D-CT phases and motion")
            )
        update_table_node(tableNode, PHASE_TABLE_COLUMNS, phaseTableRows(itv))
        tableNode.SetAttribute(MOTION_VECTOR_ATTRIBUTE, f"{itv.motion_mm['vector']:.3f}")
        tableNode.SetAttribute("SBRTStandards.Coordinates", "RAS")
        if progress:
            progress(1.0, _("ITV done"))
        return _ItvOutputs(itv, segmentation, tableNode, notes + list(itv.warnings))


@dataclass
class _ItvOutputs:
    itv: Any
    segmentation: Any
    table: Any
    warnings: list[str]


def phaseTableRows(itv: Any) -> list[list[Any]]:
    """Rows of the phase table for an :class:`sbrtstandards.itv.ItvResult` (centroids LPS -> RAS)."""
    rows: list[list[Any]] = []
    for row in itv.phases:
        ras = lpsToRas(row.centroid_mm) if row.centroid_mm is not None else [None, None, None]
        inside = 100.0 * row.fraction_in_itv if row.fraction_in_itv is not None else None
        rows.append([row.label, row.gtv_cc, ras[0], ras[1], ras[2], inside])
    m = itv.motion_mm
    rows.append([MOTION_ROW_LABEL, None, m["LR"], m["AP"], m["SI"], None])
    return rows


_SEPARATORS = re.compile(r"[\s_\-]+")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def phaseKey(text: str) -> str:
    """A phase label in comparable form: "20%", "phase 20", "Phase_20", "20.0" -> "20"; other text folded."""
    folded = _SEPARATORS.sub("", text.casefold()).replace("phase", "").replace("%", "")
    match = _NUMBER.fullmatch(folded)
    return f"{float(match.group()):g}" if match else folded


def matchPhaseSegments(
    segmentNames: Iterable[str], gtvName: str, labels: Sequence[str]
) -> dict[str, str | None]:
    """Phase label -> the segment named ``gtvName`` followed by that phase ("GTV 20%", "GTV_20"), or None.

    Case, spaces, "_" and "-" are ignored, and "phase"/"%" may be present or not. Two segments for one
    phase are an InputError (which one to use cannot be guessed).
    """
    base = _SEPARATORS.sub("", gtvName.casefold())
    if not base:
        raise InputError("the GTV name is empty")
    by_key: dict[str, str] = {}
    for name in segmentNames:
        folded = _SEPARATORS.sub("", name.casefold())
        if not folded.startswith(base) or folded == base:
            continue
        key = phaseKey(folded[len(base) :])
        if key in by_key:
            raise InputError(
                f"segments '{by_key[key]}' and '{name}' are both the GTV of phase {key}: rename one"
            )
        by_key[key] = name
    return {label: by_key.get(phaseKey(label)) for label in labels}


def phaseLabelsFromNames(names: Sequence[str]) -> list[str]:
    """Phase labels from volume names: the last percentage in each ("4D-CT 20%" -> "20%"), else "phase N"."""
    labels = []
    for index, name in enumerate(names):
        found = re.findall(r"([-+]?\d+(?:\.\d+)?)\s*%", name)
        labels.append(f"{float(found[-1]):g}%" if found else f"phase {index + 1}")
    if len(set(labels)) != len(labels):  # ambiguous names: number the phases in the given order
        labels = [f"phase {index + 1}" for index in range(len(names))]
    return labels


def _sequenceOf(node: Any) -> Any:
    """The sequence of a sequence node or of a browser's primary sequence."""
    if node is not None and node.IsA("vtkMRMLSequenceBrowserNode"):
        getter = getattr(node, "GetPrimarySequenceNode", None) or node.GetMasterSequenceNode
        node = getter()
    if node is None or not node.IsA("vtkMRMLSequenceNode"):
        raise InputError("a sequence node (or a sequence browser with a sequence) is needed")
    return node


def _sequenceItems(sequence: Any) -> list[tuple[str, Any]]:
    """(label, data node) per item; the label is the index value and unit, as the adapters label phases."""
    unit = sequence.GetIndexUnit() or ""
    items = []
    for item in range(sequence.GetNumberOfDataNodes()):
        value = sequence.GetNthIndexValue(item)
        label = value if not unit or value.endswith(unit) else f"{value}{unit}"
        items.append((label, sequence.GetNthDataNode(item)))
    return items


def _gtvsFromSegmentationSequence(
    sequence: Any, gtvName: str, labels: Sequence[str], notes: list[str]
) -> dict[str, tuple[Any, str]]:
    """Phase label -> (segmentation data node, GTV segment ID) from a sequence of segmentations."""
    items = _sequenceItems(sequence)
    by_key = {phaseKey(label): node for label, node in items}
    if not any(phaseKey(label) in by_key for label in labels) and len(items) == len(labels):
        notes.append(
            f"the phases of '{sequence.GetName()}' ({', '.join(lab for lab, _n in items)}) do not match the "
            "4D-CT "
            f"phases ({', '.join(labels)}); matched in sequence order"
        )
        by_key = {phaseKey(label): node for label, (_l, node) in zip(labels, items)}
    result: dict[str, tuple[Any, str]] = {}
    wanted = _SEPARATORS.sub("", gtvName.casefold())
    for label in labels:
        node = by_key.get(phaseKey(label))
        if node is None or not node.IsA("vtkMRMLSegmentationNode"):
            notes.append(f"phase {label}: no segmentation in '{sequence.GetName()}'")
            continue
        ids = segment_ids_by_name(node)
        hits = [sid for name, sid in ids.items() if _SEPARATORS.sub("", name.casefold()) == wanted]
        if not hits and len(ids) == 1:
            hits = list(ids.values())
            notes.append(f"phase {label}: no segment named '{gtvName}'; its only segment was used")
        if not hits:
            notes.append(
                f"phase {label}: no segment named '{gtvName}' (segments: {', '.join(ids) or 'none'})"
            )
            continue
        result[label] = (node, hits[0])
    return result


#
# SBRT4DCTTest
#


class SBRT4DCTTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: a synthetic lung 4D-CT (known motion and ITV) through the logic."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SBRT4DCT_projections_and_itv()

    def test_SBRT4DCT_projections_and_itv(self) -> None:
        from sbrtstandards.phantom import make_case

        self.delayDisplay("Building a synthetic lung 4D-CT (4 phases)")
        ensureRequirements()
        case = make_case("lung", phases=4)
        labels = [ph["label"] for ph in case.truth["phases"]]
        phases = [(label, case.phase_hu[n], case.grid) for n, label in enumerate(labels)]
        sequence = sequence_from_phases(slicer.mrmlScene, phases, "Phantom 4D-CT")
        gtvs = add_masks_to_segmentation(
            None,
            slicer.mrmlScene,
            {f"GTV {label}": m for label, m in zip(labels, case.gtv_masks)},
            case.grid,
            name="Phantom phase GTVs",
        )
        logic = SBRT4DCTLogic()
        p = logic.getParameterNode()
        p.phaseSequence = sequence
        p.gtvSource = gtvs
        p.gtvName = "GTV"
        result = logic.process(p)

        self.delayDisplay("Checking projections, ITV and motion")
        avg = slicer.util.arrayFromVolume(p.avgVolume)
        expected_avg = np.rint(np.mean([case.phase_hu[n].astype(float) for n in range(4)], axis=0))
        self.assertTrue(np.array_equal(avg, expected_avg.astype(np.int16)))
        itv = masks_from_segmentation(p.itvSegmentation, case.grid)[ITV_NAME]
        self.assertTrue(np.array_equal(itv, np.logical_or.reduce(case.gtv_masks)))
        truth = case.truth["motion_voxel_mm"]
        for axis in ("LR", "AP", "SI"):
            self.assertAlmostEqual(result.itv.motion_mm[axis], truth[axis], delta=0.01)
        self.assertEqual(p.phaseTable.GetNumberOfRows(), 5)
        self.delayDisplay("Test passed")
