import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import metrics as skmetrics

from napari_unet.core.instances import touching_pairs
from napari_unet.core.metrics import (
    THRESHOLD_SWEEP,
    Matching,
    best_threshold,
    match_instances,
    pixel_error,
    rand_error,
    score_segmentation,
    score_stack,
    true_interior,
    variation_of_information,
)
from napari_unet.core.synthetic import touching_cells


def cell_grid(shape=(40, 40), step=10):
    """Square cells separated by one-pixel membranes: interior mask and labels."""
    interior = np.ones(shape, bool)
    interior[::step, :] = False
    interior[:, ::step] = False
    labels, _ = ndi.label(interior)
    return interior, labels


def strip(length, start, width=40):
    row = np.zeros((1, width), bool)
    row[0, start : start + length] = True
    return row


def test_perfect_prediction_scores_zero_and_f1_one():
    _, labels = cell_grid()
    renamed = np.where(labels > 0, labels * 7 + 100, 0)  # same cells, other ids
    assert rand_error(labels, renamed) == 0.0
    assert variation_of_information(labels, renamed) == pytest.approx(0.0, abs=1e-12)
    assert pixel_error(labels > 0, renamed > 0) == 0.0
    m = match_instances(labels, renamed)
    assert m.true_positives == labels.max()
    assert (m.false_positives, m.false_negatives) == (0, 0)
    assert m.precision == m.recall == m.f1 == m.mean_matched_iou == 1.0


def test_merged_pair_raises_rand_error_and_lowers_f1():
    interior, labels = cell_grid()
    merged_interior = interior.copy()
    merged_interior[11:20, 20] = False
    merged_interior[11:20, 10] = True  # a membrane gap joins two cells
    merged, _ = ndi.label(merged_interior)
    assert merged.max() == labels.max() - 1
    assert rand_error(labels, merged) > 0.01
    m = match_instances(labels, merged)
    assert m.f1 < 1.0
    assert (m.false_positives, m.false_negatives) == (1, 2)  # the merge matches neither


def test_split_cell_raises_vi():
    _, labels = cell_grid()
    split = labels.copy()
    cell = labels == labels[15, 15]
    split[cell & (np.arange(40)[None, :] >= 15)] = labels.max() + 1
    assert variation_of_information(labels, split) > 0.05
    m = match_instances(labels, split)
    # the larger half (5 of 9 columns) still matches the cell; the smaller is extra
    assert (m.false_positives, m.false_negatives) == (1, 0)
    assert type(m.false_positives) is int and type(m.f1) is float


def test_vi_is_the_sum_of_skimage_terms():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, (12, 12))
    pred = rng.integers(0, 3, (12, 12))
    expected = np.sum(skmetrics.variation_of_information(true, pred))
    assert variation_of_information(true, pred) == pytest.approx(expected)
    assert rand_error(true, pred) == pytest.approx(skmetrics.adapted_rand_error(true, pred)[0])


def test_rand_error_ignores_true_label_zero():
    true = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[5, 5, 9, 6, 6]])  # how the membrane is labelled does not matter
    assert rand_error(true, pred) == 0.0
    assert rand_error(true, np.array([[5, 5, 5, 6, 6]])) == 0.0


def test_pixel_error_counts_exactly():
    true = np.zeros((4, 4), bool)
    true[1:3, 1:3] = True
    pred = true.copy()
    pred[0, 0] = True  # wrong
    pred[1, 1] = False  # wrong
    pred[3, 3] = True  # wrong
    assert pixel_error(pred, true) == 3 / 16
    mask = np.zeros((4, 4), bool)
    mask[:2] = True  # 8 pixels, two of them wrong
    assert pixel_error(pred, true, mask=mask) == 2 / 8
    assert pixel_error(pred.astype(np.uint8) * 255, true) == 3 / 16
    with pytest.raises(ValueError, match="no pixels"):
        pixel_error(pred, true, mask=np.zeros((4, 4), bool))


def known_ious():
    """Instance 1 (8 px) shifted by 2 has IoU 6/10; instance 2 (7 px) shifted by 3, 4/10."""
    true = np.zeros((1, 40), np.int64)
    pred = np.zeros((1, 40), np.int64)
    true[strip(8, 0)] = 1
    pred[strip(8, 2)] = 10
    true[strip(7, 20)] = 2
    pred[strip(7, 23)] = 20
    return true, pred


