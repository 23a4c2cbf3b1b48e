"""SBRT Programme QA: TBI set-up records, machine QA logs, quality-control indicators and gamma analysis.

Five parts, in Slicer's order: module, parameter node, widget, logic, self-test. The logic is a thin
layer over the same core functions as the ``sbrt tbi``, ``sbrt machine-qa``, ``sbrt qc`` and
``sbrt gamma`` commands (:mod:`sbrtstandards.programme_qa` and :mod:`sbrtstandards.gamma`): files
and plain values in, MRML table nodes out (built with :func:`sbrtstandards.slicer.table_node_from_rows`),
so the results can be sorted, saved with the scene and used from the Python console. For gamma the
two dose grids are read from two dose volume nodes (SlicerRT's ``DicomRtImport.DoseVolume``
attribute, never the node name) and the gamma map comes back as a volume node on the reference grid.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import qt
import slicer
from SBRT4DCT import Progress, SBRTWidgetMixin, describeModule, ensureRequirements
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLTableNode
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
    DOSE_VOLUME_ATTRIBUTE,
    image_from_volume_node,
    is_dose_volume,
    table_node_from_rows,
    update_table_node,
    update_volume_node,
    volume_node_from_image,
)

#: The choices of the core (``machine_qa.LEVELS``, ``qc_indicators.PERIODS``), repeated here so that the
#: parameter node can be declared before the core is imported (the core may need packages installed first).
QA_LEVELS = ("standard", "tight", "graded")
QC_PERIODS = ("month", "quarter", "year")
TBI_COLUMNS = ("Status", "Check", "Rule", "Site", "Value", "Limit", "Unit", "Value source", "Source", "Reason")
MACHINE_COLUMNS = (
    "Machine",
    "Finding",
    "Item",
    "Description",
    "Date",
    "Value",
    "Unit",
    "Tolerance",
    "Due",
    "Days overdue",
    "Status",
    "Reason",
    "Source",
)
QC_COLUMNS = (
    "Indicator",
    "Name",
    "Programme",
    "Period",
    "Numerator",
    "Denominator",
    "Rate [%]",
    "Target",
    "Status",
    "Reason",
    "Source",
)
GAMMA_COLUMNS = (
    "Pass rate [%]",
    "Status",
    "Threshold [%]",
    "Minor threshold [%]",
    "Points evaluated",
    "Points outside evaluated",
    "Gamma max",
    "Gamma mean",
    "Dose [%]",
    "Distance [mm]",
    "Cutoff [%]",
    "Local",
    "Normalisation [Gy]",
    "Cutoff [Gy]",
    "Source",
    "Warnings",
)
#: Gamma map display: 0 (white) to 2 (window), so gamma 1 sits in the middle of the grey scale.
GAMMA_WINDOW = 2.0


#
# SBRTProgrammeQA
#


class SBRTProgrammeQA(ScriptedLoadableModule):
    """Programme quality assurance of the TBI, seed implantation and ablation specifications (metadata)."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        helpText = _(
            "Quality assurance of a radiotherapy programme, the same checks as the 'sbrt tbi', 'sbrt machine-qa',"
            " 'sbrt qc' and 'sbrt gamma' commands. TBI record: a set-up record (JSON) against annex 2 of the TBI "
            "specification (SMD, field size, spoiler, dose rate, lung dose, site doses...), each check pass, "
            "minor, fail or not evaluated with its clause. Machine QA: a measurement log (CSV) against the "
            "tolerance and frequency tables, as of a date; the table lists the measurements out of tolerance "
            "and the checks overdue. QC indicators: the rates of a case log (CSV) per month, quarter or year "
            "against their targets. Gamma: a reference and an evaluated dose volume (SlicerRT dose volumes) "
            "with the dose difference, distance to agreement, low-dose cutoff and global or local "
            "normalisation; the pass rate, a gamma volume and a summary table. "
        )
        describeModule(
            self.parent,
            title=_("SBRT Programme QA"),
            dependencies=["Volumes", "SBRT4DCT"],
            helpText=helpText,
        )


#
# SBRTProgrammeQAParameterNode
#


