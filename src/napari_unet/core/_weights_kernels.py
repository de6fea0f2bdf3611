"""Compiled kernels behind :mod:`.weights` (numba; one pass each, no per-instance loop).

The border term needs, at every background pixel, the distances d1, d2 to the
nearest pixels of the nearest and second-nearest instance. Both come from a
separable two-pass scan, as a Euclidean distance transform does, but keeping
the two nearest *distinct* labels instead of one:

1. down each column, the two nearest distinct labels and their vertical
   distances (a forward and a backward scan, merged);
2. along each row, the two nearest distinct labels over the column results of
   nearby columns, scanning outwards and stopping as soon as no column can
   beat the second-best distance.

Keeping two distinct labels per column is enough: whichever label is nearest
overall, one of a column's two labels differs from it and is nearer than any
third label of that column. Distances beyond ``cutoff`` are never needed (the
term is below tolerance there), which bounds every scan.
"""

from __future__ import annotations

import math

import numba
import numpy as np

NONE = np.int32(2**30)


@numba.njit(cache=True, nogil=True)
def _insert(label, d, l1, d1, l2, d2):
    """Insert (label, d) into the two nearest distinct labels (l1, d1) <= (l2, d2)."""
    if label == l1:
        if d < d1:
            d1 = d
    elif label == l2:
        if d < d2:
            d2 = d
            if d2 < d1:
                l1, d1, l2, d2 = l2, d2, l1, d1
    elif d < d1:
        l1, d1, l2, d2 = label, d, l1, d1
    elif d < d2:
        l2, d2 = label, d
    return l1, d1, l2, d2


# Columns are scanned in blocks so that the inner loop walks along rows (memory order).
BLOCK = 64


