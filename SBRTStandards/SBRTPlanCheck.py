"""SBRT Plan Check: a plan's dose against the constraints of a protocol of the standards catalogue.

Five parts, in Slicer's order: module, parameter node, widget, logic, self-test. The logic reads the
dose volume (an RTDOSE loaded by SlicerRT, recognised by SlicerRT's ``DicomRtImport.DoseVolume``
attribute, never by name) and the segmentation through the MRML adapters ``sbrtstandards.slicer``,
turns each segment into planar contours (:func:`sbrtstandards.margins.mask_to_planes`) and calls the
same :func:`sbrtstandards.check.check_plan` as ``sbrt check``. Results: a constraints table (status,
value, limit, source and the RAS point to look at), a plan-metrics table, DVH curves in SlicerRT's
one-table-per-structure layout in a plot chart, and the HTML report of ``sbrt check --html``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import numpy as np
import qt
import slicer
import vtk
from SBRT4DCT import (
    Progress,
    SBRTWidgetMixin,
    catalogueProtocols,
    describeModule,
    ensureRequirements,
    fillProtocolComboBox,
    lpsToRas,
    selectComboData,
    subProgress,
)
from slicer import vtkMRMLPlotChartNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
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
    DOSE_VOLUME_ATTRIBUTE,
    dvh_plot,
    grid_from_ijk_to_ras,
    image_from_volume_node,
    is_dose_volume,
    masks_from_segmentation,
    segment_ids_by_name,
    update_table_node,
)

DOSE_UNIT_ATTRIBUTE = "DicomRtImport.DoseUnitName"  # on the subject hierarchy study item (SlicerRT)
SITE_CLASSES = ("unspecified", "peripheral", "central", "ultracentral")
CONSTRAINT_COLUMNS = (
    "Status",
    "Structure",
    "Metric",
    "Comparator",
    "Limit",
    "Minor limit",
    "Value",
    "Unit",
    "Source",
    "Reason",
    "Rule",
    "R [mm]",
    "A [mm]",
    "S [mm]",
)
METRIC_COLUMNS = ("Metric", "Value", "Note")
#: Row colours of the constraints table (light, so the text stays readable).
STATUS_COLORS = {"pass": "#c9f2c7", "minor": "#ffe7a3", "fail": "#ffb3b3", "not_evaluated": "#e0e0e0"}
HIGHLIGHT_OPACITY = 0.8
DIMMED_OPACITY = 0.1


#
# SBRTPlanCheck
#


class SBRTPlanCheck(ScriptedLoadableModule):
    """Plan evaluation against the standards (module metadata)."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        helpText = _(
            "Evaluates a plan against a protocol of the standards catalogue (the Chinese lung and liver SBRT "
            "standards, AAPM TG-101, the UK SABR liver consensus, the Michigan re-irradiation limits): DVH "
            "constraints of every organ at risk and target, and the plan-quality metrics (CI, Paddick CI, GI,"
            " R50%, D2cm, HI, hot spots outside the ITV/PTV, BED). Inputs: the dose volume (an RTDOSE loaded "
            "by SlicerRT), the segmentation (structures are matched to the protocol's roles by TG-263 and "
            "common names, or NAME=ROLE pairs), the protocol and the prescription (typed, or read from the "
            "RTPLAN file). Each constraint is pass, minor (beyond the limit but within the acceptable "
            "variation), fail, or not evaluated with the reason, and cites its source. Selecting a row jumps "
            "the slice views to the point to look at (hottest point for an upper limit, coldest for coverage)"
            " and highlights the structure. The DVH curves use SlicerRT's table layout, and the HTML report "
            "is the one of 'sbrt check --html'. "
        )
        describeModule(
            self.parent,
            title=_("SBRT Plan Check"),
            dependencies=["Segmentations", "SBRT4DCT"],
            helpText=helpText,
        )


#
# SBRTPlanCheckParameterNode
#


