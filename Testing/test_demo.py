"""`sbrt demo` runs the whole chain on both synthetic cases and writes one self-contained report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("demo") / "sbrt-demo"
    res = subprocess.run(
        [sys.executable, "-m", "sbrtstandards", "demo", "--out", str(out), "--phases", "3", "--json", "-"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert f"report: {out / 'report.html'}" in res.stderr
    return out, data, (out / "report.html").read_text(encoding="utf-8")


def test_demo_writes_both_cases_and_the_report(demo: tuple[Path, dict, str]) -> None:
    out, data, html = demo
    assert Path(data["report"]) == (out / "report.html").resolve()
    assert [c["site"] for c in data["cases"]] == ["lung", "liver"]
    for site in ("lung", "liver"):
        assert (out / site / "truth.json").exists()
        assert (out / site / "4d" / "RS_ITV_PTV.dcm").exists()
        assert sorted(p.name for p in (out / site / "4d").iterdir()) == ["AVG", "MIP", "MinIP", "RS_ITV_PTV.dcm"]
    assert "<html" in html and "</html>" in html
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?:", html), "the report must not load from the network"


def test_demo_results_agree_with_the_truth(demo: tuple[Path, dict, str]) -> None:
    out, data, _ = demo
    for site in ("lung", "liver"):
        truth = json.loads((out / site / "truth.json").read_text())
        res = data["results"][site]
        assert res["fourd"]["itv_cc"] == pytest.approx(truth["itv_cc"], rel=0.03)
        assert res["fourd"]["ptv_cc"] == pytest.approx(truth["ptv_cc"], rel=0.03)
        assert res["rx_gy"] == truth["prescription"]["rx_gy"]
        summary = res["check"]["summary"]
        assert sum(summary.values()) > 5
        assert res["check"]["protocol"] == {"lung": "cn-lung-sbrt", "liver": "cn-liver-sbrt"}[site]


def test_report_has_the_sections_and_figures(demo: tuple[Path, dict, str]) -> None:
    _, _, html = demo
    for text in (
        "4D-CT: projections, ITV and PTV",
        "Plan check against cn-lung-sbrt",
        "Plan check against cn-liver-sbrt",
        "Constraints",
        "Plan metrics",
        "Dose-volume histograms",
        "T/CNHAW-B-0020-2025",
    ):
        assert text in html
    assert html.count("data:image/png;base64,") >= 8
    assert re.search(r'<tr class="(pass|fail|minor)">', html)
