"""DICOM RT Structure Set: read every ROI, write new structure sets (PS3.3 A.19, C.8.8.5-C.8.8.8).

Reading keeps everything the rest of the project needs and nothing it cannot trust:
names, numbers, display colours, RT ROI Interpreted Types, every contour with its
geometric type (POINT ROIs stay points, ROIs without contour data stay as empty ROIs so a
report can name them), and the Frame of Reference the contours are in. Files without
file meta (some TPS exports) are read. Inconsistent files fail with an :class:`InputError`
that names the file and the ROI, at the point where the inconsistency matters: duplicate
ROI names when that name is looked up, non-axial or degenerate contours when the ROI's
planes are used, ROIs in different Frames of Reference at once.

Writing produces a complete RT Structure Set IOD referencing an image series
(:class:`~sbrtstandards.dicom.common.SeriesReference`): every slice is listed in the
Referenced Frame of Reference Sequence, and every contour lying on a slice references it
in its Contour Image Sequence, which SlicerRT, plastimatch and TPSs use to place it.
Adding ROIs to an existing structure set writes a new file (new SOP Instance UID); the
input file is never modified.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ImplicitVRLittleEndian

from sbrtstandards import tg263
from sbrtstandards.dicom.common import (
    PYDICOM_MAJOR,
    RT_STRUCTURE_SET_STORAGE,
    SeriesReference,
    StudyInfo,
    new_dataset,
    new_uid,
    read_dataset,
    save_dataset,
)
from sbrtstandards.errors import FrameOfReferenceError, InputError

if TYPE_CHECKING:
    from sbrtstandards.grid import Grid

GEOMETRIC_TYPES = ("CLOSED_PLANAR", "POINT", "OPEN_PLANAR", "OPEN_NONPLANAR")
PLANAR_TOLERANCE_MM = 0.01  # spread of z allowed in one axial contour (DS rounding)
Z_DECIMALS = 3  # plane keys: z rounded to 1 micrometre
CONTOUR_DATA = Tag(0x3006, 0x0050)
CONTOUR_SEQUENCE = Tag(0x3006, 0x0040)
MAX_SHORT_VALUE_BYTES = 0xFFFE  # explicit VR DS has a 16-bit length field
# Referenced SOP Class of the RT Referenced Study item: Detached Study Management, the
# value TPSs write and readers expect there.
STUDY_REFERENCE_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
MAX_ROI_NAME_CHARS = 64  # LO
MAX_LABEL_CHARS = 16  # SH


@dataclass(eq=False)  # numpy points: compare contours by identity, never element-wise
class Contour:
    """One contour: vertices in LPS mm and its DICOM Contour Geometric Type."""

    points_mm: np.ndarray  # (N, 3)
    geometric_type: str  # "CLOSED_PLANAR", "POINT", "OPEN_PLANAR", "OPEN_NONPLANAR"
    referenced_sop_instance_uid: str | None = None


@dataclass
class Roi:
    """A structure: identity, display attributes and contours."""

    number: int
    name: str
    color_rgb: tuple[int, int, int] | None
    interpreted_type: str  # RTROIInterpretedType ("PTV", "ORGAN", "EXTERNAL", ...), "" if absent
    contours: list[Contour] = field(default_factory=list)
    generation_algorithm: str = ""  # ROIGenerationAlgorithm: AUTOMATIC, SEMIAUTOMATIC, MANUAL, ""
    frame_of_reference_uid: str | None = None
    source: str = ""  # file the ROI was read from, for messages

    @property
    def is_empty(self) -> bool:
        """No contour data at all (a name without a shape: report it, do not compute on it)."""
        return not any(len(c.points_mm) for c in self.contours)

    @property
    def is_point(self) -> bool:
        """Only POINT contours (isocentres, markers): no volume."""
        return bool(self.contours) and all(c.geometric_type == "POINT" for c in self.contours)

    def describe(self) -> str:
        return f"{self.source}: ROI '{self.name}'" if self.source else f"ROI '{self.name}'"

    def planes(self) -> dict[float, list[np.ndarray]]:
        """Closed planar contours by plane: ``{z_mm: [(N, 2) xy polygons]}``, z increasing.

        Contours whose z differ by less than 0.01 mm share a plane; the key is their mean z
        rounded to 1e-3 mm. Raises :class:`InputError` for a closed contour with fewer than
        3 points or one that is not in an axial plane (we only support axial contours).
        """
        found: list[tuple[float, np.ndarray]] = []
        for n, contour in enumerate(self.contours, start=1):
            if contour.geometric_type != "CLOSED_PLANAR":
                continue
            pts = np.asarray(contour.points_mm, dtype=float).reshape(-1, 3)
            if len(pts) < 3:
                raise InputError(
                    f"{self.describe()}: closed contour {n} has {len(pts)} point(s); at least 3 are needed"
                )
            z = pts[:, 2]
            if float(_max(z) - _min(z)) > PLANAR_TOLERANCE_MM:
                raise InputError(
                    f"{self.describe()}: contour {n} is not in an axial plane (z from {z.min():.3f} to "
                    f"{z.max():.3f} mm); only axial contours are supported"
                )
            found.append((float(_sum(z)) / len(z), pts[:, :2].copy()))  # z.mean(), without its overhead
        found.sort(key=lambda item: item[0])
        planes: dict[float, list[np.ndarray]] = {}
        group: list[tuple[float, np.ndarray]] = []
        for item in found:
            if group and item[0] - group[0][0] > PLANAR_TOLERANCE_MM:
                planes[_plane_key([g[0] for g in group])] = [g[1] for g in group]
                group = []
            group.append(item)
        if group:
            planes[_plane_key([g[0] for g in group])] = [g[1] for g in group]
        return planes

    @classmethod
    def from_mask(
        cls,
        name: str,
        mask: np.ndarray,
        grid: Grid,
        *,
        number: int = 0,
        color_rgb: tuple[int, int, int] | None = None,
        interpreted_type: str = "",
    ) -> Roi:
        """An ROI whose contours outline ``mask`` on ``grid`` (see :mod:`sbrtstandards.contours`)."""
        from sbrtstandards.contours import mask_to_contours

        return cls(
            number=number,
            name=name,
            color_rgb=color_rgb,
            interpreted_type=interpreted_type,
            contours=mask_to_contours(mask, grid),
            generation_algorithm="AUTOMATIC",
            frame_of_reference_uid=grid.frame_of_reference_uid,
        )


_sum, _min, _max = np.add.reduce, np.minimum.reduce, np.maximum.reduce  # what ndarray.mean/min/max call


def _plane_key(zs: list[float]) -> float:
    mean = zs[0] if len(zs) == 1 else float(_sum(np.asarray(zs, dtype=float))) / len(zs)  # np.mean(zs)
    return round(mean, Z_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def _name_key(name: str) -> str:
    """Loose name comparison: case, spaces and underscores do not count."""
    return re.sub(r"[\s_]+", "", name).casefold()


@dataclass
class StructureSet:
    """An RT Structure Set as read (or about to be written)."""

    path: Path | None
    sop_instance_uid: str
    label: str
    study: StudyInfo  # frame_of_reference_uid = the Frame of Reference the contours are in
    referenced_series_uid: str | None
    rois: list[Roi]
    series_instance_uid: str = ""
    warnings: list[str] = field(default_factory=list)  # readable notes on tolerated oddities

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rois]

    @property
    def empty_rois(self) -> list[str]:
        """Names of ROIs without contour data (listed in reports, skipped by computations)."""
        return [r.name for r in self.rois if r.is_empty]

    def describe(self) -> str:
        return str(self.path) if self.path else f"structure set '{self.label}'"

    def roi(self, name: str) -> Roi:
        """The ROI called ``name``: exact name first, then ignoring case, spaces and underscores."""
        exact = [r for r in self.rois if r.name == name]
        if len(exact) == 1:
            return exact[0]
        if len(exact) > 1:
            numbers = ", ".join(str(r.number) for r in exact)
            raise InputError(
                f"{self.describe()}: structure name '{name}' is used by {len(exact)} ROIs "
                f"(ROI numbers {numbers}); rename the duplicates"
            )
        key = _name_key(name)
        loose = [r for r in self.rois if _name_key(r.name) == key]
        if len(loose) == 1:
            return loose[0]
        if len(loose) > 1:
            raise InputError(
                f"{self.describe()}: structure '{name}' is ambiguous: it matches "
                f"{', '.join(repr(r.name) for r in loose)}; use the exact name"
            )
        listing = ", ".join(self.names) if self.rois else "(none)"
        raise InputError(f"{self.describe()}: no structure '{name}'; structures: {listing}")


# ----------------------------------------------------------------------------- reading


def read_rtstruct(path: str | os.PathLike[str]) -> StructureSet:
    """Read an RT Structure Set file (with or without file meta)."""
    path = Path(path)
    ds = read_dataset(path, expect="RTSTRUCT")
    where = str(path)
    warnings: list[str] = []
    definitions = _roi_definitions(ds, where, warnings)
    contour_items = _roi_contour_items(ds, where, warnings)
    types = _interpreted_types(ds)

    rois: list[Roi] = []
    for number, (name, for_uid, algorithm) in definitions.items():
        color, contours = contour_items.pop(number, (None, []))
        rois.append(
            Roi(number, name, color, types.get(number, ""), contours, algorithm, for_uid or None, where)
        )
    for number, (color, contours) in contour_items.items():
        name = f"(unnamed ROI {number})"
        warnings.append(
            f"ROI Contour Sequence has contours for ROI number {number}, which the Structure Set ROI "
            f"Sequence does not define; kept as '{name}'"
        )
        rois.append(Roi(number, name, color, types.get(number, ""), contours, "", None, where))

    ref_for, ref_item = _referenced_frame(ds, rois, where)
    for roi in rois:
        if not roi.frame_of_reference_uid:
            roi.frame_of_reference_uid = ref_for
    study = StudyInfo.from_dataset(ds)
    if ref_for:
        study.frame_of_reference_uid = ref_for
    else:
        warnings.append("no Frame of Reference UID anywhere in the file")
    for roi in rois:
        if roi.is_empty:
            warnings.append(f"ROI '{roi.name}' has no contour data")
    return StructureSet(
        path=path,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        label=str(ds.get("StructureSetLabel", "") or ""),
        study=study,
        referenced_series_uid=_referenced_series(ref_item),
        rois=rois,
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        warnings=warnings,
    )


def _roi_definitions(ds: Dataset, where: str, warnings: list[str]) -> dict[int, tuple[str, str, str]]:
    """ROI number -> (name, referenced Frame of Reference UID, generation algorithm)."""
    out: dict[int, tuple[str, str, str]] = {}
    for item in ds.get("StructureSetROISequence", None) or []:
        number = _int_or_none(item.get("ROINumber", None))
        name = str(item.get("ROIName", "") or "").strip()
        if number is None:
            warnings.append(f"Structure Set ROI '{name}' has no ROI Number; ignored")
            continue
        if number in out:
            raise InputError(
                f"{where}: ROI number {number} is defined twice ('{out[number][0]}' and '{name}')"
            )
        out[number] = (
            name or f"(unnamed ROI {number})",
            str(item.get("ReferencedFrameOfReferenceUID", "") or ""),
            str(item.get("ROIGenerationAlgorithm", "") or ""),
        )
    return out


def _roi_contour_items(
    ds: Dataset, where: str, warnings: list[str]
) -> dict[int, tuple[tuple[int, int, int] | None, list[Contour]]]:
    """ROI number -> (display colour, contours); several items for one ROI are merged."""
    out: dict[int, tuple[tuple[int, int, int] | None, list[Contour]]] = {}
    for item in ds.get("ROIContourSequence", None) or []:
        number = _int_or_none(item.get("ReferencedROINumber", None))
        if number is None:
            warnings.append("an ROI Contour item has no Referenced ROI Number; ignored")
            continue
        color = _color(item.get("ROIDisplayColor", None))
        contours = _contours(item, f"{where}: ROI number {number}")
        if number in out:
            old_color, old_contours = out[number]
            out[number] = (old_color or color, old_contours + contours)
        else:
            out[number] = (color, contours)
    return out


def _interpreted_types(ds: Dataset) -> dict[int, str]:
    out: dict[int, str] = {}
    for item in ds.get("RTROIObservationsSequence", None) or []:
        number = _int_or_none(item.get("ReferencedROINumber", None))
        if number is not None and number not in out:
            out[number] = str(item.get("RTROIInterpretedType", "") or "").strip().upper()
    return out


def _contours(item: Dataset, where: str) -> list[Contour]:
    raw = item.get_item(CONTOUR_SEQUENCE)
    if isinstance(raw, RawDataElement) and raw.is_little_endian and isinstance(raw.value, (bytes, bytearray)):
        try:  # still undecoded (a defined-length sequence): parse its bytes directly, ~10x faster
            return _contours_from_bytes(bytes(raw.value), bool(raw.is_implicit_VR), where)
        except _UnusualEncoding:
            pass  # anything unexpected: let pydicom decode it
    out: list[Contour] = []
    for n, contour in enumerate(item.get("ContourSequence", None) or [], start=1):
        points = _contour_points(contour, f"{where}, contour {n}")
        if len(points) == 0:
            continue
        gtype = str(contour.get("ContourGeometricType", "") or "CLOSED_PLANAR").strip().upper()
        images = contour.get("ContourImageSequence", None)
        ref = str(images[0].get("ReferencedSOPInstanceUID", "") or "") if images else ""
        out.append(Contour(points, gtype, ref or None))
    return out


def _contour_points(contour: Dataset, where: str) -> np.ndarray:
    """Contour Data as (N, 3) mm; the DS text is parsed in one go when still raw (fast)."""
    elem: Any = contour.get_item(CONTOUR_DATA)
    if elem is None:
        return np.empty((0, 3))
    value = elem.value
    try:
        if isinstance(value, (bytes, bytearray)):
            return _ds_points(bytes(value), where)
        elif value is None or value == "":
            flat = np.empty(0)
        elif isinstance(value, (str, int, float)):  # one value (DSfloat is a float)
            flat = np.array([float(value)], dtype=float)
        else:  # MultiValue of DSfloat
            flat = np.array([float(v) for v in value], dtype=float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: Contour Data is not a list of numbers ({exc})") from None
    return _points_of(flat, where)


def _ds_points(raw: bytes, where: str, *, check_finite: bool = True) -> np.ndarray:
    """(N, 3) points of the undecoded DS text of a Contour Data element."""
    try:
        text = raw.decode("ascii", errors="strict").strip(" \x00")
        flat = np.array(text.split("\\") if text else [], dtype=float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: Contour Data is not a list of numbers ({exc})") from None
    return _points_of(flat, where, check_finite=check_finite)


def _points_of(flat: np.ndarray, where: str, *, check_finite: bool = True) -> np.ndarray:
    if flat.size % 3 != 0:
        raise InputError(f"{where}: Contour Data has {flat.size} values, not a multiple of 3 (x, y, z)")
    if check_finite and not np.all(np.isfinite(flat)):
        raise InputError(f"{where}: Contour Data contains non-finite values")
    return flat.reshape(-1, 3)


# ----------------------------------------------------------------------------- undecoded Contour Sequence
#
# pydicom builds a Dataset per contour item and a DataElement per attribute: 0.3 ms per
# contour, a third of a second for a thoracic structure set of 2600 contours. A Contour
# Sequence read from a file with defined lengths is still its raw value bytes, and only
# three attributes of each item matter here, so they are read straight from the bytes
# (little endian, explicit or implicit VR; PS3.5 7.1 and 7.5). Anything unusual (big
# endian, an unknown VR, a truncated item, a multi-valued type) raises _UnusualEncoding
# and pydicom decodes the sequence instead, so the result is the same either way.

_ITEM = (0xFFFE, 0xE000)
_ITEM_END = (0xFFFE, 0xE00D)
_SEQUENCE_END = (0xFFFE, 0xE0DD)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL",
     b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)  # fmt: skip
_GEOMETRIC_TYPE_TAG = (0x3006, 0x0042)
_CONTOUR_DATA_TAG = (0x3006, 0x0050)
_CONTOUR_IMAGES_TAG = (0x3006, 0x0016)
_REFERENCED_SOP_INSTANCE_TAG = (0x0008, 0x1155)
_HEADER = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_EXPLICIT_HEADER = struct.Struct("<HH2sH")  # tag, VR, 16-bit length (PS3.5 7.1.2)
_IMPLICIT_HEADER = struct.Struct("<HHI")  # tag, 32-bit length (PS3.5 7.1.3)


class _UnusualEncoding(Exception):
    """Bytes that the direct reader does not handle: decode them with pydicom instead."""


def _contours_from_bytes(raw: bytes, implicit: bool, where: str) -> list[Contour]:
    """The contours of an undecoded Contour Sequence value (as :func:`_contours` via pydicom)."""
    out: list[Contour] = []
    for n, (start, end) in enumerate(_items(raw, 0, len(raw), implicit)[0], start=1):
        fields = _item_elements(raw, start, end, implicit)
        data = fields.get(_CONTOUR_DATA_TAG)
        if data is None:
            continue
        points = _ds_points(raw[data[0] : data[1]], f"{where}, contour {n}", check_finite=False)
        if len(points) == 0:
            continue
        gtype = _text(raw, fields.get(_GEOMETRIC_TYPE_TAG)) or "CLOSED_PLANAR"
        ref = ""
        images = fields.get(_CONTOUR_IMAGES_TAG)
        if images is not None:
            image_items = _items(raw, images[0], images[1], implicit)[0]
            if image_items:
                first = _item_elements(raw, image_items[0][0], image_items[0][1], implicit)
                ref = _text(raw, first.get(_REFERENCED_SOP_INSTANCE_TAG))
        out.append(Contour(points, gtype.upper(), ref or None))
    if out and not np.isfinite(np.concatenate([c.points_mm for c in out])).all():  # one check, then name it
        for n, contour in enumerate(out, start=1):
            if not np.isfinite(contour.points_mm).all():
                raise InputError(f"{where}, contour {n}: Contour Data contains non-finite values")
    return out


def _text(raw: bytes, span: tuple[int, int] | None) -> str:
    """A single-valued text attribute (CS, UI), padding removed."""
    if span is None:
        return ""
    try:
        text = raw[span[0] : span[1]].decode("ascii").strip(" \x00")
    except UnicodeDecodeError:
        raise _UnusualEncoding from None
    if "\\" in text:
        raise _UnusualEncoding
    return text


def _items(raw: bytes, pos: int, end: int, implicit: bool) -> tuple[list[tuple[int, int]], int]:
    """(start, end) of the content of each item of a sequence value from ``pos`` to ``end``,
    and where the value ends (after its Sequence Delimitation Item when it has one)."""
    items: list[tuple[int, int]] = []
    while pos < end:
        if pos + 8 > end:
            raise _UnusualEncoding
        tag = _HEADER.unpack_from(raw, pos)
        length = _U32.unpack_from(raw, pos + 4)[0]
        pos += 8
        if tag == _SEQUENCE_END:
            return items, pos
        if tag != _ITEM:
            raise _UnusualEncoding
        start = pos
        if length == _UNDEFINED_LENGTH:  # ends with an Item Delimitation Item
            content_end, pos = _skip_elements(raw, pos, end, implicit)
        else:
            content_end = pos = pos + length
            if content_end > end:
                raise _UnusualEncoding
        items.append((start, content_end))
    return items, pos


def _element_header(raw: bytes, pos: int, implicit: bool) -> tuple[tuple[int, int], int, int]:
    """Tag, value length and value offset of the data element at ``pos``."""
    tag = _HEADER.unpack_from(raw, pos)
    if implicit or tag[0] == 0xFFFE:  # delimiters have no VR in either encoding
        return tag, _U32.unpack_from(raw, pos + 4)[0], pos + 8
    vr = raw[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        return tag, _U32.unpack_from(raw, pos + 8)[0], pos + 12
    if vr in _SHORT_VRS:
        return tag, _U16.unpack_from(raw, pos + 6)[0], pos + 8
    raise _UnusualEncoding


def _skip_elements(raw: bytes, pos: int, end: int, implicit: bool) -> tuple[int, int]:
    """Walk the elements of an undefined-length item: (end of its content, position after its
    Item Delimitation Item)."""
    while pos + 8 <= end:
        tag, length, value = _element_header(raw, pos, implicit)
        if tag == _ITEM_END:
            return pos, value
        pos = _element_end(raw, value, length, end, implicit)
    raise _UnusualEncoding


def _element_end(raw: bytes, value: int, length: int, end: int, implicit: bool) -> int:
    """Where an element whose value starts at ``value`` ends (nested sequences included)."""
    if length == _UNDEFINED_LENGTH:  # only a sequence (SQ, or UN/implicit read as one) has no length
        return _items(raw, value, end, implicit)[1]
    if value + length > end:
        raise _UnusualEncoding
    return value + length


def _item_elements(raw: bytes, pos: int, end: int, implicit: bool) -> dict[tuple[int, int], tuple[int, int]]:
    """Tag -> (start, end) of the value of each top-level element of an item's content."""
    out: dict[tuple[int, int], tuple[int, int]] = {}
    while pos < end:
        if pos + 8 > end:
            raise _UnusualEncoding
        if implicit:
            group, element, length = _IMPLICIT_HEADER.unpack_from(raw, pos)
            value = pos + 8
        else:
            group, element, vr, length = _EXPLICIT_HEADER.unpack_from(raw, pos)
            if vr in _LONG_VRS:
                length = _U32.unpack_from(raw, pos + 8)[0]
                value = pos + 12
            elif vr in _SHORT_VRS:
                value = pos + 8
            else:
                raise _UnusualEncoding
        if group == 0xFFFE:  # no delimiter inside an item's content
            raise _UnusualEncoding
        pos = _element_end(raw, value, length, end, implicit)
        out[(group, element)] = (value, pos)
    return out


