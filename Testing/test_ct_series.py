"""CT series: reading (sort, rescale, geometry checks, explicit resampling) and writing."""

from __future__ import annotations

import logging
import math
import random
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from ct_factory import axial_positions, ramp_hu, uid, write_rtstruct, write_slices
from independent_readers import PLASTIMATCH, requires_plastimatch

from sbrtstandards.dicom.common import CT_IMAGE_STORAGE, StudyInfo
from sbrtstandards.dicom.ct import read_ct_series, write_ct_series
from sbrtstandards.dicom.scan import scan_dicom
from sbrtstandards.errors import FrameOfReferenceError, GeometryError, InputError
from sbrtstandards.grid import Grid


def _ramp_volume(grid: Grid) -> np.ndarray:
    """Integer ramp in which every voxel has a different value: i + 40 j + 1000 k - 1000."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    return (i + 40 * j + 1000 * k - 1000).astype(np.int16)


@pytest.fixture()
def study() -> StudyInfo:
    return StudyInfo(patient_name="Round^Trip", patient_id="RT-1")


@pytest.fixture()
def grid(study: StudyInfo) -> Grid:
    return Grid(
        origin_mm=(-10.5, -20.25, 5.0),
        spacing_mm=(0.9, 1.1, 2.5),
        size=(32, 24, 10),
        frame_of_reference_uid=study.frame_of_reference_uid,
    )


def _lps_of_voxels(image: sitk.Image) -> np.ndarray:
    """LPS centre of every voxel, shape (nk, nj, ni, 3), from the image's own geometry."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1).astype(float)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (ijk * np.asarray(image.GetSpacing())) @ direction.T


# ---------------------------------------------------------------------------------------
# writing


def test_write_read_round_trip_is_exact(tmp_path: Path, grid: Grid, study: StudyInfo) -> None:
    hu = _ramp_volume(grid)
    ref = write_ct_series(tmp_path / "CT", hu, grid, study=study, series_description="Round trip")
    ct = read_ct_series(tmp_path / "CT")
    assert ct.grid.same_geometry(grid, tol_mm=1e-6)
    assert ct.grid.frame_of_reference_uid == study.frame_of_reference_uid
    assert ct.image.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(ct.array_hu(), hu)
    assert ct.reference.series_instance_uid == ref.series_instance_uid
    assert ct.reference.sop_instance_uids == ref.sop_instance_uids
    assert ct.reference.slice_positions_mm == pytest.approx([5.0 + 2.5 * k for k in range(10)])
    assert ref.slice_positions_mm == pytest.approx(ct.reference.slice_positions_mm)
    assert [p.name for p in ct.files] == [f"CT_{k:04d}.dcm" for k in range(1, 11)]
    assert ct.description == "Round trip" and ct.resampled is None and ct.warnings == []
    assert ct.reference.study.patient_id == "RT-1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CT"]  # no temporary folder left


