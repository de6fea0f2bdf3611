"""The command line's files: what it reads, and where it refuses to write."""

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from skimage import io

from napari_unet.cli import main
from napari_unet.cli_files import read_image
from napari_unet.core import checkpoint
from napari_unet.core.model import UNet
from napari_unet.core.synthetic import touching_cells


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    return checkpoint.save(tmp_path / "tiny.safetensors", UNet(width=4, depth=2))


@pytest.fixture
def cells(tmp_path):
    image, labels = touching_cells((80, 80), n_cells=10, seed=0)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    return tmp_path / "img.tif", tmp_path / "lab.tif"


def test_training_into_a_folder_it_cannot_make_stops_before_training(
    cells, tmp_path, refused, monkeypatch
):
    """Found after the last step before: the run was lost with a traceback."""
    from napari_unet.core.train import Trainer

    monkeypatch.setattr(Trainer, "run", lambda _: pytest.fail("trained"))
    image, labels = cells
    out = image / "model.safetensors"  # a folder inside a file
    err = refused(["train", "--images", image, "--labels", labels, "--out", out])
    assert f"--out: cannot write in {image} ({image} is a file)" in err, err


def test_predicting_into_a_folder_it_cannot_make_stops_before_predicting(
    model_file, cells, refused, monkeypatch
):
    import napari_unet.core.predict as predict

    monkeypatch.setattr(predict, "predict_tiled", lambda *a, **k: pytest.fail("predicted"))
    image, _ = cells
    err = refused(["predict", "--model", model_file, image, "--out", image / "results"])
    assert f"--out: cannot write in {image / 'results'} ({image} is a file)" in err, err


def test_a_plane_saved_with_one_channel_last_is_the_plane(model_file, tmp_path, rng):
    """(Y, X, 1) was predicted as Y planes one pixel wide."""
    plane = rng.random((30, 40), dtype=np.float32)
    tifffile.imwrite(tmp_path / "a.tif", plane)
    tifffile.imwrite(tmp_path / "b.tif", plane[..., None])
    run = ["predict", "--model", str(model_file), "--out", str(tmp_path / "out"), "--no-tta"]
    assert main([*run, str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]) == 0
    a, b = (tifffile.imread(tmp_path / "out" / f"{n}_probabilities.tif") for n in "ab")
    assert b.shape == (2, 30, 40)
    np.testing.assert_array_equal(a, b)


def test_palette_labels_are_read_as_their_indices(tmp_path):
    labels = np.zeros((20, 30), np.uint8)
    labels[2:8, 3:9], labels[10:15, 12:20] = 1, 7
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, *([0, 255, 0] * 254)])
    palette.save(tmp_path / "labels.png")
    np.testing.assert_array_equal(read_image(tmp_path / "labels.png", labels=True), labels)
    assert read_image(tmp_path / "labels.png").shape == (20, 30, 3)  # an image: its colours


def test_an_unreadable_tiff_is_named(model_file, tmp_path, refused):
    (tmp_path / "bad.tif").write_bytes(b"hello, not a TIFF")
    bad = tmp_path / "bad.tif"
    err = refused(["predict", "--model", model_file, bad, "--out", tmp_path])
    assert f"cannot read {tmp_path / 'bad.tif'} as a TIFF" in err, err


def test_evaluate_refuses_labels_that_are_not_integers(model_file, cells, tmp_path, refused):
    image, labels = cells
    io.imsave(tmp_path / "float.tif", tifffile.imread(labels).astype(np.float32))
    argv = ["evaluate", "--model", model_file, "--images", image, "--labels"]
    err = refused([*argv, tmp_path / "float.tif"])
    assert "must be integer labels or a mask; got float32" in err, err


def test_a_failed_zarr_prediction_leaves_no_half_written_result(model_file, tmp_path, refused):
    import zarr

    image = np.zeros((40, 40), np.float32)
    image[30, 30] = np.nan  # found in a tile, after the result was begun
    zarr.open(str(tmp_path / "nan.zarr"), mode="w", shape=image.shape, dtype="f4")[:] = image
    out = tmp_path / "out"
    argv = ["predict", "--model", model_file, tmp_path / "nan.zarr", "--out", out, "--tile", "16"]
    assert "NaN" in refused(argv)
    assert list(out.iterdir()) == []


def test_an_image_unlike_the_training_images_is_warned_of(tmp_path, rng, capsys):
    model = checkpoint.save(tmp_path / "m", UNet(width=4, depth=2, input_mean=(0.5,)))
    image = rng.random((30, 40), dtype=np.float32)
    tifffile.imwrite(tmp_path / "float.tif", image)
    tifffile.imwrite(tmp_path / "16bit.tif", (image * 65535).astype(np.uint16))
    run = ["predict", "--model", str(model), "--out", str(tmp_path / "out"), "--no-tta"]
    assert main([*run, str(tmp_path / "float.tif"), str(tmp_path / "16bit.tif")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "16bit.tif: warning: the image's intensities (mean 33560, sd 18780) lie far from those "
        "the model was trained on (mean 0.5, sd 1): give it images of the same kind (bit depth, "
        "scaling) as its training images, or the prediction is likely wrong"
    ]
