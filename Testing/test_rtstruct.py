"""RT Structure Set read/write: pydicom's test file, edge cases, round trips, plastimatch."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from independent_readers import PLASTIMATCH
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from sbrtstandards import tg263
from sbrtstandards.contours import roi_mask
from sbrtstandards.dicom.common import (
    CT_IMAGE_STORAGE,
    SeriesReference,
    StudyInfo,
    new_dataset,
    new_uid,
    save_dataset,
)
from sbrtstandards.dicom.rtstruct import (
    Contour,
    Roi,
    StructureSet,
    format_ds,
    read_rtstruct,
    write_rtstruct,
)
from sbrtstandards.errors import FrameOfReferenceError, InputError
from sbrtstandards.grid import Grid

# ----------------------------------------------------------------------------- fixtures


def write_ct(folder: Path, grid: Grid, study: StudyInfo) -> SeriesReference:
    """A minimal axial CT series written with pydicom (independent of dicom/ct.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = new_uid()
    uids, positions = [], []
    for k in range(grid.size[2]):
        ds = new_dataset(CT_IMAGE_STORAGE)
        study.apply(ds)
        z = grid.origin_mm[2] + k * grid.spacing_mm[2]
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [grid.origin_mm[0], grid.origin_mm[1], z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [grid.spacing_mm[1], grid.spacing_mm[0]]
        ds.SliceThickness = grid.spacing_mm[2]
        ds.Rows, ds.Columns = grid.size[1], grid.size[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.full((grid.size[1], grid.size[0]), 1024, np.int16).tobytes()
        save_dataset(ds, folder / f"CT{k:03d}.dcm")
        uids.append(str(ds.SOPInstanceUID))
        positions.append(z)
    return SeriesReference(study, series_uid, CT_IMAGE_STORAGE, tuple(uids), tuple(positions))


@pytest.fixture
def ct(tmp_path: Path) -> tuple[Grid, SeriesReference, Path]:
    study = StudyInfo(patient_name="Test^RTSTRUCT", patient_id="RS-1")
    grid = Grid(
        (-31.0, -31.0, -10.0),
        (2.0, 2.0, 2.5),
        (32, 32, 8),
        frame_of_reference_uid=study.frame_of_reference_uid,
    )
    folder = tmp_path / "CT"
    return grid, write_ct(folder, grid, study), folder


def disc_masks(grid: Grid) -> dict[str, np.ndarray]:
    jj, ii = np.mgrid[0 : grid.size[1], 0 : grid.size[0]]
    r2 = (ii - 15.5) ** 2 + (jj - 15.5) ** 2
    ptv = np.zeros(grid.shape, dtype=bool)
    ptv[2:6] = r2 < 8.0**2
    ring = np.zeros(grid.shape, dtype=bool)
    ring[1:7] = (r2 < 12.0**2) & (r2 >= 6.0**2)
    islands = np.zeros(grid.shape, dtype=bool)
    islands[3, 2:6, 2:6] = True
    islands[3, 25:30, 20:28] = True
    return {"PTV": ptv, "Ring_PTV_20mm": ring, "肿瘤靶区": islands}


def edited_testfile(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    ds = pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True)
    edit(ds)
    out = tmp_path / "edited.dcm"
    ds.save_as(str(out))
    return out


# ----------------------------------------------------------------------------- reading


def test_pydicom_testfile_without_file_meta() -> None:
    path = get_testdata_file("rtstruct.dcm")
    raw = pydicom.dcmread(path, force=True)
    assert len(getattr(raw, "file_meta", None) or []) == 0  # the point of this test file
    ss = read_rtstruct(path)
    assert ss.names == ["patient", "Isocenter 1", "Isocenter 2"]
    assert [r.number for r in ss.rois] == [1, 2, 3]
    assert [r.color_rgb for r in ss.rois] == [(220, 160, 120), (255, 64, 255), (255, 64, 255)]
    assert [r.interpreted_type for r in ss.rois] == ["EXTERNAL", "ISOCENTER", "ISOCENTER"]
    assert [len(r.contours) for r in ss.rois] == [3, 1, 1]
    assert ss.label == "sep30"
    assert ss.study.frame_of_reference_uid == "1.2.826.0.1.3680043.8.498.2010020400001.2"
    assert ss.referenced_series_uid == "1.2.826.0.1.3680043.8.498.2010020400001.2.1.1"
    assert ss.study.patient_id == "tPhantom30sep"
    body = ss.roi("patient")
    np.testing.assert_array_equal(
        body.contours[0].points_mm,
        [[-200, 150, -200], [-200, -150, -200], [200, -150, -200], [200, 150, -200], [-200, 150, -200]],
    )
    assert list(body.planes()) == [-200.0, -190.0, -180.0]
    iso = ss.roi("Isocenter 1")
    assert iso.is_point and not iso.is_empty
    assert iso.contours[0].geometric_type == "POINT"
    np.testing.assert_array_equal(iso.contours[0].points_mm, [[0.0, 0.0, 0.0]])
    assert iso.planes() == {}
    assert ss.empty_rois == [] and ss.warnings == []


def test_roi_lookup_exact_then_loose_and_errors_list_names() -> None:
    path = get_testdata_file("rtstruct.dcm")
    ss = read_rtstruct(path)
    assert ss.roi("Isocenter 2").number == 3
    assert ss.roi("isocenter_2").number == 3  # case, space and underscore do not count
    assert ss.roi("PATIENT").number == 1
    with pytest.raises(InputError) as err:
        ss.roi("PTV")
    assert str(err.value) == f"{path}: no structure 'PTV'; structures: patient, Isocenter 1, Isocenter 2"


def test_duplicate_names_fail_only_when_that_name_is_used(tmp_path: Path) -> None:
    def rename(ds: Dataset) -> None:
        ds.StructureSetROISequence[2].ROIName = "Isocenter 1"

    path = edited_testfile(tmp_path, rename)
    ss = read_rtstruct(path)
    assert ss.names == ["patient", "Isocenter 1", "Isocenter 1"]
    assert ss.roi("patient").number == 1
    with pytest.raises(InputError, match=r"edited\.dcm: structure name 'Isocenter 1' is used by 2 ROIs"):
        ss.roi("Isocenter 1")


def test_roi_without_contour_sequence_is_kept_and_reported(tmp_path: Path) -> None:
    def empty(ds: Dataset) -> None:
        del ds.ROIContourSequence[0].ContourSequence

    ss = read_rtstruct(edited_testfile(tmp_path, empty))
    patient = ss.roi("patient")
    assert patient.is_empty and patient.contours == [] and not patient.is_point
    assert patient.color_rgb == (220, 160, 120) and patient.interpreted_type == "EXTERNAL"
    assert ss.empty_rois == ["patient"]
    assert any("'patient' has no contour data" in w for w in ss.warnings)


def test_contours_for_an_undefined_roi_number_are_kept_with_a_warning(tmp_path: Path) -> None:
    def orphan(ds: Dataset) -> None:
        ds.ROIContourSequence[2].ReferencedROINumber = 9

    ss = read_rtstruct(edited_testfile(tmp_path, orphan))
    assert ss.names == ["patient", "Isocenter 1", "Isocenter 2", "(unnamed ROI 9)"]
    assert ss.roi("Isocenter 2").is_empty
    assert ss.roi("(unnamed ROI 9)").is_point
    assert any("ROI number 9" in w for w in ss.warnings)


def test_rois_in_two_frames_of_reference_are_refused(tmp_path: Path) -> None:
    def second_frame(ds: Dataset) -> None:
        ds.StructureSetROISequence[1].ReferencedFrameOfReferenceUID = "1.2.3.4"

    with pytest.raises(
        FrameOfReferenceError, match=r"2 different Frames of Reference.*1\.2\.3\.4: Isocenter 1"
    ):
        read_rtstruct(edited_testfile(tmp_path, second_frame))


def test_the_frame_the_rois_use_is_kept_among_several(tmp_path: Path) -> None:
    def two_frames(ds: Dataset) -> None:
        other = Dataset()
        other.FrameOfReferenceUID = "1.2.3.4"
        ds.ReferencedFrameOfReferenceSequence.insert(0, other)  # listed first, used by no ROI

    ss = read_rtstruct(edited_testfile(tmp_path, two_frames))
    assert ss.study.frame_of_reference_uid == "1.2.826.0.1.3680043.8.498.2010020400001.2"
    assert ss.referenced_series_uid == "1.2.826.0.1.3680043.8.498.2010020400001.2.1.1"

    def undeclared(ds: Dataset) -> None:
        for item in ds.StructureSetROISequence:
            item.ReferencedFrameOfReferenceUID = "1.2.3.4"

    with pytest.raises(FrameOfReferenceError, match="does not reference"):
        read_rtstruct(edited_testfile(tmp_path, undeclared))


def test_bad_files(tmp_path: Path, ct: tuple[Grid, SeriesReference, Path]) -> None:
    with pytest.raises(InputError, match="expected a DICOM RTSTRUCT"):
        read_rtstruct(next(ct[2].glob("*.dcm")))
    with pytest.raises(InputError, match="no such file"):
        read_rtstruct(tmp_path / "missing.dcm")

    def bad_data(ds: Dataset) -> None:
        ds.ROIContourSequence[0].ContourSequence[0].ContourData = [1.0, 2.0, 3.0, 4.0]

    with pytest.raises(InputError, match=r"ROI number 1, contour 1: Contour Data has 4 values"):
        read_rtstruct(edited_testfile(tmp_path, bad_data))


# ----------------------------------------------------------------------------- writing


def test_written_file_is_a_complete_rt_structure_set(
    tmp_path: Path, ct: tuple[Grid, SeriesReference, Path]
) -> None:
    grid, ref, ct_dir = ct
    rois = [Roi.from_mask(name, m, grid) for name, m in disc_masks(grid).items()]
    rois.append(Roi(0, "Iso", None, "ISOCENTER", [Contour(np.array([[1.0, -2.0, 0.0]]), "POINT")]))
    rois.append(Roi(0, "Empty", (1, 2, 3), "", []))
    out = write_rtstruct(tmp_path / "RS.dcm", rois, reference=ref, label="SBRT test", description="unit test")
    ds = pydicom.dcmread(out)  # strict read: with file meta

    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    for keyword in (
        # Patient, General Study, RT Series, General Equipment, Structure Set, ROI Contour,
        # RT ROI Observations, SOP Common: Type 1 and Type 2 attributes.
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
        "Modality", "SeriesInstanceUID", "SeriesNumber", "OperatorsName",
        "Manufacturer",
        "StructureSetLabel", "StructureSetDate", "StructureSetTime", "StructureSetROISequence",
        "ROIContourSequence", "RTROIObservationsSequence",
        "SOPClassUID", "SOPInstanceUID", "SpecificCharacterSet",
    ):  # fmt: skip
        assert keyword in ds, keyword
    assert ds.Modality == "RTSTRUCT"
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.SeriesInstanceUID not in (ref.series_instance_uid, "")
    assert ds.StudyInstanceUID == ref.study.study_instance_uid
    assert ds.PatientID == "RS-1"
    assert ds.StructureSetLabel == "SBRT test"
    assert "FrameOfReferenceUID" not in ds

    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == grid.frame_of_reference_uid
    (study,) = frame.RTReferencedStudySequence
    assert study.ReferencedSOPInstanceUID == ref.study.study_instance_uid
    (series,) = study.RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == ref.series_instance_uid
    listed = [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in series.ContourImageSequence]
    assert listed == [(CT_IMAGE_STORAGE, uid) for uid in ref.sop_instance_uids]

    names = [i.ROIName for i in ds.StructureSetROISequence]
    assert names == ["PTV", "Ring_PTV_20mm", "肿瘤靶区", "Iso", "Empty"]
    numbers = [int(i.ROINumber) for i in ds.StructureSetROISequence]
    assert numbers == [1, 2, 3, 4, 5]
    assert all(
        i.ReferencedFrameOfReferenceUID == grid.frame_of_reference_uid for i in ds.StructureSetROISequence
    )
    assert [int(i.ReferencedROINumber) for i in ds.ROIContourSequence] == numbers
    assert [int(i.ReferencedROINumber) for i in ds.RTROIObservationsSequence] == numbers
    types = [i.RTROIInterpretedType for i in ds.RTROIObservationsSequence]
    assert types == ["PTV", "CONTROL", "ORGAN", "ISOCENTER", "ORGAN"]  # defaults from tg263
    assert all(i.ROIInterpreter == "" for i in ds.RTROIObservationsSequence)
    assert list(ds.ROIContourSequence[0].ROIDisplayColor) == list(tg263.color_for("PTV"))
    assert list(ds.ROIContourSequence[4].ROIDisplayColor) == [1, 2, 3]
    assert "ContourSequence" not in ds.ROIContourSequence[4]  # empty ROI: no contours

    uid_at_z = {}
    for f in ct_dir.glob("*.dcm"):
        image = pydicom.dcmread(f, stop_before_pixels=True)
        uid_at_z[round(float(image.ImagePositionPatient[2]), 3)] = image.SOPInstanceUID
    for item in ds.ROIContourSequence[:4]:
        for contour in item.ContourSequence:
            raw = contour.get_item(0x30060050).value  # ContourData as written
            tokens = raw.decode("ascii").strip().split("\\")
            assert all(len(t) <= 16 for t in tokens)
            data = np.array(tokens, dtype=float).reshape(-1, 3)
            assert int(contour.NumberOfContourPoints) == len(data)
            (image,) = contour.ContourImageSequence
            assert image.ReferencedSOPClassUID == CT_IMAGE_STORAGE
            assert image.ReferencedSOPInstanceUID == uid_at_z[round(float(data[0, 2]), 3)]


def test_round_trip_points_masks_and_chinese_names(
    tmp_path: Path, ct: tuple[Grid, SeriesReference, Path]
) -> None:
    grid, ref, _ = ct
    masks = disc_masks(grid)
    rois = [Roi.from_mask(name, m, grid) for name, m in masks.items()]
    out = write_rtstruct(tmp_path / "RS.dcm", rois, reference=ref)
    raw = out.read_bytes()
    assert "肿瘤靶区".encode() in raw  # UTF-8 on disk
    assert pydicom.dcmread(out).StructureSetROISequence[2].ROIName == "肿瘤靶区"

    ss = read_rtstruct(out)
    assert ss.names == list(masks)
    assert ss.study.frame_of_reference_uid == grid.frame_of_reference_uid
    assert ss.referenced_series_uid == ref.series_instance_uid
    for written, read in zip(rois, ss.rois):
        assert len(read.contours) == len(written.contours)
        for a, b in zip(written.contours, read.contours):
            np.testing.assert_allclose(b.points_mm, a.points_mm, atol=1e-3)
            assert b.geometric_type == "CLOSED_PLANAR"
        assert read.color_rgb == tg263.color_for(written.name)
        np.testing.assert_array_equal(roi_mask(read, grid), masks[read.name])


def test_format_ds_keeps_16_characters() -> None:
    assert format_ds(12.5) == "12.5"
    assert format_ds(-0.00001) == "0"
    assert format_ds(-250.0) == "-250"
    assert format_ds(1.23456789) == "1.2346"
    assert format_ds(-123456789012.25) == "-123456789012.25"  # 16 characters fit
    assert format_ds(-1234567890123.25) == "-1.234567890e+12"
    assert all(len(format_ds(v)) <= 16 for v in (1e15, -1e15, 123456789.123456, -0.0))


def test_long_contour_data_switches_to_implicit_vr(
    tmp_path: Path, ct: tuple[Grid, SeriesReference, Path]
) -> None:
    _, ref, _ = ct
    t = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    pts = np.column_stack([-123.4567 + 100 * np.cos(t), -98.7654 + 100 * np.sin(t), np.full(4000, 0.0)])
    out = write_rtstruct(
        tmp_path / "RS.dcm", [Roi(1, "Body", None, "", [Contour(pts, "CLOSED_PLANAR")])], reference=ref
    )
    assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    np.testing.assert_allclose(read_rtstruct(out).roi("Body").contours[0].points_mm, pts, atol=1e-4)


def test_extending_an_existing_structure_set(tmp_path: Path, ct: tuple[Grid, SeriesReference, Path]) -> None:
    grid, ref, _ = ct
    masks = disc_masks(grid)
    rois = [Roi(7, "PTV", (9, 9, 9), "PTV", Roi.from_mask("PTV", masks["PTV"], grid).contours)]
    rois.append(Roi(3, "Empty", None, "", []))
    first = write_rtstruct(tmp_path / "RS1.dcm", rois, reference=ref)
    before = hashlib.sha256(first.read_bytes()).hexdigest()
    existing = read_rtstruct(first)
    assert [r.number for r in existing.rois] == [7, 3]  # positive unique numbers are kept

    gtv = Roi.from_mask("GTV", masks["PTV"] & (np.arange(32)[None, None, :] < 16), grid)
    second = write_rtstruct(tmp_path / "RS2.dcm", [gtv], reference=ref, existing=existing)
    assert hashlib.sha256(first.read_bytes()).hexdigest() == before  # input untouched
    extended = read_rtstruct(second)
    assert extended.sop_instance_uid != existing.sop_instance_uid
    assert extended.names == ["PTV", "Empty", "GTV"]
    assert [r.number for r in extended.rois] == [7, 3, 8]
    assert extended.roi("PTV").color_rgb == (9, 9, 9)
    assert extended.roi("Empty").is_empty
    assert extended.roi("GTV").interpreted_type == "GTV"
    np.testing.assert_array_equal(roi_mask(extended.roi("PTV"), grid), masks["PTV"])

    with pytest.raises(InputError, match="already has a structure 'PTV'.*'ptv'"):
        write_rtstruct(tmp_path / "RS3.dcm", [Roi(0, "ptv", None, "", [])], reference=ref, existing=existing)
    with pytest.raises(InputError, match="is the input structure set"):
        write_rtstruct(first, [Roi(0, "New", None, "", [])], reference=ref, existing=existing)
    other = SeriesReference(
        StudyInfo(), new_uid(), CT_IMAGE_STORAGE, ref.sop_instance_uids, ref.slice_positions_mm
    )
    with pytest.raises(FrameOfReferenceError):
        write_rtstruct(
            tmp_path / "RS4.dcm", [Roi(0, "New", None, "", [])], reference=other, existing=existing
        )
    assert not (tmp_path / "RS3.dcm").exists() and not (tmp_path / "RS4.dcm").exists()


def test_write_refuses_bad_rois(tmp_path: Path, ct: tuple[Grid, SeriesReference, Path]) -> None:
    grid, ref, _ = ct
    with pytest.raises(InputError, match="given twice"):
        write_rtstruct(
            tmp_path / "RS.dcm", [Roi(1, "A", None, "", []), Roi(2, "a", None, "", [])], reference=ref
        )
    with pytest.raises(InputError, match="64 characters"):
        write_rtstruct(tmp_path / "RS.dcm", [Roi(1, "x" * 65, None, "", [])], reference=ref)
    elsewhere = Grid(grid.origin_mm, grid.spacing_mm, grid.size, frame_of_reference_uid=new_uid())
    with pytest.raises(FrameOfReferenceError, match="ROI 'PTV' is in Frame of Reference"):
        write_rtstruct(
            tmp_path / "RS.dcm", [Roi.from_mask("PTV", disc_masks(grid)["PTV"], elsewhere)], reference=ref
        )
    bad = Contour(np.array([[0.0, 0.0, np.nan]] * 3), "CLOSED_PLANAR")
    with pytest.raises(InputError, match="finite"):
        write_rtstruct(tmp_path / "RS.dcm", [Roi(1, "A", None, "", [bad])], reference=ref)
    assert not (tmp_path / "RS.dcm").exists()


def test_structure_set_lookup_on_an_unsaved_set() -> None:
    ss = StructureSet(None, "1.2", "Plan", StudyInfo(), None, [])
    with pytest.raises(InputError, match="structure set 'Plan': no structure 'PTV'; structures: \\(none\\)"):
        ss.roi("PTV")


# ----------------------------------------------------------------------------- plastimatch


@pytest.mark.plastimatch
@pytest.mark.skipif(not PLASTIMATCH, reason="plastimatch binary not installed")
def test_plastimatch_rasterises_our_file_like_roi_mask(
    tmp_path: Path, ct: tuple[Grid, SeriesReference, Path]
) -> None:
    grid, ref, ct_dir = ct
    masks = disc_masks(grid)
    rs = write_rtstruct(
        tmp_path / "RS.dcm", [Roi.from_mask(n, m, grid) for n, m in masks.items()], reference=ref
    )
    ours = {roi.name: roi_mask(roi, grid) for roi in read_rtstruct(rs).rois}
    out = tmp_path / "pm"
    # --xor-contours: plastimatch's default ORs nested contours, which fills ring holes.
    cmd = [PLASTIMATCH, "convert", "--input", str(rs), "--referenced-ct", str(ct_dir),
           "--output-prefix", str(out), "--prefix-format", "nrrd", "--xor-contours"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    for name, mask in ours.items():
        image = sitk.ReadImage(str(out / f"{name}.nrrd"))
        assert image.GetSize() == grid.size
        np.testing.assert_allclose(image.GetOrigin(), grid.origin_mm, atol=1e-3)
        theirs = sitk.GetArrayFromImage(image) > 0
        assert theirs.sum() == pytest.approx(mask.sum(), rel=0.03), name
        assert (theirs & mask).sum() >= 0.95 * mask.sum(), name