def test_written_files_carry_the_ct_image_iod(tmp_path: Path, grid: Grid, study: StudyInfo) -> None:
    hu = _ramp_volume(grid)
    ref = write_ct_series(
        tmp_path / "CT",
        hu,
        grid,
        study=study,
        series_description="CT 4D 20%",
        series_number=12,
        extra_tags={
            "ImageType": ["DERIVED", "SECONDARY", "AXIAL"],
            "TemporalPositionIndex": 3,
            "ImageComments": "Phase 20%",
        },
    )
    for k in range(grid.size[2]):
        ds = pydicom.dcmread(tmp_path / "CT" / f"CT_{k + 1:04d}.dcm")  # Part 10: no force needed
        assert ds.file_meta.MediaStorageSOPClassUID == CT_IMAGE_STORAGE
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == ref.sop_instance_uids[k]
        assert ds.SOPClassUID == CT_IMAGE_STORAGE and ds.Modality == "CT"
        assert (ds.PatientName, ds.PatientID) == ("Round^Trip", "RT-1")
        assert ds.StudyInstanceUID == study.study_instance_uid
        assert ds.FrameOfReferenceUID == study.frame_of_reference_uid
        assert ds.SeriesInstanceUID == ref.series_instance_uid and ds.SeriesNumber == 12
        assert ds.SeriesDescription == "CT 4D 20%"
        assert ds.InstanceNumber == k + 1
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert ds.TemporalPositionIndex == 3 and ds.ImageComments == "Phase 20%"
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx([-10.5, -20.25, 5.0 + 2.5 * k])
        assert float(ds.SliceLocation) == pytest.approx(5.0 + 2.5 * k)
        assert float(ds.SliceThickness) == pytest.approx(2.5)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([1.1, 0.9])  # row spacing first
        assert (ds.Rows, ds.Columns) == (24, 32)
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 1)
        assert ds.SamplesPerPixel == 1 and ds.PhotometricInterpretation == "MONOCHROME2"
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
        assert "KVP" in ds and "Manufacturer" in ds and "PatientPosition" in ds
        assert float(ds.WindowCenter[0]) == -600 and float(ds.WindowWidth[0]) == 1600
        np.testing.assert_array_equal(ds.pixel_array, hu[k])


def test_float_values_are_rounded_to_whole_hu(tmp_path: Path, grid: Grid, study: StudyInfo) -> None:
    hu = _ramp_volume(grid).astype(np.float64) + 0.4
    hu[0, 0, 0] = -999.6
    write_ct_series(tmp_path / "CT", hu, grid, study=study, series_description="float")
    out = read_ct_series(tmp_path / "CT").array_hu()
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, np.rint(hu))
    assert out[0, 0, 0] == -1000


def test_values_beyond_int16_are_stored_with_an_intercept(
    tmp_path: Path, grid: Grid, study: StudyInfo
) -> None:
    hu = _ramp_volume(grid).astype(np.int32) * 4  # -4000 .. 40000+: more than int16 holds
    assert hu.max() > 32767
    write_ct_series(tmp_path / "CT", hu, grid, study=study, series_description="wide")
    ds = pydicom.dcmread(tmp_path / "CT" / "CT_0001.dcm")
    assert float(ds.RescaleIntercept) != 0 and float(ds.RescaleSlope) == 1
    np.testing.assert_array_equal(read_ct_series(tmp_path / "CT").array_hu(), hu)
    with pytest.raises(ValueError, match="more than 16 bits"):
        write_ct_series(tmp_path / "X", hu * 3, grid, study=study, series_description="too wide")


def test_write_refuses_bad_requests(tmp_path: Path, grid: Grid, study: StudyInfo) -> None:
    hu = _ramp_volume(grid)
    tilted = Grid(grid.origin_mm, grid.spacing_mm, grid.size, direction=(1, 0, 0, 0, 0.8, 0.6, 0, -0.6, 0.8))
    with pytest.raises(GeometryError, match="axial"):
        write_ct_series(tmp_path / "a", hu, tilted, study=study, series_description="x")
    with pytest.raises(ValueError, match="does not match the grid shape"):
        write_ct_series(tmp_path / "b", hu[1:], grid, study=study, series_description="x")
    with pytest.raises(FrameOfReferenceError, match="Frame of Reference"):
        write_ct_series(tmp_path / "c", hu, grid, study=StudyInfo(), series_description="x")
    with pytest.raises(ValueError, match="ImagePositionPatient is set by write_ct_series"):
        write_ct_series(
            tmp_path / "d",
            hu,
            grid,
            study=study,
            series_description="x",
            extra_tags={"ImagePositionPatient": [0, 0, 0]},
        )
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        write_ct_series(
            tmp_path / "e", hu, grid, study=study, series_description="x", extra_tags={"Phase": 1}
        )
    with pytest.raises(ValueError, match="NaN"):
        write_ct_series(
            tmp_path / "f", np.full(grid.shape, np.nan), grid, study=study, series_description="x"
        )
    assert list(tmp_path.iterdir()) == []  # nothing written by a refused call


