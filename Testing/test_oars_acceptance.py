"""Acceptance of issue 5 on the synthetic thorax: chest wall, great vessels and PBT zone
against reference constructions built here independently (brute force on fine samples,
k-d trees and convex hulls; none of the code under test), and the ipsilateral side.

The inputs are the phantom's own planning structures (its truth): lungs, body, vertebral
bodies, sternum, vessels, heart, proximal bronchial tree. Each reference follows the rule's
text (seed 001 §5.2(6)-(8)) step by step:

* chest wall and great vessels: from the voxel structures, their surfaces taken where the
  project's contour convention puts them (outline through the mid-points between inside and
  outside voxel centres, each contour plane extruded over its slab). For oblique tubes such
  slab staircases stand out a little from the smooth surface (a 20 mm zone around a tube
  tilted 45 degrees comes out about 4 % too large), so the great-vessel ratio is expected
  slightly below 1;
* PBT zone: from the phantom's analytic airway tubes themselves (the truth), sampled every
  0.3 mm on their surfaces.

Measured when written: chest wall / reference 1.007 (left) and 1.004 (right), great vessels
0.977, PBT zone / analytic 1.003.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import ConvexHull, cKDTree

from sbrtstandards.contours import mask_to_contours
from sbrtstandards.grid import Grid
from sbrtstandards.oars import chestwall, vessels
from sbrtstandards.oars.build import Structure, build_oars
from sbrtstandards.oars.geometry import grow_in_box
from sbrtstandards.phantom import make_case
from sbrtstandards.polygons import fill_polygons

TOLERANCE = 0.05  # issue 5: volumes within 5 % of the reference construction
pytestmark = pytest.mark.slow  # about 50 s: fine reference constructions on the full synthetic thorax


@pytest.fixture(scope="module")
def left_case():  # noqa: ANN201
    return make_case("lung", phases=3, location="peripheral", side="left")


@pytest.fixture(scope="module")
def right_case():  # noqa: ANN201
    return make_case("lung", phases=3, location="peripheral", side="right")


@pytest.fixture(params=["left", "right"])
def case(request: pytest.FixtureRequest):  # noqa: ANN201
    return request.getfixturevalue(f"{request.param}_case")


def _planes(mask: np.ndarray, grid: Grid) -> dict[float, list[np.ndarray]]:
    out: dict[float, list[np.ndarray]] = {}
    for c in mask_to_contours(mask, grid):
        out.setdefault(round(float(c.points_mm[0, 2]), 3), []).append(c.points_mm[:, :2])
    return out


def _surface_points(mask: np.ndarray, grid: Grid, step_mm: float = 0.5) -> np.ndarray:
    """Points on the surface of the structure: its mid-point outlines extruded over their slabs
    (the voxelisation convention of :mod:`sbrtstandards.contours`), plus the slab faces that are
    not covered by the neighbouring plane's section."""
    planes = _planes(mask, grid)
    dz = grid.spacing_mm[2]
    zs = sorted(planes)
    pts = []
    for n, z in enumerate(zs):
        polys = planes[z]
        outline = []
        for p in polys:
            q = np.roll(p, -1, axis=0)
            m = np.maximum(1, np.ceil(np.hypot(*(q - p).T) / (step_mm / 2)).astype(int))
            for a, b, count in zip(p, q, m):
                outline.append(a + (b - a) * (np.arange(count)[:, None] / count))
        xy = np.vstack(outline)
        for off in np.linspace(-dz / 2, dz / 2, 5):
            pts.append(np.column_stack([xy, np.full(len(xy), z + off)]))
        allxy = np.vstack(polys)
        xs = np.arange(allxy[:, 0].min(), allxy[:, 0].max() + step_mm, step_mm)
        ys = np.arange(allxy[:, 1].min(), allxy[:, 1].max() + step_mm, step_mm)
        inside = fill_polygons(polys, xs, ys)
        for nb, face in ((n - 1, z - dz / 2), (n + 1, z + dz / 2)):
            cover = np.zeros_like(inside)
            if 0 <= nb < len(zs) and abs(zs[nb] - z) < 1.5 * dz:
                cover = fill_polygons(planes[zs[nb]], xs, ys)
            jj, ii = np.nonzero(inside & ~cover)
            pts.append(np.column_stack([xs[ii], ys[jj], np.full(len(ii), face)]))
    return np.vstack(pts)


