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

The batch audit is ``sbrt batch`` (:func:`sbrtstandards.batch.run_batch`) on a folder tree of cases or
a DICOM archive (DICOMweb or DIMSE), run in Slicer's process; its ``results.csv`` becomes a table node.
Archive credentials never pass through the module: the core reads them from the environment
(``SBRT_ARCHIVE_USER``/``SBRT_ARCHIVE_PASSWORD`` or ``SBRT_ARCHIVE_TOKEN``) or from the private file
``~/.config/sbrt/archive.toml``.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import qt
import slicer
from SBRT4DCT import (
    Progress,
    SBRTWidgetMixin,
    describeModule,
    ensureRequirements,
    fillProtocolComboBox,
    selectComboData,
)
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

from sbrtstandards.archive.address import is_archive_source
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
#: The core's default calling AE title (``archive.connect.DEFAULT_CALLING_AET``), repeated for the same reason.
DEFAULT_CALLING_AET = "SBRTSTANDARDS"
#: What an archive source needs besides the core's requirements: (URL scheme, import name, pip requirement).
ARCHIVE_REQUIREMENTS: tuple[tuple[str, str, str], ...] = (
    ("http", "dicomweb_client", "dicomweb-client>=0.59"),
    ("https", "dicomweb_client", "dicomweb-client>=0.59"),
    ("dimse", "pynetdicom", "pynetdicom>=2.0"),
)
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


