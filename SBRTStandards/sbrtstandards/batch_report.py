"""The summary page of ``sbrt batch``: pass rates per constraint and the distributions behind them.

Built from the rows of ``results.csv`` only (so it can be rebuilt from the CSV alone), as one
self-contained HTML file (:mod:`sbrtstandards.report`).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbrtstandards.report import Figure, Report, Table, figure_from_matplotlib

STATUSES = ("pass", "minor", "fail", "not_evaluated")
PLOTS_PER_FIGURE = 12


def write_summary_html(path: str | os.PathLike[str], rows: Sequence[Mapping[str, str]], run: Any,
                       options: Any) -> Path:
    report = Report("SBRT batch summary", f"protocol {options.protocol_id} · {run.root}")
    head = report.section("Run")
    archive = getattr(run, "archive", None)
    source = {"dicomweb": "DICOMweb archive", "dimse": "DIMSE archive"}.get(getattr(run, "source", ""), "folder")
    fetched = {}
    if archive:
        fetched = {"Archive": f"{archive['studies']} studies matched, {archive['instances']} RT instances: "
                              f"{archive['fetched']} fetched now, {archive['from_cache']} from the local cache"
                              + (f", {archive['retries']} retries" if archive.get("retries") else "")}
    head.key_values({
        "Source": f"{run.root} ({source})",
        **fetched,
        "Protocol": options.protocol_id,
        "Cases": run.cases,
        "Failed cases": run.failed,
        "Run now / kept from before (--resume)": f"{run.ran} / {run.skipped}",
        "Rows in results.csv": run.rows,
        "Wall time": f"{run.seconds:.1f} s",
        "Cluster": run.scheduler + (f", {run.workers} workers" if run.workers else ""),
        "Largest worker memory": f"{run.peak_rss_mb:.0f} MB" if run.peak_rss_mb else "—",
    })
    if run.failures:
        report.section("Failed cases", level=3).table(
            Table(["Case", "Error"], [[f["case"] or ".", f["error"]] for f in run.failures],
                  row_status=["fail"] * len(run.failures)))
    groups = constraint_groups(rows)
    if groups:
        trows, tstatus = [], []
        for key, items in groups.items():
            counts = {s: sum(1 for r in items if r["status"] == s) for s in STATUSES}
            evaluated = counts["pass"] + counts["minor"] + counts["fail"]
            rate = 100.0 * counts["pass"] / evaluated if evaluated else None
            trows.append([key[0], key[1], key[2], _limit(items[0]), len(items), counts["pass"], counts["minor"],
                          counts["fail"], counts["not_evaluated"], None if rate is None else round(rate, 1)])
            tstatus.append("fail" if counts["fail"] else ("minor" if counts["minor"] else
                                                          ("pass" if counts["pass"] else "not_evaluated")))
        report.section("Pass rates per constraint").table(Table(
            ["Constraint", "Structure", "Metric", "Limit", "Cases", "Pass", "Minor", "Fail", "Not evaluated",
             "Pass rate (% of evaluated)"], trows, row_status=tstatus,
            caption="Row colour: the worst status among the cases."))
        figs = distribution_figures(groups)
        if figs:
            report.section("Distributions of the constrained values", level=3).figures(figs)
    metric_rows = [r for r in rows if r["kind"] == "plan_metric"]
    if metric_rows:
        fig = plan_metric_figure(metric_rows)
        if fig is not None:
            report.section("Plan metrics").figures([fig])
    compare = [r for r in rows if r["kind"] == "compare"]
    if compare:
        sec = report.section("Contour agreement with the reference sets")
        sec.table(compare_table(compare))
        fig = compare_figure(compare)
        if fig is not None:
            sec.figures([fig])
    return report.write(path)


def constraint_groups(rows: Sequence[Mapping[str, str]]) -> dict[tuple[str, str, str], list[Mapping[str, str]]]:
    groups: dict[tuple[str, str, str], list[Mapping[str, str]]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "constraint":
            groups[(r["constraint_id"], r["structure"], r["metric"])].append(r)
    return dict(sorted(groups.items()))


def _limit(row: Mapping[str, str]) -> str:
    limit = row["limit"]
    if limit.startswith("["):
        lo, hi = json.loads(limit)
        return f"{lo:g}–{hi:g} {row['unit']}".strip()
    return f"{row['comparator']} {limit} {row['unit']}".strip() if limit else "—"


def _float(text: str) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def distribution_figures(groups: Mapping[tuple[str, str, str], Sequence[Mapping[str, str]]]) -> list[Figure]:
    """Small multiples: per constraint, the values over the cases (points coloured by status) and the limit."""
    plt = _plt()
    colors = {"pass": "#2da44e", "minor": "#d4a72c", "fail": "#cf222e", "not_evaluated": "#8c959f"}
    items = [(k, v) for k, v in groups.items() if any(_float(r["value"]) is not None for r in v)]
    figures = []
    for start in range(0, len(items), PLOTS_PER_FIGURE):
        chunk = items[start:start + PLOTS_PER_FIGURE]
        ncols = 3
        nrows = math.ceil(len(chunk) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(11.0, 2.5 * nrows), squeeze=False)
        for ax, (key, group) in zip(axes.ravel(), chunk):
            values = [(_float(r["value"]), r["status"]) for r in group]
            values = [(v, s) for v, s in values if v is not None]
            rng = np.random.default_rng(0)
            for status in STATUSES:
                vs = [v for v, s in values if s == status]
                if vs:
                    ax.scatter(vs, rng.uniform(-0.3, 0.3, len(vs)), s=14, color=colors[status], label=status,
                               alpha=0.8)
            if len(values) >= 5:
                ax.hist([v for v, _ in values], bins=min(20, len(values)), color="#1f6feb", alpha=0.15,
                        weights=np.full(len(values), 0.6 / len(values) * 5), bottom=-0.3)
            limit = group[0]["limit"]
            for lv in (json.loads(limit) if limit.startswith("[") else [_float(limit)]):
                if lv is not None:
                    ax.axvline(float(lv), color="k", ls=":", lw=1)
            ax.set_yticks([])
            ax.set_ylim(-0.5, 0.5)
            unit = group[0]["unit"]
            ax.set_title(f"{key[1]} {key[2]}\n{key[0]}", fontsize=7.5)
            ax.set_xlabel(unit or "value", fontsize=7)
            ax.tick_params(labelsize=7)
        for ax in axes.ravel()[len(chunk):]:
            ax.axis("off")
        fig.tight_layout()
        figures.append(figure_from_matplotlib(
            fig, caption="Each point is a case (green pass, yellow minor, red fail); dotted: the limit.",
            alt="distributions of constrained values"))
    return figures


def plan_metric_figure(rows: Sequence[Mapping[str, str]]) -> Figure | None:
    plt = _plt()
    by_metric: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        v = _float(r["value"])
        if v is not None:
            by_metric[r["metric"]].append(v)
    keys = [k for k in sorted(by_metric) if by_metric[k]]
    if not keys:
        return None
    ncols = 4
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(11.0, 2.2 * nrows), squeeze=False)
    for ax, key in zip(axes.ravel(), keys):
        _strips(ax, [by_metric[key]], [""])
        ax.set_title(key, fontsize=8)
        ax.set_yticks([])
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return figure_from_matplotlib(fig, caption="Plan metrics over the cases (points: cases; bar: median).",
                                  alt="plan metrics")


def _strips(ax: Any, data: Sequence[Sequence[float]], labels: Sequence[str]) -> None:
    """One row of points per data set (jittered), its median as a bar: readable for 3 cases or 3000."""
    rng = np.random.default_rng(0)
    for i, values in enumerate(data):
        if len(values):
            ax.scatter(values, i + rng.uniform(-0.25, 0.25, len(values)), s=8, color="#1f6feb", alpha=0.5)
            ax.plot([np.median(values)] * 2, [i - 0.35, i + 0.35], color="k", lw=1.5)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.tick_params(labelsize=7)


def compare_table(rows: Sequence[Mapping[str, str]]) -> Table:
    by_structure: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        v = _float(r["value"])
        if v is not None:
            by_structure[r["structure"]][r["metric"]].append(v)
    out = []
    for name in sorted(by_structure):
        m = by_structure[name]

        def med(key: str, m: Mapping[str, list[float]] = m) -> float | None:
            return float(np.median(m[key])) if m.get(key) else None

        out.append([name, len(m.get("dice", [])), med("dice"), med("surface_dice"), med("hd95_mm"), med("msd_mm"),
                    med("volume_ratio")])
    return Table(["Structure", "Cases", "Median Dice", "Median surface Dice", "Median HD95 (mm)", "Median MSD (mm)",
                  "Median volume ratio"], out)


def compare_figure(rows: Sequence[Mapping[str, str]]) -> Figure | None:
    plt = _plt()
    dice: dict[str, list[float]] = defaultdict(list)
    sdice: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        v = _float(r["value"])
        if v is None:
            continue
        if r["metric"] == "dice":
            dice[r["structure"]].append(v)
        elif r["metric"] == "surface_dice":
            sdice[r["structure"]].append(v)
    names = sorted(dice)
    if not names:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11.0, 0.35 * len(names) + 1.6))
    _strips(a1, [dice[n] for n in names], names)
    a1.set_title("Dice", fontsize=9)
    _strips(a2, [sdice.get(n, []) for n in names], names)
    a2.set_title("Surface Dice", fontsize=9)
    for ax in (a1, a2):
        ax.set_xlim(0, 1.02)
    fig.tight_layout()
    return figure_from_matplotlib(fig, caption="Agreement of the plans' structures with the reference sets.",
                                  alt="contour agreement")
