"""core.data.intensity_gap: images unlike those a model was trained on."""

import numpy as np

from napari_unet.core.data import intensity_gap
from napari_unet.core.model import UNet


def test_an_image_of_another_bit_depth_is_said_to_be_unlike_the_training_images(rng):
    model = UNet(width=2, depth=1, input_mean=(0.5,), input_std=(0.2,))  # trained on [0, 1]
    image = rng.random((300, 200), dtype=np.float32)
    assert intensity_gap(model, image, is_stack=False) == ""
    assert intensity_gap(model, image * 1.5 + 0.3, is_stack=False) == ""  # brighter: alike
    message = intensity_gap(model, (image * 255).astype(np.uint8), is_stack=False)
    assert "the image's intensities (mean 12" in message
    assert "trained on (mean 0.5, sd 0.2)" in message
    stack = np.stack([image, image * 255, image])  # its middle slice is read
    assert "(mean 127.4, sd 73.48)" in intensity_gap(model, stack, is_stack=True)


def test_an_image_in_zero_to_one_for_a_model_of_8_bit_images_is_unlike_them(rng):
    """Its mean lies 3 of their standard deviations from theirs: its spread tells."""
    model = UNet(width=2, depth=1, input_mean=(120.0,), input_std=(40.0,))
    image = rng.random((64, 64))
    assert "(mean 0.4" in intensity_gap(model, image, is_stack=False)
    assert intensity_gap(model, np.full((64, 64), 100.0), is_stack=False) == ""  # blank


def test_the_channel_unlike_its_training_is_named(rng):
    model = UNet(width=2, depth=1, in_channels=2, input_mean=(0.5, 100.0), input_std=(0.2, 30.0))
    image = np.stack([rng.random((64, 64)), 100 + 30 * rng.standard_normal((64, 64))])
    assert intensity_gap(model, image, is_stack=False) == ""
    image[1] *= 100  # as if saved at another scale
    message = intensity_gap(model, image, is_stack=False)
    assert "intensities in channel 1 (mean 10040, sd 3013)" in message


def test_nan_is_left_to_the_check_that_names_it():
    model = UNet(width=2, depth=1)
    assert intensity_gap(model, np.full((20, 20), np.nan), is_stack=False) == ""


def test_a_sparse_image_is_read_where_its_cells_are(rng):
    """Its middle alone, dim background, was 40 times less spread than the image."""
    image = 0.01 * rng.random((2048, 2048))
    image[:500, :500] = image[-500:, -500:] = 1.0  # cells in two corners only
    model = UNet(width=2, depth=1, input_mean=(image.mean(),), input_std=(image.std(),))
    assert intensity_gap(model, image, is_stack=False) == ""
