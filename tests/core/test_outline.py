import numpy as np
import pytest

from napari_unet.core.outline import REACH, outline, outline_update
from napari_unet.core.synthetic import touching_cells
from napari_unet.core.weights import separation_borders


def test_outline_of_a_cell_in_wide_background_is_the_ring_around_it():
    cells = np.zeros((12, 12), bool)
    cells[4:8, 4:8] = True
    ring = np.zeros_like(cells)
    ring[3:9, 3:9] = True
    ring[4:8, 4:8] = False
    assert np.array_equal(outline(cells), ring)


def test_no_cells_no_outline():
    assert not outline(np.zeros((8, 8), bool)).any()


@pytest.mark.parametrize(
    "window",
    [
        (slice(None), slice(None)),
        (slice(0, 3), slice(0, 3)),
        (slice(40, 47), slice(100, 131)),
        (slice(117, 120), slice(150, 160)),
    ],
)
def test_outline_update_equals_the_whole_outline(window):
    _, labels = touching_cells((120, 160), n_cells=25, seed=3)
    target = separation_borders(labels)
    before = outline(target != 0)
    edited = target.copy()
    edited[window] = 0  # erase, then paint a cell across the window's middle
    rows, cols = (range(*s.indices(n)) for s, n in zip(window, target.shape, strict=True))
    edited[rows[len(rows) // 2], cols.start : cols.stop] = 99
    grown, values = outline_update(edited, window)
    after = outline(edited != 0)
    assert np.array_equal(values, after[grown])
    outside = np.ones(target.shape, bool)
    outside[grown] = False
    assert np.array_equal(before[outside], after[outside])  # nothing changed further away
    expected = [
        slice(max(0, r.start - REACH), min(n, r.stop + REACH))
        for r, n in zip((rows, cols), target.shape, strict=True)
    ]
    assert list(grown) == expected