def test_match_instances_known_ious():
    true, pred = known_ious()
    m = match_instances(true, pred, iou_threshold=0.5)
    assert m == Matching(1, 1, 1, 0.5, 0.5, 0.5, 0.6)
    m = match_instances(true, pred, iou_threshold=0.3)
    assert (m.true_positives, m.false_positives, m.false_negatives) == (2, 0, 0)
    assert m.f1 == 1.0
    assert m.mean_matched_iou == pytest.approx(0.5)
    # a pair matches only above the threshold
    assert match_instances(true, pred, iou_threshold=0.6).true_positives == 0


def test_low_threshold_maximises_the_number_of_matches():
    # p1 overlaps t1 most (IoU 7/15) but only matching p1-t2 (5/17) and p2-t1
    # (3/10) matches both; a greedy choice by IoU would match one pair.
    true = np.zeros((1, 40), np.int32)
    pred = np.zeros((1, 40), np.int32)
    true[strip(10, 0)] = 1
    true[strip(10, 10)] = 2
    pred[strip(3, 0)] = 2
    pred[strip(12, 3)] = 1
    m = match_instances(true, pred, iou_threshold=0.25)
    assert (m.true_positives, m.false_positives, m.false_negatives) == (2, 0, 0)
    assert m.mean_matched_iou == pytest.approx((5 / 17 + 3 / 10) / 2)
    assert match_instances(true, pred, iou_threshold=0.5).true_positives == 0


def test_conflicts_are_solved_group_by_group():
    # The conflict above, 50 times over with ids of its own, beside the pairs of
    # known_ious: each group is matched as it is alone.
    width = 50 * 25 + 40
    true = np.zeros((1, width), np.int32)
    pred = np.zeros_like(true)
    for k in range(50):
        at = 25 * k
        true[strip(10, at, width)], true[strip(10, at + 10, width)] = 2 * k + 1, 2 * k + 2
        pred[strip(3, at, width)], pred[strip(12, at + 3, width)] = 2 * k + 2, 2 * k + 1
    single_true, single_pred = known_ious()
    true[:, -40:] = np.where(single_true > 0, single_true + 1000, 0)
    pred[:, -40:] = np.where(single_pred > 0, single_pred + 1000, 0)
    m = match_instances(true, pred, iou_threshold=0.25)
    assert (m.true_positives, m.false_positives, m.false_negatives) == (102, 0, 0)
    expected = (50 * (5 / 17 + 3 / 10) + 2 * 0.5) / 102
    assert m.mean_matched_iou == pytest.approx(expected)


def test_large_and_sparse_ids():
    true, pred = known_ious()
    big_true = np.where(true > 0, true + 2**40, 0)
    big_pred = np.where(pred == 10, 2**40 + 3, np.where(pred == 20, 5, 0))
    assert match_instances(big_true, big_pred, 0.3) == match_instances(true, pred, 0.3)
    assert rand_error(big_true, big_pred) == pytest.approx(rand_error(true, pred))
    assert variation_of_information(big_true, big_pred) == pytest.approx(
        variation_of_information(true, pred)
    )
    # negative ids are instances too; only 0 is background
    assert rand_error(true, -pred) == pytest.approx(rand_error(true, pred))


def test_empty_images():
    empty = np.zeros((6, 6), np.int32)
    some = empty.copy()
    some[1:3, 1:3] = 4
    some[4:, 4:] = 9
    m = match_instances(empty, empty)
    assert (m.true_positives, m.false_positives, m.false_negatives) == (0, 0, 0)
    assert m.precision == m.recall == m.f1 == 1.0
    assert math.isnan(m.mean_matched_iou)
    m = match_instances(empty, some)
    assert (m.false_positives, m.false_negatives) == (2, 0)
    assert m.precision == m.recall == m.f1 == 0.0
    m = match_instances(some, empty)
    assert (m.false_positives, m.false_negatives) == (0, 2)
    assert m.precision == m.recall == m.f1 == 0.0
    assert variation_of_information(empty, empty) == 0.0
    assert math.isnan(rand_error(empty, some))  # no labelled pixel pair in the truth


