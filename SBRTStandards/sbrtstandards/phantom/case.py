"""Synthetic 4D-CT SBRT cases: the in-memory case (:func:`make_case`) and its files (:func:`write_case`).

Files written by :func:`write_case` (also listed, relative to ``out_dir``, in ``truth.json``
under ``"files"``)::

    OUT/phase_00/CT_0001.dcm ...     CT series of phase 0 % (end-inhale), "4D-CT 0%"
    OUT/phase_00/RS_phase_00.dcm     RTSTRUCT on that series with one ROI, "GTV"
    OUT/phase_10/ ...                one folder per phase, named by its percent
    OUT/planning/CT/                 average-intensity CT (AVG of the phases: the planning CT)
    OUT/planning/RS_planning.dcm     planning structures on the AVG (TG-263 names), ITV, PTV
    OUT/planning/RP.dcm              RTPLAN (prescription to the PTV, two arcs)
    OUT/planning/RD.dcm              RTDOSE, PLAN summation, Gy, 2 mm grid covering the body
    OUT/truth.json                   the known answers

All objects share one study and one Frame of Reference. Pixel data, structures, dose and
truth are deterministic (the seed only drives the CT noise); DICOM UIDs are new on every
call, so two writes of the same case never collide in a PACS or in Slicer's database.

``truth.json`` (``"format": "sbrt-phantom-truth"``, ``"version": 1``; LPS mm, cc, Gy). Values
named ``*_voxel_*`` are counted on the CT grid (voxel centre inside the true shape); all
others are those of the continuous model:

- ``phases``: per phase ``index``, ``label`` ("20%", as ``sbrt fourd`` labels it),
  ``percent``, ``folder``, ``centroid_mm`` (centre of the true GTV sphere), ``gtv_cc``
  (= ``gtv_cc_analytic``, 4/3 pi r^3), ``centroid_voxel_mm``, ``gtv_voxel_cc``,
  ``breathing_signal`` (1 end-inhale, 0 end-exhale), ``ct`` and ``rtstruct`` (paths);
- ``motion_mm`` {LR, AP, SI, vector}: peak-to-peak range of the true centres per axis and
  the largest distance between two of them (``motion_voxel_mm``: of the voxel centroids);
  ``amplitude_mm``: the requested SI excursion of the trajectory;
- ``itv_cc`` and ``itv`` {cc, method, voxel_cc}: volume of the union of the phase spheres;
  ``itv_center_mm``; ``ptv_margin_mm``, ``ptv_cc`` and ``ptv`` {cc, method, voxel_cc}: the
  union of spheres of radius r + 5 mm (= ITV + 5 mm, exact margin);
- ``tumour``: radius, volume, CT number, host organ, ``location_class`` (the preset asked
  for) and ``location_class_by_distance``, side, end-exhale and mid-position centres,
  distances of the ITV to the proximal bronchial tree, trachea and oesophagus,
  ``inside_host_fraction_min``;
- ``breathing``: the trajectory model and its parameters, per-organ motion fractions;
- ``prescription`` {rx_gy, fractions, dose_per_fraction_gy, bed10_gy, target};
- ``dose``: the model and its normalisation, grid ``max_gy`` and where it is, and
  ``analytic`` {max_percent, v100_cc, v50_cc, ptv_v100_percent, ci_rtog, r50, gi,
  d2cm_percent, surface_percent} of the continuous dose;
- ``structures`` {name: {volume_cc}} of the planning structure set (voxel counts);
- ``ct_grid``, ``dose_grid``, ``study_instance_uid``, ``frame_of_reference_uid``,
  ``noise_sd_hu``, ``seed``, ``site``, ``files``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbrtstandards import __version__, tg263
from sbrtstandards.atomic import atomic_dir
from sbrtstandards.dicom.common import StudyInfo
from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.phantom import anatomy as A
from sbrtstandards.phantom.balls import union_of_balls_volume_mm3
from sbrtstandards.phantom.dose import DoseModel, analytic_metrics, dose_on_grid, normalisation
from sbrtstandards.phantom.motion import MEAN_SIGNAL, Trajectory, phase_percents, signal
from sbrtstandards.phantom.shapes import Tube

Progress = Callable[[float, str], None]

SITES = ("lung", "liver")
LOCATIONS = ("peripheral", "central", "ultracentral")
SIDES = ("right", "left")
MIN_PHASES, MAX_PHASES = 2, 20
MAX_AMPLITUDE_MM = 30.0
PTV_MARGIN_MM = 5.0
NOISE_SD_HU = 12.0
DOSE_SPACING_MM = 2.0
MIN_STRUCTURE_VOXELS = 20  # organs that only graze the field of view are left out
TRUTH_FORMAT = "sbrt-phantom-truth"
TRUTH_VERSION = 1


@dataclass(frozen=True)
class TumourPreset:
    """Where the tumour is at end-exhale (LPS mm), its size and the plan that suits it."""

    exhale_centre_mm: tuple[float, float, float]
    radius_mm: float
    amplitude_mm: float  # default peak-to-peak SI excursion
    rx_gy: float
    fractions: int


# Lung: peripheral = >= 2 cm from the proximal bronchial tree (54 Gy / 3 fx); central = within
# 2 cm (50 Gy / 5 fx); ultra-central = abutting the bronchial tree (60 Gy / 8 fx). These are the
# fractionations of the Chinese lung SBRT standard (T/CNHAW-B-0020-2025, 5.3 / 6.2).
LUNG_PRESETS: dict[tuple[str, str], TumourPreset] = {
    ("peripheral", "right"): TumourPreset((-105.0, 20.0, -5.0), 12.0, 15.0, 54.0, 3),
    ("peripheral", "left"): TumourPreset((105.0, 20.0, -5.0), 12.0, 15.0, 54.0, 3),
    ("central", "right"): TumourPreset((-72.0, -2.0, 26.0), 12.0, 10.0, 50.0, 5),
    ("central", "left"): TumourPreset((76.0, -40.0, 28.0), 12.0, 10.0, 50.0, 5),
    ("ultracentral", "right"): TumourPreset((-41.6, 6.0, 3.0), 12.0, 8.0, 60.0, 8),
    ("ultracentral", "left"): TumourPreset((55.0, 12.0, -2.0), 12.0, 8.0, 60.0, 8),
}
# Liver: a hepatocellular carcinoma in the right lobe (segment VIII), 50 Gy / 5 fx (BED10 100 Gy).
LIVER_PRESET = TumourPreset((-60.0, -5.0, -80.0), 16.0, 12.0, 50.0, 5)

# CT grids: 240 x 170 voxels of 1.5 mm (360 x 255 mm field of view, body and couch inside),
# 2 mm slices (the lung and liver standards ask for <= 2 mm simulation CT slices); the lung
# case from below the costophrenic recesses to above the apices (278 mm), the liver case
# from the lung bases to the lower poles of the kidneys (274 mm).
CT_SPACING_MM = (1.5, 1.5, 2.0)
CT_COLUMNS, CT_ROWS = 240, 170
CT_Z_RANGE_MM = {"lung": (-120.0, 140), "liver": (-250.0, 138)}  # first slice z, number of slices

# Planning structures: (TG-263 role, labels of the planning label map).
STRUCTURE_LABELS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("lung_l", (A.LUNG_L,)),
    ("lung_r", (A.LUNG_R,)),
    ("heart", (A.HEART,)),
    ("esophagus", (A.ESOPHAGUS,)),
    ("trachea", (A.TRACHEA,)),
    ("bronchus", (A.BRONCHUS,)),
    ("aorta", (A.AORTA,)),
    ("pulmonary_artery", (A.PULMONARY,)),
    ("vena_cava_s", (A.SVC,)),
    ("vena_cava_i", (A.IVC,)),
    ("spinal_cord", (A.SPINAL_CORD,)),
    ("spinal_canal", (A.SPINAL_CANAL, A.SPINAL_CORD)),
    ("vertebra", (A.VERTEBRAL_BODY,)),
    ("sternum", (A.STERNUM,)),
    ("ribs", (A.RIB,)),
    ("liver", (A.LIVER,)),
    ("stomach", (A.STOMACH,)),
    ("duodenum", (A.DUODENUM,)),
    ("bowel_small", (A.BOWEL_SMALL,)),
    ("bowel_large", (A.BOWEL_LARGE,)),
    ("kidney_l", (A.KIDNEY_L,)),
    ("kidney_r", (A.KIDNEY_R,)),
    ("spleen", (A.SPLEEN,)),
)


# ------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class CaseOptions:
    """Validated options of one case."""

    site: str
    phases: int
    amplitude_mm: float
    seed: int
    location: str
    side: str
    preset: TumourPreset
    tumour_centre_mm: tuple[float, float, float]
    tumour_radius_mm: float


def _check_options(
    site: str,
    phases: int,
    amplitude_mm: float | None,
    seed: int,
    location: str | None,
    side: str | None,
    tumour_centre_mm: Sequence[float] | None,
    tumour_radius_mm: float | None,
) -> CaseOptions:
    """Validate every option; bad values raise :class:`InputError` naming the option."""
    if site not in SITES:
        raise InputError(f"phantom: unknown site {site!r}; choose one of {', '.join(SITES)}")
    if (
        isinstance(phases, bool)
        or not isinstance(phases, (int, np.integer))
        or not (MIN_PHASES <= phases <= MAX_PHASES)
    ):
        raise InputError(f"phantom: --phases must be a whole number from {MIN_PHASES} to {MAX_PHASES}, got {phases!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"phantom: --seed must be a whole number >= 0, got {seed!r}")
    if site == "liver":
        if location not in (None, "peripheral") or side not in (None, "right"):
            raise InputError(
                "phantom: --location and --side apply to the lung case; the liver tumour is in the right lobe"
            )
        location, side, preset = "liver", "right", LIVER_PRESET
    else:
        location = location or "peripheral"
        side = side or "right"
        if location not in LOCATIONS:
            raise InputError(f"phantom: unknown tumour location {location!r}; choose one of {', '.join(LOCATIONS)}")
        if side not in SIDES:
            raise InputError(f"phantom: unknown side {side!r}; choose one of {', '.join(SIDES)}")
        preset = LUNG_PRESETS[(location, side)]
    amp = preset.amplitude_mm if amplitude_mm is None else _finite(amplitude_mm, "--amplitude-mm")
    if not 0.0 <= amp <= MAX_AMPLITUDE_MM:
        raise InputError(f"phantom: --amplitude-mm must be from 0 to {MAX_AMPLITUDE_MM:g} mm, got {amp:g}")
    radius = preset.radius_mm if tumour_radius_mm is None else _finite(tumour_radius_mm, "tumour radius")
    if not 3.0 <= radius <= 30.0:
        raise InputError(f"phantom: tumour radius must be from 3 to 30 mm, got {radius:g}")
    centre = preset.exhale_centre_mm if tumour_centre_mm is None else tuple(tumour_centre_mm)
    if len(centre) != 3 or not all(math.isfinite(float(v)) for v in centre):
        raise InputError(f"phantom: tumour centre must be three finite LPS coordinates in mm, got {centre!r}")
    return CaseOptions(
        site,
        int(phases),
        float(amp),
        int(seed),
        location,
        side,
        preset,
        (float(centre[0]), float(centre[1]), float(centre[2])),
        float(radius),
    )


def _finite(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"phantom: {what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"phantom: {what} must be finite, got {value!r}")
    return v


def phase_label(percent: float) -> str:
    """ "20%" (as :mod:`sbrtstandards.dicom.fourd` labels phases), one decimal when not whole."""
    return f"{round(percent, 1):g}%"


def phase_folder(percent: float) -> str:
    return f"phase_{round(percent):02d}"


def ct_grid(site: str, frame_of_reference_uid: str | None) -> Grid:
    z0, nk = CT_Z_RANGE_MM[site]
    sx, sy, sz = CT_SPACING_MM
    origin = (-(CT_COLUMNS - 1) * sx / 2.0, -128.25, z0)
    return Grid(origin, CT_SPACING_MM, (CT_COLUMNS, CT_ROWS, nk), frame_of_reference_uid=frame_of_reference_uid)


def dose_grid(ct: Grid) -> Grid:
    """A 2 mm grid over the body (not aligned with the CT voxels, as a TPS grid seldom is)."""
    lo = (-A.BODY_SEMI[0] - 3.0, A.BODY_CENTRE[1] - A.BODY_SEMI[1] - 3.0)
    hi = (A.BODY_SEMI[0] + 3.0, A.BODY_BACK_Y + 3.0)
    # cover the CT slices and their half-slice end caps, as DVH tools extend the structures
    zs = ct.axis_coords_mm(2)
    cap = ct.spacing_mm[2] / 2.0
    z0 = float(zs[0]) - cap - 0.5
    nk = int(math.ceil((float(zs[-1]) + cap - z0) / DOSE_SPACING_MM)) + 1
    ni = int(math.ceil((hi[0] - lo[0]) / DOSE_SPACING_MM)) + 1
    nj = int(math.ceil((hi[1] - lo[1]) / DOSE_SPACING_MM)) + 1
    return Grid(
        (lo[0], lo[1], z0),
        (DOSE_SPACING_MM,) * 3,
        (ni, nj, nk),
        frame_of_reference_uid=ct.frame_of_reference_uid,
    )


# ------------------------------------------------------------------------------ the case


class PhaseImages(Sequence[np.ndarray]):
    """The phase CTs (int16 HU, [k, j, i]), computed on access so N phases need not sit in memory.

    ``images[n]`` paints phase ``n`` and adds its noise (seeded by ``(seed, n)``), so the
    same case gives the same image every time; the last image is kept.
    """

    def __init__(self, painter: A.Painter, states: list[A.BreathingState], seed: int, noise_sd_hu: float):
        self._painter = painter
        self._states = states
        self._seed = seed
        self._noise = noise_sd_hu
        self._last: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._states)

    def __getitem__(self, n: int) -> np.ndarray:  # type: ignore[override]
        if not isinstance(n, (int, np.integer)):
            raise TypeError("phase images are indexed by an integer")
        if n < 0:
            n += len(self)
        if not 0 <= n < len(self):
            raise IndexError(f"phase {n} out of range (0..{len(self) - 1})")
        if self._last is not None and self._last[0] == n:
            return self._last[1]
        hu, _labels, _under = self._painter.paint(self._states[n])
        image = add_noise(hu, self._seed, n, self._noise)
        self._last = (n, image)
        return image

    def __iter__(self) -> Iterator[np.ndarray]:
        for n in range(len(self)):
            yield self[n]

    def labels(self, n: int) -> np.ndarray:
        """The label map of phase ``n`` (uint8, see ``anatomy.LABEL_NAMES``), tumour included."""
        _hu, labels, _under = self._painter.paint(self._states[n])
        return labels


def add_noise(hu: np.ndarray, seed: int, phase_index: int, sd_hu: float) -> np.ndarray:
    """Gaussian noise (seeded per phase), rounded and clipped to the int16 CT range -1024..3071."""
    rng = np.random.default_rng([seed, phase_index])
    noisy = hu + rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(sd_hu)
    return np.clip(np.rint(noisy), -1024, 3071).astype(np.int16)


@dataclass
class PhantomCase:
    """A synthetic 4D-CT SBRT case in memory (no files); see :func:`make_case`."""

    site: str
    grid: Grid
    phase_percents: list[float]
    phase_hu: Sequence[np.ndarray]  # int16 [k, j, i] per phase, computed lazily (PhaseImages)
    gtv_masks: list[np.ndarray]  # bool per phase: voxel centres inside the true tumour sphere
    structures: dict[str, np.ndarray]  # planning structures (TG-263 names) at mid-position + ITV, PTV
    dose_gy: np.ndarray
    dose_grid: Grid
    rx_gy: float
    fractions: int
    truth: dict[str, Any]
    study: StudyInfo = field(default_factory=StudyInfo)
    labels: np.ndarray | None = None  # planning label map (uint8, see anatomy.LABEL_NAMES)
    phase_centres_mm: np.ndarray | None = None  # (N, 3) true tumour centres
    _average: np.ndarray | None = field(default=None, repr=False)

    def average_hu(self, progress: Progress | None = None) -> np.ndarray:
        """The AVG of the phase CTs (int16): the planning CT, computed once."""
        if self._average is None:
            total = np.zeros(self.grid.shape, dtype=np.int32)
            for n in range(len(self.phase_hu)):
                total += self.phase_hu[n]
                if progress:
                    progress((n + 1) / len(self.phase_hu), f"average CT: phase {n + 1}/{len(self.phase_hu)}")
            self._average = np.rint(total / len(self.phase_hu)).astype(np.int16)
        return self._average


def make_case(
    site: str,
    *,
    phases: int = 10,
    amplitude_mm: float | None = None,
    seed: int = 0,
    location: str | None = None,
    side: str | None = None,
    tumour_centre_mm: Sequence[float] | None = None,
    tumour_radius_mm: float | None = None,
) -> PhantomCase:
    """Build a synthetic 4D-CT case in memory.

    ``site`` is ``"lung"`` (thorax, tumour in a lung) or ``"liver"`` (upper abdomen, tumour in
    the right liver lobe). ``amplitude_mm`` is the tumour's peak-to-peak excursion along SI
    (default 15 mm for a peripheral lung tumour, 10 central, 8 ultra-central, 12 liver);
    the AP excursion is 30 % of it (lagging by 10 % of the cycle), LR 5 % (lung).
    ``location`` (peripheral / central / ultracentral) and ``side`` (right / left) place the
    lung tumour; ``tumour_centre_mm`` (end-exhale position) and ``tumour_radius_mm`` override
    the preset. The seed drives only the image noise.
    """
    opts = _check_options(site, phases, amplitude_mm, seed, location, side, tumour_centre_mm, tumour_radius_mm)
    study = StudyInfo(study_description=f"SBRT phantom ({opts.site})")
    grid = ct_grid(opts.site, study.frame_of_reference_uid)
    percents = phase_percents(opts.phases)
    tumour_traj, diaphragm_traj = _trajectories(opts)
    exhale = np.asarray(opts.tumour_centre_mm, dtype=float)
    centres = np.array([exhale + tumour_traj.displacement(p) for p in percents])
    anatomy = A.Anatomy(opts.tumour_radius_mm, _tumour_hu(opts.site), centres)
    painter = A.Painter(anatomy, grid)
    states = [_state(diaphragm_traj, p, centre) for p, centre in zip(percents, centres)]
    mid_state = A.BreathingState(
        diaphragm_traj.mid_position(),
        _lung_hu(MEAN_SIGNAL),
        exhale + tumour_traj.mid_position(),
    )
    _hu, labels, _under = painter.paint(mid_state)
    gtv_masks = [painter.sphere_mask(c, opts.tumour_radius_mm) for c in centres]
    hosts = [_host_fraction(painter, s, m, opts) for s, m in zip(states, gtv_masks)]
    itv = np.logical_or.reduce(gtv_masks)
    ptv = np.logical_or.reduce([painter.sphere_mask(c, opts.tumour_radius_mm + PTV_MARGIN_MM) for c in centres])
    structures = planning_structures(labels, grid)
    structures[tg263.standard_name("itv")] = itv
    structures[tg263.standard_name("ptv")] = ptv

    rx_gy, fractions = opts.preset.rx_gy, opts.preset.fractions
    dgrid = dose_grid(grid)
    model = DoseModel()
    ptv_radius = opts.tumour_radius_mm + PTV_MARGIN_MM
    scale = normalisation(model, centres, ptv_radius)
    dose = dose_on_grid(model, dgrid, centres, ptv_radius, rx_gy, scale, _body_on(dgrid))

    case = PhantomCase(
        site=opts.site,
        grid=grid,
        phase_percents=percents,
        phase_hu=PhaseImages(painter, states, opts.seed, NOISE_SD_HU),
        gtv_masks=gtv_masks,
        structures=structures,
        dose_gy=dose,
        dose_grid=dgrid,
        rx_gy=rx_gy,
        fractions=fractions,
        truth={},
        study=study,
        labels=labels,
        phase_centres_mm=centres,
    )
    case.truth = build_truth(case, opts, tumour_traj, diaphragm_traj, model, scale, hosts)
    return case


def _trajectories(opts: CaseOptions) -> tuple[Trajectory, Trajectory]:
    """Tumour and diaphragm motion: the tumour moves with the diaphragm (and with the liver)."""
    lr_sign = -1.0 if opts.side == "right" else 1.0  # lateral on inhalation
    lr_ratio = 0.05 if opts.site == "lung" else 0.0
    tumour = Trajectory(opts.amplitude_mm, ap_ratio=0.3, lr_ratio=lr_ratio, lr_sign=lr_sign, ap_lag_percent=10.0)
    diaphragm = Trajectory(opts.amplitude_mm, ap_ratio=0.3, lr_ratio=0.0, ap_lag_percent=10.0)
    return tumour, diaphragm


def _lung_hu(breathing_signal: float) -> float:
    return A.HU_LUNG_EXHALE + (A.HU_LUNG_INHALE - A.HU_LUNG_EXHALE) * breathing_signal


def _state(diaphragm: Trajectory, percent: float, centre: np.ndarray) -> A.BreathingState:
    return A.BreathingState(diaphragm.displacement(percent), _lung_hu(signal(percent)), centre)


def _host_fraction(painter: A.Painter, state: A.BreathingState, gtv: np.ndarray, opts: CaseOptions) -> float:
    """Fraction of the GTV voxels that would otherwise be the host organ (lung on its side, or liver)."""
    assert state.tumour_centre_mm is not None
    window = painter.tumour_window(state.tumour_centre_mm)
    if window is None or not gtv[window].any():
        return 0.0
    under = painter.labels_in(state, window)[gtv[window]]
    return float(np.count_nonzero(under == _host_label(opts))) / len(under)


def _host_label(opts: CaseOptions) -> int:
    """The organ the tumour grows in: the liver, or the lung on the tumour's side."""
    if opts.site == "liver":
        return A.LIVER
    return A.LUNG_R if opts.side == "right" else A.LUNG_L


