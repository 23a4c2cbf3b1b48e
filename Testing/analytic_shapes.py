"""Analytic solids, their planar contours and the exact DVH of a linear dose gradient.

The validation suite of the DVH engine (Testing/test_dvh_analytic.py) and the benchmark
(benchmarks/dvh.py) use these. Every solid is a solid of revolution about an arbitrary
axis ``a`` through ``centre``: the points ``centre + s a + w`` with ``s0 <= s <= s1``,
``w`` perpendicular to ``a`` and ``|w| <= r(s)``:

* sphere:   ``r(s) = sqrt(R^2 - s^2)``, ``s`` in ``[-R, R]``, volume ``4/3 pi R^3``;
* cylinder: ``r(s) = R``, ``s`` in ``[-H/2, H/2]``, volume ``pi R^2 H`` (any tilt);
* cone:     ``r(s) = R (1 - s/H)``, ``s`` in ``[0, H]`` (``centre`` is the base centre),
  volume ``pi R^2 H / 3``, centroid at ``s = H/4``.

In a linear dose ``D(p) = D_c + G u.(p - centre)`` (``u`` a unit vector, ``G`` in Gy/mm)
the DVH of a solid is the distribution of ``t = u.(p - centre)`` over it. With
``c_a = u.a`` and ``c_p = |u - c_a a|``, ``t = c_a s + c_p w1`` where ``w1`` is the
coordinate of ``w`` along ``u``'s part perpendicular to the axis; the volume with
``t <= t0`` is the integral over ``s`` of the area of a circular segment,
``A(w0; r) = r^2 acos(-w0/r) + w0 sqrt(r^2 - w0^2)`` with ``w0 = (t0 - c_a s) / c_p``.
That one-dimensional integral is evaluated by adaptive quadrature to ~1e-12 and
inverted by Brent's method to 1e-10 mm, giving Dx for any x. Special cases have closed
forms (a sphere's cap ``pi h^2 (3R - h) / 3``; a cone along its axis ``1 - (1 - s/H)^3``)
that the tests use to check this integral.

Contours are drawn as a TPS would: on each plane ``z`` the convex cross-section of the
solid is traced by radial bisection from an interior point (vertices exactly on the
surface, at most 0.25 mm apart), so the contour is the true section to ~1e-4 in area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import quad
from scipy.optimize import brentq, minimize_scalar

from sbrtstandards.grid import Grid


def unit(v: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


def tilted_axis(degrees: float, towards: str = "y") -> np.ndarray:
    """The z axis tilted by ``degrees`` towards +x or +y (an oblique solid)."""
    t = math.radians(degrees)
    if towards == "x":
        return np.array([math.sin(t), 0.0, math.cos(t)])
    return np.array([0.0, math.sin(t), math.cos(t)])


def segment_area(w0: float, r: float) -> float:
    """Area of the part of a disc of radius ``r`` (centred at 0) with coordinate <= ``w0``."""
    if r <= 0.0:
        return 0.0
    if w0 <= -r:
        return 0.0
    if w0 >= r:
        return math.pi * r * r
    return r * r * math.acos(-w0 / r) + w0 * math.sqrt(r * r - w0 * w0)


@dataclass(frozen=True)
class Solid:
    kind: str  # "sphere" | "cylinder" | "cone"
    centre_mm: tuple[float, float, float]
    axis: tuple[float, float, float]
    radius_mm: float
    height_mm: float = 0.0  # cylinder / cone

    @property
    def label(self) -> str:
        a = np.asarray(self.axis)
        tilt = math.degrees(math.acos(min(1.0, abs(float(a[2])))))
        dims = f"R{self.radius_mm:g}" + (f"H{self.height_mm:g}" if self.kind != "sphere" else "")
        return f"{self.kind}-{dims}" + (f"-tilt{tilt:.0f}" if tilt > 0.5 else "")

    @property
    def c(self) -> np.ndarray:
        return np.asarray(self.centre_mm, dtype=float)

    @property
    def a(self) -> np.ndarray:
        return unit(self.axis)

    @property
    def s_range(self) -> tuple[float, float]:
        if self.kind == "sphere":
            return -self.radius_mm, self.radius_mm
        if self.kind == "cylinder":
            return -self.height_mm / 2.0, self.height_mm / 2.0
        return 0.0, self.height_mm

    def r(self, s: np.ndarray | float) -> np.ndarray:
        s = np.asarray(s, dtype=float)
        if self.kind == "sphere":
            return np.sqrt(np.clip(self.radius_mm**2 - s * s, 0.0, None))
        if self.kind == "cylinder":
            return np.full_like(s, self.radius_mm)
        return np.clip(self.radius_mm * (1.0 - s / self.height_mm), 0.0, None)

    @property
    def volume_mm3(self) -> float:
        """Closed-form volume."""
        r = self.radius_mm
        if self.kind == "sphere":
            return 4.0 / 3.0 * math.pi * r**3
        if self.kind == "cylinder":
            return math.pi * r * r * self.height_mm
        return math.pi * r * r * self.height_mm / 3.0

    @property
    def volume_cc(self) -> float:
        return self.volume_mm3 / 1000.0

    @property
    def centroid_s(self) -> float:
        """Closed-form centroid along the axis (from ``centre``)."""
        return self.height_mm / 4.0 if self.kind == "cone" else 0.0

    def contains(self, pts: np.ndarray) -> np.ndarray:
        d = np.asarray(pts, dtype=float) - self.c
        s = d @ self.a
        w2 = np.einsum("ij,ij->i", d, d) - s * s
        s0, s1 = self.s_range
        return (s >= s0) & (s <= s1) & (w2 <= self.r(s) ** 2)

    # ---------------------------------------------------------------- contours
    def bounding_box(self) -> tuple[np.ndarray, np.ndarray]:
        s0, s1 = self.s_range
        ends = np.array([self.c + s0 * self.a, self.c + s1 * self.a])
        rr = max(self.r(np.linspace(s0, s1, 201)).max(), self.radius_mm)
        return ends.min(axis=0) - rr, ends.max(axis=0) + rr

    def section(self, z_mm: float, max_edge_mm: float = 0.25) -> np.ndarray | None:
        """The cross-section of the solid by the plane ``z`` as an (N, 2) polygon, or None."""
        lo, hi = self.bounding_box()
        n = 241
        gx = np.linspace(lo[0], hi[0], n)
        gy = np.linspace(lo[1], hi[1], n)
        xx, yy = np.meshgrid(gx, gy)
        pts = np.column_stack([xx.ravel(), yy.ravel(), np.full(xx.size, z_mm)])
        inside = self.contains(pts)
        if inside.sum() < 3:
            return None
        x0, y0 = pts[inside, 0].mean(), pts[inside, 1].mean()  # convex section: the mean is inside
        reach = float(np.linalg.norm(hi - lo))
        n_vert = 64
        for _ in range(2):
            th = np.linspace(0.0, 2.0 * math.pi, n_vert, endpoint=False)
            rad = self._radial_extent(x0, y0, z_mm, th, reach)
            perim = float(
                np.sum(
                    np.hypot(np.diff(np.r_[rad * np.cos(th), rad[0]]), np.diff(np.r_[rad * np.sin(th), 0.0]))
                )
            )
            need = max(64, int(math.ceil(perim / max_edge_mm)))
            if need <= n_vert:
                break
            n_vert = need
        th = np.linspace(0.0, 2.0 * math.pi, n_vert, endpoint=False)
        rad = self._radial_extent(x0, y0, z_mm, th, reach)
        return np.column_stack([x0 + rad * np.cos(th), y0 + rad * np.sin(th)])

    def _radial_extent(self, x0: float, y0: float, z: float, th: np.ndarray, reach: float) -> np.ndarray:
        lo = np.zeros_like(th)
        hi = np.full_like(th, reach)
        for _ in range(60):
            mid = (lo + hi) / 2.0
            pts = np.column_stack([x0 + mid * np.cos(th), y0 + mid * np.sin(th), np.full_like(th, z)])
            ins = self.contains(pts)
            lo = np.where(ins, mid, lo)
            hi = np.where(ins, hi, mid)
        return lo

    def planes(
        self, spacing_mm: float, phase_mm: float = 0.0, max_edge_mm: float = 0.25
    ) -> dict[float, list[np.ndarray]]:
        """Contours on planes ``z = phase + k * spacing`` that cut the solid."""
        lo, hi = self.bounding_box()
        k0 = math.floor((lo[2] - phase_mm) / spacing_mm)
        k1 = math.ceil((hi[2] - phase_mm) / spacing_mm)
        out: dict[float, list[np.ndarray]] = {}
        for k in range(k0, k1 + 1):
            z = round(phase_mm + k * spacing_mm, 6)
            poly = self.section(z, max_edge_mm)
            if poly is not None:
                out[z] = [poly]
        return out

    # ---------------------------------------------------------------- exact DVH in a linear dose
    def _coeffs(self, u: np.ndarray) -> tuple[float, float]:
        u = unit(u)
        ca = float(u @ self.a)
        cp = float(np.linalg.norm(u - ca * self.a))
        return ca, cp

    def t_range(self, u: np.ndarray) -> tuple[float, float]:
        """Smallest and largest ``u.(p - centre)`` over the solid."""
        ca, cp = self._coeffs(u)
        s0, s1 = self.s_range

        def f(s: float, sign: float) -> float:
            return -(ca * s + sign * cp * float(self.r(s)))

        def g(s: float) -> float:
            return ca * s - cp * float(self.r(s))

        hi_opt = minimize_scalar(
            lambda s: f(s, 1.0), bounds=(s0, s1), method="bounded", options={"xatol": 1e-12}
        )
        lo_opt = minimize_scalar(g, bounds=(s0, s1), method="bounded", options={"xatol": 1e-12})
        tmax = max(-hi_opt.fun, ca * s0 + cp * float(self.r(s0)), ca * s1 + cp * float(self.r(s1)))
        tmin = min(lo_opt.fun, ca * s0 - cp * float(self.r(s0)), ca * s1 - cp * float(self.r(s1)))
        return float(tmin), float(tmax)

    def fraction_below(self, u: np.ndarray, t0: float) -> float:
        """Fraction of the volume with ``u.(p - centre) <= t0``."""
        ca, cp = self._coeffs(u)
        s0, s1 = self.s_range
        if cp < 1e-12:

            def integrand(s: float) -> float:
                return math.pi * float(self.r(s)) ** 2 if ca * s <= t0 else 0.0

            # The step is at s = t0 / ca: integrate up to it.
            if abs(ca) < 1e-12:
                return 1.0 if t0 >= 0 else 0.0
            cut = t0 / ca
            a_, b_ = (s0, min(max(cut, s0), s1)) if ca > 0 else (min(max(cut, s0), s1), s1)
            val, _ = quad(
                lambda s: math.pi * float(self.r(s)) ** 2, a_, b_, epsabs=1e-13, epsrel=1e-13, limit=200
            )
            return val / self.volume_mm3

        def seg(s: float) -> float:
            return segment_area((t0 - ca * s) / cp, float(self.r(s)))

        pts = self._kinks(ca, cp, t0)
        val, _ = quad(seg, s0, s1, points=pts or None, epsabs=1e-12, epsrel=1e-13, limit=400)
        return val / self.volume_mm3

    def _kinks(self, ca: float, cp: float, t0: float) -> list[float]:
        """Axial positions where the cutting plane is tangent to a cross-section (|w0| = r)."""
        s0, s1 = self.s_range
        grid = np.linspace(s0, s1, 2001)
        out: list[float] = []
        for sign in (1.0, -1.0):
            h = (t0 - ca * grid) / cp - sign * self.r(grid)
            idx = np.nonzero(np.sign(h[:-1]) * np.sign(h[1:]) < 0)[0]
            for i in idx:
                fn = lambda s, sg=sign: (t0 - ca * s) / cp - sg * float(self.r(s))  # noqa: E731
                out.append(float(brentq(fn, grid[i], grid[i + 1], xtol=1e-13)))
        return sorted(p for p in out if s0 < p < s1)

    def t_at_hot_fraction(self, u: np.ndarray, fraction: float) -> float:
        """``t`` such that the hottest ``fraction`` of the volume has ``u.(p - c) >= t``."""
        tmin, tmax = self.t_range(u)
        if fraction <= 0.0:
            return tmax
        if fraction >= 1.0:
            return tmin
        return float(brentq(lambda t: self.fraction_below(u, t) - (1.0 - fraction), tmin, tmax, xtol=1e-10))

    def mean_t(self, u: np.ndarray) -> float:
        """Closed-form mean of ``u.(p - centre)``: the centroid's coordinate."""
        return float(unit(u) @ self.a) * self.centroid_s


