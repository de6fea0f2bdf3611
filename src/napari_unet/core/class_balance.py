"""The class-balance term ``w_c`` of Eq. 2, and the coded terms a weight map is
composed from (``weights.weight_map``, ``weights.WeightMap``)."""

from __future__ import annotations

import math

import numpy as np

from . import _weights_kernels as kernels

# Class-balance weights are rounded to powers of 2 ** (1 / STEPS_PER_OCTAVE) (1.1 %):
# a brush stroke seldom moves them, so a live map is recomposed only near the stroke.
STEPS_PER_OCTAVE = 64

# Codes in ``WeightMap.terms`` (and ``weight_map``'s) where the border term does not apply.
FOREGROUND, UNANNOTATED = np.float32(-1.0), np.float32(-2.0)


def class_weights(
    foreground: np.ndarray, border: np.ndarray, annotated: np.ndarray | None = None
) -> tuple[float, float]:
    """The class-balance term ``w_c`` of Eq. 2 as ``(background, foreground)`` weights.

    Both classes carry the same total weight over the annotated pixels *in the
    final map*, border term included: the class that would weigh less in total
    is raised, the other weighs 1. Balancing the class counts alone would ignore
    that the border term already weighs the background up (by ~7 per membrane
    pixel on ISBI 2012 with w0 10), and push the network further towards
    background: thicker predicted gaps, eroded cells (benchmarks/README.md, ISBI).
    The raised weight is rounded to a step of 1/64 octave (totals equal within
    0.6 %), so that a brush stroke seldom moves it and a live map
    (``weights.WeightMap``) is recomposed only around the stroke.

    Parameters
    ----------
    foreground : bool ndarray, shape ``(Y, X)``
        The target's cell pixels (after ``separation_borders``).
    border : float ndarray, shape ``(Y, X)``
        The border term (``border_weight`` of the gapped labels).
    annotated : bool ndarray, optional
        The pixels that count; all by default.
    """
    unannotated = None if annotated is None else ~annotated
    return classes_of(coded_terms(foreground, border.astype(np.float32), unannotated))


def coded_terms(foreground, border, unannotated=None) -> np.ndarray:
    """What a map is composed from: ``border`` on background pixels, ``FOREGROUND``
    on cell pixels and ``UNANNOTATED`` where ``unannotated`` (a mask) is set."""
    terms = np.where(foreground, FOREGROUND, border)
    if unannotated is not None:
        terms[unannotated] = UNANNOTATED
    return terms


def classes_of(terms: np.ndarray) -> tuple[float, float]:
    sums = np.empty(terms.shape[0])
    kernels.border_sums(terms, sums)
    return balance(counts(terms), sums)


def counts(terms: np.ndarray) -> np.ndarray:
    """Annotated foreground and background pixels of coded terms."""
    return np.array([np.count_nonzero(terms == FOREGROUND), np.count_nonzero(terms >= 0)])


def balance(pixels: np.ndarray, border_rows: np.ndarray) -> tuple[float, float]:
    """From the annotated foreground and background ``pixels`` (counts) and the
    per-row sums of the border term; summed here, in one order, by the full and
    incremental paths."""
    fg, bg = (int(n) for n in pixels)
    if fg == 0 or bg == 0:
        return 1.0, 1.0
    border = float(border_rows.sum())
    if bg + border >= fg:
        return 1.0, stepped((bg + border) / fg)
    return stepped((fg - border) / bg), 1.0


def stepped(weight: float) -> float:
    """``weight`` (>= 1) rounded to the nearest power of ``2 ** (1 / STEPS_PER_OCTAVE)``."""
    return 2.0 ** (round(math.log2(weight) * STEPS_PER_OCTAVE) / STEPS_PER_OCTAVE)
