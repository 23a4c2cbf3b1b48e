"""Table and plot chart nodes for results: constraint tables and DVH charts.

DVH curves follow SlicerRT's layout (DoseVolumeHistogram module) so that its curves and ours
can share one chart: one table node per structure, named ``<structure>_DvhTable``, with a "Dose"
column in Gy and a "Volume" column in percent of the structure volume, the attribute
``DoseVolumeHistogram.DVH`` = "1", and one plot series per table, named after the structure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import slicer
import vtk

DVH_ATTRIBUTE_PREFIX = "DoseVolumeHistogram."
DVH_IDENTIFIER_ATTRIBUTE = DVH_ATTRIBUTE_PREFIX + "DVH"
DVH_SEGMENT_ID_ATTRIBUTE = DVH_ATTRIBUTE_PREFIX + "SegmentID"
DVH_TABLE_SUFFIX = "_DvhTable"
DVH_DOSE_COLUMN = "Dose"
DVH_VOLUME_COLUMN = "Volume"
#: Node reference roles of SlicerRT's DVH tables (vtkMRMLDoseVolumeHistogramNode).
DOSE_VOLUME_REFERENCE_ROLE = "doseVolumeRef"
SEGMENTATION_REFERENCE_ROLE = "segmentationRef"
#: Marks the tables and series made by this package (SlicerRT's own have no such attribute).
SOURCE_ATTRIBUTE = "SBRTStandards.Source"

Cell = object  # str, int, float, bool or None


def table_node_from_rows(
    scene: slicer.vtkMRMLScene, name: str, columns: Sequence[str], rows: Sequence[Sequence[Cell]]
) -> slicer.vtkMRMLTableNode:
    """A new table node in ``scene`` with the given column names and rows."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    update_table_node(node, columns, rows)
    return node


def update_table_node(
    node: slicer.vtkMRMLTableNode, columns: Sequence[str], rows: Sequence[Sequence[Cell]]
) -> None:
    """Replace the content of a table node.

    A column whose values are all numbers (None allowed, stored as NaN) becomes a double column,
    so Slicer sorts and plots it as numbers; any other column is text (booleans as "true"/"false").
    """
    if len(set(columns)) != len(columns):
        raise ValueError(f"table '{node.GetName()}': column names repeat: {list(columns)}")
    for index, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(
                f"table '{node.GetName()}': row {index} has {len(row)} cells, {len(columns)} columns"
            )
    table = vtk.vtkTable()
    for col, column_name in enumerate(columns):
        values = [row[col] for row in rows]
        table.AddColumn(_column(str(column_name), values))
    node.SetAndObserveTable(table)
    node.Modified()


def rows_from_table_node(node: slicer.vtkMRMLTableNode) -> tuple[list[str], list[list[Cell]]]:
    """Column names and rows of a table node (numbers as float, text as str)."""
    table = node.GetTable()
    columns = [table.GetColumnName(col) for col in range(table.GetNumberOfColumns())]
    arrays = [table.GetColumn(col) for col in range(table.GetNumberOfColumns())]
    rows: list[list[Cell]] = []
    for row in range(table.GetNumberOfRows()):
        rows.append(
            [
                array.GetValue(row) if isinstance(array, vtk.vtkStringArray) else float(array.GetTuple1(row))
                for array in arrays
            ]
        )
    return columns, rows


def dvh_plot(
    scene: slicer.vtkMRMLScene,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    chart_name: str = "DVH",
    chart: slicer.vtkMRMLPlotChartNode | None = None,
    colors: Mapping[str, Sequence[float]] | None = None,
    segment_ids: Mapping[str, str] | None = None,
    dose_volume_node: slicer.vtkMRMLScalarVolumeNode | None = None,
    segmentation_node: slicer.vtkMRMLSegmentationNode | None = None,
) -> slicer.vtkMRMLPlotChartNode:
    """A plot chart with one cumulative DVH series per structure, in SlicerRT's table layout.

    ``curves`` maps a structure name to (dose in Gy, volume in % of the structure), both 1-D of
    the same length. Give ``chart`` to add the series to an existing chart (for instance the
    one of SlicerRT's DVH module, to compare); ``colors`` (RGB 0..1) are usually the segment
    colours. With ``segment_ids``, ``dose_volume_node`` and ``segmentation_node`` the tables carry
    the same attribute and references as SlicerRT's, which lets its DVH module recognise them.
    """
    colors = colors or {}
    segment_ids = segment_ids or {}
    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", chart_name)
    dose_unit = "Gy"
    chart.SetTitle("Dose Volume Histogram")
    chart.SetXAxisTitle(f"Dose [{dose_unit}]")
    chart.SetYAxisTitle("Fractional volume [%]")
    for structure, (dose_gy, volume_pct) in curves.items():
        dose = np.asarray(dose_gy, dtype=float)
        volume = np.asarray(volume_pct, dtype=float)
        if dose.ndim != 1 or dose.shape != volume.shape or dose.size == 0:
            raise ValueError(f"DVH of '{structure}': dose and volume must be 1-D arrays of one length")
        table = _dvh_table(scene, structure, dose, volume)
        if structure in segment_ids:
            table.SetAttribute(DVH_SEGMENT_ID_ATTRIBUTE, segment_ids[structure])
        if dose_volume_node is not None:
            table.SetNodeReferenceID(DOSE_VOLUME_REFERENCE_ROLE, dose_volume_node.GetID())
        if segmentation_node is not None:
            table.SetNodeReferenceID(SEGMENTATION_REFERENCE_ROLE, segmentation_node.GetID())
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", structure)
        series.SetAttribute(DVH_IDENTIFIER_ATTRIBUTE, "1")
        series.SetAttribute(SOURCE_ATTRIBUTE, "SBRTStandards")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName(DVH_DOSE_COLUMN)
        series.SetYColumnName(DVH_VOLUME_COLUMN)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
        if structure in colors:
            series.SetColor(*(float(c) for c in colors[structure]))
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


def show_chart(scene: slicer.vtkMRMLScene, chart: slicer.vtkMRMLPlotChartNode) -> bool:
    """Show ``chart`` in the scene's plot views; False when there is no plot view (no layout)."""
    views = [
        scene.GetNthNodeByClass(n, "vtkMRMLPlotViewNode")
        for n in range(scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode"))
    ]
    for view in views:
        view.SetPlotChartNodeID(chart.GetID())
    return bool(views)


def _dvh_table(
    scene: slicer.vtkMRMLScene, structure: str, dose: np.ndarray, volume: np.ndarray
) -> slicer.vtkMRMLTableNode:
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(structure + DVH_TABLE_SUFFIX))
    update_table_node(node, [DVH_DOSE_COLUMN, DVH_VOLUME_COLUMN], np.column_stack([dose, volume]).tolist())
    node.SetAttribute(DVH_IDENTIFIER_ATTRIBUTE, "1")
    node.SetAttribute(SOURCE_ATTRIBUTE, "SBRTStandards")
    node.SetAttribute(DVH_ATTRIBUTE_PREFIX + "StructureName", structure)
    return node


def _column(name: str, values: list[Cell]) -> vtk.vtkAbstractArray:
    numeric = all(
        v is None or (isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)))
        for v in values
    )
    if numeric:
        array = vtk.vtkDoubleArray()
        array.SetName(name)
        for value in values:
            array.InsertNextValue(math.nan if value is None else float(value))  # type: ignore[arg-type]
        return array
    text = vtk.vtkStringArray()
    text.SetName(name)
    for value in values:
        text.InsertNextValue(_text(value))
    return text


def _text(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)
