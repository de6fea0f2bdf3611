"""The training target and loss weights of Ronneberger et al. (2015), Eq. 2.

``separation_borders`` opens a one-pixel background gap between touching
instances (the network learns to predict it, which is what separates cells);
``border_weight`` is the border term of Eq. 2,

    w0 * exp(-(d1 + d2)**2 / (2 sigma**2)),

with d1, d2 the Euclidean distances from a background pixel to the nearest
pixel of the nearest and the second-nearest instance; ``weight_map`` adds the
class-balance term. All are exact (within 1e-5 of the textbook computation with
one distance transform per instance) but cost one linear scan of the image,
whatever the number of instances: the term is below ``TOLERANCE`` once
d1 + d2 exceeds ``sigma * sqrt(2 ln(w0 / TOLERANCE))``, so no distance beyond
that is ever computed. ``WeightMap`` keeps a map up to date as labels are
painted, recomputing only the window a brush stroke can influence.
"""

from __future__ import annotations

import math

import numpy as np

from . import _separation_kernels as separation
from . import _weights_kernels as kernels
from .class_balance import balance, classes_of, coded_terms, counts
from .id_boxes import IdBoxes
from .label_checks import check_labels, check_parameters, fit, ignore_mask, in_kernel_type
from .windows import changed_window, grow_window, mask_window, union_window, window_within

# Border-term values below this are written as 0 (the contract is 1e-5).
TOLERANCE = 1e-6


def cutoff(w0: float, sigma: float) -> float:
    """The distance d1 + d2 beyond which the border term is below ``TOLERANCE``."""
    if w0 <= TOLERANCE or sigma <= 0:
        return 0.0
    return sigma * math.sqrt(2.0 * math.log(w0 / TOLERANCE))


def _per_slice(function, labels: np.ndarray, dtype, *args) -> np.ndarray:
    if labels.ndim == 2:
        return function(labels, *args)
    out = np.empty(labels.shape, dtype)
    for z, plane in enumerate(labels):
        out[z] = function(plane, *args)
    return out


