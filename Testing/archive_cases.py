"""Synthetic studies for the archive tests: one lung phantom copied into several separate studies.

A PACS keys everything on UIDs, so copies of one case that keep their UIDs would collapse into a
single study there. Each folder built here is its own study: every non-standard UID of its files
(Study, Series, SOP Instance, Frame of Reference, Dose Reference UIDs, and every reference to
them) goes through one old -> new map per folder, so RS, RP and RD still reference each other
inside the folder and share nothing with another folder. Each study has its own patient and
study date (four in 2025, one in 2024, so StudyDate range queries select a subset):

============  ==========  ======================================================  =======
folder        StudyDate   content                                                 is_case
============  ==========  ======================================================  =======
case01        20250114    RS_planning.dcm, RD.dcm, RP.dcm                         yes
case02_hot    20250611    the same, dose x1.3 (DoseGridScaling)                   yes
case03_ref    20241105    the same + RS_REF.dcm (ITV +1 mm, PTV +2 mm in x,       yes
                          SpinalCord renamed Cord), like test_batch's fixture
case04_nodose 20250302    RS_planning.dcm, RP.dcm (no dose: a case that fails)    yes
ct_only       20250820    CT_0001..3.dcm: three planning CT slices                no
============  ==========  ======================================================  =======

New UIDs derive from ``seed``, the folder and the order of first appearance, so the same seed
gives the same UIDs (do not upload two archives built with one seed into one server).
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import generate_uid

from sbrtstandards.atomic import atomic_dir, write_text_atomic
from sbrtstandards.dicom.common import modality_of, read_dataset, save_dataset

STANDARD_UID_ROOT = "1.2.840.10008."  # DICOM's own UIDs (SOP classes, transfer syntaxes...): never changed
MANIFEST = "archive.json"
MANIFEST_VERSION = 1
PLANNING_FILES = ("RS_planning.dcm", "RD.dcm", "RP.dcm")
CT_SLICES = 3
DOSE_SCALE_HOT = 1.3
# reference set: planning ROI name -> (its name in RS_REF.dcm, shift along x in mm)
REF_SHIFTS_MM = {"ITV": ("ITV", 1.0), "PTV": ("PTV", 2.0), "SpinalCord": ("Cord", 0.0)}
STUDY_DESCRIPTION = "SBRT lung"


@dataclass(frozen=True)
class FolderSpec:
    """What one folder of the archive holds."""

    name: str
    study_date: str
    files: tuple[str, ...] = PLANNING_FILES
    dose_scale: float = 1.0
    reference_set: bool = False
    ct_only: bool = False


FOLDERS = (
    FolderSpec("case01", "20250114"),
    FolderSpec("case02_hot", "20250611", dose_scale=DOSE_SCALE_HOT),
    FolderSpec("case03_ref", "20241105", reference_set=True),
    FolderSpec("case04_nodose", "20250302", files=("RS_planning.dcm", "RP.dcm")),
    FolderSpec("ct_only", "20250820", files=(), ct_only=True),
)

_PHANTOMS: dict[int, Path] = {}  # seed -> planning folder of a phantom built once per process


def make_archive_cases(root: Path, seed: int = 5) -> dict[str, dict[str, Any]]:
    """Build (or reuse) the archive tree in ``root``; returns, per folder name, its study identity.

    Each value holds ``study_uid``, ``patient_id``, ``patient_name``, ``study_date``,
    ``study_description``, ``files`` (absolute paths), ``is_case``, and ``instances``
    (one dict per file: ``path``, ``modality``, ``sop_class_uid``, ``sop_instance_uid``,
    ``series_uid``). A tree already built in ``root`` with the same seed is reused as it is;
    existing folders of another origin are never overwritten (FileExistsError).
    """
    root = Path(root)
    cached = _read_manifest(root, seed)
    if cached is not None:
        return cached
    clashes = [f.name for f in FOLDERS if (root / f.name).exists()]
    if clashes:
        raise FileExistsError(
            f"{root}: already holds {', '.join(clashes)} but no archive built with seed {seed}")
    plan = _phantom_planning_folder(seed)
    result = {}
    for index, spec in enumerate(FOLDERS, start=1):
        result[spec.name] = _build_folder(root, spec, index, plan, seed)
    manifest = {"version": MANIFEST_VERSION, "seed": seed, "folders": _relative(result, root)}
    write_text_atomic(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return result


# ----------------------------------------------------------------------------- the phantom, built once


def _phantom_planning_folder(seed: int) -> Path:
    """The planning folder (CT/, RS_planning.dcm, RD.dcm, RP.dcm) of the lung phantom for ``seed``."""
    if seed not in _PHANTOMS:
        from sbrtstandards.phantom import write_case

        base = Path(tempfile.mkdtemp(prefix="sbrt-archive-phantom-"))
        atexit.register(shutil.rmtree, base, True)
        truth = write_case("lung", base / "lung", phases=2, seed=seed)
        _PHANTOMS[seed] = Path(truth["files"]["planning_rtstruct"]).parent
    return _PHANTOMS[seed]


# ----------------------------------------------------------------------------- one folder


class UidMap:
    """One folder's old -> new UID map; new UIDs are deterministic in (seed, folder, order seen)."""

    def __init__(self, seed: int, folder: str) -> None:
        self.seed = seed
        self.folder = folder
        self.new_by_old: dict[str, str] = {}

    def __call__(self, old: str) -> str:
        if not old or old.startswith(STANDARD_UID_ROOT):
            return old
        if old not in self.new_by_old:
            ordinal = len(self.new_by_old)
            entropy = ["sbrt-archive-cases", str(self.seed), self.folder, str(ordinal)]
            self.new_by_old[old] = str(generate_uid(entropy_srcs=entropy))
        return self.new_by_old[old]


