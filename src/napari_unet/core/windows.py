"""Rectangular windows of a 2D image, as ``(rows, columns)`` pairs of slices: where
an edit can change a map, so that only that much is recomputed."""

from __future__ import annotations

import numpy as np


def changed_window(old: np.ndarray, new: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of the pixels that differ, or None."""
    return mask_window(old != new)


def mask_window(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of the true pixels of a 2D mask, or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def grow_window(window: tuple[slice, slice], margin: int, shape) -> tuple[slice, slice]:
    """``window`` (slices, open ends allowed) grown by ``margin`` and kept in ``shape``."""
    bounds = (s.indices(n)[:2] for s, n in zip(window, shape, strict=True))
    return tuple(
        slice(max(0, start - margin), min(n, stop + margin))
        for (start, stop), n in zip(bounds, shape, strict=True)
    )


def union_window(a: tuple[slice, slice], b: tuple[slice, slice]) -> tuple[slice, slice]:
    """The bounding box of two windows (slices with both ends given)."""
    return tuple(
        slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in zip(a, b, strict=True)
    )


def window_within(inner: tuple[slice, slice], outer: tuple[slice, slice]) -> tuple[slice, slice]:
    """``inner`` (a window inside ``outer``) in the coordinates of ``outer``'s crop."""
    return tuple(
        slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer, strict=True)
    )
