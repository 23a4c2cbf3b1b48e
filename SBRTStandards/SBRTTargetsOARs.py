"""SBRT Targets & OARs: exact margins (PTV, PRVs, rings) and the organs at risk the standards derive by rule.

Five parts, in Slicer's order: module, parameter node, widget, logic, self-test. The logic reads the
segmentation and the CT through the MRML adapters ``sbrtstandards.slicer`` and calls the core
functions of ``sbrt margin`` and ``sbrt oars``: :func:`sbrtstandards.margins.grow` / ``shrink`` /
``ring`` (exact Euclidean margins, isotropic or per direction R, L, A, P, S, I) and
:func:`sbrtstandards.oars.build_oars` (chest wall, great vessels, lungs minus target, normal liver,
proximal bronchial tree and its 2 cm zone, the D2cm region, the tumour location class and the
fractionation options it implies). Every structure built by a rule carries the rule and its source as
segment tags, and the OAR table shows them next to each structure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import numpy as np
import slicer
from SBRT4DCT import (
    Progress,
    SBRTWidgetMixin,
    describeModule,
    ensureRequirements,
    rgb01,
    subProgress,
)
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
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
from sbrtstandards.slicer import (
    ROLE_TAG,
    TG263_TAG,
    add_masks_to_segmentation,
    grid_from_volume_node,
    masks_from_segmentation,
    segment_ids_by_name,
    segment_tag,
    update_table_node,
)

RULE_TAG = "SBRTStandards.Rule"
SOURCE_TAG = "SBRTStandards.Source"
BINARY_LABELMAP = "Binary labelmap"
DIRECTIONS = ("R", "L", "A", "P", "S", "I")
OAR_TABLE_COLUMNS = ("Structure", "Role", "Volume [cc]", "Rule", "Source", "Built from")
FRACTIONATION_COLUMNS = (
    "Dose [Gy]",
    "Fractions",
    "Dose per fraction [Gy]",
    "BED10 [Gy]",
    "Indication",
    "Source",
)


#
# SBRTTargetsOARs
#


class SBRTTargetsOARs(ScriptedLoadableModule):
    """Targets (PTV, PRVs, rings) and rule-derived OARs (module metadata)."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        helpText = _(
            "Grows a segment by an exact Euclidean margin, isotropic or per direction (R, L, A, P, S, I in "
            "mm, as treatment planning systems define asymmetric margins), e.g. PTV = ITV + 5 mm; shrinks; "
            "makes planning organ-at-risk volumes (PRV = organ + margin) and rings (shells between two "
            "distances). The margin is computed on the contours, not on voxel staircases, so small targets on"
            " thick slices keep their true size. Builds the organs at risk that the lung and liver SBRT "
            "standards derive by rule, from the CT and the segments that exist (matched by TG-263 name, "
            "common and Chinese names, or NAME=ROLE pairs): body, lungs, lungs minus GTV/ITV, ipsilateral "
            "chest wall, great vessels, proximal bronchial tree and its 2 cm zone, normal liver, the D2cm "
            "region; and classifies the lung tumour as peripheral, central or ultra-central, with the "
            "fractionation schemes that the standard allows for that class. Each built segment keeps its rule"
            " and source as segment tags. "
        )
        describeModule(
            self.parent,
            title=_("SBRT Targets & OARs"),
            dependencies=["Segmentations", "SBRT4DCT"],
            helpText=helpText,
        )


#
# SBRTTargetsOARsParameterNode
#


