"""From class probabilities to instance labels.

The network is trained to leave a thin background gap between touching cells
(``weights.separation_borders``). Thresholding the foreground therefore
separates them; afterwards the gap pixels, those with two different cells
within ``gap`` pixels, are given back to the nearest cell where they join it,
so touching cells come out as separate labels that touch again, as they were
painted.
``as_instances`` reads painted labels as training does (a plane holding only
two values is a mask of cells); ``cell_count`` and ``touching_pairs`` summarise
instance labels the same way training sees them: slice by slice, touching in
the 8-neighbourhood that ``separation_borders`` opens gaps in.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels, relabel_sequential


def _split_plane(foreground: np.ndarray, min_size: int, gap: int) -> np.ndarray:
    labels, _ = ndi.label(foreground)  # 4-connected: a diagonal gap still separates
    if min_size > 1:
        small = np.bincount(labels.ravel()) < min_size
        small[0] = False
        labels[small[labels]] = 0
        labels = relabel_sequential(labels)[0]
    if gap < 1 or labels.max() < 2:
        return labels.astype(np.int32)
    size = 2 * gap + 1
    big = np.iinfo(np.int32).max
    highest = ndi.maximum_filter(labels, size=size)
    lowest = ndi.minimum_filter(np.where(labels > 0, labels, big), size=size)
    between = (labels == 0) & (highest > 0) & (lowest < highest)
    _fill_joined(labels, expand_labels(labels, distance=gap), between)
    return labels.astype(np.int32)


def _fill_joined(labels: np.ndarray, grown: np.ndarray, between: np.ndarray) -> None:
    """Give each pixel of ``between`` its nearest cell's id from ``grown``, in
    place, where that joins the cell (through 4-neighbours given the same id): of
    a gap a little wider than ``gap``, ``grown`` gives the middle pixels to a cell
    that the pixels beside them do not reach, and they would be stray pieces."""
    h, w = labels.shape
    flat = labels.reshape(-1)  # a view: labels is contiguous
    todo = np.flatnonzero(between & (grown > 0))
    want = grown.reshape(-1)[todo]
    while todo.size:
        y, x = np.divmod(todo, w)
        joined = np.zeros(todo.size, bool)
        for inside, step in ((y > 0, -w), (y < h - 1, w), (x > 0, -1), (x < w - 1, 1)):
            neighbour = np.where(inside, todo + step, todo)
            joined |= inside & (flat[neighbour] == want)
        if not joined.any():
            return
        flat[todo[joined]] = want[joined]
        todo, want = todo[~joined], want[~joined]


def to_instances(
    probabilities: np.ndarray,
    threshold: float = 0.5,
    min_size: int = 10,
    gap: int = 2,
    offset: int = 0,
) -> np.ndarray:
    """Instance labels from class probabilities.

    Parameters
    ----------
    probabilities : ndarray, float, shape ``(n_classes, Y, X)`` or ``(n_classes, Z, Y, X)``
        Output of ``predict_tiled``; class 1 is the cell interior.
    threshold : float
        Foreground where the cell probability exceeds it.
    min_size : int
        Components smaller than this many pixels are dropped.
    gap : int
        Widest background gap (in pixels) between touching cells that is closed again.
    offset : int
        Added to every id: the planes of a stack labelled one call at a time then
        get ids that follow on (the previous plane's largest).

    Returns
    -------
    ndarray, int32, shape ``(Y, X)`` or ``(Z, Y, X)``
        0 for background, ``offset + 1`` .. for instances; ids are unique across a stack.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim not in (3, 4) or probabilities.shape[0] < 2:
        raise ValueError(
            "expected probabilities of shape (n_classes, Y, X) or "
            f"(n_classes, Z, Y, X); got {probabilities.shape}"
        )
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1); got {threshold}")
    foreground = probabilities[1] > threshold
    out = np.zeros(foreground.shape, np.int32)
    flat = (-1, *foreground.shape[-2:])
    for plane, labelled in zip(foreground.reshape(flat), out.reshape(flat), strict=True):
        labels = _split_plane(plane, min_size, gap)  # ids 1..n
        labelled[:] = np.where(labels > 0, labels + offset, 0)
        offset += int(labels.max(initial=0))
    return out


def as_instances(labels: np.ndarray) -> np.ndarray:
    """Instance labels from painted labels, slice by slice: a plane holding only two
    values is a foreground mask (the larger value, e.g. 255 in ISBI 2012's 0 / 255
    masks, or every cell painted with label 1) and becomes its 4-connected
    components; other planes are returned as they are.

    Parameters
    ----------
    labels : ndarray, integer or bool, shape ``(Y, X)`` or ``(Z, Y, X)``
    """
    labels = np.asarray(labels)
    if labels.ndim == 3:
        # Room for both the ids kept and the component counts (int32), as an integer.
        dtype = np.result_type(labels.dtype, np.int32)
        out = np.empty(labels.shape, dtype if np.issubdtype(dtype, np.integer) else np.uint64)
        for plane, instances in zip(labels, out, strict=True):
            instances[:] = as_instances(plane)
        return out
    return ndi.label(labels == labels.max())[0] if is_mask(labels) else labels


def is_mask(plane: np.ndarray) -> bool:
    """Whether ``plane`` holds exactly two values (see :func:`as_instances`)."""
    if plane.size == 0:
        return False
    low, high = plane.min(), plane.max()
    return bool(low != high and np.all((plane == low) | (plane == high)))


def _planes(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"expected integer labels of shape (Y, X) or (Z, Y, X); got {labels.dtype} "
            f"{labels.shape}"
        )
    return labels[None] if labels.ndim == 2 else labels


def cell_count(labels: np.ndarray) -> int:
    """Number of instances (distinct non-zero ids), summed over the slices of a stack.

    Parameters
    ----------
    labels : ndarray, integer, shape ``(Y, X)`` or ``(Z, Y, X)``
    """
    return sum(np.count_nonzero(np.unique(plane)) for plane in _planes(labels))


def touching_pairs(labels: np.ndarray) -> int:
    """Number of pairs of distinct instances that touch, summed over the slices of a stack.

    Two instances touch when a pixel of one is an 8-neighbour of a pixel of the
    other; each such pair is one separation gap the network has to learn.

    Parameters
    ----------
    labels : ndarray, integer, shape ``(Y, X)`` or ``(Z, Y, X)``
        0 is background.
    """
    total = 0
    for plane in _planes(labels):
        # Right, down, down-right and down-left cover every 8-neighbour pair once.
        shifts = [
            (plane[:, :-1], plane[:, 1:]),
            (plane[:-1, :], plane[1:, :]),
            (plane[:-1, :-1], plane[1:, 1:]),
            (plane[:-1, 1:], plane[1:, :-1]),
        ]
        pairs = []
        for a, b in shifts:
            contact = (a != b) & (a != 0) & (b != 0)
            pairs.append(np.stack([np.minimum(a, b)[contact], np.maximum(a, b)[contact]], 1))
        total += len(np.unique(np.concatenate(pairs), axis=0))
    return total
