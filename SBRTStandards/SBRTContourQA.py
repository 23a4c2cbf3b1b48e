"""SBRT Contour QA: agreement of two segmentations, structure by structure, and the teaching score sheet.

Five parts, in Slicer's order: module, parameter node, widget, logic, self-test. The logic is a thin
layer over the core behind ``sbrt compare`` and ``sbrt teach`` (:mod:`sbrtstandards.compare` and
:mod:`sbrtstandards.teaching`). In Slicer the two structure sets are two segmentation nodes: every
segment is sampled on the reference volume's grid
(:func:`sbrtstandards.slicer.masks_from_segmentation`), outlined slice by slice into planar contours
(:func:`sbrtstandards.margins.mask_to_planes`) and compared with
:func:`sbrtstandards.compare.compare_planes` -- the same model and metrics as for two RTSTRUCT files.
Structures are paired by :func:`sbrtstandards.compare.match_pairs` (name, normalised name, TG-263 role);
the result is a MRML table node with one row per pair, usable from the Python console.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import qt
import slicer
from SBRT4DCT import SBRTWidgetMixin, describeModule, ensureRequirements
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from sbrtstandards.errors import InputError
from sbrtstandards.slicer import (
    grid_from_volume_node,
    masks_from_segmentation,
    table_node_from_rows,
    update_table_node,
)

#: The core's default surface-Dice tolerance (``compare.DEFAULT_TOLERANCE_MM``), repeated so that the
#: parameter node can be declared before the core is imported (the core may need packages installed first).
DEFAULT_TOLERANCE_MM = 2.0
AGREEMENT_COLUMNS = (
    "Reference",
    "Test",
    "Matched by",
    "Dice",
    "Jaccard",
    "HD95 [mm]",
    "HD [mm]",
    "MSD [mm]",
    "Surface Dice",
    "Tolerance [mm]",
    "Volume ratio",
    "Centroid shift [mm]",
    "Reference volume [cc]",
    "Test volume [cc]",
    "Notes",
)


#
# SBRTContourQA
#


class SBRTContourQA(ScriptedLoadableModule):
    """Contour agreement of two segmentations and the contouring score sheet of a trainee."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        helpText = _(
            "Contour quality assurance, the same metrics as the 'sbrt compare' and 'sbrt teach' commands. "
            "Compare: a reference and a test segmentation on a reference volume; the segments are paired by "
            "name, normalised name or TG-263 role, and each pair gets its Dice and Jaccard coefficients, the "
            "Hausdorff distance (HD, HD95), the mean surface distance (MSD), the surface Dice at a tolerance, "
            "the volume ratio and the centroid shift, one row per structure in a table. Score sheet: a "
            "trainee's RTSTRUCT graded against a reference RTSTRUCT, written as an HTML page. "
        )
        acknowledgementText = _(
            "SBRT Standards turns the Chinese lung/thoracic (T/CNHAW-B-0020-2025) and liver/biliary "
            "(T/CNHAW-B-0017-2025) SBRT standards, the TBI, seed implantation and ablation specifications, "
            "AAPM TG-101 and the UK SABR consensus into tools for 3D Slicer."
        )
        describeModule(
            self.parent,
            title=_("SBRT Contour QA"),
            dependencies=["Segmentations", "SBRT4DCT"],
            helpText=helpText,
            acknowledgementText=acknowledgementText,
        )


#
# SBRTContourQAParameterNode
#


@parameterNodeWrapper
class SBRTContourQAParameterNode:
    """The module's state (saved with the scene).

    referenceSegmentation, testSegmentation - the two structure sets; referenceVolume - the sampling grid;
    toleranceMm - surface-Dice tolerance; agreementTable - the output (created when empty).
    referenceRtstructPath, traineeRtstructPath, traineeName, scoreSheetPath - the score sheet's files.
    """

    referenceSegmentation: Optional[vtkMRMLSegmentationNode]
    testSegmentation: Optional[vtkMRMLSegmentationNode]
    referenceVolume: Optional[vtkMRMLScalarVolumeNode]
    toleranceMm: Annotated[float, WithinRange(0.1, 20.0)] = 2.0  # DEFAULT_TOLERANCE_MM
    agreementTable: Optional[vtkMRMLTableNode]
    referenceRtstructPath: str = ""
    traineeRtstructPath: str = ""
    traineeName: str = ""
    scoreSheetPath: str = ""


