"""The modules' .ui files against the module code, statically (no Qt, no Slicer).

The .ui is read with ``xml.etree`` and the module source with ``ast``. Checked: every widget the code
uses (``self.ui.name``, also through ``getattr(self.ui, ...)`` over the module's constant tables)
exists in the .ui; every signal the code connects exists on that widget's class; every
``SlicerParameterName`` is a field of the module's parameter node, bound to a widget class that
Slicer's ``parameterNodeWrapper`` can connect to that field's type (its GUI connectors match the
widget class exactly), with the spin-box ranges of the field's ``WithinRange``; every field is bound
or synchronised by the widget code; MRML widgets receive the scene; custom widgets are declared.
"""

from __future__ import annotations

import ast
import contextlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "SBRTStandards"
MODULES = ("SBRT4DCT", "SBRTTargetsOARs", "SBRTPlanCheck", "SBRTProgrammeQA", "SBRTContourQA")

# Signals (normalised signatures) of the widget classes the modules use, including inherited ones.
_BUTTON = {"clicked()", "clicked(bool)", "pressed()", "released()", "toggled(bool)"}
SIGNALS: dict[str, set[str]] = {
    "QPushButton": _BUTTON,
    "QToolButton": _BUTTON | {"triggered(QAction*)"},
    "QCheckBox": _BUTTON | {"stateChanged(int)"},
    "QComboBox": {"currentIndexChanged(int)", "currentTextChanged(QString)", "activated(int)"},
    "QLineEdit": {"textChanged(QString)", "textEdited(QString)", "editingFinished()", "returnPressed()"},
    "QSpinBox": {"valueChanged(int)", "editingFinished()"},
    "QDoubleSpinBox": {"valueChanged(double)", "editingFinished()"},
    "QTableWidget": {"itemSelectionChanged()", "cellClicked(int,int)", "currentCellChanged(int,int,int,int)",
                     "itemClicked(QTableWidgetItem*)"},
    "qMRMLNodeComboBox": {"currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)",
                          "currentNodeIDChanged(QString)", "nodeAdded(vtkMRMLNode*)"},
    "qMRMLCheckableNodeComboBox": {"checkedNodesChanged()", "currentNodeChanged(vtkMRMLNode*)"},
    "qMRMLSegmentSelectorWidget": {"currentNodeChanged(vtkMRMLNode*)", "currentSegmentChanged(QString)",
                                   "segmentSelectionChanged(QStringList)"},
    "qMRMLTableView": {"selectionChanged()"},
}
# Slicer's parameterNodeWrapper GUI connectors: field type -> the widget classes it binds (exact class).
CONNECTORS = {
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "str": {"QLineEdit", "QTextEdit"},
    "choice": {"QComboBox"},
    "node": {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"},
}
QT_CLASSES = {
    "QWidget", "QLabel", "QPushButton", "QToolButton", "QCheckBox", "QComboBox", "QLineEdit", "QSpinBox",
    "QDoubleSpinBox", "QProgressBar", "QTableWidget", "QGroupBox", "QFrame",
}


# --------------------------------------------------------------------------------------------
# Reading the .ui and the module
# --------------------------------------------------------------------------------------------


@dataclass
class UiWidget:
    cls: str
    name: str
    props: dict[str, Any]
    param: str | None


@dataclass
class Ui:
    root: UiWidget
    widgets: dict[str, UiWidget]
    scene_receivers: set[str]
    custom: set[str]


def _value(prop: ET.Element) -> Any:
    child = next(iter(prop))
    if child.tag == "bool":
        return child.text == "true"
    if child.tag == "number":
        return int(child.text or "0")
    if child.tag == "double":
        return float(child.text or "0")
    if child.tag == "stringlist":
        return [s.text for s in child.findall("string")]
    return child.text


def read_ui(name: str) -> Ui:
    tree = ET.parse(MODULE_DIR / "Resources" / "UI" / f"{name}.ui")
    top = tree.getroot().find("widget")
    assert top is not None
    widgets: dict[str, UiWidget] = {}
    for w in top.iter("widget"):
        props = {p.get("name"): _value(p) for p in w.findall("property")}
        widget = UiWidget(w.get("class"), w.get("name"), props, props.get("SlicerParameterName"))
        assert widget.name not in widgets, f"{name}.ui: two widgets named {widget.name}"
        widgets[widget.name] = widget
    receivers = {
        c.findtext("receiver")
        for c in tree.getroot().iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    custom = {c.findtext("class") for c in tree.getroot().iter("customwidget")}
    return Ui(widgets[top.get("name")], widgets, receivers, custom)


@dataclass
class Field:
    name: str
    kind: str  # bool, int, float, str, choice, node
    default: Any = None
    within: tuple[float, float] | None = None
    node_types: tuple[str, ...] = ()


@dataclass
class ModuleCode:
    tree: ast.Module
    source: str
    constants: dict[str, Any]
    fields: dict[str, Field]
    used: dict[str, list[int]] = field(default_factory=dict)  # widget name -> lines
    connects: list[tuple[str, str, int]] = field(default_factory=list)  # (widget, signal, line)


def _parameter_fields(cls: ast.ClassDef, constants: dict[str, Any]) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for stmt in cls.body:
        if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
            continue
        text = ast.unparse(stmt.annotation)
        default = None
        if stmt.value is not None:
            default = ast.literal_eval(stmt.value)
        f = Field(stmt.target.id, "", default)
        nodes = re.findall(r"vtkMRML\w+", text)
        if nodes:
            f.kind, f.node_types = "node", tuple(nodes)
        elif "Choice(" in text:
            f.kind = "choice"
        else:
            base = re.sub(r"^Annotated\[(\w+),.*\]$", r"\1", text)
            assert base in ("bool", "int", "float", "str"), f"{f.name}: unexpected annotation {text}"
            f.kind = base
        within = re.search(r"WithinRange\(([^,]+),\s*([^)]+)\)", text)
        if within:
            f.within = (float(within.group(1)), float(within.group(2)))
        fields[f.name] = f
    return fields


def _module_constants(tree: ast.Module) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for t in targets:
                if isinstance(t, ast.Name) and stmt.value is not None:
                    with contextlib.suppress(ValueError):
                        out[t.id] = ast.literal_eval(stmt.value)
    return out


def _is_self_ui(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "ui" and isinstance(node.value, ast.Name)
            and node.value.id == "self")


def _loop_values(func: ast.AST, var: str, constants: dict[str, Any]) -> list[Any]:
    """Values a loop variable takes when it iterates over a module constant (tuple, list, dict keys)."""
    for node in ast.walk(func):
        if isinstance(node, ast.For):
            targets = [node.target] if isinstance(node.target, ast.Name) else list(getattr(node.target, "elts", []))
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if var not in names:
                continue
            it = node.iter
            items = isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) and it.func.attr == "items"
            base = it.func.value if items else it
            if isinstance(base, ast.Name) and base.id in constants:
                value = constants[base.id]
                seq = list(value.items()) if items else list(value)
                if len(names) == 1:
                    return seq
                position = names.index(var)
                return [entry[position] for entry in seq]
    return []


def _names_of(expr: ast.AST, func: ast.AST, constants: dict[str, Any]) -> list[str]:
    """The widget names an expression (constant, loop variable, f-string of loop variables) evaluates to."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [expr.value]
    if isinstance(expr, ast.Name):
        return [str(v) for v in _loop_values(func, expr.id, constants)]
    if isinstance(expr, ast.JoinedStr):
        variables = [v.value.id for v in expr.values if isinstance(v, ast.FormattedValue)
                     and isinstance(v.value, ast.Name)]
        assert len(variables) == 1, f"cannot resolve {ast.unparse(expr)}"
        return [
            "".join(str(p.value) if isinstance(p, ast.Constant) else str(value) for p in expr.values)
            for value in _loop_values(func, variables[0], constants)
        ]
    raise AssertionError(f"cannot resolve widget name {ast.unparse(expr)}")


def read_module(name: str) -> ModuleCode:
    source = (MODULE_DIR / f"{name}.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    constants = _module_constants(tree)
    classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}
    code = ModuleCode(tree, source, constants, _parameter_fields(classes[f"{name}ParameterNode"], constants))
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        aliases: dict[str, list[str]] = {}
        for node in ast.walk(func):
            # self.ui.name
            if isinstance(node, ast.Attribute) and _is_self_ui(node.value):
                code.used.setdefault(node.attr, []).append(node.lineno)
            # getattr(self.ui, expr), possibly assigned to a variable
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                    and _is_self_ui(node.args[0])):
                for widget in _names_of(node.args[1], func, constants):
                    code.used.setdefault(widget, []).append(node.lineno)
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                    and node.value.func.id == "getattr" and _is_self_ui(node.value.args[0])):
                aliases[node.targets[0].id] = _names_of(node.value.args[1], func, constants)
        for node in ast.walk(func):
            # <widget>.connect("signal(args)", slot)
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            target = node.func.value
            if isinstance(target, ast.Attribute) and _is_self_ui(target.value):
                widgets = [target.attr]
            elif isinstance(target, ast.Name) and target.id in aliases:
                widgets = aliases[target.id]
            else:
                continue
            code.connects += [(w, node.args[0].value, node.lineno) for w in widgets]
    return code


@pytest.fixture(scope="module", params=MODULES)
def module(request: pytest.FixtureRequest) -> tuple[str, Ui, ModuleCode]:
    return request.param, read_ui(request.param), read_module(request.param)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_root_widget_is_a_qmrmlwidget_named_after_the_module(module) -> None:
    name, ui, _code = module
    assert ui.root.cls == "qMRMLWidget" and ui.root.name == name


def test_every_widget_used_in_the_code_exists_in_the_ui(module) -> None:
    name, ui, code = module
    missing = {w: lines for w, lines in code.used.items() if w not in ui.widgets}
    assert not missing, f"{name}.py uses widgets that {name}.ui lacks (name: lines): {missing}"
    assert code.used, f"{name}.py uses no widget of its .ui"


def test_every_connected_signal_exists_on_its_widget_class(module) -> None:
    name, ui, code = module
    assert code.connects, f"{name}.py connects no signal"
    for widget, signal, line in code.connects:
        assert widget in ui.widgets, f"{name}.py:{line} connects {widget}, which {name}.ui lacks"
        cls = ui.widgets[widget].cls
        assert signal in SIGNALS.get(cls, set()), f"{name}.py:{line}: {cls} {widget} has no signal {signal}"


def test_every_parameter_binding_is_a_field_with_a_widget_slicer_can_connect(module) -> None:
    name, ui, code = module
    bound = {w.param: w for w in ui.widgets.values() if w.param}
    assert bound, f"{name}.ui binds no widget to the parameter node"
    for param, widget in bound.items():
        assert param in code.fields, f"{name}.ui: {widget.name} is bound to '{param}', not a parameter node field"
        f = code.fields[param]
        assert widget.cls in CONNECTORS[f.kind], (
            f"{name}.ui: {widget.cls} {widget.name} cannot be connected to the {f.kind} field '{param}'"
        )
        if f.kind == "node":
            assert set(widget.props.get("nodeTypes") or []) == set(f.node_types), (
                f"{name}.ui: {widget.name} lists {widget.props.get('nodeTypes')}, field '{param}' is {f.node_types}"
            )
        if f.within is not None and widget.cls in ("QSpinBox", "QDoubleSpinBox"):
            assert (widget.props.get("minimum"), widget.props.get("maximum")) == pytest.approx(f.within), (
                f"{name}.ui: {widget.name} range differs from the WithinRange of '{param}'"
            )
        if f.default is not None and "value" in widget.props:
            assert widget.props["value"] == pytest.approx(f.default), f"{name}.ui: {widget.name} default differs"
    assert len({w.param for w in ui.widgets.values() if w.param}) == sum(1 for w in ui.widgets.values() if w.param), (
        f"{name}.ui binds one field to two widgets"
    )


def test_every_parameter_field_is_bound_or_synchronised_by_the_widget(module) -> None:
    name, ui, code = module
    bound = {w.param for w in ui.widgets.values() if w.param}
    widget_class = next(c for c in code.tree.body if isinstance(c, ast.ClassDef) and c.name == f"{name}Widget")
    widget_source = ast.unparse(widget_class)
    synced = set(code.constants.get("SEGMENT_SELECTORS", {}).values())
    for f in code.fields:
        assert f in bound or f in synced or re.search(rf"\b{f}\b", widget_source), (
            f"{name}: parameter node field '{f}' is neither bound in the .ui nor used by the widget"
        )


def test_mrml_widgets_get_the_scene_and_custom_widgets_are_declared(module) -> None:
    name, ui, _code = module
    for w in ui.widgets.values():
        if w.cls.startswith("qMRML") and w is not ui.root:
            assert w.name in ui.scene_receivers, f"{name}.ui: {w.name} is not given the MRML scene"
        if w.cls not in QT_CLASSES:
            assert w.cls in ui.custom, f"{name}.ui: custom widget class {w.cls} is not declared"


def test_buttons_that_start_work_are_disabled_until_inputs_are_chosen(module) -> None:
    name, ui, code = module
    buttons = [w for w in ui.widgets.values() if w.cls == "QPushButton" and w.name.endswith(("applyButton",
                                                                                             "ApplyButton",
                                                                                             "evaluateButton"))]
    assert buttons
    for b in buttons:
        assert b.props.get("enabled") is False, f"{name}.ui: {b.name} is enabled before any input is chosen"
        assert re.search(rf"self\.ui\.{b.name}\.enabled\s*=", code.source), f"{name}.py never enables {b.name}"


def test_user_visible_strings_of_the_module_go_through_tr() -> None:
    """Titles, help and messages are translatable: no bare string literal is shown by the widget."""
    for name in MODULES:
        code = read_module(name)
        for node in ast.walk(code.tree):
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Attribute)
                    and node.targets[0].attr in ("title", "text", "toolTip", "helpText", "acknowledgementText")
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                    and node.value.value):
                raise AssertionError(f"{name}.py:{node.lineno}: '{node.value.value}' is not wrapped in _()")
