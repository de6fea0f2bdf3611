"""Generated images of touching cells with their instance labels.

Used for the sample data of the plugin and for tests: no download, any size,
reproducible from a seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def touching_cells(
    shape: tuple[int, int] = (256, 256),
    n_cells: int = 40,
    radius: tuple[float, float] = (9.0, 16.0),
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence-like image of crowded cells and their instance labels.

    Cells are ellipses dropped at random; later ones cover earlier ones, so many
    touch. Each cell has a bright interior and a dark rim where it meets another
    cell or the background, as membranes appear in a cell culture.

    Returns
    -------
    image : ndarray, float32, shape ``shape``, values about 0..1
    labels : ndarray, int32, shape ``shape``; 0 background, 1..n consecutive cells
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    for i in range(1, n_cells + 1):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry, rx = rng.uniform(*radius, size=2)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = dy * np.cos(angle) + dx * np.sin(angle)
        v = -dy * np.sin(angle) + dx * np.cos(angle)
        labels[(u / ry) ** 2 + (v / rx) ** 2 <= 1] = i
    ids = np.unique(labels)
    lut = np.zeros(labels.max() + 1, np.int32)
    lut[ids] = np.arange(len(ids), dtype=np.int32)
    labels = lut[labels]
    brightness = rng.uniform(0.5, 0.9, labels.max() + 1).astype(np.float32)
    brightness[0] = 0.1
    image = brightness[labels]
    rim = ndi.grey_dilation(labels, size=3) != ndi.grey_erosion(labels, size=3)
    image[rim & (labels > 0)] = 0.15
    image = ndi.gaussian_filter(image, 1.0) + rng.normal(0, 0.04, shape).astype(np.float32)
    return image.astype(np.float32), labels
