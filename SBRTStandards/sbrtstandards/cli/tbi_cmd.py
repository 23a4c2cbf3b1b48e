"""``sbrt tbi``: a total-body-irradiation set-up record against annex 2 of the TBI specification."""

from __future__ import annotations

import click

from sbrtstandards.cli.common import emit_json, info, json_option, progress_bar, quiet_option
from sbrtstandards.errors import InputError

ORDER = {"fail": 0, "minor": 1, "not_evaluated": 2, "pass": 3}


@click.command(name="tbi")
@click.argument("record", metavar="RECORD.json")
@click.option("--rtdose", default=None, metavar="RD", help="TBI dose on the patient's CT (lung dose from it).")
@click.option("--rtstruct", default=None, metavar="RS", help="Structures holding the lungs (for the lung dose).")
@click.option("--ct", "ct_dir", default=None, metavar="DIR", help="CT series: segment the lungs when RS has none.")
@click.option("--map", "maps", multiple=True, metavar="NAME=lungs", help="Name the lung structure explicitly.")
@click.option("--fractions", type=click.IntRange(1, 60), default=None, metavar="N",
              help="Fractions, when the RTDOSE holds one fraction's dose.")
@json_option
@quiet_option
def tbi(
    record: str,
    rtdose: str | None,
    rtstruct: str | None,
    ct_dir: str | None,
    maps: tuple[str, ...],
    fractions: int | None,
    json_path: str | None,
    quiet: bool,
) -> None:
    """Check RECORD.json against every rule of annex 2 (field size at SMD, site doses within 10 %,
    lung dose < 7 Gy / never > 8 Gy, lung block, dose rate 6-10 cGy/min, spoiler by energy).

    RECORD keys carry their units: energy ("Co-60", "6MV", "15MV"), smd_cm, field_size_cm and
    patient_size_cm ([width, length]), spoiler_thickness_cm, dose_rate_cgy_min, prescription_gy,
    measured_doses_gy ({site: Gy}), lung_dose_gy, lung_block_thickness_deviation_mm; optional
    lung_block_transmission, tmr_measured, lung_outline_marked, lung_block_uniform,
    oar_blocks_dose_recorded (true/false). A missing key leaves its check not_evaluated.

    Example: sbrt tbi setup.json --json tbi.json
    (with a plan: sbrt tbi setup.json --rtdose RD.dcm --rtstruct RS.dcm)
    """
    from sbrtstandards.names import parse_map_options
    from sbrtstandards.programme_qa.tbi import check_record, lung_dose_from_dicom, read_record

    parsed = read_record(record)
    lung = None
    if rtdose:
        with progress_bar("lung dose", quiet) as progress:
            lung = lung_dose_from_dicom(rtdose, rtstruct=rtstruct, ct=ct_dir, mapping=parse_map_options(maps),
                                        fractions=fractions, progress=progress)
    elif rtstruct or ct_dir:
        raise InputError("--rtstruct/--ct need --rtdose: the lung dose is computed from the dose distribution")
    result = check_record(parsed, lung_dose=lung)
    emit_json(result.to_json(), json_path)
    if quiet or json_path == "-":
        return
    c = result.counts
    info(f"TBI annex 2 ({result.energy or 'energy not given'}): {c['pass']} pass, {c['minor']} minor, "
         f"{c['fail']} fail, {c['not_evaluated']} not evaluated", json_path)
    for check in sorted(result.checks, key=lambda x: (ORDER[x.status], x.id)):
        value = "-" if check.value is None else f"{check.value:g}"
        what = check.id + (f" [{check.site}]" if check.site else "")
        info(f"  {check.status:<13} {what:<28} {value:>9} {check.unit:<8} {check.reason}".rstrip(), json_path)
    for w in result.warnings:
        info(f"warning: {w}", json_path)
