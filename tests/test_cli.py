import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from skimage import io

from napari_unet.cli import main, output_stem
from napari_unet.core import checkpoint
from napari_unet.core.instances import to_instances
from napari_unet.core.model import UNet
from napari_unet.core.predict import predict_tiled


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    return checkpoint.save(tmp_path / "tiny.safetensors", UNet(width=4, depth=2))


@pytest.fixture
def cell_files(tmp_path) -> list[str]:
    """``--images IMG --labels LAB`` of one generated image of touching cells."""
    from napari_unet.core.synthetic import touching_cells

    image, labels = touching_cells((80, 80), n_cells=10, seed=0)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    return ["--images", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lab.tif")]


def test_help():
    for argv in (["--help"], ["predict", "--help"], ["train", "--help"], ["evaluate", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "napari_unet.cli", *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0
        assert "usage: napari-unet" in result.stdout


@pytest.mark.parametrize(
    ("flags", "tta"), [([], True), (["--no-tta"], False), (["--tile", "0"], True)]
)
def test_predict_tiff_and_png(model_file, tmp_path, rng, flags, tta):
    tif = tmp_path / "a.tif"
    png = tmp_path / "b.png"
    image = rng.random((40, 56), dtype=np.float32)
    tifffile.imwrite(tif, image)
    io.imsave(png, (image * 255).astype(np.uint8))
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--model",
                str(model_file),
                str(tif),
                str(png),
                "--out",
                str(out),
                "--tile",
                "16",
                "--device",
                "cpu",
                *flags,
            ]
        )
        == 0
    )
    probs = tifffile.imread(out / "a_probabilities.tif")
    model, _ = checkpoint.load(model_file)
    np.testing.assert_allclose(probs, predict_tiled(model, image, tta=tta), atol=1e-6)
    assert tifffile.imread(out / "a_labels.tif").shape == (40, 56)
    assert tifffile.imread(out / "b_labels.tif").shape == (40, 56)


