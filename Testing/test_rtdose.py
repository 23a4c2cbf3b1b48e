"""RT Dose read/write: hand-built doses with known values, pydicom's test files, plastimatch.

Known answers: a dose linear in x, y, z (trilinear interpolation reproduces it exactly), pixel
values and DoseGridScaling set by hand, and the header of pydicom's rtdose.dcm read back with
pydicom (origin, 10 x 10 mm pixels, frame offsets 0..70 mm every 5 mm).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from independent_readers import PLASTIMATCH, requires_plastimatch
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag

from sbrtstandards.dicom.common import RT_DOSE_STORAGE, StudyInfo, save_dataset
from sbrtstandards.dicom.rtdose import DoseGrid, read_rtdose, sum_doses, write_rtdose
from sbrtstandards.errors import FrameOfReferenceError, GeometryError, InputError
from sbrtstandards.grid import Grid

ORIGIN = (-12.5, 30.0, -40.0)
SPACING = (2.0, 2.5, 3.0)  # x, y, z all different so that a swapped axis shows
SIZE = (7, 5, 4)  # ni, nj, nk
# pydicom's test files hold a deliberately invalid UID
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

A, BX, BY, BZ = 20.0, 0.05, -0.03, 0.1  # D = A + BX x + BY y + BZ z (Gy), 14..16 Gy on the grid


def ramp(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return A + BX * x + BY * y + BZ * z


def voxel_coords() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS coordinates of the voxel centres as arrays [k, j, i], computed by hand."""
    xs = ORIGIN[0] + SPACING[0] * np.arange(SIZE[0])
    ys = ORIGIN[1] + SPACING[1] * np.arange(SIZE[1])
    zs = ORIGIN[2] + SPACING[2] * np.arange(SIZE[2])
    z, y, x = np.meshgrid(zs, ys, xs, indexing="ij")
    return x, y, z


@pytest.fixture
def study() -> StudyInfo:
    return StudyInfo(patient_id="RD-TEST")


@pytest.fixture
def grid(study: StudyInfo) -> Grid:
    return Grid(ORIGIN, SPACING, SIZE, frame_of_reference_uid=study.frame_of_reference_uid)


@pytest.fixture
def ramp_dose() -> np.ndarray:
    return ramp(*voxel_coords())


@pytest.fixture
def ramp_file(tmp_path: Path, ramp_dose: np.ndarray, grid: Grid, study: StudyInfo) -> Path:
    return write_rtdose(tmp_path / "RD.dcm", ramp_dose, grid, study=study, referenced_plan_uid="1.2.3.4")


def rewrite(src: Path, dst: Path, **changes: object) -> Path:
    """Copy of an RT Dose file with some attributes changed by hand (pydicom only)."""
    ds = pydicom.dcmread(str(src))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return save_dataset(ds, dst)


def set_pixels(ds: Dataset, frames: np.ndarray) -> None:
    """Replace the pixel data by uint32 ``frames`` [frame, row, column]."""
    frames = np.ascontiguousarray(frames, dtype="<u4")
    ds.NumberOfFrames = str(frames.shape[0])
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.PixelData = frames.tobytes()


def scaling_step(path: Path) -> float:
    return float(pydicom.dcmread(str(path)).DoseGridScaling)


# ------------------------------------------------------------------------------------------
# write -> read
# ------------------------------------------------------------------------------------------


def test_round_trip_values_within_scaling_step_and_geometry_exact(
    ramp_file: Path, ramp_dose: np.ndarray, study: StudyInfo
) -> None:
    dose = read_rtdose(ramp_file)
    assert dose.grid.origin_mm == ORIGIN
    assert dose.grid.spacing_mm == SPACING
    assert dose.grid.size == SIZE
    assert dose.grid.is_axial
    assert dose.grid.frame_of_reference_uid == study.frame_of_reference_uid
    assert dose.dose_gy.dtype == np.float64
    assert dose.dose_gy.shape == (4, 5, 7)
    assert np.max(np.abs(dose.dose_gy - ramp_dose)) <= scaling_step(ramp_file) / 2 + 1e-12
    assert dose.summation_type == "PLAN"
    assert dose.dose_units_in_file == "GY"
    assert dose.dose_type == "PHYSICAL"
    assert dose.referenced_plan_uid == "1.2.3.4"
    assert dose.study.patient_id == "RD-TEST"
    assert dose.study.study_instance_uid == study.study_instance_uid
    assert dose.max_gy == pytest.approx(float(ramp_dose.max()), abs=1e-6)
    assert not dose.per_fraction and dose.warnings == []