def test_three_dimensional_labels():
    _, labels = cell_grid((20, 20))
    stack = np.stack([labels, np.where(labels > 0, labels + 100, 0)])
    assert match_instances(stack, stack).f1 == 1.0
    assert rand_error(stack, stack) == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: pixel_error(np.zeros((3, 3)), np.zeros((3, 4))),
        lambda: pixel_error(np.zeros(5), np.zeros(5)),
        lambda: pixel_error(np.zeros((3, 3)), np.zeros((3, 3)), mask=np.ones((2, 2))),
        lambda: rand_error(np.zeros((3, 3), int), np.zeros((3, 4), int)),
        lambda: variation_of_information(np.zeros((1, 2, 3, 4), int), np.zeros((1, 2, 3, 4), int)),
        lambda: match_instances(np.zeros((3, 3), int), np.zeros((4, 3), int)),
        lambda: match_instances(np.zeros((3, 3)), np.zeros((3, 3))),  # float labels
        lambda: match_instances(np.zeros((3, 3), int), np.zeros((3, 3), int), 1.0),
        lambda: score_segmentation(np.zeros((2, 3, 3)), np.zeros((2, 3, 3), bool)),
        lambda: score_segmentation(np.zeros((3, 3)), np.zeros((3, 3), bool), threshold=-0.1),
        lambda: score_stack([np.zeros((3, 3))], []),
        lambda: score_stack([], []),
        lambda: best_threshold({0.5: {"pixel_error": 0.0}}, metric="f1"),
    ],
)
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_score_segmentation_of_a_perfect_probability_map():
    interior, _ = cell_grid()
    scores = score_segmentation(interior.astype(np.float32), interior.astype(np.uint8) * 255)
    assert set(scores) == {"pixel_error", "rand_error", "vi"}
    assert scores["pixel_error"] == 0.0
    assert scores["rand_error"] == 0.0
    assert scores["vi"] == pytest.approx(0.0, abs=1e-12)


def test_score_segmentation_uses_4_connectivity():
    interior = np.zeros((6, 6), bool)
    interior[1:3, 1:3] = True
    interior[3:5, 3:5] = True  # touches the first cell only diagonally
    assert ndi.label(interior)[1] == 2
    probability = interior.astype(np.float64)
    assert score_segmentation(probability, interior)["rand_error"] == 0.0


def test_score_stack_averages_slices_and_finds_the_best_threshold():
    rng = np.random.default_rng(0)
    interior, _ = cell_grid()
    # interior at 0.75 and membrane at 0.25 with noise of 0.1: 0.5 separates
    # them, 0.9 loses the interior, 0.1 closes the membranes
    probabilities = [
        np.clip(np.where(interior, 0.75, 0.25) + rng.normal(0, 0.05, interior.shape), 0, 1)
        for _ in range(3)
    ]
    scores = score_stack(probabilities, [interior] * 3, thresholds=THRESHOLD_SWEEP)
    assert list(scores) == list(THRESHOLD_SWEEP)
    assert scores[0.5] == {"pixel_error": 0.0, "rand_error": 0.0, "vi": pytest.approx(0.0)}
    assert scores[0.1]["rand_error"] > 0.5  # every cell merged
    assert scores[0.9]["pixel_error"] > 0.5
    assert best_threshold(scores) in (0.4, 0.5, 0.6)
    assert best_threshold(scores, "pixel_error") in (0.4, 0.5, 0.6)
    stacked = score_stack(np.stack(probabilities), np.stack([interior] * 3))
    assert stacked == {0.5: scores[0.5]}


def test_a_slice_without_a_cell_leaves_only_the_undefined_score_out():
    interior, _ = cell_grid()
    probability = np.where(interior, 0.75, 0.25)
    empty = np.zeros_like(interior)
    scores = score_stack([probability, probability], [interior, empty])[0.5]
    assert scores["rand_error"] == 0.0  # the cell-free slice's is undefined
    alone = score_segmentation(probability, empty)
    assert np.isnan(alone["rand_error"])
    assert scores["pixel_error"] == pytest.approx(alone["pixel_error"] / 2)
    assert np.isnan(score_stack([probability], [empty])[0.5]["rand_error"])


def test_the_true_interior_keeps_touching_cells_apart():
    _, labels = touching_cells((96, 96), n_cells=14, seed=0)
    assert touching_pairs(labels) > 0
    interior = true_interior(np.stack([labels, labels]))
    for plane in interior:
        components, _ = ndi.label(plane)
        inside = components > 0
        pairs = np.unique(np.stack([components[inside], labels[inside]]), axis=1)
        # Each component lies in one cell (a gap can cut a thin cell in two).
        assert len(np.unique(pairs[0])) == pairs.shape[1]
        assert set(pairs[1]) == set(np.unique(labels)) - {0}
    # Scored against itself, the training target is perfect.
    assert score_segmentation(interior[0].astype(np.float32), interior[0])["rand_error"] == 0
    mask = np.where(labels > 0, 255, 0).astype(np.uint8)  # ISBI 2012: scored as given
    np.testing.assert_array_equal(true_interior(mask), mask == 255)
    with pytest.raises(ValueError, match="annotated everywhere"):
        true_interior(np.where(labels > 0, labels, -1))