def test_writing_again_replaces_the_whole_folder(tmp_path: Path, grid: Grid, study: StudyInfo) -> None:
    write_ct_series(tmp_path / "CT", _ramp_volume(grid), grid, study=study, series_description="first")
    small = Grid(
        grid.origin_mm, grid.spacing_mm, (32, 24, 3), frame_of_reference_uid=grid.frame_of_reference_uid
    )
    write_ct_series(
        tmp_path / "CT", np.zeros(small.shape, np.int16), small, study=study, series_description="2nd"
    )
    assert sorted(p.name for p in (tmp_path / "CT").iterdir()) == [
        "CT_0001.dcm",
        "CT_0002.dcm",
        "CT_0003.dcm",
    ]
    assert read_ct_series(tmp_path / "CT").description == "2nd"


@pytest.mark.plastimatch
@requires_plastimatch
def test_plastimatch_converts_a_written_series(tmp_path: Path, grid: Grid, study: StudyInfo) -> None:
    hu = _ramp_volume(grid)
    write_ct_series(tmp_path / "CT", hu, grid, study=study, series_description="for plastimatch")
    out = tmp_path / "out.nrrd"
    run = subprocess.run(
        [str(PLASTIMATCH), "convert", "--input", str(tmp_path / "CT"), "--output-img", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    image = sitk.ReadImage(str(out))
    assert image.GetOrigin() == pytest.approx(grid.origin_mm, abs=1e-4)
    assert image.GetSpacing() == pytest.approx(grid.spacing_mm, abs=1e-4)
    assert image.GetDirection() == pytest.approx(grid.direction, abs=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).astype(np.int32), hu)


# ---------------------------------------------------------------------------------------
# reading hand-made series


def _check_ramp(image: sitk.Image, tol_hu: float = 0.5) -> None:
    values = sitk.GetArrayFromImage(image).astype(float)
    expected = ramp_hu(_lps_of_voxels(image))
    assert np.abs(values - expected).max() <= tol_hu


def test_slices_are_sorted_by_position_not_by_name_or_instance_number(tmp_path: Path) -> None:
    positions = axial_positions(8)
    shuffled = positions[:]
    random.Random(4).shuffle(shuffled)
    names = [f"IMG{n:04d}" for n in range(8)]  # name order = the shuffled order, not the position order
    write_slices(tmp_path / "ct", shuffled, names=names, instance_numbers=list(range(8, 0, -1)))
    ct = read_ct_series(tmp_path / "ct")
    assert ct.image.GetOrigin() == pytest.approx((-10.0, 5.0, -20.0))
    assert ct.image.GetSpacing() == pytest.approx((1.25, 1.5, 2.5))
    assert ct.reference.slice_positions_mm == pytest.approx([-20.0 + 2.5 * k for k in range(8)])
    assert [float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in ct.files] == pytest.approx(
        [-20.0 + 2.5 * k for k in range(8)]
    )
    _check_ramp(ct.image)


def test_geometry_and_values_match_simpleitk_series_reader(tmp_path: Path) -> None:
    positions = axial_positions(6, x0=-30.0, y0=-12.0, z0=40.0, dz=3.0)
    random.Random(1).shuffle(positions)
    write_slices(
        tmp_path / "ct", positions, intercept=-1024, unsigned=True, shape=(20, 14), pixel_spacing=(0.8, 1.3)
    )
    ours = read_ct_series(tmp_path / "ct").image
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    theirs = reader.Execute()
    assert ours.GetSize() == theirs.GetSize()
    assert ours.GetOrigin() == pytest.approx(theirs.GetOrigin(), abs=1e-6)
    assert ours.GetSpacing() == pytest.approx(theirs.GetSpacing(), abs=1e-6)
    assert ours.GetDirection() == pytest.approx(theirs.GetDirection(), abs=1e-9)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(ours).astype(float), sitk.GetArrayFromImage(theirs).astype(float)
    )