#
# SBRTContourQAWidget
#


class SBRTContourQAWidget(SBRTWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: a comparison section and a score-sheet section, both driven by the parameter node."""

    logic: SBRTContourQALogic | None
    _parameterNode: SBRTContourQAParameterNode | None

    def setup(self) -> None:
        self.setupWidget("UI/SBRTContourQA.ui", SBRTContourQALogic())
        self.ui.compareApplyButton.connect("clicked(bool)", self.onCompareApply)
        self.ui.referenceRtstructBrowseButton.connect("clicked(bool)", self.onReferenceRtstructBrowse)
        self.ui.traineeRtstructBrowseButton.connect("clicked(bool)", self.onTraineeRtstructBrowse)
        self.ui.scoreSheetBrowseButton.connect("clicked(bool)", self.onScoreSheetBrowse)
        self.ui.scoreSheetApplyButton.connect("clicked(bool)", self.onScoreSheetApply)
        self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.referenceVolume:
            p.referenceVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def _updateGUI(self, caller: Any = None, event: Any = None) -> None:
        p = self._parameterNode
        if p is None:
            return
        ready = bool(
            p.referenceSegmentation
            and p.testSegmentation
            and p.referenceVolume
            and p.referenceSegmentation.GetID() != p.testSegmentation.GetID()
        )
        self.ui.compareApplyButton.enabled = ready
        self.ui.compareApplyButton.toolTip = (
            _("Compare every test segment with its reference segment")
            if ready
            else _("Select two different segmentations and the reference volume")
        )
        self.ui.agreementTableView.setMRMLTableNode(p.agreementTable)
        self.ui.scoreSheetApplyButton.enabled = bool(
            p.referenceRtstructPath.strip() and p.traineeRtstructPath.strip() and p.scoreSheetPath.strip()
        )

    def _browse(self, title: str, current: str) -> str:
        return qt.QFileDialog.getOpenFileName(self.parent, title, current, _("DICOM (*.dcm);;All (*)")) or ""

    def onReferenceRtstructBrowse(self) -> None:
        path = self._browse(_("Reference RTSTRUCT"), self._parameterNode.referenceRtstructPath)
        if path:
            self._parameterNode.referenceRtstructPath = path

    def onTraineeRtstructBrowse(self) -> None:
        path = self._browse(_("Trainee RTSTRUCT"), self._parameterNode.traineeRtstructPath)
        if path:
            self._parameterNode.traineeRtstructPath = path

    def onScoreSheetBrowse(self) -> None:
        path = qt.QFileDialog.getSaveFileName(
            self.parent, _("Score sheet"), self._parameterNode.scoreSheetPath, _("HTML (*.html)")
        )
        if path:
            self._parameterNode.scoreSheetPath = path

    def onCompareApply(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Contour comparison failed."), waitCursor=True):
            self.logic.compareFromParameters(self._parameterNode)
            self.ui.compareSummaryLabel.text = self.logic.summary()

    def onScoreSheetApply(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Score sheet failed."), waitCursor=True):
            path = self.logic.scoreSheetFromParameters(self._parameterNode)
            self.ui.scoreSheetSummaryLabel.text = _("Score sheet written: {path}").format(path=path)


#
# SBRTContourQALogic
#


class SBRTContourQALogic(ScriptedLoadableModuleLogic):
    """Contour agreement on segmentation nodes (usable from the Python console without the GUI).

    After :meth:`compareSegmentations`: ``lastAgreements`` (reference name, test name, how matched,
    :class:`~sbrtstandards.compare.Agreement`), ``lastUnmatchedReference`` and ``lastUnmatchedTest``.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._parameterNode: SBRTContourQAParameterNode | None = None
        self.lastAgreements: list[tuple[str, str, str, Any]] = []
        self.lastUnmatchedReference: list[str] = []
        self.lastUnmatchedTest: list[str] = []
        self.lastScoreSheet: Any = None

    def getParameterNode(self) -> SBRTContourQAParameterNode:
        node = super().getParameterNode()
        if self._parameterNode is None or self._parameterNode.parameterNode != node:
            self._parameterNode = SBRTContourQAParameterNode(node)
        return self._parameterNode

    # ------------------------------------------------------------------ comparison

    def compareSegmentations(
        self,
        referenceSeg: Any,
        testSeg: Any,
        referenceVolume: Any,
        toleranceMm: float = DEFAULT_TOLERANCE_MM,
        table: Any = None,
    ) -> Any:
        """Compare every paired segment of ``testSeg`` with ``referenceSeg``; returns the table node.

        Both segmentations are sampled on ``referenceVolume``'s grid (world positions, so parent
        transforms count) and outlined per slice, then compared as planar contours like two RTSTRUCTs.
        """
        ensureRequirements()
        from sbrtstandards.compare import compare_planes, match_pairs
        from sbrtstandards.margins import mask_to_planes

        if referenceSeg is None or testSeg is None or referenceVolume is None:
            raise ValueError(_("Select the reference and test segmentations and the reference volume"))
        if referenceSeg.GetID() == testSeg.GetID():
            raise InputError(f"segmentation '{referenceSeg.GetName()}' is both the reference and the test")
        grid = grid_from_volume_node(referenceVolume)
        reference = masks_from_segmentation(referenceSeg, grid)
        test = masks_from_segmentation(testSeg, grid)
        if not reference:
            raise InputError(f"reference segmentation '{referenceSeg.GetName()}' has no segments")
        if not test:
            raise InputError(f"test segmentation '{testSeg.GetName()}' has no segments")
        pairs, self.lastUnmatchedReference, self.lastUnmatchedTest = match_pairs(list(reference), list(test))
        self.lastAgreements = []
        for ref_name, test_name, how in pairs:
            agreement = compare_planes(
                mask_to_planes(reference[ref_name], grid),
                mask_to_planes(test[test_name], grid),
                tolerance_mm=float(toleranceMm),
                names=(
                    f"segment '{ref_name}' of '{referenceSeg.GetName()}'",
                    f"segment '{test_name}' of '{testSeg.GetName()}'",
                ),
            )
            self.lastAgreements.append((ref_name, test_name, how, agreement))
        rows = agreementRows(self.lastAgreements)
        scene = referenceSeg.GetScene()
        if table is None:
            table = table_node_from_rows(scene, scene.GenerateUniqueName("Contour agreement"), AGREEMENT_COLUMNS, rows)
        else:
            update_table_node(table, AGREEMENT_COLUMNS, rows)
        logging.info("SBRT contour QA: %s", self.summary())
        return table

    def compareFromParameters(self, p: Any = None) -> Any:
        p = p or self.getParameterNode()
        p.agreementTable = self.compareSegmentations(
            p.referenceSegmentation, p.testSegmentation, p.referenceVolume, p.toleranceMm, p.agreementTable
        )
        return p.agreementTable

    def summary(self) -> str:
        """One line for the summary label: pairs compared and the structures left without a partner."""
        text = _("{n} structure pairs compared").format(n=len(self.lastAgreements))
        if self.lastUnmatchedReference:
            text += "; " + _("no test structure for: {names}").format(names=", ".join(self.lastUnmatchedReference))
        if self.lastUnmatchedTest:
            text += "; " + _("no reference structure for: {names}").format(names=", ".join(self.lastUnmatchedTest))
        return text

    # ------------------------------------------------------------------ score sheet

    def exportScoreSheet(
        self, referencePath: str, traineePath: str, outputPath: str, traineeName: str = ""
    ) -> Path:
        """Grade a trainee's RTSTRUCT against a reference RTSTRUCT and write the HTML score sheet."""
        ensureRequirements()
        from sbrtstandards.teaching import score_sheet, write_score_sheet_html

        for role, path in (("reference RTSTRUCT", referencePath), ("trainee RTSTRUCT", traineePath),
                           ("score sheet (HTML output)", outputPath)):
            if not path or not str(path).strip():
                raise InputError(f"no {role} file given")
        out = Path(str(outputPath).strip())
        inputs = {Path(str(p).strip()).resolve() for p in (referencePath, traineePath)}
        if out.resolve() in inputs:
            raise InputError(f"score sheet '{out}' would overwrite an input RTSTRUCT; choose another file")
        sheet = score_sheet(str(referencePath).strip(), str(traineePath).strip(), trainee_name=traineeName)
        self.lastScoreSheet = sheet
        return write_score_sheet_html(sheet, out)

    def scoreSheetFromParameters(self, p: Any = None) -> Path:
        p = p or self.getParameterNode()
        return self.exportScoreSheet(p.referenceRtstructPath, p.traineeRtstructPath, p.scoreSheetPath, p.traineeName)


def _finite(value: Any) -> Any:
    """None for a missing or non-finite number (the table stores it as NaN in a number column)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def agreementRows(agreements: Sequence[tuple[str, str, str, Any]]) -> list[list[Any]]:
    """One table row per compared pair (reference, test, how matched, :class:`Agreement`)."""
    rows = []
    for ref_name, test_name, how, a in agreements:
        rows.append(
            [
                ref_name,
                test_name,
                how,
                _finite(a.dice),
                _finite(a.jaccard),
                _finite(a.hd95_mm),
                _finite(a.hd_mm),
                _finite(a.msd_mm),
                _finite(a.surface_dice),
                a.tolerance_mm,
                _finite(a.volume_ratio),
                _finite(a.centroid_shift_mm),
                _finite(a.reference_volume_cc),
                _finite(a.test_volume_cc),
                "; ".join(f"{k}: {v}" for k, v in a.reasons.items()),
            ]
        )
    return rows


#
# SBRTContourQATest
#


class SBRTContourQATest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: a sphere compared with itself agrees perfectly."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SBRTContourQA_identical_spheres()

    def test_SBRTContourQA_identical_spheres(self) -> None:
        import numpy as np

        from sbrtstandards.grid import Grid
        from sbrtstandards.slicer import add_masks_to_segmentation, volume_node_from_image

        self.delayDisplay("A 10 mm sphere compared with a copy of itself")
        grid = Grid((-20.0, -20.0, -20.0), (1.0, 1.0, 1.0), (41, 41, 41))
        z, y, x = np.meshgrid(*(grid.axis_coords_mm(a) for a in (2, 1, 0)), indexing="ij")
        ball = x**2 + y**2 + z**2 <= 100.0
        volume = volume_node_from_image(slicer.mrmlScene, (np.zeros(grid.shape), grid), "CT")
        ref = add_masks_to_segmentation(None, slicer.mrmlScene, {"GTV": ball}, grid, name="Reference")
        test = add_masks_to_segmentation(None, slicer.mrmlScene, {"GTV": ball}, grid, name="Test")
        logic = SBRTContourQALogic()
        table = logic.compareSegmentations(ref, test, volume)
        agreement = logic.lastAgreements[0][3]
        self.assertAlmostEqual(agreement.dice, 1.0, places=6)
        self.assertAlmostEqual(agreement.hd_mm, 0.0, places=6)
        self.assertEqual(table.GetNumberOfRows(), 1)
        self.delayDisplay("Test passed")
