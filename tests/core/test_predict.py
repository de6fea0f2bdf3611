import dask.array as da
import numpy as np
import pytest
import torch
import zarr

from napari_unet.core.model import UNet
from napari_unet.core.predict import choose_tile, predict_tiled, reflect_index


def whole_image(model, image):
    """One forward pass over the whole mirror-padded image (numpy ``reflect``)."""
    pad = model.halo
    widths = []
    for n in image.shape[-2:]:
        if model.cfg.padding == "valid":
            total = model.input_size(n)
        else:
            total = -(-(n + 2 * pad) // model.grid) * model.grid
        widths.append((pad, total - n - pad))
    lead = [(0, 0)] * (image.ndim - 2)
    x = np.pad(image, lead + widths, mode="reflect").astype(np.float32)
    x = torch.from_numpy(x.reshape(1, -1, *x.shape[-2:]))
    with torch.inference_mode():
        p = torch.softmax(model.eval()(x), 1)[0].numpy()
    off = 0 if model.cfg.padding == "valid" else pad
    return p[:, off : off + image.shape[-2], off : off + image.shape[-1]]


CASES = [(shape, tile) for shape in [(1, 1), (5, 3), (64, 64), (37, 90)] for tile in (None, 8, 40)]
CASES += [((301, 777), tile) for tile in (None, 40, 100)]


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize(("shape", "tile"), CASES)
def test_tiled_equals_whole_image(padding, shape, tile, rng):
    torch.manual_seed(0)
    model = UNet(width=4, depth=3, padding=padding)
    image = rng.random(shape, dtype=np.float32)
    tiled = predict_tiled(model, image, tile_size=tile)
    assert tiled.shape == (2, *shape) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole_image(model, image), atol=1e-5, rtol=0)


def test_paper_tile_size_rounds_to_the_grid():
    model = UNet(width=2)
    geom = choose_tile(model, (2000, 2000), torch.device("cpu"), 388)
    assert geom.in_size == (572, 572) and geom.stride == (384, 384)
    assert choose_tile(model, (2000, 2000), torch.device("cpu"), 390).stride == (384, 384)
    # never more than one tile for an image that fits in one
    assert choose_tile(model, (50, 70), torch.device("cpu"), 1000).stride == (64, 80)


def test_auto_tile_fits_the_budget(monkeypatch):
    from napari_unet.core import predict

    monkeypatch.setattr(predict, "memory_budget", lambda device: 256 * 1024**2)
    geom = choose_tile(UNet(width=64), (10_000, 10_000), torch.device("cpu"))
    pixels = geom.in_size[0] * geom.in_size[1]
    assert pixels * 32 * 64 <= 256 * 1024**2
    assert geom.stride[0] >= 64
    monkeypatch.setattr(predict, "memory_budget", lambda device: 64 * 1024**3)
    assert choose_tile(UNet(width=16), (10_000, 10_000), torch.device("cpu")).stride[0] == 512
    big = choose_tile(UNet(width=16), (10_000, 10_000), torch.device("cuda"))
    assert 2048 < big.stride[0] and big.in_size[0] ** 2 * 32 * 16 <= 64 * 1024**3


def test_reflect_index_matches_numpy():
    for n in (1, 2, 5):
        idx = reflect_index(np.arange(-13, n + 13), n)
        expected = np.pad(np.arange(n), 13, mode="reflect")
        np.testing.assert_array_equal(idx, expected)


def test_stack_is_predicted_slice_by_slice(small_valid, rng):
    stack = rng.random((3, 40, 50), dtype=np.float32)
    out = predict_tiled(small_valid, stack, tile_size=24)
    assert out.shape == (2, 3, 40, 50)
    for z in range(3):
        np.testing.assert_allclose(out[:, z], whole_image(small_valid, stack[z]), atol=1e-5)


def test_multichannel_input(rng):
    torch.manual_seed(0)
    model = UNet(in_channels=2, width=4, depth=2)
    image = rng.random((2, 30, 41), dtype=np.float32)
    np.testing.assert_allclose(
        predict_tiled(model, image, tile_size=12), whole_image(model, image), atol=1e-5
    )
    stack = rng.random((2, 2, 30, 41), dtype=np.float32)
    assert predict_tiled(model, stack).shape == (2, 2, 30, 41)


def test_dask_input_gives_an_equal_dask_result(small_valid, rng):
    stack = rng.random((2, 90, 70), dtype=np.float32)
    expected = predict_tiled(small_valid, stack, tile_size=24)
    lazy = predict_tiled(small_valid, da.from_array(stack, chunks=(1, 50, 50)), tile_size=24)
    assert isinstance(lazy, da.Array) and lazy.shape == expected.shape
    np.testing.assert_allclose(lazy.compute(), expected, atol=1e-6)
    out = np.zeros(expected.shape, np.float32)
    image = da.from_array(stack, chunks=(1, 50, 50))
    assert predict_tiled(small_valid, image, tile_size=24, out=out) is out
    np.testing.assert_allclose(out, expected, atol=1e-6)
    with pytest.raises(ValueError, match="out has shape"):
        predict_tiled(small_valid, image, out=np.zeros((5, 5), np.float32))
    for source in (image, stack):  # integers would cut every probability to 0 or 1
        with pytest.raises(ValueError, match="out must hold floats"):
            predict_tiled(small_valid, source, out=np.zeros(expected.shape, np.uint8))


