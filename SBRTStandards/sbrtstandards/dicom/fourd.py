"""Split a 4D-CT into its respiratory phases, and find each phase's structure sets.

4D-CTs reach the user in several shapes: one folder per phase; one folder holding one
series per phase (often beside MIP/AVG series the scanner computed); or one series holding
every phase, the slices repeating their positions and told apart by a tag. :func:`split_phases`
recognises these, labels the phases by their phase percent where the scanner wrote it
("CT 4D 20%", "Phase 20%", "T=20%", "Gated 20%"...) and otherwise numbers them, and refuses
what it cannot tell apart rather than guessing.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbrtstandards.dicom.scan import DicomFile, group_series, scan_dicom
from sbrtstandards.errors import InputError

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]

_POSITION_TOLERANCE_MM = 0.01

# Series that a scanner or TPS derives from the phases (projections), not phases themselves.
_PROJECTION = re.compile(
    r"(?<![a-z])(mip|min[\s_-]?ip|max[\s_-]?ip|avg|ave|aip|ave[\s_-]?ip|average|mean|maximum intensity|"
    r"minimum intensity)(?![a-z])",
    re.IGNORECASE,
)
# "0-90%", "30%-70%", "0 to 90 %": a range of phases, not one phase.
_PERCENT_RANGE = re.compile(r"\d+(?:\.\d+)?\s*%?\s*(?:-|\u2013|~|to)\s*\d+(?:\.\d+)?\s*%", re.IGNORECASE)
_PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s*%")


@dataclass
class Phase:
    """One respiratory phase of a 4D-CT: its CT slices and the structure sets drawn on it."""

    label: str  # "0%", "10%", ... or "phase 1", "phase 2" when no percent is known
    percent: float | None
    files: list[Path]  # the CT image files of this phase, sorted along the slice normal
    rtstruct_files: list[Path]  # RTSTRUCTs of this phase (in its folder, or referencing its series)
    series_instance_uid: str
    temporal_position_index: int | None = None
    description: str = ""
    records: list[DicomFile] = field(default_factory=list, repr=False)  # header summaries of ``files``


@dataclass
class _Candidate:
    """A phase before labelling: its slices, what it is called and where it came from."""

    files: list[DicomFile]
    percent: float | None
    temporal: int | None
    order: tuple[object, ...]
    source: str  # for messages: series or tag value and folder
    folder_index: int | None = None  # which given path it came from (one path per phase)


def is_projection(description: str) -> bool:
    """True for MIP / MinIP / AVG (AVE, AIP, average) series descriptions."""
    return bool(_PROJECTION.search(description or ""))


def phase_percent(text: str) -> float | None:
    """The phase percent written in a description or comment, or None if there is not exactly one.

    "CT 4D 20%", "Phase 20%", "20.0%", "T=20%", "Gated 20%", "50% Ex" give 20, 20, 20, 20, 20,
    50; a range ("0-90%") or a projection ("MIP 0%-90%") gives None.
    """
    if not text or is_projection(text) or _PERCENT_RANGE.search(text):
        return None
    values = {float(m) for m in _PERCENT.findall(text)}
    if len(values) != 1:
        return None
    value = values.pop()
    return value if 0.0 <= value <= 100.0 else None


def _common(values: Sequence[object]) -> object | None:
    """The value shared by every item, or None when any differs or is missing."""
    if not values or any(v is None for v in values):
        return None
    first = values[0]
    return first if all(v == first for v in values) else None


def _series_percent(files: Sequence[DicomFile]) -> float | None:
    """Phase percent of a series: description, else every slice's comment, else the cardiac tag."""
    from_description = phase_percent(files[0].series_description)
    if from_description is not None:
        return from_description
    comment = _common([phase_percent(f.image_comments) for f in files])
    if comment is not None:
        return float(comment)  # type: ignore[arg-type]
    nominal = _common([f.nominal_cardiac_phase_percent for f in files])
    return float(nominal) if nominal is not None else None  # type: ignore[arg-type]