@parameterNodeWrapper
class SBRTTargetsOARsParameterNode:
    """The module's state (saved with the scene).

    referenceVolume - the CT (usually the 4D-CT AVG): the grid of every result and the HU for the OARs.
    segmentation - input structures; every result is added to it (a segment of the same name is replaced).
    marginSourceId, marginOutputName, perDirection, isotropicMm, marginRMm..marginIMm, shrink - the margin.
    prvSourceId, prvMarginMm - a PRV; ringSourceId, ringInnerMm, ringOuterMm - a ring.
    oarTargetId, site, side, limitChestWall, chestWallLimitMm, cordPrv, cordPrvMm, structureMap - the OARs.
    oarTable, fractionationTable - outputs (created when empty).
    """

    referenceVolume: Optional[vtkMRMLScalarVolumeNode]
    segmentation: Optional[vtkMRMLSegmentationNode]
    marginSourceId: str = ""
    marginOutputName: str = "PTV"
    perDirection: bool = False
    shrink: bool = False
    isotropicMm: Annotated[float, WithinRange(0.0, 50.0)] = 5.0
    marginRMm: Annotated[float, WithinRange(0.0, 50.0)] = 5.0
    marginLMm: Annotated[float, WithinRange(0.0, 50.0)] = 5.0
    marginAMm: Annotated[float, WithinRange(0.0, 50.0)] = 5.0
    marginPMm: Annotated[float, WithinRange(0.0, 50.0)] = 5.0
    marginSMm: Annotated[float, WithinRange(0.0, 50.0)] = 5.0
    marginIMm: Annotated[float, WithinRange(0.0, 50.0)] = 5.0
    prvSourceId: str = ""
    prvMarginMm: Annotated[int, WithinRange(1, 50)] = 5
    ringSourceId: str = ""
    ringInnerMm: Annotated[float, WithinRange(0.0, 49.0)] = 0.0
    ringOuterMm: Annotated[float, WithinRange(1.0, 50.0)] = 20.0
    oarTargetId: str = ""
    site: Annotated[str, Choice(["auto", "lung", "liver"])] = "auto"
    side: Annotated[str, Choice(["auto", "left", "right"])] = "auto"
    limitChestWall: bool = False
    chestWallLimitMm: Annotated[float, WithinRange(5.0, 50.0)] = 30.0
    cordPrv: bool = False
    cordPrvMm: Annotated[int, WithinRange(1, 20)] = 5
    structureMap: str = ""
    oarTable: Optional[vtkMRMLTableNode]
    fractionationTable: Optional[vtkMRMLTableNode]


#
# SBRTTargetsOARsWidget
#

# Segment selectors (qMRMLSegmentSelectorWidget) and the parameter node fields holding their segment IDs:
# segment IDs cannot be bound through "SlicerParameterName", so these four are synchronised here.
SEGMENT_SELECTORS = {
    "marginSegmentSelector": "marginSourceId",
    "prvSegmentSelector": "prvSourceId",
    "ringSegmentSelector": "ringSourceId",
    "oarTargetSegmentSelector": "oarTargetId",
}


