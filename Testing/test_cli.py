"""The `sbrt` command's error conventions: exit 2 and one `error: ...` line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def sbrt(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sbrtstandards", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_dvh_on_non_dicom_files_exits_2_with_one_line() -> None:
    result = sbrt("dvh", "--rtstruct", "README.md", "--rtdose", "README.md")
    assert_one_line_error(result, "README.md")


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.dcm"
    result = sbrt("dvh", "--rtstruct", str(missing), "--rtdose", str(missing))
    assert_one_line_error(result, "nope.dcm")


def test_wrong_object_type_is_named() -> None:
    from pydicom.data import get_testdata_file

    plan = get_testdata_file("rtplan.dcm")
    dose = get_testdata_file("rtdose.dcm")
    result = sbrt("dvh", "--rtstruct", plan, "--rtdose", dose)
    assert_one_line_error(result, "rtplan.dcm", "RTSTRUCT")


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["fourd", "--gtv", "GTV"],
        ["fourd", "x", "--gtv", "GTV", "--out", "y", "--ptv-margin", "5,5"],
        ["dvh", "--rtstruct"],
        ["phantom", "--site", "brain", "--out", "x"],
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str]) -> None:
    assert_one_line_error(sbrt(*args))


def test_help_lists_the_contract_subcommands() -> None:
    result = sbrt("--help")
    assert result.returncode == 0
    for name in ("demo", "phantom", "fourd", "margin", "dvh", "protocols", "bed"):
        assert name in result.stdout
