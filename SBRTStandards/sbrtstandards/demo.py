"""``sbrt demo``: write the synthetic lung and liver cases and run the whole chain on them.

Every step reads the DICOM files that the previous one wrote (through the same readers that
users' data goes through), so the demo is also an end-to-end check of the file round trip.
Steps are added here as the pipeline grows; each contributes sections to one report.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbrtstandards.report import Report, Table

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
SITES = ("lung", "liver")


@dataclass
class CaseFiles:
    """Where the files of one synthetic case are (the layout that ``sbrt phantom`` writes)."""

    site: str
    root: Path
    truth: dict[str, Any]

    @property
    def planning(self) -> Path:
        return self.root / "planning"

    @property
    def phase_dirs(self) -> list[Path]:
        return sorted(p for p in self.root.glob("phase_*") if p.is_dir())


@dataclass
class DemoResult:
    out_dir: Path
    report_path: Path
    cases: list[CaseFiles] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_demo(
    out_dir: str | os.PathLike[str], *, phases: int = 10, progress: Progress | None = None
) -> DemoResult:
    """Write both synthetic cases to ``out_dir`` and the report ``out_dir/report.html``."""
    from sbrtstandards.phantom import write_case

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = Report(
        "SBRT Standards — demo on synthetic 4D-CT cases",
        "Synthetic thorax (lung SBRT) and upper abdomen (liver SBRT), 4D-CT with a moving tumour. "
        "Every number below was computed from the DICOM files written to " + str(out) + ".",
    )
    result = DemoResult(out, out / "report.html")
    n_steps = len(SITES) * 2
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done / n_steps, message)

    for site in SITES:
        truth = write_case(site, out / site, phases=phases)
        case = CaseFiles(site, out / site, truth)
        result.cases.append(case)
        tick(f"{site}: case written")
        result.results[site] = case_sections(case, report)
        tick(f"{site}: report sections")
    result.report_path = report.write(out / "report.html")
    return result


def case_sections(case: CaseFiles, report: Report) -> dict[str, Any]:
    """The report sections of one case, from its files; returns the figures for the JSON summary."""
    from sbrtstandards.contours import roi_mask, roi_volume_cc
    from sbrtstandards.dicom.ct import read_ct_series
    from sbrtstandards.dicom.fourd import split_phases
    from sbrtstandards.dicom.rtdose import read_rtdose
    from sbrtstandards.dicom.rtplan import read_rtplan
    from sbrtstandards.dicom.rtstruct import read_rtstruct
    from sbrtstandards.figures import Overlay, dose_on_grid, slice_figures

    truth = case.truth
    title = "Lung SBRT (synthetic thorax)" if case.site == "lung" else "Liver SBRT (synthetic upper abdomen)"
    sec = report.section(title)
    plan = read_rtplan(case.planning / "RP.dcm")
    dose = read_rtdose(case.planning / "RD.dcm")
    ct = read_ct_series(case.planning / "CT")
    ss = read_rtstruct(case.planning / "RS_planning.dcm")
    motion = truth.get("motion_mm", {})
    sec.key_values(
        {
            "Case folder": case.root,
            "Prescription": f"{plan.rx_gy:g} Gy in {plan.fractions} fractions" if plan.rx_gy else "—",
            "Planning CT": f"{ct.description} — {ct.grid.describe()}",
            "Dose grid": f"{dose.grid.describe()}, max {dose.max_gy:.2f} Gy ({dose.summation_type})",
            "Tumour motion (true, peak-to-peak)": ", ".join(f"{k} {v:.1f} mm" for k, v in motion.items()),
        }
    )

    phases = split_phases(case.phase_dirs)
    rows = []
    for ph, truth_ph in zip(phases, truth.get("phases", [])):
        gtv_cc = None
        if ph.rtstruct_files:
            gtv_cc = roi_volume_cc(read_rtstruct(ph.rtstruct_files[0]).roi("GTV"))
        rows.append(
            [ph.label, len(ph.files), gtv_cc, truth_ph.get("gtv_cc_analytic"), truth_ph.get("centroid_mm")]
        )
    report.section("4D-CT phases", level=3).table(
        Table(
            ["Phase", "Slices", "GTV from RTSTRUCT (cc)", "GTV true (cc)", "True centroid LPS (mm)"],
            rows,
            caption="Each phase read back from its CT series and RTSTRUCT.",
        )
    )

    srows = []
    masks = {}
    for roi in ss.rois:
        if roi.is_empty or roi.is_point:
            continue
        srows.append([roi.name, roi.interpreted_type, roi_volume_cc(roi)])
        if roi.name in _SHOWN:
            masks[roi.name] = (roi_mask(roi, ct.grid), roi.color_rgb)
    report.section("Planning structure set", level=3).table(
        Table(["Structure", "Type", "Volume (cc, polygons, half-slice end caps)"], srows)
    )

    center = np.asarray(
        truth.get("planning_target_center_mm") or truth.get("itv_center_mm") or _mask_center(masks, ct.grid)
    )
    dose_on_ct = dose_on_grid(dose, ct.grid)
    overlays = [
        Overlay(name, mask, tuple(c / 255 for c in (color or (255, 255, 0))))  # type: ignore[misc]
        for name, (mask, color) in masks.items()
    ]
    figs = slice_figures(
        ct.array_hu(),
        ct.grid,
        center,
        overlays,
        dose_on_ct=dose_on_ct,
        rx_gy=plan.rx_gy,
        window="lung" if case.site == "lung" else "soft",
        title=title,
    )
    report.section("Planning CT, structures and dose", level=3).figures(figs)
    return {"site": case.site, "rx_gy": plan.rx_gy, "fractions": plan.fractions, "structures": len(srows)}


_SHOWN = {
    "GTV",
    "ITV",
    "PTV",
    "Lung_L",
    "Lung_R",
    "SpinalCord",
    "Heart",
    "Esophagus",
    "Liver",
    "Stomach",
    "Duodenum",
    "A_Aorta",
    "Trachea",
}


def _mask_center(masks: dict[str, Any], grid: Any) -> np.ndarray:
    for name in ("PTV", "ITV", "GTV"):
        if name in masks:
            idx = np.argwhere(masks[name][0]).mean(axis=0)[::-1]
            return grid.index_to_lps(idx)
    return grid.index_to_lps((np.asarray(grid.size) - 1) / 2)


