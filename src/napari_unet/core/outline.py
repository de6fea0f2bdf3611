"""The background pixels along the cells' outlines, which training gives no weight.

An outline traced or painted by hand is uncertain by a pixel. Weighted as
background, the pixel just outside it teaches the network to call borders a pixel
too thick, and a thick border costs twice: every border pixel inside a cell is
one false segment more for the Rand error. Where the background is wide (EM
membranes, the space between separate cells) that pixel is ignored; the gaps of
one or two pixels between touching cells, what separates them, keep their weight.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .windows import grow_window, window_within

# outline() at a pixel depends on the cells up to this many pixels away.
REACH = 2


def outline(cells: np.ndarray) -> np.ndarray:
    """The background pixels along the cells' outlines, where the background is wide.

    A background pixel is on the outline when it touches a cell and also touches
    background that touches no cell (8-neighbourhoods). Every pixel of a gap of one
    or two pixels between cells touches a cell, so such gaps have no outline.

    Parameters
    ----------
    cells : ndarray, bool, shape ``(Y, X)``
        The training target: cells (True) and background.

    Returns
    -------
    ndarray, bool, shape ``(Y, X)``
    """
    square = np.ones((3, 3), bool)
    background = ~cells
    # Outside the image counts as background far from cells.
    far = ndi.binary_erosion(background, square, border_value=1)
    near_far = ndi.binary_dilation(far, square)
    return background & ~far & near_far & ndi.binary_dilation(cells, square)


def outline_update(
    target: np.ndarray, window: tuple[slice, slice]
) -> tuple[tuple[slice, slice], np.ndarray]:
    """Where the outline can have changed after the cells changed inside ``window``,
    and the outline there.

    Parameters
    ----------
    target : ndarray, shape ``(Y, X)``
        The training target, cells nonzero (e.g. ``WeightMap.gapped``).
    window : (slice, slice)
        Rows and columns where the cells changed.

    Returns
    -------
    (slice, slice), ndarray of bool
        ``window`` grown by ``REACH`` and ``outline(target != 0)`` there, computed
        from that window and ``REACH`` pixels around it only.
    """
    grown = grow_window(window, REACH, target.shape)
    crop = grow_window(grown, REACH, target.shape)
    return grown, outline(target[crop] != 0)[window_within(grown, crop)]