def _color(value: Any) -> tuple[int, int, int] | None:
    if value is None or value == "":
        return None
    try:
        parts = [int(round(float(v))) for v in (value if not isinstance(value, str) else value.split("\\"))]
    except (TypeError, ValueError):
        return None
    if len(parts) != 3:
        return None
    r, g, b = (min(max(v, 0), 255) for v in parts)
    return (r, g, b)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def _referenced_frame(ds: Dataset, rois: list[Roi], where: str) -> tuple[str | None, Dataset | None]:
    """The Frame of Reference of the contours, and its Referenced Frame of Reference item."""
    items = [
        (str(it.get("FrameOfReferenceUID", "") or ""), it)
        for it in ds.get("ReferencedFrameOfReferenceSequence", None) or []
    ]
    used: dict[str, list[str]] = {}
    for roi in rois:
        if roi.frame_of_reference_uid and not roi.is_empty:
            used.setdefault(roi.frame_of_reference_uid, []).append(roi.name)
    if len(used) > 1:
        detail = "; ".join(f"{uid}: {', '.join(names)}" for uid, names in used.items())
        raise FrameOfReferenceError(
            f"{where}: the ROIs are in {len(used)} different Frames of Reference ({detail}); "
            "all structures must share the image's Frame of Reference"
        )
    if used:
        (uid,) = used
        for item_uid, item in items:
            if item_uid == uid:
                return uid, item
        if items:
            declared = ", ".join(u for u, _ in items)
            raise FrameOfReferenceError(
                f"{where}: the ROIs are in Frame of Reference {uid}, which the structure set does not "
                f"reference (it references {declared})"
            )
        return uid, None
    for item_uid, item in items:  # no ROI says: the item that references an image series
        if item_uid and _referenced_series(item):
            return item_uid, item
    for item_uid, item in items:
        if item_uid:
            return item_uid, item
    top = str(ds.get("FrameOfReferenceUID", "") or "")
    return (top or None), None