def test_rescale_to_hu_with_an_unsigned_store(tmp_path: Path) -> None:
    write_slices(tmp_path / "ct", axial_positions(3, x0=40.0), intercept=-1024, unsigned=True)
    stored = pydicom.dcmread(sorted((tmp_path / "ct").iterdir())[0]).pixel_array
    assert stored.dtype == np.uint16 and stored.min() > 0  # the file holds raw values, not HU
    ct = read_ct_series(tmp_path / "ct")
    assert ct.image.GetPixelID() == sitk.sitkInt16
    _check_ramp(ct.image)


def test_non_integral_rescale_gives_float_hu(tmp_path: Path) -> None:
    write_slices(tmp_path / "ct", axial_positions(3), slope=0.5, intercept=-1024.25)
    ct = read_ct_series(tmp_path / "ct")
    assert ct.image.GetPixelID() == sitk.sitkFloat32
    _check_ramp(ct.image, tol_hu=0.25)  # stored in steps of 0.5 HU
    values = ct.array_hu()
    assert np.any(np.abs(values - np.rint(values)) > 0.2)  # really not rounded to whole HU


def test_files_without_file_meta_are_read(tmp_path: Path) -> None:
    write_slices(tmp_path / "ct", axial_positions(4), file_meta=False, names=[f"{n}" for n in range(4)])
    _check_ramp(read_ct_series(tmp_path / "ct").image)


def test_file_list_source_and_scanned_records(tmp_path: Path) -> None:
    paths = write_slices(tmp_path / "ct", axial_positions(4))
    write_slices(tmp_path / "ct", axial_positions(3), series_description="other", names=["o1", "o2", "o3"])
    ct = read_ct_series(paths[::-1])
    assert sorted(ct.files) == sorted(paths)
    again = read_ct_series([r for r in scan_dicom(paths)])
    np.testing.assert_array_equal(again.array_hu(), ct.array_hu())


def test_missing_slice_is_refused_then_interpolated_on_request(tmp_path: Path, caplog) -> None:
    positions = axial_positions(10)
    del positions[5]  # z = -7.5 is missing
    write_slices(tmp_path / "gap", positions)
    with pytest.raises(
        GeometryError, match=r"gap.*missing slice\(s\): gap of 5.00 mm between positions -10.00 and -5.00"
    ):
        read_ct_series(tmp_path / "gap")
    with caplog.at_level(logging.WARNING, logger="sbrtstandards.dicom.ct"):
        ct = read_ct_series(tmp_path / "gap", allow_uneven=True)
    assert "linearly interpolated" in caplog.text
    assert ct.resampled and "10 slices 2.500 mm apart" in ct.resampled
    assert ct.image.GetSize() == (16, 12, 10)
    assert ct.image.GetSpacing()[2] == pytest.approx(2.5)
    assert ct.image.GetOrigin() == pytest.approx((-10.0, 5.0, -20.0))
    _check_ramp(ct.image, tol_hu=0.51)  # the ramp is linear: interpolation reproduces it
    assert len(ct.reference.sop_instance_uids) == 9  # the stored slices, for RT objects to reference


def test_uneven_spacing_is_refused_then_resampled(tmp_path: Path) -> None:
    positions = [(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 6.4, 8.0, 10.0, 12.0)]
    write_slices(tmp_path / "uneven", positions)
    with pytest.raises(GeometryError, match=r"uneven.*median slice spacing 2.000 mm.*uneven gap of 2.400 mm"):
        read_ct_series(tmp_path / "uneven")
    ct = read_ct_series(tmp_path / "uneven", allow_uneven=True)
    assert ct.image.GetSize()[2] == 7 and ct.image.GetSpacing()[2] == pytest.approx(2.0)
    _check_ramp(ct.image, tol_hu=0.51)


def test_spacing_within_tolerance_is_accepted(tmp_path: Path) -> None:
    # 2.5 mm slices whose positions wobble by 0.02 mm (< 1% of 2.5 mm): one volume, mean spacing
    positions = [(0.0, 0.0, 2.5 * k + (0.02 if k == 3 else 0.0)) for k in range(6)]
    write_slices(tmp_path / "ok", positions)
    ct = read_ct_series(tmp_path / "ok")
    assert ct.resampled is None and ct.image.GetSpacing()[2] == pytest.approx(2.5)


