"""``sbrt phantom`` on the command line: exit status, output folder, JSON, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _sbrt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sbrtstandards", *args], capture_output=True, text=True, timeout=120)


def test_phantom_writes_a_case_and_its_json(tmp_path: Path) -> None:
    out = tmp_path / "lung"
    result = _sbrt(
        "phantom", "--site", "lung", "--out", str(out), "--phases", "4", "--amplitude-mm", "12", "--json", "-"
    )
    assert result.returncode == 0, result.stderr
    truth = json.loads(result.stdout)  # nothing but the JSON on standard output
    assert [p["label"] for p in truth["phases"]] == ["0%", "25%", "50%", "75%"]
    assert truth["motion_mm"]["SI"] == pytest.approx(12.0, abs=0.5)
    assert truth["amplitude_mm"] == 12.0 and truth["site"] == "lung"
    assert sorted(p.name for p in out.glob("phase_*")) == ["phase_00", "phase_25", "phase_50", "phase_75"]
    for ph in truth["phases"]:
        assert Path(ph["rtstruct"]).is_file() and Path(ph["ct"]).is_dir()
    on_disk = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    assert on_disk["itv_cc"] == truth["itv_cc"]
    assert Path(truth["files"]["rtplan"]).is_file() and Path(truth["files"]["rtdose"]).is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--site", "lung", "--phases", "1"], "--phases"),
        (["--site", "foo"], "--site"),
        (["--site", "lung", "--amplitude-mm", "-3"], "--amplitude-mm"),
        (["--site", "liver", "--side", "left"], "--side"),
    ],
)
def test_bad_options_exit_2_with_one_error_line(tmp_path: Path, args: list[str], needle: str) -> None:
    result = _sbrt("phantom", "--out", str(tmp_path / "x"), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_a_folder_with_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("data")
    result = _sbrt("phantom", "--site", "lung", "--out", str(tmp_path), "--phases", "2")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "not empty" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "data"
