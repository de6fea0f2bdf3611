"""Compiled kernels behind :func:`.instances.cell_count` and
:func:`.instances.touching_pairs` (numba): one pass over a plane that keeps a
value per run of equal pixels, or per run of equal contacts, so that only those
few values are sorted, not every pixel (a 4096x4096 plane of 64-pixel cells:
about 260,000 runs for 16.8 million pixels)."""

from __future__ import annotations

import numba
import numpy as np

from ._separation_kernels import touching_row


@numba.njit(cache=True, nogil=True)
def run_ids(plane):
    """The value of every run of equal non-zero pixels along the rows: each
    non-zero value of ``plane`` at least once."""
    h, w = plane.shape
    out = np.empty(0, plane.dtype)
    for fill in (False, True):  # count, then fill
        n = 0
        for i in range(h):
            for j in range(w):
                v = plane[i, j]
                if v != 0 and (j == 0 or plane[i, j - 1] != v):
                    if fill:
                        out[n] = v
                    n += 1
        if not fill:
            out = np.empty(n, plane.dtype)
    return out


@numba.njit(cache=True, nogil=True)
def contact_pairs(plane):
    """``(low, high)`` of every pair of 8-neighbours with different non-zero values,
    a pair repeated by the next contact found left out: each touching pair of
    values at least once, shape ``(n, 2)``."""
    h, w = plane.shape
    out = np.empty((0, 2), plane.dtype)
    touching = np.zeros(w, np.bool_)
    for fill in (False, True):  # count, then fill
        n = 0
        last_a, last_b = plane.dtype.type(0), plane.dtype.type(0)
        for i in range(h):
            touching_row(plane, i, touching)
            for j in range(w):
                if not touching[j]:
                    continue
                v = plane[i, j]
                # Right, down-left, down and down-right: every 8-neighbour pair once.
                for di, dj in ((0, 1), (1, -1), (1, 0), (1, 1)):
                    a, b = i + di, j + dj
                    if a >= h or b < 0 or b >= w:
                        continue
                    u = plane[a, b]
                    if u == 0 or u == v:
                        continue
                    low, high = min(u, v), max(u, v)
                    if low == last_a and high == last_b:
                        continue
                    if fill:
                        out[n, 0], out[n, 1] = low, high
                    last_a, last_b = low, high
                    n += 1
        if not fill:
            out = np.empty((n, 2), plane.dtype)
    return out
