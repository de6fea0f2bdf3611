import numpy as np
import pytest


@pytest.fixture
def viewer_with_sample(make_napari_viewer):
    """A viewer with the plugin's sample open: layers "cells" and "cells labels"."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "touching_cells")
    return viewer


@pytest.fixture
def loss_weights():
    """``loss_weights(labels, w0, sigma, class_balance, ignore_outline=True,
    annotated=None)``: what the loss weighs each pixel with
    (``data.target_and_weights``), for a plane or a stack, with the labels read as
    ``data.make_pairs`` reads them (a two-valued plane is a mask of cells; without
    a region, a plane with no cell is not annotated)."""
    from napari_unet.core.data import Pair, target_and_weights
    from napari_unet.core.instances import as_instances

    def compute(labels, w0, sigma, class_balance, ignore_outline=True, annotated=None):
        labels = np.asarray(labels)
        planes = labels.reshape(-1, *labels.shape[-2:])
        if annotated is None:
            annotated = planes.any(axis=(1, 2))[:, None, None] & np.ones(planes.shape, bool)
        regions = annotated.reshape(planes.shape)
        weights = [
            target_and_weights(
                Pair(None, as_instances(plane), region), w0, sigma, class_balance, ignore_outline
            )[1]
            for plane, region in zip(planes, regions, strict=True)
        ]
        return np.stack(weights).reshape(labels.shape)

    return compute