@parameterNodeWrapper
class SBRTPlanCheckParameterNode:
    """The module's state (saved with the scene).

    doseVolume - the dose (SlicerRT dose volume, Gy); segmentation - the structures.
    protocolId - catalogue protocol; rxGy, fractions - prescription; rtplanPath - RTPLAN file to read it from.
    siteClass - tumour location class ("unspecified": rules that depend on it are not evaluated).
    structureMap - NAME=ROLE pairs; conditions - KEY=VALUE plan facts (child_pugh=A, histology=HCC...).
    constraintsTable, metricsTable, dvhChart - outputs (created when empty); reportPath - HTML report file.
    """

    doseVolume: Optional[vtkMRMLScalarVolumeNode]
    segmentation: Optional[vtkMRMLSegmentationNode]
    protocolId: str = "cn-lung-sbrt"
    rxGy: Annotated[float, WithinRange(0.0, 200.0)] = 50.0
    fractions: Annotated[int, WithinRange(1, 60)] = 5
    siteClass: Annotated[str, Choice(list(SITE_CLASSES))] = "unspecified"
    rtplanPath: str = ""
    structureMap: str = ""
    conditions: str = ""
    reportPath: str = ""
    constraintsTable: Optional[vtkMRMLTableNode]
    metricsTable: Optional[vtkMRMLTableNode]
    dvhChart: Optional[vtkMRMLPlotChartNode]


#
# SBRTPlanCheckWidget
#


