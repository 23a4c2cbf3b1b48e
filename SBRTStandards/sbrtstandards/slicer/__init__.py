"""MRML adapters: Slicer nodes <-> the core's arrays, masks and grids (the only part that imports slicer).

The core works with numpy arrays indexed ``[k, j, i]`` on a :class:`~sbrtstandards.grid.Grid` in
DICOM LPS millimetres; Slicer keeps volumes, segmentations, sequences, tables and charts in MRML
nodes in RAS. These modules convert between the two and do nothing else: module logic classes
read their input nodes here, call the core, and write the results back here.

Inside Slicer pass ``slicer.mrmlScene``; without the application (tests with the PyPI
``slicer-core`` package, batch scripts) create the scene with :func:`new_scene`, which registers
what the application would (segmentation converter rules, sequence browser node class).

Importing this package requires ``slicer``; ``import sbrtstandards`` alone never does.
"""

from __future__ import annotations

from sbrtstandards.slicer.geometry import LPS_TO_RAS, grid_from_ijk_to_ras, ijk_to_ras_from_grid
from sbrtstandards.slicer.scene import new_scene, register_converter_rules, sequences_logic
from sbrtstandards.slicer.segmentations import (
    ROLE_TAG,
    TG263_TAG,
    add_masks_to_segmentation,
    masks_from_segmentation,
    segment_ids_by_name,
    segment_tag,
)
from sbrtstandards.slicer.sequences import add_sequence_browser, phases_from_sequence, sequence_from_phases
from sbrtstandards.slicer.tables import (
    dvh_plot,
    rows_from_table_node,
    show_chart,
    table_node_from_rows,
    update_table_node,
)
from sbrtstandards.slicer.volumes import (
    DOSE_VOLUME_ATTRIBUTE,
    grid_from_volume_node,
    image_from_volume_node,
    is_dose_volume,
    update_volume_node,
    volume_node_from_image,
)

__all__ = [
    "DOSE_VOLUME_ATTRIBUTE",
    "LPS_TO_RAS",
    "ROLE_TAG",
    "TG263_TAG",
    "add_masks_to_segmentation",
    "add_sequence_browser",
    "dvh_plot",
    "grid_from_ijk_to_ras",
    "grid_from_volume_node",
    "ijk_to_ras_from_grid",
    "image_from_volume_node",
    "is_dose_volume",
    "masks_from_segmentation",
    "new_scene",
    "phases_from_sequence",
    "register_converter_rules",
    "rows_from_table_node",
    "segment_ids_by_name",
    "segment_tag",
    "sequence_from_phases",
    "sequences_logic",
    "show_chart",
    "table_node_from_rows",
    "update_table_node",
    "update_volume_node",
    "volume_node_from_image",
]