def _normal_positions(files: Sequence[DicomFile]) -> np.ndarray:
    """Position of each slice along the normal of the first slice (header geometry only)."""
    iop = np.asarray(files[0].image_orientation, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return np.array([np.dot(f.image_position_mm, normal) for f in files])  # type: ignore[arg-type]


def _has_repeated_positions(files: Sequence[DicomFile]) -> bool:
    s = np.sort(_normal_positions(files))
    return bool(np.any(np.diff(s) < _POSITION_TOLERANCE_MM))


def _sorted_records(files: Sequence[DicomFile]) -> list[DicomFile]:
    s = _normal_positions(files)
    return [files[int(i)] for i in np.argsort(s, kind="stable")]


def _phase_volume_series(records: Sequence[DicomFile], where: str) -> dict[str, list[DicomFile]]:
    """CT image series that can be phases: not localizers, not MIP/AVG/MinIP projections."""
    ct = [r for r in records if r.modality == "CT" and r.is_image and not r.is_localizer]
    if not ct:
        kinds = sorted({r.modality or "unknown" for r in records})
        raise InputError(f"no CT image series in {where} (found {', '.join(kinds)})")
    groups = group_series(ct)
    phases = {uid: g for uid, g in groups.items() if not is_projection(g[0].series_description)}
    skipped = [g[0].describe_series() for uid, g in groups.items() if uid not in phases]
    if skipped:
        logger.info("%s: left out projection series %s", where, "; ".join(skipped))
    if not phases:
        raise InputError(f"no CT phase series in {where}: only projections ({'; '.join(skipped)})")
    return phases


def _split_one_series(files: list[DicomFile], where: str) -> list[_Candidate]:
    """Phases of a single series whose slices repeat positions, told apart by a per-slice tag.

    The first tag (in the order below) present on every slice that splits the series into
    volumes of at least two slices, none repeating a position, tells the phases apart.
    """
    uid = files[0].series_instance_uid
    keys: list[tuple[str, list[object]]] = [
        ("ImageComments phase percent", [phase_percent(f.image_comments) for f in files]),
        ("TemporalPositionIndex", [f.temporal_position_index for f in files]),
        ("NominalPercentageOfCardiacPhase", [f.nominal_cardiac_phase_percent for f in files]),
        ("TriggerTime", [f.trigger_time_ms for f in files]),
    ]
    for name, values in keys:
        if any(v is None for v in values) or len(set(values)) < 2:
            continue
        groups: dict[object, list[DicomFile]] = {}
        for f, v in zip(files, values):
            groups.setdefault(v, []).append(f)
        if any(len(g) < 2 or _has_repeated_positions(g) for g in groups.values()):
            continue  # this tag does not make volumes (e.g. a trigger time that differs per slice)
        candidates = []
        for value, members in sorted(groups.items(), key=lambda item: float(item[0])):  # type: ignore[arg-type]
            is_percent = name in ("ImageComments phase percent", "NominalPercentageOfCardiacPhase")
            candidates.append(
                _Candidate(
                    files=members,
                    percent=float(value) if is_percent else None,  # type: ignore[arg-type]
                    temporal=int(value) if name == "TemporalPositionIndex" else None,  # type: ignore[call-overload]
                    order=(float(value),),  # type: ignore[arg-type]
                    source=f"series {uid} slices with {name} {value} in {where}",
                )
            )
        return candidates
    raise InputError(
        f"{where}: CT series {files[0].describe_series()} repeats slice positions but its slices are "
        "not split into volumes by a phase percent in ImageComments, TemporalPositionIndex, "
        "NominalPercentageOfCardiacPhase or TriggerTime; export the phases as separate series"
    )


def _series_candidates(
    groups: dict[str, list[DicomFile]], where: str, folder_index: int | None = None
) -> list[_Candidate]:
    """One candidate phase per series."""
    out = []
    for uid, members in groups.items():
        first = members[0]
        temporal = _common([f.temporal_position_index for f in members])
        out.append(
            _Candidate(
                files=members,
                percent=_series_percent(members),
                temporal=temporal,  # type: ignore[arg-type]
                order=(first.series_number if first.series_number is not None else 1 << 30, uid),
                source=f"{first.describe_series()} in {where}",
                folder_index=folder_index,
            )
        )
    with_percent = [c for c in out if c.percent is not None]
    if folder_index is None and len(with_percent) >= 2 and len(with_percent) < len(out):
        left_out = [c.source for c in out if c.percent is None]
        logger.warning(
            "%s: series without a phase percent left out of the 4D-CT: %s", where, "; ".join(left_out)
        )
        out = with_percent
    return out


def _label(candidates: list[_Candidate]) -> list[tuple[str, _Candidate]]:
    """Sort and label: by percent when every phase has one, else by temporal index, else as found."""
    if all(c.percent is not None for c in candidates):
        ordered = sorted(candidates, key=lambda c: c.percent)  # type: ignore[arg-type, return-value]
        labelled = [(f"{c.percent:g}%", c) for c in ordered]
    else:
        if all(c.temporal is not None for c in candidates):
            ordered = sorted(candidates, key=lambda c: c.temporal)  # type: ignore[arg-type, return-value]
            seen: dict[int | None, str] = {}
            for c in ordered:
                if c.temporal in seen:
                    raise InputError(
                        f"two phases have TemporalPositionIndex {c.temporal}: "
                        f"{seen[c.temporal]} and {c.source}"
                    )
                seen[c.temporal] = c.source
        else:
            ordered = sorted(candidates, key=lambda c: c.order)  # type: ignore[arg-type, return-value]
        for c in ordered:
            c.percent = None
        labelled = [(f"phase {n}", c) for n, c in enumerate(ordered, start=1)]
    by_label: dict[str, list[str]] = {}
    for label, c in labelled:
        by_label.setdefault(label, []).append(c.source)
    twice = {label: sources for label, sources in by_label.items() if len(sources) > 1}
    if twice:
        detail = "; ".join(f"{label}: {', '.join(sources)}" for label, sources in twice.items())
        raise InputError(f"4D-CT phases labelled twice ({detail})")
    return labelled


def _check_phase(c: _Candidate) -> None:
    if _has_repeated_positions(c.files):
        raise InputError(
            f"{c.source}: the phase repeats slice positions (several phases in one series that no tag "
            "tells apart, or a copied slice)"
        )


def _attach_rtstructs(
    phases: list[Phase], candidates: list[_Candidate], rtstructs: list[tuple[DicomFile, int | None]]
) -> None:
    """Give each RTSTRUCT to the phase whose images or series it references, else its folder's phase."""
    by_sop: dict[str, int] = {}
    by_series: dict[str, set[int]] = {}
    by_folder: dict[Path, set[int]] = {}
    for n, c in enumerate(candidates):
        for f in c.files:
            by_sop[f.sop_instance_uid] = n
            by_series.setdefault(f.series_instance_uid, set()).add(n)
            by_folder.setdefault(f.path.parent, set()).add(n)
    for record, folder_index in rtstructs:
        hits = {by_sop[s] for s in record.referenced_sop_instance_uids if s in by_sop}
        if len(hits) != 1:
            hits = set().union(*(by_series.get(s, set()) for s in record.referenced_series_uids))
        if len(hits) != 1 and folder_index is not None:
            hits = {n for n, c in enumerate(candidates) if c.folder_index == folder_index}
        if len(hits) != 1:
            hits = _phases_of_nearest_folder(record.path, by_folder)
        if len(hits) == 1:
            phases[hits.pop()].rtstruct_files.append(record.path)
        else:
            logger.warning(
                "%s: RTSTRUCT not attached to any 4D-CT phase (no reference, no phase folder)", record.path
            )


def _phases_of_nearest_folder(path: Path, by_folder: dict[Path, set[int]]) -> set[int]:
    """Phases whose CT files lie under the nearest enclosing folder of ``path`` that holds any.

    ``phase_10/RS.dcm`` beside ``phase_10/CT/*.dcm`` belongs to that phase; an RTSTRUCT at
    the top of a folder holding every phase belongs to none.
    """
    for folder in path.parents:
        hits: set[int] = set()
        for ct_folder, phases in by_folder.items():
            if ct_folder == folder or folder in ct_folder.parents:
                hits |= phases
        if hits:
            return hits
    return set()


def split_phases(
    paths: Sequence[str | os.PathLike[str]], *, progress: ProgressCallback | None = None
) -> list[Phase]:
    """The phases of a 4D-CT given as one folder per phase, or as one folder holding them all.

    Several paths: each holds exactly one CT phase series (MIP/AVG/MinIP series beside it are
    ignored). One path: one series per phase, or one series whose slices repeat positions and
    carry a phase percent in ImageComments, a TemporalPositionIndex, a
    NominalPercentageOfCardiacPhase or a TriggerTime. When at least two series carry a phase
    percent, series without one (a free-breathing scan beside the phases) are left out with a
    warning. Phases are sorted and labelled by percent ("20%") when every phase has one, else
    numbered ("phase 1"...) by temporal index or series number (several paths: in the order
    given). RTSTRUCTs are attached to the phase whose images or series they reference, else to
    the phase in their folder. Fewer than two phases, or a label given twice: InputError.
    """
    roots = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not roots:
        raise InputError("no 4D-CT folders given")
    candidates: list[_Candidate] = []
    rtstructs: list[tuple[DicomFile, int | None]] = []
    if len(roots) == 1:
        records = scan_dicom(roots, progress=progress)
        where = str(roots[0])
        groups = _phase_volume_series(records, where)
        if len(groups) == 1:
            only = next(iter(groups.values()))
            if not _has_repeated_positions(only):
                raise InputError(
                    f"{where} holds a single CT phase ({only[0].describe_series()}, {len(only)} slices, "
                    "no repeated positions); a 4D-CT needs at least two phases"
                )
            candidates = _split_one_series(only, where)
        else:
            candidates = _series_candidates(groups, where)
        rtstructs = [(r, None) for r in records if r.modality == "RTSTRUCT"]
    else:
        seen_series: dict[str, str] = {}
        for n, root in enumerate(roots):
            step = None if progress is None else _scaled(progress, n / len(roots), (n + 1) / len(roots))
            records = scan_dicom([root], progress=step)
            groups = _phase_volume_series(records, str(root))
            if len(groups) != 1:
                listing = "; ".join(g[0].describe_series() for g in groups.values())
                raise InputError(
                    f"{root} holds {len(groups)} CT series ({listing}); with one path per phase each path "
                    "must hold one phase series (give a whole 4D-CT folder alone to split it)"
                )
            uid = next(iter(groups))
            if uid in seen_series:
                raise InputError(f"the same CT series {uid} is in {seen_series[uid]} and {root}")
            seen_series[uid] = str(root)
            candidate = _series_candidates(groups, str(root), folder_index=n)[0]
            candidate.order = (n,)
            candidates.append(candidate)
            rtstructs.extend((r, n) for r in records if r.modality == "RTSTRUCT")
    if len(candidates) < 2:
        raise InputError(f"only {len(candidates)} CT phase found in {', '.join(map(str, roots))}")
    for c in candidates:
        _check_phase(c)
    labelled = _label(candidates)
    ordered = [c for _, c in labelled]
    phases = []
    for label, c in labelled:
        records_sorted = _sorted_records(c.files)
        phases.append(
            Phase(
                label=label,
                percent=c.percent,
                files=[f.path for f in records_sorted],
                rtstruct_files=[],
                series_instance_uid=c.files[0].series_instance_uid,
                temporal_position_index=c.temporal,
                description=c.files[0].series_description,
                records=records_sorted,
            )
        )
    unique: dict[Path, tuple[DicomFile, int | None]] = {}
    for record, index in rtstructs:
        unique.setdefault(record.path.resolve(), (record, index))
    _attach_rtstructs(phases, ordered, list(unique.values()))
    return phases


def _scaled(progress: ProgressCallback, start: float, stop: float) -> ProgressCallback:
    def report(fraction: float, message: str) -> None:
        progress(start + (stop - start) * fraction, message)

    return report