def _centres(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return grid.axis_coords_mm(0), grid.axis_coords_mm(1), grid.axis_coords_mm(2)


def _within(mask: np.ndarray, grid: Grid, distance_mm: float) -> np.ndarray:
    """Voxels whose centre is inside the structure or within ``distance_mm`` of its surface
    (brute force: nearest surface point by k-d tree)."""
    points = _surface_points(mask, grid)
    xs, ys, zs = _centres(grid)
    lo, hi = points.min(axis=0) - distance_mm, points.max(axis=0) + distance_mm
    si = np.flatnonzero((xs >= lo[0]) & (xs <= hi[0]))
    sj = np.flatnonzero((ys >= lo[1]) & (ys <= hi[1]))
    sk = np.flatnonzero((zs >= lo[2]) & (zs <= hi[2]))
    Z, Y, X = np.meshgrid(zs[sk], ys[sj], xs[si], indexing="ij")
    query = np.column_stack([X.ravel(), Y.ravel(), Z.ravel()])
    d, _ = cKDTree(points).query(query, distance_upper_bound=distance_mm + 1e-9)
    out = np.zeros(grid.shape, dtype=bool)
    out[np.ix_(sk, sj, si)] = (d <= distance_mm).reshape(Z.shape)
    return out | mask


def _ratio(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a)) / float(np.count_nonzero(b))


# ----------------------------------------------------------------------------- chest wall


def _reference_chest_wall(case, side: str) -> np.ndarray:  # noqa: ANN001
    g, s = case.grid, case.structures
    ipsi = s["Lung_L"] if side == "left" else s["Lung_R"]
    lungs = s["Lung_L"] | s["Lung_R"]
    body, vb, sternum = s["Body"], s["VB"], s["Sternum"]
    xs, ys, zs = _centres(g)
    sign = 1.0 if side == "left" else -1.0
    grown = np.zeros(g.shape, dtype=bool)
    h = 0.5  # fine raster (mm) of the lung section: distances within h / 2
    jb = np.flatnonzero(ipsi.any(axis=(0, 2)))
    ib = np.flatnonzero(ipsi.any(axis=(0, 1)))
    pad = int(np.ceil(21.0 / min(g.spacing_mm[:2])))
    jr = np.arange(max(0, jb[0] - pad), min(g.shape[1], jb[-1] + pad + 1))
    ir = np.arange(max(0, ib[0] - pad), min(g.shape[2], ib[-1] + pad + 1))
    for z, polys in _planes(ipsi, g).items():
        k = int(round((z - zs[0]) / g.spacing_mm[2]))
        allxy = np.vstack(polys)
        fx = np.arange(allxy[:, 0].min() - h, allxy[:, 0].max() + h, h)
        fy = np.arange(allxy[:, 1].min() - h, allxy[:, 1].max() + h, h)
        inside = fill_polygons(polys, fx, fy)
        # Half-disc grown towards the lateral side: in each fine row, the lung point with the
        # largest lateral coordinate not beyond the voxel (running maximum along the row).
        lat = sign * fx
        order = np.argsort(lat)
        lat_sorted = lat[order]
        best = np.maximum.accumulate(np.where(inside[:, order], lat_sorted[None, :], -np.inf), axis=1)
        col = np.searchsorted(lat_sorted, sign * xs[ir], side="right") - 1
        nearest = np.where(col[None, :] >= 0, best[:, np.maximum(col, 0)], -np.inf)
        dx2 = (sign * xs[ir][None, :] - nearest) ** 2
        for j in jr:
            rows = np.abs(fy - ys[j]) <= 20.0
            if rows.any():
                d2 = dx2[rows] + ((fy[rows] - ys[j]) ** 2)[:, None]
                grown[k, j, ir] = np.min(d2, axis=0) <= 400.0 + 1e-9
    cw = grown & ~lungs
    # medial limits: sternum edge in front of the vertebral body's front, vertebral body edge behind
    front = np.full(g.shape[0], np.nan)
    vb_edge = np.full(g.shape[0], np.nan)
    st_edge = np.full(g.shape[0], np.nan)
    for k in range(g.shape[0]):
        jj, ii = np.nonzero(vb[k])
        if len(jj):
            front[k], vb_edge[k] = ys[jj.min()], sign * (sign * xs[ii]).max()
        jj, ii = np.nonzero(sternum[k])
        if len(jj):
            st_edge[k] = sign * (sign * xs[ii]).max()
    for arr in (front, vb_edge, st_edge):
        valid = np.flatnonzero(~np.isnan(arr))
        for k in range(len(arr)):
            if np.isnan(arr[k]):
                arr[k] = arr[valid[np.argmin(np.abs(valid - k))]]
    for k in np.flatnonzero(cw.any(axis=(1, 2))):
        is_front = np.broadcast_to(ys[:, None] < front[k], (len(ys), len(xs)))
        medial_ok = np.where(is_front, sign * xs[None, :] > sign * st_edge[k], sign * xs[None, :] > sign * vb_edge[k])
        cw[k] &= medial_ok
        # thoracic cavity: hull of the ipsilateral lung; hull of both lungs in front of the vertebral body
        for region, only_front in ((ipsi[k], False), (lungs[k], True)):
            jj, ii = np.nonzero(region)
            if len(jj) < 3:
                continue
            hull = ConvexHull(np.column_stack([xs[ii], ys[jj]]))
            a, b, c = hull.equations[:, 0], hull.equations[:, 1], hull.equations[:, 2]
            inside = np.all(a[:, None, None] * xs[None, None, ir] + b[:, None, None] * ys[None, jr, None]
                            + c[:, None, None] <= 1e-6, axis=0)
            cut = (inside & is_front[np.ix_(jr, [0])]) if only_front else inside
            cw[np.ix_([k], jr, ir)] &= ~cut[None]
    cw &= ~vb & ~sternum
    # skin: the outer 5 mm of the body (distance from the centre to the nearest outside centre,
    # minus half a pixel: the surface lies half-way between them)
    kk, jj, ii = np.nonzero(cw)
    outside = ~body
    edge = outside & (np.roll(body, 1, 2) | np.roll(body, -1, 2) | np.roll(body, 1, 1) | np.roll(body, -1, 1)
                      | np.roll(body, 1, 0) | np.roll(body, -1, 0))
    ek, ej, ei = np.nonzero(edge)
    tree = cKDTree(np.column_stack([xs[ei], ys[ej], zs[ek]]))
    d, _ = tree.query(np.column_stack([xs[ii], ys[jj], zs[kk]]))
    deep = d - 0.5 * min(g.spacing_mm[:2]) > 5.0
    out = np.zeros(g.shape, dtype=bool)
    out[kk[deep], jj[deep], ii[deep]] = True
    return out & body


