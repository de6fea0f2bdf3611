"""Segmentation scores: pixel error, adapted Rand error, VI and instance matching.

The ISBI 2012 scoring of the project's figures (``../shared/data/README.md``)
is :func:`score_segmentation` for one slice and :func:`score_stack` for a test
set. Label images use 0 for background (or membrane); any other integer is an
instance id, and ids need not be consecutive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage import metrics as skmetrics

from .instances import is_mask
from .weights import separation_borders

# The sweep of the project's figures: report 0.5 and the best of these.
THRESHOLD_SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SCORE_KEYS = ("pixel_error", "rand_error", "vi")


def _check_pair(a: np.ndarray, b: np.ndarray, names: str, ndims: tuple[int, ...] = (2, 3)):
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape; got {a.shape} and {b.shape}")
    if a.ndim not in ndims:
        wanted = " or ".join(f"{n}D" for n in ndims)
        raise ValueError(f"{names} must be {wanted}; got shape {a.shape}")


def _label_pair(true_labels, pred_labels) -> tuple[np.ndarray, np.ndarray]:
    """Both label images checked as labels and against each other."""
    true = _as_labels(true_labels, "true_labels")
    pred = _as_labels(pred_labels, "pred_labels")
    _check_pair(true, pred, "true_labels and pred_labels")
    return true, pred


def _as_labels(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype != bool and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be an integer label image; got dtype {labels.dtype}")
    return labels


def _compact(labels: np.ndarray) -> np.ndarray:
    # skimage sizes its contingency table by the largest id, so an id of 2**40
    # would ask for terabytes; every score here ignores which id a segment has.
    labels = labels.astype(np.intp, copy=False)
    if labels.size == 0 or (labels.min() >= 0 and labels.max() <= labels.size):
        return labels
    _, inverse = np.unique(labels.ravel(), return_inverse=True)
    compact = inverse.reshape(labels.shape) + 1
    compact[labels == 0] = 0  # 0 keeps its meaning (ignored by the Rand error)
    return compact


def pixel_error(
    pred_foreground: np.ndarray, true_foreground: np.ndarray, mask: np.ndarray | None = None
) -> float:
    """Fraction of pixels whose class (interior vs membrane/background) differs.

    Parameters
    ----------
    pred_foreground, true_foreground : ndarray, bool, shape ``(Y, X)`` or ``(Z, Y, X)``
        Predicted and true cell interior; any nonzero value counts as interior.
    mask : ndarray, bool, same shape, optional
        Pixels to count; all of them when None.

    Returns
    -------
    float
        In [0, 1]; 0 for a perfect prediction.
    """
    pred = np.asarray(pred_foreground).astype(bool)
    true = np.asarray(true_foreground).astype(bool)
    _check_pair(pred, true, "pred_foreground and true_foreground")
    wrong = pred != true
    if mask is None:
        return float(wrong.mean())
    mask = np.asarray(mask).astype(bool)
    _check_pair(mask, true, "mask and true_foreground")
    if not mask.any():
        raise ValueError("mask selects no pixels")
    return float(np.count_nonzero(wrong & mask) / np.count_nonzero(mask))


def rand_error(true_labels: np.ndarray, pred_labels: np.ndarray) -> float:
    """Adapted Rand error (SNEMI3D), ``skimage.metrics.adapted_rand_error(gt, pred)[0]``.

    Pixels labelled 0 in the ground truth are ignored, as skimage does, so a
    prediction is not penalised for how it labels the membrane; label 0 in the
    prediction is an ordinary segment.

    Parameters
    ----------
    true_labels, pred_labels : ndarray, int or bool, shape ``(Y, X)`` or ``(Z, Y, X)``
        Ground-truth and predicted segments; a 3D array is scored as one volume.

    Returns
    -------
    float
        1 - F-score of pixel pairs in the same segment, in [0, 1]; 0 when the
        segmentations agree. NaN when the ground truth labels fewer than two
        pixels (no pair to compare).
    """
    true, pred = _label_pair(true_labels, pred_labels)
    with np.errstate(divide="ignore", invalid="ignore"):
        error = skmetrics.adapted_rand_error(_compact(true), _compact(pred))[0]
    return float(error)


def variation_of_information(true_labels: np.ndarray, pred_labels: np.ndarray) -> float:
    """Variation of information, the sum of ``skimage.metrics.variation_of_information``.

    The two terms are H(pred | true), the over-segmentation (false splits),
    and H(true | pred), the under-segmentation (false merges), in bits. As in
    skimage's default no label is ignored: 0 counts as one more segment in
    both images.

    Parameters
    ----------
    true_labels, pred_labels : ndarray, int or bool, shape ``(Y, X)`` or ``(Z, Y, X)``
        Ground-truth and predicted segments; a 3D array is scored as one volume.

    Returns
    -------
    float
        Non-negative; 0 when the segmentations agree up to renaming.
    """
    true, pred = _label_pair(true_labels, pred_labels)
    terms = skmetrics.variation_of_information(_compact(true), _compact(pred))
    return float(np.sum(terms))


@dataclass(frozen=True)
class Matching:
    """Instances matched one-to-one by IoU; see :func:`match_instances`."""

    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    mean_matched_iou: float


def _pair_ious(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """IoU of every overlapping (true, pred) pair of instances, background excluded.

    Returns the pairs' indices into the sorted unique true and pred ids (which
    serve as instance numbers whatever the ids are), their IoUs, and the
    numbers of true and predicted instances.
    """
    true_ids, true_index = np.unique(true.ravel(), return_inverse=True)
    pred_ids, pred_index = np.unique(pred.ravel(), return_inverse=True)
    table = coo_matrix(
        (np.ones(true_index.size, np.int64), (true_index, pred_index)),
        shape=(true_ids.size, pred_ids.size),
    )
    # Summing the duplicate (true, pred) entries gives the pixel count of every
    # overlap at once, without a Python loop over instances.
    table.sum_duplicates()
    overlap = table.data.astype(np.float64)
    true_area = np.bincount(true_index, minlength=true_ids.size)
    pred_area = np.bincount(pred_index, minlength=pred_ids.size)
    union = true_area[table.row] + pred_area[table.col] - overlap
    keep = (true_ids[table.row] != 0) & (pred_ids[table.col] != 0)
    return (
        table.row[keep],
        table.col[keep],
        overlap[keep] / union[keep],
        int(np.count_nonzero(true_ids)),
        int(np.count_nonzero(pred_ids)),
    )


def _assign(rows: np.ndarray, cols: np.ndarray, ious: np.ndarray) -> np.ndarray:
    """IoUs of the one-to-one matching with the most pairs, then the highest total IoU."""
    true_used, r = np.unique(rows, return_inverse=True)
    _, c = np.unique(cols, return_inverse=True)
    # Instances that share no candidate do not compete: the matching is solved in
    # each connected group of candidates, with a dense matrix as small as the group
    # (one matrix of every instance with a candidate grows with their square).
    n = true_used.size + c.max() + 1
    graph = coo_matrix((np.ones(r.size), (r, true_used.size + c)), shape=(n, n))
    group = connected_components(graph, directed=False)[1][r]
    alone = np.bincount(group)[group] == 1
    chosen = [np.flatnonzero(alone)]
    contested = np.flatnonzero(~alone)
    order = contested[np.argsort(group[contested], kind="stable")]
    groups = np.split(order, np.flatnonzero(np.diff(group[order])) + 1) if order.size else []
    for pairs in groups:
        _, gr = np.unique(r[pairs], return_inverse=True)
        _, gc = np.unique(c[pairs], return_inverse=True)
        # Each pair is worth more than any sum of IoUs can make up for, so the
        # solver first maximises the number of matches, then their total IoU.
        weight = np.zeros((gr.max() + 1, gc.max() + 1))
        weight[gr, gc] = min(weight.shape) + 1.0 + ious[pairs]
        pair = np.full(weight.shape, -1)
        pair[gr, gc] = pairs
        picked = pair[linear_sum_assignment(weight, maximize=True)]
        # A rectangular matrix also gets pairs of weight 0, which are no candidates.
        chosen.append(picked[picked >= 0])
    return ious[np.sort(np.concatenate(chosen))]


def match_instances(
    true_labels: np.ndarray, pred_labels: np.ndarray, iou_threshold: float = 0.5
) -> Matching:
    """Match predicted to true instances one-to-one by intersection over union.

    A pair can match when its IoU exceeds ``iou_threshold`` (strictly). For a
    threshold of 0.5 or more no solver is needed: IoU > 0.5 means the overlap
    is more than half the union, hence more than half of each of the two
    instances, and an instance cannot have more than half of its pixels in two
    disjoint instances; so each instance has at most one candidate. Below 0.5
    the candidates can conflict and ``linear_sum_assignment`` picks the
    matching with the most pairs, then the highest total IoU.

    Empty images: when neither image has an instance, precision, recall and F1
    are 1 (the prediction is perfect). Otherwise a ratio with nothing to count
    (precision without predictions, recall without true instances) is 0, so a
    prediction on an empty ground truth, or none on a full one, scores 0.

    Parameters
    ----------
    true_labels, pred_labels : ndarray, int, shape ``(Y, X)`` or ``(Z, Y, X)``
        0 is background; other ids, in any order and of any size, are
        instances. In 3D an id is one instance across the stack.
    iou_threshold : float
        In [0, 1); 0 lets any overlap match.

    Returns
    -------
    Matching
        Counts, precision = TP / (TP + FP), recall = TP / (TP + FN),
        F1 = 2 TP / (2 TP + FP + FN), and the mean IoU of the matched pairs
        (NaN when nothing matched).
    """
    true, pred = _label_pair(true_labels, pred_labels)
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1); got {iou_threshold}")
    rows, cols, ious, n_true, n_pred = _pair_ious(true, pred)
    candidate = ious > iou_threshold
    rows, cols, ious = rows[candidate], cols[candidate], ious[candidate]
    matched = ious if iou_threshold >= 0.5 or ious.size == 0 else _assign(rows, cols, ious)
    tp = int(matched.size)
    fp, fn = n_pred - tp, n_true - tp
    if n_true == 0 and n_pred == 0:
        precision = recall = f1 = 1.0
    else:
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn)
    mean_iou = float(matched.mean()) if tp else float("nan")
    return Matching(tp, fp, fn, precision, recall, f1, mean_iou)


def score_segmentation(
    foreground_probability: np.ndarray, true_interior: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """The ISBI 2012 scores of one slice, as used for the project's figures.

    The predicted interior is where the probability exceeds ``threshold``; its
    4-connected components are the predicted cells, and the 4-connected
    components of the true interior are the true cells. The membrane (0 in the
    true labels) is ignored by the Rand error but is one more segment for VI,
    exactly as with skimage's defaults.

    Parameters
    ----------
    foreground_probability : ndarray, float, shape ``(Y, X)``
        Predicted cell-interior probability (class 1 of ``predict_tiled``).
    true_interior : ndarray, bool, shape ``(Y, X)``
        True cell interior, the rest is membrane; any nonzero value counts as
        interior, so the 0/255 masks of the ISBI data work as they are.
    threshold : float
        In [0, 1).

    Returns
    -------
    dict
        ``{"pixel_error": float, "rand_error": float, "vi": float}``.
    """
    probability = np.asarray(foreground_probability)
    truth = np.asarray(true_interior).astype(bool)
    _check_pair(probability, truth, "foreground_probability and true_interior", ndims=(2,))
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1); got {threshold}")
    interior = probability > threshold
    pred_labels, _ = ndi.label(interior)  # default structure: 4-connected in 2D
    true_labels, _ = ndi.label(truth)
    return {
        "pixel_error": pixel_error(interior, truth),
        "rand_error": rand_error(true_labels, pred_labels),
        "vi": variation_of_information(true_labels, pred_labels),
    }


def true_interior(labels: np.ndarray) -> np.ndarray:
    """The true cell interior that :func:`score_segmentation` compares with, from
    labels as a user gives them, slice by slice: a two-valued mask (ISBI 2012's
    0 / 255) as it is; instance labels with a one-pixel gap between touching cells
    (the training target, ``weights.separation_borders``), so that touching cells
    stay apart as 4-connected components.

    Parameters
    ----------
    labels : ndarray, integer or bool, shape ``(Y, X)`` or ``(Z, Y, X)``

    Returns
    -------
    ndarray, bool, same shape
    """
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"the ground truth must be integer labels or a mask; got {labels.dtype}")
    if labels.dtype != bool and labels.min(initial=0) < 0:
        raise ValueError(
            "the ground truth must be annotated everywhere: negative labels (pixels "
            "not annotated) cannot be scored"
        )
    if labels.ndim == 3:
        return np.stack([true_interior(plane) for plane in labels])
    if is_mask(labels):
        return labels == labels.max()
    return separation_borders(labels) > 0


def score_stack(
    probabilities: np.ndarray | Sequence[np.ndarray],
    truths: np.ndarray | Sequence[np.ndarray],
    thresholds: Iterable[float] = (0.5,),
) -> dict[float, dict[str, float]]:
    """Mean scores of :func:`score_segmentation` over slices, for each threshold.

    Parameters
    ----------
    probabilities : ndarray, float, shape ``(Z, Y, X)``, or sequence of ``(Y, X)`` arrays
        Predicted cell-interior probability of each slice.
    truths : ndarray, bool, shape ``(Z, Y, X)``, or sequence of ``(Y, X)`` arrays
        True interior of each slice, same shapes.
    thresholds : iterable of float
        ``THRESHOLD_SWEEP`` for the best of 0.1..0.9 (see :func:`best_threshold`).

    Returns
    -------
    dict
        ``{threshold: {"pixel_error": mean, "rand_error": mean, "vi": mean}}``
        in the order of ``thresholds``. A slice whose score is undefined (the Rand
        error of a truth without a cell) is left out of that score's mean, which
        is NaN only when no slice has one.
    """
    if len(probabilities) != len(truths):
        raise ValueError(
            f"need one truth per probability slice; got {len(probabilities)} and {len(truths)}"
        )
    if len(probabilities) == 0:
        raise ValueError("no slices to score")
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("no thresholds given")
    per_slice = {t: [] for t in thresholds}
    for probability, truth in zip(probabilities, truths, strict=True):
        for t in thresholds:
            per_slice[t].append(score_segmentation(probability, truth, t))
    return {
        t: {key: _defined_mean([s[key] for s in scores]) for key in SCORE_KEYS}
        for t, scores in per_slice.items()
    }


def _defined_mean(values: list[float]) -> float:
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def best_threshold(scores: dict[float, dict[str, float]], metric: str = "rand_error") -> float:
    """The threshold of ``score_stack``'s result with the lowest mean ``metric``.

    Ties go to the threshold listed first; NaN scores never win.
    """
    if metric not in SCORE_KEYS:
        raise ValueError(f"metric must be one of {SCORE_KEYS}; got {metric!r}")
    if not scores:
        raise ValueError("no scores to choose from")
    values = np.array([s[metric] for s in scores.values()])
    if np.all(np.isnan(values)):
        raise ValueError(f"every {metric} is NaN")
    return list(scores)[int(np.nanargmin(values))]
