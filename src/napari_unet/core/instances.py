"""From class probabilities to instance labels.

The network is trained to leave a thin background gap between touching cells
(``weights.separation_borders``). Thresholding the foreground therefore
separates them; afterwards the gap pixels, those with two different cells
within ``gap`` pixels, are given back to the nearest cell where they join it,
so touching cells come out as separate labels that touch again, as they were
painted. ``instance_tiles`` gives the same labels for a plane too large to
label whole in memory.

``annotated_labels`` reads painted labels as training does (negative labels
mark unannotated pixels, and with ``as_instances``, a plane holding only two
values is a mask of cells); ``cell_count`` and ``touching_pairs`` summarise
instance labels the same way training sees them: slice by slice, touching in
the 8-neighbourhood that ``separation_borders`` opens gaps in.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import expand_labels

from ._count_kernels import contact_pairs, run_ids
from .label_checks import in_kernel_type
from .windows import grow_window, window_within

_ROWS = 256  # rows at a time in passes over whole planes or bands


def _components(foreground: np.ndarray, min_size: int) -> np.ndarray:
    """The 4-connected components of ``foreground`` (a diagonal gap still
    separates), int32 ids 1..n, those under ``min_size`` pixels dropped; no
    full-size array but the result."""
    labels, n = ndi.label(foreground, output=np.int32)
    if min_size > 1 and n:
        keep = _sizes(labels, n) >= min_size
        keep[0] = False
        ids = np.zeros(n + 1, np.int32)
        ids[keep] = np.arange(1, np.count_nonzero(keep) + 1, dtype=np.int32)
        _renumber(labels, ids)
    return labels


def _sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Pixels of each id 0..n; in bands of rows, as bincount counts a 64-bit copy."""
    sizes = np.zeros(n + 1, np.int64)
    for start in range(0, labels.shape[0], _ROWS):
        sizes += np.bincount(labels[start : start + _ROWS].ravel(), minlength=n + 1)
    return sizes


