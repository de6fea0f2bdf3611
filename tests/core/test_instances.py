import numpy as np
import pytest

from napari_unet.core.instances import as_instances, cell_count, to_instances, touching_pairs


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


def test_a_gap_wider_than_closed_stays_open_and_leaves_no_stray_piece():
    from scipy import ndimage as ndi

    from napari_unet.core.synthetic import touching_cells
    from napari_unet.core.weights import separation_borders

    foreground = np.zeros((20, 30), bool)
    foreground[5:15, 2:12] = foreground[5:15, 15:25] = True  # 3 pixels apart
    labels = to_instances(as_probabilities(foreground), min_size=1, gap=2)
    np.testing.assert_array_equal(labels[10, 10:17], [1, 1, 0, 0, 0, 2, 2])
    # The training target of touching cells: every cell comes back in one piece.
    _, truth = touching_cells((128, 128), 25, seed=1)
    labels = to_instances(as_probabilities(separation_borders(truth) > 0), min_size=1)
    assert all(ndi.label(labels == i)[1] == 1 for i in range(1, labels.max() + 1))


@pytest.mark.parametrize(
    ("gap", "min_size", "tile"), [(2, 10, 37), (1, 1, 50), (3, 5, 23), (0, 10, 40), (3, 10, 4)]
)
def test_instances_in_tiles_equal_the_whole_plane(gap, min_size, tile):
    import dask.array as da

    from napari_unet.core.instances import instance_tiles
    from napari_unet.core.synthetic import touching_cells
    from napari_unet.core.weights import separation_borders

    rng = np.random.default_rng(gap)
    _, truth = touching_cells((150, 170), 40, seed=gap)
    cells = (separation_borders(truth) > 0).astype(np.float32)
    # Noisy, as a network draws them: gaps opened and closed, specks.
    probability = np.clip(cells + rng.normal(0, 0.3, cells.shape), 0, 1)
    probabilities = np.stack([1 - probability, probability])
    whole = to_instances(probabilities, min_size=min_size, gap=gap)
    tiled = np.full(whole.shape, -1, np.int32)
    source = da.from_array(probability, chunks=64)
    for window, labels in instance_tiles(source, min_size=min_size, gap=gap, tile=tile):
        assert (tiled[window] == -1).all()  # the tiles do not overlap
        tiled[window] = labels
    np.testing.assert_array_equal(tiled, whole)
    assert whole.max() > 10


def test_instances_in_bands_join_across_them():
    """Shapes whose parts meet only bands later, and cells kept by a size that no
    band holds alone, numbered as the whole plane would be."""
    from napari_unet.core.instances import instance_tiles

    plane = np.zeros((40, 30), bool)
    plane[2:38, 2:4] = plane[2:38, 8:10] = plane[36:38, 2:10] = True  # a U, arms first
    plane[5:6, 20:22] = True  # 2 pixels: dropped
    plane[3:9, 25] = True  # a line of 6 over three bands of 2 rows: kept at min_size 6
    plane[12:15, 12:15] = True  # after the U's arms began, before it closes
    probabilities = np.stack([1.0 - plane, plane])
    whole = to_instances(probabilities, min_size=6, gap=0)
    assert whole.max() == 3
    for tile in (2, 3, 7):
        tiled = np.zeros(whole.shape, np.int32)
        for window, labels in instance_tiles(
            plane.astype(np.float32), min_size=6, gap=0, tile=tile
        ):
            tiled[window] = labels
        np.testing.assert_array_equal(tiled, whole)
    bad = {"tile": 0}, {"gap": -1}, {"min_size": -1}
    for settings, message in zip(bad, ["tile must be", "gap must be", "min_size"], strict=True):
        with pytest.raises(ValueError, match=message):
            next(instance_tiles(plane.astype(np.float32), **settings))
        if "tile" not in settings:  # and the same of to_instances
            with pytest.raises(ValueError, match=message):
                to_instances(np.stack([1 - plane, plane]), **settings)
    nothing = list(instance_tiles(np.zeros((5, 5), np.float32), tile=2))
    assert sum(labels.size for _, labels in nothing) == 25
    assert all(labels.max() == 0 for _, labels in nothing)


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


def test_touching_pairs_counts_each_contact_once():
    labels = two_touching_disks()
    assert touching_pairs(labels) == 1
    assert cell_count(labels) == 2
    labels[0:5, 0:5] = 3  # apart from the others
    assert touching_pairs(labels) == 1 and cell_count(labels) == 3