def test_written_file_is_an_rt_dose_iod(ramp_file: Path, ramp_dose: np.ndarray, study: StudyInfo) -> None:
    ds = pydicom.dcmread(str(ramp_file))
    assert ds.file_meta.MediaStorageSOPClassUID == RT_DOSE_STORAGE
    assert ds.SOPClassUID == RT_DOSE_STORAGE and ds.Modality == "RTDOSE"
    for keyword in (  # type 1 and 2 attributes of the IOD's modules
        "PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyID", "SeriesInstanceUID",
        "SeriesNumber", "FrameOfReferenceUID", "PositionReferenceIndicator", "Manufacturer",
        "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
        "SliceThickness", "SOPInstanceUID",
    ):  # fmt: skip
        assert keyword in ds, keyword
    assert ds.FrameOfReferenceUID == study.frame_of_reference_uid
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in ds.ImagePositionPatient] == list(ORIGIN)
    assert [float(v) for v in ds.PixelSpacing] == [2.5, 2.0]  # row spacing (y), then column spacing (x)
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (5, 7, 4)
    assert ds.SamplesPerPixel == 1 and ds.PhotometricInterpretation == "MONOCHROME2"
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (32, 32, 31, 0)
    assert Tag(ds.FrameIncrementPointer) == Tag(0x3004, 0x000C)
    assert [float(v) for v in ds.GridFrameOffsetVector] == [0.0, 3.0, 6.0, 9.0]
    assert (ds.DoseUnits, ds.DoseType, ds.DoseSummationType) == ("GY", "PHYSICAL", "PLAN")
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    pixels = ds.pixel_array
    assert pixels.dtype == np.uint32
    assert 0.9 * 2**32 < int(pixels.max()) <= 2**32 - 1  # the maximum dose uses most of the range
    np.testing.assert_allclose(pixels * float(ds.DoseGridScaling), ramp_dose, atol=1e-6)


def test_no_plan_reference_unless_given(
    tmp_path: Path, ramp_dose: np.ndarray, grid: Grid, study: StudyInfo
) -> None:
    path = write_rtdose(tmp_path / "RD.dcm", ramp_dose, grid, study=study)
    assert "ReferencedRTPlanSequence" not in pydicom.dcmread(str(path))
    assert read_rtdose(path).referenced_plan_uid is None


def test_single_slice_dose_round_trip(tmp_path: Path, study: StudyInfo) -> None:
    g = Grid((0.0, 0.0, 5.0), (1.0, 1.0, 2.0), (3, 2, 1), frame_of_reference_uid=study.frame_of_reference_uid)
    values = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    dose = read_rtdose(write_rtdose(tmp_path / "RD.dcm", values, g, study=study))
    assert dose.grid.size == (3, 2, 1) and dose.grid.origin_mm == (0.0, 0.0, 5.0)
    np.testing.assert_allclose(dose.dose_gy, values, atol=1e-8)


@pytest.mark.parametrize(
    ("values", "message"),
    [(-1.0, "negative"), (np.nan, "NaN"), (np.inf, "infinite")],
)
def test_write_rejects_bad_dose(
    tmp_path: Path, grid: Grid, study: StudyInfo, values: float, message: str
) -> None:
    dose = np.full(grid.shape, 5.0)
    dose[1, 2, 3] = values
    with pytest.raises(InputError, match=message):
        write_rtdose(tmp_path / "RD.dcm", dose, grid, study=study)
    assert not (tmp_path / "RD.dcm").exists()


