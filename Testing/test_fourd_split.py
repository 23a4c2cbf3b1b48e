"""4D-CT phase splitting: by folder, by series, by phase percent, by temporal position."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from ct_factory import axial_positions, uid, write_rtstruct, write_slices

from sbrtstandards.dicom.common import SeriesReference, StudyInfo
from sbrtstandards.dicom.ct import read_ct_series, write_ct_series
from sbrtstandards.dicom.fourd import is_projection, phase_percent, split_phases
from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid


@pytest.fixture()
def study() -> StudyInfo:
    return StudyInfo(patient_id="4D")


def _write_phase(
    folder: Path,
    study: StudyInfo,
    description: str,
    *,
    value: int,
    extra: dict | None = None,
    number: int = 1,
) -> SeriesReference:
    """A 16x12x4 CT series filled with ``value`` (so the test knows which phase a file holds)."""
    grid = Grid(
        (-8.0, -6.0, -3.0), (1.0, 1.0, 2.0), (16, 12, 4), frame_of_reference_uid=study.frame_of_reference_uid
    )
    hu = np.full(grid.shape, value, dtype=np.int16)
    return write_ct_series(
        folder, hu, grid, study=study, series_description=description, series_number=number, extra_tags=extra
    )


def _rtstruct_for(path: Path, study: StudyInfo, ref: SeriesReference | None, sops: bool = True) -> Path:
    return write_rtstruct(
        path,
        study_uid=study.study_instance_uid,
        for_uid=study.frame_of_reference_uid,
        series_uid=ref.series_instance_uid if ref else None,
        sop_uids=ref.sop_instance_uids if (ref and sops) else (),
    )


def _value(path: Path) -> int:
    return int(pydicom.dcmread(path).pixel_array[0, 0])


def _flatten(sources: list[Path], target: Path) -> None:
    """Move the files of several written series into one flat folder (as a PACS export does)."""
    target.mkdir(parents=True, exist_ok=True)
    for n, source in enumerate(sources):
        for f in sorted(source.iterdir()):
            shutil.move(str(f), target / f"s{n:02d}_{f.name}")
        source.rmdir()


@pytest.mark.parametrize(
    ("text", "percent"),
    [
        ("CT 4D 20%", 20.0),
        ("Phase 20%", 20.0),
        ("20.0%", 20.0),
        ("T=20%", 20.0),
        ("Gated 20%", 20.0),
        ("50% Ex", 50.0),
        ("Resp 4D 0 %", 0.0),
        ("0%In", 0.0),
        ("MIP 0-90%", None),
        ("Ave-IP 0%-90%", None),
        ("0% - 90%", None),
        ("Average CT", None),
        ("Thorax 3mm", None),
        ("120%", None),
        ("20% and 30%", None),
        ("", None),
    ],
)
def test_phase_percent_of_descriptions(text: str, percent: float | None) -> None:
    assert phase_percent(text) == percent


@pytest.mark.parametrize(
    ("text", "projection"),
    [
        ("MIP", True),
        ("CT MinIP", True),
        ("AVG 4D", True),
        ("Average", True),
        ("Ave-IP", True),
        ("Phase 20%", False),
        ("Diaphragm", False),
        ("Lung 4D", False),
    ],
)
def test_projection_descriptions(text: str, projection: bool) -> None:
    assert is_projection(text) is projection


def test_one_folder_per_phase_sorted_by_percent_with_their_rtstructs(
    tmp_path: Path, study: StudyInfo
) -> None:
    refs = {}
    folders = []
    for percent in (20, 0, 10):  # given out of order
        folder = tmp_path / f"phase_{percent}"
        refs[percent] = _write_phase(folder / "CT", study, f"CT 4D {percent}%", value=100 + percent)
        _rtstruct_for(folder / "RS.dcm", study, refs[percent])
        folders.append(folder)
    phases = split_phases(folders)
    assert [p.label for p in phases] == ["0%", "10%", "20%"]
    assert [p.percent for p in phases] == [0.0, 10.0, 20.0]
    for phase, percent in zip(phases, (0, 10, 20)):
        assert phase.series_instance_uid == refs[percent].series_instance_uid
        assert len(phase.files) == 4 and {_value(f) for f in phase.files} == {100 + percent}
        assert phase.rtstruct_files == [tmp_path / f"phase_{percent}" / "RS.dcm"]
        zs = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in phase.files]
        assert zs == sorted(zs)
        ct = read_ct_series(phase.files)  # a phase's files make one CT series
        assert ct.series_instance_uid == phase.series_instance_uid


def test_folders_without_percent_keep_the_given_order(tmp_path: Path, study: StudyInfo) -> None:
    folders = [tmp_path / name for name in ("insp", "mid", "exp")]
    for n, folder in enumerate(folders):
        _write_phase(folder, study, f"Breath hold {folder.name}", value=n)
    phases = split_phases(folders)
    assert [p.label for p in phases] == ["phase 1", "phase 2", "phase 3"]
    assert [p.percent for p in phases] == [None, None, None]
    assert [_value(p.files[0]) for p in phases] == [0, 1, 2]


def test_folders_ordered_by_temporal_position_index(tmp_path: Path, study: StudyInfo) -> None:
    folders = []
    for n, index in enumerate((3, 1, 2)):
        folders.append(tmp_path / f"p{n}")
        _write_phase(folders[-1], study, "Resp", value=index, extra={"TemporalPositionIndex": index})
    phases = split_phases(folders)
    assert [p.temporal_position_index for p in phases] == [1, 2, 3]
    assert [_value(p.files[0]) for p in phases] == [1, 2, 3]
    assert [p.label for p in phases] == ["phase 1", "phase 2", "phase 3"]


def test_rtstruct_goes_to_the_phase_it_references_else_to_its_folder(
    tmp_path: Path, study: StudyInfo
) -> None:
    a = _write_phase(tmp_path / "A" / "CT", study, "CT 0%", value=0)
    b = _write_phase(tmp_path / "B" / "CT", study, "CT 50%", value=50)
    misplaced = _rtstruct_for(tmp_path / "A" / "RS_of_B.dcm", study, b, sops=False)  # references B's series
    unreferenced = _rtstruct_for(tmp_path / "B" / "RS_plain.dcm", study, None)  # no series reference
    phases = split_phases([tmp_path / "A", tmp_path / "B"])
    assert phases[0].series_instance_uid == a.series_instance_uid
    assert phases[0].rtstruct_files == []
    assert sorted(phases[1].rtstruct_files) == sorted([misplaced, unreferenced])


def test_one_folder_with_one_series_per_phase(tmp_path: Path, study: StudyInfo, caplog) -> None:
    sources, refs = [], {}
    for n, percent in enumerate((50, 0, 25, 75)):
        sources.append(tmp_path / f"w{n}")
        refs[percent] = _write_phase(sources[-1], study, f"Gated {percent}%", value=percent, number=10 + n)
    sources.append(tmp_path / "mip")
    _write_phase(sources[-1], study, "MIP 0-75%", value=999, number=20)
    sources.append(tmp_path / "helical")
    _write_phase(sources[-1], study, "Thorax helical", value=-1, number=2)
    _flatten(sources, tmp_path / "4DCT")
    rs = _rtstruct_for(tmp_path / "4DCT" / "RS.dcm", study, refs[25])
    with caplog.at_level(logging.WARNING, logger="sbrtstandards.dicom.fourd"):
        phases = split_phases([tmp_path / "4DCT"])
    assert "Thorax helical" in caplog.text  # the free-breathing series is left out, and said so
    assert [p.label for p in phases] == ["0%", "25%", "50%", "75%"]
    assert [_value(p.files[0]) for p in phases] == [0, 25, 50, 75]
    assert [p.series_instance_uid for p in phases] == [refs[v].series_instance_uid for v in (0, 25, 50, 75)]
    assert [p.rtstruct_files for p in phases] == [[], [rs], [], []]


def test_one_folder_with_phase_subfolders_attaches_rtstructs_by_folder(
    tmp_path: Path, study: StudyInfo, caplog
) -> None:
    root = tmp_path / "4DCT"
    for percent in (0, 50):
        _write_phase(root / f"phase_{percent}" / "CT", study, f"CT {percent}%", value=percent)
        _rtstruct_for(root / f"phase_{percent}" / "RS.dcm", study, None)  # references no series
    _rtstruct_for(root / "RS_top.dcm", study, None)
    with caplog.at_level(logging.WARNING, logger="sbrtstandards.dicom.fourd"):
        phases = split_phases([root])
    assert [p.rtstruct_files for p in phases] == [
        [root / "phase_0" / "RS.dcm"],
        [root / "phase_50" / "RS.dcm"],
    ]
    assert "RS_top.dcm: RTSTRUCT not attached" in caplog.text


def test_percent_in_image_comments_labels_series(tmp_path: Path, study: StudyInfo) -> None:
    sources = []
    for n, percent in enumerate((30, 10)):
        sources.append(tmp_path / f"w{n}")
        _write_phase(
            sources[-1], study, "Lung 4D", value=percent, extra={"ImageComments": f"Phase {percent}%"}
        )
    _flatten(sources, tmp_path / "4DCT")
    phases = split_phases([tmp_path / "4DCT"])
    assert [(p.label, _value(p.files[0])) for p in phases] == [("10%", 10), ("30%", 30)]


def _one_series_4d(
    folder: Path, tags_per_phase: list[dict], study: StudyInfo
) -> tuple[str, list[list[Path]]]:
    """One CT series holding every phase: the slice positions repeat once per phase."""
    series = uid()
    positions = axial_positions(4)
    per_phase = []
    for n, tags in enumerate(tags_per_phase):
        per_phase.append(
            write_slices(
                folder,
                positions[::-1],  # stored from top to bottom
                series_uid=series,
                study_uid=study.study_instance_uid,
                for_uid=study.frame_of_reference_uid,
                series_description="4D Thorax",
                names=[f"IM{n}_{k}" for k in range(4)],
                values=lambda p, n=n: np.full(p.shape[:-1], 10 * n),
                extra=tags,
            )
        )
    return series, per_phase


def test_one_series_split_by_temporal_position_index(tmp_path: Path, study: StudyInfo) -> None:
    series, files = _one_series_4d(tmp_path / "4D", [{"TemporalPositionIndex": i} for i in (2, 3, 1)], study)
    target_sops = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files[1]]  # the phase with index 3
    rs = write_rtstruct(
        tmp_path / "4D" / "RS.dcm",
        study_uid=study.study_instance_uid,
        for_uid=study.frame_of_reference_uid,
        series_uid=series,
        sop_uids=target_sops,
    )
    phases = split_phases([tmp_path / "4D"])
    assert [p.label for p in phases] == ["phase 1", "phase 2", "phase 3"]
    assert [p.temporal_position_index for p in phases] == [1, 2, 3]
    assert [_value(p.files[0]) for p in phases] == [20, 0, 10]
    assert all(p.series_instance_uid == series for p in phases)
    assert [sorted(p.files) for p in phases] == [sorted(files[2]), sorted(files[0]), sorted(files[1])]
    zs = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in phases[0].files]
    assert zs == [-20.0, -17.5, -15.0, -12.5]  # sorted along the normal, not as stored
    assert [p.rtstruct_files for p in phases] == [[], [], [rs]]  # by the images it references
    assert read_ct_series(phases[1].files).image.GetSize()[2] == 4


def test_one_series_split_by_percent_in_image_comments(tmp_path: Path, study: StudyInfo) -> None:
    _one_series_4d(tmp_path / "4D", [{"ImageComments": f"T={p}%"} for p in (50, 0)], study)
    phases = split_phases(tmp_path / "4D")  # type: ignore[arg-type]  # a single path is accepted too
    assert [(p.label, p.percent, _value(p.files[0])) for p in phases] == [("0%", 0.0, 10), ("50%", 50.0, 0)]


def test_single_phase_is_refused(tmp_path: Path, study: StudyInfo) -> None:
    _write_phase(tmp_path / "one", study, "CT 20%", value=0)
    with pytest.raises(InputError, match="single CT phase.*at least two phases"):
        split_phases([tmp_path / "one"])


def test_phase_labelled_twice_is_refused(tmp_path: Path, study: StudyInfo) -> None:
    _write_phase(tmp_path / "a", study, "CT 4D 20%", value=0)
    _write_phase(tmp_path / "b", study, "Phase 20.0%", value=1)
    with pytest.raises(InputError, match="labelled twice.*20%"):
        split_phases([tmp_path / "a", tmp_path / "b"])


def test_a_phase_folder_with_two_series_is_refused(tmp_path: Path, study: StudyInfo) -> None:
    _write_phase(tmp_path / "a", study, "CT 0%", value=0)
    _write_phase(tmp_path / "b" / "x", study, "CT 10%", value=1)
    _write_phase(tmp_path / "b" / "y", study, "CT 20%", value=2)
    with pytest.raises(InputError, match=r"b holds 2 CT series .*'CT 10%'.*'CT 20%'.*one phase series"):
        split_phases([tmp_path / "a", tmp_path / "b"])


def test_the_same_series_twice_is_refused(tmp_path: Path, study: StudyInfo) -> None:
    _write_phase(tmp_path / "a", study, "CT 0%", value=0)
    with pytest.raises(InputError, match="the same CT series"):
        split_phases([tmp_path / "a", tmp_path / "a"])


def test_repeated_positions_without_a_tag_are_refused(tmp_path: Path, study: StudyInfo) -> None:
    _one_series_4d(tmp_path / "4D", [{}, {}], study)
    with pytest.raises(InputError, match="repeats slice positions but its slices are not split into volumes"):
        split_phases([tmp_path / "4D"])


def test_a_tag_that_does_not_make_volumes_is_not_used(tmp_path: Path, study: StudyInfo) -> None:
    # every slice has its own TriggerTime: grouping by it would give one-slice "phases"
    per_slice_times = [{"TriggerTime": str(100 * n)} for n in range(8)]
    series = uid()
    write_slices(tmp_path / "4D", axial_positions(4) * 2, series_uid=series, per_slice=per_slice_times)
    with pytest.raises(InputError, match="not split into volumes"):
        split_phases([tmp_path / "4D"])
    # ... while a percent in the comments of the same slices does split them
    shutil.rmtree(tmp_path / "4D")
    tags = [{"TriggerTime": str(100 * n), "ImageComments": f"{0 if n < 4 else 50}%"} for n in range(8)]
    write_slices(tmp_path / "4D", axial_positions(4) * 2, series_uid=series, per_slice=tags)
    assert [p.label for p in split_phases([tmp_path / "4D"])] == ["0%", "50%"]


def test_projections_alone_are_not_phases(tmp_path: Path, study: StudyInfo) -> None:
    _write_phase(tmp_path / "p0", study, "CT 0%", value=0)
    _write_phase(tmp_path / "mip", study, "MIP", value=1)
    with pytest.raises(InputError, match="no CT phase series in .*mip: only projections"):
        split_phases([tmp_path / "p0", tmp_path / "mip"])


def test_no_dicom_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.json").write_text("{}", encoding="utf-8")
    with pytest.raises(InputError, match="no DICOM objects in .*empty"):
        split_phases([tmp_path / "empty"])
    with pytest.raises(InputError, match="no 4D-CT folders given"):
        split_phases([])
