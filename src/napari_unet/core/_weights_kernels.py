"""Compiled kernels behind :mod:`.weights` (numba; one pass each, no per-instance loop).

The border term needs, at every background pixel, the distances d1, d2 to the
nearest pixels of the nearest and second-nearest instance. Both come from a
separable two-pass scan, as a Euclidean distance transform does, but keeping
the two nearest *distinct* labels instead of one:

1. down each column, the two nearest distinct labels and their vertical
   distances (a forward and a backward scan, merged);
2. along each row, lower envelopes of the columns' parabolas
   ``x -> (x - j)**2 + dist(j)**2`` (Felzenszwalb and Huttenlocher's 1D
   distance transform) give d1 and d2 in time linear in the row; see
   :func:`border_term` for how the second label is kept distinct.

Keeping two distinct labels per column is enough: whichever label is nearest
overall, one of a column's two labels differs from it and is nearer than any
third label of that column. Distances beyond ``cutoff`` are never needed (the
term is below tolerance there): the column scans stop there, and the row pass
visits no run of columns beyond it.
"""

from __future__ import annotations

import functools
import math
import threading

import numba
import numpy as np

NONE = np.int32(2**30)

# numba's workqueue threading layer, the one it falls back to where neither OpenMP
# nor TBB is found (e.g. pip installs on macOS), aborts the process when two threads
# run parallel kernels at once, as the Weight map dock and a training run can.
_PARALLEL = threading.Lock()


def one_at_a_time(kernel):
    """``kernel`` (a parallel one) called under :data:`_PARALLEL`."""

    @functools.wraps(kernel, updated=())  # not the dispatcher's attributes
    def call(*args):
        with _PARALLEL:
            return kernel(*args)

    return call


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


@one_at_a_time
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


@numba.njit(cache=True, nogil=True, inline="always")
def _push(v, f, base, n, q, fq):
    """Add the parabola ``x -> (x - q)**2 + fq - q**2`` to the lower envelope held in
    ``v[base:base + n]``, ``f[base:base + n]`` (Felzenszwalb and Huttenlocher);
    returns the new length. Breakpoints are compared as integer cross products,
    so ties are decided exactly, never by rounding."""
    while n >= 2:
        t = base + n - 1
        if (fq - f[t]) * (v[t] - v[t - 1]) > (f[t] - f[t - 1]) * (q - v[t]):
            break
        n -= 1
    v[base + n] = q
    f[base + n] = fq
    return n + 1


@numba.njit(cache=True, nogil=True, inline="always")
def _lowest(v, f, base, n, k, x):
    """The envelope's parabola at ``x``, searched from ``k`` on (queries only move right)."""
    while k + 1 < n and f[base + k + 1] - f[base + k] < 2 * x * (v[base + k + 1] - v[base + k]):
        k += 1
    return k


# Rows are handed to threads in chunks so that each allocates its scratch once.
ROWS = 16