def _separation_rounds(labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """How the gaps are settled: round after round, ``(protected, gapped, lost)``,
    the ids protected from vanishing (sorted), the labels gapped with them, and the
    ids that vanish all the same and are protected in the next round. The last
    round loses none, and its gapped labels are the result."""
    labels = np.ascontiguousarray(labels)  # one compiled kernel per dtype, not per layout
    protected, rounds = np.zeros(0, labels.dtype), []
    while True:
        gapped, removed, beside_kept = separation.gaps(labels, protected)
        # Most keep a pixel beside one they gave: only the others are looked for.
        unsure = np.setdiff1d(removed, beside_kept)
        vanished = unsure[separation.holding(labels, gapped, unsure) == 1]
        lost = np.setdiff1d(vanished, protected)
        rounds.append((protected, gapped, lost))
        if lost.size == 0:
            return rounds
        # An instance that would vanish outranks its neighbours: they give way.
        protected = np.union1d(protected, lost)


def _gapped(labels: np.ndarray) -> np.ndarray:
    return _separation_rounds(labels)[-1][1]


def separation_borders(labels: np.ndarray) -> np.ndarray:
    """Instance labels with a one-pixel background gap wherever instances touch.

    Of two instances that touch (8-neighbourhood), the one with the lower id gives
    its contact pixels to the background, so exactly one pixel separates them. An
    instance that would vanish entirely (a thin sliver) outranks the others, which
    give way to it instead; of two such slivers that touch, the lower id still
    gives way, and may vanish.

    Parameters
    ----------
    labels : ndarray, integer, shape ``(Y, X)`` or ``(Z, Y, X)``
        0 is background; ids are any positive integers up to 64 bits.

    Returns
    -------
    ndarray, same shape and dtype as ``labels``
    """
    labels = check_labels(labels)
    gapped = _per_slice(_gapped, in_kernel_type(labels), labels.dtype)
    return gapped.astype(labels.dtype, copy=False)  # the ids given, so no loss


def _border_2d(labels: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    reach = cutoff(w0, sigma)
    labels = np.ascontiguousarray(labels)
    out = np.zeros(labels.shape, np.float32)
    if reach > 0:
        reach_px = math.ceil(reach)
        dist_dtype = np.uint8 if reach_px < 255 else np.int32
        columns = kernels.column_pass(labels, reach_px, dist_dtype)
        kernels.border_term(labels, *columns, float(w0), float(sigma), reach, out)
    return out


def border_weight(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The border term of Eq. 2 (Ronneberger et al. 2015).

    Parameters
    ----------
    labels : ndarray, integer, shape ``(Y, X)`` or ``(Z, Y, X)``
        Instance labels, 0 = background.
    w0, sigma : float
        Height and width (pixels) of the border term.

    Returns
    -------
    ndarray, float32, same shape
        ``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` on background pixels; 0 on
        instance pixels, and everywhere when there are fewer than two instances.
    """
    labels = check_labels(labels)
    check_parameters(w0, sigma)
    return _per_slice(_border_2d, in_kernel_type(labels), np.float32, w0, sigma)


def weight_map(
    labels: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_balance: bool = True,
    ignore=None,
) -> np.ndarray:
    """The full Eq. 2 loss weight ``w = w_c + w0 * exp(-(d1 + d2)**2 / (2 sigma**2))``.

    The border term is computed on ``separation_borders(labels)``, the target the
    network is trained on, so the gaps between touching cells weigh most.

    Parameters
    ----------
    labels : ndarray, integer, shape ``(Y, X)`` or ``(Z, Y, X)``
    w0, sigma : float
    class_balance : bool
        ``w_c`` from :func:`.class_balance.class_weights` (per slice: each class the same total
        weight, border term included); else 1 everywhere.
    ignore : bool ndarray or int, optional
        Unannotated pixels (a mask, or the label value marking them): weight 0,
        and never taken for an instance.

    Returns
    -------
    ndarray, float32, same shape as ``labels``
    """
    labels = check_labels(labels, ignore=ignore)
    check_parameters(w0, sigma)
    mask = ignore_mask(labels, ignore)
    if mask is not None:
        labels = np.where(mask, labels.dtype.type(0), labels)
    labels = in_kernel_type(labels)
    out = np.empty(labels.shape, np.float32)
    for index in np.ndindex(labels.shape[:-2]):
        out[index] = _weight_map_2d(
            labels[index], None if mask is None else mask[index], w0, sigma, class_balance
        )
    return out


def _weight_map_2d(labels, ignored, w0, sigma, class_balance) -> np.ndarray:
    gapped = _gapped(labels)
    terms = coded_terms(gapped > 0, _border_2d(gapped, w0, sigma), ignored)
    wb, wf = classes_of(terms) if class_balance else (1.0, 1.0)
    out = np.empty(terms.shape, np.float32)
    kernels.compose(terms, np.float32(wb), np.float32(wf), out)
    return out


class WeightMap:
    """A 2D weight map kept equal to ``weight_map(labels, ...)`` while labels are edited.

    After an edit, :meth:`update` settles the gaps again from the edited box
    outwards, as far as the change runs along touching cells, and recomputes the
    border term in the box of changed gaps grown by its reach. Which slivers are
    protected from vanishing is settled in rounds over the whole image (the gaps of
    each round are kept and settled again too): when an edit changes it, the whole
    map is recomputed. The class-balance
    weights are global but move in steps (see :func:`.class_balance.class_weights`):
    when an edit crosses one, every pixel's weight changes, so the whole map is
    composed again from the stored terms, in place, in one compiled pass with no
    distances.

    Parameters
    ----------
    labels : ndarray, integer, shape ``(Y, X)``
    w0, sigma, class_balance
        As for :func:`weight_map`.
    ignore : int, optional
        The label value marking unannotated pixels (weight 0).

    Attributes
    ----------
    weights : ndarray, float32, shape ``(Y, X)``
        The map. It is updated in place: the same array for the object's lifetime.
    gapped : ndarray, shape ``(Y, X)``
        ``separation_borders`` of the annotated labels: the training target, int32
        where the ids fit (the kernels' type), else int64 or, for ids from 2**63 on,
        uint64.
    terms : ndarray, float32, shape ``(Y, X)``
        What the map is composed from: the border term on background pixels, -1
        on foreground (gapped) pixels and -2 on unannotated ones.
    classes : tuple of float
        The current ``(background, foreground)`` class-balance weights.
    """

    def __init__(
        self,
        labels: np.ndarray,
        w0: float = 10.0,
        sigma: float = 5.0,
        class_balance: bool = True,
        ignore: int | None = None,
    ):
        labels = check_labels(labels, ignore=ignore)
        if labels.ndim != 2:
            raise ValueError(f"WeightMap takes one 2D plane; got shape {labels.shape}")
        check_parameters(w0, sigma)
        self.w0, self.sigma, self.class_balance, self.ignore = w0, sigma, class_balance, ignore
        self.reach = math.ceil(cutoff(w0, sigma)) + 1
        self.weights = np.empty(labels.shape, np.float32)
        self._full(labels)

    def _full(self, labels: np.ndarray) -> None:
        # The annotated labels (0 where unannotated), in the kernels' type, and where
        # they are unannotated; the type given, to give them back in.
        self._given_type = labels.dtype
        self.unannotated = None if self.ignore is None else labels == self.ignore
        kept = labels if self.ignore is None else np.where(self.unannotated, 0, labels)
        self.labels = in_kernel_type(kept)
        if np.may_share_memory(self.labels, labels):  # the caller's, who may change it
            self.labels = self.labels.copy()
        self.rounds = _separation_rounds(self.labels)
        self._id_boxes = IdBoxes()
        self.gapped = self.rounds[-1][1]
        border = _border_2d(self.gapped, self.w0, self.sigma)
        self.terms = coded_terms(self.gapped > 0, border, self.unannotated)
        # The class-balance statistics, kept up to date by window.
        self.counts = counts(self.terms)
        self.border_rows = np.zeros(labels.shape[0])
        if self.class_balance:
            kernels.border_sums(self.terms, self.border_rows)
        self.classes = self._class_weights()
        self._compose(self.terms, self.weights)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays the map holds (the labels, each round's gaps, the
        terms, the weights), for a viewer to bound what it keeps."""
        rounds = (a for r in self.rounds for a in r)
        held = (self.labels, self.unannotated, self.terms, self.weights, self.border_rows, *rounds)
        return sum({id(a): a.nbytes for a in held if a is not None}.values())

    def _class_weights(self) -> tuple[float, float]:
        return balance(self.counts, self.border_rows) if self.class_balance else (1.0, 1.0)

    def _compose(self, terms: np.ndarray, out: np.ndarray) -> None:
        # float32 sums, as weight_map's, so that both agree bit for bit
        wb, wf = self.classes
        kernels.compose(terms, np.float32(wb), np.float32(wf), out)

    def update(self, labels: np.ndarray, region: tuple[slice, slice]) -> tuple[slice, slice]:
        """Bring the map up to date with ``labels``, which differ from the previous
        labels only inside ``region`` (a ``(rows, columns)`` pair of slices).

        Only ``region`` of ``labels`` is validated: the rest must equal the labels
        the map already holds. Returns the window of :attr:`weights` that changed
        (the whole map when the class-balance weights moved).
        """
        region = self._window(region)
        labels = check_labels(labels, window=region, ignore=self.ignore)
        if labels.shape != self.labels.shape:
            raise ValueError(f"labels changed shape from {self.labels.shape} to {labels.shape}")
        held = fit(labels[region], self.labels.dtype, self.ignore)  # else wider ids
        if labels.dtype != self._given_type or not held:
            self._full(labels)
            return self._window((slice(None), slice(None)))
        return self._edit(labels[region], region)

    def edit(self, region: tuple[slice, slice], values: np.ndarray) -> tuple[slice, slice]:
        """:meth:`update` given only the new labels of ``region``, ``values``: no
        plane of labels to make or read for an edit of a few pixels."""
        region = self._window(region)
        values = check_labels(values, "values", ignore=self.ignore)
        shape = tuple(s.stop - s.start for s in region)
        if values.shape != shape:
            raise ValueError(f"the values have shape {values.shape}; the region {shape}")
        held = fit(values, self.labels.dtype, self.ignore)
        if not (np.can_cast(values.dtype, self._given_type) and held):
            dtype = np.result_type(values.dtype, self._given_type)
            if dtype.kind == "f":  # int64 beside uint64: uint64 holds ids, not negatives
                if values.min(initial=0) < 0:
                    raise ValueError("negative values cannot join uint64 labels")
                dtype = np.dtype(np.uint64)
            labels = self._given().astype(dtype)
            labels[region] = values
            self._full(labels)
            return self._window((slice(None), slice(None)))
        return self._edit(values, region)

    def _window(self, region) -> tuple[slice, slice]:
        if any(s.step not in (None, 1) for s in region):
            raise ValueError(f"the region must be slices with no step; got {region}")
        return grow_window(region, 0, self.labels.shape)

    def _given(self) -> np.ndarray:
        """The labels as last given, in their type, ``ignore`` where unannotated (a copy)."""
        labels = self.labels.astype(self._given_type)
        # only where it was given: an ignore value the labels never held may not fit them
        if self.unannotated is not None and self.unannotated.any():
            labels[self.unannotated] = self.ignore
        return labels

    def _edit(self, values: np.ndarray, region: tuple[slice, slice]) -> tuple[slice, slice]:
        shape = self.labels.shape
        whole = (slice(0, shape[0]), slice(0, shape[1]))
        before = self.labels[region].copy()
        if self.unannotated is None:
            self.labels[region] = values
        else:
            self.unannotated[region] = values == self.ignore
            self.labels[region] = np.where(self.unannotated[region], 0, values)
        self._id_boxes.edited(self.labels, region)
        # The gaps change where a pixel's neighbourhood did, and along the chains
        # of instances that giving way passes on (separation.regap), in every round.
        rows, cols = grow_window(region, 1, shape)
        gone = np.zeros(0, self.labels.dtype)  # ids no longer in the labels
        for protected, gapped, lost in self.rounds:
            box = separation.regap(
                self.labels, protected, gapped, rows.start, rows.stop, cols.start, cols.stop
            )
            if box[0] < 0:  # a long chain of falling ids: settled whole, in linear time
                self._full(self._given())
                return whole
            touched = region
            if box[0] < box[1]:
                touched = union_window(region, (slice(box[0], box[1]), slice(box[2], box[3])))
            now, gone = self._lost(before, touched, gapped, lost, gone)
            if not np.array_equal(np.setdiff1d(now, protected), lost):
                self._full(self._given())  # another protection: settled from none up
                return whole
        out = grow_window(touched, self.reach, shape)  # where the border term can change
        crop = grow_window(out, self.reach + 1, shape)
        border = _border_2d(self.gapped[crop], self.w0, self.sigma)
        self.counts -= counts(self.terms[out])
        self.terms[out] = coded_terms(
            self.gapped[out] > 0,
            border[window_within(out, crop)],
            None if self.unannotated is None else self.unannotated[out],
        )
        self.counts += counts(self.terms[out])
        if self.class_balance:
            kernels.border_sums(self.terms[out[0]], self.border_rows[out[0]])
        classes = self._class_weights()
        if classes != self.classes:
            self.classes = classes
            self._compose(self.terms, self.weights)
            return whole
        self._compose(self.terms[out], self.weights[out])
        return out

    def changed(self, labels: np.ndarray) -> tuple[slice, slice] | None:
        """The box of the pixels where ``labels`` differ from the map's, the region to
        :meth:`update` with; None if none. Unannotated pixels compare as unannotated,
        not by the 0 the map keeps for them, or every edit would span them all."""
        if self.unannotated is None:
            return changed_window(self.labels, labels)
        unannotated = labels == self.ignore
        annotated = np.where(unannotated, labels.dtype.type(0), labels)
        return mask_window((annotated != self.labels) | (unannotated != self.unannotated))

    def _lost(self, before, touched, gapped, lost, gone) -> tuple[np.ndarray, np.ndarray]:
        """A round's vanished ids after the edit (``before``: the labels it replaced;
        ``touched``: where labels or gaps changed; ``lost``: before it), and ``gone``
        with the ids found in no pixel. Only ids with a pixel near a change can have
        lost or won back their last kept pixel, so only they are checked again:
        those with a kept pixel in view at once, the others in a scan of the box they
        lie in (:class:`.id_boxes.IdBoxes`), which ids found ``gone`` by an earlier
        round's scan skip (a relabelled cell)."""
        seen = grow_window(touched, 1, self.labels.shape)
        near = np.union1d(before, self.labels[seen])
        near = near[near != 0]
        unsure = np.setdiff1d(near[~np.isin(near, gapped[seen])], gone)
        held = self._id_boxes.holding(self.labels, gapped, unsure)
        now = np.union1d(np.setdiff1d(lost, near), unsure[held == 1])
        return now, np.union1d(gone, unsure[held == 0])
