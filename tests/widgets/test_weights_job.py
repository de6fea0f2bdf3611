"""The Weight map dock's worker against what training computes, over random
edits that change how a slice reads: into and out of a mask of two values, a
slice's last cell erased, pixels marked not annotated (negative), the region
edited, uint64 ids that training numbers anew; with settings changed between
runs, the shown weights drawn again, and maps dropped to save memory."""

from dataclasses import astuple, replace

import numpy as np
import pytest

from napari_unet._widgets import _weights_job
from napari_unet._widgets._session import WeightSettings
from napari_unet._widgets._weights_job import weights_job

SETTINGS = WeightSettings(w0=3.0, sigma=2.0, class_balance=True, ignore_outline=True)


def shown_after_runs(planes, labels, region, shown, settings=SETTINGS, redraw=False) -> None:
    """Run the worker once and draw what it yields into ``shown``, as the dock does."""
    job = weights_job(planes, labels, region, settings, redraw)
    while True:
        try:
            z, window, values = next(job)
        except StopIteration as end:
            assert end.value == ""
            return
        (shown if shown.ndim == 2 else shown[z])[window] = values


def painted(rng, shape, dtype) -> tuple[np.ndarray, np.ndarray]:
    """A mask of label 1 but for a few pixels of other labels (erase them and the
    plane reads as a mask), and of a stack, a first slice with no more cells than
    those few pixels; and the pixels where those few lie."""
    labels = (rng.random(shape) < 0.4).astype(dtype)
    if len(shape) == 3:
        labels[0] = 0
    few = rng.choice(labels.size, int(rng.integers(1, 4)), replace=False)
    if len(shape) == 3:
        few = few % labels[0].size  # on the first slice
    labels.flat[few] = rng.integers(1, 4, few.size)
    return labels, np.stack(np.unravel_index(few, shape), axis=1)


@pytest.mark.parametrize(
    ("shape", "dtype", "with_region"),
    [
        ((24, 30), np.int32, False),
        ((3, 20, 26), np.int16, False),
        ((3, 20, 26), np.uint64, True),
        ((22, 28), np.int64, True),
    ],
)
@pytest.mark.parametrize("budget", [0, _weights_job.MAPS_BUDGET])  # 0: one map kept
def test_random_edits_equal_the_weights_training_uses(
    loss_weights, monkeypatch, shape, dtype, with_region, budget
):
    monkeypatch.setattr(_weights_job, "MAPS_BUDGET", budget)
    rng = np.random.default_rng(sum(shape))
    signed = np.issubdtype(dtype, np.signedinteger)
    for _ in range(15):
        labels, few = painted(rng, shape, dtype)
        region = (rng.random(shape) > 0.2).astype(np.uint8) if with_region else None
        planes = [None] * (shape[0] if len(shape) == 3 else 1)
        shown = np.zeros(shape, np.float32)
        shown_after_runs(planes, labels, region, shown)
        for _ in range(15):
            # Half the edits on one of the few pixels, the others anywhere.
            at = few[rng.integers(len(few))] if rng.random() < 0.5 else None
            if at is None:
                at = [rng.integers(n) for n in shape]
            size = rng.integers(1, 4, 2)
            box = tuple(slice(int(a), int(a + n)) for a, n in zip(at[-2:], size, strict=True))
            where = (int(at[0]), *box) if len(shape) == 3 else box
            if region is not None and rng.random() < 0.2:
                region[where] = rng.integers(0, 2)
            else:
                choices = [0, 0, 1, 2, int(labels.max()) + 1]
                choices += [-1] if signed else [2**63 + 5] if dtype == np.uint64 else []
                labels[where] = choices[rng.integers(len(choices))]
            # Now and then other settings, or the weights drawn again (as when the
            # outline is toggled or the layer made again).
            settings = replace(SETTINGS, w0=4.0) if rng.random() < 0.2 else SETTINGS
            shown_after_runs(planes, labels, region, shown, settings, rng.random() < 0.2)
            annotated = None if region is None else region != 0
            expected = loss_weights(labels, *astuple(settings), annotated=annotated)
            np.testing.assert_array_equal(shown, expected)
            kept = sum(p is not None and p.map is not None for p in planes)
            assert kept <= 1 if budget == 0 else kept == sum(p.eq2 is not None for p in planes)


def test_an_id_of_the_value_that_marks_unannotated_pixels_is_a_cell(loss_weights):
    labels = np.zeros((12, 14), np.int64)
    labels[2:6, 2:6], labels[2:6, 6:10], labels[8:11, 3:7] = 1, 2, 2**63 - 1
    shown = np.zeros(labels.shape, np.float32)
    shown_after_runs([None], labels, None, shown)
    np.testing.assert_array_equal(shown, loss_weights(labels, *astuple(SETTINGS)))
