"""Compiled kernels behind :func:`.weights.separation_borders` and the gaps of
:class:`.weights.WeightMap` (numba): which pixels of touching instances give way.

A pixel gives way where it touches (8-neighbour) a kept pixel of an instance that
outranks its own; rank is (protected, id), protected ids being those that would
otherwise vanish. A pixel thus depends only on neighbours of higher rank, so the
state is unique.
"""

from __future__ import annotations

import numba
import numpy as np

from ._weights_kernels import ROWS, one_at_a_time


@numba.njit(cache=True, nogil=True)
def _in_sorted(values, v):
    k = np.searchsorted(values, v)
    return k < values.size and values[k] == v


@numba.njit(cache=True, nogil=True)
def _outranked(labels, protected, gapped, i, j):
    """Whether pixel (i, j) touches a kept pixel (non-zero in ``gapped``) of an
    instance that outranks its own."""
    h, w = labels.shape
    v = labels[i, j]
    pv = protected.size > 0 and _in_sorted(protected, v)
    for a in range(max(i - 1, 0), min(i + 2, h)):
        for b in range(max(j - 1, 0), min(j + 2, w)):
            u = labels[a, b]
            if u == 0 or u == v or gapped[a, b] == 0:
                continue
            pu = protected.size > 0 and _in_sorted(protected, u)
            if pu > pv or (pu == pv and u > v):
                return True
    return False


@numba.njit(cache=True, nogil=True, inline="always")
def touching_row(labels, i, out):
    """Into ``out``: which pixels of row ``i`` belong to an instance and touch
    (8-neighbour) another. Few do, and only they can give way or make a touching
    pair: this pass, which vectorises, spares the others the neighbour-by-neighbour
    tests (a 4096x4096 image: 30 ms here against about 750 ms for the rank test at
    every pixel)."""
    h, w = labels.shape
    if w == 0:
        return
    up, down = max(i - 1, 0), min(i + 1, h - 1)
    for j in range(1, w - 1):
        v, c = labels[i, j], False
        for a in (up, i, down):
            for b in (j - 1, j, j + 1):
                u = labels[a, b]
                c |= (u != 0) & (u != v)
        out[j] = c & (v != 0)
    for j in (0, w - 1):  # the edges, where a column of neighbours is missing
        v, c = labels[i, j], False
        for a in (up, i, down):
            for b in range(max(j - 1, 0), min(j + 2, w)):
                u = labels[a, b]
                c |= (u != 0) & (u != v)
        out[j] = c & (v != 0)


@numba.njit(cache=True, nogil=True)
def _beside_kept(labels, gapped, i, j):
    """Whether a neighbour of pixel (i, j) (8-neighbour) is a kept pixel of its id."""
    h, w = labels.shape
    v = labels[i, j]
    for a in range(max(i - 1, 0), min(i + 2, h)):
        for b in range(max(j - 1, 0), min(j + 2, w)):
            if labels[a, b] == v and gapped[a, b] != 0:
                return True
    return False


def gaps(labels, protected):
    """``labels`` with 0 on every pixel that touches (8-neighbour) a kept pixel of an
    instance that outranks its own; the ids of those pixels; and of them, those with
    a kept pixel beside one (the others may have vanished: see :func:`holding`).

    Rank is (protected, id): of two touching instances the lower-ranked one gives
    up its contact pixels, so the gap is one pixel wide; where three meet, a pixel
    whose higher neighbour itself gave way stays. ``protected`` (sorted) holds ids
    that would otherwise vanish.
    """
    gapped, rows, cols = _outranked_pixels(labels, protected)
    ids, kept = _settle(labels, protected, gapped, rows, cols)
    return gapped, ids, kept


@one_at_a_time
@numba.njit(cache=True, nogil=True, parallel=True)
def _outranked_pixels(labels, protected):
    """A copy of ``labels`` with 0 where a pixel touches a pixel of an instance that
    outranks its own (as if every pixel were kept), and those pixels' rows and
    columns, row by row in parallel."""
    h, w = labels.shape
    gapped = np.empty_like(labels)
    counts = np.zeros(h, np.int64)
    chunks = (h + ROWS - 1) // ROWS
    for chunk in numba.prange(chunks):
        contact = np.zeros(w, np.bool_)
        for i in range(chunk * ROWS, min(h, chunk * ROWS + ROWS)):
            for j in range(w):  # not gapped[i] = labels[i]: its checks take 2 s to compile
                gapped[i, j] = labels[i, j]
            touching_row(labels, i, contact)
            for j in range(w):
                if contact[j] and _outranked(labels, protected, labels, i, j):
                    gapped[i, j] = 0
                    counts[i] += 1
    starts = np.zeros(h + 1, np.int64)
    starts[1:] = np.cumsum(counts)
    rows = np.empty(starts[h], np.int64)
    cols = np.empty(starts[h], np.int64)
    for i in numba.prange(h):
        k = starts[i]
        if k == starts[i + 1]:
            continue
        for j in range(w):
            if gapped[i, j] == 0 and labels[i, j] != 0:
                rows[k], cols[k] = i, j
                k += 1
    return gapped, rows, cols