@dataclass(frozen=True)
class LinearDose:
    """``D(p) = dose_at_centre + gradient * u.(p - centre)`` in Gy (``gradient`` Gy/mm)."""

    centre_mm: tuple[float, float, float]
    direction: tuple[float, float, float]
    dose_at_centre_gy: float = 30.0
    gradient_gy_per_mm: float = 1.0

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        u = unit(self.direction)
        return self.dose_at_centre_gy + self.gradient_gy_per_mm * (
            (np.asarray(pts) - np.asarray(self.centre_mm)) @ u
        )

    def on_grid(
        self,
        lo_mm: np.ndarray,
        hi_mm: np.ndarray,
        spacing_mm: float,
        offset_mm: float = 0.0,
        margin_vox: int = 3,
    ) -> tuple[np.ndarray, Grid]:
        """The dose on an axial grid covering [lo, hi] (+ margin), origin shifted by ``offset_mm``."""
        origin = np.floor(np.asarray(lo_mm) / spacing_mm) * spacing_mm - margin_vox * spacing_mm + offset_mm
        size = np.ceil((np.asarray(hi_mm) - origin) / spacing_mm).astype(int) + margin_vox + 1
        grid = Grid(tuple(origin.tolist()), (spacing_mm,) * 3, tuple(int(v) for v in size))
        xs, ys, zs = (origin[a] + spacing_mm * np.arange(size[a]) for a in range(3))
        zz, yy, xx = np.meshgrid(zs, ys, xs, indexing="ij")
        dose = self(np.stack([xx, yy, zz], axis=-1).reshape(-1, 3)).reshape(zz.shape)
        return dose, grid


