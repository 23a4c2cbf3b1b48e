"""SBRT Margin: grow or shrink the selected segment by an exact Euclidean margin per direction.

Slicer's built-in Margin effect takes one isotropic distance and rounds it to whole voxels (a 5 mm
margin on 3 mm slices becomes 3 mm up and down). This effect takes six margins in mm (R, L, A, P,
S, I, the way planning systems define asymmetric margins) and calls the core's contour-based margin
(:func:`sbrtstandards.margins.grow` / ``shrink``), so the result does not depend on the voxel size
beyond the outline's sampling. Effect settings are stored in the segment editor node
(``scriptedEffect.setParameter``), as every effect does.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect
from slicer.i18n import tr as _
from vtk.util import numpy_support

from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.slicer import grid_from_ijk_to_ras
from sbrtstandards.slicer.geometry import numpy_matrix

DIRECTIONS = ("R", "L", "A", "P", "S", "I")
DIRECTION_TIPS = {
    "R": "towards the patient's right",
    "L": "towards the patient's left",
    "A": "anteriorly",
    "P": "posteriorly",
    "S": "superiorly",
    "I": "inferiorly",
}
DEFAULT_MM = 5.0
MAX_MM = 50.0


def orientedImageGrid(image: Any) -> Grid:
    """The LPS grid of a vtkOrientedImageData (voxel (0, 0, 0) of the grid is the first voxel of its extent)."""
    extent = image.GetExtent()
    size = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    if min(size) <= 0:
        raise InputError("the segment is empty")
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    ijk_to_ras = numpy_matrix(matrix)
    ijk_to_ras[:3, 3] = (ijk_to_ras @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
    return grid_from_ijk_to_ras(ijk_to_ras, size, what="segment labelmap")


def orientedImageArray(image: Any) -> np.ndarray:
    """A view of the image's scalars indexed ``[k, j, i]``."""
    extent = image.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)