def test_write_rejects_shape_orientation_and_frame_of_reference_mismatch(
    tmp_path: Path, grid: Grid, study: StudyInfo
) -> None:
    with pytest.raises(InputError, match="shape"):
        write_rtdose(tmp_path / "RD.dcm", np.zeros((2, 2, 2)), grid, study=study)
    tilted = Grid(ORIGIN, SPACING, SIZE, (1, 0, 0, 0, 0, 1, 0, -1, 0), study.frame_of_reference_uid)
    with pytest.raises(GeometryError):
        write_rtdose(tmp_path / "RD.dcm", np.zeros(grid.shape), tilted, study=study)
    other = Grid(ORIGIN, SPACING, SIZE, frame_of_reference_uid="1.2.3")
    with pytest.raises(FrameOfReferenceError):
        write_rtdose(tmp_path / "RD.dcm", np.zeros(grid.shape), other, study=study)


def test_all_zero_dose_writes_and_reads(tmp_path: Path, grid: Grid, study: StudyInfo) -> None:
    dose = read_rtdose(write_rtdose(tmp_path / "RD.dcm", np.zeros(grid.shape), grid, study=study))
    assert dose.max_gy == 0.0


# ------------------------------------------------------------------------------------------
# geometry of the frames
# ------------------------------------------------------------------------------------------


def test_absolute_and_relative_frame_offsets_give_the_same_positions(tmp_path: Path, ramp_file: Path) -> None:
    absolute = [str(ORIGIN[2] + SPACING[2] * k) for k in range(SIZE[2])]  # first == IPP z
    path = rewrite(ramp_file, tmp_path / "abs.dcm", GridFrameOffsetVector=absolute)
    rel, ab = read_rtdose(ramp_file), read_rtdose(path)
    assert ab.grid == rel.grid
    np.testing.assert_array_equal(ab.dose_gy, rel.dose_gy)


def test_first_offset_neither_zero_nor_image_position_is_rejected(tmp_path: Path, ramp_file: Path) -> None:
    path = rewrite(ramp_file, tmp_path / "bad.dcm", GridFrameOffsetVector=["7", "10", "13", "16"])
    with pytest.raises(GeometryError, match="GridFrameOffsetVector starts at 7"):
        read_rtdose(path)


def test_uneven_frame_offsets_raise_or_resample(tmp_path: Path, ramp_file: Path) -> None:
    offsets = [0.0, 3.0, 6.0, 12.0]
    ds = pydicom.dcmread(str(ramp_file))
    x, y, _ = voxel_coords()
    z = np.asarray(offsets)[:, None, None] + ORIGIN[2]
    values = ramp(x, y, z)  # exact ramp at the uneven slice positions
    scaling = 1e-6
    set_pixels(ds, np.rint(values / scaling))
    ds.DoseGridScaling = "1e-06"
    ds.GridFrameOffsetVector = [str(v) for v in offsets]
    path = save_dataset(ds, tmp_path / "uneven.dcm")
    with pytest.raises(GeometryError, match="unevenly spaced"):
        read_rtdose(path)
    dose = read_rtdose(path, uneven_slices="resample")
    assert dose.grid.size == (7, 5, 5) and dose.grid.spacing_mm[2] == pytest.approx(3.0)
    zs = ORIGIN[2] + 3.0 * np.arange(5)  # -40 .. -28, every 3 mm
    np.testing.assert_allclose(dose.dose_gy, ramp(x[:1], y[:1], zs[:, None, None]), atol=2e-6)
    assert any("resampled" in w for w in dose.warnings)


def test_duplicate_frame_positions_are_rejected(tmp_path: Path, ramp_file: Path) -> None:
    path = rewrite(ramp_file, tmp_path / "dup.dcm", GridFrameOffsetVector=["0", "3", "3", "6"])
    with pytest.raises(GeometryError, match="same position"):
        read_rtdose(path)


def test_frame_count_must_match_the_offsets(tmp_path: Path, ramp_file: Path) -> None:
    path = rewrite(ramp_file, tmp_path / "short.dcm", GridFrameOffsetVector=["0", "3", "6"])
    with pytest.raises(GeometryError, match="3 values for 4 frames"):
        read_rtdose(path)


