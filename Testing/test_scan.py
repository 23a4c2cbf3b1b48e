"""The DICOM folder scanner: finds objects in files and folders, skips the rest, picks one."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from ct_factory import axial_positions, uid, write_rtstruct, write_slices

from sbrtstandards.dicom.scan import find_objects, find_single, group_series, scan_dicom
from sbrtstandards.errors import InputError


@pytest.fixture()
def case(tmp_path: Path) -> dict:
    """A CT series (one slice without file meta), an RTSTRUCT in a subfolder, and non-DICOM files."""
    root = tmp_path / "case"
    study, frame, series = uid(), uid(), uid()
    positions = axial_positions(3)
    cts = write_slices(
        root / "ct",
        positions[:2],
        series_uid=series,
        study_uid=study,
        for_uid=frame,
        series_description="Thorax 3mm",
        series_number=7,
        per_slice=[
            {"TemporalPositionIndex": 3, "ImageComments": "Phase 20%", "TriggerTime": "250"},
            {"TemporalPositionIndex": 4, "ImageComments": "Phase 30%"},
        ],
    )
    cts += write_slices(
        root / "ct",
        positions[2:],
        names=["no_meta_slice"],
        file_meta=False,
        series_uid=series,
        study_uid=study,
        for_uid=frame,
    )
    sops = [str(pydicom.dcmread(p, force=True).SOPInstanceUID) for p in cts]
    rs = write_rtstruct(
        root / "plan" / "deep" / "RS.dcm", study_uid=study, for_uid=frame, series_uid=series, sop_uids=sops
    )
    (root / "README.md").write_text("# not DICOM\n", encoding="utf-8")
    (root / "ct" / "info.json").write_text(json.dumps({"a": 1}), encoding="utf-8")
    (root / "empty.dcm").write_bytes(b"")
    (root / "DICM_lookalike.bin").write_bytes(b"\x08\x00" + b"\xff" * 50)  # group 0008, garbage after
    return {
        "root": root,
        "cts": cts,
        "rs": rs,
        "series": series,
        "frame": frame,
        "study": study,
        "sops": sops,
    }


def test_scan_finds_every_object_recursively_and_skips_non_dicom(case: dict) -> None:
    files = scan_dicom([case["root"]])
    found = sorted(f.path for f in files)
    assert found == sorted([*case["cts"], case["rs"]])
    assert sorted(f.modality or "" for f in files) == ["CT", "CT", "CT", "RTSTRUCT"]


def test_header_fields_of_image_slices(case: dict) -> None:
    by_path = {f.path: f for f in scan_dicom(case["root"])}
    first = by_path[case["cts"][0]]
    assert first.image_position_mm == pytest.approx((-10.0, 5.0, -20.0))
    assert first.image_orientation == pytest.approx((1, 0, 0, 0, 1, 0))
    assert first.temporal_position_index == 3
    assert first.image_comments == "Phase 20%"
    assert first.trigger_time_ms == pytest.approx(250.0)
    assert first.series_number == 7
    assert first.series_description == "Thorax 3mm"
    assert first.series_instance_uid == case["series"]
    assert first.study_instance_uid == case["study"]
    assert first.frame_of_reference_uid == case["frame"]
    assert (first.rows, first.columns) == (12, 16)
    assert first.pixel_spacing_mm == pytest.approx((1.5, 1.25))
    assert first.instance_number == 1
    assert first.is_image and not first.is_localizer
    headerless = by_path[case["cts"][2]]
    assert headerless.modality == "CT"
    assert headerless.image_position_mm == pytest.approx((-10.0, 5.0, -15.0))
    assert headerless.temporal_position_index is None


def test_rtstruct_frame_of_reference_and_references(case: dict) -> None:
    rs = find_single(case["root"], "RTSTRUCT", what="--rtstruct")
    assert rs.path == case["rs"]
    assert rs.frame_of_reference_uid == case["frame"]  # from ReferencedFrameOfReferenceSequence
    assert rs.referenced_series_uids == (case["series"],)
    assert rs.referenced_sop_instance_uids == tuple(case["sops"])
    assert rs.image_position_mm is None and rs.image_orientation is None


def test_a_file_can_be_given_directly(case: dict) -> None:
    files = scan_dicom([case["rs"], case["cts"][2]])
    assert [f.modality for f in files] == ["RTSTRUCT", "CT"]


def test_no_dicom_at_all_names_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "not_dicom"
    folder.mkdir()
    (folder / "README.md").write_text("hello", encoding="utf-8")
    with pytest.raises(InputError, match="no DICOM objects in .*not_dicom.*1 file, none of them DICOM"):
        scan_dicom([folder])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"empty \(no files\)"):
        scan_dicom(empty)


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere: no such file or folder"):
        scan_dicom([tmp_path / "nowhere"])
    with pytest.raises(InputError, match="no DICOM files or folders given"):
        scan_dicom([])


def test_find_single_reports_none_and_several(case: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"--rtdose: no RTDOSE in .*case \(found CT, RTSTRUCT\)"):
        find_single(case["root"], "RTDOSE", what="--rtdose")
    second = write_rtstruct(
        case["root"] / "RS2.dcm", study_uid=case["study"], for_uid=case["frame"], series_uid=case["series"]
    )
    with pytest.raises(InputError, match=r"2 RTSTRUCT files in .*case: .*RS2.dcm.*; give one file") as info:
        find_single([case["root"]], "RTSTRUCT", what="--rtstruct")
    assert str(case["rs"]) in str(info.value)
    # a single file resolves the ambiguity, and records already scanned are accepted as they are
    assert find_single(second, "RTSTRUCT", what="--rtstruct").path == second
    records = scan_dicom(case["root"])
    assert find_single([r for r in records if r.path != second], "RTSTRUCT", what="x").path == case["rs"]


def test_find_objects_and_group_series(case: dict) -> None:
    other = write_slices(case["root"] / "other", axial_positions(2), series_description="Scout")
    files = scan_dicom(case["root"])
    assert len(find_objects(files, "CT")) == 5
    assert [f.path for f in find_objects(files, "RTSTRUCT")] == [case["rs"]]
    groups = group_series(find_objects(files, "CT"))
    assert {k: len(v) for k, v in groups.items()} == {
        case["series"]: 3,
        scan_dicom(other[0])[0].series_instance_uid: 2,
    }


def test_unfinished_atomic_outputs_are_not_scanned(case: dict) -> None:
    partial = case["root"] / ".MIP.abc123.part"
    write_slices(partial, axial_positions(2))
    assert len(scan_dicom(case["root"])) == 4


def test_progress_reaches_one(case: dict) -> None:
    seen: list[float] = []
    scan_dicom(case["root"], progress=lambda fraction, message: seen.append(fraction))
    assert seen and seen[-1] == pytest.approx(1.0)
    assert seen == sorted(seen)
