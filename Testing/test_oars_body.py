"""Body, lungs, airways and bones found on the CT, against the synthetic thorax's truth.

The CT is the phantom's average of 3 breathing phases with its image noise (12 HU); the
truth is its planning label map (every voxel carries the organ its centre lies in).
"""

from __future__ import annotations

import numpy as np
import pytest

from sbrtstandards.errors import InputError
from sbrtstandards.grid import Grid
from sbrtstandards.oars import body as B
from sbrtstandards.phantom import anatomy as A
from sbrtstandards.phantom import make_case


@pytest.fixture(scope="module")
def thorax():  # noqa: ANN201
    case = make_case("lung", phases=3, location="peripheral", side="left")
    hu = case.average_hu()
    body = B.segment_body(hu, case.grid)
    return case, hu, body


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_body_matches_the_truth_and_leaves_the_couch_out(thorax) -> None:  # noqa: ANN001
    case, _hu, body = thorax
    assert case.labels is not None
    truth = case.structures["Body"]
    assert dice(body, truth) > 0.995
    assert not np.any(body & (case.labels == A.COUCH))
    # the lungs and the airways are inside the body (holes filled slice by slice)
    assert np.all(body[case.structures["Lung_L"] | case.structures["Lung_R"] | case.structures["Trachea"]])


def test_couch_bridged_by_a_thin_strap_is_cut_off(thorax) -> None:  # noqa: ANN001
    case, hu, _body = thorax
    ys = case.grid.axis_coords_mm(1)
    xs = case.grid.axis_coords_mm(0)
    bridged = hu.copy()
    gap_rows = (ys > A.BODY_BACK_Y - 1.0) & (ys < A.COUCH_Y[0] + 1.0)
    strap = np.abs(xs) <= 3.0  # a 6 mm strap of soft tissue density from the back to the couch
    bridged[:, np.ix_(gap_rows, strap)[0], np.ix_(gap_rows, strap)[1]] = 0
    body = B.segment_body(bridged, case.grid)
    assert not np.any(body & (case.labels == A.COUCH))
    assert dice(body, case.structures["Body"]) > 0.99


def test_empty_ct_is_an_input_error() -> None:
    grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (10, 10, 5))
    with pytest.raises(InputError, match="no voxel"):
        B.segment_body(np.full(grid.shape, -1000, dtype=np.int16), grid)


def test_lungs_left_right_and_airways(thorax) -> None:  # noqa: ANN001
    case, hu, body = thorax
    seg = B.segment_lungs(hu, case.grid, body)
    s = case.structures
    tumour = case.labels == A.TUMOUR
    # holes are filled: the tumour inside the left lung is part of the anatomical lung
    assert dice(seg.left, s["Lung_L"] | (tumour & seg.left)) > 0.97
    assert dice(seg.right, s["Lung_R"]) > 0.97
    assert not np.any(seg.left & seg.right)
    xs = case.grid.axis_coords_mm(0)
    assert np.all(xs[np.nonzero(seg.left)[2]] > 0) and np.all(xs[np.nonzero(seg.right)[2]] < 0)
    # airways: the lumen the region growing found lies in the trachea and bronchi, and splits at the carina
    airway_truth = s["Trachea"] | s["Bronchus"]
    assert seg.airway.any()
    assert np.count_nonzero(seg.airway & airway_truth) / np.count_nonzero(seg.airway) > 0.98
    # the lumen splits at the carinal ridge, a few mm below the junction of the airway centre lines
    assert seg.carina_z_mm is not None
    assert A.CARINA_Z - 8.0 <= seg.carina_z_mm <= A.CARINA_Z
    assert not np.any(seg.airway & (seg.left | seg.right))


def test_touching_lungs_are_cut_at_the_midline() -> None:
    grid = Grid((-100.0, -60.0, -40.0), (2.0, 2.0, 4.0), (101, 61, 21))
    xs, ys, zs = (grid.axis_coords_mm(a) for a in range(3))
    x, y, z = xs[None, None, :], ys[None, :, None], zs[:, None, None]
    body = np.broadcast_to((x / 98.0) ** 2 + (y / 58.0) ** 2 <= 1.0, grid.shape)
    lungs = (((np.abs(x) - 38.0) / 40.0) ** 2 + (y / 40.0) ** 2 + (z / 60.0) ** 2) <= 1.0
    hu = np.where(body, 40, -1000).astype(np.int16)
    hu[lungs & body] = -850  # the two lungs meet at x = 0 (an anterior/posterior junction)
    seg = B.segment_lungs(hu, grid, np.asarray(body))
    assert seg.left.any() and seg.right.any()
    assert np.all(xs[np.nonzero(seg.left)[2]] >= -2.0) and np.all(xs[np.nonzero(seg.right)[2]] <= 2.0)
    assert abs(np.count_nonzero(seg.left) - np.count_nonzero(seg.right)) < 0.05 * np.count_nonzero(lungs)
    assert any("touch" in n for n in seg.notes)
    assert any("trachea" in n for n in seg.notes)  # no airway in this CT, and it says so


def test_sternum_and_vertebral_bodies(thorax) -> None:  # noqa: ANN001
    case, hu, body = thorax
    bones = B.find_bones(hu, case.grid, body)
    s = case.structures
    assert dice(bones.sternum, s["Sternum"]) > 0.85
    # the vertebral body (front of the spine): its lateral edges are what the chest wall needs
    xs = case.grid.axis_coords_mm(0)
    for k in range(case.grid.shape[0]):
        truth_cols = np.flatnonzero(s["VB"][k].any(axis=0))
        found_cols = np.flatnonzero(bones.vertebral_body[k].any(axis=0))
        if len(truth_cols) and len(found_cols):
            assert abs(xs[found_cols[-1]] - xs[truth_cols[-1]]) <= 1.5 + 1e-6
            assert abs(xs[found_cols[0]] - xs[truth_cols[0]]) <= 1.5 + 1e-6
    assert np.count_nonzero(bones.vertebral_body & s["VB"]) / np.count_nonzero(bones.vertebral_body) > 0.9
    # contrast-filled vessels (> 200 HU) are not taken for the sternum
    assert not np.any(bones.sternum & (s["A_Aorta"] | s["A_Pulmonary"]))