class BatchCancelled(Exception):
    """Raised by the widget's progress callback when the user cancels a batch audit.

    The core writes each case's result file before it reports progress, so the cases finished so far
    stay in the output folder and "Resume" finishes the run.
    """


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
            "trainee's RTSTRUCT graded against a reference RTSTRUCT, written as an HTML page. Batch audit: "
            "the 'sbrt batch' command, every case of a folder tree or of a DICOM archive (DICOMweb or DIMSE) "
            "checked against a protocol, with results.csv and summary.html in an output folder and the rows in "
            "a table; archive credentials come from environment variables or a private configuration file, "
            "never from this module. "
        )
        describeModule(
            self.parent,
            title=_("SBRT Contour QA"),
            dependencies=["Segmentations", "SBRT4DCT"],
            helpText=helpText,
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
    batchSource - folder, DICOMweb URL or dimse://AET@host:port; batchProtocol - catalogue protocol;
    batchOutputDirectory - results folder; batchQuery - archive KEY=VALUE filters (';' or new lines);
    batchCallingAet - DIMSE calling AE title; batchIncludeIdentifiers, batchResume - as in ``sbrt batch``;
    batchResultsTable - the rows of results.csv (created when empty). No credentials, ever.
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
    batchSource: str = ""
    batchProtocol: str = ""
    batchOutputDirectory: str = ""
    batchQuery: str = ""
    batchCallingAet: str = "SBRTSTANDARDS"  # DEFAULT_CALLING_AET
    batchIncludeIdentifiers: bool = False
    batchResume: bool = False
    batchResultsTable: Optional[vtkMRMLTableNode]


#
# SBRTContourQAWidget
#


class SBRTContourQAWidget(SBRTWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: comparison, score-sheet and batch-audit sections, all driven by the parameter node."""

    logic: SBRTContourQALogic | None
    _parameterNode: SBRTContourQAParameterNode | None

    def setup(self) -> None:
        self.setupWidget("UI/SBRTContourQA.ui", SBRTContourQALogic())
        self.ui.compareApplyButton.connect("clicked(bool)", self.onCompareApply)
        self.ui.referenceRtstructBrowseButton.connect("clicked(bool)", self.onReferenceRtstructBrowse)
        self.ui.traineeRtstructBrowseButton.connect("clicked(bool)", self.onTraineeRtstructBrowse)
        self.ui.scoreSheetBrowseButton.connect("clicked(bool)", self.onScoreSheetBrowse)
        self.ui.scoreSheetApplyButton.connect("clicked(bool)", self.onScoreSheetApply)
        self._fillBatchProtocols()
        self.ui.batchProtocolComboBox.connect("currentIndexChanged(int)", self.onBatchProtocolChanged)
        self.ui.batchSourceBrowseButton.connect("clicked(bool)", self.onBatchSourceBrowse)
        self.ui.batchOutputDirectoryBrowseButton.connect("clicked(bool)", self.onBatchOutputDirectoryBrowse)
        self.ui.batchApplyButton.connect("clicked(bool)", self.onBatchApply)
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
        self._updateBatchGUI(p)

    def _updateBatchGUI(self, p: SBRTContourQAParameterNode) -> None:
        combo = self.ui.batchProtocolComboBox
        selectComboData(combo, p.batchProtocol, clearWhenMissing=True)  # nothing shown until a protocol is chosen
        catalogueRead = bool(combo.itemData(0))  # else the first run installs what the catalogue needs
        ready = bool(
            p.batchSource.strip() and p.batchOutputDirectory.strip() and (p.batchProtocol or not catalogueRead)
        )
        self.ui.batchApplyButton.enabled = ready
        self.ui.batchApplyButton.toolTip = (
            _("Check every case of the source against the protocol; results in the output folder")
            if ready
            else _("Give the source, the protocol and the output folder")
        )
        self.ui.batchResultsTableView.setMRMLTableNode(p.batchResultsTable)

    def _fillBatchProtocols(self) -> None:
        fillProtocolComboBox(self.ui.batchProtocolComboBox)

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

    def onBatchProtocolChanged(self, index: int) -> None:
        if self._parameterNode is None:
            return
        protocolId = self.ui.batchProtocolComboBox.itemData(index) or ""
        if protocolId and protocolId != self._parameterNode.batchProtocol:
            self._parameterNode.batchProtocol = protocolId

    def onBatchSourceBrowse(self) -> None:
        current = self._parameterNode.batchSource
        start = "" if is_archive_source(current.strip()) else current
        path = qt.QFileDialog.getExistingDirectory(self.parent, _("Folder of cases"), start)
        if path:
            self._parameterNode.batchSource = path

    def onBatchOutputDirectoryBrowse(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(
            self.parent, _("Output folder of the batch audit"), self._parameterNode.batchOutputDirectory
        )
        if path:
            self._parameterNode.batchOutputDirectory = path

    def _batchProgress(self, dialog: Any) -> Progress:
        """Progress of the batch in ``dialog``; its Cancel button stops the run (finished cases are kept)."""

        def report(fraction: float, message: str) -> None:
            if dialog.wasCanceled:
                raise BatchCancelled(message)
            dialog.value = int(round(100 * min(max(fraction, 0.0), 1.0)))
            dialog.labelText = message
            slicer.app.processEvents()
            if dialog.wasCanceled:
                raise BatchCancelled(message)

        return report

    def onBatchApply(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Batch audit failed."), waitCursor=True):
            if not self.ui.batchProtocolComboBox.itemData(0):  # the catalogue could not be read before the install
                ensureRequirements()
                self._fillBatchProtocols()
                self._updateGUI()
                if not self._parameterNode.batchProtocol:
                    self.ui.batchSummaryLabel.text = _("The protocol catalogue is ready: choose the protocol")
                    return
            # Modal: the progress callback processes events, and a second run must not start meanwhile.
            dialog = slicer.util.createProgressDialog(
                parent=self.parent, windowTitle=_("Batch audit"), labelText=_("Starting the batch audit"),
                maximum=100, windowModality=qt.Qt.WindowModal,
            )
            try:
                run = self.logic.batchFromParameters(self._parameterNode, progress=self._batchProgress(dialog))
            except BatchCancelled:
                self.ui.batchSummaryLabel.text = _(
                    "Cancelled. The cases finished so far are kept in the output folder: tick 'Resume' and run "
                    "again to finish the audit."
                )
                return
            finally:
                dialog.close()
            self.ui.batchSummaryLabel.text = self.logic.batchSummary(run)

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
    After :meth:`runBatch`: ``lastBatchRun`` (:class:`~sbrtstandards.batch.BatchRun`).
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._parameterNode: SBRTContourQAParameterNode | None = None
        self.lastAgreements: list[tuple[str, str, str, Any]] = []
        self.lastUnmatchedReference: list[str] = []
        self.lastUnmatchedTest: list[str] = []
        self.lastScoreSheet: Any = None
        self.lastBatchRun: Any = None

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

    # ------------------------------------------------------------------ batch audit

    @staticmethod
    def parseQueryText(text: str) -> list[str]:
        """``KEY=VALUE`` filters typed in one field, separated by ';' or new lines; blanks dropped.

        Each filter is checked by the core (:func:`sbrtstandards.archive.address.parse_queries`).
        """
        return [part.strip() for part in re.split(r"[;\r\n]", text or "") if part.strip()]

    def runBatch(
        self,
        source: str,
        protocolId: str,
        outputDirectory: str,
        *,
        queries: Sequence[str] = (),
        callingAet: str | None = None,
        includeIdentifiers: bool = False,
        resume: bool = False,
        workers: int = 0,
        progress: Progress | None = None,
    ) -> Any:
        """Check every case of ``source`` against ``protocolId``, as ``sbrt batch``; returns the ``BatchRun``.

        ``source`` is a folder tree, a DICOMweb base URL or ``dimse://AET@host:port``; ``queries`` (archive
        filters: KEY=VALUE items, or one text split by :meth:`parseQueryText`) and ``callingAet`` (DIMSE)
        apply to archives only. ``outputDirectory`` receives
        results.csv, summary.html and one file per case; ``resume`` finishes a stopped run there.
        Credentials are never arguments: the core reads them from ``SBRT_ARCHIVE_USER`` and
        ``SBRT_ARCHIVE_PASSWORD`` (or ``SBRT_ARCHIVE_TOKEN``) or from ``~/.config/sbrt/archive.toml``.

        ``workers`` 0 (the default) runs the cases one after the other in Slicer's process. A Dask local
        cluster (``workers`` > 0) started from inside Slicer would spawn its worker processes from Slicer's
        Python, i.e. new instances of the application rather than plain interpreters; use ``sbrt batch`` in
        a terminal for parallel runs.
        """
        ensureRequirements()
        source, outputDirectory = str(source or "").strip(), str(outputDirectory or "").strip()
        # An empty path would resolve to the current directory: refuse it rather than audit or write there.
        if not source:
            raise InputError("no batch source given: a folder of cases, a DICOMweb URL or dimse://AET@host:port")
        if not outputDirectory:
            raise InputError("no output folder given for the batch audit (results.csv, summary.html)")
        needed = archiveRequirements(source)
        if needed:
            ensureRequirements(needed, install=pipInstallKeepingPydicom)
        from sbrtstandards.archive.connect import ArchiveOptions
        from sbrtstandards.batch import BatchOptions, run_batch

        if isinstance(queries, str):  # one text from the console: split it as the query field is
            queries = self.parseQueryText(queries)
        archive = ArchiveOptions(
            queries=tuple(queries), calling_aet=(callingAet or "").strip() or DEFAULT_CALLING_AET
        )
        options = BatchOptions(protocol_id=str(protocolId or "").strip(), include_identifiers=bool(includeIdentifiers))
        run = run_batch(
            source, outputDirectory, options, workers=int(workers), resume=bool(resume), progress=progress,
            archive=archive,
        )
        self.lastBatchRun = run
        logging.info("SBRT batch audit: %s", self.batchSummary(run).replace("\n", "; "))
        return run

    def batchResultsTableNode(self, resultsPath: str, table: Any = None, scene: Any = None) -> Any:
        """The rows of a batch's results.csv in a table node (``table`` is refilled, else one is created).

        Every cell is kept as the text of the file: a column such as ``value`` mixes numbers, lists and blanks.
        """
        columns, rows = readResultsCsv(resultsPath)
        if table is None:
            scene = scene or slicer.mrmlScene
            return table_node_from_rows(scene, scene.GenerateUniqueName("Batch results"), columns, rows)
        update_table_node(table, columns, rows)
        return table

    def batchFromParameters(self, p: Any = None, progress: Progress | None = None, scene: Any = None) -> Any:
        """:meth:`runBatch` with the parameter node's settings; fills ``batchResultsTable``; returns the run."""
        p = p or self.getParameterNode()
        run = self.runBatch(
            p.batchSource,
            p.batchProtocol,
            p.batchOutputDirectory,
            queries=self.parseQueryText(p.batchQuery),
            callingAet=p.batchCallingAet,
            includeIdentifiers=p.batchIncludeIdentifiers,
            resume=p.batchResume,
            progress=progress,
        )
        p.batchResultsTable = self.batchResultsTableNode(run.results, p.batchResultsTable, scene)
        return run

    @staticmethod
    def batchSummary(run: Any) -> str:
        """Counts of a batch run for the summary label: never a case name, an error message or an identifier."""
        text = _(
            "{cases} cases ({ran} run now, {kept} kept from before), {failed} failed, {rows} result rows in "
            "{seconds:.1f} s; results.csv and summary.html are in the output folder"
        ).format(
            cases=run.cases, ran=run.ran, kept=run.skipped, failed=run.failed, rows=run.rows, seconds=run.seconds
        )
        if run.archive:
            text += "\n" + _(
                "Archive: {studies} studies matched, {fetched} RT objects fetched, {cached} taken from the cache"
            ).format(
                studies=run.archive.get("studies", 0),
                fetched=run.archive.get("fetched", 0),
                cached=run.archive.get("from_cache", 0),
            )
        return text


def archiveRequirements(source: str) -> list[tuple[str, str]]:
    """The (import name, pip requirement) pairs that ``source``'s kind of archive needs; [] for a folder."""
    source = str(source or "").strip()
    if not is_archive_source(source):
        return []
    scheme = source.split("://", 1)[0].lower()
    return [(name, spec) for kind, name, spec in ARCHIVE_REQUIREMENTS if kind == scheme]


def pipInstallKeepingPydicom(
    requirements: Sequence[str], install: Callable[[list[str]], Any] | None = None
) -> Any:
    """Install ``requirements`` with the pydicom already there pinned.

    Slicer's DICOM module runs on the pydicom Slicer ships; pynetdicom 3 requires pydicom 3, so an
    unpinned install could upgrade pydicom under Slicer. Pinned, pip picks a compatible release instead.
    """
    import pydicom

    return (install or slicer.util.pip_install)([*requirements, f"pydicom=={pydicom.__version__}"])


def readResultsCsv(path: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a batch results.csv (the core's reader: a damaged row is named), cells as text."""
    from sbrtstandards.batch import COLUMNS, read_rows

    try:
        records = read_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the batch results ({exc})") from None
    columns = list(records[0]) if records else list(COLUMNS)
    return columns, [[record.get(c) or "" for c in columns] for record in records]


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
    """Self-test inside Slicer: a sphere compared with itself agrees perfectly; a batch of two failed cases."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SBRTContourQA_identical_spheres()
        self.setUp()
        self.test_SBRTContourQA_batch_of_two_cases()

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

    def test_SBRTContourQA_batch_of_two_cases(self) -> None:
        import tempfile

        from sbrtstandards.dicom.common import (
            RT_PLAN_STORAGE,
            RT_STRUCTURE_SET_STORAGE,
            new_dataset,
            save_dataset,
        )

        self.delayDisplay("Batch audit of two cases without a dose: each is one failed-case row")
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "cases"
            for case in ("a", "b"):
                (root / case).mkdir(parents=True)
                for name, sop, modality in (("RS.dcm", RT_STRUCTURE_SET_STORAGE, "RTSTRUCT"),
                                            ("RP.dcm", RT_PLAN_STORAGE, "RTPLAN")):
                    ds = new_dataset(sop)
                    ds.Modality = modality
                    save_dataset(ds, root / case / name)
            p = SBRTContourQAParameterNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode"))
            p.batchSource, p.batchProtocol, p.batchOutputDirectory = str(root), "cn-lung-sbrt", str(Path(tmp) / "out")
            run = SBRTContourQALogic().batchFromParameters(p)
            self.assertEqual((run.cases, run.failed, run.rows), (2, 2, 2))
            table = p.batchResultsTable.GetTable()
            self.assertEqual(table.GetNumberOfRows(), 2)
            self.assertEqual(table.GetColumnByName("error").GetValue(0), "no RTDOSE in a")
        self.delayDisplay("Test passed")