def _referenced_series(item: Dataset | None) -> str | None:
    if item is None:
        return None
    for study in item.get("RTReferencedStudySequence", None) or []:
        for series in study.get("RTReferencedSeriesSequence", None) or []:
            uid = str(series.get("SeriesInstanceUID", "") or "")
            if uid:
                return uid
    return None


# ----------------------------------------------------------------------------- writing


def write_rtstruct(
    path: str | os.PathLike[str],
    rois: Sequence[Roi],
    *,
    reference: SeriesReference,
    label: str = "SBRT",
    description: str = "",
    existing: StructureSet | None = None,
) -> Path:
    """Write ``rois`` as a new RT Structure Set referencing the image series ``reference``.

    With ``existing``, its ROIs are kept (numbers, names, colours, types, contours) and the
    new ROIs are numbered after the highest existing number; a new name that already
    exists (ignoring case, spaces and underscores) is refused. The result is always a new
    file with a new SOP Instance UID. Missing colours and interpreted types of the new
    ROIs come from :mod:`sbrtstandards.tg263`.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the RT Structure Set file name to write")
    _check_reference(reference)
    new_rois = [_with_defaults(r) for r in rois]
    _check_new_names(new_rois, existing)
    _check_frames(new_rois, reference)
    kept: list[Roi] = []
    if existing is not None:
        _check_existing(path, existing, reference)
        kept = list(existing.rois)
    all_rois = kept + _numbered(
        new_rois, start=max([r.number for r in kept], default=0) + 1, force=bool(kept)
    )
    for roi in all_rois:
        _check_roi(roi)

    ds = new_dataset(RT_STRUCTURE_SET_STORAGE)
    reference.study.apply(ds)
    del ds.FrameOfReferenceUID  # not part of the RT Structure Set IOD (it is in the ROI items)
    _rt_series_module(ds, label, description)
    _structure_set_module(ds, label, description, reference, all_rois)
    long_values = _roi_contour_module(ds, reference, all_rois)
    _observations_module(ds, all_rois)
    if long_values:
        _use_implicit_vr(ds)
    _mark_contours_encoded(ds, implicit_vr=long_values)
    return save_dataset(ds, path)


def _check_reference(reference: SeriesReference) -> None:
    n = len(reference.sop_instance_uids)
    if n == 0 or n != len(reference.slice_positions_mm):
        raise InputError(
            f"image series {reference.series_instance_uid}: {n} slice UIDs for "
            f"{len(reference.slice_positions_mm)} slice positions; cannot reference it"
        )


def _with_defaults(roi: Roi) -> Roi:
    color = roi.color_rgb if roi.color_rgb is not None else tg263.color_for(roi.name)
    itype = roi.interpreted_type or tg263.interpreted_type_for(roi.name)
    return replace(roi, color_rgb=color, interpreted_type=itype)


def _check_new_names(new_rois: list[Roi], existing: StructureSet | None) -> None:
    seen: dict[str, str] = {}
    for roi in new_rois:
        key = _name_key(roi.name)
        if key in seen:
            raise InputError(f"ROI name '{roi.name}' given twice (as '{seen[key]}' and '{roi.name}')")
        seen[key] = roi.name
    if existing is None:
        return
    have = {_name_key(r.name): r.name for r in existing.rois}
    for roi in new_rois:
        key = _name_key(roi.name)
        if key in have:
            raise InputError(
                f"{existing.describe()}: already has a structure '{have[key]}'; "
                f"refusing to add '{roi.name}' (choose another name)"
            )


def _check_frames(rois: list[Roi], reference: SeriesReference) -> None:
    """ROIs made on a grid of another Frame of Reference cannot be placed on this series."""
    series_for = reference.study.frame_of_reference_uid
    for roi in rois:
        if roi.frame_of_reference_uid and roi.frame_of_reference_uid != series_for:
            raise FrameOfReferenceError(
                f"ROI '{roi.name}' is in Frame of Reference {roi.frame_of_reference_uid}, the image series "
                f"{reference.series_instance_uid} is in {series_for}"
            )


def _check_existing(path: Path, existing: StructureSet, reference: SeriesReference) -> None:
    if existing.path is not None and path.resolve() == Path(existing.path).resolve():
        raise InputError(f"{path}: is the input structure set; write the extended one to a new file")
    if existing.study.frame_of_reference_uid != reference.study.frame_of_reference_uid:
        raise FrameOfReferenceError(
            f"{existing.describe()}: its structures are in Frame of Reference "
            f"{existing.study.frame_of_reference_uid}, the image series {reference.series_instance_uid} "
            f"is in {reference.study.frame_of_reference_uid}"
        )


def _numbered(rois: list[Roi], *, start: int, force: bool) -> list[Roi]:
    """Keep positive unique numbers when not extending; else number from ``start``."""
    numbers = [r.number for r in rois]
    if not force and all(n > 0 for n in numbers) and len(set(numbers)) == len(numbers):
        return rois
    first = start if force else 1
    return [replace(r, number=first + i) for i, r in enumerate(rois)]


def _check_roi(roi: Roi) -> None:
    if not roi.name.strip():
        raise InputError(f"ROI number {roi.number}: empty name")
    if len(roi.name) > MAX_ROI_NAME_CHARS or "\\" in roi.name:
        raise InputError(f"ROI '{roi.name}': a DICOM ROI name has at most 64 characters and no backslash")
    for n, contour in enumerate(roi.contours, start=1):
        pts = np.asarray(contour.points_mm, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
            raise InputError(f"ROI '{roi.name}': contour {n} must be finite (N, 3) points in mm")
        if contour.geometric_type not in GEOMETRIC_TYPES:
            raise InputError(
                f"ROI '{roi.name}': contour {n} has geometric type '{contour.geometric_type}'; "
                f"expected one of {', '.join(GEOMETRIC_TYPES)}"
            )


def _rt_series_module(ds: Dataset, label: str, description: str) -> None:
    now = _dt.datetime.now()
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = 1
    ds.SeriesDate = now.strftime("%Y%m%d")
    ds.SeriesTime = now.strftime("%H%M%S")
    ds.SeriesDescription = (description or label)[:64]
    ds.OperatorsName = ""


def _structure_set_module(
    ds: Dataset, label: str, description: str, reference: SeriesReference, rois: list[Roi]
) -> None:
    now = _dt.datetime.now()
    ds.StructureSetLabel = (label.strip() or "SBRT")[:MAX_LABEL_CHARS]
    ds.StructureSetName = label[:64]
    if description:
        ds.StructureSetDescription = description
    ds.InstanceNumber = 1
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")

    images = []
    for uid in reference.sop_instance_uids:
        image = Dataset()
        image.ReferencedSOPClassUID = reference.sop_class_uid
        image.ReferencedSOPInstanceUID = uid
        images.append(image)
    series = Dataset()
    series.SeriesInstanceUID = reference.series_instance_uid
    series.ContourImageSequence = images
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_REFERENCE_SOP_CLASS
    study.ReferencedSOPInstanceUID = reference.study.study_instance_uid
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = reference.study.frame_of_reference_uid
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]

    items = []
    for roi in rois:
        item = Dataset()
        item.ROINumber = roi.number
        item.ReferencedFrameOfReferenceUID = reference.study.frame_of_reference_uid
        item.ROIName = roi.name
        item.ROIGenerationAlgorithm = roi.generation_algorithm
        items.append(item)
    ds.StructureSetROISequence = items


def _roi_contour_module(ds: Dataset, reference: SeriesReference, rois: list[Roi]) -> bool:
    """ROI Contour Sequence; returns True when a Contour Data value needs 32-bit lengths."""
    slices = _SliceFinder(reference)
    long_values = False
    items = []
    for roi in rois:
        item = Dataset()
        if roi.color_rgb is not None:
            item.ROIDisplayColor = [int(c) for c in roi.color_rgb]
        contour_items = []
        for n, contour in enumerate(roi.contours, start=1):
            pts = np.asarray(contour.points_mm, dtype=float).reshape(-1, 3)
            if len(pts) == 0:
                continue
            citem = Dataset()
            uid = slices.uid_for(pts, contour)
            if uid is not None:
                image = Dataset()
                image.ReferencedSOPClassUID = reference.sop_class_uid
                image.ReferencedSOPInstanceUID = uid
                citem.ContourImageSequence = [image]
            citem.ContourGeometricType = contour.geometric_type
            citem.NumberOfContourPoints = len(pts)
            citem.ContourNumber = n
            raw = _ds_bytes(pts.ravel())
            long_values |= len(raw) > MAX_SHORT_VALUE_BYTES
            # Raw element: the formatted text is written as is (pydicom would otherwise build
            # one DSfloat object per coordinate, seconds for a large body contour).
            citem[CONTOUR_DATA] = RawDataElement(CONTOUR_DATA, "DS", len(raw), raw, 0, False, True)
            contour_items.append(citem)
        if contour_items:
            item.ContourSequence = contour_items
        item.ReferencedROINumber = roi.number
        items.append(item)
    ds.ROIContourSequence = items
    return long_values


def _observations_module(ds: Dataset, rois: list[Roi]) -> None:
    items = []
    for n, roi in enumerate(rois, start=1):
        item = Dataset()
        item.ObservationNumber = n
        item.ReferencedROINumber = roi.number
        item.RTROIInterpretedType = roi.interpreted_type
        item.ROIInterpreter = ""
        items.append(item)
    ds.RTROIObservationsSequence = items


def _use_implicit_vr(ds: Dataset) -> None:
    """Implicit VR Little Endian (32-bit lengths) for Contour Data longer than 64 kB."""
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    if PYDICOM_MAJOR < 3:  # pragma: no cover - pydicom 2.4 takes the encoding from the dataset
        ds.is_implicit_VR = True


def _mark_contours_encoded(ds: Dataset, *, implicit_vr: bool) -> None:
    """Declare the contour items already in the output encoding, so pydicom writes their raw
    Contour Data text as is instead of parsing it into one DSfloat per coordinate (pydicom 3
    re-parses raw elements of datasets whose original encoding differs from the output's).
    """
    for roi_item in ds.ROIContourSequence:
        for item in roi_item.get("ContourSequence", None) or []:
            charset = getattr(item, "_character_set", None)  # the charset pydicom will compare
            if charset is not None:  # harmless either way: DS text is ASCII in every encoding
                item.set_original_encoding(implicit_vr, True, charset)


class _SliceFinder:
    """SOP Instance UID of the reference slice a planar contour lies on (within 10% of a spacing)."""

    def __init__(self, reference: SeriesReference) -> None:
        self.uids = reference.sop_instance_uids
        self.positions = np.asarray(reference.slice_positions_mm, dtype=float)
        steps = np.diff(np.unique(np.round(self.positions, 6)))
        self.tol_mm = max(0.1 * float(steps.min()), 1e-3) if len(steps) else 0.01

    def uid_for(self, pts: np.ndarray, contour: Contour) -> str | None:
        if contour.geometric_type == "OPEN_NONPLANAR":
            return None
        z = pts[:, 2]
        if float(z.max() - z.min()) > PLANAR_TOLERANCE_MM:
            return None
        k = int(np.argmin(np.abs(self.positions - float(z.mean()))))
        if abs(self.positions[k] - float(z.mean())) <= self.tol_mm:
            return self.uids[k]
        if contour.referenced_sop_instance_uid in self.uids:
            return contour.referenced_sop_instance_uid
        return None


def format_ds(value: float) -> str:
    """A coordinate as DICOM DS text (<= 16 characters): 4 decimals, trailing zeros trimmed."""
    text = f"{value:.4f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", "", "-"):
        text = "0"
    if len(text) <= 16:
        return text
    for digits in range(10, 0, -1):  # very large magnitudes: scientific notation
        text = f"{value:.{digits}e}"
        if len(text) <= 16:
            return text
    raise InputError(f"coordinate {value!r} cannot be written as DICOM DS")


_TRAILING_ZEROS = re.compile(r"(\.\d*?)0+(?=\\|$)")
_TRAILING_POINT = re.compile(r"\.(?=\\|$)")
_NEGATIVE_ZERO = re.compile(r"(?:^|(?<=\\))-0(?=\\|$)")


def _ds_bytes(values: np.ndarray) -> bytes:
    """Backslash-separated DS text of ``values`` (as :func:`format_ds`, done on the whole string)."""
    values = np.asarray(values, dtype=float)
    if values.size and float(np.max(np.abs(values))) < 1e10:  # "%.4f" fits in 16 characters
        text = "\\".join(map("{:.4f}".format, values.tolist()))
        text = _NEGATIVE_ZERO.sub("0", _TRAILING_POINT.sub("", _TRAILING_ZEROS.sub(r"\1", text)))
    else:
        text = "\\".join(format_ds(v) for v in values.tolist())
    raw = text.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw
