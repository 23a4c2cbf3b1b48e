"""The teaching score sheet: grades against a reference set and the standards' contouring rules.

Known answers: an ITV sphere of radius r grown by the standard's 5 mm is the sphere r + 5, so a
trainee PTV drawn as the sphere r + m lies |5 - m| mm from it everywhere (HD95 = |5 - m|) and
its margin, measured from the PTV surface to the ITV surface, is m; two equal spheres c apart
have a surface Dice given by the analytic distance distribution (see test_compare.py).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from sbrtstandards.cli.main import SUBCOMMANDS, main
from sbrtstandards.dicom.common import CT_IMAGE_STORAGE, SeriesReference, StudyInfo, new_uid
from sbrtstandards.dicom.rtstruct import Contour, Roi, read_rtstruct, write_rtstruct
from sbrtstandards.teaching import Grading, score_sheet, write_score_sheet_html


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SUBCOMMANDS, "teach", ("sbrtstandards.cli.teach_cmd", "teach"))


def circle(cx: float, cy: float, r: float) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, max(24, int(2 * math.pi * r / 0.25)), endpoint=False)
    return np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t)])


def sphere(centre: tuple[float, float, float], r: float, dz: float = 1.0) -> dict[float, list[np.ndarray]]:
    planes = {}
    for k in range(math.ceil((centre[2] - r) / dz), math.floor((centre[2] + r) / dz) + 1):
        z = k * dz
        rr2 = r * r - (z - centre[2]) ** 2
        if rr2 > 1e-6:
            planes[float(z)] = [circle(centre[0], centre[1], math.sqrt(rr2))]
    return planes


def cylinder(cx: float, cy: float, r: float, z0: float, z1: float, dz: float = 1.0) -> dict[float, list[np.ndarray]]:
    return {float(z): [circle(cx, cy, r)] for z in np.arange(z0, z1 + dz / 2, dz)}


def write_set(path: Path, rois: dict[str, dict[float, list[np.ndarray]]], study: StudyInfo) -> Path:
    zs = sorted({z for planes in rois.values() for z in planes})
    ref = SeriesReference(study, new_uid(), CT_IMAGE_STORAGE, tuple(new_uid() for _ in zs), tuple(zs))
    out = []
    for n, (name, planes) in enumerate(rois.items(), start=1):
        contours = [Contour(np.column_stack([p, np.full(len(p), z)]), "CLOSED_PLANAR")
                    for z, polys in planes.items() for p in polys]
        out.append(Roi(n, name, None, "", contours))
    return write_rtstruct(path, out, reference=ref, label="TEACH")


ITV_R = 10.0
CENTRE = (-60.0, 10.0, 0.0)


@pytest.fixture
def study() -> StudyInfo:
    return StudyInfo()


def _reference(tmp_path: Path, study: StudyInfo) -> Path:
    return write_set(tmp_path / "RS_ref.dcm", {
        "ITV": sphere(CENTRE, ITV_R), "PTV": sphere(CENTRE, ITV_R + 5.0),
        "SpinalCord": cylinder(0.0, 60.0, 5.0, -40.0, 40.0),
    }, study)


@pytest.mark.parametrize(("ptv_r", "status"), [(15.0, "pass"), (12.5, "minor"), (11.5, "fail")])
def test_ptv_margin_rule_grades_the_margin_drawn(tmp_path: Path, study: StudyInfo, ptv_r: float,
                                                  status: str) -> None:
    trainee = write_set(tmp_path / "RS_trainee.dcm", {"ITV": sphere(CENTRE, ITV_R),
                                                      "PTV": sphere(CENTRE, ptv_r)}, study)
    sheet = score_sheet(_reference(tmp_path, study), trainee, site="lung", structures=["ITV", "PTV"])
    rule = next(r for r in sheet.rules if r.id == "ptv_margin")
    assert rule.status == status
    assert rule.agreement is not None
    assert rule.agreement.hd95_mm == pytest.approx(15.0 - ptv_r, abs=0.2)
    drawn = float(re.search(r"median ([0-9.]+) mm", rule.detail).group(1))  # type: ignore[union-attr]
    assert drawn == pytest.approx(ptv_r - ITV_R, abs=0.15)
    assert "§5.1" in rule.source


def test_without_itv_the_gtv_stands_for_it_and_without_ptv_the_rule_is_not_evaluated(tmp_path: Path,
                                                                                      study: StudyInfo) -> None:
    reference = _reference(tmp_path, study)
    gtv_only = write_set(tmp_path / "RS_gtv.dcm", {"GTV": sphere(CENTRE, ITV_R), "PTV": sphere(CENTRE, 15.0)}, study)
    rule = next(r for r in score_sheet(reference, gtv_only, site="lung", structures=["PTV"]).rules
                if r.id == "ptv_margin")
    assert rule.status == "pass" and "GTV taken as the ITV" in rule.detail
    no_ptv = write_set(tmp_path / "RS_noptv.dcm", {"ITV": sphere(CENTRE, ITV_R)}, study)
    rule = next(r for r in score_sheet(reference, no_ptv, site="lung", structures=["ITV"]).rules
                if r.id == "ptv_margin")
    assert rule.status == "not_evaluated" and "PTV" in rule.detail


def test_grades_follow_the_surface_dice(tmp_path: Path, study: StudyInfo) -> None:
    c, tol = 3.0, 2.0
    trainee = write_set(tmp_path / "RS_trainee.dcm", {
        "ITV": sphere((CENTRE[0] + c, CENTRE[1], CENTRE[2]), ITV_R), "PTV": sphere(CENTRE, 15.0),
        "Cord": cylinder(0.0, 60.0, 5.0, -40.0, 40.0),
    }, study)
    sheet = score_sheet(_reference(tmp_path, study), trainee, site="lung", grading=Grading(tolerance_mm=tol))
    by_name = {p.reference: p for p in sheet.comparison.pairs}
    mu = np.linspace(-1, 1, 200001)
    expected = float(np.mean(np.abs(np.sqrt(ITV_R**2 + c * c - 2 * ITV_R * c * mu) - ITV_R) <= tol))
    itv = by_name["ITV"].agreement
    assert itv is not None and itv.surface_dice == pytest.approx(expected, abs=0.02)
    assert sheet.grades["ITV"] == ("pass" if expected >= 0.9 else "minor" if expected >= 0.75 else "fail")
    assert sheet.grades["PTV"] == "pass" and sheet.grades["SpinalCord"] == "pass"
    assert by_name["SpinalCord"].test == "Cord"
    required = {r["role"]: r for r in sheet.required}
    assert required["spinal_cord"]["status"] == "present" and required["spinal_cord"]["structures"] == ["Cord"]
    assert required["heart"]["status"] == "missing" and "heart" in sheet.summary["missing_oars"]


def test_score_sheet_html_is_self_contained(tmp_path: Path, study: StudyInfo) -> None:
    trainee = write_set(tmp_path / "RS_trainee.dcm", {"ITV": sphere(CENTRE, ITV_R),
                                                      "PTV": sphere(CENTRE, 13.0)}, study)
    sheet = score_sheet(_reference(tmp_path, study), trainee, site="lung", trainee_name="Dr Wang")
    path = write_score_sheet_html(sheet, tmp_path / "sheet.html")
    html = path.read_text(encoding="utf-8")
    assert "Contouring score sheet — Dr Wang" in html
    assert "PTV = ITV + 5 mm" in html and "Organs at risk the standard asks for" in html
    # one figure per compared structure (ITV, PTV) and one for the PTV rule, embedded
    assert html.count("data:image/png;base64,") == 3
    assert not re.search(r"(src|href)=\"https?://", html)
    json.dumps(sheet.to_json(), allow_nan=False)


def test_cli_writes_html_and_json_and_rejects_bad_input(tmp_path: Path, study: StudyInfo, capsys) -> None:  # type: ignore[no-untyped-def]
    reference = _reference(tmp_path, study)
    trainee = write_set(tmp_path / "RS_trainee.dcm", {"ITV": sphere(CENTRE, ITV_R),
                                                      "PTV": sphere(CENTRE, 15.0)}, study)
    with pytest.raises(SystemExit) as exit_info:
        main(["teach", "--reference", str(reference), "--trainee", str(trainee), "--site", "lung",
              "--html", str(tmp_path / "out" / "sheet.html"), "--json", "-"])
    assert exit_info.value.code == 0
    data = json.loads(capsys.readouterr().out)
    assert (tmp_path / "out" / "sheet.html").exists()
    assert {s["name"]: s["grade"] for s in data["structures"]} == {"ITV": "pass", "PTV": "pass"}
    assert data["rules"][0]["id"] == "ptv_margin" and data["rules"][0]["status"] == "pass"
    with pytest.raises(SystemExit) as exit_info:
        main(["teach", "--reference", str(reference), "--trainee", str(tmp_path / "missing.dcm"),
              "--html", str(tmp_path / "x.html")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.dcm" in err[0]
    assert not (tmp_path / "x.html").exists()


@pytest.mark.slow
def test_phantom_trainee_with_ct_rule_built_oars_and_missing_heart(tmp_path: Path) -> None:
    """On a synthetic lung case: a trainee who moved the ITV, drew PTV = ITV + 3 mm, left out the
    heart and drew the chest wall 5 mm off the rule's gets exactly those remarks."""
    from sbrtstandards.contours import roi_mask
    from sbrtstandards.dicom.ct import read_ct_series
    from sbrtstandards.margins import grow_planes
    from sbrtstandards.oars.build import build_oars
    from sbrtstandards.oars.dicom_io import match_roles
    from sbrtstandards.phantom import write_case
    from sbrtstandards.structure_margin import reference_from_structure_set

    truth = write_case("lung", tmp_path / "case", phases=2, seed=3)
    rs = Path(truth["files"]["planning_rtstruct"])
    ct_dir = Path(truth["files"]["planning_ct"])
    ss = read_rtstruct(rs)
    ct = read_ct_series(ct_dir)
    itv = ss.roi("ITV")
    moved = [Contour(c.points_mm + [2.0, 0.0, 0.0], c.geometric_type) for c in itv.contours]
    moved_itv = Roi(0, "ITV", itv.color_rgb, "CTV", moved)
    ptv3 = Roi.from_mask("PTV", grow_planes(moved_itv.planes(), 3.0, ct.grid), ct.grid, interpreted_type="PTV")
    structures = match_roles(ss, ct.grid, [], [])
    structures.pop("chest_wall", None)
    built = build_oars(None, ct.grid, structures, "PTV", roi_mask(ss.roi("PTV"), ct.grid))
    wall = next(b for b in built.built if b.role == "chest_wall")
    wall_off = np.roll(wall.mask, 3, axis=2)  # 3 voxels (about 3 mm) towards the left
    keep = [r for r in ss.rois if r.name not in ("ITV", "PTV", "Heart")]
    trainee_rois = keep + [moved_itv, ptv3, Roi.from_mask("ChestWall_R", wall_off, ct.grid)]
    trainee = tmp_path / "RS_trainee.dcm"
    write_rtstruct(trainee, [Roi(0, r.name, r.color_rgb, r.interpreted_type, r.contours) for r in trainee_rois],
                   reference=reference_from_structure_set(ss), label="trainee")
    shutil.rmtree(tmp_path / "case" / "phase_00", ignore_errors=True)
    sheet = score_sheet(rs, trainee, ct_dir=ct_dir, structures=["ITV", "PTV", "SpinalCord", "Lung_R"])
    assert sheet.site == "lung"
    assert sheet.grades["SpinalCord"] == "pass" and sheet.grades["Lung_R"] == "pass"
    itv_agreement = next(p.agreement for p in sheet.comparison.pairs if p.reference == "ITV")
    assert itv_agreement is not None and itv_agreement.centroid_shift_mm == pytest.approx(2.0, abs=0.2)
    rules = {r.id: r for r in sheet.rules}
    assert rules["ptv_margin"].status in ("minor", "fail")
    drawn = float(re.search(r"median ([0-9.]+) mm", rules["ptv_margin"].detail).group(1))  # type: ignore[union-attr]
    assert drawn == pytest.approx(3.0, abs=0.5)
    assert rules["chest_wall"].agreement is not None
    assert rules["chest_wall"].agreement.surface_dice < 0.9  # 3 mm off the rule
    assert {r["role"]: r["status"] for r in sheet.required}["heart"] == "missing"
    html = write_score_sheet_html(sheet, tmp_path / "sheet.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 6