class SBRTTargetsOARsWidget(SBRTWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: binds the .ui to the parameter node, runs the logic, shows the OAR and scheme tables."""

    logic: SBRTTargetsOARsLogic | None
    _parameterNode: SBRTTargetsOARsParameterNode | None

    def __init__(self, parent: Any = None) -> None:
        SBRTWidgetMixin.__init__(self, parent)
        self._updatingSelectors = False

    def setup(self) -> None:
        self.setupWidget("UI/SBRTTargetsOARs.ui", SBRTTargetsOARsLogic())

        for selectorName in SEGMENT_SELECTORS:
            selector = getattr(self.ui, selectorName)
            selector.segmentationNodeSelectorVisible = False
            selector.connect("currentSegmentChanged(QString)", self.onSegmentSelectionChanged)
        self.ui.marginApplyButton.connect("clicked(bool)", self.onMarginApplyButton)
        self.ui.prvApplyButton.connect("clicked(bool)", self.onPrvApplyButton)
        self.ui.ringApplyButton.connect("clicked(bool)", self.onRingApplyButton)
        self.ui.oarApplyButton.connect("clicked(bool)", self.onOarApplyButton)
        self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.referenceVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.GetAttribute("DicomRtImport.DoseVolume"):
                p.referenceVolume = first
        if not p.segmentation:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
            if first:
                p.segmentation = first

    def _updateGUI(self, caller: Any = None, event: Any = None) -> None:
        """Segment selectors from the node; what is enabled depends on what is selected."""
        p = self._parameterNode
        if p is None:
            return
        self._updatingSelectors = True
        try:
            for selectorName, fieldName in SEGMENT_SELECTORS.items():
                selector = getattr(self.ui, selectorName)
                selector.setCurrentNode(p.segmentation)
                selector.setCurrentSegmentID(getattr(p, fieldName))
        finally:
            self._updatingSelectors = False
        ready = bool(p.referenceVolume and p.segmentation)
        self.ui.marginApplyButton.enabled = ready and bool(p.marginSourceId)
        self.ui.prvApplyButton.enabled = ready and bool(p.prvSourceId)
        self.ui.ringApplyButton.enabled = ready and bool(p.ringSourceId)
        self.ui.oarApplyButton.enabled = ready and bool(p.oarTargetId)
        for direction in DIRECTIONS:
            getattr(self.ui, f"margin{direction}SpinBox").enabled = p.perDirection
        self.ui.isotropicSpinBox.enabled = not p.perDirection
        self.ui.chestWallLimitSpinBox.enabled = p.limitChestWall
        self.ui.cordPrvSpinBox.enabled = p.cordPrv
        self.ui.oarTableView.setMRMLTableNode(p.oarTable)
        self.ui.fractionationTableView.setMRMLTableNode(p.fractionationTable)

    def onSegmentSelectionChanged(self, segmentId: str) -> None:
        if self._updatingSelectors or self._parameterNode is None:
            return
        for selectorName, fieldName in SEGMENT_SELECTORS.items():
            value = getattr(self.ui, selectorName).currentSegmentID() or ""
            if getattr(self._parameterNode, fieldName) != value:
                setattr(self._parameterNode, fieldName, value)

    def _convertSourceConsent(self) -> bool:
        """Ask before switching a segmentation stored as contours (RTSTRUCT) to binary labelmaps."""
        segmentation = self._parameterNode.segmentation
        if not self.logic.needsSourceConversion(segmentation):
            return False
        if not slicer.util.confirmOkCancelDisplay(
            _(
                "Segmentation '{name}' is stored as '{source}'. New segments need binary labelmaps: "
                "convert it? "
                "(As the Segment Editor does; the contours are kept as a derived representation.)"
            ).format(
                name=segmentation.GetName(),
                source=segmentation.GetSegmentation().GetSourceRepresentationName(),
            )
        ):
            raise ValueError(_("Cancelled: the segmentation was not converted."))
        return True

    def onMarginApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to apply the margin."), waitCursor=True):
            p = self._parameterNode
            segmentId = self.logic.applyMargin(
                p, convertSource=self._convertSourceConsent(), progress=self._progress
            )
            self.ui.statusLabel.text = self.logic.describeSegment(p.segmentation, segmentId)

    def onPrvApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to make the PRV."), waitCursor=True):
            p = self._parameterNode
            segmentId = self.logic.makePrv(
                p.segmentation,
                p.prvSourceId,
                p.referenceVolume,
                p.prvMarginMm,
                convertSource=self._convertSourceConsent(),
                progress=self._progress,
            )
            self.ui.statusLabel.text = self.logic.describeSegment(p.segmentation, segmentId)

    def onRingApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to make the ring."), waitCursor=True):
            p = self._parameterNode
            segmentId = self.logic.makeRing(
                p.segmentation,
                p.ringSourceId,
                p.referenceVolume,
                p.ringInnerMm,
                p.ringOuterMm,
                convertSource=self._convertSourceConsent(),
                progress=self._progress,
            )
            self.ui.statusLabel.text = self.logic.describeSegment(p.segmentation, segmentId)

    def onOarApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to generate the organs at risk."), waitCursor=True):
            result = self.logic.generateOarsFromParameters(
                self._parameterNode, convertSource=self._convertSourceConsent(), progress=self._progress
            )
            self.ui.locationLabel.text = result.locationText()
            self.ui.warningsLabel.text = "\n".join(result.warnings)
            self._updateGUI()


#
# SBRTTargetsOARsLogic
#


@dataclass
class OarOutputs:
    """What an OAR run produced: the core result, the new segment IDs, the tables and the warnings."""

    result: Any  # sbrtstandards.oars.OarResult
    segmentIds: dict[str, str]  # structure name -> segment ID
    oarTable: Any
    fractionationTable: Any
    warnings: list[str] = field(default_factory=list)

    def locationText(self) -> str:
        loc = self.result.location
        if loc is None:
            return _("Location class: not applicable (site: {site})").format(site=self.result.site)
        if loc.site_class is None:
            return _("Location class: undecided ({reason})").format(reason=loc.reason)
        return _("Location class: {cls} ({reason})").format(cls=loc.site_class, reason=loc.reason)


class SBRTTargetsOARsLogic(ScriptedLoadableModuleLogic):
    """Margins, PRVs, rings and rule-derived OARs on MRML nodes, without the GUI.

    Example (Python console)::

        from sbrtstandards.margins import Margin
        logic = slicer.util.getModuleLogic("SBRTTargetsOARs")
        seg, ct = getNode("ITV"), getNode("4D-CT AVG")
        logic.growSegment(seg, seg.GetSegmentation().GetSegmentIdBySegmentName("ITV"), ct,
                          Margin(5, 5, 5, 5, 8, 8), "PTV")
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._parameterNode: SBRTTargetsOARsParameterNode | None = None

    def getParameterNode(self) -> SBRTTargetsOARsParameterNode:
        node = super().getParameterNode()
        if self._parameterNode is None or self._parameterNode.parameterNode != node:
            self._parameterNode = SBRTTargetsOARsParameterNode(node)
        return self._parameterNode

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def needsSourceConversion(segmentationNode: Any) -> bool:
        """True when new segments would need the segmentation switched to binary labelmaps (an RTSTRUCT)."""
        segmentation = segmentationNode.GetSegmentation()
        return (
            segmentation.GetNumberOfSegments() > 0
            and segmentation.GetSourceRepresentationName() != BINARY_LABELMAP
        )

    @staticmethod
    def describeSegment(segmentationNode: Any, segmentId: str) -> str:
        """``"PTV: ITV grown by 5 mm (exact Euclidean margin)"``: a built segment and its rule, for the status line."""
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            return ""
        rule = segment_tag(segmentationNode, segmentId, RULE_TAG)
        return f"{segment.GetName()}: {rule}" if rule else segment.GetName()

    @staticmethod
    def marginFromParameters(p: Any) -> Any:
        """The :class:`sbrtstandards.margins.Margin` of the parameter node (isotropic or R, L, A, P, S, I)."""
        from sbrtstandards.margins import Margin

        if p.perDirection:
            return Margin(p.marginRMm, p.marginLMm, p.marginAMm, p.marginPMm, p.marginSMm, p.marginIMm)
        return Margin.isotropic(p.isotropicMm)

    @staticmethod
    def parseStructureMap(text: str) -> list[str]:
        """``"Cord=spinal_cord; VB=vertebra"`` -> ``["Cord=spinal_cord", "VB=vertebra"]`` (as ``--map``)."""
        return [part.strip() for part in text.replace("\n", ";").split(";") if part.strip()]

    def _readSegment(
        self, segmentationNode: Any, segmentId: str, referenceVolume: Any
    ) -> tuple[str, np.ndarray, Any]:
        """(segment name, mask on the reference volume's grid, grid)."""
        if segmentationNode is None or referenceVolume is None:
            raise ValueError(_("Select the reference volume (CT) and the segmentation"))
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId or "")
        if segment is None:
            raise InputError(
                f"segmentation '{segmentationNode.GetName()}' has no segment with ID '{segmentId}'"
            )
        grid = grid_from_volume_node(referenceVolume)
        name = segment.GetName()
        mask = masks_from_segmentation(segmentationNode, grid, [segmentId])[name]
        if not mask.any():
            raise InputError(
                f"segment '{name}' has no voxel on the grid of '{referenceVolume.GetName()}' "
                f"({grid.describe()})"
            )
        return name, mask, grid

    def _writeSegment(
        self,
        segmentationNode: Any,
        name: str,
        mask: np.ndarray,
        grid: Any,
        tags: Mapping[str, str],
        *,
        convertSource: bool,
    ) -> str:
        from sbrtstandards import tg263

        add_masks_to_segmentation(
            segmentationNode,
            segmentationNode.GetScene(),
            {name: mask},
            grid,
            colors={name: rgb01(tg263.color_for(name))},
            tags={name: dict(tags)},
            convert_source=convertSource,
        )
        return segment_ids_by_name(segmentationNode)[name]

    # ------------------------------------------------------------------ margins

    def applyMargin(
        self, p: Any = None, *, convertSource: bool = False, progress: Progress | None = None
    ) -> str:
        """The margin section of the parameter node: grow (or shrink) the source into the output segment."""
        p = p or self.getParameterNode()
        return self.growSegment(
            p.segmentation,
            p.marginSourceId,
            p.referenceVolume,
            self.marginFromParameters(p),
            p.marginOutputName,
            shrink=p.shrink,
            convertSource=convertSource,
            progress=progress,
        )

    def growSegment(
        self,
        segmentationNode: Any,
        segmentId: str,
        referenceVolume: Any,
        margin: Any,
        outputName: str,
        *,
        shrink: bool = False,
        convertSource: bool = False,
        progress: Progress | None = None,
    ) -> str:
        """Add segment ``outputName`` = the segment grown (or shrunk) by ``margin``; returns its segment ID.

        ``margin`` is a :class:`sbrtstandards.margins.Margin`, a number of mm or text ("5" or
        "5,5,5,5,8,8" in R,L,A,P,S,I order). The result is on ``referenceVolume``'s grid.
        """
        from sbrtstandards import names
        from sbrtstandards.margins import as_margin, grow
        from sbrtstandards.margins import shrink as shrink_mask

        ensureRequirements()
        outputName = (outputName or "").strip()
        if not outputName:
            raise InputError("the margin's output segment needs a name (e.g. PTV)")
        start = time.time()
        m = as_margin(margin)
        name, mask, grid = self._readSegment(segmentationNode, segmentId, referenceVolume)
        operation = shrink_mask if shrink else grow
        result = operation(mask, grid, m, name=name, progress=progress)
        verb = "shrunk" if shrink else "grown"
        tags = {
            RULE_TAG: f"{name} {verb} by {m} (exact Euclidean margin)",
            SOURCE_TAG: "sbrtstandards.margins",
        }
        roles = names.candidates(outputName)
        if roles:
            tags[ROLE_TAG] = roles[0][0]
        newId = self._writeSegment(
            segmentationNode, outputName, result, grid, tags, convertSource=convertSource
        )
        logging.info(
            "SBRT margin: %s %s by %s -> %s in %.1f s", name, verb, m, outputName, time.time() - start
        )
        return newId

    def makePrv(
        self,
        segmentationNode: Any,
        segmentId: str,
        referenceVolume: Any,
        marginMm: float,
        *,
        convertSource: bool = False,
        progress: Progress | None = None,
    ) -> str:
        """Add the PRV of a segment (organ + isotropic margin, TG-263 name ``Organ_PRVnn``); its ID."""
        from sbrtstandards import tg263
        from sbrtstandards.margins import Margin, grow

        ensureRequirements()
        name, mask, grid = self._readSegment(segmentationNode, segmentId, referenceVolume)
        prvName = tg263.prv_name(name, float(marginMm))
        result = grow(mask, grid, Margin.isotropic(float(marginMm)), name=name, progress=progress)
        tags = {
            RULE_TAG: f"{name} + {float(marginMm):g} mm (exact isotropic margin)",
            SOURCE_TAG: "ICRU 62 planning organ-at-risk volume (PRV = OAR + margin)",
            ROLE_TAG: "prv",
        }
        return self._writeSegment(segmentationNode, prvName, result, grid, tags, convertSource=convertSource)

    def makeRing(
        self,
        segmentationNode: Any,
        segmentId: str,
        referenceVolume: Any,
        innerMm: float,
        outerMm: float,
        *,
        outputName: str | None = None,
        convertSource: bool = False,
        progress: Progress | None = None,
    ) -> str:
        """Add the shell from ``innerMm`` to ``outerMm`` around a segment (``Ring_PTV_20mm``); its ID."""
        from sbrtstandards import tg263
        from sbrtstandards.margins import ring

        ensureRequirements()
        name, mask, grid = self._readSegment(segmentationNode, segmentId, referenceVolume)
        ringName = outputName or tg263.ring_name(name, float(outerMm), float(innerMm))
        result = ring(mask, grid, float(innerMm), float(outerMm), name=name, progress=progress)
        tags = {
            RULE_TAG: f"points between {float(innerMm):g} and {float(outerMm):g} mm outside {name}",
            SOURCE_TAG: "sbrtstandards.margins.ring",
            ROLE_TAG: "ring",
        }
        return self._writeSegment(segmentationNode, ringName, result, grid, tags, convertSource=convertSource)

    # ------------------------------------------------------------------ OARs

    def generateOarsFromParameters(
        self, p: Any = None, *, convertSource: bool = False, progress: Progress | None = None
    ) -> OarOutputs:
        """The OAR section of the parameter node; the output tables go back into the node."""
        from sbrtstandards.oars import OarOptions

        p = p or self.getParameterNode()
        options = OarOptions(
            site=None if p.site == "auto" else p.site,
            side=p.side,
            chest_wall_limit_mm=p.chestWallLimitMm if p.limitChestWall else None,
            cord_prv_mm=float(p.cordPrvMm) if p.cordPrv else None,
        )
        outputs = self.generateOars(
            p.segmentation,
            p.referenceVolume,
            p.oarTargetId,
            options=options,
            mapping=self.parseStructureMap(p.structureMap),
            oarTable=p.oarTable,
            fractionationTable=p.fractionationTable,
            convertSource=convertSource,
            progress=progress,
        )
        p.oarTable, p.fractionationTable = outputs.oarTable, outputs.fractionationTable
        return outputs

    def generateOars(
        self,
        segmentationNode: Any,
        referenceVolume: Any,
        targetSegmentId: str,
        *,
        options: Any = None,
        mapping: Sequence[str] = (),
        oarTable: Any = None,
        fractionationTable: Any = None,
        convertSource: bool = False,
        progress: Progress | None = None,
    ) -> OarOutputs:
        """Build the rule-derived OARs for the target segment and add them to the segmentation.

        ``mapping`` holds ``NAME=ROLE`` texts as ``sbrt oars --map``. The OAR table lists every built
        structure with its role, volume, rule and source; the fractionation table the schemes that
        the location class allows (lung).
        """
        from sbrtstandards import tg263
        from sbrtstandards.oars import build_oars
        from sbrtstandards.slicer import image_from_volume_node

        ensureRequirements()
        start = time.time()
        targetName, target, grid = self._readSegment(segmentationNode, targetSegmentId, referenceVolume)
        hu, _ctGrid = image_from_volume_node(referenceVolume)
        if progress:
            progress(0.02, _("Matching segments to roles"))
        warnings: list[str] = []
        structures = self.structuresByRole(segmentationNode, grid, mapping, warnings)
        result = build_oars(
            hu,
            grid,
            structures,
            targetName,
            target,
            options=options,
            taken_names=list(segment_ids_by_name(segmentationNode)),
            progress=subProgress(progress, 0.05, 0.9),
        )
        if progress:
            progress(0.92, _("Adding the segments"))
        masks = {b.name: b.mask for b in result.built}
        tags = {
            b.name: {ROLE_TAG: b.role, RULE_TAG: b.rule, SOURCE_TAG: b.source, TG263_TAG: b.name}
            for b in result.built
        }
        colors = {b.name: rgb01(tg263.color_for(b.name)) for b in result.built}
        if masks:
            add_masks_to_segmentation(
                segmentationNode,
                segmentationNode.GetScene(),
                masks,
                grid,
                colors=colors,
                tags=tags,
                convert_source=convertSource,
            )
        ids = segment_ids_by_name(segmentationNode)
        scene = segmentationNode.GetScene()
        if oarTable is None:
            oarTable = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName("SBRT OARs"))
        update_table_node(oarTable, OAR_TABLE_COLUMNS, oarTableRows(result))
        if fractionationTable is None:
            fractionationTable = scene.AddNewNodeByClass(
                "vtkMRMLTableNode", scene.GenerateUniqueName("SBRT fractionation options")
            )
        update_table_node(
            fractionationTable, FRACTIONATION_COLUMNS, fractionationRows(result.fractionation_options)
        )
        loc = result.location
        fractionationTable.SetAttribute("SBRTStandards.LocationClass", (loc.site_class or "") if loc else "")
        if progress:
            progress(1.0, _("Done"))
        logging.info("SBRT OARs: %d structures built in %.1f s", len(result.built), time.time() - start)
        return OarOutputs(
            result, {n: ids[n] for n in masks}, oarTable, fractionationTable, warnings + list(result.warnings)
        )

    def structuresByRole(
        self, segmentationNode: Any, grid: Any, mapping: Sequence[str], warnings: list[str]
    ) -> dict[str, Any]:
        """Role -> :class:`sbrtstandards.oars.Structure` (union mask of its segments on ``grid``).

        The same matching as ``sbrt oars`` (TG-263 and common names, the OAR-only roles vertebra,
        sternum and vessel lumen, ``NAME=ROLE`` pairs); only the roles the OAR rules read are loaded.
        """
        from sbrtstandards import names as names_mod
        from sbrtstandards.oars import Structure
        from sbrtstandards.oars.dicom_io import EXTRA_ROLES, USED_ROLES, split_mapping

        available = list(segment_ids_by_name(segmentationNode))
        extra_map, plain_map = split_mapping(list(mapping))
        for name in extra_map:
            if name not in available:
                raise InputError(
                    f"map '{name}': no segment of that name in '{segmentationNode.GetName()}' "
                    f"(segments: {', '.join(available) or '(none)'})"
                )
        matched = names_mod.match_structures([n for n in available if n not in extra_map], plain_map)
        for role, ambiguous in matched.ambiguous.items():
            if role in USED_ROLES:
                warnings.append(
                    f"several segments look like {role} ({', '.join(ambiguous)}): none used; map one"
                )
        chosen = {r: list(n) for r, n in matched.roles.items() if r in USED_ROLES}
        used = {n for group in matched.roles.values() for n in group}
        for role, aliases in EXTRA_ROLES.items():
            mapped = [n for n, r in extra_map.items() if r == role]
            found = mapped or [
                n
                for n in available
                if n not in used and n not in extra_map and names_mod.normalise(n) in set(aliases)
            ]
            if found:
                chosen[role] = found
        wanted = sorted({n for group in chosen.values() for n in group})
        ids = segment_ids_by_name(segmentationNode)
        masks = masks_from_segmentation(segmentationNode, grid, [ids[n] for n in wanted]) if wanted else {}
        result = {}
        for role, group in chosen.items():
            mask = np.zeros(grid.shape, dtype=bool)
            for n in group:
                mask |= masks[n]
            result[role] = Structure(group, mask)
        return result


