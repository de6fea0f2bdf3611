import numpy as np
import pytest
import torch

from napari_unet.core.model import UNet


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def small_valid():
    torch.manual_seed(0)
    return UNet(width=4, depth=3, padding="valid")


@pytest.fixture
def small_same():
    torch.manual_seed(0)
    return UNet(width=4, depth=3, padding="same")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
