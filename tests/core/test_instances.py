import numpy as np
import pytest

from napari_unet.core.instances import to_instances


def two_touching_disks():
    yy, xx = np.mgrid[:64, :96]
    truth = np.zeros((64, 96), np.int32)
    truth[(yy - 32) ** 2 + (xx - 30) ** 2 <= 18**2] = 1
    truth[((yy - 32) ** 2 + (xx - 64) ** 2 <= 18**2) & (xx >= 47)] = 2
    return truth


def as_probabilities(foreground):
    fg = foreground.astype(np.float32)
    return np.stack([1 - fg, fg])


def test_predicted_gap_gives_two_touching_labels():
    truth = two_touching_disks()
    foreground = truth > 0
    foreground[:, 46:48] = False  # the gap the network is trained to predict
    labels = to_instances(as_probabilities(foreground))
    assert labels.dtype == np.int32
    assert set(np.unique(labels)) == {0, 1, 2}
    touching = (labels[:, :-1] == 1) & (labels[:, 1:] == 2)
    assert touching.sum() > 10
    for i in (1, 2):
        iou = ((labels == i) & (truth == i)).sum() / ((labels == i) | (truth == i)).sum()
        assert iou > 0.97
    # the outer background is not grown into, except in the notches where the cells meet
    outside = np.nonzero((labels > 0) & (truth == 0))
    assert len(outside[0]) <= 30
    assert np.all(np.abs(outside[1] - 46.5) <= 4)


def test_small_objects_are_dropped():
    foreground = np.zeros((30, 30), bool)
    foreground[2:4, 2:4] = True
    foreground[10:20, 10:20] = True
    labels = to_instances(as_probabilities(foreground), min_size=5)
    assert labels.max() == 1 and (labels == 1).sum() == 100


def test_stack_ids_are_unique():
    foreground = np.stack([two_touching_disks() > 0] * 3)
    foreground[:, :, 46:48] = False
    labels = to_instances(np.stack([1.0 - foreground, foreground]))
    assert labels.shape == (3, 64, 96)
    assert labels.max() == 6
    assert len(set(np.unique(labels[0])) & set(np.unique(labels[1]))) == 1  # only 0


@pytest.mark.parametrize("bad", [np.zeros((10, 10)), np.zeros((1, 10, 10))])
def test_bad_shapes(bad):
    with pytest.raises(ValueError, match="n_classes"):
        to_instances(bad)