def test_chest_wall_matches_the_reference_construction(case) -> None:  # noqa: ANN001
    side = case.truth["tumour"]["side"]
    s = case.structures
    ipsi = s["Lung_L"] if side == "left" else s["Lung_R"]
    result = chestwall.chest_wall(ipsi, s["Lung_L"] | s["Lung_R"], s["Body"], case.grid, side,
                                  vertebral_body=s["VB"], sternum=s["Sternum"], midline_x_mm=0.0)
    reference = _reference_chest_wall(case, side)
    ratio = _ratio(result.mask, reference)
    dice = 2 * np.count_nonzero(result.mask & reference) / (result.mask.sum() + reference.sum())
    assert abs(ratio - 1.0) <= TOLERANCE, f"chest wall / reference volume = {ratio:.4f}"
    assert dice > 0.95
    # on the tumour's side only, outside both lungs, inside the body
    xs = case.grid.axis_coords_mm(0)
    ii = np.nonzero(result.mask)[2]
    assert np.all(xs[ii] > 0) if side == "left" else np.all(xs[ii] < 0)
    assert not np.any(result.mask & (s["Lung_L"] | s["Lung_R"] | s["VB"] | s["Sternum"]))
    assert np.all(result.mask <= s["Body"])


def test_chest_wall_limited_to_3_cm_around_the_ptv(right_case) -> None:  # noqa: ANN001
    case = right_case
    side = case.truth["tumour"]["side"]
    s = case.structures
    ipsi = s["Lung_L"] if side == "left" else s["Lung_R"]
    full = chestwall.chest_wall(ipsi, s["Lung_L"] | s["Lung_R"], s["Body"], case.grid, side,
                                vertebral_body=s["VB"], sternum=s["Sternum"], midline_x_mm=0.0)
    near = chestwall.chest_wall(ipsi, s["Lung_L"] | s["Lung_R"], s["Body"], case.grid, side,
                                vertebral_body=s["VB"], sternum=s["Sternum"], midline_x_mm=0.0, ptv=s["PTV"],
                                limit_to_ptv_mm=30.0)
    assert near.mask.any() and np.all(near.mask <= full.mask)
    within = _within(s["PTV"], case.grid, 30.0)
    reference = full.mask & within
    ratio = _ratio(near.mask, reference)
    assert abs(ratio - 1.0) <= TOLERANCE, f"limited chest wall / reference volume = {ratio:.4f}"