def test_rounding_noise_in_slice_origins_keeps_an_exact_axial_grid(tmp_path: Path) -> None:
    positions = [(-10.0 + (0.004 if k == 5 else 0.0), 5.0, 2.5 * k) for k in range(6)]
    write_slices(tmp_path / "noise", positions)
    ct = read_ct_series(tmp_path / "noise")
    assert ct.image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert ct.resampled is None


def test_slice_origins_off_a_line_or_without_pixel_spacing_are_refused(tmp_path: Path) -> None:
    positions = [(-10.0 + (3.0 if k == 2 else 0.0), 5.0, 2.5 * k) for k in range(5)]
    write_slices(tmp_path / "zigzag", positions)
    with pytest.raises(GeometryError, match="do not lie on a straight line"):
        read_ct_series(tmp_path / "zigzag", resample_non_axial=True)
    write_slices(tmp_path / "nospacing", axial_positions(3), per_slice=[{}, {"PixelSpacing": None}, {}])
    with pytest.raises(GeometryError, match="1 slice.*lack PixelSpacing.*slice_001"):
        read_ct_series(tmp_path / "nospacing")


def test_duplicate_positions_are_refused_even_when_uneven_is_allowed(tmp_path: Path) -> None:
    positions = axial_positions(5)
    write_slices(tmp_path / "dup", positions + [positions[2]])
    for allow in (False, True):
        with pytest.raises(GeometryError, match="1 duplicate slice position.*-15.00 mm.*4D-CT"):
            read_ct_series(tmp_path / "dup", allow_uneven=allow)


def _inverse_index(points: np.ndarray, origin, row, col, stack_step, spacing) -> np.ndarray:
    """Continuous (i, j, k) of LPS points in a stored stack: solve p = o + i*sc*r + j*sr*c + k*step."""
    matrix = np.column_stack(
        [np.asarray(row) * spacing[1], np.asarray(col) * spacing[0], np.asarray(stack_step)]
    )
    return np.linalg.solve(matrix, (points - np.asarray(origin)).reshape(-1, 3).T).T.reshape(points.shape)


def _check_resampled_ramp(ct, origin, row, col, step, shape, spacing) -> None:
    """Inside the stored stack the resampled values follow the ramp; outside they are air."""
    image = ct.image
    assert ct.grid.is_axial
    lps = _lps_of_voxels(image)
    ijk = _inverse_index(lps, origin, row, col, step, spacing)
    upper = np.array([shape[1] - 1, shape[0] - 1, shape[2] - 1])
    inside = np.all((ijk >= -1e-6) & (ijk <= upper + 1e-6), axis=-1)
    far_outside = np.any((ijk < -1.5) | (ijk > upper + 1.5), axis=-1)
    values = sitk.GetArrayFromImage(image).astype(float)
    assert inside.mean() > 0.2 and far_outside.any()
    error = np.abs(values[inside] - ramp_hu(lps[inside]))
    assert error.max() <= 1.01  # stored values rounded, interpolated values rounded again
    assert np.all(values[far_outside] == -1000)


