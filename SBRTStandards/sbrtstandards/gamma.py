"""3D gamma index between two dose grids (patient-specific QA: 2 %/2 mm, 10 % threshold, > 95 %).

Definition (Low et al. 1998). For a reference point ``r`` with dose ``D(r)``, the gamma index is

    gamma(r) = min over points e of sqrt(|e - r|^2 / DTA^2 + (E(e) - D(r))^2 / DD^2)

where ``E`` is the evaluated dose, interpolated trilinearly between its voxel centres (the same
continuous dose that pymedphys' gamma searches), ``DTA`` the distance criterion and ``DD`` the
dose criterion: ``dose_percent`` of the global normalisation (the maximum reference dose unless
given) or, for local gamma, of ``D(r)``. A point passes when gamma <= 1. Reference points below
``cutoff_percent`` of the normalisation are not evaluated (the low-dose threshold); evaluated
positions outside the box of the evaluated voxel centres have no dose (not zero), and a point
whose whole search lies outside has no gamma (``points_outside_evaluated``).

Why not pymedphys' shell search: it samples spheres of increasing radius at DTA/10 steps, so a
point of gamma 1 costs thousands of interpolations, and in a steep gradient the DTA/10 steps
still miss the isodose surface by up to a tenth of gamma. Here, vectorised over all reference
points (in chunks, so memory stays bounded):

1. **Gauss-Newton from the point itself.** The evaluated dose is replaced by its tangent plane
   (the trilinear cell's gradient) and the exact minimiser of gamma for that plane is sampled;
   a few steps (halved when a step across a cell face overshoots) find the nearest point of
   the matching isodose surface to machine precision where the dose is locally linear.
2. **Coarse lattice, nearest first, for other minima.** Offsets on a cubic lattice of step DTA/2
   within 2 DTA, then on lattices twice as coarse in each doubled radius band (a point of large
   gamma costs a few hundred offsets per band, not a cube of its radius). Each offset is sampled
   together with its own Gauss-Newton candidate (within half a lattice diagonal); offsets are
   visited by increasing length and a point leaves as soon as the offset length, less half a
   lattice diagonal, exceeds its best gamma. The winner gets Gauss-Newton steps again.
3. **Compass polish** (neighbours at steps halved down to DTA/64) where a kink of the trilinear
   dose may have stopped Gauss-Newton: every direction for gamma >= 0.8 (pass/fail and maximum),
   the axis directions for gamma >= 0.3.

Every value kept is a real sample of the interpolated dose, so the result is never below the
exact gamma; the tests compare it with closed forms and an independent brute-force search, and
``benchmarks/gamma.py`` measures pass rates and speed against pymedphys on the same grids.

Pass rate: percent of evaluated points with gamma <= 1. The acceptance levels come from the
standards catalogue (one source of truth): pass above 95 % (liver standard explanatory note
§6.1; the upper end of the lung standard's "> 90-95 %"), ``minor`` above 90 % (the lower end),
``fail`` otherwise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sbrtstandards.errors import FrameOfReferenceError, GeometryError, InputError
from sbrtstandards.grid import Grid

Progress = Callable[[float, str], None]

DEFAULT_DOSE_PERCENT = 2.0
DEFAULT_DISTANCE_MM = 2.0
DEFAULT_CUTOFF_PERCENT = 10.0
CHUNK_POINTS = 1 << 17  # reference points searched together (bounds temporary memory)
LATTICE_STEPS_PER_DTA = 2  # coarse lattice step = DTA / 2
BAND0_GAMMA = 2.0  # the finest lattice covers gamma <= 2; each further band doubles radius and step
REFINE_MIN_STEP_PER_DTA = 64  # compass search stops below DTA / 64
POLISH_FROM_GAMMA = 0.8  # full compass polish for points at or above this gamma
LIGHT_POLISH_FROM_GAMMA = 0.3  # light (6-direction) polish at or above this gamma
GN_ITERATIONS = 4  # Gauss-Newton steps from the zero offset and from the best lattice offset
AXIS_DIRECTIONS = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
INSIDE_TOL = 1e-9  # index slack for points on the evaluated grid's boundary

# Catalogue items holding the pass-rate levels (see the module docstring).
PASS_ITEM = ("cn-liver-sbrt", "cn-liver.qa.gamma_pass_rate_note")
MINOR_ITEM = ("cn-lung-sbrt", "cn-lung.qa.gamma_pass_rate")


@dataclass(frozen=True)
class GammaCriteria:
    """Gamma criteria; ``normalisation_gy`` None = maximum reference dose (global gamma)."""

    dose_percent: float = DEFAULT_DOSE_PERCENT
    distance_mm: float = DEFAULT_DISTANCE_MM
    cutoff_percent: float = DEFAULT_CUTOFF_PERCENT
    local: bool = False
    normalisation_gy: float | None = None
    max_gamma: float | None = None  # stop searching beyond this gamma (None: search until found)

    def validate(self) -> None:
        """InputError for criteria that make no sense (the CLI's options land here)."""
        for name, value, low_ok in (
            ("dose percent", self.dose_percent, False),
            ("distance (mm)", self.distance_mm, False),
            ("cutoff percent", self.cutoff_percent, True),
        ):
            if not math.isfinite(value) or value < 0 or (value == 0 and not low_ok):
                raise InputError(f"gamma {name} must be a positive number, got {value:g}")
        if self.dose_percent > 100 or self.cutoff_percent >= 100:
            raise InputError(
                f"gamma dose percent ({self.dose_percent:g}) must be <= 100 and cutoff percent "
                f"({self.cutoff_percent:g}) < 100"
            )
        if self.normalisation_gy is not None and not (
            math.isfinite(self.normalisation_gy) and self.normalisation_gy > 0
        ):
            raise InputError(f"gamma normalisation dose must be > 0 Gy, got {self.normalisation_gy:g}")
        if self.max_gamma is not None and not (math.isfinite(self.max_gamma) and self.max_gamma > 0):
            raise InputError(f"gamma search limit must be > 0, got {self.max_gamma:g}")

    def to_json(self) -> dict[str, Any]:
        return {
            "dose_percent": self.dose_percent,
            "distance_mm": self.distance_mm,
            "cutoff_percent": self.cutoff_percent,
            "local": self.local,
        }


@dataclass(frozen=True)
class PassLevels:
    """Acceptance levels of the pass rate, with where they come from."""

    threshold_percent: float
    minor_threshold_percent: float | None
    source: str

    def status(self, pass_rate_percent: float | None) -> str:
        """``pass`` above the threshold, ``minor`` above the minor threshold, else ``fail``."""
        if pass_rate_percent is None:
            return "not_evaluated"
        if pass_rate_percent > self.threshold_percent:
            return "pass"
        if self.minor_threshold_percent is not None and pass_rate_percent > self.minor_threshold_percent:
            return "minor"
        return "fail"


@dataclass
class GammaResult:
    """Gamma map on the reference grid (NaN where not evaluated) and its summary."""

    gamma: np.ndarray
    criteria: GammaCriteria
    levels: PassLevels
    normalisation_gy: float
    cutoff_gy: float
    points_above_cutoff: int
    points_evaluated: int
    points_outside_evaluated: int
    pass_rate_percent: float | None
    gamma_max: float | None
    gamma_mean: float | None
    seconds: float
    warnings: list[str] = field(default_factory=list)
    reference_label: str = ""
    evaluated_label: str = ""

    @property
    def status(self) -> str:
        return self.levels.status(self.pass_rate_percent)

    def to_json(self) -> dict[str, Any]:
        """The contract's keys first, then provenance (numbers rounded for people, not for maths)."""
        out: dict[str, Any] = {
            "pass_rate_percent": _round(self.pass_rate_percent, 2),
            "points_evaluated": self.points_evaluated,
            "gamma_max": _round(self.gamma_max, 3),
            "gamma_mean": _round(self.gamma_mean, 3),
            "criteria": self.criteria.to_json(),
            "threshold_percent": self.levels.threshold_percent,
            "status": self.status,
            "minor_threshold_percent": self.levels.minor_threshold_percent,
            "source": self.levels.source,
            "normalisation_gy": _round(self.normalisation_gy, 4),
            "cutoff_gy": _round(self.cutoff_gy, 4),
            "points_above_cutoff": self.points_above_cutoff,
            "points_outside_evaluated": self.points_outside_evaluated,
            "reference": self.reference_label,
            "evaluated": self.evaluated_label,
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
        }
        if self.pass_rate_percent is None:
            out["reason"] = "no reference point above the cutoff has an evaluated dose within reach"
        if self.criteria.max_gamma is not None:
            out["max_gamma"] = self.criteria.max_gamma
        return out


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def pass_levels() -> PassLevels:
    """The pass-rate levels from the standards catalogue (see the module docstring)."""
    from sbrtstandards.catalogue import load_protocol

    def item(protocol_id: str, item_id: str) -> Any:
        protocol = load_protocol(protocol_id)
        for qa in protocol.qa_items:
            if qa.id == item_id:
                return qa
        raise InputError(f"protocol {protocol_id}: no QA item '{item_id}' (gamma pass-rate level)")

    hi = item(*PASS_ITEM)
    lo = item(*MINOR_ITEM)
    return PassLevels(float(hi.value), float(lo.value), f"{hi.source} (pass > {hi.value:g} %); {lo.source} "
                      f"(> {lo.value:g}-{hi.value:g} %: minor between)")


def gamma_index(
    reference_gy: np.ndarray,
    reference_grid: Grid,
    evaluated_gy: np.ndarray,
    evaluated_grid: Grid,
    criteria: GammaCriteria = GammaCriteria(),
    *,
    progress: Progress | None = None,
) -> tuple[np.ndarray, float]:
    """Gamma of every reference voxel (NaN where not evaluated) and the normalisation dose (Gy).

    Both grids must be axial (identity directions); they may differ in origin, spacing and size.
    """
    criteria.validate()
    ref = _checked_dose(reference_gy, reference_grid, "reference")
    ev = _checked_dose(evaluated_gy, evaluated_grid, "evaluated")
    norm = float(criteria.normalisation_gy) if criteria.normalisation_gy is not None else float(ref.max())
    if not norm > 0:
        raise InputError("reference dose is zero everywhere: nothing to compare (give a normalisation dose)")
    cutoff = criteria.cutoff_percent / 100.0 * norm
    selected = ref >= cutoff
    if criteria.local:
        selected &= ref > 0  # a local criterion of 0 Gy is undefined
    flat_idx = np.flatnonzero(selected)
    gamma = np.full(ref.shape, np.nan)
    if flat_idx.size == 0:
        return gamma, norm
    sampler = _Sampler(ev, evaluated_grid)
    # reference voxel centres in the evaluated grid's continuous (i, j, k) index
    k, j, i = np.unravel_index(flat_idx, ref.shape)
    r_org, r_sp = np.asarray(reference_grid.origin_mm), np.asarray(reference_grid.spacing_mm)
    v_org, v_sp = np.asarray(evaluated_grid.origin_mm), np.asarray(evaluated_grid.spacing_mm)
    base = [((r_org[a] + idx * r_sp[a]) - v_org[a]) / v_sp[a] for a, idx in enumerate((i, j, k))]
    dose = ref.ravel()[flat_idx]
    dd_gy = criteria.dose_percent / 100.0 * (dose if criteria.local else np.full_like(dose, norm))
    search = _Search(sampler, criteria.distance_mm, criteria.max_gamma, _reach_mm(reference_grid, evaluated_grid))
    out = np.empty(flat_idx.size)
    n_chunks = -(-flat_idx.size // CHUNK_POINTS)
    for c, sl in enumerate(_chunks(flat_idx.size, CHUNK_POINTS)):
        if progress is not None:
            progress(c / n_chunks, f"gamma: points {sl.start + 1}-{sl.stop} of {flat_idx.size}")
        g2 = search.run([np.ascontiguousarray(b[sl]) for b in base], dose[sl], 1.0 / dd_gy[sl] ** 2)
        out[sl] = np.sqrt(g2)
    out[~np.isfinite(out)] = np.nan
    gamma.ravel()[flat_idx] = out
    if progress is not None:
        progress(1.0, "gamma: done")
    return gamma, norm


def gamma_analysis(
    reference_gy: np.ndarray,
    reference_grid: Grid,
    evaluated_gy: np.ndarray,
    evaluated_grid: Grid,
    criteria: GammaCriteria = GammaCriteria(),
    *,
    levels: PassLevels | None = None,
    check_frame_of_reference: bool = True,
    progress: Progress | None = None,
) -> GammaResult:
    """Gamma map plus pass rate, maximum, mean and status (what ``sbrt gamma`` reports)."""
    t0 = time.perf_counter()
    warnings: list[str] = []
    _check_frames(reference_grid, evaluated_grid, check_frame_of_reference, warnings)
    gamma, norm = gamma_index(reference_gy, reference_grid, evaluated_gy, evaluated_grid, criteria, progress=progress)
    ref = np.asarray(reference_gy, dtype=float)
    cutoff = criteria.cutoff_percent / 100.0 * norm
    above = int(np.count_nonzero(ref >= cutoff))
    valid = gamma[np.isfinite(gamma)]
    outside = int(np.count_nonzero((ref >= cutoff) & ~np.isfinite(gamma)))
    if outside:
        warnings.append(
            f"{outside} reference point(s) above the cutoff have no evaluated dose within reach "
            "(outside the evaluated grid): not evaluated"
        )
    rate = mx = mean = None
    if valid.size:
        rate = 100.0 * float(np.count_nonzero(valid <= 1.0)) / valid.size
        mx, mean = float(valid.max()), float(valid.mean())
    return GammaResult(
        gamma=gamma,
        criteria=criteria,
        levels=levels or pass_levels(),
        normalisation_gy=norm,
        cutoff_gy=cutoff,
        points_above_cutoff=above,
        points_evaluated=int(valid.size),
        points_outside_evaluated=outside,
        pass_rate_percent=rate,
        gamma_max=mx,
        gamma_mean=mean,
        seconds=time.perf_counter() - t0,
        warnings=warnings,
    )


def gamma_files(
    reference_path: str,
    evaluated_path: str,
    criteria: GammaCriteria = GammaCriteria(),
    *,
    threshold_percent: float | None = None,
    check_frame_of_reference: bool = True,
    progress: Progress | None = None,
) -> GammaResult:
    """Read two RTDOSE files (Gy, see :func:`sbrtstandards.dicom.rtdose.read_rtdose`) and compare them."""
    from sbrtstandards.dicom.rtdose import read_rtdose
    from sbrtstandards.dicom.scan import find_single

    ref_path = find_single([reference_path], "RTDOSE", what="--reference").path
    ev_path = find_single([evaluated_path], "RTDOSE", what="--evaluated").path
    ref = read_rtdose(ref_path)
    ev = read_rtdose(ev_path)
    warnings = [f"{ref_path.name}: {w}" for w in ref.warnings] + [f"{ev_path.name}: {w}" for w in ev.warnings]
    if ref.summation_type != ev.summation_type or ref.per_fraction != ev.per_fraction:
        warnings.append(
            f"the doses are of different kinds ({ref.describe_summation()} vs {ev.describe_summation()}): "
            "compare doses of the same fraction or course"
        )
    levels = pass_levels()
    if threshold_percent is not None:
        if not (math.isfinite(threshold_percent) and 0 < threshold_percent <= 100):
            raise InputError(f"--threshold-percent must be in (0, 100], got {threshold_percent:g}")
        levels = PassLevels(float(threshold_percent), None, "--threshold-percent")
    result = gamma_analysis(
        ref.dose_gy,
        ref.grid,
        ev.dose_gy,
        ev.grid,
        criteria,
        levels=levels,
        check_frame_of_reference=check_frame_of_reference,
        progress=progress,
    )
    result.warnings[:0] = warnings
    result.reference_label = str(ref_path.resolve())
    result.evaluated_label = str(ev_path.resolve())
    return result


# --------------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------------


Vec = tuple[Any, Any, Any]  # x, y, z components: arrays of one length, or scalars


class _Sampler:
    """Trilinear evaluated dose (and its gradient) at continuous (i, j, k) indices moved by mm offsets.

    Positions outside the box of the voxel centres get NaN. The gradient (Gy/mm) is that of the
    trilinear cell holding the position, so it is exact for a dose linear in x, y and z.
    Components are separate 1-D arrays: contiguous arithmetic is what makes this fast.
    """

    def __init__(self, dose: np.ndarray, grid: Grid) -> None:
        self.flat = np.ascontiguousarray(dose, dtype=np.float64).ravel()
        nk, nj, ni = dose.shape
        self.n = (ni, nj, nk)
        self.stride = (1 if ni > 1 else 0, ni if nj > 1 else 0, ni * nj if nk > 1 else 0)
        self.inv_spacing = tuple(1.0 / float(v) for v in grid.spacing_mm)

    def __call__(self, u: Vec, off: Vec, gradient: bool = False) -> Any:
        """Dose at indices ``u`` moved by ``off`` (mm); ``(dose, (gx, gy, gz))`` with the gradient."""
        base: Any = 0
        inside: Any = True
        t = []
        mult = 1
        for a in range(3):
            n = self.n[a]
            q = u[a] + off[a] * self.inv_spacing[a]
            inside = inside & (q >= -INSIDE_TOL) & (q <= n - 1 + INSIDE_TOL)
            if n > 1:
                lo = np.clip(q, 0.0, n - 1.0).astype(np.intp)  # truncation = floor for q >= 0
                np.minimum(lo, n - 2, out=lo)
                t.append(np.clip(q - lo, 0.0, 1.0))
                base = base + lo * mult
            else:
                t.append(np.zeros_like(q))
            mult *= n
        base = np.where(inside, base, 0)
        f = self.flat
        sx, sy, sz = self.stride
        tx, ty, tz = t
        c000, c100 = f.take(base), f.take(base + sx)
        c010, c110 = f.take(base + sy), f.take(base + (sy + sx))
        c001, c101 = f.take(base + sz), f.take(base + (sz + sx))
        c011, c111 = f.take(base + (sz + sy)), f.take(base + (sz + sy + sx))
        x00, x10 = _lerp(c000, c100, tx), _lerp(c010, c110, tx)
        x01, x11 = _lerp(c001, c101, tx), _lerp(c011, c111, tx)
        y0, y1 = _lerp(x00, x10, ty), _lerp(x01, x11, ty)
        value = np.where(inside, _lerp(y0, y1, tz), np.nan)
        if not gradient:
            return value
        gx = _lerp(_lerp(c100 - c000, c110 - c010, ty), _lerp(c101 - c001, c111 - c011, ty), tz)
        gy = _lerp(x10 - x00, x11 - x01, tz)
        gz = y1 - y0
        return value, (
            gx * (self.inv_spacing[0] if sx else 0.0),
            gy * (self.inv_spacing[1] if sy else 0.0),
            gz * (self.inv_spacing[2] if sz else 0.0),
        )


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t


@dataclass
class _Band:
    offsets_mm: np.ndarray  # (M, 3) sorted by length
    radius_mm: np.ndarray  # (M,)
    step_mm: float


@dataclass
class _State:
    """One chunk of reference points and the best offset found so far for each."""

    u: Vec  # reference points in evaluated index coordinates
    dose: np.ndarray  # reference doses (Gy)
    b: np.ndarray  # 1 / DD^2
    best: np.ndarray = field(init=False)  # squared gamma so far (inf: nothing found)
    off: list[np.ndarray] = field(init=False)  # x, y, z of the offset (mm) where it was attained

    def __post_init__(self) -> None:
        n = len(self.dose)
        self.best = np.full(n, np.inf)
        self.off = [np.zeros(n), np.zeros(n), np.zeros(n)]

    def at(self, idx: np.ndarray) -> tuple[Vec, Vec]:
        """(points, their best offsets) for the subset ``idx``."""
        return (self.u[0][idx], self.u[1][idx], self.u[2][idx]), (self.off[0][idx], self.off[1][idx], self.off[2][idx])


class _Search:
    """The search of the module docstring, for one chunk of reference points at a time.

    Squared gamma is ``a |o|^2 + b (E(r + o) - D)^2`` with ``a = 1/DTA^2``, ``b = 1/DD^2``. A
    Gauss-Newton candidate from offset ``o`` replaces E by its tangent plane there
    (``E(o) + g . (p - o)``) and takes the exact minimiser ``p = -b c g / (a + b |g|^2)`` of that
    model (``c = E(o) - g . o - D``), limited to ``max_move`` from ``o``. A candidate is sampled
    only when its model value beats the point's best, and every kept value is a real sample, so
    the result is an attained (upper-bound) gamma.
    """

    def __init__(self, sampler: _Sampler, dta_mm: float, max_gamma: float | None, reach_mm: float) -> None:
        self.sample = sampler
        self.dta = dta_mm
        self.a = 1.0 / dta_mm**2
        self.limit_mm = reach_mm if max_gamma is None else min(reach_mm, max_gamma * dta_mm)
        self.bands: list[_Band] = []
        self.directions = [
            (a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)
        ]

    def band(self, b: int) -> _Band:
        while len(self.bands) <= b:
            self.bands.append(_lattice_band(len(self.bands), self.dta))
        return self.bands[b]

    def run(self, u: list[np.ndarray], dose: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Squared gamma of each point (inf where no evaluated dose was found)."""
        s = _State((u[0], u[1], u[2]), dose, b)
        everyone = np.arange(len(dose))
        self._try_from(s, everyone, s.at(everyone)[0], (0.0, 0.0, 0.0), math.inf)
        self._newton(s, everyone)
        self._coarse(s)
        self._newton(s, np.flatnonzero(np.isfinite(s.best) & (s.best > 0)))
        self._polish(s)
        return s.best

    # -- candidates
    def _try_from(
        self, s: _State, idx: np.ndarray, u: Vec, o: Vec, max_move: float, backtrack: bool = False
    ) -> None:
        """Sample offsets ``o`` of points ``idx`` and their Gauss-Newton candidates; keep improvements."""
        value, g = self.sample(u, o, gradient=True)
        self._keep(s, idx, o, value)
        dose, b = s.dose[idx], s.b[idx]
        c = value - (g[0] * o[0] + g[1] * o[1] + g[2] * o[2]) - dose
        g2 = g[0] * g[0] + g[1] * g[1] + g[2] * g[2]
        t = -(b * c) / (self.a + b * g2)
        p = [t * g[0], t * g[1], t * g[2]]
        if math.isfinite(max_move):
            mv = [p[k] - o[k] for k in range(3)]
            length = np.sqrt(mv[0] * mv[0] + mv[1] * mv[1] + mv[2] * mv[2])
            scale = np.minimum(1.0, max_move / np.maximum(length, 1e-300))
            p = [o[k] + mv[k] * scale for k in range(3)]
        model = self.a * (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]) + b * (
            c + g[0] * p[0] + g[1] * p[1] + g[2] * p[2]
        ) ** 2
        promising = model < s.best[idx]  # NaN (outside the grid) is never promising
        if not promising.any():
            return
        sub = idx[promising]
        ps = (p[0][promising], p[1][promising], p[2][promising])
        us = (u[0][promising], u[1][promising], u[2][promising])
        before = s.best[sub].copy()
        self._keep(s, sub, ps, self.sample(us, ps))
        if backtrack:  # a step across a cell face may overshoot: try half of it
            miss = s.best[sub] >= before
            if miss.any():
                os_ = [np.broadcast_to(o[k], promising.shape)[promising][miss] for k in range(3)]
                half = tuple((ps[k][miss] + os_[k]) / 2 for k in range(3))
                um = (us[0][miss], us[1][miss], us[2][miss])
                self._keep(s, sub[miss], half, self.sample(um, half))

    def _keep(self, s: _State, idx: np.ndarray, o: Vec, value: np.ndarray) -> None:
        diff = value - s.dose[idx]
        g2 = self.a * (o[0] * o[0] + o[1] * o[1] + o[2] * o[2]) + s.b[idx] * diff * diff
        better = g2 < s.best[idx]  # NaN (outside the grid) never improves
        if better.any():
            hit = idx[better]
            s.best[hit] = g2[better]
            for k in range(3):
                s.off[k][hit] = np.broadcast_to(o[k], better.shape)[better]

    # -- stages
    def _newton(self, s: _State, idx: np.ndarray) -> None:
        """Gauss-Newton from each point's best offset (moves of at most DTA/2 per step)."""
        for _ in range(GN_ITERATIONS):
            if idx.size == 0:
                return
            before = s.best[idx].copy()
            u, o = s.at(idx)
            self._try_from(s, idx, u, o, self.dta / 2, backtrack=True)
            idx = idx[s.best[idx] < before * (1 - 1e-9)]

    def _coarse(self, s: _State) -> None:
        active = np.arange(len(s.dose))
        u = s.u
        last_r = -1.0
        for band_no in range(64):
            band = self.band(band_no)
            slack = band.step_mm * math.sqrt(3) / 2  # the lattice point nearest the optimum is this close
            for off, r in zip(band.offsets_mm, band.radius_mm):
                if r == 0.0:
                    continue
                if r - slack > self.limit_mm:
                    return
                if r != last_r:
                    active = active[s.best[active] > (max(r - slack, 0.0) ** 2) * self.a]
                    last_r = r
                    if active.size == 0:
                        return
                    u = (s.u[0][active], s.u[1][active], s.u[2][active])
                self._try_from(s, active, u, (float(off[0]), float(off[1]), float(off[2])), slack)

    def _polish(self, s: _State) -> None:
        """Compass searches around the best offset, the step halved down to DTA/64.

        Gauss-Newton can stop next to a kink of the trilinear dose (a cell face) and leave a few
        hundredths of gamma. Points of gamma >= LIGHT_POLISH_FROM_GAMMA get a light search (the 6
        axis directions from DTA/16), points of gamma >= POLISH_FROM_GAMMA (the pass/fail boundary,
        the maximum) the full one (26 neighbours from DTA/8). Below 0.3 the value may stay up to
        about 0.03 high, which changes no reported number but the mean's fifth decimal.
        """
        found = np.isfinite(s.best) & (s.best > 0)
        light = np.flatnonzero(found & (s.best >= LIGHT_POLISH_FROM_GAMMA**2))
        self._compass(s, light, AXIS_DIRECTIONS, self.dta / 16)
        self._compass(s, np.flatnonzero(found & (s.best >= POLISH_FROM_GAMMA**2)), self.directions, self.dta / 8)

    def _compass(self, s: _State, todo: np.ndarray, directions: list[tuple[int, int, int]], step: float) -> None:
        while todo.size and step >= self.dta / REFINE_MIN_STEP_PER_DTA:
            u, cur = s.at(todo)
            for d in directions:
                cand = (cur[0] + step * d[0], cur[1] + step * d[1], cur[2] + step * d[2])
                self._keep(s, todo, cand, self.sample(u, cand))
            step /= 2


def _lattice_band(b: int, dta_mm: float) -> _Band:
    """Offsets of band ``b``: lattice step DTA/2 * 2^b, lengths in (R_{b-1}, R_b], R_b = 2 DTA 2^b."""
    step = dta_mm / LATTICE_STEPS_PER_DTA * 2**b
    r_hi = BAND0_GAMMA * dta_mm * 2**b
    r_lo = -1.0 if b == 0 else r_hi / 2
    m = int(math.ceil(r_hi / step))
    ax = np.arange(-m, m + 1, dtype=float) * step
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)
    radius = np.sqrt(np.einsum("ij,ij->i", grid, grid))
    keep = (radius > r_lo) & (radius <= r_hi * (1 + 1e-12))
    grid, radius = grid[keep], radius[keep]
    order = np.argsort(radius, kind="stable")
    return _Band(grid[order], radius[order], step)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _checked_dose(dose: np.ndarray, grid: Grid, what: str) -> np.ndarray:
    arr = np.asarray(dose, dtype=np.float64)
    if arr.ndim != 3 or arr.shape != grid.shape:
        raise InputError(f"{what} dose: array shape {arr.shape} does not match its grid {grid.shape}")
    if not grid.is_axial:
        raise GeometryError(f"{what} dose: gamma needs an axial dose grid; {grid.describe()} is not")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what} dose: holds NaN or infinite values")
    return arr


def _check_frames(ref: Grid, ev: Grid, strict: bool, warnings: list[str]) -> None:
    a, b = ref.frame_of_reference_uid, ev.frame_of_reference_uid
    if a and b and a != b:
        message = (
            f"the reference (Frame of Reference {a}) and evaluated (Frame of Reference {b}) doses are not in "
            "the same Frame of Reference"
        )
        if strict:
            raise FrameOfReferenceError(message + ": register them first, or accept the file positions as they are")
        warnings.append(message + "; compared at their file positions as asked")
    lo_r, hi_r = _box(ref)
    lo_e, hi_e = _box(ev)
    if np.any(hi_r < lo_e) or np.any(hi_e < lo_r):
        raise GeometryError(
            f"the reference dose ({ref.describe()}) and the evaluated dose ({ev.describe()}) do not overlap"
        )


def _box(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    org = np.asarray(grid.origin_mm)
    end = org + (np.asarray(grid.size) - 1) * np.asarray(grid.spacing_mm)
    return np.minimum(org, end), np.maximum(org, end)


def _reach_mm(ref: Grid, ev: Grid) -> float:
    """No evaluated dose lies farther than this from any reference point (the search's outer bound)."""
    lo_r, hi_r = _box(ref)
    lo_e, hi_e = _box(ev)
    span = np.maximum(hi_e - lo_r, hi_r - lo_e)
    return float(np.linalg.norm(np.maximum(span, 0.0))) + 1e-6


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _round(value: float | None, nd: int) -> float | None:
    return None if value is None else round(float(value), nd)
