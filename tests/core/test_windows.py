import numpy as np
import pytest

from napari_unet.core.windows import changed_box, changed_window, mask_window


@pytest.mark.parametrize("dtype", [np.int32, np.uint64, np.int8, np.uint16, ">i4", bool])
def test_changed_window_is_the_box_of_the_differences(dtype):
    # The arrays are compared byte for byte: a change in any byte of a pixel counts.
    rng = np.random.default_rng(1)
    size = np.dtype(dtype).itemsize
    for _ in range(400):
        shape = tuple(int(n) for n in rng.integers(1, 14, 2))
        old = rng.integers(0, 2, shape).astype(dtype)
        new = old.copy()
        for _ in range(rng.integers(0, 4)):  # none, one or a few pixels, anywhere
            y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
            new.view(np.uint8).reshape(*shape, size)[y, x, rng.integers(size)] ^= 1
        assert changed_window(old, new) == mask_window(old != new)


def test_changed_window_reads_views():
    old = np.zeros((3, 30, 40), np.int64)
    new = old.copy()
    new[1, 4, 9] = new[1, 20, 3] = 5
    assert changed_window(old[1], new[1]) == (slice(4, 21), slice(3, 10))
    assert changed_window(old[1, :, 1::2], new[1, :, 1::2]) == (slice(4, 21), slice(1, 5))
    assert changed_window(old[0], new[0]) is None


def test_changed_window_of_other_dtypes_byte_orders_and_empty_shapes():
    old = np.zeros((5, 6), np.uint8)
    new = old.astype(np.int16)
    new[2, 3] = -1
    assert changed_window(old, new) == (slice(2, 3), slice(3, 4))
    assert changed_window(old.astype(">i4"), new.astype(">i4")) == (slice(2, 3), slice(3, 4))
    assert changed_window(np.zeros((4, 0), np.int32), np.zeros((4, 0), np.int32)) is None
    with pytest.raises(ValueError, match="shapes"):
        changed_window(old, old[:3])


def test_changed_box_spans_every_changed_plane():
    rng = np.random.default_rng(2)
    for ndim in (2, 3, 4):
        for _ in range(100):
            shape = tuple(int(n) for n in rng.integers(1, 7, ndim))
            old = rng.integers(0, 3, shape).astype(np.int32)
            new = old.copy()
            for _ in range(rng.integers(0, 4)):
                new[tuple(rng.integers(0, n) for n in shape)] += 1
            changed = np.nonzero(old != new)
            want = tuple(slice(i.min(), i.max() + 1) for i in changed) if changed[0].size else None
            assert changed_box(old, new) == want
    with pytest.raises(ValueError, match="shapes"):
        changed_box(np.zeros(4), np.zeros(4))