def test_decreasing_offsets_read_as_increasing_z(
    tmp_path: Path, ramp_file: Path, ramp_dose: np.ndarray
) -> None:
    ds = pydicom.dcmread(str(ramp_file))
    pixels = ds.pixel_array[::-1]  # first frame is now the top slice
    set_pixels(ds, pixels)
    top = ORIGIN[2] + SPACING[2] * (SIZE[2] - 1)
    ds.ImagePositionPatient = [str(ORIGIN[0]), str(ORIGIN[1]), str(top)]
    ds.GridFrameOffsetVector = ["0", "-3", "-6", "-9"]
    dose = read_rtdose(save_dataset(ds, tmp_path / "down.dcm"))
    assert dose.grid.origin_mm == ORIGIN and dose.grid.spacing_mm == SPACING
    np.testing.assert_allclose(dose.dose_gy, ramp_dose, atol=1e-6)


def test_flipped_in_plane_axes_are_reordered(tmp_path: Path, ramp_file: Path, ramp_dose: np.ndarray) -> None:
    """ImageOrientationPatient (-1,0,0,0,-1,0): columns run to -x, rows to -y (a prone export)."""
    ds = pydicom.dcmread(str(ramp_file))
    set_pixels(ds, ds.pixel_array[:, ::-1, ::-1])
    x_max = ORIGIN[0] + SPACING[0] * (SIZE[0] - 1)
    y_max = ORIGIN[1] + SPACING[1] * (SIZE[1] - 1)
    ds.ImagePositionPatient = [str(x_max), str(y_max), str(ORIGIN[2])]
    ds.ImageOrientationPatient = ["-1", "0", "0", "0", "-1", "0"]
    dose = read_rtdose(save_dataset(ds, tmp_path / "flip.dcm"))
    assert dose.grid.origin_mm == ORIGIN and dose.grid.spacing_mm == SPACING and dose.grid.size == SIZE
    np.testing.assert_allclose(dose.dose_gy, ramp_dose, atol=1e-6)


def test_swapped_in_plane_axes_with_normal_along_minus_z(
    tmp_path: Path, ramp_file: Path, ramp_dose: np.ndarray
) -> None:
    """IOP (0,1,0,1,0,0): columns along +y, rows along +x; the normal (row x column) is -z, so
    relative offsets 0, 3, 6, 9 go down from the first frame."""
    ds = pydicom.dcmread(str(ramp_file))
    frames = ds.pixel_array[::-1].transpose(0, 2, 1)  # [frame from the top, x, y]
    set_pixels(ds, frames)
    top = ORIGIN[2] + SPACING[2] * (SIZE[2] - 1)
    ds.ImagePositionPatient = [str(ORIGIN[0]), str(ORIGIN[1]), str(top)]
    ds.ImageOrientationPatient = ["0", "1", "0", "1", "0", "0"]
    ds.PixelSpacing = [str(SPACING[0]), str(SPACING[1])]  # between rows (along x), between columns (y)
    dose = read_rtdose(save_dataset(ds, tmp_path / "swap.dcm"))
    assert dose.grid.origin_mm == ORIGIN and dose.grid.spacing_mm == SPACING and dose.grid.size == SIZE
    np.testing.assert_allclose(dose.dose_gy, ramp_dose, atol=1e-6)


@pytest.mark.parametrize(
    "orientation",
    [
        ["1", "0", "0", "0", "0", "-1"],  # coronal
        ["0", "1", "0", "0", "0", "-1"],  # sagittal
        ["0.9848078", "0.1736482", "0", "-0.1736482", "0.9848078", "0"],  # axial rotated 10 degrees
    ],
)
def test_non_axial_orientation_is_rejected(tmp_path: Path, ramp_file: Path, orientation: list[str]) -> None:
    path = rewrite(ramp_file, tmp_path / "tilted.dcm", ImageOrientationPatient=orientation)
    with pytest.raises(GeometryError, match="axial") as err:
        read_rtdose(path)
    assert "tilted.dcm" in str(err.value)


# ------------------------------------------------------------------------------------------
# values: scaling, units, summation
# ------------------------------------------------------------------------------------------


