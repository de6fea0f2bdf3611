"""ISBI 2012 held-out benchmark: train on slices 00-24 for a CPU budget, score 25-29.

    python benchmarks/eval_isbi.py [--minutes 5] [--seeds 0 1 2] [--skip-anchor | --skip-ours]

Ours: the command line's defaults (``napari-unet train``). The anchor, in the same
run and budget: MONAI's BasicUNet (instance norm; Adam 1e-3, flips, 4 x 256^2
crops, cross entropy), as ../shared/data/README.md describes it. Scoring as that
README says (``core.metrics.score_stack``): adapted Rand error, pixel error and VI
at threshold 0.5 and at the best of 0.1..0.9, means over the seeds; each model is
scored as it is and with test-time augmentation (the mean over the 8 symmetries of
the square, as the paper averaged rotated inputs): the "tta" lines are what
``napari-unet predict`` / ``evaluate`` and the Predict dock give by default.

"nearest" is a diagnostic, not the project's score: the Rand error at 0.5 once
every predicted membrane pixel is given to its nearest predicted cell, which is
what is left when borders drawn a pixel too thick cost nothing (the ISBI 2012
challenge thinned the predicted borders before its Rand score; see
``isbi_scoring.py`` for how much one pixel of border costs).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage import io
from skimage.segmentation import expand_labels

from napari_unet.core.config import AugmentSettings, TrainConfig
from napari_unet.core.data import make_pairs, split_validation
from napari_unet.core.events import Validation
from napari_unet.core.metrics import THRESHOLD_SWEEP, best_threshold, rand_error, score_stack
from napari_unet.core.model import UNet
from napari_unet.core.predict import predict_tiled, symmetry_mean
from napari_unet.core.train import Trainer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012-em"


def load(indices) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images = [io.imread(DATA / "images" / f"{i:02d}.png").astype(np.float32) for i in indices]
    labels = [io.imread(DATA / "labels" / f"{i:02d}.png") for i in indices]
    return images, labels


def ours(
    images,
    labels,
    minutes: float,
    seed: int,
    norm: str = "batch",
    width: int = 16,
    padding: str = "same",
    dropout: float = 0.5,
    val_fraction: float = 0.0,
    settings=None,
):
    """Train with the defaults; with ``val_fraction``, hold out that share of the
    slices as the command line does, and with the ``keep_best`` setting return both the
    best-validated model the run ends with and the last step's."""
    torch.manual_seed(seed)
    model = UNet(width=width, norm=norm, padding=padding, dropout=dropout)
    config = TrainConfig(steps=10**9, minutes=minutes, seed=seed, **(settings or {}))
    pairs, validation = split_validation(make_pairs(images, labels), val_fraction)
    trainer = Trainer(model, pairs, config, validation=validation)
    last, curve = None, []
    for event in trainer.run():
        if isinstance(event, Validation):  # the run's last one scores its last step
            last = copy.deepcopy(trainer.model.state_dict())
            curve.append(f"{event.step} {event.rand_error:.3f}")
    if validation:
        print(f"  ours seed {seed}: validation Rand by step: {', '.join(curve)}", flush=True)
    if not (validation and config.keep_best):
        return [("ours", _predictor(trainer.model), f"{trainer.step} steps")]
    model = copy.deepcopy(trainer.model)
    model.load_state_dict(last)
    return [
        ("ours", _predictor(trainer.model), f"kept step {trainer.kept_step or trainer.step}"),
        ("ours last", _predictor(model), f"{trainer.step} steps"),
    ]


def _predictor(model):
    return lambda image, tta: predict_tiled(model, image, tta=tta)[1]


def _setting(text: str) -> tuple[str, object]:
    """``name=value`` for a TrainConfig field, or ``augment.name=value`` for one of its
    AugmentSettings, typed like the field's default."""
    name, _, value = text.partition("=")
    group, _, field = name.rpartition(".")
    defaults = AugmentSettings() if group == "augment" else TrainConfig()
    default = getattr(defaults, field, None)
    if group not in ("", "augment") or default is None or isinstance(default, AugmentSettings):
        raise argparse.ArgumentTypeError(f"not a setting: {name}")
    if isinstance(default, bool):
        return name, value.lower() in ("1", "true", "yes")
    if isinstance(default, tuple):
        return name, tuple(float(v) for v in value.split(","))
    return name, type(default)(value)


def _config(settings: list[tuple[str, object]]) -> dict:
    augment = {k.removeprefix("augment."): v for k, v in settings if k.startswith("augment.")}
    config = {k: v for k, v in settings if not k.startswith("augment.")}
    return {**config, "augment": AugmentSettings(**augment)} if augment else config


