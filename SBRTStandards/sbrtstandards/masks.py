"""Boolean operations on structure masks: union, intersection, subtraction, crop-to-body.

All masks are boolean voxel arrays on one grid (same shape); a mismatch is a user error
(two structures from different grids), reported as :class:`InputError` rather than a numpy
broadcasting error or, worse, a silent broadcast.
"""

from __future__ import annotations

import warnings

import numpy as np

from sbrtstandards.errors import InputError


class MaskWarning(UserWarning):
    """A structure operation whose result is probably not what the user meant (e.g. empty)."""


def union(*masks: np.ndarray) -> np.ndarray:
    """Voxels in any of ``masks``."""
    arrays = _same_shape(masks, "union")
    out = arrays[0].copy()
    for a in arrays[1:]:
        out |= a
    return out


def intersect(*masks: np.ndarray) -> np.ndarray:
    """Voxels in all of ``masks``."""
    arrays = _same_shape(masks, "intersection")
    out = arrays[0].copy()
    for a in arrays[1:]:
        out &= a
    return out


def subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Voxels of ``a`` not in ``b`` (e.g. lungs minus GTV)."""
    first, second = _same_shape((a, b), "subtraction")
    return first & ~second


def crop_to(mask: np.ndarray, body: np.ndarray, *, name: str = "structure") -> np.ndarray:
    """``mask`` limited to ``body`` (e.g. a PTV or ring kept inside the patient's outline).

    Warns (:class:`MaskWarning`) when the crop leaves nothing of a non-empty structure: the
    structure lies outside the body, which usually means the wrong body or frame.
    """
    m, b = _same_shape((mask, body), "crop")
    out = m & b
    if m.any() and not out.any():
        warnings.warn(f"{name} lies entirely outside the body: cropping leaves it empty", MaskWarning,
                      stacklevel=2)
    return out


def _same_shape(masks: tuple[np.ndarray, ...], what: str) -> list[np.ndarray]:
    if not masks:
        raise InputError(f"{what} needs at least one mask")
    arrays = []
    for n, m in enumerate(masks, start=1):
        a = np.asarray(m)
        if a.dtype != bool:
            if not (np.issubdtype(a.dtype, np.integer) and a.size and a.min() >= 0 and a.max() <= 1):
                if a.size and not np.issubdtype(a.dtype, np.integer):
                    raise InputError(f"{what}: mask {n} has dtype {a.dtype}; boolean or 0/1 masks are needed")
                if a.size:
                    raise InputError(f"{what}: mask {n} holds values other than 0 and 1")
            a = a.astype(bool)
        arrays.append(a)
    shape = arrays[0].shape
    for n, a in enumerate(arrays[1:], start=2):
        if a.shape != shape:
            raise InputError(
                f"{what}: mask {n} has shape {a.shape} but mask 1 has shape {shape}; "
                "the structures must be on the same grid (resample one of them first)"
            )
    return arrays