# ----------------------------------------------------------------------------- great vessels and PBT zone


def test_great_vessels_match_the_reference_construction(left_case) -> None:  # noqa: ANN001
    case = left_case
    g, s = case.grid, case.structures
    lumen = s["A_Aorta"] | s["A_Pulmonary"] | s["V_Venacava_S"] | s.get("V_Venacava_I", np.zeros(g.shape, bool))
    lungs = s["Lung_L"] | s["Lung_R"]
    result = vessels.great_vessels(lumen, s["PTV"], g, body=s["Body"], lungs=lungs, heart=s["Heart"])
    zs = g.axis_coords_mm(2)
    ptv_z = zs[np.flatnonzero(s["PTV"].any(axis=(1, 2)))]
    source_z = (zs >= ptv_z.min() - 35.0 - 1e-6) & (zs <= ptv_z.max() + 35.0 + 1e-6)
    grown = _within(lumen & source_z[:, None, None], g, 5.0)
    window = (zs >= ptv_z.min() - 30.0 - 1e-6) & (zs <= ptv_z.max() + 30.0 + 1e-6)
    reference = grown & window[:, None, None] & ~lungs & ~s["Heart"] & s["Body"]
    assert reference.any()
    ratio = _ratio(result.mask, reference)
    assert abs(ratio - 1.0) <= TOLERANCE, f"great vessels / reference volume = {ratio:.4f}"
    # nothing beyond 3 cm above or below the PTV
    ks = np.flatnonzero(result.mask.any(axis=(1, 2)))
    assert zs[ks].min() >= ptv_z.min() - 30.0 - 1e-6 and zs[ks].max() <= ptv_z.max() + 30.0 + 1e-6