def _body_on(grid: Grid) -> np.ndarray:
    """The analytic body outline on another grid (for the dose: zero outside the patient)."""
    xs, ys = grid.axis_coords_mm(0), grid.axis_coords_mm(1)
    body2d = A._body_sdf(xs[None, :], ys[:, None]) <= 0.0
    return np.broadcast_to(body2d[None, :, :], grid.shape)


def planning_structures(labels: np.ndarray, grid: Grid) -> dict[str, np.ndarray]:
    """Masks of the planning structures (TG-263 names) from the planning label map."""
    out: dict[str, np.ndarray] = {
        tg263.standard_name("body"): (labels != A.AIR) & (labels != A.COUCH),
    }
    for role, codes in STRUCTURE_LABELS:
        lut = np.zeros(256, dtype=bool)
        lut[list(codes)] = True
        mask = lut[labels]
        if np.count_nonzero(mask) >= MIN_STRUCTURE_VOXELS:
            out[tg263.standard_name(role)] = mask
    pbt = pbt_mask(labels, grid)
    if pbt.any():
        out[tg263.standard_name("proximal_bronchial_tree")] = pbt
    return out


def pbt_mask(labels: np.ndarray, grid: Grid) -> np.ndarray:
    """Proximal bronchial tree: distal 2 cm of the trachea, carina, main, intermediate and lobar bronchi."""
    zs = grid.axis_coords_mm(2)
    distal = (zs >= A.CARINA_Z - 5.0) & (zs <= A.CARINA_Z + A.PBT_TRACHEA_MM)
    trachea = (labels == A.TRACHEA) & distal[:, None, None]
    return trachea | (labels == A.BRONCHUS)


