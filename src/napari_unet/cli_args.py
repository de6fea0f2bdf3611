"""The command line's arguments, apart from what they run (:mod:`.cli`), so that
``--help`` answers without importing torch."""

from __future__ import annotations

import argparse
from pathlib import Path

# The defaults of napari-unet train. "default" repeats TrainConfig's and the network
# eval_isbi.py measures (tests keep them equal); "paper" is Ronneberger et al.
# (2015): UNet()'s defaults and TrainConfig.paper().
_SHARED = {"sigma": 5.0, "depth": 4, "channels": 1}
PRESETS = {
    "default": {
        **_SHARED,
        "w0": 3.0,
        "tile": 256,
        "batch": 4,
        "lr": 1e-3,
        "optimizer": "adam",
        "schedule": "cosine",
        "width": 16,
        "padding": "same",
        "norm": "batch",
        "class_balance": False,
        "ignore_outline": True,
    },
    "paper": {
        **_SHARED,
        "w0": 10.0,
        "tile": 388,
        "batch": 1,
        "lr": 0.01,
        "optimizer": "sgd",
        "schedule": "constant",
        "width": 64,
        "padding": "valid",
        "norm": "none",
        "class_balance": True,
        "ignore_outline": False,
    },
}


# The defaults of how a run reports and saves, and its seed: a run resumed keeps its
# own unless they are given again (the seed cannot change).
RUN = {"validate_every": 200, "checkpoint_every": 0, "keep_best": False, "seed": 0}


def preset_in(argv: list[str]) -> str:
    """The ``--preset`` that ``argv`` names, "default" without one."""
    pre = argparse.ArgumentParser(prog="napari-unet train", add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="default")
    return pre.parse_known_args(argv)[0].preset


def given_settings(argv: list[str]) -> set[str]:
    """The settings of ``train`` with a preset or run default that ``argv`` gives
    explicitly, ``preset`` among them (parsed again without defaults)."""
    args = build_parser(preset_in(argv), defaults=False).parse_args(argv)
    return set(vars(args)) & {"preset", *PRESETS["default"], *RUN}


def add_tta_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="average the probabilities over the 8 flips and rotations of each tile, as "
        "the paper did for ISBI 2012: fewer merged and broken cells, 8x slower "
        "(on by default; --no-tta for speed on large data)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more; got {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1; got {value}")
    return value


