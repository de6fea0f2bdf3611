"""Sample data for ``napari --with napari-unet``: generated, nothing downloaded."""

from __future__ import annotations

from .core.synthetic import touching_cells


def touching_cells_sample() -> list[tuple]:
    """A 256x256 image of crowded, touching cells with their instance labels."""
    image, labels = touching_cells((256, 256), n_cells=40, seed=0)
    return [
        (image, {"name": "cells", "colormap": "gray"}, "image"),
        (labels, {"name": "cells labels", "opacity": 0.5}, "labels"),
    ]
