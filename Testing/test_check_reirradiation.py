"""Michigan cumulative re-irradiation limits in `sbrt check`: current EQD2 + discounted prior EQD2, by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def sbrt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sbrtstandards", *args], capture_output=True, text=True, timeout=600)


def michigan_check(case: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`sbrt check` of the phantom plan against the Michigan re-irradiation table."""
    rs, rd, rp = (str(case / name) for name in ("RS_planning.dcm", "RD.dcm", "RP.dcm"))
    return sbrt(
        "check", "--rtstruct", rs, "--rtdose", rd, "--rtplan", rp, "--protocol", "michigan-reirradiation", *extra
    )


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reirr") / "lung"
    res = sbrt("phantom", "--site", "lung", "--out", str(root), "--phases", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    return root / "planning"


def test_cord_cumulative_eqd2_is_current_plus_discounted_prior(case: Path) -> None:
    dvh = sbrt("dvh", "--rtstruct", str(case / "RS_planning.dcm"), "--rtdose", str(case / "RD.dcm"),
               "--structure", "SpinalCord", "--metric", "D0.1cc[Gy]", "--json", "-")  # fmt: skip
    assert dvh.returncode == 0, dvh.stderr
    d01 = json.loads(dvh.stdout)["structures"][0]["metrics"]["D0.1cc[Gy]"]
    n, ab = 3, 2.5  # the lung phantom is 54 Gy / 3 fractions; Michigan uses alpha/beta 2.5
    current = d01 * (d01 / n + ab) / (2 + ab)
    res = michigan_check(case, "--condition", "cord_distance_to_target_mm=30", "--prior-eqd2", "spinal_cord=40",
                         "--interval-months", "8", "--json", "-")  # fmt: skip
    assert res.returncode == 0, res.stderr
    cord = next(c for c in json.loads(res.stdout)["constraints"] if c["id"] == "michigan.spinal_cord")
    # 6-12 months after the prior course, 25 % of its EQD2 is forgiven (Table A.3)
    assert cord["value"] == pytest.approx(current + 40 * 0.75, abs=0.01)
    assert cord["status"] == ("pass" if cord["value"] <= cord["limit"] else "fail")


def test_without_the_prior_dose_the_rule_says_what_it_needs(case: Path) -> None:
    res = michigan_check(case, "--json", "-")
    assert res.returncode == 0, res.stderr
    eso = next(c for c in json.loads(res.stdout)["constraints"] if c["id"] == "michigan.esophagus")
    assert eso["status"] == "not_evaluated" and "--prior-eqd2 esophagus=GY" in eso["reason"]


def test_a_bad_prior_dose_option_exits_2(case: Path) -> None:
    res = michigan_check(case, "--prior-eqd2", "cord:40")
    assert res.returncode == 2 and res.stderr.startswith("error: --prior-eqd2")