def oarTableRows(result: Any) -> list[list[Any]]:
    """One row per built structure: name, role, volume (cc), rule, source and what it was built from."""
    return [
        [b.name, b.role, round(float(b.volume_cc), 3), b.rule, b.source, ", ".join(b.inputs)]
        for b in result.built
    ]


def fractionationRows(options: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """One row per scheme: total dose, fractions, dose per fraction, BED10, indication and source."""
    rows = []
    for s in options:
        fractions = s.get("fractions")
        dose = s.get("dose_gy")
        single = isinstance(fractions, int) and isinstance(dose, (int, float))
        per_fraction = dose / fractions if single and fractions else None
        rows.append(
            [
                dose if isinstance(dose, (int, float)) else str(dose),
                fractions if isinstance(fractions, int) else str(fractions),
                per_fraction,
                s.get("bed10_gy"),
                s.get("indication") or "",
                s.get("source") or "",
            ]
        )
    return rows


#
# SBRTTargetsOARsTest
#


class SBRTTargetsOARsTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: PTV = ITV + 5 mm and the OARs of the synthetic lung case."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SBRTTargetsOARs_ptv_and_oars()

    def test_SBRTTargetsOARs_ptv_and_oars(self) -> None:
        from sbrtstandards.phantom import make_case
        from sbrtstandards.slicer import volume_node_from_image

        self.delayDisplay("Building the synthetic lung case")
        ensureRequirements()
        case = make_case("lung", phases=4)
        ct = volume_node_from_image(slicer.mrmlScene, (case.average_hu(), case.grid), "Phantom AVG")
        keep = ("ITV", "Lung_L", "Lung_R", "Body", "Trachea", "Bronchus", "SpinalCord", "Esophagus", "Heart")
        seg = add_masks_to_segmentation(
            None,
            slicer.mrmlScene,
            {n: case.structures[n] for n in keep},
            case.grid,
            name="Phantom structures",
        )
        logic = SBRTTargetsOARsLogic()
        p = logic.getParameterNode()
        p.referenceVolume, p.segmentation = ct, seg
        p.marginSourceId = segment_ids_by_name(seg)["ITV"]
        p.marginOutputName, p.isotropicMm = "PTV", 5.0
        ptvId = logic.applyMargin(p)
        ptv = masks_from_segmentation(seg, case.grid, [ptvId])["PTV"]
        expected_cc = case.truth["ptv"]["cc"]
        got_cc = float(ptv.sum()) * case.grid.voxel_volume_cc
        self.assertLess(abs(got_cc - expected_cc) / expected_cc, 0.03)

        self.delayDisplay("Generating the OARs")
        p.oarTargetId = ptvId
        outputs = logic.generateOarsFromParameters(p)
        self.assertEqual(outputs.result.location.site_class, case.truth["tumour"]["location_class"])
        self.assertTrue(any(b.role == "chest_wall" for b in outputs.result.built))
        self.assertGreater(p.fractionationTable.GetNumberOfRows(), 0)
        self.delayDisplay("Test passed")