def _capsule_surface(a: np.ndarray, b: np.ndarray, ra: float, rb: float, step: float) -> np.ndarray:
    """Points on the surface of a painted tube segment: {p : |p - c(t*)| = r(t*)}, t* the clamped
    projection on the axis: the lateral band c(t) + r(t) u (u normal to the axis) and the two
    hemispherical caps."""
    d = b - a
    length = float(np.linalg.norm(d))
    axis = d / length
    e1 = np.cross(axis, [1.0, 0.0, 0.0] if abs(axis[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    pts = []
    ts = np.linspace(0.0, 1.0, int(np.ceil(length / step)) + 1)
    rmax = max(ra, rb)
    th = np.linspace(0.0, 2 * np.pi, int(np.ceil(2 * np.pi * rmax / step)), endpoint=False)
    r = ra + (rb - ra) * ts
    ring = np.cos(th)[:, None] * e1 + np.sin(th)[:, None] * e2  # (n_theta, 3)
    pts.append((a + ts[:, None] * d)[:, None, :] + r[:, None, None] * ring[None, :, :])
    for centre, radius, sign in ((a, ra, -1.0), (b, rb, 1.0)):
        phi = np.linspace(0.0, np.pi / 2, int(np.ceil(radius * np.pi / 2 / step)) + 1)
        for p_ in phi:
            n = max(1, int(np.ceil(2 * np.pi * radius * np.cos(p_) / step)))
            t_ = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
            u = np.cos(p_) * (np.cos(t_)[:, None] * e1 + np.sin(t_)[:, None] * e2) + sign * np.sin(p_) * axis
            pts.append(centre + radius * u)
    return np.vstack([p.reshape(-1, 3) for p in pts])


def _analytic_pbt_surface(grid: Grid, step: float = 0.3) -> np.ndarray:
    """The phantom's analytic proximal bronchial tree: every bronchus tube, and the trachea tube between
    the slab faces of its lowest and highest PBT slices (the phantom's PBT keeps the trachea voxels
    from 5 mm below to 20 mm above the carina; each slice covers half a slice spacing on each side)."""
    from sbrtstandards.phantom import anatomy as A

    zs = grid.axis_coords_mm(2)
    kept = zs[(zs >= A.CARINA_Z - 5.0) & (zs <= A.CARINA_Z + A.PBT_TRACHEA_MM)]
    z_lo, z_hi = kept.min() - grid.spacing_mm[2] / 2, kept.max() + grid.spacing_mm[2] / 2
    parts = [_capsule_surface(a, b, ra, rb, step) for t in A.BRONCHI.values() for a, b, ra, rb in t.segments()]
    for a, b, ra, rb in A.TRACHEA_TUBE.segments():
        lateral = _capsule_surface(a, b, ra, rb, step)
        parts.append(lateral[(lateral[:, 2] >= z_lo) & (lateral[:, 2] <= z_hi)])
        for z0 in (z_lo, z_hi):  # the cut faces: the trachea's cross-section at z0
            g = np.arange(-15.0, 15.0 + step, step)
            gx, gy = np.meshgrid(g, g)
            d = b - a
            t0 = (z0 - a[2]) / d[2]
            c = a + t0 * d
            q = np.column_stack([gx.ravel() + c[0], gy.ravel() + c[1], np.full(gx.size, z0)])
            tt = np.clip(((q - a) @ d) / (d @ d), 0.0, 1.0)
            inside = np.linalg.norm(q - (a + tt[:, None] * d), axis=1) <= ra + (rb - ra) * tt
            parts.append(q[inside])
    return np.vstack(parts)


def test_pbt_zone_matches_the_analytic_truth(right_case) -> None:  # noqa: ANN001
    """The zone grown from the voxelised PBT against the zone of the analytic PBT (distance <= 20 mm
    from densely sampled analytic surfaces, k-d tree)."""
    case = right_case
    g, s = case.grid, case.structures
    notes: list[str] = []
    zone = grow_in_box(s["AirWay_Prox"], g, 20.0, name="PBT", notes=notes) & s["Body"]
    surface = _analytic_pbt_surface(g)
    xs, ys, zs = _centres(g)
    lo, hi = surface.min(axis=0) - 20.0, surface.max(axis=0) + 20.0
    si = np.flatnonzero((xs >= lo[0]) & (xs <= hi[0]))
    sj = np.flatnonzero((ys >= lo[1]) & (ys <= hi[1]))
    sk = np.flatnonzero((zs >= lo[2]) & (zs <= hi[2]))
    Z, Y, X = np.meshgrid(zs[sk], ys[sj], xs[si], indexing="ij")
    d, _ = cKDTree(surface).query(np.column_stack([X.ravel(), Y.ravel(), Z.ravel()]),
                                  distance_upper_bound=20.0 + 1e-9)
    truth = np.zeros(g.shape, dtype=bool)
    truth[np.ix_(sk, sj, si)] = (d <= 20.0).reshape(Z.shape)
    truth = (truth | s["AirWay_Prox"]) & s["Body"]
    ratio = _ratio(zone, truth)
    assert abs(ratio - 1.0) <= TOLERANCE, f"PBT zone / analytic zone volume = {ratio:.4f}"
    dice = 2 * np.count_nonzero(zone & truth) / (zone.sum() + truth.sum())
    assert dice > 0.97


# ----------------------------------------------------------------------------- side, through build_oars


def test_ipsilateral_side_and_built_names(case) -> None:  # noqa: ANN001
    side = case.truth["tumour"]["side"]
    s = case.structures
    given = {
        "body": Structure(["Body"], s["Body"]),
        "lung_left": Structure(["Lung_L"], s["Lung_L"]),
        "lung_right": Structure(["Lung_R"], s["Lung_R"]),
        "vertebra": Structure(["VB"], s["VB"]),
        "sternum": Structure(["Sternum"], s["Sternum"]),
        "ITV": Structure(["ITV"], s["ITV"]),
        "PTV": Structure(["PTV"], s["PTV"]),
        "pbt": Structure(["AirWay_Prox"], s["AirWay_Prox"]),
        "trachea": Structure(["Trachea"], s["Trachea"]),
        "esophagus": Structure(["Esophagus"], s["Esophagus"]),
        "heart": Structure(["Heart"], s["Heart"]),
    }
    result = build_oars(None, case.grid, given, "PTV", s["PTV"])
    assert result.side == side
    assert result.location is not None and result.location.site_class == "peripheral"
    built = {b.role: b for b in result.built}
    assert built["chest_wall"].name == ("Chestwall_L" if side == "left" else "Chestwall_R")
    assert built["lungs_minus_target"].name == "Lungs-ITV"
    assert {"body", "lung_left", "lung_right"} <= {e["role"] for e in result.existing}
    # forcing the other side builds the other chest wall
    other = "right" if side == "left" else "left"
    from sbrtstandards.oars.build import OarOptions

    forced = build_oars(None, case.grid, given, "PTV", s["PTV"], options=OarOptions(side=other))
    assert forced.side == other
    assert any(b.name == ("Chestwall_L" if other == "left" else "Chestwall_R") for b in forced.built)
