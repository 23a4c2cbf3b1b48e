"""Registers the "SBRT Margin" Segment Editor effect (a hidden module, as Slicer's effect template does).

The effect itself is ``SegmentEditorSBRTMarginLib/SegmentEditorEffect.py``: an exact Euclidean margin per
direction (R, L, A, P, S, I) for the selected segment, computed by the same core function as the SBRT
Targets & OARs module and ``sbrt margin`` (:func:`sbrtstandards.margins.grow` / ``shrink``).
"""

from __future__ import annotations

import os
from typing import Any

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest


class SegmentEditorSBRTMargin(ScriptedLoadableModule):
    """Hidden module: registers the effect once the application has started."""

    def __init__(self, parent: Any) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Segment Editor SBRT Margin")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["SBRT Standards contributors (SBRT Standards project)"]
        self.parent.hidden = True
        self.parent.helpText = _(
            "Registers the SBRT Margin effect of the Segment Editor: exact Euclidean margins per direction."
        )
        self.parent.acknowledgementText = _("Part of the SBRT Standards extension.")
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)

    def registerEditorEffect(self) -> None:
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        instance = effects.qSlicerSegmentEditorScriptedEffect(None)
        path = os.path.join(os.path.dirname(__file__), f"{type(self).__name__}Lib", "SegmentEditorEffect.py")
        instance.setPythonSource(path.replace("\\", "/"))
        instance.self().register()


class SegmentEditorSBRTMarginTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: a box grown by per-direction margins through the Segment Editor."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear(0)

    def runTest(self) -> None:
        self.setUp()
        self.test_SBRTMargin_per_direction()

    def test_SBRTMargin_per_direction(self) -> None:
        import numpy as np

        from sbrtstandards.grid import Grid
        from sbrtstandards.slicer import (
            add_masks_to_segmentation,
            masks_from_segmentation,
            volume_node_from_image,
        )

        grid = Grid((-40.0, -40.0, -30.0), (1.0, 1.0, 2.0), (81, 81, 31))
        volume = volume_node_from_image(slicer.mrmlScene, (np.zeros(grid.shape, dtype=np.int16), grid), "CT")
        box = np.zeros(grid.shape, dtype=bool)
        box[10:16, 30:41, 35:46] = True
        seg = add_masks_to_segmentation(None, slicer.mrmlScene, {"Box": box}, grid, name="Box")

        editor = slicer.qMRMLSegmentEditorWidget()
        editor.setMRMLScene(slicer.mrmlScene)
        editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        editor.setMRMLSegmentEditorNode(editorNode)
        editor.setSegmentationNode(seg)
        editor.setSourceVolumeNode(volume)
        editor.setCurrentSegmentID(seg.GetSegmentation().GetSegmentIdBySegmentName("Box"))
        editor.setActiveEffectByName("SBRT Margin")
        effect = editor.activeEffect()
        margins = {"R": 2.0, "L": 0.0, "A": 0.0, "P": 4.0, "S": 6.0, "I": 0.0}
        effect.setParameter("Isotropic", 0)
        for direction, mm in margins.items():
            effect.setParameter(f"Margin{direction}Mm", mm)
        effect.self().onApply()
        grown = masks_from_segmentation(seg, grid)["Box"]
        extent = [
            tuple(int(v) for v in np.flatnonzero(grown.any(axis=a))[[0, -1]])
            for a in ((1, 2), (0, 2), (0, 1))
        ]
        self.assertEqual(extent, [(10, 18), (30, 44), (33, 45)])
        self.delayDisplay("Test passed")