def test_diagonal_contact_touches_and_a_gap_separates():
    labels = np.zeros((6, 6), np.uint16)
    labels[1, 1], labels[2, 2], labels[2, 0] = 1, 2, 3
    assert touching_pairs(labels) == 2  # 1-2 diagonal, 1-3 diagonal; 2 and 3 are apart
    labels[4, 4] = 4
    assert touching_pairs(labels) == 2
    assert touching_pairs(np.zeros((4, 4), np.int32)) == 0


def test_touching_pairs_per_slice_of_a_stack():
    plane = two_touching_disks()
    stack = np.stack([plane, np.where(plane == 2, 0, plane), plane])
    assert touching_pairs(stack) == 2
    assert cell_count(stack) == 5


def test_three_cells_around_a_point():
    labels = np.zeros((4, 4), np.int64)
    labels[:2, :2], labels[:2, 2:], labels[2:, :] = 1, 2, 3
    assert touching_pairs(labels) == 3


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 2, 2), int), np.zeros((4, 4), float)])
def test_counts_refuse_other_input(bad):
    with pytest.raises(ValueError, match="integer labels"):
        touching_pairs(bad)


def test_as_instances_reads_two_valued_planes_as_masks():
    mask = np.zeros((2, 10, 12), np.uint8)
    mask[0, 1:4, 1:4] = mask[0, 6:9, 6:9] = 255  # two cells of a 0 / 255 mask
    mask[1, 1:4, 1:4], mask[1, 6:9, 6:9], mask[1, 0, 11] = 3, 7, 9  # instances already
    out = as_instances(mask)
    assert sorted(np.unique(out[0])) == [0, 1, 2] and out[0, 2, 2] != out[0, 7, 7]
    np.testing.assert_array_equal(out[1], mask[1])
    mixed = np.zeros((2, 10, 12), np.uint64)
    mixed[0, 1:4, 1:4] = mixed[0, 6:9, 6:9] = 1  # every cell painted with label 1
    mixed[1, 1:4, 1:4], mixed[1, 6:9, 6:9], mixed[1, 0, 11] = 2**63, 5, 9
    out = as_instances(mixed)
    assert out.dtype == np.uint64 and out[1, 2, 2] == 2**63 and out[0, 7, 7] == 2
    full = np.full((4, 4), 3)
    full[:, 2:] = 5  # no background: the larger value is the cell
    assert np.array_equal(as_instances(full) > 0, full == 5)


def _pairs_by_shifts(plane) -> int:
    """Touching pairs counted the plain way: every 8-neighbour contact, sorted."""
    shifts = [
        (plane[:, :-1], plane[:, 1:]),
        (plane[:-1, :], plane[1:, :]),
        (plane[:-1, :-1], plane[1:, 1:]),
        (plane[:-1, 1:], plane[1:, :-1]),
    ]
    pairs = {
        (min(a, b), max(a, b))
        for x, y in shifts
        for a, b in zip(x.ravel().tolist(), y.ravel().tolist(), strict=True)
        if a != b and a != 0 and b != 0
    }
    return len(pairs)


@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint8, np.uint64])
def test_counts_equal_a_sort_of_every_pixel_and_contact(dtype):
    rng = np.random.default_rng(4)
    for _ in range(150):
        shape = tuple(int(n) for n in rng.integers(1, 12, rng.integers(2, 4)))
        labels = rng.integers(0, 5, shape)
        if dtype == np.uint64:  # ids near 2**64
            labels = np.where(labels > 0, np.uint64(2**64 - 10) + labels.astype(np.uint64), 0)
        elif np.issubdtype(dtype, np.signedinteger):
            labels = labels - (rng.random(shape) < 0.1)  # a few -1, counted as ids
        labels = labels.astype(dtype)
        planes = labels if labels.ndim == 3 else labels[None]
        assert cell_count(labels) == sum(np.count_nonzero(np.unique(p)) for p in planes)
        assert touching_pairs(labels) == sum(_pairs_by_shifts(p) for p in planes)


def test_counts_of_big_endian_labels():
    labels = np.zeros((6, 7), ">i4")
    labels[1:3, 1:3], labels[1:3, 3:5] = 1, 2
    assert cell_count(labels) == 2 and touching_pairs(labels) == 1