def build_parser(preset: str = "default", defaults: bool = True) -> argparse.ArgumentParser:
    """The command line's parser; ``train``'s settings default to ``PRESETS[preset]``,
    or, without ``defaults``, are left out of the result unless given."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="napari-unet", description="U-Net segmentation without a screen."
    )
    parser.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict",
        help="segment images with a trained model",
        description="Exact overlap-tile prediction; writes <name>_labels.tif and "
        "<name>_probabilities.tif (classes first: background, then cells), or "
        "<name>.zarr for large or zarr inputs, replacing earlier results of those names.",
    )
    predict.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="TIFF, PNG, zarr array or any image scikit-image reads",
    )
    predict.add_argument("--model", required=True, type=Path, help="a .safetensors model file")
    predict.add_argument(
        "--out",
        required=True,
        type=Path,
        help="folder for the results (made if missing); earlier results there of the same "
        "names are replaced, and said so",
    )
    add_tta_flag(predict)
    predict.add_argument(
        "--tile",
        type=_count,
        default=0,
        help="output pixels per tile side; 0 (the default), the largest that fits memory",
    )
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    predict.add_argument(
        "--threshold",
        type=_probability,
        default=0.5,
        help="cell probability above which a pixel is foreground (default %(default)s)",
    )
    predict.add_argument(
        "--min-size",
        type=_count,
        default=10,
        help="drop instances smaller than this many pixels (default %(default)s)",
    )

    train = commands.add_parser(
        "train",
        argument_default=None if defaults else argparse.SUPPRESS,
        help="train a model on images and their labels",
        description="Labels are instance labels (0 = background) or two-valued masks "
        "(split into cells by connected components); negative labels (e.g. -1) mark "
        "pixels that are not annotated, and the slices of a stack with no cell are left out (a 2D "
        "label image with no cell is all background).",
    )
    train.add_argument("--images", nargs="+", type=Path, required=True, metavar="IMAGE")
    train.add_argument("--labels", nargs="+", type=Path, required=True, metavar="LABELS")
    train.add_argument("--out", type=Path, required=True, help="the model file to write")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive_int, default=None, help="default 1000")
    budget.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="train for this long instead of a number of steps",
    )
    train.add_argument("--val-images", nargs="+", type=Path, default=[], metavar="IMAGE")
    train.add_argument(
        "--val-labels",
        nargs="+",
        type=Path,
        default=[],
        metavar="LABELS",
        help="validation set (or hold out part of the training set: --val-fraction)",
    )
    train.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="share of the training slices to hold out for validation when there are 5 "
        "or more, at most 0.5; 0 (the default) trains on all of them: on ISBI 2012 after "
        "5 minutes, holding out 5 of 25 slices scored worse (benchmarks/README.md)",
    )
    train.add_argument("--validate-every", type=_count, help="steps (0: at the end)")
    train.add_argument(
        "--checkpoint-every",
        type=_count,
        help="also save the model every this many steps (0: only at the end, or when "
        "stopped by Ctrl-C or SIGTERM)",
    )
    train.add_argument(
        "--keep-best",
        action="store_true",
        help="end with the weights that scored best on the validation set, not the last "
        "(needs --val-images or --val-fraction)",
    )
    start = train.add_mutually_exclusive_group()
    start.add_argument(
        "--init", type=Path, default=None, help="fine-tune this model instead of starting afresh"
    )
    start.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="MODEL",
        help="continue the training run saved in MODEL (by Ctrl-C, SIGTERM or "
        "--checkpoint-every) with its settings, seed, step count and optimizer (--device, "
        "--validate-every, --checkpoint-every and --keep-best may change): the budget "
        "counts from the run's start, so give more --steps or --minutes to train on past it",
    )
    train.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=preset if defaults else argparse.SUPPRESS,
        help="the defaults of the settings below: ours (measured on ISBI 2012, "
        "benchmarks/README.md) or the paper's (its 64-wide valid U-Net, SGD with "
        "momentum 0.99 on one 388-pixel tile a step, w0 10 with class balance, the "
        "elastic deformation alone); options given explicitly override them",
    )
    train.add_argument("--w0", type=float, help="border weight height (Eq. 2): %(default)s")
    train.add_argument("--sigma", type=float, help="border weight width: %(default)s pixels")
    train.add_argument(
        "--tile", type=_positive_int, help="output pixels per tile side: %(default)s"
    )
    train.add_argument("--batch", type=_positive_int, help="tiles per step: %(default)s")
    train.add_argument("--lr", type=float, help="learning rate: %(default)s")
    train.add_argument("--optimizer", choices=["adam", "sgd"], help="%(default)s")
    train.add_argument(
        "--schedule",
        choices=["constant", "cosine"],
        help="learning rate over the budget: %(default)s",
    )
    train.add_argument(
        "--width", type=_positive_int, help="channels of the first level: %(default)s"
    )
    train.add_argument("--depth", type=_positive_int, help="number of poolings: %(default)s")
    train.add_argument(
        "--channels",
        type=_positive_int,
        help="channels of each image: 1, grey, where a 3D image is a stack; or C, for images "
        "(C, Y, X) and stacks (C, Z, Y, X), channels first (an RGB PNG or JPEG is read so "
        "with --channels 3) (%(default)s)",
    )
    train.add_argument(
        "--padding",
        choices=["valid", "same"],
        help="valid is the paper's; same trains faster on the CPU; both predict exactly "
        "(%(default)s)",
    )
    train.add_argument(
        "--norm",
        choices=["none", "batch"],
        help="batch norm keeps tiled prediction exact; instance norm would not (%(default)s)",
    )
    train.add_argument(
        "--class-balance",
        action=argparse.BooleanOptionalAction,
        help="give cells and background the same total loss weight, border term "
        "included (Eq. 2's w_c); off: every annotated pixel weighs 1 plus the border term "
        "(%(default)s)",
    )
    train.add_argument(
        "--ignore-outline",
        action=argparse.BooleanOptionalAction,
        help="no loss weight on the background pixel along each cell's outline where the "
        "background is wider than 2 pixels (hand-drawn outlines are uncertain by a pixel); "
        "the gaps between touching cells keep theirs (%(default)s)",
    )
    train.add_argument("--device", default="auto")
    train.add_argument("--seed", type=int)
    if defaults:
        train.set_defaults(**PRESETS[preset], **RUN)

    evaluate = commands.add_parser(
        "evaluate",
        help="score a model on images with ground truth",
        description="Pixel error, adapted Rand error and VI (ISBI 2012 scoring: "
        "4-connected components of the cell interior), at threshold 0.5 and "
        "at the best of 0.1..0.9; means over images, each slice of a stack one image.",
    )
    evaluate.add_argument("--model", type=Path, required=True)
    evaluate.add_argument("--images", nargs="+", type=Path, required=True, metavar="IMAGE")
    evaluate.add_argument(
        "--labels",
        nargs="+",
        type=Path,
        required=True,
        metavar="LABELS",
        help="ground truth: instance labels (touching cells are scored apart), or a "
        "two-valued mask whose larger value is the cell interior (ISBI 2012's 0 / 255)",
    )
    add_tta_flag(evaluate)
    evaluate.add_argument("--device", default="auto")
    return parser
