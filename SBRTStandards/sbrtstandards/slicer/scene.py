"""Headless scene set-up: what the Slicer application registers and slicer-core does not.

Inside Slicer, ``slicer.mrmlScene`` already knows every node class and the segmentation
converter rules are registered at start-up. With the PyPI ``slicer-core`` package (tests, batch
scripts) a bare ``slicer.vtkMRMLScene()`` lacks the sequence browser node class and the
converter factory is empty, so binary labelmap <-> closed surface conversions fail. These helpers
are idempotent: calling them inside Slicer changes nothing.
"""

from __future__ import annotations

import weakref

import slicer

# Registered by the Segmentations module at Slicer start-up (closed surface <-> labelmaps).
# SlicerRT adds the planar contour rules; they are not part of slicer-core.
_CONVERTER_RULE_CLASSES = (
    "vtkBinaryLabelmapToClosedSurfaceConversionRule",
    "vtkClosedSurfaceToBinaryLabelmapConversionRule",
    "vtkClosedSurfaceToFractionalLabelmapConversionRule",
    "vtkFractionalLabelmapToClosedSurfaceConversionRule",
)

# Headless Sequences logics, one per scene: a logic registers the browser node class on its scene
# and keeps proxy nodes in step with the browsers, so it has to live as long as the scene.
_SEQUENCES_LOGICS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register_converter_rules() -> None:
    """Register the segmentation converter rules of the Segmentations module, once per process."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    present = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for class_name in _CONVERTER_RULE_CLASSES:
        rule_class = getattr(slicer, class_name, None)
        if rule_class is not None and class_name not in present:
            factory.RegisterConverterRule(rule_class())


def sequences_logic(scene: slicer.vtkMRMLScene) -> slicer.vtkSlicerSequencesLogic:
    """The Sequences module logic for ``scene``: the application's inside Slicer, else one kept per scene.

    Creating it registers the sequence browser node class on the scene (as the application does).
    """
    modules = getattr(slicer, "modules", None)
    if modules is not None and hasattr(modules, "sequences") and scene is getattr(slicer, "mrmlScene", None):
        return modules.sequences.logic()
    logic = _SEQUENCES_LOGICS.get(scene)
    if logic is None or logic.GetMRMLScene() is not scene:
        logic = slicer.vtkSlicerSequencesLogic()
        logic.SetMRMLScene(scene)
        _SEQUENCES_LOGICS[scene] = logic
    return logic


def new_scene() -> slicer.vtkMRMLScene:
    """A scene usable without the Slicer application (node classes and converter rules set up).

    Inside Slicer use ``slicer.mrmlScene`` instead.
    """
    scene = slicer.vtkMRMLScene()
    sequences_logic(scene)
    register_converter_rules()
    return scene
