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
    (``data.target_and_weights``), for a plane or a stack."""
    from napari_unet.core.data import Pair, target_and_weights

    def compute(labels, w0, sigma, class_balance, ignore_outline=True, annotated=None):
        labels = np.asarray(labels)
        planes = labels.reshape(-1, *labels.shape[-2:])
        regions = np.ones(planes.shape, bool) if annotated is None else annotated
        regions = regions.reshape(planes.shape)
        weights = [
            target_and_weights(
                Pair(None, plane, region), w0, sigma, class_balance, ignore_outline
            )[1]
            for plane, region in zip(planes, regions, strict=True)
        ]
        return np.stack(weights).reshape(labels.shape)

    return compute