@numba.njit(cache=True, nogil=True, parallel=True)
def column_pass(labels, cutoff, dist_dtype):
    """Per pixel: the two nearest distinct labels in its column within ``cutoff``.

    Returns ``(label1, dist1, label2, dist2)``; label 0 means none within reach.
    Distances are stored as ``dist_dtype`` (the smallest that holds ``cutoff``).
    """
    h, w = labels.shape
    lab1 = np.zeros((h, w), labels.dtype)
    lab2 = np.zeros((h, w), labels.dtype)
    dst1 = np.zeros((h, w), dist_dtype)
    dst2 = np.zeros((h, w), dist_dtype)
    zero = labels.dtype.type(0)
    far = np.int64(NONE)
    for block in numba.prange((w + BLOCK - 1) // BLOCK):
        j0 = block * BLOCK
        n = min(BLOCK, w - j0)
        # forward: the last two distinct labels seen above (or at) each row
        fl1 = np.zeros(n, labels.dtype)
        fl2 = np.zeros(n, labels.dtype)
        fp1 = np.full(n, -far)
        fp2 = np.full(n, -far)
        for i in range(h):
            for c in range(n):
                v = labels[i, j0 + c]
                if v != 0:
                    if v != fl1[c]:
                        fl2[c], fp2[c] = fl1[c], fp1[c]
                        fl1[c] = v
                    fp1[c] = i
                if i - fp1[c] <= cutoff:
                    lab1[i, j0 + c], dst1[i, j0 + c] = fl1[c], i - fp1[c]
                    if i - fp2[c] <= cutoff:
                        lab2[i, j0 + c], dst2[i, j0 + c] = fl2[c], i - fp2[c]
        bl1 = np.zeros(n, labels.dtype)
        bl2 = np.zeros(n, labels.dtype)
        bp1 = np.full(n, far + h)
        bp2 = np.full(n, far + h)
        for i in range(h - 1, -1, -1):
            for c in range(n):
                j = j0 + c
                v = labels[i, j]
                if v != 0:
                    if v != bl1[c]:
                        bl2[c], bp2[c] = bl1[c], bp1[c]
                        bl1[c] = v
                    bp1[c] = i
                if bp1[c] - i > cutoff:
                    continue
                l1, l2 = lab1[i, j], lab2[i, j]
                d1 = np.int64(dst1[i, j]) if l1 != zero else far
                d2 = np.int64(dst2[i, j]) if l2 != zero else far
                l1, d1, l2, d2 = _insert(bl1[c], bp1[c] - i, l1, d1, l2, d2)
                if bp2[c] - i <= cutoff:
                    l1, d1, l2, d2 = _insert(bl2[c], bp2[c] - i, l1, d1, l2, d2)
                lab1[i, j], lab2[i, j] = l1, l2
                if l1 != zero:
                    dst1[i, j] = d1
                if l2 != zero:
                    dst2[i, j] = d2
    return lab1, dst1, lab2, dst2


@numba.njit(cache=True, nogil=True)
def _nearest(flags):
    """Distance from each position to the nearest True one (large if none)."""
    n = flags.size
    out = np.empty(n, np.int64)
    last = -np.int64(NONE)
    for x in range(n):
        if flags[x]:
            last = x
        out[x] = x - last
    last = np.int64(NONE) + n
    for x in range(n - 1, -1, -1):
        if flags[x]:
            last = x
        out[x] = min(out[x], last - x)
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def border_term(labels, lab1, dst1, lab2, dst2, w0, sigma, cutoff, out):
    """``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` at background pixels, into ``out``."""
    h, w = labels.shape
    reach = math.ceil(cutoff)
    scale = 1.0 / (2.0 * sigma * sigma)
    zero = labels.dtype.type(0)
    for i in numba.prange(h):
        # gap: horizontal distance to the nearest column with any instance within
        # reach, a lower bound of d1 where the scan can start. second: distance to
        # the nearest column that shows two labels (its own two, or a change of
        # label from the previous such column), a lower bound of d2.
        gap = _nearest(lab1[i] != 0)
        evidence = lab2[i] != 0
        previous = -1
        for x in range(w):
            if lab1[i, x] != 0:
                if previous >= 0 and lab1[i, x] != lab1[i, previous]:
                    evidence[x] = True
                    evidence[previous] = True
                previous = x
        second = _nearest(evidence)
        for x in range(w):
            if labels[i, x] != 0 or gap[x] + second[x] > cutoff:
                out[i, x] = 0.0
                continue
            l1, d1, l2, d2 = zero, np.int64(NONE) ** 2, zero, np.int64(NONE) ** 2
            for k in range(gap[x], reach + 1):
                # Every column from here on is at least k away: stop once none can
                # change the second-nearest label or bring d1 + d2 under the cutoff.
                if k * k >= d2:
                    break
                if (math.sqrt(d1) + k if d1 < k * k else 2.0 * k) > cutoff:
                    break
                for side in range(2 if k else 1):
                    j = x + k if side else x - k
                    if j < 0 or j >= w or lab1[i, j] == 0:
                        continue
                    v = np.int64(dst1[i, j])
                    l1, d1, l2, d2 = _insert(lab1[i, j], k * k + v * v, l1, d1, l2, d2)
                    if lab2[i, j] != 0:
                        v = np.int64(dst2[i, j])
                        l1, d1, l2, d2 = _insert(lab2[i, j], k * k + v * v, l1, d1, l2, d2)
            if l2 == 0:
                out[i, x] = 0.0
                continue
            s = math.sqrt(d1) + math.sqrt(d2)
            out[i, x] = w0 * math.exp(-s * s * scale) if s <= cutoff else 0.0


@numba.njit(cache=True, nogil=True)
def _in_sorted(values, v):
    k = np.searchsorted(values, v)
    return k < values.size and values[k] == v


@numba.njit(cache=True, nogil=True)
def _outranked(labels, protected, removed, i, j):
    """Whether pixel (i, j) touches a kept pixel of an instance that outranks its own."""
    h, w = labels.shape
    v = labels[i, j]
    pv = protected.size > 0 and _in_sorted(protected, v)
    for a in range(max(i - 1, 0), min(i + 2, h)):
        for b in range(max(j - 1, 0), min(j + 2, w)):
            u = labels[a, b]
            if u == 0 or u == v or removed[a, b]:
                continue
            pu = protected.size > 0 and _in_sorted(protected, u)
            if pu > pv or (pu == pv and u > v):
                return True
    return False


@numba.njit(cache=True, nogil=True)
def removed_pixels(labels, protected):
    """Pixels that touch (8-neighbour) a kept pixel of an instance that outranks theirs.

    Rank is (protected, id): of two touching instances the lower-ranked one gives
    up its contact pixels, so the gap is one pixel wide; where three meet, a pixel
    whose higher neighbour itself gave way stays. ``protected`` (sorted) holds ids
    that would otherwise vanish.
    """
    h, w = labels.shape
    removed = np.zeros((h, w), np.bool_)
    rows, cols = [], []
    for i in range(h):
        for j in range(w):
            if labels[i, j] != 0 and _outranked(labels, protected, removed, i, j):
                rows.append(i)
                cols.append(j)
    for k in range(len(rows)):
        removed[rows[k], cols[k]] = True
    # Who gives way depends on whether the outranking pixel stays: settle the
    # contact pixels (ranks only increase along a dependency, so this ends).
    changed = True
    while changed:
        changed = False
        for k in range(len(rows)):
            i, j = rows[k], cols[k]
            now = _outranked(labels, protected, removed, i, j)
            if now != removed[i, j]:
                removed[i, j] = now
                changed = True
    return removed


@numba.njit(cache=True, nogil=True)
def vanished(labels, removed, candidates):
    """The ids among sorted ``candidates`` none of whose pixels survive."""
    alive = np.zeros(candidates.size, np.bool_)
    h, w = labels.shape
    for i in range(h):
        for j in range(w):
            v = labels[i, j]
            if v != 0 and not removed[i, j]:
                k = np.searchsorted(candidates, v)
                if k < candidates.size and candidates[k] == v:
                    alive[k] = True
    return candidates[~alive]