def reuid(ds: Dataset, uid_map: UidMap) -> None:
    """Replace every non-standard UI value of ``ds`` (through all sequences) by ``uid_map``'s.

    The file meta is left alone except MediaStorageSOPInstanceUID (its Implementation Class
    UID names the writing software, not an object).
    """
    for element in _ui_elements(ds):
        value = element.value
        if isinstance(value, (list, MultiValue)):
            element.value = [uid_map(str(v)) for v in value]
        elif value:
            element.value = uid_map(str(value))
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _ui_elements(ds: Dataset) -> Iterator[Any]:
    """The UI elements of ``ds`` and its sequence items, converting nothing else (contours are big)."""
    for raw in ds.elements():  # raw elements: reading their VR does not decode their values
        if raw.VR not in (None, "SQ", "UI"):  # None: implicit VR, only the decoded element knows
            continue
        element = ds[raw.tag]
        if element.VR == "SQ":
            for item in element.value:
                yield from _ui_elements(item)
        elif element.VR == "UI":
            yield element


def _identity(index: int, spec: FolderSpec) -> dict[str, str]:
    return {
        "patient_id": f"SBRT-ARCH-{index:04d}",
        "patient_name": f"Test^Patient{index:02d}",
        "study_date": spec.study_date,
        "study_description": STUDY_DESCRIPTION,
    }


def _apply_identity(ds: Dataset, identity: dict[str, str], index: int) -> None:
    """Patient and study attributes of the folder's study (the same in each of its files)."""
    ds.PatientID = identity["patient_id"]
    ds.PatientName = identity["patient_name"]
    ds.StudyDate = identity["study_date"]
    ds.StudyDescription = identity["study_description"]
    ds.StudyID = str(index)
    ds.AccessionNumber = f"ARCH{index:04d}"


