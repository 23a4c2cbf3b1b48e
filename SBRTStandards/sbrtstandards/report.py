"""Self-contained HTML reports (one file, no network): headings, tables, figures, notes.

The demo, ``sbrt check --html`` and the batch summary build a :class:`Report` and render it
with the Jinja2 template ``templates/report.html.j2``; images are embedded as base64 PNG so
the file can be mailed or archived alone. Wording of rules stays in the catalogue data.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from sbrtstandards import __version__
from sbrtstandards.atomic import write_text_atomic

STATUS_CLASSES = {"pass", "minor", "fail", "not_evaluated", "warning", "info"}


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    # optional per-row status ("pass", "minor", "fail", ...) used to colour the row
    row_status: list[str | None] = field(default_factory=list)


@dataclass
class Figure:
    png_base64: str
    caption: str = ""
    alt: str = ""


@dataclass
class Block:
    kind: str  # "text", "table", "figures", "keyvalue", "warnings"
    content: Any


@dataclass
class Section:
    title: str
    level: int = 2
    blocks: list[Block] = field(default_factory=list)

    def text(self, paragraph: str) -> Section:
        self.blocks.append(Block("text", paragraph))
        return self

    def key_values(self, items: dict[str, Any]) -> Section:
        self.blocks.append(Block("keyvalue", [(k, _fmt(v)) for k, v in items.items()]))
        return self

    def table(self, table: Table) -> Section:
        rows = [[_fmt(v) for v in row] for row in table.rows]
        status = [s if s in STATUS_CLASSES else None for s in table.row_status] or [None] * len(rows)
        self.blocks.append(Block("table", Table(table.columns, rows, table.caption, status)))
        return self

    def figures(self, figures: list[Figure]) -> Section:
        self.blocks.append(Block("figures", figures))
        return self

    def warnings(self, messages: list[str]) -> Section:
        if messages:
            self.blocks.append(Block("warnings", list(messages)))
        return self


@dataclass
class Report:
    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str, level: int = 2) -> Section:
        sec = Section(title, level)
        self.sections.append(sec)
        return sec

    def render(self) -> str:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("sbrtstandards", "templates"),
            autoescape=jinja2.select_autoescape(["html", "j2"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        template = env.get_template("report.html.j2")
        return template.render(
            report=self,
            version=__version__,
            generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the report atomically and return its absolute path."""
        return write_text_atomic(path, self.render()).resolve()


def figure_from_matplotlib(fig: Any, caption: str = "", alt: str = "", dpi: int = 110) -> Figure:
    """Embed a matplotlib figure as PNG (and close it, so batch runs do not leak memory)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Figure(base64.b64encode(buf.getvalue()).decode("ascii"), caption, alt or caption)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)
