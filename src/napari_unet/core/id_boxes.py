"""Where each instance of an edited label image lies, so that a live weight map
looks for an instance's pixels in a box around it rather than in the whole image."""

from __future__ import annotations

import numpy as np

from . import _separation_kernels as separation


class IdBoxes:
    """For each id of a 2D label image, a box that holds all its pixels: its
    bounding box when first needed, then grown by each region an edit wrote the id
    into. A box never shrinks, so it may hold more than the id, never less."""

    def __init__(self):
        self.ids = self.boxes = None  # sorted ids; (y0, y1, x0, x1) of each

    def edited(self, labels: np.ndarray, region: tuple[slice, slice]) -> None:
        """Take in that ``labels`` changed inside ``region`` (slices with both ends)."""
        if self.ids is None:  # not built yet: built from the labels as they are then
            return
        rows, cols = region
        if (rows.stop - rows.start) * (cols.stop - cols.start) > labels.size // 32:
            # Sorting that many ids costs more than building the boxes again in one pass.
            self.ids = self.boxes = None
            return
        written = np.unique(labels[region])
        written = written[written != 0]
        box = np.array([rows.start, rows.stop, cols.start, cols.stop])
        k, known = self._find(written)
        grown = self.boxes[k[known]]
        grown[:, ::2] = np.minimum(grown[:, ::2], box[::2])
        grown[:, 1::2] = np.maximum(grown[:, 1::2], box[1::2])
        self.boxes[k[known]] = grown
        if not known.all():
            self.ids = np.insert(self.ids, k[~known], written[~known])
            self.boxes = np.insert(self.boxes, k[~known], box, axis=0)

    def holding(self, labels: np.ndarray, gapped: np.ndarray, candidates: np.ndarray):
        """``separation.holding(labels, gapped, candidates)``, looking for each
        candidate (sorted, non-zero) in its box only, or in one pass over the image
        where the boxes cover more than it."""
        if candidates.size == 0:
            return np.zeros(0, np.int8)
        if self.ids is None:
            ids, boxes = separation.bounding_boxes(labels)
            order = np.argsort(ids)
            self.ids, self.boxes = ids[order], boxes[order]
        k, known = self._find(candidates)
        boxes = self.boxes[k[known]]
        if np.prod(boxes[:, 1::2] - boxes[:, ::2], axis=1).sum() > labels.size:
            return separation.holding(labels, gapped, candidates)
        seen = np.zeros(candidates.size, np.int8)  # 0 where no box: no pixel anywhere
        seen[known] = [
            separation.holding_in(labels, gapped, value, *box)
            for value, box in zip(candidates[known], boxes, strict=True)
        ]
        return seen

    def _find(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each of ``values`` (sorted) is or would go in ``ids``, and whether it is there."""
        k = np.searchsorted(self.ids, values)
        known = np.zeros(values.size, bool)
        inside = k < self.ids.size
        known[inside] = self.ids[k[inside]] == values[inside]
        return k, known