def marginLabelmap(
    selected: Any, modifier: Any, margin: Any, *, shrink: bool = False, name: str = "segment"
) -> None:
    """Fill ``modifier`` (the editor's modifier labelmap) with ``selected`` grown or shrunk by ``margin``.

    Both labelmaps are on the segment editor's geometry; the selected one may cover only the
    segment's bounding box (its extent is then a part of the modifier's).
    """
    from sbrtstandards.margins import grow
    from sbrtstandards.margins import shrink as shrink_mask

    out_grid = orientedImageGrid(modifier)
    inside = np.zeros(out_grid.shape, dtype=bool)
    if selected is not None and selected.GetPointData().GetScalars() is not None:
        sel_grid = orientedImageGrid(selected)
        start = out_grid.lps_to_index(np.asarray(sel_grid.origin_mm))
        same_lattice = (
            np.allclose(start, np.round(start), atol=1e-3)
            and np.allclose(sel_grid.spacing_mm, out_grid.spacing_mm, rtol=1e-6)
            and np.allclose(sel_grid.direction, out_grid.direction, atol=1e-6)
        )
        if not same_lattice:
            raise InputError(f"{name}: its labelmap is not on the segment editor's geometry")
        i0, j0, k0 = (int(v) for v in np.round(start))
        values = orientedImageArray(selected) > 0
        nk, nj, ni = values.shape
        k1, j1, i1 = (
            min(k0 + nk, inside.shape[0]),
            min(j0 + nj, inside.shape[1]),
            min(i0 + ni, inside.shape[2]),
        )
        inside[max(k0, 0) : k1, max(j0, 0) : j1, max(i0, 0) : i1] = values[
            max(-k0, 0) : k1 - k0, max(-j0, 0) : j1 - j0, max(-i0, 0) : i1 - i0
        ]
    result = (shrink_mask if shrink else grow)(inside, out_grid, margin, name=name)
    orientedImageArray(modifier)[:] = result.astype(np.uint8)
    modifier.Modified()


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Exact per-direction margin of the selected segment."""

    def __init__(self, scriptedEffect: Any) -> None:
        scriptedEffect.name = "SBRT Margin"  # no tr: modules and tests find effects by this name
        scriptedEffect.title = _("SBRT margin")
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)

    def clone(self) -> Any:
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        cloned = effects.qSlicerSegmentEditorScriptedEffect(None)
        cloned.setPythonSource(__file__.replace("\\", "/"))
        return cloned

    def icon(self) -> Any:
        path = os.path.join(os.path.dirname(__file__), "..", "Resources", "Icons", "SBRTTargetsOARs.png")
        return qt.QIcon(path) if os.path.exists(path) else qt.QIcon()

    def helpText(self) -> str:
        return _(
            "<html>Grow or shrink the selected segment by an exact Euclidean margin, the same in every direction "
            "or different towards R, L, A, P, S and I (mm), as planning systems define asymmetric margins. "
            "Unlike the Margin effect, the margin is not rounded to whole voxels.</html>"
        )

    def setupOptionsFrame(self) -> None:
        self.growRadioButton = qt.QRadioButton(_("Grow"))
        self.shrinkRadioButton = qt.QRadioButton(_("Shrink"))
        operation = qt.QHBoxLayout()
        operation.addWidget(self.growRadioButton)
        operation.addWidget(self.shrinkRadioButton)
        self.scriptedEffect.addLabeledOptionsWidget(_("Operation:"), operation)

        self.isotropicCheckBox = qt.QCheckBox(_("Same margin in every direction"))
        self.isotropicCheckBox.objectName = type(self).__name__ + "Isotropic"
        self.scriptedEffect.addOptionsWidget(self.isotropicCheckBox)

        grid = qt.QGridLayout()
        self.spinBoxes: dict[str, Any] = {}
        for index, direction in enumerate(DIRECTIONS):
            spin = qt.QDoubleSpinBox()
            spin.objectName = f"{type(self).__name__}Margin{direction}"
            spin.suffix = " mm"
            spin.decimals = 1
            spin.minimum, spin.maximum, spin.singleStep = 0.0, MAX_MM, 0.5
            spin.toolTip = _("Margin {where}").format(where=DIRECTION_TIPS[direction])
            grid.addWidget(qt.QLabel(f"{direction}:"), index // 2, 2 * (index % 2))
            grid.addWidget(spin, index // 2, 2 * (index % 2) + 1)
            self.spinBoxes[direction] = spin
        self.scriptedEffect.addLabeledOptionsWidget(_("Margins:"), grid)

        self.applyButton = qt.QPushButton(_("Apply"))
        self.applyButton.objectName = type(self).__name__ + "Apply"
        self.applyButton.toolTip = _("Grow or shrink the selected segment by the margins")
        self.scriptedEffect.addOptionsWidget(self.applyButton)

        self.applyButton.connect("clicked()", self.onApply)
        self.growRadioButton.connect("toggled(bool)", self.updateMRMLFromGUI)
        self.isotropicCheckBox.connect("toggled(bool)", self.updateMRMLFromGUI)
        for spin in self.spinBoxes.values():
            spin.connect("valueChanged(double)", self.updateMRMLFromGUI)

    def createCursor(self, widget: Any) -> Any:
        return slicer.util.mainWindow().cursor

    def setMRMLDefaults(self) -> None:
        self.scriptedEffect.setParameterDefault("Shrink", 0)
        self.scriptedEffect.setParameterDefault("Isotropic", 1)
        for direction in DIRECTIONS:
            self.scriptedEffect.setParameterDefault(f"Margin{direction}Mm", DEFAULT_MM)

    def updateGUIFromMRML(self) -> None:
        isotropic = self.scriptedEffect.integerParameter("Isotropic") != 0
        widgets = [
            self.growRadioButton,
            self.shrinkRadioButton,
            self.isotropicCheckBox,
            *self.spinBoxes.values(),
        ]
        blocked = [w.blockSignals(True) for w in widgets]
        try:
            shrink = self.scriptedEffect.integerParameter("Shrink") != 0
            self.growRadioButton.checked, self.shrinkRadioButton.checked = not shrink, shrink
            self.isotropicCheckBox.checked = isotropic
            for direction, spin in self.spinBoxes.items():
                spin.value = self.scriptedEffect.doubleParameter(f"Margin{direction}Mm")
                spin.enabled = direction == "R" or not isotropic
        finally:
            for widget, was in zip(widgets, blocked):
                widget.blockSignals(was)

    def updateMRMLFromGUI(self, *args: Any) -> None:
        isotropic = self.isotropicCheckBox.checked
        self.scriptedEffect.setParameter("Shrink", 0 if self.growRadioButton.checked else 1)
        self.scriptedEffect.setParameter("Isotropic", 1 if isotropic else 0)
        first = self.spinBoxes["R"].value
        for direction, spin in self.spinBoxes.items():
            self.scriptedEffect.setParameter(f"Margin{direction}Mm", first if isotropic else spin.value)

    def margin(self) -> Any:
        """The :class:`sbrtstandards.margins.Margin` of the effect's parameters."""
        from sbrtstandards.margins import Margin

        if self.scriptedEffect.integerParameter("Isotropic") != 0:
            return Margin.isotropic(self.scriptedEffect.doubleParameter("MarginRMm"))
        return Margin(*(self.scriptedEffect.doubleParameter(f"Margin{d}Mm") for d in DIRECTIONS))

    def onApply(self) -> None:
        if not self.scriptedEffect.confirmCurrentSegmentVisible():
            return
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            margin = self.margin()
            shrink = self.scriptedEffect.integerParameter("Shrink") != 0
            segmentation = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
            segmentId = self.scriptedEffect.parameterSetNode().GetSelectedSegmentID()
            name = segmentation.GetSegmentation().GetSegment(segmentId).GetName()
            self.scriptedEffect.saveStateForUndo()
            modifier = self.scriptedEffect.defaultModifierLabelmap()
            marginLabelmap(
                self.scriptedEffect.selectedSegmentLabelmap(), modifier, margin, shrink=shrink, name=name
            )
            self.scriptedEffect.modifySelectedSegmentByLabelmap(
                modifier, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet
            )
            logging.info("SBRT margin: %s %s by %s", name, "shrunk" if shrink else "grown", margin)
        except Exception as exc:  # shown to the user: the effect has no other error channel
            slicer.util.errorDisplay(_("SBRT margin failed: {error}").format(error=exc))
            logging.exception("SBRT margin failed")
        finally:
            qt.QApplication.restoreOverrideCursor()