def test_predict_says_which_earlier_results_it_replaces(model_file, tmp_path, rng, capsys):
    tifffile.imwrite(tmp_path / "a.tif", rng.random((20, 24), dtype=np.float32))
    run = ["predict", "--model", str(model_file), str(tmp_path / "a.tif"), "--no-tta"]
    run += ["--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(run) == 0
    assert "replacing" not in capsys.readouterr().out
    assert main(run) == 0
    assert "(replacing the earlier a_labels.tif, a_probabilities.tif)" in capsys.readouterr().out


def test_predict_shows_tiles_done_of_all(model_file, tmp_path, rng, capsys):
    tifffile.imwrite(tmp_path / "a.tif", rng.random((40, 56), dtype=np.float32))
    run = ["predict", "--model", str(model_file), str(tmp_path / "a.tif"), "--no-tta"]
    assert main([*run, "--tile", "16", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    bar = capsys.readouterr().err
    assert re.search(r"a\.tif: 100%.* 12/12 ", bar)
    assert not re.search(r": \d+tile ", bar)  # "a.tif: 0tile [...]": no total yet


def test_the_tile_bar_keeps_its_total_when_smaller_tiles_are_tried(
    model_file, tmp_path, rng, capsys, monkeypatch
):
    from napari_unet.core import predict as predict_module

    real, calls = predict_module.predict_region, []

    def out_of_memory_after_one_tile(*args, **kwargs):
        calls.append(1)
        tiles = real(*args, **kwargs)
        yield next(tiles)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield from tiles

    monkeypatch.setattr(predict_module, "predict_region", out_of_memory_after_one_tile)
    tifffile.imwrite(tmp_path / "a.tif", rng.random((64, 64), dtype=np.float32))
    run = ["predict", "--model", str(model_file), str(tmp_path / "a.tif"), "--no-tta"]
    with pytest.warns(RuntimeWarning, match="retrying with"):
        assert main([*run, "--tile", "32", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert len(calls) > 1 and re.search(r"a\.tif: 100%.* (\d+)/\1 ", last), last


def test_predict_keeps_dotted_names_apart_and_refuses_clashes(model_file, tmp_path, rng):
    for name in ("well.A1.tif", "well.B2.tif", "c.ome.tif"):
        tifffile.imwrite(tmp_path / name, rng.random((20, 24), dtype=np.float32))
    out = tmp_path / "out"
    paths = [str(tmp_path / n) for n in ("well.A1.tif", "well.B2.tif", "c.ome.tif")]
    run = ["predict", "--model", str(model_file), "--out", str(out), "--device", "cpu"]
    assert main([*run, *paths, "--no-tta"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        f"{stem}_{kind}.tif"
        for stem in ("c", "well.A1", "well.B2")
        for kind in ("labels", "probabilities")
    ]
    (tmp_path / "again").mkdir()
    tifffile.imwrite(tmp_path / "again" / "c.tif", rng.random((20, 24), dtype=np.float32))
    with pytest.raises(SystemExit) as exit_info:
        main([*run, paths[2], str(tmp_path / "again" / "c.tif")])
    assert exit_info.value.code == 2


def test_evaluate_scores_each_slice_of_a_stack(model_file, tmp_path, rng, capsys):
    from napari_unet.core.synthetic import touching_cells

    pairs = [touching_cells((40, 40), n_cells=5, seed=s) for s in (0, 1)]
    for k, (image, labels) in enumerate(pairs):
        tifffile.imwrite(tmp_path / f"img{k}.tif", image)
        tifffile.imwrite(tmp_path / f"lab{k}.tif", labels)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([p[0] for p in pairs]))
    tifffile.imwrite(tmp_path / "labels.tif", np.stack([p[1] for p in pairs]))
    run = ["evaluate", "--model", str(model_file), "--no-tta", "--device", "cpu"]
    images = [str(tmp_path / f"img{k}.tif") for k in (0, 1)]
    labels = [str(tmp_path / f"lab{k}.tif") for k in (0, 1)]
    assert main([*run, "--images", *images, "--labels", *labels]) == 0
    separate = capsys.readouterr().out
    stack = [str(tmp_path / "stack.tif"), "--labels", str(tmp_path / "labels.tif")]
    assert main([*run, "--images", *stack]) == 0
    assert capsys.readouterr().out == separate and "adapted Rand error" in separate

    tifffile.imwrite(tmp_path / "labels.tif", np.stack([pairs[0][1], 0 * pairs[1][1]]))
    assert main([*run, "--images", *stack]) == 0
    assert "1 of 2 slices hold no cell" in capsys.readouterr().out
    tifffile.imwrite(tmp_path / "labels.tif", np.zeros((2, 40, 40), np.uint8))
    with pytest.raises(SystemExit):
        main([*run, "--images", *stack])
    assert "the labels hold no cell" in capsys.readouterr().err


def test_arrays_in_zarr_groups_are_named_after_the_group_and_inputs_are_never_overwritten(
    model_file, tmp_path, rng, monkeypatch
):
    assert output_stem(Path("plate/a.ome.zarr/0")) == "a_0"
    assert output_stem(Path("b.zarr/images/1")) == "b_images_1"
    monkeypatch.chdir(tmp_path)
    zarr.open("img.zarr", mode="w", shape=(20, 24), dtype="float32")[:] = rng.random((20, 24))
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", str(model_file), "img.zarr", "--out", "."])
    assert exit_info.value.code == 2
    assert zarr.open("img.zarr", mode="r").shape == (20, 24)  # the input is untouched


def test_a_grey_and_alpha_png_is_read_as_grey(model_file, tmp_path, rng):
    grey = (rng.random((30, 40)) * 255).astype(np.uint8)
    io.imsave(tmp_path / "la.png", np.stack([grey, np.full_like(grey, 255)], -1))
    run = ["predict", "--model", str(model_file), "--out", str(tmp_path / "out"), "--no-tta"]
    assert main([*run, str(tmp_path / "la.png")]) == 0
    probabilities = tifffile.imread(tmp_path / "out" / "la_probabilities.tif")
    model, _ = checkpoint.load(model_file)
    np.testing.assert_allclose(probabilities, predict_tiled(model, grey), atol=1e-6)


def test_zarr_input_gives_zarr_output(model_file, tmp_path, rng):
    stack = rng.random((2, 30, 40), dtype=np.float32)
    source = zarr.open(
        str(tmp_path / "s.zarr"), mode="w", shape=stack.shape, chunks=(1, 30, 40), dtype="float32"
    )
    source[:] = stack
    assert (
        main(
            [
                "predict",
                "--model",
                str(model_file),
                str(tmp_path / "s.zarr"),
                "--out",
                str(tmp_path / "out"),
                "--tta",
            ]
        )
        == 0
    )
    result = zarr.open(str(tmp_path / "out" / "s.zarr"), mode="r")
    assert result["probabilities"].shape == (2, 2, 30, 40)
    # The labels of a TIFF stack: ids run on from slice to slice.
    expected = to_instances(result["probabilities"][:])
    assert expected[1][expected[1] > 0].min() > expected[0].max() > 0
    np.testing.assert_array_equal(result["labels"][:], expected)


def test_bad_model_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x80\x04not a model")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", str(bad), str(tmp_path / "x.tif"), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "pickle" in capsys.readouterr().err


def test_rgb_image_is_a_clear_error(model_file, tmp_path, capsys):
    rgb = tmp_path / "rgb.png"
    io.imsave(rgb, np.zeros((20, 20, 3), np.uint8), check_contrast=False)
    with pytest.raises(SystemExit):
        main(["predict", "--model", str(model_file), str(rgb), "--out", str(tmp_path)])
    assert "RGB" in capsys.readouterr().err


def test_train_then_evaluate(tmp_path, capsys):
    from napari_unet.core.synthetic import touching_cells

    image, labels = touching_cells((80, 80), n_cells=10, seed=0)
    tifffile.imwrite(tmp_path / "img.tif", image)
    io.imsave(
        tmp_path / "mask.png", np.where(labels > 0, 255, 0).astype(np.uint8), check_contrast=False
    )
    model = tmp_path / "m.safetensors"
    train = [
        "train",
        "--images",
        str(tmp_path / "img.tif"),
        "--labels",
        str(tmp_path / "mask.png"),
        "--tile",
        "36",
        "--batch",
        "1",
    ]
    small = ["--width", "4", "--depth", "2", "--validate-every", "2"]
    validation = [
        "--val-images",
        str(tmp_path / "img.tif"),
        "--val-labels",
        str(tmp_path / "mask.png"),
    ]
    assert main([*train, "--out", str(model), "--steps", "3", *small, *validation]) == 0
    printed = capsys.readouterr()
    assert printed.out.count("validation loss") == 2  # at step 2 and at the end
    loaded, config = checkpoint.load(model)
    assert config["step"] == 3 and loaded.cfg.width == 4
    assert (
        main([*train, "--out", str(tmp_path / "tuned"), "--steps", "2", "--init", str(model)]) == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model),
                "--images",
                str(tmp_path / "img.tif"),
                "--labels",
                str(tmp_path / "mask.png"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "threshold 0.5: pixel error" in out and "adapted Rand error" in out


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_training_and_keeps_the_model(tmp_path, cell_files, stop):
    files = cell_files
    small = ["--tile", "36", "--batch", "1", "--width", "4", "--depth", "2", "--device", "cpu"]
    cli = [sys.executable, "-m", "napari_unet.cli"]
    train = subprocess.Popen(
        [*cli, "train", *files, *small, "--out", str(tmp_path / "m"), "--minutes", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen = b""
    deadline = time.monotonic() + 120
    while b"loss=" not in seen and time.monotonic() < deadline:  # the bar shows steps
        if train.poll() is not None:
            break
        seen += train.stderr.read1(4096)
    train.send_signal(stop)
    out, err = train.communicate(timeout=60)
    assert train.returncode == 0, (seen + err).decode()[-2000:]
    assert b"stopping after this step" in out
    assert checkpoint.load(tmp_path / "m.safetensors")[1]["step"] >= 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--threshold", "1.5"], "must be at least 0 and below 1"),
        (["--min-size", "-5"], "must be 0 or more"),
        (["--tile", "-16"], "must be 0 or more"),
        (["--out", "taken"], "is a file: give a folder"),
        (["--device", "nonsense"], "'nonsense' is not a device"),
    ],
)
def test_bad_prediction_options_are_clear_errors(
    model_file, tmp_path, capsys, monkeypatch, change, message
):
    monkeypatch.chdir(tmp_path)
    tifffile.imwrite("img.tif", np.zeros((30, 30), np.float32))
    Path("taken").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", str(model_file), "img.tif", "--out", "results", *change])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not Path("results").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--steps", "0"], "must be at least 1"),
        (["--val-fraction", "0.7"], "between 0 and 0.5"),
        (["--images", "bad.png"], "cannot read"),
        (["--keep-best"], "keep_best needs a validation set"),
        (["--out", "."], "is a folder: give the model file"),
        (["--device", "nonsense"], "'nonsense' is not a device"),
        (["--checkpoint-every", "-1"], "must be 0 or more"),
    ],
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # imageio trying its plugins
def test_bad_training_options_are_clear_errors(tmp_path, capsys, monkeypatch, change, message):
    monkeypatch.chdir(tmp_path)
    tifffile.imwrite("img.tif", np.zeros((30, 30), np.float32))
    tifffile.imwrite("lab.tif", np.ones((30, 30), np.int32))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    run = ["train", "--images", "img.tif", "--labels", "lab.tif", "--out", "m", *change]
    with pytest.raises(SystemExit) as exit_info:
        main(run)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_checkpoints_every_so_many_steps(tmp_path, cell_files, monkeypatch):
    from napari_unet.core.train import Trainer

    saved = []
    save = Trainer.save
    monkeypatch.setattr(Trainer, "save", lambda t: saved.append(t.step) or save(t))
    small = ["--tile", "36", "--batch", "1", "--width", "4", "--depth", "2", "--steps", "4"]
    argv = ["train", *cell_files, *small, "--out", str(tmp_path / "m"), "--checkpoint-every", "2"]
    assert main(argv) == 0
    assert saved == [2, 4, 4]  # and once more at the end


def test_the_default_tile_is_lowered_to_fit_small_images(tmp_path, cell_files, capsys):
    # As the Train dock does: 256 output pixels would not fit the 80-pixel images.
    small = ["--batch", "1", "--width", "4", "--depth", "2", "--steps", "1"]
    assert main(["train", *cell_files, *small, "--out", str(tmp_path / "m")]) == 0
    assert (
        "tile lowered to 80 pixels, the largest the training images fit" in capsys.readouterr().out
    )
    _, config = checkpoint.load(tmp_path / "m.safetensors")
    assert config["training"]["tile"] == 80


def test_train_runs_from_another_thread(tmp_path, cell_files):
    files = cell_files
    small = ["--tile", "36", "--batch", "1", "--width", "4", "--depth", "2", "--steps", "1"]
    argv = ["train", *files, *small, "--out", str(tmp_path / "m")]
    returned = []
    worker = threading.Thread(target=lambda: returned.append(main(argv)))
    worker.start()
    worker.join(timeout=120)
    assert returned == [0] and (tmp_path / "m.safetensors").exists()


def refused_training(tmp_path, capsys, labels: np.ndarray) -> str:
    """What ``train`` says, refusing a 30x30 image with ``labels``."""
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((30, 30), np.float32))
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    image, label_file, out = (str(tmp_path / name) for name in ("img.tif", "lab.tif", "m"))
    with pytest.raises(SystemExit):
        main(["train", "--images", image, "--labels", label_file, "--out", out])
    return capsys.readouterr().err


def test_train_with_mismatched_labels_is_a_clear_error(tmp_path, capsys):
    assert "do not match" in refused_training(tmp_path, capsys, np.ones((30, 31), np.int32))


def test_bad_labels_name_the_labels_file(tmp_path, capsys):
    err = refused_training(tmp_path, capsys, np.ones((30, 30), np.float32))  # as Fiji saves
    assert "'img.tif / lab.tif': labels must be integers" in err, err


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_train_defaults_are_the_trainer_defaults(preset):
    """The command line repeats TrainConfig's defaults (it does not import torch to
    build --help); this keeps the two from drifting apart."""
    from napari_unet.cli_args import build_parser, preset_in
    from napari_unet.core.config import TrainConfig

    argv = ["train", "--images", "i", "--labels", "l", "--out", "o", "--preset", preset]
    args = build_parser(preset_in(argv)).parse_args(argv)
    config = TrainConfig.paper() if preset == "paper" else TrainConfig()
    pairs = {
        "tile": "tile",
        "batch": "batch_size",
        "lr": "lr",
        "optimizer": "optimizer",
        "schedule": "schedule",
        "w0": "w0",
        "sigma": "sigma",
        "class_balance": "class_balance",
        "ignore_outline": "ignore_outline",
        "seed": "seed",
        "device": "device",
        "validate_every": "validate_every",
        "keep_best": "keep_best",
    }
    for option, setting in pairs.items():
        assert getattr(args, option) == getattr(config, setting), option
    network = UNet(depth=args.depth, width=args.width, padding=args.padding, norm=args.norm)
    if preset == "paper":  # the paper's network is UNet()'s defaults
        assert network.cfg == UNet().cfg
    assert build_parser().parse_args([*argv, "--keep-best"]).keep_best


def test_the_paper_preset_trains_with_the_papers_settings(tmp_path, cell_files):
    from napari_unet.core.config import TrainConfig

    small = ["--tile", "36", "--width", "4", "--depth", "2", "--steps", "1"]
    argv = ["train", *cell_files, *small, "--preset", "paper", "--out", str(tmp_path / "m")]
    assert main(argv) == 0
    model, saved = checkpoint.load(tmp_path / "m.safetensors")
    assert (model.cfg.padding, model.cfg.norm, model.cfg.dropout) == ("valid", "none", 0.5)
    expected = TrainConfig.paper(steps=1, tile=36, preview_every=0, out=str(tmp_path / "m"))
    assert TrainConfig.from_dict(saved["training"]) == expected


def test_predict_and_evaluate_average_the_symmetries_unless_told_not_to():
    from napari_unet.cli import build_parser

    parser = build_parser()
    predict = ["predict", "i.tif", "--model", "m", "--out", "o"]
    evaluate = ["evaluate", "--model", "m", "--images", "i", "--labels", "l"]
    for argv in (predict, evaluate):
        assert parser.parse_args(argv).tta
        assert not parser.parse_args([*argv, "--no-tta"]).tta
