"""Sequence nodes of volumes (a 4D-CT) <-> a list of labelled phase images.

A 4D-CT loaded through Slicer's DICOM module and the Sequences extension is a sequence node
(the data) shown through a sequence browser node (the proxy volume in the views). Both are
accepted. A phase label is the sequence's index value followed by its unit ("20" with unit "%"
gives "20%"). Labels written by :func:`sequence_from_phases` that are all percentages are stored as
a numeric index in "%" (so Slicer sorts and plays them in order); other labels as a text index.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import slicer

from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.slicer.geometry import node_to_world
from sbrtstandards.slicer.scene import sequences_logic
from sbrtstandards.slicer.volumes import update_volume_node, volume_array_and_grid

Phase = tuple[str, np.ndarray, Grid]

_PERCENT = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*%\s*$")


def phases_from_sequence(node: slicer.vtkMRMLSequenceNode | slicer.vtkMRMLSequenceBrowserNode) -> list[Phase]:
    """(label, array ``[k, j, i]``, LPS grid) of every item of a volume sequence, in sequence order.

    Given a browser, its primary sequence is read and the linear transform of its proxy volume
    (if any) is applied, as the views show it.
    """
    to_world = np.eye(4)
    sequence = node
    if node is not None and node.IsA("vtkMRMLSequenceBrowserNode"):
        sequence = _primary_sequence(node)
        proxy = node.GetProxyNode(sequence) if sequence is not None else None
        if proxy is not None:
            to_world = node_to_world(proxy)
    if sequence is None or not sequence.IsA("vtkMRMLSequenceNode"):
        name = node.GetName() if node is not None else "(none)"
        raise InputError(f"'{name}' is not a sequence (nor a sequence browser with a sequence)")
    count = sequence.GetNumberOfDataNodes()
    if count == 0:
        raise InputError(f"sequence '{sequence.GetName()}' is empty")
    unit = sequence.GetIndexUnit() or ""
    phases: list[Phase] = []
    for item in range(count):
        data_node = sequence.GetNthDataNode(item)
        value = sequence.GetNthIndexValue(item)
        if data_node is None or not data_node.IsA("vtkMRMLScalarVolumeNode"):
            kind = data_node.GetClassName() if data_node is not None else "nothing"
            raise InputError(
                f"sequence '{sequence.GetName()}' item {item} ({value}) holds {kind}, not a scalar volume"
            )
        array, grid = volume_array_and_grid(data_node, to_world)
        label = value if not unit or value.endswith(unit) else f"{value}{unit}"
        phases.append((label, array, grid))
    return phases


def sequence_from_phases(
    scene: slicer.vtkMRMLScene, phases: Sequence[Phase], name: str, *, index_name: str = "phase"
) -> slicer.vtkMRMLSequenceNode:
    """A new sequence node in ``scene`` holding one volume per phase, indexed by the labels.

    Percentage labels become a numeric index, which Slicer keeps sorted by value: read back,
    the phases come in increasing percentage whatever the order given here.
    """
    if not phases:
        raise InputError(f"sequence '{name}': no phases given")
    labels = [label for label, _, _ in phases]
    if len(set(labels)) != len(labels):
        raise InputError(f"sequence '{name}': phase labels repeat: {labels}")
    percents = [_PERCENT.match(label) for label in labels]
    numeric = all(percents)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName(index_name)
    if numeric:
        sequence.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
        sequence.SetIndexUnit("%")
    else:
        sequence.SetIndexType(slicer.vtkMRMLSequenceNode.TextIndex)
        sequence.SetIndexUnit("")
    for (label, array, grid), match in zip(phases, percents):
        volume = slicer.vtkMRMLScalarVolumeNode()  # the sequence stores a copy, outside the scene
        volume.SetName(f"{name} {label}")
        update_volume_node(volume, (array, grid))
        sequence.SetDataNodeAtValue(volume, _format_number(match.group(1)) if numeric else label)
    return sequence


def add_sequence_browser(
    scene: slicer.vtkMRMLScene, sequence: slicer.vtkMRMLSequenceNode, name: str | None = None
) -> slicer.vtkMRMLSequenceBrowserNode:
    """A browser for ``sequence`` with its proxy volume, so the phases can be shown and played."""
    logic = sequences_logic(scene)  # registers the browser node class on a headless scene
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", name or f"{sequence.GetName()} browser")
    # Renamed from "master" to "primary" in recent Slicer versions; accept both.
    setter = (
        getattr(browser, "SetAndObservePrimarySequenceNodeID", None)
        or browser.SetAndObserveMasterSequenceNodeID
    )
    setter(sequence.GetID())
    logic.UpdateProxyNodesFromSequences(browser)
    return browser


def _primary_sequence(browser: slicer.vtkMRMLSequenceBrowserNode) -> slicer.vtkMRMLSequenceNode | None:
    # Renamed from "master" to "primary" in recent Slicer versions; accept both.
    getter = getattr(browser, "GetPrimarySequenceNode", None) or browser.GetMasterSequenceNode
    return getter()


def _format_number(text: str) -> str:
    value = float(text)
    return str(int(value)) if value.is_integer() else repr(value)