def handmade_pixels() -> np.ndarray:
    return np.arange(4 * 5 * 7, dtype=np.uint32).reshape(4, 5, 7) * 1000 + 7


def test_dose_grid_scaling_is_applied(tmp_path: Path, ramp_file: Path) -> None:
    ds = pydicom.dcmread(str(ramp_file))
    set_pixels(ds, handmade_pixels())
    ds.DoseGridScaling = "0.0025"
    dose = read_rtdose(save_dataset(ds, tmp_path / "scaled.dcm"))
    np.testing.assert_allclose(dose.dose_gy, handmade_pixels() * 0.0025, rtol=1e-15)
    assert dose.max_gy == pytest.approx((139 * 1000 + 7) * 0.0025)


def test_missing_or_bad_scaling_and_units_are_rejected(tmp_path: Path, ramp_file: Path) -> None:
    ds = pydicom.dcmread(str(ramp_file))
    del ds.DoseGridScaling
    with pytest.raises(InputError, match="DoseGridScaling"):
        read_rtdose(save_dataset(ds, tmp_path / "noscale.dcm"))
    with pytest.raises(InputError, match="not positive"):
        read_rtdose(rewrite(ramp_file, tmp_path / "zero.dcm", DoseGridScaling="0"))
    with pytest.raises(InputError, match="DoseUnits 'CGY'"):
        read_rtdose(rewrite(ramp_file, tmp_path / "cgy.dcm", DoseUnits="CGY"))


@pytest.fixture
def relative_file(tmp_path: Path, ramp_file: Path) -> Path:
    ds = pydicom.dcmread(str(ramp_file))
    set_pixels(ds, handmade_pixels())
    ds.DoseGridScaling = "1e-05"
    ds.DoseUnits = "RELATIVE"
    return save_dataset(ds, tmp_path / "relative.dcm")


def test_relative_dose_needs_the_prescription(relative_file: Path) -> None:
    with pytest.raises(InputError, match="RELATIVE units; give the prescription \\(--rx-gy\\)") as err:
        read_rtdose(relative_file)
    assert str(relative_file) in str(err.value)


def test_relative_dose_scaled_by_the_prescription(relative_file: Path) -> None:
    values = handmade_pixels() * 1e-5
    as_fraction = read_rtdose(relative_file, rx_gy=50.0)
    np.testing.assert_allclose(as_fraction.dose_gy, values * 50.0, rtol=1e-14)
    assert as_fraction.dose_units_in_file == "RELATIVE" and as_fraction.rx_gy_applied == 50.0
    as_percent = read_rtdose(relative_file, rx_gy=50.0, relative_unit="percent")
    np.testing.assert_allclose(as_percent.dose_gy, values / 100.0 * 50.0, rtol=1e-14)
    with pytest.raises(InputError, match="positive"):
        read_rtdose(relative_file, rx_gy=-5.0)


def test_fraction_dose_times_fractions_equals_plan_dose(
    tmp_path: Path, ramp_dose: np.ndarray, grid: Grid, study: StudyInfo
) -> None:
    plan = write_rtdose(tmp_path / "plan.dcm", ramp_dose, grid, study=study)
    per_fx = write_rtdose(
        tmp_path / "fx.dcm",
        ramp_dose / 5,
        grid,
        study=study,
        summation_type="FRACTION",
        referenced_plan_uid="1.2",
    )
    total = read_rtdose(per_fx, fractions=5)
    assert total.summation_type == "FRACTION" and total.fractions_applied == 5 and not total.per_fraction
    np.testing.assert_allclose(total.dose_gy, read_rtdose(plan).dose_gy, atol=1e-6)
    kept = read_rtdose(per_fx)
    assert kept.per_fraction and kept.fractions_applied is None
    assert any("per fraction" in w for w in kept.warnings)
    np.testing.assert_allclose(kept.dose_gy, ramp_dose / 5, atol=1e-6)
    with pytest.raises(InputError, match="fractions"):
        read_rtdose(per_fx, fractions=0)


