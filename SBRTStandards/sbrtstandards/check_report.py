"""The plan-check report: constraint table (pass/minor/fail), plan metrics, DVH plot, slices.

Used by ``sbrt check --html``, the demo and the Slicer Plan Check module's export. One
self-contained HTML file (see :mod:`sbrtstandards.report`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbrtstandards.check import CheckResult
from sbrtstandards.report import Figure, Report, Section, Table, figure_from_matplotlib

STATUS_ORDER = {"fail": 0, "minor": 1, "not_evaluated": 2, "pass": 3}
PLAN_METRIC_LABELS = {
    "CI_RTOG": "CI (RTOG, PIV/PTV)",
    "CI_Paddick": "Paddick CI",
    "GI": "Gradient index V50%/V100%",
    "R50": "R50% (V50%/PTV)",
    "D2cm[%]": "D2cm (% of Rx)",
    "HI": "HI (ICRU 83)",
    "Dmax[%]": "Dmax (% of Rx)",
    "Dmax_outside_ITV[%]": "Dmax outside ITV (% of Rx)",
    "Dmax_outside_PTV[%]": "Dmax outside PTV (% of Rx)",
    "V105%_outside_PTV[cc]": "≥105% isodose outside PTV (cc)",
    "V110%_outside_PTV[cc]": "≥110% isodose outside PTV (cc)",
    "V105%_outside_ITV[cc]": "≥105% isodose outside ITV (cc)",
    "V110%_outside_ITV[cc]": "≥110% isodose outside ITV (cc)",
    "dose_grid_mm": "Dose grid (mm)",
}


def add_check_sections(
    report: Report, result: CheckResult, *, title: str | None = None, slices: Sequence[Figure] = ()
) -> Section:
    """Append the plan-check sections of ``result`` to ``report``; returns the first section."""
    p = result.protocol
    counts = result.counts
    head = report.section(title or f"Plan check: {p.title}")
    head.key_values(
        {
            "Protocol": f"{p.id} — {p.source}",
            "Prescription": f"{result.rx_gy:g} Gy in {result.fractions} fractions",
            "Tumour location class": result.site_class or "not given",
            "Constraints": f"{counts['pass']} pass, {counts['minor']} minor, {counts['fail']} fail, "
            f"{counts['not_evaluated']} not evaluated",
            "Dose maximum": f"{result.dose_max_gy:.2f} Gy ({100 * result.dose_max_gy / result.rx_gy:.1f}% of Rx)",
            "Computed in": f"{result.seconds:.2f} s",
        }
    )
    head.warnings(result.warnings)
    rows, status = [], []
    for c in sorted(result.constraints, key=lambda c: (STATUS_ORDER.get(c.status, 9), c.id)):
        limit = _limit_text(c.comparator, c.limit, c.unit)
        minor = "" if c.minor_limit is None else _limit_text(c.comparator, c.minor_limit, c.unit)
        value = "—" if c.value is None else f"{c.value:.2f}"
        rows.append(
            [
                c.status.replace("_", " "),
                c.structure,
                c.metric,
                value,
                limit,
                minor,
                c.reason or ("unconfirmed value" if not c.confirmed else ""),
                c.source,
            ]
        )
        status.append(c.status)
    report.section("Constraints", level=3).table(
        Table(
            ["Status", "Structure", "Metric", "Value", "Limit", "Minor deviation", "Note", "Source"],
            rows,
            caption="Rules of the protocol that apply to this plan, worst first.",
            row_status=status,
        )
    )
    mrows = [
        [PLAN_METRIC_LABELS.get(k, k), v, result.plan_metric_reasons.get(k, "")] for k, v in result.plan_metrics.items()
    ]
    report.section("Plan metrics", level=3).table(Table(["Metric", "Value", "Note"], mrows))
    report.section("Dose-volume histograms", level=3).figures([dvh_figure(result)])
    if slices:
        report.section("Dose on the CT", level=3).figures(list(slices))
    srows = [
        [s["name"], s.get("role"), s.get("volume_cc"), s.get("min_gy"), s.get("mean_gy"), s.get("max_gy")]
        for s in result.structures
    ]
    report.section("Structures", level=3).table(
        Table(["Structure", "Role", "Volume (cc)", "Min (Gy)", "Mean (Gy)", "Max (Gy)"], srows)
    )
    extra = report.section("Unmatched structures and rules that do not apply", level=3)
    extra.text("Unmatched structures (no role in the protocol): " + (", ".join(result.unmatched) or "none") + ".")
    if result.not_applicable:
        extra.table(Table(["Rule", "Why it does not apply"], [[n["id"], n["reason"]] for n in result.not_applicable]))
    return head


def write_check_html(result: CheckResult, path: str | os.PathLike[str], *, slices: Sequence[Figure] = ()) -> Path:
    """A report with only the plan check."""
    report = Report(f"SBRT plan check — {result.protocol.id}", result.protocol.title)
    add_check_sections(report, result, title="Summary", slices=slices)
    return report.write(path)


def dvh_figure(result: CheckResult) -> Figure:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 4.6))
    for name, dvh in sorted(result.dvhs.items(), key=lambda kv: kv[0]):
        d, v = dvh.curve(200)
        if dvh.volume_inside_cc <= 0:
            continue
        ax.plot(d, 100.0 * v / dvh.volume_inside_cc, label=name, lw=1.3)
    ax.axvline(result.rx_gy, color="k", ls=":", lw=1)
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (%)")
    ax.set_ylim(0, 102)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    ax.set_title(f"Cumulative DVH (Rx {result.rx_gy:g} Gy dotted)", fontsize=10)
    return figure_from_matplotlib(fig, caption="Cumulative DVHs of the structures the protocol uses.", alt="DVH plot")


def constraint_slices(
    result: CheckResult, ct: Any, dose: Any, *, window: str = "lung", max_failures: int = 3
) -> list[Figure]:
    """Axial slices at the PTV centre and at the worst failed constraints, with isodoses and structures."""
    from sbrtstandards.contours import planes_mask
    from sbrtstandards.figures import Overlay, dose_on_grid, slice_figures

    grid = ct.grid
    overlays = []
    palette = [(1, 0.2, 0.2), (1, 0.6, 0), (0.2, 0.8, 1), (0.6, 1, 0.3), (1, 0.3, 1), (1, 1, 0.3)]
    shown = ["PTV", "ITV", "GTV"] + [c.structure for c in result.constraints if c.status == "fail"]
    for n, label in enumerate(dict.fromkeys(shown)):
        planes = _planes_of(result, label)
        if planes is not None:
            overlays.append(Overlay(label, planes_mask(planes, grid, what=label), palette[n % len(palette)]))
    dose_on_ct = dose_on_grid(dose, grid)
    spots = []
    ptv = next((c.location_mm for c in result.constraints if c.structure in ("PTV",) and c.location_mm), None)
    centre = _mask_centre(overlays, grid) if ptv is None else None
    spots.append(("PTV centre", centre if centre is not None else ptv))
    for c in [c for c in result.constraints if c.status == "fail" and c.location_mm][:max_failures]:
        spots.append((f"{c.structure} {c.metric} = {c.value:.1f} (fail)", c.location_mm))
    figs: list[Figure] = []
    for title, at in spots:
        if at is None:
            continue
        figs += slice_figures(
            ct.array_hu(),
            grid,
            at,
            overlays,
            dose_on_ct=dose_on_ct,
            rx_gy=result.rx_gy,
            window=window,
            title=title,
            planes=("axial",),
        )
    return figs


def _planes_of(result: CheckResult, label: str) -> Any:
    planes = getattr(result, "planes_by_label", {}).get(label)
    return planes


def _mask_centre(overlays: Sequence[Any], grid: Any) -> Any:
    for ov in overlays:
        if ov.name == "PTV" and ov.mask.any():
            return grid.index_to_lps(np.argwhere(ov.mask).mean(axis=0)[::-1])
    return None


def _limit_text(comparator: str, limit: Any, unit: str) -> str:
    if limit is None:
        return "—"
    if isinstance(limit, (list, tuple)):
        return f"{limit[0]:.4g}–{limit[1]:.4g} {unit}".strip()
    return f"{comparator} {limit:.4g} {unit}".strip()