@parameterNodeWrapper
class SBRTProgrammeQAParameterNode:
    """The module's state (saved with the scene).

    tbiRecordPath - TBI set-up record (JSON); tbiTable - its checks.
    machineLogPath - machine QA log (CSV); asOfDate - YYYY-MM-DD ("" = today); qaLevel - tolerance level;
    machineKinds - "NAME=KIND[+KIND]; ..." (which items each machine must have); machineTable - findings.
    caseLogPath - QC case log (CSV); period - rate period; qcTable - the rates.
    referenceDose, evaluatedDose - dose volumes; dosePercent, distanceMm, cutoffPercent, localGamma - criteria;
    gammaVolume, gammaTable - outputs (created when empty).
    """

    tbiRecordPath: str = ""
    tbiTable: Optional[vtkMRMLTableNode]
    machineLogPath: str = ""
    asOfDate: str = ""
    qaLevel: Annotated[str, Choice(list(QA_LEVELS))] = "standard"
    machineKinds: str = ""
    machineTable: Optional[vtkMRMLTableNode]
    caseLogPath: str = ""
    period: Annotated[str, Choice(list(QC_PERIODS))] = "month"
    qcTable: Optional[vtkMRMLTableNode]
    referenceDose: Optional[vtkMRMLScalarVolumeNode]
    evaluatedDose: Optional[vtkMRMLScalarVolumeNode]
    dosePercent: Annotated[float, WithinRange(0.1, 100.0)] = 2.0
    distanceMm: Annotated[float, WithinRange(0.1, 50.0)] = 2.0
    cutoffPercent: Annotated[float, WithinRange(0.0, 99.0)] = 10.0
    localGamma: bool = False
    gammaVolume: Optional[vtkMRMLScalarVolumeNode]
    gammaTable: Optional[vtkMRMLTableNode]


#
# SBRTProgrammeQAWidget
#


