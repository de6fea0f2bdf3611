"""Checks that need CUDA; skipped elsewhere (see benchmarks/README.md for GPU runs)."""

import numpy as np
import pytest
import torch

from napari_unet.core.model import UNet
from napari_unet.core.predict import predict_tiled

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_cuda_tiles_equal_the_whole_image(padding, rng, monkeypatch):
    # TF32 rounds differently for different tile sizes: compare in full float32.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = UNet(width=8, padding=padding).cuda()
    image = rng.random((700, 900), dtype=np.float32)
    whole = predict_tiled(model, image, tile_size=2048)
    tiled = predict_tiled(model, image, tile_size=200)
    cpu = predict_tiled(model, image, tile_size=200, device="cpu")
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    np.testing.assert_allclose(tiled, cpu, atol=1e-4)


def test_a_model_on_the_gpu_is_not_copied_for_device_cuda(rng, monkeypatch):
    import copy

    copies = []
    deepcopy = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda x, *a: copies.append(x) or deepcopy(x, *a))
    model = UNet(width=4, depth=2).cuda()
    predict_tiled(model, rng.random((64, 64), dtype=np.float32), device="cuda")
    assert copies == []