def test_two_beam_doses_sum_to_the_plan_dose(
    tmp_path: Path, ramp_dose: np.ndarray, grid: Grid, study: StudyInfo
) -> None:
    beam1 = 0.4 * ramp_dose
    x, _, _ = voxel_coords()
    beam2 = 2.0 + 0.1 * (x - ORIGIN[0])  # a different shape, so that the sum is not a rescale
    p1 = write_rtdose(tmp_path / "b1.dcm", beam1, grid, study=study, summation_type="BEAM",
                      referenced_plan_uid="1.9", referenced_beam_number=1)  # fmt: skip
    p2 = write_rtdose(tmp_path / "b2.dcm", beam2, grid, study=study, summation_type="BEAM",
                      referenced_plan_uid="1.9", referenced_beam_number=2)  # fmt: skip
    d1, d2 = read_rtdose(p1), read_rtdose(p2)
    assert d1.summation_type == "BEAM" and d1.referenced_beam_numbers == (1,)
    total = sum_doses([d1, d2])
    np.testing.assert_allclose(total.dose_gy, beam1 + beam2, atol=1e-6)
    assert total.summation_type == "PLAN" and total.referenced_plan_uid == "1.9"
    assert total.grid == d1.grid and total.source_paths == (p1, p2)


def test_sum_refuses_double_counting_and_mismatches(
    tmp_path: Path, ramp_dose: np.ndarray, grid: Grid, study: StudyInfo
) -> None:
    def beam(name: str, number: int, plan: str = "1.9") -> DoseGrid:
        return read_rtdose(write_rtdose(tmp_path / name, ramp_dose, grid, study=study, summation_type="BEAM",
                                        referenced_plan_uid=plan, referenced_beam_number=number))  # fmt: skip

    b1 = beam("b1.dcm", 1)
    with pytest.raises(InputError, match="beam 1 is in both"):
        sum_doses([b1, beam("b1_again.dcm", 1)])
    with pytest.raises(InputError, match="twice"):
        sum_doses([b1, b1])
    with pytest.raises(InputError, match="different plans"):
        sum_doses([b1, beam("other.dcm", 2, plan="1.8")])
    shifted = Grid((0.0, 30.0, -40.0), SPACING, SIZE, frame_of_reference_uid=study.frame_of_reference_uid)
    moved = read_rtdose(write_rtdose(tmp_path / "moved.dcm", ramp_dose, shifted, study=study))
    with pytest.raises(GeometryError) as err:
        sum_doses([b1, moved])
    assert "b1.dcm" in str(err.value) and "moved.dcm" in str(err.value)
    other_study = StudyInfo()
    elsewhere = read_rtdose(write_rtdose(tmp_path / "for.dcm", ramp_dose, Grid(ORIGIN, SPACING, SIZE),
                                         study=other_study))  # fmt: skip
    with pytest.raises(FrameOfReferenceError, match="for.dcm"):
        sum_doses([b1, elsewhere])
    with pytest.raises(InputError):
        sum_doses([])


def test_sum_of_two_plans_is_multi_plan(
    tmp_path: Path, ramp_dose: np.ndarray, grid: Grid, study: StudyInfo
) -> None:
    a = read_rtdose(write_rtdose(tmp_path / "a.dcm", ramp_dose, grid, study=study, referenced_plan_uid="1.1"))
    b = read_rtdose(write_rtdose(tmp_path / "b.dcm", ramp_dose, grid, study=study, referenced_plan_uid="1.2"))
    total = sum_doses([a, b])
    assert total.summation_type == "MULTI_PLAN"
    np.testing.assert_allclose(total.dose_gy, 2 * ramp_dose, atol=1e-6)


# ------------------------------------------------------------------------------------------
# files without file meta, wrong objects
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("implicit", [True, False])
def test_file_without_file_meta_reads_the_same(tmp_path: Path, ramp_file: Path, implicit: bool) -> None:
    ds = pydicom.dcmread(str(ramp_file))
    body = Dataset()
    body.update(ds)  # the data set only: no preamble, no DICM prefix, no group 0002
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, body)
    raw = tmp_path / "nometa.dcm"
    raw.write_bytes(fp.getvalue())
    assert raw.read_bytes()[128:132] != b"DICM"
    with_meta, without = read_rtdose(ramp_file), read_rtdose(raw)
    assert without.grid == with_meta.grid
    np.testing.assert_array_equal(without.dose_gy, with_meta.dose_gy)