def test_zarr_in_and_out(small_same, rng, tmp_path):
    image = rng.random((100, 120), dtype=np.float32)
    source = zarr.open(
        str(tmp_path / "in.zarr"), mode="w", shape=image.shape, chunks=(32, 32), dtype="float32"
    )
    source[:] = image
    out = zarr.open(
        str(tmp_path / "out.zarr"),
        mode="w",
        shape=(2, 100, 120),
        chunks=(1, 64, 64),
        dtype="float32",
    )
    predict_tiled(small_same, source, tile_size=32, out=out)
    np.testing.assert_allclose(out[:], predict_tiled(small_same, image), atol=1e-5)


def test_tta_averages_the_eight_symmetries(small_valid, rng):
    # For sizes of 4 mod 16 the transformed images share the tiles' pooling phase,
    # so test-time augmentation equals averaging 8 transformed predictions.
    image = rng.random((36, 52), dtype=np.float32)
    expected = 0
    for flip in (False, True):
        for k in range(4):
            x = np.rot90(image[:, ::-1] if flip else image, k)
            p = np.rot90(predict_tiled(small_valid, np.ascontiguousarray(x)), -k, (1, 2))
            expected = expected + (p[:, :, ::-1] if flip else p)
    tta = predict_tiled(small_valid, image, tta=True)
    np.testing.assert_allclose(tta, expected / 8, atol=1e-5)
    np.testing.assert_allclose(
        predict_tiled(small_valid, image, tile_size=8, tta=True), tta, atol=1e-5
    )


def test_progress_and_mode(small_valid, rng):
    calls = []
    small_valid.train()
    predict_tiled(
        small_valid,
        rng.random((2, 40, 40)),
        tile_size=16,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (18, 18) and len(calls) == 18
    assert small_valid.training  # restored


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.full((20, 20), np.nan, np.float32), "NaN"),
        (np.array([[0, np.inf], [1, 2]]), "infinite"),
        (np.zeros((0, 10)), "empty"),
        (np.zeros((2, 3, 10, 10)), "2D image .* one channel and one time point at a time"),
        (np.zeros(10), "2D image"),
        (np.zeros((10, 10), complex), "real numbers"),
        (np.zeros((20, 20, 3), np.uint8), "RGB"),
        # Predicted as stacks of 20 planes 1 or 2 pixels wide before.
        (np.zeros((20, 20, 1), np.uint8), r"1 channel\(s\) last"),
        (np.zeros((20, 20, 2), np.float32), r"2 channel\(s\) last"),
        (np.zeros((20, 20, 0)), "empty"),
    ],
)
def test_bad_input_is_refused(small_valid, image, match):
    with pytest.raises(ValueError, match=match):
        predict_tiled(small_valid, image)


def test_a_numpy_tile_size_is_taken(small_valid, rng):
    image = rng.random((40, 40), dtype=np.float32)
    np.testing.assert_array_equal(
        predict_tiled(small_valid, image, tile_size=np.array([16, 24])),
        predict_tiled(small_valid, image, tile_size=(16, 24)),
    )


@pytest.mark.parametrize("tile_size", [388.0, (0, 16), (16,), "388"])
def test_a_bad_tile_size_is_refused(small_valid, tile_size):
    with pytest.raises(ValueError, match="tile_size must be"):
        predict_tiled(small_valid, np.zeros((20, 20), np.float32), tile_size=tile_size)


def test_wrong_channels_is_refused(rng):
    model = UNet(in_channels=3, width=2, depth=2)
    with pytest.raises(ValueError, match="3 channels"):
        predict_tiled(model, rng.random((2, 20, 20)))
    with pytest.raises(ValueError, match="takes its 3 channels as one array, channels first"):
        predict_tiled(model, rng.random((20, 20)))  # one channel of them, as napari shows


def test_nan_in_dask_input_is_refused_at_compute(small_valid):
    image = np.zeros((40, 40), np.float32)
    image[30, 30] = np.nan
    lazy = predict_tiled(small_valid, da.from_array(image, chunks=20), tile_size=16)
    with pytest.raises(ValueError, match="NaN"):
        lazy.compute()


@pytest.mark.parametrize(
    "shape, chunks", [((2, 40, 44), (2, 16, 16)), ((2, 3, 40, 44), (2, 1, 40, 20))]
)
def test_multichannel_dask_input_equals_numpy(rng, shape, chunks):
    model = UNet(in_channels=2, width=4, depth=2).eval()
    image = rng.random(shape, dtype=np.float32)
    lazy = predict_tiled(model, da.from_array(image, chunks=chunks), tile_size=8)
    np.testing.assert_allclose(lazy.compute(), predict_tiled(model, image, tile_size=8), atol=1e-6)


def test_a_dask_graph_for_a_device_the_client_lacks_is_built_lazily(small_valid, rng, monkeypatch):
    import napari_unet.core.predict_dask as predict_dask

    def no_such_device(name):
        raise ValueError(f"{name} is not available")

    monkeypatch.setattr(predict_dask, "default_device", no_such_device)
    image = da.from_array(rng.random((40, 40), dtype=np.float32), chunks=20)
    for tile_size in (24, None):  # None: the tile the client's CPU would take
        lazy = predict_tiled(small_valid, image, tile_size=tile_size, device="cuda:1")
        assert lazy.shape == (2, 40, 40)  # no error yet
    with pytest.raises(ValueError, match="cuda:1 is not available"):
        lazy.compute()  # the tasks resolve it, where they run
