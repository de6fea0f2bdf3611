"""Command line: ``napari-unet train | predict | evaluate`` (headless, for large data)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from .cli_args import build_parser, preset_in

# Above this many pixels an image's results go to zarr rather than TIFF.
ZARR_PIXELS = 2**26


def read_image(path: Path):
    """An array for ``path``: zarr (lazy), TIFF, or anything scikit-image reads (of a
    grey image with an alpha channel, the grey)."""
    if path.suffix == ".zarr" or (path / ".zarray").exists() or (path / "zarr.json").exists():
        import zarr

        array = zarr.open(str(path), mode="r")
        if not hasattr(array, "shape"):
            raise ValueError(f"{path} is a zarr group; give the path of one array inside it")
        return array
    if not path.exists():
        raise FileNotFoundError(f"no image at {path}")
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from skimage import io

    try:
        image = io.imread(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path} as an image ({type(err).__name__})") from err
    if image.ndim == 3 and image.shape[-1] == 2:  # grey and alpha (a PNG "LA")
        return image[..., 0]
    return image


def output_stem(path: Path) -> str:
    """The name ``predict`` gives an image's results: the file name without its image
    suffix (two for OME files), so ``well.A1.tif`` and ``well.B2.tif`` stay apart; for
    an array inside a zarr group, the group's name and the array's path
    (``a.ome.zarr/0`` gives ``a_0``)."""
    for container in path.parents:
        if container.suffix == ".zarr":
            inside = path.relative_to(container).parts
            return "_".join([output_stem(container), *inside])
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def result_paths(out: Path, stem: str) -> dict[str, Path]:
    """Where ``predict`` writes an image's results: a zarr group for large or zarr
    inputs, else one TIFF of labels and one of probabilities."""
    return {
        "zarr": out / f"{stem}.zarr",
        "labels": out / f"{stem}_labels.tif",
        "probabilities": out / f"{stem}_probabilities.tif",
    }


def _check_outputs(images: list[Path], stems: list[str], out: Path) -> None:
    """Refuse results that would overwrite each other or an input."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a folder for the results")
    clashes = sorted({stem for stem in stems if stems.count(stem) > 1})
    if clashes:
        raise ValueError(
            f"several images would write their results as {', '.join(clashes)}: "
            "predict them into different --out folders"
        )
    inputs = {path.resolve() for path in images}
    for image, stem in zip(images, stems, strict=True):
        if any(path.resolve() in inputs for path in result_paths(out, stem).values()):
            raise ValueError(
                f"the results of {image} would overwrite an input: choose another --out"
            )