@dataclass(frozen=True)
class ExactDvh:
    """Closed-form DVH statistics of a solid in a linear dose."""

    volume_cc: float
    mean_gy: float
    min_gy: float
    max_gy: float
    d_percent: dict[float, float]  # x (% of volume) -> D (Gy)
    d_cc: dict[float, float]  # x (cc) -> D (Gy)


def exact_dvh(
    solid: Solid,
    dose: LinearDose,
    percents: tuple[float, ...] = (99, 95, 50, 5, 1),
    ccs: tuple[float, ...] = (0.03,),
) -> ExactDvh:
    """Volume, mean, extremes and Dx of ``solid`` in ``dose`` from the closed forms above."""
    u = unit(dose.direction)
    tc = float(u @ (solid.c - np.asarray(dose.centre_mm)))

    def d_of(t: float) -> float:
        return dose.dose_at_centre_gy + dose.gradient_gy_per_mm * (tc + t)

    tmin, tmax = solid.t_range(u)
    dp = {float(x): d_of(solid.t_at_hot_fraction(u, x / 100.0)) for x in percents}
    dc = {float(x): d_of(solid.t_at_hot_fraction(u, x / solid.volume_cc)) for x in ccs}
    return ExactDvh(solid.volume_cc, d_of(solid.mean_t(u)), d_of(tmin), d_of(tmax), dp, dc)