@one_at_a_time
@numba.njit(cache=True, nogil=True, parallel=True)
def border_term(labels, lab1, dst1, lab2, dst2, w0, sigma, cutoff, out):
    """``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` at background pixels, into ``out``.

    Per row, from the column results: d1 and its label L are the lower envelope of
    the columns' nearest labels. The nearest label other than L is, in a column,
    its first label unless that is L, then its second; so d2 is the lower of the
    envelope of all second labels (never L where the first is L, and never nearer
    than the first elsewhere) and of the columns whose first label is not L. Those
    come in runs of one label: each run keeps its own envelope, and the runs are
    visited outwards from the pixel until none can be nearer.
    """
    h, w = labels.shape
    scale = 1.0 / (2.0 * sigma * sigma)
    far = np.int64(2**62)
    for chunk in numba.prange((h + ROWS - 1) // ROWS):
        ev, ef = np.empty(w, np.int64), np.empty(w, np.int64)  # first labels
        sv, sf = np.empty(w, np.int64), np.empty(w, np.int64)  # second labels
        rv, rf = np.empty(w, np.int64), np.empty(w, np.int64)  # runs, one after another
        run_label = np.empty(w, labels.dtype)
        first, last = np.empty(w, np.int64), np.empty(w, np.int64)
        base, size, at = np.empty(w, np.int64), np.empty(w, np.int64), np.empty(w, np.int64)
        left_run = np.empty(w, np.int64)  # run of the nearest labelled column <= x
        for i in range(chunk * ROWS, min(h, chunk * ROWS + ROWS)):
            l1, l2 = lab1[i], lab2[i]
            n1, n2, runs = 0, 0, 0
            for q in range(w):
                if l1[q] != 0:
                    g = np.int64(dst1[i, q])
                    fq = g * g + q * q
                    n1 = _push(ev, ef, 0, n1, q, fq)
                    if runs == 0 or l1[q] != run_label[runs - 1]:
                        run_label[runs], first[runs], size[runs], at[runs] = l1[q], q, 0, 0
                        base[runs] = 0 if runs == 0 else base[runs - 1] + size[runs - 1]
                        runs += 1
                    size[runs - 1] = _push(rv, rf, base[runs - 1], size[runs - 1], q, fq)
                    last[runs - 1] = q
                    if l2[q] != 0:
                        g = np.int64(dst2[i, q])
                        n2 = _push(sv, sf, 0, n2, q, g * g + q * q)
                left_run[q] = runs - 1
            k1, k2 = 0, 0
            for x in range(w):
                if n1 == 0 or labels[i, x] != 0:
                    out[i, x] = 0.0
                    continue
                k1 = _lowest(ev, ef, 0, n1, k1, x)
                d1 = ef[k1] + x * (x - 2 * ev[k1])
                if 4.0 * d1 > cutoff * cutoff:  # d2 >= d1
                    out[i, x] = 0.0
                    continue
                r1 = math.sqrt(d1)
                nearest = l1[ev[k1]]
                best = far
                if n2 > 0:
                    k2 = _lowest(sv, sf, 0, n2, k2, x)
                    best = sf[k2] + x * (x - 2 * sv[k2])
                # Runs at and left of x (the first may reach past x), then right of x.
                r = left_run[x]
                while r >= 0:
                    k = max(x - last[r], 0)
                    if k * k >= best or r1 + k > cutoff:
                        break
                    if run_label[r] != nearest:
                        at[r] = _lowest(rv, rf, base[r], size[r], at[r], x)
                        j = base[r] + at[r]
                        best = min(best, rf[j] + x * (x - 2 * rv[j]))
                    r -= 1
                r = left_run[x] + 1
                while r < runs:
                    k = first[r] - x
                    if k * k >= best or r1 + k > cutoff:
                        break
                    if run_label[r] != nearest:
                        at[r] = _lowest(rv, rf, base[r], size[r], at[r], x)
                        j = base[r] + at[r]
                        best = min(best, rf[j] + x * (x - 2 * rv[j]))
                    r += 1
                s = r1 + math.sqrt(best)
                out[i, x] = w0 * math.exp(-s * s * scale) if best < far and s <= cutoff else 0.0


@one_at_a_time
@numba.njit(cache=True, nogil=True, parallel=True)
def compose(terms, background, foreground, out):
    """Eq. 2 from coded terms (see ``WeightMap.terms``): the border term plus
    ``background`` where it is >= 0, ``foreground`` at -1 and 0 at -2, into ``out``."""
    h, w = terms.shape
    for i in numba.prange(h):
        for j in range(w):
            t = terms[i, j]
            out[i, j] = t + background if t >= 0 else (foreground if t == -1 else 0)


@one_at_a_time
@numba.njit(cache=True, nogil=True, parallel=True)
def border_sums(terms, out):
    """Per row of coded terms, the float64 sum of the border term (values >= 0), into
    ``out``; each row is summed in order on its own, so a row's sum is the same
    whichever other rows are summed with it."""
    h, w = terms.shape
    for i in numba.prange(h):
        total = 0.0
        for j in range(w):
            if terms[i, j] >= 0:
                total += terms[i, j]
        out[i] = total