class SBRTProgrammeQAWidget(SBRTWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: four sections, each reads its inputs from the parameter node and shows a table."""

    logic: SBRTProgrammeQALogic | None
    _parameterNode: SBRTProgrammeQAParameterNode | None

    def setup(self) -> None:
        self.setupWidget("UI/SBRTProgrammeQA.ui", SBRTProgrammeQALogic())
        # Only dose volumes: SlicerRT's attribute, whatever the node is called.
        self.ui.referenceDoseSelector.addAttribute("vtkMRMLScalarVolumeNode", DOSE_VOLUME_ATTRIBUTE)
        self.ui.evaluatedDoseSelector.addAttribute("vtkMRMLScalarVolumeNode", DOSE_VOLUME_ATTRIBUTE)

        self.ui.tbiBrowseButton.connect("clicked(bool)", self.onTbiBrowse)
        self.ui.tbiApplyButton.connect("clicked(bool)", self.onTbiApply)
        self.ui.machineLogBrowseButton.connect("clicked(bool)", self.onMachineLogBrowse)
        self.ui.machineQaApplyButton.connect("clicked(bool)", self.onMachineQaApply)
        self.ui.caseLogBrowseButton.connect("clicked(bool)", self.onCaseLogBrowse)
        self.ui.qcApplyButton.connect("clicked(bool)", self.onQcApply)
        self.ui.gammaApplyButton.connect("clicked(bool)", self.onGammaApply)
        self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        doses = self.logic.doseVolumes(slicer.mrmlScene)
        if not p.referenceDose and doses:
            p.referenceDose = doses[0]
        if not p.evaluatedDose and len(doses) > 1:
            p.evaluatedDose = next(d for d in doses if d.GetID() != p.referenceDose.GetID())

    def _updateGUI(self, caller: Any = None, event: Any = None) -> None:
        p = self._parameterNode
        if p is None:
            return
        self.ui.tbiApplyButton.enabled = bool(p.tbiRecordPath.strip())
        self.ui.machineQaApplyButton.enabled = bool(p.machineLogPath.strip())
        self.ui.qcApplyButton.enabled = bool(p.caseLogPath.strip())
        gammaReady = bool(
            p.referenceDose and p.evaluatedDose and p.referenceDose.GetID() != p.evaluatedDose.GetID()
        )
        self.ui.gammaApplyButton.enabled = gammaReady
        self.ui.gammaApplyButton.toolTip = (
            _("Compute the gamma index of the evaluated dose against the reference dose")
            if gammaReady
            else _("Select two different dose volumes: the reference and the evaluated dose")
        )
        self.ui.tbiTableView.setMRMLTableNode(p.tbiTable)
        self.ui.machineTableView.setMRMLTableNode(p.machineTable)
        self.ui.qcTableView.setMRMLTableNode(p.qcTable)
        self.ui.gammaTableView.setMRMLTableNode(p.gammaTable)

    def _browse(self, title: str, current: str, filters: str) -> str:
        return qt.QFileDialog.getOpenFileName(self.parent, title, current, filters) or ""

    def onTbiBrowse(self) -> None:
        path = self._browse(_("TBI set-up record"), self._parameterNode.tbiRecordPath, _("JSON (*.json);;All (*)"))
        if path:
            self._parameterNode.tbiRecordPath = path

    def onMachineLogBrowse(self) -> None:
        path = self._browse(_("Machine QA log"), self._parameterNode.machineLogPath, _("CSV (*.csv);;All (*)"))
        if path:
            self._parameterNode.machineLogPath = path

    def onCaseLogBrowse(self) -> None:
        path = self._browse(_("QC case log"), self._parameterNode.caseLogPath, _("CSV (*.csv);;All (*)"))
        if path:
            self._parameterNode.caseLogPath = path

    def onTbiApply(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("TBI record check failed."), waitCursor=True):
            self.logic.tbiFromParameters(self._parameterNode)
            counts = self.logic.lastTbiResult.counts
            self.ui.tbiSummaryLabel.text = _("{p} pass, {m} minor, {f} fail, {n} not evaluated").format(
                p=counts["pass"], m=counts["minor"], f=counts["fail"], n=counts["not_evaluated"]
            ) + "".join("\n" + w for w in self.logic.lastTbiResult.warnings)

    def onMachineQaApply(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Machine QA check failed."), waitCursor=True):
            self.logic.machineQaFromParameters(self._parameterNode)
            result = self.logic.lastMachineQaResult
            self.ui.machineSummaryLabel.text = "\n".join(
                _("{machine}: {o} out of tolerance, {d} overdue").format(
                    machine=m.machine, o=len(m.out_of_tolerance), d=len(m.overdue)
                )
                + "".join("; " + note for note in m.notes)
                for m in result.machines
            )

    def onQcApply(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("QC indicator rates failed."), waitCursor=True):
            self.logic.qcFromParameters(self._parameterNode)
            result = self.logic.lastQcResult
            evaluated = sum(r.status == "evaluated" for r in result.indicators)
            self.ui.qcSummaryLabel.text = _("{e} of {n} indicators evaluated, periods {first} to {last}").format(
                e=evaluated, n=len(result.indicators), first=result.periods[0], last=result.periods[-1]
            )

    def _gammaProgress(self, fraction: float, message: str) -> None:
        self.ui.gammaProgressBar.value = int(round(100 * fraction))
        slicer.app.processEvents()

    def onGammaApply(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Gamma analysis failed."), waitCursor=True):
            outputs = self.logic.gammaFromParameters(self._parameterNode, progress=self._gammaProgress)
            self.ui.gammaPassRateLabel.text = gammaSummary(outputs.result)
            slicer.util.setSliceViewerLayers(foreground=outputs.gammaVolume, foregroundOpacity=0.5)


#
# SBRTProgrammeQALogic
#


@dataclass
class GammaOutputs:
    """What a gamma analysis leaves: the core's result, the gamma volume and the summary table."""

    result: Any  # sbrtstandards.gamma.GammaResult
    gammaVolume: Any
    table: Any


class SBRTProgrammeQALogic(ScriptedLoadableModuleLogic):
    """Programme QA on files and dose volumes (usable from the Python console without the GUI).

    Every method takes plain arguments and returns MRML nodes; the core's result of the last run is
    kept in ``lastTbiResult``, ``lastMachineQaResult``, ``lastQcResult`` and ``lastGammaResult``.
    ``scene`` defaults to ``slicer.mrmlScene``; an existing ``table`` (or ``gammaVolume``) is refilled.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._parameterNode: SBRTProgrammeQAParameterNode | None = None
        self.lastTbiResult: Any = None
        self.lastMachineQaResult: Any = None
        self.lastQcResult: Any = None
        self.lastGammaResult: Any = None

    def getParameterNode(self) -> SBRTProgrammeQAParameterNode:
        node = super().getParameterNode()
        if self._parameterNode is None or self._parameterNode.parameterNode != node:
            self._parameterNode = SBRTProgrammeQAParameterNode(node)
        return self._parameterNode

    @staticmethod
    def doseVolumes(scene: Any) -> list[Any]:
        """Scalar volume nodes that SlicerRT (or this package) marked as dose."""
        nodes = [
            scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode")
            for n in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
        ]
        return [n for n in nodes if is_dose_volume(n)]

    @staticmethod
    def parseDate(text: str | None) -> dt.date:
        """``YYYY-MM-DD`` -> date; empty means today (the as-of date of a QA review)."""
        text = (text or "").strip()
        if not text:
            return dt.date.today()
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise InputError(f"as-of date {text!r}: expected YYYY-MM-DD") from None

    @staticmethod
    def _table(scene: Any, table: Any, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
        if table is None:
            return table_node_from_rows(scene, scene.GenerateUniqueName(name), columns, rows)
        update_table_node(table, columns, rows)
        return table

    # ------------------------------------------------------------------ TBI

    def checkTbiRecord(self, path: str, *, lungDose: Any = None, table: Any = None, scene: Any = None) -> Any:
        """Check a TBI set-up record (JSON) against annex 2; returns the checks table node.

        ``lungDose`` (a :class:`sbrtstandards.programme_qa.tbi.LungDose`) replaces the record's lung dose.
        """
        ensureRequirements()
        from sbrtstandards.programme_qa.tbi import check_record, read_record

        if not path or not str(path).strip():
            raise InputError("no TBI set-up record file given")
        result = check_record(read_record(str(path).strip()), lung_dose=lungDose)
        self.lastTbiResult = result
        return self._table(scene or slicer.mrmlScene, table, "TBI record checks", TBI_COLUMNS, tbiRows(result))

    def tbiFromParameters(self, p: Any = None) -> Any:
        p = p or self.getParameterNode()
        p.tbiTable = self.checkTbiRecord(p.tbiRecordPath, table=p.tbiTable)
        return p.tbiTable

    # ------------------------------------------------------------------ machine QA

    def checkMachineQaLog(
        self,
        path: str,
        asOf: dt.date | str | None = None,
        level: str = "standard",
        machineKinds: str = "",
        *,
        table: Any = None,
        scene: Any = None,
    ) -> Any:
        """Check a machine QA log (CSV) as of a date; returns the table of findings.

        One row per measurement that is not a pass (out of tolerance, or not evaluated with the reason)
        and per item that is overdue or never checked. ``machineKinds``: "LINAC1=linac+sbrt; CO1=cobalt".
        """
        ensureRequirements()
        from sbrtstandards.programme_qa.machine_qa import check_log, parse_machine_kinds, read_log

        if not path or not str(path).strip():
            raise InputError("no machine QA log file given")
        day = asOf if isinstance(asOf, dt.date) else self.parseDate(asOf)
        kinds = parse_machine_kinds(t.strip() for t in machineKinds.replace("\n", ";").split(";") if t.strip())
        log = str(path).strip()
        result = check_log(read_log(log, as_of=day), as_of=day, level=level, machine_kinds=kinds)
        result.log = log
        self.lastMachineQaResult = result
        return self._table(
            scene or slicer.mrmlScene, table, "Machine QA findings", MACHINE_COLUMNS, machineQaRows(result)
        )

    def machineQaFromParameters(self, p: Any = None) -> Any:
        p = p or self.getParameterNode()
        p.machineTable = self.checkMachineQaLog(
            p.machineLogPath, p.asOfDate, p.qaLevel, p.machineKinds, table=p.machineTable
        )
        return p.machineTable

    # ------------------------------------------------------------------ QC indicators

    def qcRates(
        self,
        path: str,
        period: str = "month",
        asOf: dt.date | str | None = None,
        *,
        table: Any = None,
        scene: Any = None,
    ) -> Any:
        """Quality-control indicator rates of a case log (CSV) per period; returns the rates table."""
        ensureRequirements()
        from sbrtstandards.programme_qa.qc_indicators import compute_rates, read_case_log

        if not path or not str(path).strip():
            raise InputError("no QC case log file given")
        day = asOf if isinstance(asOf, dt.date) else self.parseDate(asOf)
        log = str(path).strip()
        rows, columns = read_case_log(log, as_of=day)
        result = compute_rates(rows, columns, period=period)
        result.log = log
        self.lastQcResult = result
        return self._table(scene or slicer.mrmlScene, table, "QC indicator rates", QC_COLUMNS, qcRows(result))

    def qcFromParameters(self, p: Any = None) -> Any:
        p = p or self.getParameterNode()
        p.qcTable = self.qcRates(p.caseLogPath, p.period, p.asOfDate, table=p.qcTable)
        return p.qcTable

    # ------------------------------------------------------------------ gamma

    def gamma(
        self,
        referenceDose: Any,
        evaluatedDose: Any,
        dosePercent: float = 2.0,
        distanceMm: float = 2.0,
        cutoffPercent: float = 10.0,
        local: bool = False,
        *,
        gammaVolume: Any = None,
        table: Any = None,
        progress: Progress | None = None,
    ) -> GammaOutputs:
        """Gamma index of ``evaluatedDose`` against ``referenceDose`` (dose volume nodes, world positions).

        The gamma map is on the reference grid (NaN below the cutoff or where the evaluated dose does
        not reach); the table holds one row: pass rate, status against the standards' levels, criteria.
        """
        ensureRequirements()
        from sbrtstandards.gamma import GammaCriteria, gamma_analysis

        if referenceDose is None or evaluatedDose is None:
            raise ValueError(_("Select the reference and the evaluated dose volumes"))
        for role, node in (("reference", referenceDose), ("evaluated", evaluatedDose)):
            if not is_dose_volume(node):
                raise InputError(
                    f"{role} volume '{node.GetName()}' is not a dose volume (no {DOSE_VOLUME_ATTRIBUTE} "
                    "attribute): load the RTDOSE through the DICOM module with SlicerRT, or mark the volume as dose"
                )
        criteria = GammaCriteria(float(dosePercent), float(distanceMm), float(cutoffPercent), bool(local))
        criteria.validate()
        ref_gy, ref_grid = image_from_volume_node(referenceDose)
        ev_gy, ev_grid = image_from_volume_node(evaluatedDose)
        # Both nodes are placed in the scene's world: their positions are what the user sees aligned.
        result = gamma_analysis(
            ref_gy, ref_grid, ev_gy, ev_grid, criteria, check_frame_of_reference=False, progress=progress
        )
        result.reference_label, result.evaluated_label = referenceDose.GetName(), evaluatedDose.GetName()
        scene = referenceDose.GetScene()
        image = (result.gamma.astype("float32"), ref_grid)
        if gammaVolume is None:
            gammaVolume = volume_node_from_image(scene, image, scene.GenerateUniqueName("Gamma"))
        else:
            update_volume_node(gammaVolume, image)
            if gammaVolume.GetDisplayNode() is None:
                gammaVolume.CreateDefaultDisplayNodes()
        display = gammaVolume.GetDisplayNode()
        if display is not None:
            display.AutoWindowLevelOff()
            display.SetWindowLevel(GAMMA_WINDOW, GAMMA_WINDOW / 2.0)
        table = self._table(scene, table, "Gamma summary", GAMMA_COLUMNS, gammaRows(result))
        self.lastGammaResult = result
        logging.info("SBRT gamma: %s", gammaSummary(result))
        return GammaOutputs(result, gammaVolume, table)

    def gammaFromParameters(self, p: Any = None, progress: Progress | None = None) -> GammaOutputs:
        p = p or self.getParameterNode()
        outputs = self.gamma(
            p.referenceDose,
            p.evaluatedDose,
            p.dosePercent,
            p.distanceMm,
            p.cutoffPercent,
            p.localGamma,
            gammaVolume=p.gammaVolume,
            table=p.gammaTable,
            progress=progress,
        )
        p.gammaVolume, p.gammaTable = outputs.gammaVolume, outputs.table
        return outputs


def _finite(value: Any) -> Any:
    """None for a missing or non-finite number (the table stores it as NaN in a number column)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def tbiRows(result: Any) -> list[list[Any]]:
    """Rows of the TBI checks table from a :class:`~sbrtstandards.programme_qa.tbi.TbiResult`."""
    rows = []
    for check in result.checks:
        data = check.to_json()
        rows.append(
            [
                check.status,
                check.id,
                check.rule,
                check.site or "",
                _finite(check.value),
                data.get("limit_text", ""),
                check.unit,
                check.value_source or "",
                check.source,
                check.reason,
            ]
        )
    return rows


def machineQaRows(result: Any) -> list[list[Any]]:
    """Findings of a :class:`~sbrtstandards.programme_qa.machine_qa.MachineQaResult`: measurements that
    are not a pass, then items overdue or never checked, per machine."""
    rows: list[list[Any]] = []
    for report in result.machines:
        for m in report.measurements:
            if m.status == "pass":
                continue
            finding = "out of tolerance" if m.status in ("minor", "fail") else "not evaluated"
            value = ("pass" if m.value else "fail") if isinstance(m.value, bool) else str(m.value)
            rows.append(
                [report.machine, finding, m.item.id, m.item.item, m.date.isoformat(), value, m.unit,
                 m.limit_text, "", None, m.status, m.reason, m.item.source]
            )
        for s in report.overdue:
            rows.append(
                [report.machine, s.state, s.item.id, s.item.item,
                 s.last_checked.isoformat() if s.last_checked else "", "", "", s.item.frequency.text,
                 s.due.isoformat() if s.due else "", s.days_overdue, s.state, "", s.item.source]
            )
    return rows


def qcRows(result: Any) -> list[list[Any]]:
    """Rows of the QC rates table: one per indicator and period, one for an indicator not evaluated."""
    rows: list[list[Any]] = []
    for r in result.indicators:
        ind = r.indicator
        if not r.values:
            rows.append([ind.id, ind.name, ind.programme, "", None, None, None, ind.target_text, r.status,
                         r.reason, ind.source])
        for v in r.values:
            rows.append([ind.id, ind.name, ind.programme, v.period, v.numerator, v.denominator,
                         _finite(v.rate_percent), ind.target_text, v.status or "", v.reason, ind.source])
    return rows


def gammaRows(result: Any) -> list[list[Any]]:
    """The one-row gamma summary table of a :class:`~sbrtstandards.gamma.GammaResult`."""
    c = result.criteria
    return [
        [
            _finite(result.pass_rate_percent),
            result.status,
            result.levels.threshold_percent,
            _finite(result.levels.minor_threshold_percent),
            result.points_evaluated,
            result.points_outside_evaluated,
            _finite(result.gamma_max),
            _finite(result.gamma_mean),
            c.dose_percent,
            c.distance_mm,
            c.cutoff_percent,
            "local" if c.local else "global",
            result.normalisation_gy,
            result.cutoff_gy,
            result.levels.source,
            "; ".join(result.warnings),
        ]
    ]


def gammaSummary(result: Any) -> str:
    """One line for the pass-rate label: rate, status and criteria."""
    c = result.criteria
    if result.pass_rate_percent is None:
        rate = _("no point evaluated")
    else:
        rate = _("pass rate {rate:.2f} %").format(rate=result.pass_rate_percent)
    return _("{rate} ({status}) at {dose:g} %/{dta:g} mm, cutoff {cutoff:g} %, {norm}").format(
        rate=rate,
        status=result.status,
        dose=c.dose_percent,
        dta=c.distance_mm,
        cutoff=c.cutoff_percent,
        norm=_("local") if c.local else _("global"),
    )


#
# SBRTProgrammeQATest
#


class SBRTProgrammeQATest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: gamma of a dose against a copy with a uniform dose offset."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SBRTProgrammeQA_gamma_of_a_dose_offset()

    def test_SBRTProgrammeQA_gamma_of_a_dose_offset(self) -> None:
        import numpy as np

        from sbrtstandards.grid import Grid

        self.delayDisplay("Gamma of a uniform dose against the same dose + 3 % of it")
        grid = Grid((0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (10, 10, 6))
        reference = volume_node_from_image(slicer.mrmlScene, (np.full(grid.shape, 10.0), grid), "Ref", dose=True)
        evaluated = volume_node_from_image(slicer.mrmlScene, (np.full(grid.shape, 10.3), grid), "Eval", dose=True)
        outputs = SBRTProgrammeQALogic().gamma(reference, evaluated, 2.0, 2.0, 10.0)
        # No dose gradient: the gamma of a pure dose offset is offset / DD = 0.3 / (2 % of 10 Gy) = 1.5.
        self.assertAlmostEqual(outputs.result.gamma_max, 1.5, places=3)
        self.assertEqual(outputs.result.pass_rate_percent, 0.0)
        self.assertEqual(outputs.table.GetNumberOfRows(), 1)
        self.delayDisplay("Test passed")
