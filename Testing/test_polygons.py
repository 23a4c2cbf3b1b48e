"""The polygon rasteriser (even-odd rule, half-open edges) against known answers and matplotlib.

``fill_polygons`` and its many-plane form ``fill_polygon_stack`` are vectorised scanline
fills; they are checked against hand-counted squares (the half-open rule on vertices and
edges that lie exactly on samples), against matplotlib's independent point-in-polygon test
on random star polygons with holes and islands (samples off the edges), and against each
other.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from sbrtstandards.polygons import expand_spans, fill_polygon_stack, fill_polygons, polygon_area_mm2, spans_mask


def square(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def test_half_open_rule_on_a_square_whose_edges_lie_on_samples() -> None:
    axis = np.arange(-2.0, 7.0)  # samples at integers
    mask = fill_polygons([square(0, 0, 4, 4)], axis, axis)
    inside = np.argwhere(mask)  # (row = y, column = x)
    assert len(inside) == 16  # x, y in {0, 1, 2, 3}: lower and left edges in, upper and right out
    assert set(axis[inside[:, 1]]) == {0.0, 1.0, 2.0, 3.0} == set(axis[inside[:, 0]])
    # clockwise or anticlockwise, same samples
    assert np.array_equal(fill_polygons([square(0, 0, 4, 4)[::-1]], axis, axis), mask)


def test_holes_islands_and_touching_squares() -> None:
    axis = np.arange(0.5, 12.0)  # sample centres between integers
    ring = [square(0, 0, 10, 10), square(3, 3, 7, 7)]
    assert fill_polygons(ring, axis, axis).sum() == 100 - 16
    islands = [square(0, 0, 2, 2), square(5, 5, 8, 6)]
    assert fill_polygons(islands, axis, axis).sum() == 4 + 3
    touching = [square(0, 0, 2, 2), square(2, 0, 4, 2)]  # a shared edge is counted once
    assert fill_polygons(touching, np.arange(0.0, 6.0), np.arange(0.0, 3.0)).sum() == 8
    assert fill_polygons([np.array([[0.0, 0.0], [1.0, 1.0]])], axis, axis).sum() == 0  # 2 points: no polygon


def _star(rng: np.random.Generator, cx: float, cy: float, r: float, n: int) -> np.ndarray:
    ang = np.sort(rng.random(n)) * 2 * np.pi
    rad = r * (0.4 + 0.6 * rng.random(n))
    return np.column_stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)])


def _matplotlib_even_odd(polygons: list[np.ndarray], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    points = np.column_stack([xx.ravel(), yy.ravel()])
    parity = np.zeros(len(points), dtype=bool)
    for poly in polygons:  # simple polygons: the even-odd rule is the parity of the containments
        parity ^= MplPath(poly).contains_points(points)
    return parity.reshape(len(ys), len(xs))


@pytest.mark.parametrize("seed", range(4))
def test_random_polygons_with_holes_agree_with_matplotlib(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(25):
        polygons = [_star(rng, *rng.uniform(-15, 15, 2), rng.uniform(3, 20), int(rng.integers(3, 40)))]
        centre = polygons[0].mean(axis=0)
        polygons.append(centre + 0.3 * (polygons[0] - centre))  # a hole (star-shaped about its centre)
        polygons.append(_star(rng, 40.0, rng.uniform(-15, 15), rng.uniform(1, 5), 7))  # an island
        h = rng.choice([0.37, 0.5, 1.1])
        xs = -40.0 + (np.arange(int(90 / h)) + rng.random()) * h
        ys = -40.0 + (np.arange(int(80 / h)) + rng.random()) * h
        got = fill_polygons(polygons, xs, ys)
        expected = _matplotlib_even_odd(polygons, xs, ys)
        assert np.count_nonzero(got != expected) <= 2  # (a sample within round-off of an edge)
        assert got.any()


def test_stack_equals_one_plane_at_a_time_and_non_uniform_axes() -> None:
    rng = np.random.default_rng(5)
    planes = [[_star(rng, *rng.uniform(-10, 10, 2), rng.uniform(2, 15), int(rng.integers(3, 25)))
               for _ in range(int(rng.integers(0, 4)))] for _ in range(12)]  # fmt: skip
    for xs in (np.linspace(-30, 30, 57), np.sort(rng.uniform(-30, 30, 40))):
        ys = np.linspace(-25, 25, 44)
        stack = fill_polygon_stack(planes, xs, ys)
        assert stack.shape == (12, 44, len(xs))
        for plane, mask in zip(planes, stack):
            assert np.array_equal(mask, fill_polygons(plane, xs, ys))


def test_span_helpers() -> None:
    assert expand_spans(np.array([5, 10, 20]), np.array([2, 0, 3])).tolist() == [5, 6, 20, 21, 22]
    assert expand_spans(np.array([1]), np.array([0])).tolist() == []
    flat = spans_mask(np.array([0, 3, 3, 7]), np.array([2, 3, 5, 10]), 10)
    assert flat.tolist() == [True, True, False, True, True, False, False, True, True, True]
    assert not spans_mask(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 4).any()


def test_polygon_area() -> None:
    assert polygon_area_mm2(square(0, 0, 3, 2)) == 6.0
    assert polygon_area_mm2(square(0, 0, 3, 2)[::-1]) == 6.0
