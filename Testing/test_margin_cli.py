"""`sbrt margin` on a sphere drawn as planar contours: analytic volumes, errors, input untouched."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from sbrtstandards.dicom.common import SeriesReference, StudyInfo, new_uid
from sbrtstandards.dicom.rtstruct import Contour, Roi, read_rtstruct, write_rtstruct

R_MM, DZ_MM = 10.0, 3.0


def _sphere_rtstruct(path: Path) -> Path:
    zs = np.arange(-9.0, 9.0 + 1e-9, DZ_MM)
    study = StudyInfo()
    uids = tuple(new_uid() for _ in zs)
    ref = SeriesReference(study, new_uid(), "1.2.840.10008.5.1.4.1.1.2", uids, tuple(float(z) for z in zs))
    t = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    contours = []
    for z in zs:
        r = np.sqrt(R_MM**2 - z**2)
        pts = np.c_[r * np.cos(t), r * np.sin(t), np.full_like(t, z)]
        contours.append(Contour(pts, "CLOSED_PLANAR"))
    roi = Roi(1, "ITV", (255, 0, 0), "CTV", contours)
    return write_rtstruct(path, [roi], reference=ref)


def sbrt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sbrtstandards", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def sphere_rs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _sphere_rtstruct(tmp_path_factory.mktemp("margin") / "RS.dcm")


def _sphere_cc(r: float) -> float:
    return 4 / 3 * np.pi * r**3 / 1000


def test_grow_5mm_gives_the_radius_15_sphere(sphere_rs: Path, tmp_path: Path) -> None:
    digest = hashlib.sha256(sphere_rs.read_bytes()).hexdigest()
    out = tmp_path / "RS_PTV.dcm"
    res = sbrt(
        "margin",
        "--rtstruct",
        str(sphere_rs),
        "--structure",
        "ITV",
        "--mm",
        "5",
        "--result",
        "PTV",
        "--out",
        str(out),
        "--json",
        "-",
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["structure"] == "ITV" and data["result"] == "PTV"
    assert data["volume_cc"] == pytest.approx(_sphere_cc(15.0), rel=0.015)
    assert data["margin_mm"] == {k: 5.0 for k in "RLAPSI"}
    ss = read_rtstruct(out)
    assert ss.names == ["ITV", "PTV"]
    ds = pydicom.dcmread(out)
    assert ds.SOPInstanceUID != pydicom.dcmread(sphere_rs).SOPInstanceUID
    # extent of the result: 15 mm in every direction from the centre
    pts = np.concatenate([c.points_mm for c in ss.roi("PTV").contours])
    assert pts[:, 0].max() == pytest.approx(15.0, abs=0.6)
    assert pts[:, 1].min() == pytest.approx(-15.0, abs=0.6)
    assert hashlib.sha256(sphere_rs.read_bytes()).hexdigest() == digest  # input untouched


def test_shrink_5mm_gives_the_radius_5_sphere(sphere_rs: Path, tmp_path: Path) -> None:
    res = sbrt(
        "margin",
        "--rtstruct",
        str(sphere_rs),
        "--structure",
        "itv",
        "--mm",
        "5",
        "--shrink",
        "--out",
        str(tmp_path / "RS.dcm"),
        "--json",
        "-",
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["result"] == "ITV-5mm"
    assert data["volume_cc"] == pytest.approx(_sphere_cc(5.0), rel=0.05)


def test_per_direction_margin_moves_each_side_by_its_own_margin(sphere_rs: Path, tmp_path: Path) -> None:
    out = tmp_path / "RS.dcm"
    res = sbrt(
        "margin",
        "--rtstruct",
        str(sphere_rs),
        "--structure",
        "ITV",
        "--mm",
        "2,8,4,6,0,10",
        "--out",
        str(out),
        "--json",
        "-",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["result"] == "ITV+asym"
    pts = np.concatenate([c.points_mm for c in read_rtstruct(out).roi("ITV+asym").contours])
    # R = -x, L = +x, A = -y, P = +y in LPS
    assert pts[:, 0].min() == pytest.approx(-12.0, abs=0.6)
    assert pts[:, 0].max() == pytest.approx(18.0, abs=0.6)
    assert pts[:, 1].min() == pytest.approx(-14.0, abs=0.6)
    assert pts[:, 1].max() == pytest.approx(16.0, abs=0.6)


@pytest.mark.parametrize(("mm", "fragment"), [("-1", "-1"), ("60", "60"), ("5,5", "six"), ("abc", "abc")])
def test_bad_margins_exit_2(sphere_rs: Path, tmp_path: Path, mm: str, fragment: str) -> None:
    res = sbrt(
        "margin", "--rtstruct", str(sphere_rs), "--structure", "ITV", "--mm", mm, "--out", str(tmp_path / "x.dcm")
    )
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.dcm").exists()


def test_unknown_structure_lists_the_names(sphere_rs: Path, tmp_path: Path) -> None:
    res = sbrt(
        "margin", "--rtstruct", str(sphere_rs), "--structure", "GTV", "--mm", "5", "--out", str(tmp_path / "x.dcm")
    )
    assert res.returncode == 2
    assert "GTV" in res.stderr and "ITV" in res.stderr