class _BarProgress:
    """``progress(done, total)`` for ``predict_tiled``, drawn as a tqdm bar of
    tiles. The bar is made at the first call, when the number of tiles is known:
    made before, it reads "0tile" with no total. The total grows when smaller tiles
    are tried after running out of memory."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc=self.desc, total=total, unit="tile", file=sys.stderr)
        self.bar.total, self.bar.n = total, done
        self.bar.refresh()

    def __enter__(self):
        return self

    def __exit__(self, *_) -> None:
        if self.bar is not None:
            self.bar.close()


def predict_command(args: argparse.Namespace) -> None:
    import dask.array as da
    import tifffile

    from .core.checkpoint import load
    from .core.device import default_device
    from .core.instances import instance_tiles, to_instances
    from .core.predict import check_input, predict_tiled

    stems = [output_stem(path) for path in args.images]
    _check_outputs(args.images, stems, args.out)
    device = default_device(args.device)
    model, _ = load(args.model, device=device)
    args.out.mkdir(parents=True, exist_ok=True)
    for path, stem in zip(args.images, stems, strict=True):
        results = result_paths(args.out, stem)
        image = read_image(path)
        spatial, is_stack = check_input(model, image)
        shape = (model.n_classes, *spatial)
        large = hasattr(image, "chunks") or np.prod(spatial) > ZARR_PIXELS
        written = ["zarr"] if large else ["labels", "probabilities"]
        replaced = [results[k].name for k in written if results[k].exists()]
        with _BarProgress(path.name) as progress:
            if large:
                import zarr

                group = zarr.open_group(str(results["zarr"]), mode="w")
                chunks = (1, *((1,) if is_stack else ()), 1024, 1024)
                probs = group.zeros(
                    name="probabilities", shape=shape, chunks=chunks, dtype="float32"
                )
                predict_tiled(
                    model, image, args.tile or None, args.tta, device, progress, out=probs
                )
            else:
                probs = predict_tiled(model, image, args.tile or None, args.tta, device, progress)
        if large:
            labels = group.zeros(name="labels", shape=spatial, chunks=chunks[1:], dtype="int32")
            # Labelled in bands and tiles from the stored probabilities: memory for
            # a band of rows, not the ~40 bytes a pixel of labelling a plane whole.
            cells = da.from_array(probs, chunks=probs.chunks)[1]
            last = 0  # ids run on from slice to slice, as for a stack in memory
            for z in range(spatial[0]) if is_stack else [None]:
                at = () if z is None else (z,)
                tiles = instance_tiles(cells[at], args.threshold, args.min_size)
                top = 0
                for window, block in tiles:
                    labels[(*at, *window)] = np.where(block > 0, block + last, 0)
                    top = max(top, int(block.max(initial=0)))
                last += top
            print(f"{path.name}: wrote {results['zarr']}{_replacing(replaced)}")
        else:
            labels = to_instances(probs, args.threshold, args.min_size)
            for name, data in (("probabilities", probs), ("labels", labels)):
                tifffile.imwrite(
                    results[name],
                    data,
                    compression="zlib",
                    photometric="minisblack",
                )
            print(f"{path.name}: {labels.max()} instances -> {args.out}{_replacing(replaced)}")


def _replacing(names: list[str]) -> str:
    return f" (replacing the earlier {', '.join(names)})" if names else ""


def _pair_names(images, labels) -> list[str]:
    """Each pair as "image / labels", for messages; make_pairs says if the counts differ."""
    return [f"{i.name} / {lab.name}" for i, lab in zip(images, labels, strict=False)]


def _read_all(paths: list[Path]) -> list[np.ndarray]:
    return [np.asarray(read_image(p)) for p in paths]


def train_command(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .core.checkpoint import load
    from .core.config import TrainConfig
    from .core.data import make_pairs, split_validation
    from .core.events import Done, Notice, Progress, Validation
    from .core.model import UNet
    from .core.train import Trainer, fitting_tile, tile_sizes

    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder: give the model file to write")
    if args.init is not None:
        model, _ = load(args.init)
    else:
        model = UNet(depth=args.depth, width=args.width, padding=args.padding, norm=args.norm)
    channels = model.in_channels
    pairs = make_pairs(
        _read_all(args.images),
        _read_all(args.labels),
        in_channels=channels,
        names=_pair_names(args.images, args.labels),
    )
    if args.val_images or args.val_labels:
        validation = make_pairs(
            _read_all(args.val_images),
            _read_all(args.val_labels),
            in_channels=channels,
            names=_pair_names(args.val_images, args.val_labels),
        )
    else:
        pairs, validation = split_validation(pairs, args.val_fraction)
    tile, largest = args.tile, max(max(p.labels.shape) for p in pairs)
    if tile_sizes(model, tile)[1] > largest:  # e.g. the default tile on small crops
        tile = fitting_tile(model, tile, largest)
        print(f"tile lowered to {tile} pixels, the largest the training images fit")
    # A time budget alone runs until the time is up.
    steps = args.steps or (10**9 if args.minutes else 1000)
    preset = TrainConfig.paper() if args.preset == "paper" else TrainConfig()
    config = dataclasses.replace(
        preset,
        steps=steps,
        minutes=args.minutes,
        batch_size=args.batch,
        tile=tile,
        lr=args.lr,
        optimizer=args.optimizer,
        schedule=args.schedule,
        w0=args.w0,
        sigma=args.sigma,
        class_balance=args.class_balance,
        ignore_outline=args.ignore_outline,
        seed=args.seed,
        device=args.device,
        validate_every=args.validate_every,
        checkpoint_every=args.checkpoint_every,
        keep_best=args.keep_best,
        preview_every=0,
        out=str(args.out),
    )
    trainer = Trainer(model, pairs, config, normalize=args.init is None, validation=validation)
    with (
        tqdm(
            total=None if args.minutes and not args.steps else steps, unit="step", file=sys.stderr
        ) as bar,
        _stop_on_signals(trainer, bar.write),
    ):
        for event in trainer.run():
            if isinstance(event, Progress):
                bar.update(event.step - bar.n)
                bar.set_postfix(loss=f"{event.loss:.4f}")
            elif isinstance(event, Validation):
                bar.write(
                    f"step {event.step}: validation loss {event.loss:.4f}, pixel error "
                    f"{event.pixel_error:.4f}, adapted Rand error {event.rand_error:.4f}, "
                    f"VI {event.vi:.4f}"
                )
            elif isinstance(event, Notice):
                bar.write(event.message)
            elif isinstance(event, Done):
                print(f"saved {event.path} after {event.step} steps")


@contextlib.contextmanager
def _stop_on_signals(trainer, say):
    """The first Ctrl-C (SIGINT), or SIGTERM as a batch system sends at a time
    limit, stops ``trainer`` after its step, which saves the model; a second one
    has its usual effect at once. Only the main thread receives signals: called
    from another, this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if previous[signal.SIGINT] is None:  # installed outside Python: give Ctrl-C its usual effect
        previous[signal.SIGINT] = signal.default_int_handler
    if previous[signal.SIGTERM] is None:
        previous[signal.SIGTERM] = signal.SIG_DFL

    def restore():
        for number, handler in previous.items():
            signal.signal(number, handler)

    def stop(number, _):
        name = "Ctrl-C" if number == signal.SIGINT else signal.Signals(number).name
        say(f"stopping after this step and saving the model ({name} again to quit now)")
        trainer.stop()
        restore()

    for number in previous:
        signal.signal(number, stop)
    try:
        yield
    finally:
        restore()


