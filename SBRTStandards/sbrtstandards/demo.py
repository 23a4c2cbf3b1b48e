"""``sbrt demo``: write the synthetic lung and liver cases and run the whole chain on them.

Every step reads the DICOM files that the previous one wrote (through the same readers that
users' data goes through), so the demo is also an end-to-end check of the file round trip:

1. ``sbrt phantom``: the 4D-CT phases with their GTVs, the planning CT, structures, plan, dose;
2. ``sbrt fourd``: MIP/AVG/MinIP, ITV (union of the phase GTVs) on the AVG, PTV = ITV + 5 mm,
   compared with the phantom's analytic truth;
3. ``sbrt oars``: organs at risk built by the standard's rules and the tumour location class;
4. ``sbrt check``: the plan against the site's standard (cn-lung-sbrt or cn-liver-sbrt).

Each step contributes sections to one report, ``DIR/report.html``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbrtstandards.atomic import write_text_atomic
from sbrtstandards.report import Report, Table

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
SITES = ("lung", "liver")
PROTOCOLS = {"lung": "cn-lung-sbrt", "liver": "cn-liver-sbrt"}
# Plan facts that the synthetic cases stand for (the liver case is a Child-Pugh A HCC).
CONDITIONS = {"lung": {}, "liver": {"child_pugh": "A", "histology": "HCC"}}
TITLES = {"lung": "Lung SBRT (synthetic thorax)", "liver": "Liver SBRT (synthetic upper abdomen)"}
STEPS = ("phantom", "fourd", "oars", "check")


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


def run_demo(out_dir: str | os.PathLike[str], *, phases: int = 10, progress: Progress | None = None) -> DemoResult:
    """Write both synthetic cases to ``out_dir``, run the chain, write ``out_dir/report.html``."""
    from sbrtstandards.phantom import write_case

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = Report(
        "SBRT Standards — demo on synthetic 4D-CT cases",
        "Synthetic thorax (lung SBRT) and upper abdomen (liver SBRT), 4D-CT with a moving tumour. "
        f"Every number below was computed from the DICOM files written to {out}.",
    )
    result = DemoResult(out, out / "report.html")
    total = len(SITES) * len(STEPS)
    done = 0

    def step(site: str, name: str) -> None:
        nonlocal done
        if progress:
            progress(done / total, f"{site}: {name}")
        done += 1

    for site in SITES:
        step(site, "phantom")
        truth = write_case(site, out / site, phases=phases)
        case = CaseFiles(site, out / site, truth)
        result.cases.append(case)
        report.section(TITLES[site])
        summary: dict[str, Any] = {"site": site, "folder": str(case.root)}
        summary.update(_case_overview(case, report))
        step(site, "4D-CT")
        summary["fourd"] = _fourd_step(case, report)
        step(site, "OARs")
        summary["oars"] = _oars_step(case, report, summary)
        step(site, "plan check")
        summary["check"] = _check_step(case, report, summary)
        result.results[site] = summary
    if progress:
        progress(1.0, "report")
    result.report_path = report.write(out / "report.html")
    return result


def _case_overview(case: CaseFiles, report: Report) -> dict[str, Any]:
    from sbrtstandards.dicom.ct import read_ct_series
    from sbrtstandards.dicom.rtdose import read_rtdose
    from sbrtstandards.dicom.rtplan import read_rtplan

    truth = case.truth
    plan = read_rtplan(case.planning / "RP.dcm")
    dose = read_rtdose(case.planning / "RD.dcm")
    ct = read_ct_series(case.planning / "CT")
    tumour = truth.get("tumour", {})
    sec = report.section("The case", level=3)
    sec.key_values(
        {
            "Case folder": case.root,
            "Prescription (RTPLAN)": f"{plan.rx_gy:g} Gy in {plan.fractions} fractions" if plan.rx_gy else "—",
            "Planning CT (average of the phases)": f"{ct.grid.describe()}",
            "Dose grid (RTDOSE)": f"{dose.grid.describe()}, max {dose.max_gy:.2f} Gy ({dose.summation_type})",
            "Tumour (truth)": f"sphere r = {tumour.get('radius_mm', '?')} mm in {tumour.get('host', '?')}, "
            f"{tumour.get('location_class', '?')}, {tumour.get('side', '?')} side",
            "Tumour motion (truth, peak-to-peak)": ", ".join(
                f"{k} {v:.1f} mm" for k, v in truth.get("motion_mm", {}).items()
            ),
        }
    )
    return {"rx_gy": plan.rx_gy, "fractions": plan.fractions}


def _fourd_step(case: CaseFiles, report: Report) -> dict[str, Any]:
    from sbrtstandards.figures import Overlay, slice_figures
    from sbrtstandards.fourdct import run_fourd

    truth = case.truth
    res = run_fourd(case.phase_dirs, "GTV", case.root / "4d", ptv_margin=5.0)
    j = res.json
    sec = report.section("4D-CT: projections, ITV and PTV (sbrt fourd)", level=3)
    sec.text(
        "MIP, AVG and MinIP of the phases; the ITV is the union of the phase GTVs, built on the AVG; "
        "PTV = ITV + 5 mm (exact Euclidean margin), as the lung standard (§5.1) and the liver standard (§7.1) ask."
    )
    rows = [
        ["ITV (cc)", j["itv_cc"], truth.get("itv_cc"), _pct(j["itv_cc"], truth.get("itv_cc"))],
        ["PTV = ITV + 5 mm (cc)", j["ptv_cc"], truth.get("ptv_cc"), _pct(j["ptv_cc"], truth.get("ptv_cc"))],
    ]
    for axis in ("LR", "AP", "SI", "vector"):
        got, want = j["motion_mm"][axis], truth.get("motion_mm", {}).get(axis)
        rows.append([f"Motion {axis} (mm)", got, want, None if want is None else f"{got - want:+.2f} mm"])
    sec.table(Table(["Quantity", "sbrt fourd", "Truth (analytic)", "Difference"], rows))
    prow = []
    for got, want in zip(j["phases"], truth.get("phases", [])):
        prow.append(
            [
                got["label"],
                got["gtv_cc"],
                want.get("gtv_cc_analytic"),
                got["centroid_mm"],
                want.get("centroid_mm"),
                got["fraction_in_itv"],
            ]
        )
    sec.table(
        Table(
            ["Phase", "GTV (cc)", "GTV true (cc)", "Centroid LPS (mm)", "True centroid", "GTV inside ITV"],
            prow,
            caption="Every phase GTV is verified against the ITV (lung standard §5.1: verify on every phase).",
        )
    )
    sec.warnings(j["warnings"])
    window = "lung" if case.site == "lung" else "soft"
    overlays = [Overlay("ITV", res.itv_mask, (1.0, 0.25, 0.25)), Overlay("PTV", res.ptv_mask, (0.2, 0.8, 1.0))]
    centre = np.argwhere(res.itv_mask).mean(axis=0)[::-1]
    centre_lps = res.grid.index_to_lps(centre)
    figs = []
    for name in ("MIP", "AVG", "MinIP") if case.site == "liver" else ("MIP", "AVG"):
        figs += slice_figures(
            res.projections[name], res.grid, centre_lps, overlays, window=window, title=name, planes=("coronal",)
        )
    sec.figures(figs)
    return {k: j[k] for k in ("itv_cc", "ptv_cc", "motion_mm", "rtstruct")} | {
        "gtv_cc_mean": float(np.mean([p["gtv_cc"] for p in j["phases"] if p["gtv_cc"]]))
    }


def _oars_step(case: CaseFiles, report: Report, summary: dict[str, Any]) -> dict[str, Any] | None:
    """OAR autogeneration (``sbrt oars``) when the module is present in this version."""
    try:
        from sbrtstandards.oars import run_oars  # type: ignore[attr-defined]
    except ImportError:
        return None
    res = run_oars(
        ct_dir=case.planning / "CT",
        rtstruct=case.planning / "RS_planning.dcm",
        target="PTV",
        site=case.site,
        out=case.planning / "RS_oars.dcm",
    )
    j = res if isinstance(res, dict) else res.json
    sec = report.section("Organs at risk by the standard's rules (sbrt oars)", level=3)
    loc = j.get("location") or {}
    if loc:
        sec.key_values(
            {
                "Tumour location class": f"{loc.get('class')} (distance to the proximal bronchial tree "
                f"{loc.get('distance_to_pbt_mm')} mm)",
                "Ipsilateral side": j.get("side"),
                "Fractionation options": ", ".join(
                    f"{o['dose_gy']:g} Gy/{o['fractions']} (BED10 {o['bed10_gy']:.1f})"
                    for o in j.get("fractionation_options", [])
                ),
            }
        )
    sec.table(
        Table(
            ["Structure", "Role", "Volume (cc)", "Rule", "Source"],
            [[b["name"], b["role"], b["volume_cc"], b["rule"], b["source"]] for b in j.get("built", [])],
        )
    )
    sec.warnings(j.get("warnings", []))
    return j


def _check_step(case: CaseFiles, report: Report, summary: dict[str, Any]) -> dict[str, Any]:
    from sbrtstandards.check import check_files
    from sbrtstandards.check_report import add_check_sections, constraint_slices
    from sbrtstandards.dicom.ct import read_ct_series

    oars = summary.get("oars") or {}
    rs = case.planning / "RS_oars.dcm" if oars else case.planning / "RS_planning.dcm"
    conditions = dict(CONDITIONS[case.site])
    gtv_cc = summary["fourd"].get("gtv_cc_mean")
    if gtv_cc:  # the rules on small targets use the GTV diameter (equivalent sphere)
        conditions["gtv_diameter_cm"] = round(2 * (3 * gtv_cc / (4 * math.pi)) ** (1 / 3), 2)
    site_class = (oars.get("location") or {}).get("class") if case.site == "lung" else None
    if case.site == "lung" and site_class is None:
        site_class = case.truth.get("tumour", {}).get("location_class")
    result, inputs = check_files(
        str(rs),
        str(case.planning / "RD.dcm"),
        rtplan=str(case.planning / "RP.dcm"),
        protocol_id=PROTOCOLS[case.site],
        site_class=site_class,
        conditions=conditions,
    )
    ct = read_ct_series(case.planning / "CT")
    slices = constraint_slices(result, ct, inputs.dose, window="lung" if case.site == "lung" else "soft")
    add_check_sections(report, result, title=f"Plan check against {result.protocol.id} (sbrt check)", slices=slices)
    write_text_atomic(case.root / "check.json", json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    return {
        "protocol": result.protocol.id,
        "site_class": site_class,
        "summary": result.counts,
        "seconds": round(result.seconds, 3),
        "json": str(case.root / "check.json"),
    }


def _pct(got: float, want: float | None) -> str | None:
    if not want:
        return None
    return f"{100.0 * (got - want) / want:+.2f}%"
