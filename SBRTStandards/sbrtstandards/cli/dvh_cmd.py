"""``sbrt dvh``: DVHs and TG-263 metrics of structures in a dose, from RTSTRUCT + RTDOSE (no CT)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import click

from sbrtstandards.cli.common import emit_json, info, json_option, progress_bar, quiet_option

DEFAULT_METRICS = (
    "D0.03cc[Gy]",
    "D2%[Gy]",
    "D50%[Gy]",
    "D95%[Gy]",
    "D98%[Gy]",
    "D99%[Gy]",
)
CURVE_POINTS = 256  # points of the compact cumulative curve in the JSON


@click.command(name="dvh")
@click.option("--rtstruct", "rtstruct", required=True, metavar="RS", help="RTSTRUCT file, or a folder holding one.")
@click.option(
    "--rtdose",
    "rtdoses",
    required=True,
    multiple=True,
    metavar="RD",
    help="RTDOSE file, or a folder holding one. Repeat to sum doses on one grid (e.g. beam doses).",
)
@click.option(
    "--structure",
    "structures",
    multiple=True,
    metavar="NAME",
    help="Structure to report (repeat). Default: every ROI that has a volume.",
)
@click.option(
    "--metric",
    "metric_names",
    multiple=True,
    metavar="M",
    help="TG-263 metric, e.g. D95%[Gy], D0.03cc[Gy], V20Gy[%], V100%[%], CV15Gy[cc], DC700cc[Gy], Mean[Gy] "
    f"(repeat). Default: {', '.join(DEFAULT_METRICS)}.",
)
@click.option(
    "--end-cap",
    type=click.Choice(["half-slice", "none"]),
    default="half-slice",
    show_default=True,
    help="half-slice: end contours extend half a plane spacing beyond; none: stop at the end planes.",
)
@click.option(
    "--rx-gy",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="D",
    help="Total prescription dose (Gy): scales a RELATIVE dose and gives % of Rx metrics (V100%[%], D95%[%]).",
)
@click.option(
    "--fractions",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Number of fractions: turns a FRACTION (per-fraction) dose into the course total.",
)
@click.option(
    "--bin-width-gy",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="W",
    help=f"Write the full cumulative DVH in W-Gy bins in the JSON (default: a {CURVE_POINTS}-point curve).",
)
@json_option
@click.option("--csv", "csv_path", metavar="PATH", help="Write one row per structure and metric to PATH.")
@quiet_option
def dvh(
    rtstruct: str,
    rtdoses: tuple[str, ...],
    structures: tuple[str, ...],
    metric_names: tuple[str, ...],
    end_cap: str,
    rx_gy: float | None,
    fractions: int | None,
    bin_width_gy: float | None,
    json_path: str | None,
    csv_path: str | None,
    quiet: bool,
) -> None:
    """DVH and dose metrics of structures: RTSTRUCT polygons sampled finely in the RTDOSE (no CT).

    Volumes are the polygon volumes (cc), doses trilinear in the dose grid (Gy); metrics use
    the AAPM TG-263 names. A structure partly outside the dose grid is reported on its
    inside part with a warning.

    Example: sbrt dvh --rtstruct RS.dcm --rtdose RD.dcm --structure PTV --metric D95%[Gy]
    --metric V100%[%] --rx-gy 50 --json dvh.json
    """
    from sbrtstandards.dvh import structure_set_dvhs
    from sbrtstandards.metrics import parse_metric

    specs = [parse_metric(m) for m in (metric_names or DEFAULT_METRICS)]  # fail fast on a bad name
    structure_set, dose, dose_paths = _read_inputs(rtstruct, rtdoses, rx_gy, fractions)
    started = time.perf_counter()
    with progress_bar("dvh", quiet) as progress:
        result = structure_set_dvhs(
            structure_set,
            dose,
            list(structures) if structures else None,
            end_cap=end_cap,
            dose_label=" + ".join(str(p) for p in dose_paths),
            progress=progress,
        )
    elapsed = time.perf_counter() - started
    report = _report(result, dose, dose_paths, specs, rx_gy, end_cap, bin_width_gy, structure_set)
    emit_json(report, json_path)
    if csv_path:
        _write_csv(csv_path, report)
    if json_path != "-" and not quiet:
        click.echo(_table(report))
    info(f"{len(result.dvhs)} DVH(s) in {elapsed:.2f} s", json_path, quiet)


def _read_inputs(
    rtstruct: str, rtdoses: tuple[str, ...], rx_gy: float | None, fractions: int | None
) -> tuple[Any, Any, list[Path]]:
    """Read the structure set and the dose(s) once each (folders are searched for one object)."""
    from sbrtstandards.dicom.rtdose import read_rtdose, sum_doses
    from sbrtstandards.dicom.rtstruct import read_rtstruct

    rs_path = _one_object(rtstruct, "RTSTRUCT", "--rtstruct")
    rd_paths = [_one_object(p, "RTDOSE", "--rtdose") for p in rtdoses]
    structure_set = read_rtstruct(rs_path)
    doses = [read_rtdose(p, rx_gy=rx_gy, fractions=fractions) for p in rd_paths]
    dose = doses[0] if len(doses) == 1 else sum_doses(doses)
    return structure_set, dose, rd_paths


def _one_object(path: str, modality: str, option: str) -> Path:
    """A file as given; in a folder, the single object of ``modality`` it holds."""
    p = Path(path)
    if p.is_dir():
        from sbrtstandards.dicom.scan import find_single

        return find_single(p, modality, what=option).path
    return p


def _report(
    result: Any,
    dose: Any,
    dose_paths: list[Path],
    specs: list[Any],
    rx_gy: float | None,
    end_cap: str,
    bin_width_gy: float | None,
    structure_set: Any,
) -> dict[str, Any]:
    from sbrtstandards.metrics import evaluate_many

    structures = []
    for d in result.dvhs:
        entry = d.to_json(CURVE_POINTS)
        if bin_width_gy is not None:
            edges, vols = d.cumulative(bin_width_gy)
            entry["dvh"] = {
                "dose_gy": [round(float(e), 6) for e in edges],
                "volume_cc": [round(float(v), 6) for v in vols],
            }
        values, reasons = evaluate_many(specs, d, rx_gy=rx_gy)
        entry["metrics"] = {k: (None if v is None else round(v, 4)) for k, v in values.items()}
        if reasons:
            entry["reasons"] = reasons
        structures.append(_ordered(entry))
    summation = dose.summation_type
    return {
        "dose": {
            "file": str(dose_paths[0].resolve()) if len(dose_paths) == 1 else None,
            "files": [str(p.resolve()) for p in dose_paths],
            "max_gy": round(dose.max_gy, 4),
            "summation": summation,
            "summation_detail": dose.describe_summation(),
            "grid": dose.grid.describe(),
            "warnings": list(dose.warnings),
        },
        "rtstruct": str(Path(structure_set.path).resolve()) if structure_set.path else None,
        "end_cap": end_cap,
        "rx_gy": rx_gy,
        "structures": structures,
        "skipped": [{"name": n, "reason": r} for n, r in result.skipped],
        "warnings": list(structure_set.warnings),
    }


def _ordered(entry: dict[str, Any]) -> dict[str, Any]:
    """Contract keys first (name, volume, min, mean, max, metrics), the curve last."""
    head = ["name", "volume_cc", "min_gy", "mean_gy", "max_gy", "metrics"]
    out = {k: entry[k] for k in head if k in entry}
    out.update({k: v for k, v in entry.items() if k not in out and k != "dvh"})
    out["dvh"] = entry["dvh"]
    return out


def _write_csv(path: str, report: dict[str, Any]) -> None:
    from sbrtstandards.atomic import write_text_atomic

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["structure", "metric", "value", "unit", "volume_cc", "volume_outside_dose_cc", "reason"])
    for s in report["structures"]:
        for name, value in s["metrics"].items():
            unit = name[name.rfind("[") + 1 : -1] if name.endswith("]") else ""
            writer.writerow(
                [
                    s["name"],
                    name,
                    "" if value is None else value,
                    unit,
                    s["volume_cc"],
                    s["volume_outside_dose_cc"],
                    s.get("reasons", {}).get(name, ""),
                ]
            )
    write_text_atomic(path, buf.getvalue())


def _fmt(value: float | None, nd: int = 2) -> str:
    return "null" if value is None else f"{value:.{nd}f}"


def _table(report: dict[str, Any]) -> str:
    """A plain-text table for the terminal: one row per structure, metrics as columns."""
    d = report["dose"]
    files = d["file"] or " + ".join(d["files"])
    lines = [f"dose: {files}  (max {d['max_gy']:.2f} Gy, {d['summation_detail']})"]
    names = list(report["structures"][0]["metrics"]) if report["structures"] else []
    head = ["Structure", "Volume[cc]", "Min[Gy]", "Mean[Gy]", "Max[Gy]", *names]
    rows = [head]
    for s in report["structures"]:
        rows.append(
            [
                s["name"],
                f"{s['volume_cc']:.3f}",
                _fmt(s["min_gy"]),
                _fmt(s["mean_gy"]),
                _fmt(s["max_gy"]),
                *(_fmt(s["metrics"][n]) for n in names),
            ]
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    for r in rows:
        lines.append("  ".join(v.ljust(w) if c == 0 else v.rjust(w) for c, (v, w) in enumerate(zip(r, widths))))
    for s in report["structures"]:
        for w in s["warnings"]:
            lines.append(f"warning: {w}")
        for n, why in s.get("reasons", {}).items():
            lines.append(f"null {s['name']} {n}: {why}")
    for item in report["skipped"]:
        lines.append(f"skipped {item['name']}: {item['reason']}")
    for w in d["warnings"]:
        lines.append(f"dose warning: {w}")
    return "\n".join(lines)