def evaluate_command(args: argparse.Namespace) -> None:
    from .core.checkpoint import load
    from .core.device import default_device
    from .core.metrics import THRESHOLD_SWEEP, best_threshold, score_stack, true_interior
    from .core.predict import predict_tiled

    if len(args.images) != len(args.labels):
        raise ValueError(
            f"{len(args.images)} images and {len(args.labels)} label images: give one of each"
        )
    device = default_device(args.device)
    model, _ = load(args.model, device=device)
    probabilities, truths = [], []
    for path, image, label in zip(
        args.images, _read_all(args.images), _read_all(args.labels), strict=True
    ):
        with _BarProgress(path.name) as progress:
            probability = predict_tiled(model, image, tta=args.tta, progress=progress)[1]
        truth = true_interior(label)
        if probability.shape != truth.shape:
            raise ValueError(
                f"{path.name}: the prediction {probability.shape} and the labels "
                f"{truth.shape} differ in shape"
            )
        # Stacks are scored slice by slice, as ISBI 2012 is.
        probabilities += list(probability.reshape(-1, *probability.shape[-2:]))
        truths += list(truth.reshape(-1, *truth.shape[-2:]))
    # The adapted Rand error needs a pair of cell pixels in the truth.
    empty = sum(np.count_nonzero(truth) < 2 for truth in truths)
    if empty == len(truths):
        raise ValueError("the labels hold no cell: there is nothing to score")
    if empty:
        print(
            f"{empty} of {len(truths)} slices hold no cell: their adapted Rand error is "
            "undefined and left out of its mean"
        )
    scores = score_stack(probabilities, truths, THRESHOLD_SWEEP)
    best = best_threshold(scores)
    for name, threshold in (("threshold 0.5", 0.5), (f"best threshold {best:.1f}", best)):
        s = scores[threshold]
        print(
            f"{name}: pixel error {s['pixel_error']:.4f}, adapted Rand error "
            f"{s['rand_error']:.4f}, VI {s['vi']:.4f}"
        )


COMMANDS = {"predict": predict_command, "train": train_command, "evaluate": evaluate_command}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(preset_in(argv))
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"napari-unet: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
