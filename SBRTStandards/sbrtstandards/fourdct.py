"""The 4D-CT workflow of ``sbrt fourd``: projections, ITV on the AVG, PTV, one RTSTRUCT.

Phases are read one at a time (CT series and that phase's RTSTRUCT), so memory holds the
projections, the running sums and one phase. The GTV of every phase is rasterised directly on
the reference grid (the first phase's grid, which is also the AVG's) from its LPS contours,
so phases whose grids differ still give exact masks. Outputs go to OUT (written atomically):
``MIP/``, ``AVG/``, ``MinIP/`` (CT series sharing the phases' Frame of Reference) and
``RS_ITV_PTV.dcm`` (ITV and PTV, referencing the AVG).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbrtstandards.contours import roi_mask, roi_volume_cc
from sbrtstandards.dicom.ct import CtSeries, read_ct_series, write_ct_series
from sbrtstandards.dicom.fourd import Phase, split_phases
from sbrtstandards.dicom.rtstruct import Roi, read_rtstruct, write_rtstruct
from sbrtstandards.errors import FrameOfReferenceError, InputError
from sbrtstandards.grid import Grid
from sbrtstandards.itv import PhaseGtv, build_itv, threshold_assist
from sbrtstandards.margins import Margin, grow
from sbrtstandards.projections import PhaseImage, project_phases

logger = logging.getLogger(__name__)
Progress = Callable[[float, str], None]

PROJECTION_SERIES = {"MIP": 901, "AVG": 902, "MinIP": 903}


@dataclass
class FourDResult:
    json: dict[str, Any]
    itv_mask: np.ndarray
    ptv_mask: np.ndarray
    grid: Grid
    projections: dict[str, np.ndarray]
    warnings: list[str] = field(default_factory=list)


def run_fourd(
    phase_paths: Sequence[str | os.PathLike[str]],
    gtv_name: str,
    out_dir: str | os.PathLike[str],
    *,
    ptv_margin: Any = 5.0,
    resample: bool = False,
    assist: str | None = None,
    progress: Progress | None = None,
) -> FourDResult:
    """Projections, ITV (union of phase GTVs, on the AVG), PTV = ITV + margin, written to ``out_dir``.

    ``ptv_margin`` is a :class:`sbrtstandards.margins.Margin` or a number of mm; ``assist`` is
    ``"mip"`` or ``"minip"`` to add a thresholded starting contour ``ITV_assist`` for the user to edit.
    """
    margin = ptv_margin if isinstance(ptv_margin, Margin) else Margin.isotropic(float(ptv_margin))
    out = Path(out_dir).resolve()
    phases = split_phases(list(phase_paths))
    n = len(phases)
    first: dict[str, Any] = {}
    gtvs: list[PhaseGtv] = []
    warnings: list[str] = []

    def stream() -> Iterator[PhaseImage]:
        for idx, ph in enumerate(phases):
            ct = read_ct_series(ph.files)
            if not first:
                first["ct"] = ct
            ref_grid: Grid = first["ct"].grid
            gtvs.append(_phase_gtv(ph, ct, gtv_name, ref_grid, warnings))
            if progress:
                progress(0.7 * (idx + 1) / n, f"phase {ph.label}")
            yield PhaseImage(ph.label, ct.array_hu(), ct.grid, source=str(ph.files[0].parent))

    proj = project_phases(stream(), resample=resample)
    grid = proj.grid
    ct0 = first["ct"]
    study = ct0.reference.study
    itv = build_itv(gtvs, grid)
    warnings.extend(itv.warnings)
    if progress:
        progress(0.75, "PTV margin")
    ptv_mask = grow(itv.mask, grid, margin)

    refs = {}
    paths = {}
    for i, (name, array) in enumerate(proj.as_dict().items()):
        if progress:
            progress(0.8 + 0.05 * i, f"writing {name}")
        paths[name] = out / name
        refs[name] = write_ct_series(
            paths[name],
            array,
            grid,
            study=study,
            series_description=f"4D-CT {name} of {n} phases ({proj.labels[0]}..{proj.labels[-1]})",
            series_number=PROJECTION_SERIES[name],
            extra_tags={"ImageType": ["DERIVED", "SECONDARY", "AXIAL"]},
        )
    itv_roi = Roi.from_mask("ITV", itv.mask, grid, number=1, interpreted_type="CTV")
    ptv_roi = Roi.from_mask("PTV", ptv_mask, grid, number=2, interpreted_type="PTV")
    rois = [itv_roi, ptv_roi]
    if assist:
        union = np.zeros(grid.shape, dtype=bool)
        for g in gtvs:
            if g.mask is not None:
                union |= g.mask
        image = proj.mip if assist == "mip" else proj.minip
        seed = threshold_assist(image, grid, union, mode=assist)
        rois.append(Roi.from_mask("ITV_assist", seed, grid, number=3, interpreted_type="CTV"))
    rs_path = write_rtstruct(
        out / "RS_ITV_PTV.dcm",
        rois,
        reference=refs["AVG"],
        label="ITV_PTV",
        description=f"ITV = union of {gtv_name} over {n} phases; PTV = ITV + margin",
    )
    if progress:
        progress(1.0, "done")
    result = {
        "phases": [
            {
                "label": r.label,
                "gtv_cc": r.gtv_cc,
                "centroid_mm": r.centroid_mm,
                "fraction_in_itv": r.fraction_in_itv,
            }
            for r in itv.phases
        ],
        "itv_cc": roi_volume_cc(itv_roi),
        "ptv_cc": roi_volume_cc(ptv_roi),
        "ptv_margin_mm": margin.as_dict(),
        "motion_mm": itv.motion_mm,
        "projections": {k: str(v) for k, v in paths.items()},
        "rtstruct": str(rs_path.resolve()),
        "frame_of_reference_uid": study.frame_of_reference_uid,
        "resampled_phases": proj.resampled,
        "warnings": warnings,
    }
    if assist:
        result["itv_assist_cc"] = roi_volume_cc(rois[-1])
    return FourDResult(result, itv.mask, ptv_mask, grid, proj.as_dict(), warnings)


def _phase_gtv(ph: Phase, ct: CtSeries, gtv_name: str, ref_grid: Grid, warnings: list[str]) -> PhaseGtv:
    """The phase's GTV mask on the reference grid, or a warning saying why there is none."""
    if not ph.rtstruct_files:
        warnings.append(f"phase {ph.label}: no RTSTRUCT found beside its CT series")
        return PhaseGtv(ph.label, None)
    ss = read_rtstruct(ph.rtstruct_files[0])
    for_ct = ct.grid.frame_of_reference_uid
    for_ss = ss.study.frame_of_reference_uid
    if for_ct and for_ss and for_ct != for_ss:
        raise FrameOfReferenceError(
            f"{ph.rtstruct_files[0]}: Frame of Reference {for_ss} differs from its phase CT's ({for_ct})"
        )
    try:
        roi = ss.roi(gtv_name)
    except InputError:
        warnings.append(f"phase {ph.label}: no structure named {gtv_name!r} in {ph.rtstruct_files[0].name}")
        return PhaseGtv(ph.label, None)
    if roi.is_empty:
        warnings.append(f"phase {ph.label}: {gtv_name} has no contours")
        return PhaseGtv(ph.label, np.zeros(ref_grid.shape, dtype=bool))
    return PhaseGtv(ph.label, roi_mask(roi, ref_grid), roi_volume_cc(roi))