def test_oblique_series_is_refused_then_resampled_onto_an_axial_grid(tmp_path: Path) -> None:
    rot = sitk.Euler3DTransform((0, 0, 0), math.radians(20), math.radians(-10), math.radians(25))
    matrix = np.asarray(rot.GetMatrix()).reshape(3, 3)
    row, col, normal = matrix[:, 0], matrix[:, 1], matrix[:, 2]
    origin = np.array([-12.0, -8.0, 30.0])
    n_slices, dz = 8, 2.0
    shape, spacing = (12, 16), (1.5, 1.25)
    write_slices(
        tmp_path / "oblique",
        [origin + k * dz * normal for k in range(n_slices)][::-1],
        orientation=tuple(row) + tuple(col),
        shape=shape,
        pixel_spacing=spacing,
    )
    with pytest.raises(GeometryError, match="oblique.*not axial|not axial.*oblique"):
        read_ct_series(tmp_path / "oblique")
    ct = read_ct_series(tmp_path / "oblique", resample_non_axial=True)
    assert ct.image.GetSpacing() == pytest.approx((1.25, 1.5, 2.0))
    assert ct.resampled and "oblique" in ct.resampled
    _check_resampled_ramp(ct, origin, row, col, dz * normal, (*shape, n_slices), spacing)
    # a known point: the centre of the stored volume, looked up by linear interpolation
    centre = origin + 7.5 * 1.25 * row + 5.5 * 1.5 * col + 3.5 * dz * normal
    value = _interpolate_at(ct.image, centre)
    assert value == pytest.approx(float(ramp_hu(centre)), abs=1.01)


def _interpolate_at(image: sitk.Image, point) -> float:
    """Trilinear value at an LPS point, independent of the code under test (numpy by hand)."""
    ijk = np.asarray(image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in point)))
    array = sitk.GetArrayFromImage(image).astype(float)
    base = np.floor(ijk).astype(int)
    frac = ijk - base
    total = 0.0
    for corner in np.ndindex(2, 2, 2):
        weight = np.prod([frac[a] if corner[a] else 1 - frac[a] for a in range(3)])
        i, j, k = base + np.array(corner)
        total += weight * array[k, j, i]
    return total


def test_gantry_tilt_is_refused_then_resampled(tmp_path: Path) -> None:
    tilt = math.radians(15)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, math.cos(tilt), -math.sin(tilt)])
    dz = 3.0
    origin = np.array([-9.0, -6.0, 10.0])
    # the table moves along z: slice origins step along z, not along the tilted normal (a sheared stack)
    positions = [origin + np.array([0.0, 0.0, k * dz]) for k in range(7)]
    shape, spacing = (12, 16), (1.5, 1.25)
    write_slices(
        tmp_path / "tilt", positions, orientation=tuple(row) + tuple(col), shape=shape, pixel_spacing=spacing
    )
    with pytest.raises(GeometryError, match="gantry tilt of 15.0 degrees"):
        read_ct_series(tmp_path / "tilt")
    ct = read_ct_series(tmp_path / "tilt", resample_non_axial=True)
    assert ct.image.GetSpacing()[2] == pytest.approx(
        dz * math.cos(tilt)
    )  # the slice spacing along the normal
    _check_resampled_ramp(ct, origin, row, col, np.array([0.0, 0.0, dz]), (*shape, 7), spacing)


def test_prone_flip_is_resampled_without_changing_values(tmp_path: Path) -> None:
    orientation = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    write_slices(tmp_path / "prone", axial_positions(5), orientation=orientation)
    with pytest.raises(GeometryError, match="prone or feet-first"):
        read_ct_series(tmp_path / "prone")
    ct = read_ct_series(tmp_path / "prone", resample_non_axial=True)
    assert ct.image.GetSize() == (16, 12, 5)
    # the axial grid's first voxel is the stored volume's opposite corner
    assert ct.image.GetOrigin() == pytest.approx((-10.0 - 15 * 1.25, 5.0 - 11 * 1.5, -20.0))
    _check_ramp(ct.image, tol_hu=0.5)  # grid points coincide with stored voxels: values unchanged


def test_two_frames_of_reference_in_one_series(tmp_path: Path) -> None:
    frames = [uid(), uid()]
    write_slices(tmp_path / "for", axial_positions(4), for_uid=[frames[0]] * 3 + [frames[1]])
    with pytest.raises(FrameOfReferenceError, match="mixes 2 Frames of Reference"):
        read_ct_series(tmp_path / "for")


