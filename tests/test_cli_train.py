"""``napari-unet train --resume``: a stopped run continued; ``--init`` keeps its network."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.core import checkpoint
from napari_unet.core.model import UNet
from napari_unet.core.synthetic import touching_cells

SMALL = ["--tile", "36", "--batch", "1", "--width", "4", "--depth", "2", "--device", "cpu"]


@pytest.fixture
def files(tmp_path, monkeypatch) -> list[str]:
    monkeypatch.chdir(tmp_path)
    image, labels = touching_cells((80, 80), n_cells=10, seed=0)
    tifffile.imwrite("img.tif", image)
    tifffile.imwrite("lab.tif", labels)
    return ["train", "--images", "img.tif", "--labels", "lab.tif"]


def test_a_run_resumed_goes_on_from_its_step_and_optimizer(files, capsys):
    assert main([*files, *SMALL, "--steps", "3", "--checkpoint-every", "2", "--out", "first"]) == 0
    _, first = checkpoint.load("first")
    assert main([*files, "--resume", "first", "--steps", "5", "--out", "second"]) == 0
    assert "resuming first at step 3" in capsys.readouterr().out
    _, second = checkpoint.load("second")
    assert second["step"] == 5 and second["seconds"] > first["seconds"]
    # Its own settings, --checkpoint-every too; where it trains and saves, as this
    # command says.
    assert second["training"] == {
        **first["training"],
        "steps": 5,
        "device": "auto",
        "out": "second",
    }
    moments = checkpoint.load_optimizer_state("second")["state"]
    assert all(int(state["step"]) == 5 for state in moments.values())  # Adam's, not 2


def test_a_run_resumed_keeps_its_budget_unless_given_more(files, refused):
    assert main([*files, *SMALL, "--steps", "2", "--out", "m"]) == 0
    err = refused([*files, "--resume", "m", "--out", "m"])
    assert "has trained 2 steps in" in err and "its whole budget of 2 steps" in err, err


def test_a_run_on_a_time_budget_resumed_goes_on_to_its_end_or_a_new_one(files, refused):
    assert main([*files, *SMALL, "--minutes", "0.01", "--out", "m"]) == 0
    _, first = checkpoint.load("m")
    assert first["training"]["minutes"] == 0.01 and first["seconds"] > 0.6
    err = refused([*files, "--resume", "m", "--out", "m"])
    assert "its whole budget of 0.01 minutes" in err, err
    assert main([*files, "--resume", "m", "--minutes", "0.02", "--out", "m"]) == 0
    _, second = checkpoint.load("m")
    assert second["training"]["minutes"] == 0.02 and second["seconds"] > 1.2
    assert second["step"] > first["step"]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["--w0", "5"], "with its own settings; to train on with other ones (--w0)"),
        (["--preset", "paper"], "(--preset)"),
        (["--seed", "3"], "(--seed)"),
        (["--no-class-balance", "--lr", "1"], "(--class-balance, --lr)"),
        (["--width", "8"], "--width shape a new network; --resume keeps that of m"),
    ],
)
def test_a_run_resumed_refuses_other_settings(files, refused, given, message):
    assert main([*files, *SMALL, "--steps", "1", "--out", "m"]) == 0
    err = refused([*files, "--resume", "m", "--steps", "3", "--out", "m", *given])
    assert message in err, err


def test_a_model_saved_without_its_run_cannot_be_resumed(files, refused):
    checkpoint.save("alone", UNet(width=4, depth=2))
    err = refused([*files, "--resume", "alone", "--out", "new/m"])
    assert "holds a model but no training run to resume: fine-tune it with --init" in err
    assert not Path("new").exists()  # a refused run makes no folder for its model


def test_a_zarr_array_stored_channels_last_is_refused_for_training_as_for_prediction(
    files, refused
):
    """Training moved its channels first, prediction did not: a model trained on it
    could not predict it."""
    import zarr

    zarr.open("rgb.zarr", mode="w", shape=(80, 80, 3), dtype="f4")[:] = 0.5
    argv = [*files, *SMALL, "--channels", "3", "--steps", "1", "--out", "m"]
    argv[argv.index("img.tif")] = "rgb.zarr"
    err = refused(argv)
    assert "image of shape (80, 80, 3) and labels of shape (80, 80) do not match" in err, err


def test_fine_tuning_keeps_the_network_it_starts_from(files, refused):
    """--width and the like were ignored with --init."""
    torch.manual_seed(0)
    checkpoint.save("start", UNet(width=4, depth=2))
    err = refused([*files, "--init", "start", "--depth", "3", "--out", "m"])
    assert "--depth shape a new network; --init keeps that of start" in err, err
    assert main([*files, "--init", "start", "--tile", "36", "--steps", "1", "--out", "m"]) == 0
    assert checkpoint.load("m")[0].cfg == UNet(width=4, depth=2).cfg


def test_a_validation_share_too_small_to_hold_out_is_said(files, capsys):
    assert main([*files, *SMALL, "--steps", "1", "--val-fraction", "0.2", "--out", "m"]) == 0
    assert "--val-fraction 0.2: nothing held out, as there are fewer than 5" in (
        capsys.readouterr().out
    )


def test_several_channels_train_and_predict(files, rng):
    """Only one-channel networks could be trained here; RGB files were refused."""
    from skimage import io

    image = tifffile.imread("img.tif")
    two = np.stack([image, rng.random(image.shape, dtype=np.float32)])
    tifffile.imwrite("two.tif", two)  # channels first
    rgb = (np.stack([image] * 3, -1) * 255 / image.max()).astype(np.uint8)
    io.imsave("rgb.png", rgb)  # channels last, as colour files hold them
    run = ["--tile", "36", "--batch", "1", "--width", "4", "--depth", "2", "--steps", "1"]
    for name, channels in (("two.tif", 2), ("rgb.png", 3)):
        argv = [*files, *run, "--channels", str(channels), "--out", "m"]
        argv[argv.index("img.tif")] = name
        assert main(argv) == 0
        assert checkpoint.load("m")[0].in_channels == channels
        assert main(["predict", "--model", "m", name, "--out", "out", "--no-tta"]) == 0
        stem = name.split(".")[0]
        assert tifffile.imread(f"out/{stem}_probabilities.tif").shape == (2, 80, 80)