def pbt_tubes() -> list[Tube]:
    """The analytic PBT: the distal 2 cm of the trachea tube and every modelled bronchus."""
    (x0, y0, z0), (x1, y1, z1) = A.TRACHEA_TUBE.points
    t = (A.CARINA_Z + A.PBT_TRACHEA_MM - z0) / (z1 - z0)
    start = (x0 + t * (x1 - x0), y0 + t * (y1 - y0), A.CARINA_Z + A.PBT_TRACHEA_MM)
    distal = Tube((start, (x1, y1, z1)), A.TRACHEA_TUBE.radii)
    return [distal, *A.BRONCHI.values()]


# ------------------------------------------------------------------------------ truth


def _motion(centres: np.ndarray) -> dict[str, float]:
    """Peak-to-peak range per axis and the largest distance between two centres (mm)."""
    rng = centres.max(axis=0) - centres.min(axis=0)
    diff = centres[:, None, :] - centres[None, :, :]
    vector = float(np.sqrt((diff**2).sum(axis=-1)).max()) if len(centres) > 1 else 0.0
    return {"LR": float(rng[0]), "AP": float(rng[1]), "SI": float(rng[2]), "vector": vector}


def _centroid_mm(mask: np.ndarray, grid: Grid) -> list[float]:
    kk, jj, ii = np.nonzero(mask)
    ijk = np.stack([ii.mean(), jj.mean(), kk.mean()])
    return [float(v) for v in grid.index_to_lps(ijk)]