class SBRTPlanCheckWidget(SBRTWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: binds the .ui to the parameter node, runs the check, shows the coloured constraints."""

    logic: SBRTPlanCheckLogic | None
    _parameterNode: SBRTPlanCheckParameterNode | None

    def __init__(self, parent: Any = None) -> None:
        SBRTWidgetMixin.__init__(self, parent)
        self._rows: list[dict[str, Any]] = []
        self._savedDisplay: dict[str, float] = {}

    def setup(self) -> None:
        self.setupWidget("UI/SBRTPlanCheck.ui", SBRTPlanCheckLogic())
        # Only dose volumes: SlicerRT's attribute, whatever the node is called.
        self.ui.doseVolumeSelector.addAttribute("vtkMRMLScalarVolumeNode", DOSE_VOLUME_ATTRIBUTE)
        self._fillProtocols()

        self.ui.protocolComboBox.connect("currentIndexChanged(int)", self.onProtocolChanged)
        self.ui.rtplanBrowseButton.connect("clicked(bool)", self.onRtplanBrowse)
        self.ui.readRtplanButton.connect("clicked(bool)", self.onReadRtplan)
        self.ui.evaluateButton.connect("clicked(bool)", self.onEvaluateButton)
        self.ui.constraintsTableWidget.connect("itemSelectionChanged()", self.onConstraintSelected)
        self.ui.showDvhButton.connect("clicked(bool)", self.onShowDvh)
        self.ui.reportBrowseButton.connect("clicked(bool)", self.onReportBrowse)
        self.ui.exportReportButton.connect("clicked(bool)", self.onExportReport)
        self.initializeParameterNode()

    def exit(self) -> None:
        self._restoreDisplay()
        SBRTWidgetMixin.exit(self)

    def onSceneStartClose(self, caller: Any, event: Any) -> None:
        self._savedDisplay = {}
        SBRTWidgetMixin.onSceneStartClose(self, caller, event)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.doseVolume:
            doses = self.logic.doseVolumes(slicer.mrmlScene)
            if doses:
                p.doseVolume = doses[0]
        if not p.segmentation:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
            if first:
                p.segmentation = first

    def _fillProtocols(self) -> None:
        fillProtocolComboBox(self.ui.protocolComboBox)

    def _updateGUI(self, caller: Any = None, event: Any = None) -> None:
        p = self._parameterNode
        if p is None:
            return
        selectComboData(self.ui.protocolComboBox, p.protocolId)
        ready = bool(p.doseVolume and p.segmentation and p.protocolId)
        self.ui.evaluateButton.enabled = ready
        self.ui.evaluateButton.toolTip = (
            _("Evaluate the plan against the protocol")
            if ready
            else _("Select the dose volume, the segmentation and the protocol")
        )
        self.ui.readRtplanButton.enabled = bool(p.rtplanPath.strip())
        self.ui.exportReportButton.enabled = self.logic.lastResult is not None and bool(p.reportPath.strip())
        self.ui.showDvhButton.enabled = p.dvhChart is not None
        self.ui.metricsTableView.setMRMLTableNode(p.metricsTable)

    def onProtocolChanged(self, index: int) -> None:
        if self._parameterNode is None:
            return
        protocolId = self.ui.protocolComboBox.itemData(index) or ""
        if protocolId and protocolId != self._parameterNode.protocolId:
            self._parameterNode.protocolId = protocolId

    def onRtplanBrowse(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            self.parent,
            _("RTPLAN file"),
            self._parameterNode.rtplanPath,
            _("DICOM files (*.dcm);;All files (*)"),
        )
        if path:
            self._parameterNode.rtplanPath = path

    def onReadRtplan(self) -> None:
        with slicer.util.tryWithErrorDisplay(
            _("Failed to read the prescription from the RTPLAN."), waitCursor=True
        ):
            rx, fractions, warnings = self.logic.prescriptionFromRtplan(self._parameterNode.rtplanPath)
            self._parameterNode.rxGy, self._parameterNode.fractions = rx, fractions
            self.ui.statusLabel.text = "; ".join(warnings) or _("Prescription read from the RTPLAN")

    def onEvaluateButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Plan check failed."), waitCursor=True):
            self._restoreDisplay()
            outputs = self.logic.evaluateFromParameters(self._parameterNode, progress=self._progress)
            self._showConstraints(outputs.json["constraints"])
            counts = outputs.json["summary"]
            self.ui.summaryLabel.text = _(
                "{protocol}: {rx:g} Gy in {n} fractions \u2014 {passed} pass, {minor} minor, {failed} fail, "
                "{ne} not evaluated"
            ).format(
                protocol=outputs.json["protocol"]["id"],
                rx=outputs.json["protocol"]["rx_gy"],
                n=outputs.json["protocol"]["fractions"],
                passed=counts["pass"],
                minor=counts["minor"],
                failed=counts["fail"],
                ne=counts["not_evaluated"],
            )
            self.ui.warningsLabel.text = "\n".join(outputs.json["warnings"])
            if not self.ui.protocolComboBox.itemData(0):  # the catalogue could not be read before the install
                self._fillProtocols()
            self._updateGUI()
            self.onShowDvh()

    def _showConstraints(self, constraints: Sequence[Mapping[str, Any]]) -> None:
        table = self.ui.constraintsTableWidget
        rows = constraintRows(constraints)
        self._rows = list(constraints)
        table.clear()
        table.setColumnCount(len(CONSTRAINT_COLUMNS))
        table.setHorizontalHeaderLabels(list(CONSTRAINT_COLUMNS))
        table.setRowCount(len(rows))
        for r, (row, constraint) in enumerate(zip(rows, constraints)):
            color = qt.QColor(STATUS_COLORS.get(constraint["status"], "#ffffff"))
            for c, value in enumerate(row):
                item = qt.QTableWidgetItem(
                    "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
                )
                item.setBackground(qt.QBrush(color))
                item.setToolTip(constraint.get("reason") or constraint.get("source") or "")
                table.setItem(r, c, item)
        table.resizeColumnsToContents()

    def onConstraintSelected(self) -> None:
        """Jump the slice views to the constraint's point and highlight its structure."""
        rows = {item.row() for item in self.ui.constraintsTableWidget.selectedItems()}
        if len(rows) != 1 or self._parameterNode is None:
            return
        constraint = self._rows[rows.pop()]
        location = constraint.get("location_mm")
        if location is not None:
            self.logic.jumpToLocation(slicer.mrmlScene, location)
        self._restoreDisplay()
        segmentation = self._parameterNode.segmentation
        if segmentation is not None:
            self._savedDisplay = self.logic.highlightStructure(segmentation, constraint.get("structure", ""))

    def _restoreDisplay(self) -> None:
        if self._savedDisplay and self._parameterNode and self._parameterNode.segmentation:
            self.logic.restoreDisplay(self._parameterNode.segmentation, self._savedDisplay)
        self._savedDisplay = {}

    def onShowDvh(self) -> None:
        chart = self._parameterNode.dvhChart if self._parameterNode else None
        if chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)

    def onReportBrowse(self) -> None:
        path = qt.QFileDialog.getSaveFileName(
            self.parent,
            _("HTML report"),
            self._parameterNode.reportPath or "plan-check.html",
            _("HTML files (*.html)"),
        )
        if path:
            self._parameterNode.reportPath = path

    def onExportReport(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to write the HTML report."), waitCursor=True):
            path = self.logic.exportReport(self._parameterNode.reportPath)
            self.ui.statusLabel.text = _("Report written: {path}").format(path=path)
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(path)))


#
# SBRTPlanCheckLogic
#