@pytest.mark.parametrize(
    ("name", "kind"), [("rtplan.dcm", "RTPLAN"), ("rtstruct.dcm", "RTSTRUCT"), ("CT_small.dcm", "CT")]
)
def test_wrong_object_type_is_named(name: str, kind: str) -> None:
    path = get_testdata_file(name)
    with pytest.raises(InputError, match=f"expected a DICOM RTDOSE object, found {kind}") as err:
        read_rtdose(path)
    assert name in str(err.value)


def test_missing_file_and_non_dicom(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_rtdose(tmp_path / "absent.dcm")
    junk = tmp_path / "junk.dcm"
    junk.write_text("not dicom")
    with pytest.raises(InputError):
        read_rtdose(junk)


# ------------------------------------------------------------------------------------------
# the sampler
# ------------------------------------------------------------------------------------------


def test_sample_is_exact_on_a_linear_ramp_and_nan_outside(ramp_file: Path) -> None:
    dose = read_rtdose(ramp_file)
    lo = np.asarray(ORIGIN)
    hi = lo + np.asarray(SPACING) * (np.asarray(SIZE) - 1)
    rng = np.random.default_rng(7)
    pts = lo + rng.random((500, 3)) * (hi - lo)
    np.testing.assert_allclose(dose.sample(pts), ramp(pts[:, 0], pts[:, 1], pts[:, 2]), atol=1e-6)
    corners = np.array([lo, hi, [lo[0], hi[1], lo[2]], [hi[0], lo[1], hi[2]]])  # on the boundary: inside
    np.testing.assert_allclose(dose.sample(corners), ramp(*corners.T), atol=1e-6)
    centre = (lo + hi) / 2
    outside = []
    for axis in range(3):
        for end, step in ((lo, -0.01), (hi, 0.01)):
            p = centre.copy()
            p[axis] = end[axis] + step
            outside.append(p)
    outside.append([np.nan, centre[1], centre[2]])
    assert np.all(np.isnan(dose.sample(np.array(outside))))
    assert dose.sample(np.array(outside), fill_value=0.0).tolist() == [0.0] * 7


def test_sample_keeps_the_leading_shape(ramp_file: Path) -> None:
    dose = read_rtdose(ramp_file)
    x, y, z = voxel_coords()
    pts = np.stack([x, y, z], axis=-1)  # (4, 5, 7, 3): every voxel centre
    values = dose.sample(pts)
    assert values.shape == (4, 5, 7)
    np.testing.assert_allclose(values, dose.dose_gy, atol=1e-12)
    with pytest.raises(ValueError):
        dose.sample(np.zeros((4, 2)))


def test_from_array_dose_samples_like_a_file(grid: Grid, ramp_dose: np.ndarray) -> None:
    dose = DoseGrid.from_array(ramp_dose, grid)
    assert dose.path is None and dose.study.frame_of_reference_uid == grid.frame_of_reference_uid
    p = np.array([[-7.3, 33.1, -35.2]])
    np.testing.assert_allclose(dose.sample(p), ramp(*p.T), atol=1e-12)


# ------------------------------------------------------------------------------------------
# pydicom's test files (rtdose.dcm: RELATIVE, BEAM, 15 frames of 10 x 10)
# ------------------------------------------------------------------------------------------


def header(name: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def test_pydicom_rtdose_geometry_and_values() -> None:
    path = get_testdata_file("rtdose.dcm")
    ds = header("rtdose.dcm")
    # the header, read by hand
    assert [float(v) for v in ds.ImagePositionPatient] == [189.43125, 199.43125, -761.87]
    assert [float(v) for v in ds.PixelSpacing] == [10.0, 10.0]
    assert [float(v) for v in ds.GridFrameOffsetVector] == [5.0 * k for k in range(15)]
    assert (ds.DoseUnits, ds.DoseSummationType, float(ds.DoseGridScaling)) == ("RELATIVE", "BEAM", 1e-6)
    with pytest.raises(InputError, match="RELATIVE"):
        read_rtdose(path)
    dose = read_rtdose(path, rx_gy=50.0)
    assert dose.grid.origin_mm == pytest.approx((189.43125, 199.43125, -761.87), abs=1e-9)
    assert dose.grid.spacing_mm == pytest.approx((10.0, 10.0, 5.0), abs=1e-9)
    assert dose.grid.size == (10, 10, 15)
    assert dose.grid.frame_of_reference_uid == ds.FrameOfReferenceUID
    np.testing.assert_allclose(dose.grid.axis_coords_mm(2), -761.87 + 5.0 * np.arange(15))
    assert dose.summation_type == "BEAM" and dose.referenced_beam_numbers == (1,)
    assert dose.referenced_plan_uid == ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID
    np.testing.assert_allclose(dose.dose_gy, ds.pixel_array * 1e-6 * 50.0, rtol=1e-14)
    assert dose.max_gy == pytest.approx(int(ds.pixel_array.max()) * 1e-6 * 50.0)
    # a voxel centre, located from the header: frame 3 (z = -746.87), row 2 (y), column 4 (x)
    p = np.array([[189.43125 + 40.0, 199.43125 + 20.0, -761.87 + 15.0]])
    assert dose.sample(p)[0] == pytest.approx(int(ds.pixel_array[3, 2, 4]) * 1e-6 * 50.0)


@pytest.mark.parametrize("name", ["rtdose_rle.dcm", "rtdose_expb.dcm"])
def test_pydicom_rle_and_big_endian_variants_read_the_same(name: str) -> None:
    reference = read_rtdose(get_testdata_file("rtdose.dcm"), rx_gy=50.0)
    dose = read_rtdose(get_testdata_file(name), rx_gy=50.0)
    assert dose.grid == reference.grid
    np.testing.assert_array_equal(dose.dose_gy, reference.dose_gy)


@pytest.mark.parametrize("name", ["rtdose_1frame.dcm", "rtdose_rle_1frame.dcm"])
def test_pydicom_single_frame_variants(name: str) -> None:
    ds = header(name)
    assert "NumberOfFrames" not in ds and len(ds.GridFrameOffsetVector) == 15  # offsets of the 15-frame file
    dose = read_rtdose(get_testdata_file(name), rx_gy=50.0)
    assert dose.grid.size == (10, 10, 1)
    assert dose.grid.origin_mm == pytest.approx((189.43125, 199.43125, -761.87), abs=1e-9)
    np.testing.assert_allclose(dose.dose_gy[0], ds.pixel_array * 1e-6 * 50.0, rtol=1e-14)
    full = header("rtdose.dcm").pixel_array
    np.testing.assert_array_equal(ds.pixel_array, full[0])  # it is the first frame of rtdose.dcm
    assert any("GridFrameOffsetVector" in w for w in dose.warnings)


# ------------------------------------------------------------------------------------------
# an independent reader: plastimatch
# ------------------------------------------------------------------------------------------


@pytest.mark.plastimatch
@requires_plastimatch
def test_plastimatch_reads_the_written_dose(
    tmp_path: Path, ramp_dose: np.ndarray, grid: Grid, study: StudyInfo
) -> None:
    sitk = pytest.importorskip("SimpleITK")
    dose = ramp_dose.copy()
    dose[2, 3, 4] = 61.25  # an SBRT-like maximum, far into the uint32 range
    path = write_rtdose(tmp_path / "RD.dcm", dose, grid, study=study)
    out = tmp_path / "dose.nrrd"
    run = subprocess.run(
        [PLASTIMATCH, "convert", "--input", str(path), "--output-dose-img", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    image = sitk.ReadImage(str(out))
    assert image.GetOrigin() == pytest.approx(ORIGIN)
    assert image.GetSpacing() == pytest.approx(SPACING)
    assert image.GetSize() == SIZE
    values = sitk.GetArrayFromImage(image)
    assert float(values.max()) == pytest.approx(61.25, rel=1e-6)
    np.testing.assert_allclose(values, dose, rtol=1e-6)