def stacked_slab_fraction_below_z(
    planes: dict[float, list[np.ndarray]], z0: float, end_cap: str = "half-slice"
) -> float:
    """Exact volume fraction below ``z0`` of the half-slice stack of ``planes`` (one contour per plane).

    The planar-contour representation extrudes each contour through its slab, so along z
    its volume is piecewise uniform; this is the exact answer the engine must reproduce
    for a gradient along z, independently of how the contours approximate the solid.
    """
    zs = np.array(sorted(planes))
    areas = np.array([_shoelace(planes[z][0]) for z in zs])
    mids = (zs[:-1] + zs[1:]) / 2.0
    lo = np.r_[zs[0], mids]
    hi = np.r_[mids, zs[-1]]
    if end_cap == "half-slice":
        lo[0] -= (zs[1] - zs[0]) / 2.0
        hi[-1] += (zs[-1] - zs[-2]) / 2.0
    vol = areas * (hi - lo)
    below = areas * np.clip(z0 - lo, 0.0, hi - lo)
    return float(below.sum() / vol.sum())


def stacked_slab_volume_mm3(planes: dict[float, list[np.ndarray]], end_cap: str = "half-slice") -> float:
    zs = np.array(sorted(planes))
    areas = np.array([_shoelace(planes[z][0]) for z in zs])
    mids = (zs[:-1] + zs[1:]) / 2.0
    lo = np.r_[zs[0], mids]
    hi = np.r_[mids, zs[-1]]
    if end_cap == "half-slice":
        lo[0] -= (zs[1] - zs[0]) / 2.0
        hi[-1] += (zs[-1] - zs[-2]) / 2.0
    return float(np.sum(areas * (hi - lo)))


