import numpy as np
import pytest

from napari_unet.core import _separation_kernels as separation
from napari_unet.core.id_boxes import IdBoxes
from napari_unet.core.weights import separation_borders


@pytest.mark.parametrize(("dtype", "first_id"), [(np.int32, 1), (np.uint64, 2**64 - 40)])
def test_boxes_hold_every_pixel_and_find_what_a_whole_scan_finds(dtype, first_id):
    rng = np.random.default_rng(0)
    labels = np.zeros((120, 140), dtype)
    for k in range(12):  # rectangles, some overlapping
        y, x = rng.integers(0, 110), rng.integers(0, 130)
        labels[y : y + rng.integers(2, 12), x : x + rng.integers(2, 12)] = first_id + k
    boxes = IdBoxes()
    boxes.edited(labels, (slice(0, 1), slice(0, 1)))  # before the first look: nothing kept
    ids = np.arange(first_id, first_id + 20, dtype=dtype)  # some never painted
    for step in range(60):
        if step % 3 == 0:  # looks, then edits: boxes built from the labels as they are
            gapped = separation_borders(labels)
            candidates = np.sort(rng.choice(ids, rng.integers(1, 6), replace=False))
            np.testing.assert_array_equal(
                boxes.holding(labels, gapped, candidates),
                separation.holding(labels, gapped, candidates),
            )
        # Now and then a region too large to sort its ids: the boxes are built again.
        h, w = rng.integers(1, 15, 2) if step % 10 else rng.integers(40, 80, 2)
        y, x = rng.integers(0, 120 - h + 1), rng.integers(0, 140 - w + 1)
        labels[y : y + h, x : x + w] = rng.choice([dtype(0), *ids])
        boxes.edited(labels, (slice(y, y + h), slice(x, x + w)))
        if boxes.ids is not None:
            for value in np.unique(labels[labels != 0]):
                k = np.searchsorted(boxes.ids, value)
                assert boxes.ids[k] == value
                y0, y1, x0, x1 = boxes.boxes[k]
                rows, cols = np.nonzero(labels == value)
                assert y0 <= rows.min() and rows.max() < y1
                assert x0 <= cols.min() and cols.max() < x1


def test_boxes_are_the_bounding_boxes_when_built():
    labels = np.zeros((30, 40), np.uint16)
    labels[3:9, 5:7] = 7
    labels[20, 2:38] = 3
    labels[25:27, 30] = 7
    boxes = IdBoxes()
    boxes.holding(labels, labels, np.array([3], np.uint16))
    np.testing.assert_array_equal(boxes.ids, [3, 7])
    np.testing.assert_array_equal(boxes.boxes, [[20, 21, 2, 38], [3, 27, 5, 31]])


def test_boxes_covering_more_than_the_image_give_way_to_one_pass(monkeypatch):
    labels = np.zeros((20, 30), np.int32)
    labels[0, 0] = labels[19, 29] = 1  # each id's box is the whole image
    labels[0, 29] = labels[19, 0] = 2
    passes = []
    whole = separation.holding
    monkeypatch.setattr(separation, "holding", lambda *args: passes.append(1) or whole(*args))
    candidates = np.array([1, 2, 3], np.int32)
    found = IdBoxes().holding(labels, labels, candidates)
    np.testing.assert_array_equal(found, [2, 2, 0])
    assert passes == [1]
    found = IdBoxes().holding(labels, labels, candidates[1:])
    np.testing.assert_array_equal(found, [2, 0])
    assert passes == [1]  # one whole box: looked for in it