def _renumber(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``labels`` given ``ids[labels]``, in place, a band of rows at a time."""
    for start in range(0, labels.shape[0], _ROWS):
        labels[start : start + _ROWS] = ids[labels[start : start + _ROWS]]
    return labels


def _close_gaps(labels: np.ndarray, gap: int) -> np.ndarray:
    """``labels`` (a copy) with the background pixels that have two cells within
    ``gap`` pixels given to the nearest, where that joins it. Each pixel depends
    only on the labels within ``3 * gap`` pixels of it (``_fill_joined`` follows
    a join at most ``2 * gap`` steps), so a tile with that margin is exact."""
    closed = labels.copy()
    if gap < 1 or labels.max(initial=0) < 2:
        return closed
    size = 2 * gap + 1
    big = np.iinfo(np.int32).max
    highest = ndi.maximum_filter(labels, size=size)
    lowest = ndi.minimum_filter(np.where(labels > 0, labels, big), size=size)
    between = (labels == 0) & (highest > 0) & (lowest < highest)
    _fill_joined(closed, expand_labels(labels, distance=gap), between, 2 * gap)
    return closed


def _fill_joined(labels: np.ndarray, grown: np.ndarray, between: np.ndarray, steps: int) -> None:
    """Give each pixel of ``between`` its nearest cell's id from ``grown``, in
    place, where that joins the cell through at most ``steps`` 4-neighbours given
    the same id: of a gap a little wider than ``gap``, ``grown`` gives the middle
    pixels to a cell that the pixels beside them do not reach, and they would be
    stray pieces."""
    h, w = labels.shape
    flat = labels.reshape(-1)  # a view: labels is contiguous
    todo = np.flatnonzero(between & (grown > 0))
    want = grown.reshape(-1)[todo]
    for _ in range(steps):
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
    _check_settings(threshold, min_size, gap)
    foreground = probabilities[1] > threshold
    out = np.zeros(foreground.shape, np.int32)
    flat = (-1, *foreground.shape[-2:])
    for plane, labelled in zip(foreground.reshape(flat), out.reshape(flat), strict=True):
        labels = _close_gaps(_components(plane, min_size), gap)  # ids 1..n
        labelled[:] = np.where(labels > 0, labels + offset, 0)
        offset += int(labels.max(initial=0))
    return out


def instance_tiles(
    probability, threshold: float = 0.5, min_size: int = 10, gap: int = 2, tile: int = 1024
):
    """:func:`to_instances` of one large plane, in tiles, for images too large to
    label whole in memory: yields ``((rows, columns) window, int32 labels)`` that
    together cover the plane, equal to ``to_instances`` of it (ids 1..n).

    The plane is read twice in bands of ``tile`` rows (at least ``3 * gap + 1``):
    the first pass joins each band's components to those of the band above and
    numbers them as the whole plane's would be; the second closes the gaps tile by
    tile. Memory: about 20 bytes a pixel of one band, whatever the plane's height,
    and about 50 bytes for each part of a component in a band, against about 40
    bytes a pixel of the whole plane for ``to_instances``.

    Parameters
    ----------
    probability : array-like, float, shape ``(Y, X)``
        The cell probability (class 1 of ``predict_tiled``), read a band of rows at
        a time: e.g. a dask view of a zarr array.
    threshold, min_size, gap
        As for :func:`to_instances`.
    tile : int
        Pixels per side of the tiles the gaps are closed in, and rows per band.
    """
    _check_settings(threshold, min_size, gap)
    if tile < 1:
        raise ValueError(f"tile must be 1 or more; got {tile}")
    h, w = probability.shape
    margin = 3 * gap + 1  # what _close_gaps needs around a tile to be exact
    rows = max(tile, margin)  # so that a tile's margin reaches one band up or down
    starts = range(0, h, rows)

    def components(start: int) -> tuple[np.ndarray, int]:
        foreground = np.asarray(probability[start : start + rows]) > threshold
        return ndi.label(foreground, output=np.int32)

    ids = _band_ids(components, starts, min_size)

    def numbered(k: int) -> np.ndarray | None:
        return _renumber(components(starts[k])[0], ids[k]) if k < len(starts) else None

    above, band = None, numbered(0)
    for k, start in enumerate(starts):
        below = numbered(k + 1)
        stop = start + band.shape[0]
        for x0 in range(0, w, tile):
            inner = (slice(start, stop), slice(x0, min(x0 + tile, w)))
            crop = grow_window(inner, margin, (h, w))
            parts = [band[:, crop[1]]]
            if above is not None:
                parts.insert(0, above[:, crop[1]])
            if below is not None:
                parts.append(below[: crop[0].stop - stop, crop[1]])
            closed = _close_gaps(np.concatenate(parts), gap)
            yield inner, closed[window_within(inner, crop)]
        above, band = band[-margin:].copy(), below  # a copy frees the band


def _band_ids(components, starts, min_size: int) -> list[np.ndarray]:
    """For each band, the whole plane's id (0: dropped) of each of its components
    (index 0: background), from ``components(start)``: labels with ids 1..n in
    raster order, and n."""
    sizes, offsets, upper, lower = [], [0], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    bottom = None
    for start in starts:
        labels, n = components(start)
        sizes.append(_sizes(labels, n)[1:])
        if bottom is not None:  # 4-connected across the seam: the same column
            joined = (bottom > 0) & (labels[0] > 0)
            # One edge per pair of parts, not per pixel of the seam they share.
            pairs = np.unique(np.stack([bottom[joined], labels[0][joined]]), axis=1)
            upper.append(pairs[0].astype(np.int64) + offsets[-2] - 1)
            lower.append(pairs[1].astype(np.int64) + offsets[-1] - 1)
        bottom = labels[-1].copy()
        offsets.append(offsets[-1] + n)
    total = offsets[-1]
    if total == 0:
        return [np.zeros(1, np.int32) for _ in starts]
    upper, lower = np.concatenate(upper), np.concatenate(lower)
    graph = coo_matrix((np.ones(upper.size, bool), (upper, lower)), shape=(total, total))
    _, component = connected_components(graph, directed=False)
    # A component's first pixel in raster order is that of its first band's part
    # labelled first, so ordering by the lowest part numbers them as ndi.label does.
    _, first = np.unique(component, return_index=True)
    size = np.bincount(component, weights=np.concatenate(sizes))
    order = np.argsort(first)
    kept = order[size[order] >= min_size]
    final = np.zeros(first.size, np.int32)
    final[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    plane_ids = final[component]
    return [
        np.concatenate([[0], plane_ids[a:b]]).astype(np.int32)
        for a, b in itertools.pairwise(offsets)
    ]


def _check_settings(threshold: float, min_size: int, gap: int) -> None:
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1); got {threshold}")
    if min_size < 0 or gap < 0:
        raise ValueError(f"min_size and gap must be 0 or more; got {min_size} and {gap}")


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
    labels = in_kernel_type(labels)
    return labels[None] if labels.ndim == 2 else labels


def cell_count(labels: np.ndarray) -> int:
    """Number of instances (distinct non-zero ids), summed over the slices of a stack.

    Parameters
    ----------
    labels : ndarray, integer, shape ``(Y, X)`` or ``(Z, Y, X)``
    """
    return sum(np.count_nonzero(np.unique(run_ids(plane))) for plane in _planes(labels))


def touching_pairs(labels: np.ndarray) -> int:
    """Number of pairs of distinct instances that touch, summed over the slices of a stack.

    Two instances touch when a pixel of one is an 8-neighbour of a pixel of the
    other; each such pair is one separation gap the network has to learn.

    Parameters
    ----------
    labels : ndarray, integer, shape ``(Y, X)`` or ``(Z, Y, X)``
        0 is background.
    """
    return sum(len(np.unique(contact_pairs(plane), axis=0)) for plane in _planes(labels))


def annotated_labels(
    labels: np.ndarray, region: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Painted labels as training reads them: ``(instance labels, annotated mask)``.

    Negative labels (e.g. -1) mark pixels that are not annotated, and become 0. A
    plane of two values is a mask of cells (``as_instances``). The
    instance labels are int32 where their ids fit (``label_checks.in_kernel_type``). Without a
    region, a 2D image is annotated everywhere, and of a stack only the slices with
    a cell are: a stack painted on one slice trains on that slice, not on its
    unpainted neighbours as if they held no cell (give a region to train on
    cell-free slices as background).

    Parameters
    ----------
    labels : ndarray, integer or bool, shape ``(Y, X)`` or ``(Z, Y, X)``
    region : ndarray, bool, same shape, optional
        Where the labels are to be trusted.
    """
    labels = np.asarray(labels)
    if region is not None:
        region = np.array(region, bool)  # a copy: the caller's stays as it is
    elif labels.ndim == 2:
        region = np.ones(labels.shape, bool)
    else:
        painted = np.any(labels > 0, axis=(-2, -1), keepdims=True)
        region = np.broadcast_to(painted, labels.shape).copy()
    labels, region = without_negatives(labels, region)
    return in_kernel_type(as_instances(labels)), region


def without_negatives(labels: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, region)`` with negative labels (pixels marked as not annotated) made
    0 and taken out of ``region``, which is changed in place: the part of reading
    painted labels that looks at each pixel alone."""
    if labels.dtype != bool and labels.min(initial=0) < 0:
        region &= labels >= 0
        labels = np.where(labels < 0, 0, labels)
    return labels, region