@numba.njit(cache=True, nogil=True)
def _settle(labels, protected, gapped, rows, cols):
    """Settle the pixels at ``rows``, ``cols`` in ``gapped``: who gives way depends on
    whether the outranking pixel stays (ranks only increase along a dependency, so
    this ends). Returns the ids of those that gave way, and of them those with a kept
    pixel beside one."""
    changed = True
    while changed:
        changed = False
        for k in range(len(rows)):
            i, j = rows[k], cols[k]
            kept = not _outranked(labels, protected, gapped, i, j)
            if kept != (gapped[i, j] != 0):
                # Two stores: numba types "id if kept else 0" as a float (64-bit ids lost).
                if kept:
                    gapped[i, j] = labels[i, j]
                else:
                    gapped[i, j] = 0
                changed = True
    ids = np.empty(len(rows), labels.dtype)
    kept = np.empty(len(rows), labels.dtype)
    n, m = 0, 0
    for k in range(len(rows)):
        i, j = rows[k], cols[k]
        if gapped[i, j] == 0:
            ids[n] = labels[i, j]
            n += 1
            if _beside_kept(labels, gapped, i, j):
                kept[m] = labels[i, j]
                m += 1
    return ids[:n], kept[:m]


@numba.njit(cache=True, nogil=True)
def regap(labels, protected, gapped, y0, y1, x0, x1):
    """Bring ``gapped`` (as :func:`gaps` gave it) up to date, in place, with
    ``labels`` changed inside rows ``y0:y1``, columns ``x0:x1`` grown by one pixel
    (the window given), and return the bounding box ``(y0, y1, x0, x1)`` of the
    pixels that changed (empty: ``y0 >= y1``), or ``y0 = -1`` where it gave up.

    A pixel whose state changes puts its neighbours back on the list, as those of
    lower rank depend on it, so a change runs along a chain of touching instances
    as far as it reaches. The fixed point is unique, so any order reaches it; but
    on long chains of falling ids (1-pixel diagonal cells) pixels can flip a number
    of times exponential in the chain's length, so past a budget of visits this
    gives up, leaving ``gapped`` to be computed again whole.
    """
    h, w = labels.shape
    todo = [i * w + j for i in range(y0, y1) for j in range(x0, x1)]
    budget = 64 * len(todo) + 4096
    by0, by1, bx0, bx1 = h, 0, w, 0
    while len(todo):
        budget -= 1
        if budget < 0:
            return -1, 0, 0, 0
        k = todo.pop()
        i, j = k // w, k % w
        v = labels[i, j]
        if v != 0 and not _outranked(labels, protected, gapped, i, j):
            if gapped[i, j] == v:
                continue
            gapped[i, j] = v
        elif gapped[i, j] == 0:
            continue
        else:
            gapped[i, j] = 0
        by0, by1, bx0, bx1 = min(by0, i), max(by1, i + 1), min(bx0, j), max(bx1, j + 1)
        for a in range(max(i - 1, 0), min(i + 2, h)):
            for b in range(max(j - 1, 0), min(j + 2, w)):
                if labels[a, b] != 0 and labels[a, b] != v:
                    todo.append(a * w + b)
    return by0, by1, bx0, bx1


@numba.njit(cache=True, nogil=True)
def holding(labels, gapped, candidates):
    """For each sorted, non-zero candidate: 0 if ``labels`` holds none of it, 1 if it
    does but ``gapped`` keeps none (it vanished), 2 if ``gapped`` keeps one."""
    seen = np.zeros(candidates.size, np.int8)
    if candidates.size == 0:
        return seen
    low, high = candidates[0], candidates[-1]
    few = candidates.size <= 16  # a live map's check, not a whole map's
    h, w = labels.shape
    for i in range(h):
        if few:
            # A branchless pass, in vector code: most rows hold no candidate then.
            hit = False
            for j in range(w):
                hit |= (labels[i, j] >= low) & (labels[i, j] <= high)
            if not hit:
                continue
        for j in range(w):
            v = labels[i, j]
            if v != 0:
                k = np.searchsorted(candidates, v)
                if k < candidates.size and candidates[k] == v:
                    seen[k] = max(seen[k], 2 if gapped[i, j] != 0 else 1)
    return seen


@numba.njit(cache=True, nogil=True)
def bounding_boxes(labels):
    """The non-zero ids of ``labels``, in no order, and the bounding box ``(y0, y1,
    x0, x1)`` of each, in one pass (a dictionary look-up per run of equal pixels).
    The caller sorts them: numpy's sort, not a compiled one (a second to compile)."""
    h, w = labels.shape
    index = {labels.dtype.type(0): 0}
    del index[labels.dtype.type(0)]  # an empty dictionary of the labels' type
    boxes = []
    for i in range(h):
        j = 0
        while j < w:
            v = labels[i, j]
            start = j
            while j < w and labels[i, j] == v:
                j += 1
            if v == 0:
                continue
            k = index.get(v, -1)
            if k < 0:
                index[v] = len(boxes)
                boxes.append(np.array([i, i + 1, start, j]))
            else:
                box = boxes[k]
                box[1] = i + 1
                box[2] = min(box[2], start)
                box[3] = max(box[3], j)
    ids = np.empty(len(boxes), labels.dtype)
    out = np.empty((len(boxes), 4), np.int64)
    for v, k in index.items():
        ids[k] = v
        for c in range(4):  # not out[k] = boxes[k]: its checks take 2 s to compile
            out[k, c] = boxes[k][c]
    return ids, out


@numba.njit(cache=True, nogil=True)
def holding_in(labels, gapped, value, y0, y1, x0, x1):
    """:func:`holding` of one id, looked for only in rows ``y0:y1``, columns ``x0:x1``."""
    seen = 0
    for i in range(y0, y1):
        for j in range(x0, x1):
            if labels[i, j] == value:
                if gapped[i, j] != 0:
                    return 2
                seen = 1
    return seen