@dataclass
class PlanCheckOutputs:
    """What one evaluation produced: the core result, its JSON (the ``sbrt check`` contract) and the nodes."""

    result: Any  # sbrtstandards.check.CheckResult
    json: dict[str, Any]
    constraintsTable: Any
    metricsTable: Any
    dvhChart: Any
    warnings: list[str] = field(default_factory=list)


class SBRTPlanCheckLogic(ScriptedLoadableModuleLogic):
    """Plan check on MRML nodes, without the GUI (usable from the Python console).

    Example::

        logic = slicer.util.getModuleLogic("SBRTPlanCheck")
        out = logic.evaluate(getNode("RTDOSE"), getNode("RTSTRUCT"), "cn-lung-sbrt", 54.0, 3)
        print(out.json["summary"])
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._parameterNode: SBRTPlanCheckParameterNode | None = None
        self.lastResult: Any = None

    def getParameterNode(self) -> SBRTPlanCheckParameterNode:
        node = super().getParameterNode()
        if self._parameterNode is None or self._parameterNode.parameterNode != node:
            self._parameterNode = SBRTPlanCheckParameterNode(node)
        return self._parameterNode

    # ------------------------------------------------------------------ inputs

    @staticmethod
    def protocols() -> list[Any]:
        """The catalogue's protocols, sorted by id (:func:`SBRT4DCT.catalogueProtocols`)."""
        return catalogueProtocols()

    @staticmethod
    def doseVolumes(scene: Any) -> list[Any]:
        """Scalar volume nodes that SlicerRT (or this package) marked as dose."""
        nodes = [
            scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode")
            for n in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
        ]
        return [node for node in nodes if is_dose_volume(node)]

    @staticmethod
    def doseUnit(doseVolume: Any) -> str | None:
        """The dose unit SlicerRT stored on the dose's study item ("GY", "RELATIVE"), None when unknown."""
        scene = doseVolume.GetScene()
        if scene is None:
            return None
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        item = sh.GetItemByDataNode(doseVolume) if sh is not None else 0
        while item and item != sh.GetSceneItemID():
            value = sh.GetItemAttribute(item, DOSE_UNIT_ATTRIBUTE)
            if value:
                return str(value)
            item = sh.GetItemParent(item)
        return None

    @staticmethod
    def prescriptionFromRtplan(path: str) -> tuple[float, int, list[str]]:
        """(total Rx in Gy, fractions, warnings) read from an RTPLAN file with the core's reader."""
        from sbrtstandards.dicom.rtplan import read_rtplan

        if not path or not path.strip():
            raise InputError("no RTPLAN file given")
        plan = read_rtplan(path.strip())
        if plan.rx_gy is None or not plan.fractions:
            raise InputError(f"{path}: the RTPLAN holds no usable prescription ({'; '.join(plan.warnings)})")
        return float(plan.rx_gy), int(plan.fractions), list(plan.warnings)

    @staticmethod
    def parseStructureMap(text: str) -> dict[str, str]:
        """``"Cord=spinal_cord; Lung=lungs"`` -> {name: role}, checked like ``sbrt check --map``."""
        from sbrtstandards.names import parse_map_options

        return parse_map_options(part.strip() for part in text.replace("\n", ";").split(";") if part.strip())

    @staticmethod
    def parseConditions(text: str) -> dict[str, Any]:
        """``"child_pugh=A; reirradiation=true"`` -> plan facts, parsed like ``sbrt check --condition``."""
        from sbrtstandards.check import parse_conditions

        return parse_conditions(p.strip() for p in text.replace("\n", ";").split(";") if p.strip())

    # ------------------------------------------------------------------ structures

    @staticmethod
    def structureGrid(segmentationNode: Any, fallback: Grid) -> Grid:
        """The grid the segments are rasterised on: the segmentation's reference geometry (the CT of an
        RTSTRUCT, the volume a segmentation was drawn on), else ``fallback`` (the dose grid)."""
        from sbrtstandards.slicer.geometry import node_to_world, numpy_matrix

        text = segmentationNode.GetSegmentation().GetConversionParameter("Reference image geometry")
        image = slicer.vtkOrientedImageData()
        if not text or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(text, image):
            return fallback
        extent = image.GetExtent()
        size = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
        if min(size) <= 0:
            return fallback
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        to_world = node_to_world(segmentationNode) @ numpy_matrix(matrix)
        to_world[:3, 3] = (to_world @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
        return grid_from_ijk_to_ras(to_world, size, what=f"segmentation '{segmentationNode.GetName()}'")

    def structurePlanes(
        self,
        segmentationNode: Any,
        grid: Grid,
        wanted: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> dict[str, dict[float, list[np.ndarray]]]:
        """Segment name -> planar contours ``{z_mm: [xy polygons]}`` of its mask on ``grid``.

        Only the segments in ``wanted`` are outlined (the others get no contours: they play no role);
        all when None.
        """
        from sbrtstandards.margins import mask_to_planes

        ids = segment_ids_by_name(segmentationNode)
        names = list(ids) if wanted is None else [n for n in ids if n in set(wanted)]
        planes: dict[str, dict[float, list[np.ndarray]]] = {name: {} for name in ids}
        for n, name in enumerate(names):
            if progress:
                progress(n / max(len(names), 1), _("Contours of {name}").format(name=name))
            mask = masks_from_segmentation(segmentationNode, grid, [ids[name]])[name]
            planes[name] = mask_to_planes(mask, grid) if mask.any() else {}
        return planes

    # ------------------------------------------------------------------ evaluation

    def evaluateFromParameters(self, p: Any = None, progress: Progress | None = None) -> PlanCheckOutputs:
        """Evaluate with the parameter node's inputs; the output nodes go back into the node."""
        p = p or self.getParameterNode()
        outputs = self.evaluate(
            p.doseVolume,
            p.segmentation,
            p.protocolId,
            p.rxGy,
            p.fractions,
            siteClass=None if p.siteClass == "unspecified" else p.siteClass,
            mapping=self.parseStructureMap(p.structureMap),
            conditions=self.parseConditions(p.conditions),
            constraintsTable=p.constraintsTable,
            metricsTable=p.metricsTable,
            dvhChart=p.dvhChart,
            progress=progress,
        )
        p.constraintsTable, p.metricsTable, p.dvhChart = (
            outputs.constraintsTable,
            outputs.metricsTable,
            outputs.dvhChart,
        )
        return outputs

    def evaluate(
        self,
        doseVolume: Any,
        segmentationNode: Any,
        protocolId: str,
        rxGy: float,
        fractions: int,
        *,
        siteClass: str | None = None,
        mapping: Mapping[str, str] | None = None,
        conditions: Mapping[str, Any] | None = None,
        constraintsTable: Any = None,
        metricsTable: Any = None,
        dvhChart: Any = None,
        progress: Progress | None = None,
    ) -> PlanCheckOutputs:
        """Check the plan and fill the constraints table, the plan-metrics table and the DVH chart."""
        from sbrtstandards import names as names_mod
        from sbrtstandards.catalogue import load_protocol
        from sbrtstandards.check import check_plan
        from sbrtstandards.dicom.rtdose import DoseGrid

        if doseVolume is None or segmentationNode is None:
            raise ValueError(_("Select the dose volume and the segmentation"))
        ensureRequirements()
        if not is_dose_volume(doseVolume):
            raise InputError(
                f"volume '{doseVolume.GetName()}' is not a dose volume "
                f"(no {DOSE_VOLUME_ATTRIBUTE} attribute): "
                "load the RTDOSE through the DICOM module with SlicerRT, or mark the volume as dose"
            )
        unit = self.doseUnit(doseVolume)
        if unit is not None and unit.upper() != "GY":
            raise InputError(
                f"dose volume '{doseVolume.GetName()}' is in '{unit}', not in Gy: an absolute dose is needed"
            )
        start = time.time()
        scene = doseVolume.GetScene()
        dose_gy, dose_grid = image_from_volume_node(doseVolume)
        dose = DoseGrid.from_array(dose_gy, dose_grid)
        grid = self.structureGrid(segmentationNode, dose_grid)
        protocol = load_protocol(protocolId)
        names = list(segment_ids_by_name(segmentationNode))
        match = names_mod.match_structures(names, mapping, wanted_roles=protocol.roles())
        wanted = sorted({n for group in match.roles.values() for n in group})
        planes = self.structurePlanes(
            segmentationNode, grid, wanted, progress=subProgress(progress, 0.0, 0.3)
        )
        result = check_plan(
            planes,
            dose,
            protocol_id=protocolId,
            rx_gy=float(rxGy),
            fractions=int(fractions),
            site_class=siteClass,
            mapping=mapping,
            conditions=conditions,
            slice_spacing_mm=grid.spacing_mm[2],
            progress=subProgress(progress, 0.3, 0.95),
        )
        data = result.to_json()
        if constraintsTable is None:
            constraintsTable = scene.AddNewNodeByClass(
                "vtkMRMLTableNode", scene.GenerateUniqueName(f"{protocolId} constraints")
            )
        update_table_node(constraintsTable, CONSTRAINT_COLUMNS, constraintRows(data["constraints"]))
        constraintsTable.SetAttribute("SBRTStandards.Protocol", protocolId)
        if metricsTable is None:
            metricsTable = scene.AddNewNodeByClass(
                "vtkMRMLTableNode", scene.GenerateUniqueName(f"{protocolId} plan metrics")
            )
        update_table_node(
            metricsTable, METRIC_COLUMNS, metricRows(data["plan_metrics"], data["plan_metric_reasons"])
        )
        dvhChart = self.showDvhs(result, doseVolume, segmentationNode, dvhChart)
        self.lastResult = result
        if progress:
            progress(1.0, _("Done"))
        logging.info("SBRT plan check: %s in %.1f s: %s", protocolId, time.time() - start, data["summary"])
        return PlanCheckOutputs(
            result, data, constraintsTable, metricsTable, dvhChart, list(data["warnings"])
        )

    def showDvhs(self, result: Any, doseVolume: Any, segmentationNode: Any, chart: Any = None) -> Any:
        """DVH curves of the evaluated structures in ``chart`` (our earlier series there are replaced)."""
        from sbrtstandards.slicer.tables import SOURCE_ATTRIBUTE

        scene = doseVolume.GetScene()
        if chart is not None:
            for index in reversed(range(chart.GetNumberOfPlotSeriesNodes())):
                series = chart.GetNthPlotSeriesNode(index)
                if series is not None and series.GetAttribute(SOURCE_ATTRIBUTE) == "SBRTStandards":
                    table = series.GetTableNode()
                    chart.RemovePlotSeriesNodeID(series.GetID())
                    scene.RemoveNode(series)
                    if table is not None:
                        scene.RemoveNode(table)
        ids = segment_ids_by_name(segmentationNode)
        curves, colors, segment_ids = {}, {}, {}
        for name, dvh in result.dvhs.items():
            if dvh.volume_inside_cc <= 0:
                continue
            dose, volume_cc = dvh.curve(200)
            curves[name] = (dose, 100.0 * volume_cc / dvh.volume_inside_cc)
            first = name.split("+")[0]
            if first in ids:
                colors[name] = segmentationNode.GetSegmentation().GetSegment(ids[first]).GetColor()
                segment_ids[name] = ids[first]
        return dvh_plot(
            scene,
            curves,
            chart=chart,
            chart_name=scene.GenerateUniqueName("SBRT DVH"),
            colors=colors,
            segment_ids=segment_ids,
            dose_volume_node=doseVolume,
            segmentation_node=segmentationNode,
        )

    def exportReport(self, path: str, result: Any = None) -> Any:
        """Write the HTML report of the last evaluation (or ``result``) to ``path``; returns the path."""
        ensureRequirements()
        from sbrtstandards.check_report import write_check_html

        result = result if result is not None else self.lastResult
        if result is None:
            raise ValueError(_("Evaluate the plan first"))
        if not path or not str(path).strip():
            raise InputError("no report file given")
        return write_check_html(result, str(path).strip())

    # ------------------------------------------------------------------ viewing

    @staticmethod
    def jumpToLocation(scene: Any, location_mm: Sequence[float]) -> list[float]:
        """Centre every slice view on an LPS point of the check (converted to RAS); returns the RAS point."""
        ras = lpsToRas(location_mm)
        slicer.vtkMRMLSliceNode.JumpAllSlices(
            scene, ras[0], ras[1], ras[2], slicer.vtkMRMLSliceNode.CenteredJumpSlice
        )
        return ras

    @staticmethod
    def highlightStructure(segmentationNode: Any, structure: str) -> dict[str, float]:
        """Show the structure's segment(s) filled and dim the others; returns the opacities to restore.

        A union label of the check ("Lung_L+Lung_R") highlights each part.
        """
        display = segmentationNode.GetDisplayNode()
        if display is None:
            return {}
        ids = segment_ids_by_name(segmentationNode)
        chosen = {ids[part] for part in str(structure).split("+") if part in ids}
        if not chosen:
            return {}
        saved = {sid: display.GetSegmentOpacity2DFill(sid) for sid in ids.values()}
        for sid in ids.values():
            if sid in chosen:
                display.SetSegmentVisibility(sid, True)
                display.SetSegmentOpacity2DFill(sid, HIGHLIGHT_OPACITY)
            else:
                display.SetSegmentOpacity2DFill(sid, min(saved[sid], DIMMED_OPACITY))
        return saved

    @staticmethod
    def restoreDisplay(segmentationNode: Any, saved: Mapping[str, float]) -> None:
        """Put back the fill opacities saved by :meth:`highlightStructure`."""
        display = segmentationNode.GetDisplayNode()
        if display is None:
            return
        for sid, opacity in saved.items():
            if segmentationNode.GetSegmentation().GetSegment(sid) is not None:
                display.SetSegmentOpacity2DFill(sid, opacity)


def _limitText(limit: Any) -> Any:
    if isinstance(limit, (list, tuple)):
        return " \u2013 ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in limit)
    return limit


def constraintRows(constraints: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Rows of the constraints table from the ``sbrt check`` JSON constraints (location LPS -> RAS)."""
    rows = []
    for c in constraints:
        ras = lpsToRas(c["location_mm"]) if c.get("location_mm") is not None else [None, None, None]
        limit, minor = _limitText(c.get("limit")), _limitText(c.get("minor_limit"))
        rows.append(
            [
                c["status"],
                c["structure"],
                c["metric"],
                c["comparator"],
                "" if limit is None else str(limit),
                "" if minor is None else str(minor),
                c.get("value"),
                c.get("unit", ""),
                c.get("source", ""),
                c.get("reason", ""),
                c["id"],
                ras[0],
                ras[1],
                ras[2],
            ]
        )
    return rows


def metricRows(metrics: Mapping[str, Any], reasons: Mapping[str, str]) -> list[list[Any]]:
    """Rows of the plan-metrics table: key, value (None when it cannot be computed) and the reason."""
    return [[key, value, reasons.get(key, "")] for key, value in metrics.items()]


#
# SBRTPlanCheckTest
#


class SBRTPlanCheckTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: the synthetic lung plan against the lung standard."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SBRTPlanCheck_lung_case()

    def test_SBRTPlanCheck_lung_case(self) -> None:
        from sbrtstandards.phantom import make_case
        from sbrtstandards.slicer import add_masks_to_segmentation, volume_node_from_image

        self.delayDisplay("Building the synthetic lung plan")
        ensureRequirements()
        case = make_case("lung", phases=4)
        dose = volume_node_from_image(
            slicer.mrmlScene, (case.dose_gy, case.dose_grid), "Phantom dose", dose=True
        )
        keep = ("PTV", "ITV", "Body", "Lung_L", "Lung_R", "SpinalCord", "Esophagus", "Heart", "Trachea")
        seg = add_masks_to_segmentation(
            None,
            slicer.mrmlScene,
            {n: case.structures[n] for n in keep},
            case.grid,
            name="Phantom structures",
        )
        logic = SBRTPlanCheckLogic()
        p = logic.getParameterNode()
        p.doseVolume, p.segmentation, p.protocolId = dose, seg, "cn-lung-sbrt"
        p.rxGy, p.fractions, p.siteClass = case.rx_gy, case.fractions, case.truth["tumour"]["location_class"]
        outputs = logic.evaluateFromParameters(p)

        self.delayDisplay("Checking the tables and the chart")
        self.assertEqual(p.constraintsTable.GetNumberOfRows(), len(outputs.json["constraints"]))
        self.assertGreater(p.dvhChart.GetNumberOfPlotSeriesNodes(), 0)
        statuses = {c["status"] for c in outputs.json["constraints"]}
        self.assertTrue(statuses <= {"pass", "minor", "fail", "not_evaluated"})
        ptv = next(s for s in outputs.json["structures"] if s["name"] == "PTV")
        self.assertAlmostEqual(
            ptv["volume_cc"], case.truth["ptv"]["cc"], delta=0.05 * case.truth["ptv"]["cc"]
        )
        self.delayDisplay("Test passed")