def stacked_slab_centroid_mm(
    planes: dict[float, list[np.ndarray]], end_cap: str = "half-slice"
) -> np.ndarray:
    """Exact centroid of the stack of contour slabs (one contour per plane): the mean of a
    linear dose over the planar-contour representation is the dose at this point."""
    zs = np.array(sorted(planes))
    mids = (zs[:-1] + zs[1:]) / 2.0
    lo = np.r_[zs[0], mids]
    hi = np.r_[mids, zs[-1]]
    if end_cap == "half-slice":
        lo[0] -= (zs[1] - zs[0]) / 2.0
        hi[-1] += (zs[-1] - zs[-2]) / 2.0
    total = np.zeros(3)
    vol = 0.0
    for z, a, b in zip(zs, lo, hi):
        xy = planes[z][0]
        x, y = xy[:, 0], xy[:, 1]
        x1, y1 = np.roll(x, -1), np.roll(y, -1)
        cross = x * y1 - x1 * y
        area = 0.5 * float(np.sum(cross))  # signed
        cx = float(np.sum((x + x1) * cross)) / (6.0 * area)
        cy = float(np.sum((y + y1) * cross)) / (6.0 * area)
        v = abs(area) * (b - a)
        total += v * np.array([cx, cy, (a + b) / 2.0])
        vol += v
    return total / vol


def _shoelace(xy: np.ndarray) -> float:
    """Polygon area, written here independently of the package's own function."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)))


def regular_polygon(cx: float, cy: float, r: float, n: int = 720, ccw: bool = True) -> np.ndarray:
    """A circle approximated by ``n`` vertices (area ``n r^2 sin(2 pi / n) / 2``)."""
    th = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    if not ccw:
        th = th[::-1]
    return np.column_stack([cx + r * np.cos(th), cy + r * np.sin(th)])


def regular_polygon_area(r: float, n: int = 720) -> float:
    return 0.5 * n * r * r * math.sin(2.0 * math.pi / n)


# ------------------------------------------------------------------------------------------
# The validation matrix shared by the test suite and the benchmark
# ------------------------------------------------------------------------------------------

CENTRE_MM = (3.1, -4.7, 11.3)  # off the grid lines on purpose
GRADIENTS = {"AP": (0.0, 1.0, 0.0), "SI": (0.0, 0.0, 1.0)}  # LPS y (anterior-posterior), z (sup-inf)
GRADIENT_GY_PER_MM = 1.0
DOSE_AT_CENTRE_GY = 30.0
CONTOUR_SPACINGS_MM = (0.5, 1.0, 2.0, 3.0)
DOSE_SPACINGS_MM = (1.0, 2.0, 3.0)
CONTOUR_PHASE_MM = 0.37  # contour planes at z = 0.37 + k * spacing
DOSE_OFFSET_MM = 0.29  # dose grid origin shifted off the millimetre lattice
D_PERCENTS = (99.0, 95.0, 5.0, 1.0)
D_CCS = (0.03,)


def validation_solids() -> list[Solid]:
    """Spheres, cylinders and cones, upright and tilted, of SBRT target sizes (4-34 cc)."""
    c = CENTRE_MM
    return [
        Solid("sphere", c, (0.0, 0.0, 1.0), 10.0),
        Solid("sphere", c, (0.0, 0.0, 1.0), 20.0),
        Solid("cylinder", c, (0.0, 0.0, 1.0), 10.0, 30.0),
        Solid("cylinder", c, tuple(tilted_axis(30.0, "y")), 10.0, 30.0),
        Solid("cylinder", c, tuple(tilted_axis(45.0, "x")), 8.0, 30.0),
        Solid("cone", c, (0.0, 0.0, 1.0), 15.0, 30.0),
        Solid("cone", c, tuple(tilted_axis(30.0, "y")), 12.0, 24.0),
    ]


def linear_dose(gradient: str) -> LinearDose:
    return LinearDose(CENTRE_MM, GRADIENTS[gradient], DOSE_AT_CENTRE_GY, GRADIENT_GY_PER_MM)