def test_mixed_slice_sizes_spacings_and_orientations_are_refused(tmp_path: Path) -> None:
    series = uid()
    write_slices(tmp_path / "size", axial_positions(3), series_uid=series)
    write_slices(tmp_path / "size", [(-10.0, 5.0, -12.5)], series_uid=series, shape=(12, 18), names=["x.dcm"])
    with pytest.raises(GeometryError, match="different sizes.*12x16 vs x.dcm 12x18"):
        read_ct_series(tmp_path / "size")
    series = uid()
    write_slices(tmp_path / "spacing", axial_positions(3), series_uid=series)
    write_slices(
        tmp_path / "spacing",
        [(-10.0, 5.0, -12.5)],
        series_uid=series,
        pixel_spacing=(1.5, 1.3),
        names=["x.dcm"],
    )
    with pytest.raises(GeometryError, match="different pixel spacings"):
        read_ct_series(tmp_path / "spacing")
    series = uid()
    write_slices(tmp_path / "orient", axial_positions(3), series_uid=series)
    write_slices(
        tmp_path / "orient",
        [(-10.0, 5.0, -12.5)],
        series_uid=series,
        names=["x.dcm"],
        orientation=(1.0, 0.0, 0.0, 0.0, 0.995, 0.0998749),
    )
    with pytest.raises(GeometryError, match="different orientations"):
        read_ct_series(tmp_path / "orient")


def test_several_series_need_a_choice(tmp_path: Path) -> None:
    a = write_slices(
        tmp_path / "mixed",
        axial_positions(3),
        series_description="Lung 1mm",
        series_number=3,
        names=["a1", "a2", "a3"],
    )
    write_slices(
        tmp_path / "mixed",
        axial_positions(4),
        series_description="Abdomen",
        series_number=4,
        names=["b1", "b2", "b3", "b4"],
    )
    with pytest.raises(
        InputError, match=r"2 CT series in .*mixed.*series 3, 'Lung 1mm'.*3 images.*'Abdomen'"
    ):
        read_ct_series(tmp_path / "mixed")
    wanted = str(pydicom.dcmread(a[0]).SeriesInstanceUID)
    ct = read_ct_series(tmp_path / "mixed", series_uid=wanted)
    assert ct.image.GetSize()[2] == 3 and ct.description == "Lung 1mm"
    with pytest.raises(InputError, match="CT series 1.2.3 is not in"):
        read_ct_series(tmp_path / "mixed", series_uid="1.2.3")


def test_other_objects_are_ignored_but_a_ct_is_required(tmp_path: Path) -> None:
    study, frame = uid(), uid()
    write_rtstruct(tmp_path / "rs" / "RS.dcm", study_uid=study, for_uid=frame)
    with pytest.raises(InputError, match=r"no CT image series in .*rs \(found 1 RTSTRUCT\)"):
        read_ct_series(tmp_path / "rs")
    write_slices(tmp_path / "rs", axial_positions(3), study_uid=study, for_uid=frame)
    write_slices(
        tmp_path / "rs",
        axial_positions(3),
        names=["mr1", "mr2", "mr3"],
        extra={"Modality": "MR", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.4"},
    )
    write_slices(
        tmp_path / "rs",
        [(0.0, 0.0, 0.0)],
        names=["scout"],
        series_description="Topogram",
        orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
        extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
    )
    ct = read_ct_series(tmp_path / "rs")
    assert ct.image.GetSize()[2] == 3 and ct.grid.frame_of_reference_uid == frame


def test_no_dicom_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="no DICOM objects in .*notes"):
        read_ct_series(tmp_path / "notes")


def test_progress_is_reported_up_to_one(tmp_path: Path, grid: Grid, study: StudyInfo) -> None:
    seen: list[float] = []
    write_ct_series(
        tmp_path / "CT",
        _ramp_volume(grid),
        grid,
        study=study,
        series_description="p",
        progress=lambda f, m: seen.append(f),
    )
    assert seen[-1] == pytest.approx(1.0)
    seen.clear()
    read_ct_series(tmp_path / "CT", progress=lambda f, m: seen.append(f))
    assert seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
