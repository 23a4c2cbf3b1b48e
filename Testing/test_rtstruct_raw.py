"""The direct reader of undecoded Contour Sequences against pydicom's decoding, encoding by encoding.

``read_rtstruct`` parses a Contour Sequence that pydicom has left undecoded straight from its
bytes (speed: a thoracic structure set has thousands of contour items). These tests write one
structure set, with awkward but legal content, in every little-endian encoding (explicit and
implicit VR, defined and undefined lengths, nested undefined-length items, private elements),
and check that the direct reader gives the contours that were written and exactly what pydicom's
own decoding gives, and that big-endian or damaged bytes fall back to pydicom.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from sbrtstandards.dicom import rtstruct
from sbrtstandards.dicom.common import PYDICOM_MAJOR, RT_STRUCTURE_SET_STORAGE, new_uid
from sbrtstandards.dicom.rtstruct import read_rtstruct
from sbrtstandards.errors import InputError

FOR_UID = "1.2.826.0.1.3680043.8.498.77"
IMAGE_UIDS = ["1.2.826.0.1.3680043.8.498.77.1", "1.2.826.0.1.3680043.8.498.77.2"]
SQUARE = [[-10.5, -10.0, 2.5], [10.0, -10.0, 2.5], [10.0, 10.25, 2.5], [-10.5, 10.25, 2.5]]
HOLE = [[-2.0, -2.0, 2.5], [2.0, -2.0, 2.5], [0.0, 3.0, 2.5]]
POINT = [[1.0, -2.0, 5.0]]


def _contour(points: list[list[float]], gtype: str | None, image_uid: str | None, *, private: bool = False) -> Dataset:
    item = Dataset()
    if image_uid is not None:
        image = Dataset()
        image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        image.ReferencedSOPInstanceUID = image_uid
        item.ContourImageSequence = [image]
    if gtype is not None:
        item.ContourGeometricType = gtype
    item.NumberOfContourPoints = len(points)
    if private:  # a private element and a long text before the data: skipped by length
        item.add_new(0x30070010, "LO", "ACME 1.0")
        item.add_new(0x30071001, "UT", "x" * 70000)
    item.ContourData = [v for p in points for v in p]
    return item


def structure_set() -> Dataset:
    """Three ROIs: a square with a hole and a note, a point, and a contour with no image reference
    and no geometric type (read as CLOSED_PLANAR), plus an item without Contour Data."""
    ds = Dataset()
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = new_uid()
    ds.Modality = "RTSTRUCT"
    ds.StructureSetLabel = "raw"
    frame = Dataset()
    frame.FrameOfReferenceUID = FOR_UID
    ds.ReferencedFrameOfReferenceSequence = [frame]
    rois, items = [], []
    for number, name in ((1, "Ring"), (2, "Marker"), (3, "Plain")):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = FOR_UID
        roi.ROIName = name
        rois.append(roi)
    ds.StructureSetROISequence = rois
    ring = Dataset()
    ring.ReferencedROINumber = 1
    ring.ROIDisplayColor = [255, 0, 0]
    ring.ContourSequence = [
        _contour(SQUARE, "CLOSED_PLANAR", IMAGE_UIDS[0], private=True),
        _contour(HOLE, "CLOSED_PLANAR", IMAGE_UIDS[1]),
    ]
    marker = Dataset()
    marker.ReferencedROINumber = 2
    marker.ContourSequence = [_contour(POINT, "POINT", None)]
    plain = Dataset()
    plain.ReferencedROINumber = 3
    empty = Dataset()
    empty.ContourGeometricType = "CLOSED_PLANAR"  # no Contour Data: left out
    plain.ContourSequence = [empty, _contour(SQUARE, None, None)]
    items = [ring, marker, plain]
    ds.ROIContourSequence = items
    return ds


def _sequence_elements(ds: Dataset) -> Iterator[pydicom.DataElement]:
    for elem in ds:
        if elem.VR == "SQ":
            yield elem
            for item in elem.value:
                yield from _sequence_elements(item)


def save(ds: Dataset, path: Path, syntax: str, *, undefined_lengths: bool | None = False) -> Path:
    """Write ``ds`` in ``syntax``; all sequences with (un)defined lengths, or as they are (None)."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    for elem in _sequence_elements(ds) if undefined_lengths is not None else ():
        _undefined(elem, undefined_lengths)
    implicit = syntax == ImplicitVRLittleEndian
    little = syntax != ExplicitVRBigEndian
    if PYDICOM_MAJOR >= 3:
        ds.save_as(str(path), implicit_vr=implicit, little_endian=little, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.4
        ds.is_implicit_VR, ds.is_little_endian = implicit, little
        ds.save_as(str(path), write_like_original=False)
    return path


def _undefined(elem: pydicom.DataElement, flag: bool) -> None:
    """Write this sequence and its items with undefined lengths (pydicom 2.4 and 3.x flags)."""
    elem.is_undefined_length = flag
    elem.value.is_undefined_length = flag
    for item in elem.value:
        item.is_undefined_length_sequence_item = flag


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the Contour Sequences that the direct reader decoded."""
    calls: list[int] = []
    original = rtstruct._contours_from_bytes

    def counting(raw: bytes, implicit: bool, where: str) -> list[rtstruct.Contour]:
        out = original(raw, implicit, where)
        calls.append(len(out))
        return out

    monkeypatch.setattr(rtstruct, "_contours_from_bytes", counting)
    return calls


def read_with_pydicom(path: Path, monkeypatch: pytest.MonkeyPatch) -> rtstruct.StructureSet:
    def refuse(raw: bytes, implicit: bool, where: str) -> list[rtstruct.Contour]:
        raise rtstruct._UnusualEncoding

    with monkeypatch.context() as m:
        m.setattr(rtstruct, "_contours_from_bytes", refuse)
        return read_rtstruct(path)


def summary(ss: rtstruct.StructureSet) -> list[tuple]:
    return [
        (r.number, r.name, r.color_rgb, [(c.geometric_type, c.referenced_sop_instance_uid, c.points_mm.tolist())
                                         for c in r.contours])
        for r in ss.rois
    ]  # fmt: skip


ENCODINGS = [
    (ExplicitVRLittleEndian, False),
    (ImplicitVRLittleEndian, False),
    (ExplicitVRLittleEndian, True),
    (ImplicitVRLittleEndian, True),
]


@pytest.mark.parametrize(
    ("syntax", "undefined"), ENCODINGS, ids=["explicit", "implicit", "explicit-undef", "implicit-undef"]
)
def test_direct_reader_gives_the_written_contours_and_pydicoms_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spy: list[int], syntax: str, undefined: bool
) -> None:
    path = save(structure_set(), tmp_path / "rs.dcm", syntax, undefined_lengths=undefined)
    ss = read_rtstruct(path)
    ring, marker, plain = ss.rois
    assert [c.geometric_type for c in ring.contours] == ["CLOSED_PLANAR", "CLOSED_PLANAR"]
    assert [c.referenced_sop_instance_uid for c in ring.contours] == IMAGE_UIDS
    np.testing.assert_array_equal(ring.contours[0].points_mm, SQUARE)
    np.testing.assert_array_equal(ring.contours[1].points_mm, HOLE)
    assert ring.color_rgb == (255, 0, 0)
    assert marker.is_point and marker.contours[0].referenced_sop_instance_uid is None
    np.testing.assert_array_equal(marker.contours[0].points_mm, POINT)
    assert len(plain.contours) == 1 and plain.contours[0].geometric_type == "CLOSED_PLANAR"
    np.testing.assert_array_equal(plain.contours[0].points_mm, SQUARE)
    assert ring.planes()[2.5][1].tolist() == [p[:2] for p in HOLE]
    # A file with undefined lengths is decoded by pydicom as it reads it: nothing is left raw.
    assert spy == ([] if undefined else [2, 1, 1])
    assert summary(ss) == summary(read_with_pydicom(path, monkeypatch))


def test_undefined_length_items_inside_a_defined_length_sequence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spy: list[int]
) -> None:
    """Mixed lengths: the Contour Sequence has a length, its items and image sequences do not."""
    ds = structure_set()
    for roi_item in ds.ROIContourSequence:
        for item in roi_item.ContourSequence:
            item.is_undefined_length_sequence_item = True
            if "ContourImageSequence" in item:
                _undefined(item["ContourImageSequence"], True)
    path = save(ds, tmp_path / "mixed.dcm", ExplicitVRLittleEndian, undefined_lengths=None)
    assert path.read_bytes().count(b"\xff\xff\xff\xff") == 5 + 2 * 2  # 5 contour items, 2 image sequences + items
    ss = read_rtstruct(path)
    assert spy == [2, 1, 1]
    assert [c.referenced_sop_instance_uid for c in ss.rois[0].contours] == IMAGE_UIDS
    assert summary(ss) == summary(read_with_pydicom(path, monkeypatch))


def test_big_endian_is_left_to_pydicom(tmp_path: Path, spy: list[int]) -> None:
    path = save(structure_set(), tmp_path / "rs.dcm", ExplicitVRBigEndian)
    ss = read_rtstruct(path)
    assert spy == []
    np.testing.assert_array_equal(ss.rois[0].contours[1].points_mm, HOLE)


def _damaged(tmp_path: Path, edit: Callable[[bytes], bytes]) -> Path:
    path = save(structure_set(), tmp_path / "rs.dcm", ExplicitVRLittleEndian)
    path.write_bytes(edit(path.read_bytes()))
    return path


def test_a_wrong_item_length_falls_back_to_pydicom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An item tag replaced by another tag: the direct reader gives up, pydicom decides."""
    item_tag = b"\xfe\xff\x00\xe0"

    def edit(data: bytes) -> bytes:
        at = data.index(b"\x06\x30\x40\x00")  # Contour Sequence of the first ROI
        first = data.index(item_tag, at)
        return data[:first] + b"\x06\x30\x99\x00" + data[first + 4 :]

    path = _damaged(tmp_path, edit)
    calls: list[str] = []
    original = rtstruct._contours_from_bytes

    def watch(raw: bytes, implicit: bool, where: str) -> list[rtstruct.Contour]:
        try:
            return original(raw, implicit, where)
        except rtstruct._UnusualEncoding:
            calls.append(where)
            raise

    monkeypatch.setattr(rtstruct, "_contours_from_bytes", watch)
    try:
        ours = summary(read_rtstruct(path))
    except Exception as exc:  # pydicom's verdict on the damaged file, whatever it is
        ours = [type(exc).__name__]
    assert calls and "ROI number 1" in calls[0]
    monkeypatch.setattr(rtstruct, "_contours_from_bytes", original)
    try:
        theirs = summary(read_with_pydicom(path, monkeypatch))
    except Exception as exc:
        theirs = [type(exc).__name__]
    assert ours == theirs


def test_bad_contour_data_is_an_input_error_naming_the_contour(tmp_path: Path) -> None:
    def edit(data: bytes) -> bytes:
        return data.replace(b"-2.0\\-2.0", b"-2.0\\-2.O", 1)  # a letter O, not a zero

    path = _damaged(tmp_path, edit)
    assert b"-2.O" in path.read_bytes()
    with pytest.raises(InputError, match=r"ROI number 1, contour 2: Contour Data is not a list of numbers"):
        read_rtstruct(path)


def test_pydicom_testfile_reads_the_same_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file("rtstruct.dcm"))
    assert summary(read_rtstruct(path)) == summary(read_with_pydicom(path, monkeypatch))
    assert pydicom.dcmread(path, force=True).ROIContourSequence[0].ContourSequence[0].ContourData[0] == -200


def test_non_finite_contour_data_is_an_input_error_naming_the_contour(tmp_path: Path) -> None:
    path = _damaged(tmp_path, lambda data: data.replace(b"-2.0\\-2.0", b"-2.0\\ nan", 1))
    with pytest.raises(InputError, match=r"ROI number 1, contour 2: Contour Data contains non-finite values"):
        read_rtstruct(path)