def _round(values: Any, digits: int = 4) -> Any:
    if isinstance(values, dict):
        return {k: _round(v, digits) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return [_round(v, digits) for v in values]
    if isinstance(values, (float, np.floating)):
        return round(float(values), digits)
    if isinstance(values, np.integer):
        return int(values)
    return values


def _ball_cc(radius_mm: float) -> float:
    return 4.0 / 3.0 * math.pi * radius_mm**3 / 1000.0


def build_truth(
    case: PhantomCase,
    opts: CaseOptions,
    tumour: Trajectory,
    diaphragm: Trajectory,
    model: DoseModel,
    scale: float,
    hosts: list[float],
) -> dict[str, Any]:
    """Everything known about the case, analytically where possible (JSON-ready)."""
    grid, centres = case.grid, case.phase_centres_mm
    assert centres is not None
    r = opts.tumour_radius_mm
    vox_cc = grid.voxel_volume_cc
    itv_cc = union_of_balls_volume_mm3(centres, r) / 1000.0
    ptv_cc = union_of_balls_volume_mm3(centres, r + PTV_MARGIN_MM) / 1000.0
    phases = []
    for n, (p, c, m) in enumerate(zip(case.phase_percents, centres, case.gtv_masks)):
        phases.append(
            {
                "index": n,
                "label": phase_label(p),
                "percent": p,
                "folder": phase_folder(p),
                "centroid_mm": [float(v) for v in c],
                "gtv_cc": _ball_cc(r),
                "gtv_cc_analytic": _ball_cc(r),
                "centroid_voxel_mm": _centroid_mm(m, grid),
                "gtv_voxel_cc": float(np.count_nonzero(m)) * vox_cc,
                "breathing_signal": signal(p),
            }
        )
    itv_mask = case.structures[tg263.standard_name("itv")]
    ptv_mask = case.structures[tg263.standard_name("ptv")]
    voxel_centroids = np.array([ph["centroid_voxel_mm"] for ph in phases])
    pbt_distance = _distance_mm(centres, pbt_tubes()) - r
    trachea_distance = _distance_mm(centres, [A.TRACHEA_TUBE]) - r
    esophagus_distance = _distance_mm(centres, [A.ESOPHAGUS_TUBE]) - r
    dose_max = float(case.dose_gy.max())
    kmax = np.unravel_index(int(np.argmax(case.dose_gy)), case.dose_gy.shape)
    metrics = analytic_metrics(model, centres, r + PTV_MARGIN_MM, scale, ptv_cc)
    itv_centre = [float(v) for v in (centres.min(axis=0) + centres.max(axis=0)) / 2.0]
    structures = {name: {"volume_cc": float(np.count_nonzero(m)) * vox_cc} for name, m in case.structures.items()}
    truth: dict[str, Any] = {
        "format": TRUTH_FORMAT,
        "version": TRUTH_VERSION,
        "generator": f"sbrtstandards {__version__} (sbrt phantom)",
        "site": opts.site,
        "seed": opts.seed,
        "conventions": {
            "coordinates": "DICOM patient coordinates (LPS), mm",
            "volumes": "cc",
            "dose": "Gy",
            "phases": "percent of the breathing cycle; 0% = end-inhale, 50% = end-exhale",
            "analytic": "values of the continuous model (true spheres); *_voxel_* = counted on the CT grid "
            "(voxel centre inside)",
        },
        "ct_grid": _grid_dict(grid),
        "dose_grid": _grid_dict(case.dose_grid),
        "study_instance_uid": case.study.study_instance_uid,
        "frame_of_reference_uid": case.study.frame_of_reference_uid,
        "noise_sd_hu": NOISE_SD_HU,
        "breathing": {
            "model": "Lujan cos^4: displacement = -amplitude * cos^4(pi * (percent - lag) / 100)",
            "amplitude_mm": opts.amplitude_mm,
            "ap_ratio": tumour.ap_ratio,
            "lr_ratio": tumour.lr_ratio,
            "ap_lag_percent": tumour.ap_lag_percent,
            "diaphragm_amplitude_mm": diaphragm.amplitude_mm,
            "organ_motion_fraction": dict(A.MOTION_FRACTION),
            "mid_position_signal": MEAN_SIGNAL,
            "lung_hu_exhale": A.HU_LUNG_EXHALE,
            "lung_hu_inhale": A.HU_LUNG_INHALE,
        },
        "tumour": {
            "shape": "sphere",
            "radius_mm": r,
            "volume_cc": _ball_cc(r),
            "hu": _tumour_hu(opts.site),
            "host": _host_name(opts),
            "location_class": opts.location if opts.site == "lung" else None,
            "side": opts.side,
            "exhale_centre_mm": list(opts.tumour_centre_mm),
            "mid_position_centre_mm": [float(v) for v in np.asarray(opts.tumour_centre_mm) + tumour.mid_position()],
            "location_class_by_distance": (
                _location_class(pbt_distance, trachea_distance, esophagus_distance) if opts.site == "lung" else None
            ),
            "distance_to_pbt_mm": pbt_distance,
            "distance_to_trachea_mm": trachea_distance,
            "distance_to_esophagus_mm": esophagus_distance,
            "distance_note": "smallest distance from a phase GTV sphere (i.e. from the true ITV) to the surface "
            "of the analytic organ; PBT = distal 2 cm of the trachea, carina, main, intermediate and lobar "
            "bronchi; negative = overlap. Class by distance: ultracentral if the ITV touches the PBT, trachea "
            "or oesophagus, central if it is within 20 mm of the PBT, else peripheral",
            "inside_host_fraction_min": min(hosts),
        },
        "phases": phases,
        "motion_mm": _motion(centres),
        "motion_voxel_mm": _motion(voxel_centroids),
        "amplitude_mm": opts.amplitude_mm,
        "itv_cc": itv_cc,
        "itv": {
            "cc": itv_cc,
            "method": "union of the phase spheres, integrated along z with exact areas of unions of discs "
            "(Green's theorem) and Gauss-Legendre quadrature; relative error < 1e-6",
            "voxel_cc": float(np.count_nonzero(itv_mask)) * vox_cc,
        },
        "itv_center_mm": itv_centre,
        "planning_target_center_mm": itv_centre,
        "ptv_margin_mm": PTV_MARGIN_MM,
        "ptv_cc": ptv_cc,
        "ptv": {
            "cc": ptv_cc,
            "method": "ITV + 5 mm exact Euclidean margin = union of spheres of radius r + 5 mm (same integration)",
            "voxel_cc": float(np.count_nonzero(ptv_mask)) * vox_cc,
        },
        "prescription": {
            "rx_gy": case.rx_gy,
            "fractions": case.fractions,
            "dose_per_fraction_gy": case.rx_gy / case.fractions,
            "bed10_gy": case.rx_gy * (1.0 + case.rx_gy / case.fractions / 10.0),
            "target": tg263.standard_name("ptv"),
        },
        "dose": {
            "model": {**model.__dict__, "scale": scale},
            "max_gy": dose_max,
            "max_location_mm": [float(v) for v in case.dose_grid.index_to_lps(np.array(kmax[::-1], float))],
            "analytic": metrics,
            "note": "dose = rx * scale * f(s), s = signed distance to the true PTV; isodose volumes of the "
            "continuous dose are unions of spheres (exact); 0 outside the body",
        },
        "structures": structures,
        "files": {},
    }
    return _round(truth, 6)


def _tumour_hu(site: str) -> float:
    return A.HU_TUMOUR_LIVER if site == "liver" else A.HU_TUMOUR_LUNG


def _distance_mm(centres: np.ndarray, tubes: Sequence[Tube]) -> float:
    """Smallest distance from the phase centres to the surfaces of ``tubes``."""
    return min(A.distance_to_tube_mm(c, t) for c in centres for t in tubes)


def _location_class(pbt_mm: float, trachea_mm: float, esophagus_mm: float) -> str:
    """Peripheral / central / ultra-central from the ITV's distances (mm) to the airways and oesophagus."""
    if min(pbt_mm, trachea_mm, esophagus_mm) <= 0.0:
        return "ultracentral"
    return "central" if pbt_mm < 20.0 else "peripheral"


def _host_name(opts: CaseOptions) -> str:
    if opts.site == "liver":
        return tg263.standard_name("liver")
    return tg263.standard_name("lung_r" if opts.side == "right" else "lung_l")


def _grid_dict(grid: Grid) -> dict[str, Any]:
    return {
        "origin_mm": list(grid.origin_mm),
        "spacing_mm": list(grid.spacing_mm),
        "size": list(grid.size),
        "shape_kji": list(grid.shape),
    }


# ------------------------------------------------------------------------------ files


def _check_out_dir(out: Path) -> None:
    """Refuse to replace a folder that is not a previous phantom case (never delete user data)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        truth = out / "truth.json"
        try:
            previous = json.loads(truth.read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError, AttributeError):
            previous = None
        if previous != TRUTH_FORMAT:
            raise InputError(
                f"{out}: folder exists and is not empty (and is not a previous phantom case); give a new folder"
            )


def write_case(
    site: str,
    out_dir: str | os.PathLike[str],
    *,
    phases: int = 10,
    amplitude_mm: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Write a synthetic case to ``out_dir`` (layout in the module docstring); returns the truth.

    ``options`` are :func:`make_case`'s (location, side, tumour_centre_mm, tumour_radius_mm).
    The whole folder is written under a temporary name and renamed at the end, so a killed
    run leaves nothing that looks complete. An existing folder is replaced only if it holds a
    previous phantom case. Paths in the returned truth are absolute; in ``truth.json`` they are
    relative to ``out_dir``.
    """
    out = Path(out_dir)
    _check_out_dir(out)
    report = progress or (lambda fraction, message: None)
    report(0.0, "building the synthetic anatomy")
    case = make_case(site, phases=phases, amplitude_mm=amplitude_mm, seed=seed, **options)
    steps = len(case.phase_percents) + 4
    with atomic_dir(out) as tmp:
        phase_files = _write_phases(case, tmp, lambda i, m: report(i / steps, m))
        report((steps - 4) / steps, "planning CT, structures, plan and dose")
        files = {"phases": phase_files, **_write_planning(case, tmp)}
        case.truth["files"] = files
        for ph, f in zip(case.truth["phases"], phase_files):
            ph["ct"], ph["rtstruct"] = f["ct"], f["rtstruct"]
        report((steps - 1) / steps, "truth.json")
        (tmp / "truth.json").write_text(json.dumps(case.truth, indent=2) + "\n", encoding="utf-8")
    report(1.0, "done")
    return _absolute(case.truth, out.resolve())


def _write_phases(case: PhantomCase, tmp: Path, report: Callable[[int, str], None]) -> list[dict[str, str]]:
    """One CT series and one GTV structure set per phase; also forms the AVG (the planning CT)."""
    from sbrtstandards.dicom.ct import write_ct_series
    from sbrtstandards.dicom.rtstruct import Roi, write_rtstruct

    total = np.zeros(case.grid.shape, dtype=np.int32)
    files = []
    for i, percent in enumerate(case.phase_percents):
        label, folder = phase_label(percent), phase_folder(percent)
        report(i, f"phase {label}")
        image = case.phase_hu[i]
        total += image
        ref = write_ct_series(
            tmp / folder,
            image,
            case.grid,
            study=case.study,
            series_description=f"4D-CT {label}",
            series_number=100 + i,
            extra_tags={"TemporalPositionIndex": i + 1, "ImageComments": f"Phase {label}"},
        )
        rs_name = f"RS_{folder}.dcm"
        write_rtstruct(
            tmp / folder / rs_name,
            [Roi.from_mask(tg263.standard_name("gtv"), case.gtv_masks[i], case.grid, number=1)],
            reference=ref,
            label=f"GTV {label}"[:16],
            description=f"GTV of phase {label} (synthetic)",
        )
        files.append({"label": label, "ct": folder, "rtstruct": f"{folder}/{rs_name}"})
    case._average = np.rint(total / len(case.phase_percents)).astype(np.int16)
    return files


def _write_planning(case: PhantomCase, tmp: Path) -> dict[str, str]:
    """The AVG CT, the planning structure set on it, the plan and the dose (referencing each other)."""
    from sbrtstandards.dicom.ct import write_ct_series
    from sbrtstandards.dicom.rtdose import write_rtdose
    from sbrtstandards.dicom.rtplan import write_rtplan
    from sbrtstandards.dicom.rtstruct import Roi, write_rtstruct

    planning = tmp / "planning"
    ref = write_ct_series(
        planning / "CT",
        case.average_hu(),
        case.grid,
        study=case.study,
        series_description="4D-CT AVG (planning)",
        series_number=200,
    )
    rois = [Roi.from_mask(name, mask, case.grid, number=k) for k, (name, mask) in enumerate(case.structures.items(), 1)]
    rs_path = write_rtstruct(
        planning / "RS_planning.dcm", rois, reference=ref, label="SBRT plan", description="planning structures"
    )
    ptv = tg263.standard_name("ptv")
    rp_path = write_rtplan(
        planning / "RP.dcm",
        study=case.study,
        rx_gy=case.rx_gy,
        fractions=case.fractions,
        target_roi_number=next(r.number for r in rois if r.name == ptv),
        referenced_structure_set_uid=_sop_uid(rs_path),
        label="SBRT",
        target_name=ptv,
        isocenter_mm=tuple(case.truth["itv_center_mm"]),
    )
    write_rtdose(
        planning / "RD.dcm",
        case.dose_gy,
        case.dose_grid,
        study=case.study,
        referenced_plan_uid=_sop_uid(rp_path),
        summation_type="PLAN",
        series_description="SBRT dose (synthetic)",
    )
    return {
        "planning_ct": "planning/CT",
        "planning_rtstruct": "planning/RS_planning.dcm",
        "rtplan": "planning/RP.dcm",
        "rtdose": "planning/RD.dcm",
        "truth": "truth.json",
    }


def _sop_uid(path: Path) -> str:
    from sbrtstandards.dicom.common import read_dataset

    return str(read_dataset(path, stop_before_pixels=True).SOPInstanceUID)


def _absolute(truth: dict[str, Any], root: Path) -> dict[str, Any]:
    """A copy of the truth whose file paths are absolute."""
    out = json.loads(json.dumps(truth))
    files = out["files"]
    for key, value in list(files.items()):
        if isinstance(value, str):
            files[key] = str(root / value)
    for ph in files.get("phases", []):
        ph["ct"] = str(root / ph["ct"])
        ph["rtstruct"] = str(root / ph["rtstruct"])
    for ph in out["phases"]:
        ph["ct"] = str(root / ph["ct"])
        ph["rtstruct"] = str(root / ph["rtstruct"])
    out["root"] = str(root)
    return out