def _source_datasets(tmp: Path, spec: FolderSpec, plan: Path) -> dict[str, Dataset]:
    """The folder's files (by output name) read from the phantom, before new UIDs and identity."""
    if spec.ct_only:
        slices = sorted((plan / "CT").glob("*.dcm"))
        middle = len(slices) // 2 - CT_SLICES // 2
        return {f"CT_{i + 1:04d}.dcm": read_dataset(p, expect="CT")
                for i, p in enumerate(slices[middle:middle + CT_SLICES])}
    datasets = {name: read_dataset(plan / name) for name in spec.files}
    if spec.dose_scale != 1.0:
        dose = datasets["RD.dcm"]
        dose.DoseGridScaling = float(dose.DoseGridScaling) * spec.dose_scale
    if spec.reference_set:
        datasets["RS_REF.dcm"] = _reference_set(tmp / "RS_REF.dcm", plan / "RS_planning.dcm")
    return datasets


def _reference_set(path: Path, planning_rtstruct: Path) -> Dataset:
    """The reference set (ITV +1 mm, PTV +2 mm in x, SpinalCord renamed Cord), written then re-read."""
    from sbrtstandards.dicom.rtstruct import Contour, Roi, read_rtstruct, write_rtstruct
    from sbrtstandards.structure_margin import reference_from_structure_set

    ss = read_rtstruct(planning_rtstruct)
    rois = []
    for name, (new_name, dx_mm) in REF_SHIFTS_MM.items():
        roi = ss.roi(name)
        shift_mm = np.array([dx_mm, 0.0, 0.0])
        moved = [Contour(c.points_mm + shift_mm, c.geometric_type, c.referenced_sop_instance_uid)
                 for c in roi.contours]
        rois.append(Roi(0, new_name, roi.color_rgb, roi.interpreted_type, moved))
    write_rtstruct(path, rois, reference=reference_from_structure_set(ss), label="REF")
    ds = read_dataset(path, expect="RTSTRUCT")
    path.unlink()  # written again below, with the folder's UIDs
    return ds


def _build_folder(root: Path, spec: FolderSpec, index: int, plan: Path, seed: int) -> dict[str, Any]:
    uid_map = UidMap(seed, spec.name)
    identity = _identity(index, spec)
    target = root / spec.name
    instances = []
    with atomic_dir(target) as tmp:
        for name, ds in _source_datasets(tmp, spec, plan).items():
            reuid(ds, uid_map)
            _apply_identity(ds, identity, index)
            save_dataset(ds, tmp / name)
            instances.append({
                "path": target / name,
                "modality": modality_of(ds) or "",
                "sop_class_uid": str(ds.SOPClassUID),
                "sop_instance_uid": str(ds.SOPInstanceUID),
                "series_uid": str(ds.SeriesInstanceUID),
                "study_uid": str(ds.StudyInstanceUID),
            })
    study_uids = {i.pop("study_uid") for i in instances}
    if len(study_uids) != 1:  # the phantom's objects share one study; anything else is a bug here
        raise AssertionError(f"{target}: files of {len(study_uids)} studies")
    return {
        "study_uid": study_uids.pop(),
        **identity,
        "files": [i["path"] for i in instances],
        "is_case": not spec.ct_only,
        "instances": instances,
    }


# ----------------------------------------------------------------------------- manifest (reuse a built tree)


def _relative(result: dict[str, dict[str, Any]], root: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for name, entry in result.items():
        instances = [{**i, "path": str(Path(i["path"]).relative_to(root))} for i in entry["instances"]]
        out[name] = {**entry, "files": [i["path"] for i in instances], "instances": instances}
    return out


def _read_manifest(root: Path, seed: int) -> dict[str, dict[str, Any]] | None:
    """The tree described by ``root/archive.json`` if it was built with ``seed`` and is complete."""
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("version") != MANIFEST_VERSION or manifest.get("seed") != seed:
        return None
    result = {}
    for name, entry in manifest["folders"].items():
        instances = [{**i, "path": root / i["path"]} for i in entry["instances"]]
        if not all(i["path"].is_file() for i in instances):
            return None
        result[name] = {**entry, "files": [i["path"] for i in instances], "instances": instances}
    return result