def add_ours_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`ours`: the model and TrainConfig settings to train."""
    parser.add_argument("--norm", choices=["none", "batch"], default="batch", help="ours only")
    parser.add_argument(
        "--set",
        type=_setting,
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        help="ours only: TrainConfig settings other than the defaults, e.g. tile=388 w0=5 "
        "augment.elastic=false augment.gamma=1,1",
    )
    parser.add_argument("--width", type=int, default=16, help="ours only; the paper's is 64")
    parser.add_argument("--padding", choices=["valid", "same"], default="same", help="ours only")
    parser.add_argument("--dropout", type=float, default=0.5, help="ours only")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="ours only: hold out this share of the training slices for validation, as "
        "napari-unet train --val-fraction does (0 by default there too); with --set "
        "keep_best=true both the best-validated and the last model are scored",
    )


def ours_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`ours` from :func:`add_ours_arguments`' options."""
    return {
        "dropout": args.dropout,
        "norm": args.norm,
        "width": args.width,
        "padding": args.padding,
        "val_fraction": args.val_fraction,
        "settings": _config(args.set),
    }


def anchor(images, labels, minutes: float, seed: int, **_):
    from monai.networks.nets import BasicUNet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2)
    stack = np.stack(images)
    mean, std = stack.mean(), stack.std()
    x_all = torch.from_numpy((stack - mean) / std)[:, None]
    y_all = torch.from_numpy(np.stack(labels) > 0).long()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    deadline, steps = time.monotonic() + 60 * minutes, 0
    net.train()
    while time.monotonic() < deadline:
        picks = rng.integers(0, len(images), 4)
        ys, xs = rng.integers(0, 512 - 256, 4), rng.integers(0, 512 - 256, 4)
        crops = list(zip(picks, ys, xs, strict=True))
        x = torch.stack([x_all[k, :, y : y + 256, c : c + 256] for k, y, c in crops])
        y = torch.stack([y_all[k, y : y + 256, c : c + 256] for k, y, c in crops])
        if rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        if rng.random() < 0.5:
            x, y = x.flip(-2), y.flip(-2)
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
        steps += 1
    net.eval()

    def probabilities(x):
        return torch.softmax(net(x), 1)

    @torch.inference_mode()
    def predict(image, tta):
        x = torch.from_numpy((image - mean) / std)[None, None]
        # The same test-time augmentation as predict_tiled(tta=True).
        p = symmetry_mean(probabilities, x) if tta else probabilities(x)
        return p[0, 1].numpy()

    return [("monai", predict, f"{steps} steps")]


def nearest_cell_rand(probabilities, truths) -> float:
    """Mean Rand error at 0.5 with each predicted membrane pixel given to the nearest
    predicted cell (4-connected components, as ``score_segmentation``)."""
    errors = []
    for probability, truth in zip(probabilities, truths, strict=True):
        cells, _ = ndi.label(probability > 0.5)
        errors.append(rand_error(ndi.label(truth)[0], expand_labels(cells, max(cells.shape))))
    return float(np.mean(errors))


def score(predict, images, labels, tta=False):
    probabilities = [predict(image, tta) for image in images]
    truths = [label > 0 for label in labels]
    scores = score_stack(probabilities, truths, THRESHOLD_SWEEP)
    best = best_threshold(scores)
    half = {**scores[0.5], "nearest": nearest_cell_rand(probabilities, truths)}
    return half, scores[best], best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--skip-anchor", action="store_true")
    parser.add_argument("--skip-ours", action="store_true", help="the anchor alone")
    add_ours_arguments(parser)
    args = parser.parse_args()
    options = ours_options(args)
    if not DATA.exists():
        raise SystemExit(f"no ISBI data at {DATA}")
    train, test = load(range(25)), load(range(25, 30))
    methods = {"ours": ours, "monai": anchor}
    if args.skip_anchor:
        del methods["monai"]
    if args.skip_ours:
        del methods["ours"]
    print(
        f"## ISBI 2012, train 00-24, test 25-29, {args.minutes:g} CPU minutes, "
        f"{torch.get_num_threads()} threads, seeds {args.seeds}, ours with {options}"
    )
    for method in methods.values():
        results = {}  # (name, tta) -> [(half, best)] over the seeds
        for seed in args.seeds:
            for name, predict, steps in method(*train, args.minutes, seed, **options):
                for tta in (False, True):
                    half, best, threshold = score(predict, *test, tta=tta)
                    results.setdefault((name, tta), []).append((half, best))
                    print(
                        f"  {name}{' tta' if tta else ''} seed {seed}: {steps}; threshold 0.5: "
                        f"Rand {half['rand_error']:.3f}, pixel {half['pixel_error']:.3f}, VI "
                        f"{half['vi']:.2f}; best ({threshold:.1f}): Rand "
                        f"{best['rand_error']:.3f}; nearest: Rand {half['nearest']:.3f}",
                        flush=True,
                    )
        for (name, tta), found in results.items():
            mean = {k: np.mean([half[k] for half, _ in found]) for k in found[0][0]}
            best_rand = np.mean([best["rand_error"] for _, best in found])
            print(
                f"{name}{' tta' if tta else ''} mean over {len(found)}: Rand "
                f"{mean['rand_error']:.3f}, pixel {mean['pixel_error']:.3f}, VI "
                f"{mean['vi']:.2f} at 0.5; Rand {best_rand:.3f} at each seed's best "
                f"threshold; nearest: Rand {mean['nearest']:.3f}"
            )


if __name__ == "__main__":
    main()
