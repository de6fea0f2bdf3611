"""Command line: ``napari-unet train | predict | evaluate`` (headless, for large data)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from .cli_args import build_parser, given_settings, preset_in
from .cli_files import (
    channels_first,
    check_outputs,
    output_stem,
    read_all,
    read_image,
    result_paths,
    writable_folder,
)
from .cli_train import train_command

# Above this many pixels an image's results go to zarr rather than TIFF.
ZARR_PIXELS = 2**26


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
    import tifffile

    from .core.checkpoint import load
    from .core.device import default_device
    from .core.instances import to_instances
    from .core.predict import predict_tiled

    stems = [output_stem(path) for path in args.images]
    check_outputs(args.images, stems, args.out)
    device = default_device(args.device)
    model, _ = load(args.model, device=device)
    writable_folder(args.out, "--out")
    for path, stem in zip(args.images, stems, strict=True):
        results = result_paths(args.out, stem)
        image = channels_first(read_image(path), model.in_channels)
        spatial = _checked(model, image, path)
        large = hasattr(image, "chunks") or np.prod(spatial) > ZARR_PIXELS
        written = ["zarr"] if large else ["labels", "probabilities"]
        replaced = [results[k].name for k in written if results[k].exists()]
        with _BarProgress(path.name) as progress:
            if large:
                group = results["zarr"]
                try:
                    _predict_to_zarr(args, model, image, spatial, group, device, progress)
                except BaseException:  # a NaN tile, Ctrl-C: leave no half-written result
                    shutil.rmtree(group, ignore_errors=True)
                    raise
            else:
                probs = predict_tiled(model, image, args.tile or None, args.tta, device, progress)
        if large:
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


def _checked(model, image, path: Path) -> tuple[int, ...]:
    """The spatial shape of ``image`` (``check_input``'s), after a warning where it is
    unlike the images ``model`` was trained on."""
    from .core.data import intensity_gap
    from .core.predict import check_input

    spatial, is_stack = check_input(model, image)
    gap = intensity_gap(model, image, is_stack)
    if gap:
        print(f"{path.name}: warning: {gap}", file=sys.stderr)
    return spatial


def _predict_to_zarr(args, model, image, spatial: tuple, where: Path, device, progress) -> None:
    """Probabilities and labels of a large or zarr ``image`` into a zarr group."""
    import dask.array as da
    import zarr

    from .core.instances import instance_tiles
    from .core.predict import predict_tiled

    is_stack = len(spatial) == 3
    group = zarr.open_group(str(where), mode="w")
    chunks = (1, *((1,) if is_stack else ()), 1024, 1024)
    shape = (model.n_classes, *spatial)
    probs = group.zeros(name="probabilities", shape=shape, chunks=chunks, dtype="float32")
    predict_tiled(model, image, args.tile or None, args.tta, device, progress, out=probs)
    labels = group.zeros(name="labels", shape=spatial, chunks=chunks[1:], dtype="int32")
    # Labelled in bands and tiles from the stored probabilities: memory for
    # a band of rows, not the ~40 bytes a pixel of labelling a plane whole.
    cells = da.from_array(probs, chunks=probs.chunks)[1]
    last = 0  # ids run on from slice to slice, as for a stack in memory
    for z in range(spatial[0]) if is_stack else [None]:
        at = () if z is None else (z,)
        top = 0
        for window, block in instance_tiles(cells[at], args.threshold, args.min_size):
            labels[(*at, *window)] = np.where(block > 0, block + last, 0)
            top = max(top, int(block.max(initial=0)))
        last += top


def _replacing(names: list[str]) -> str:
    return f" (replacing the earlier {', '.join(names)})" if names else ""


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
        args.images,
        read_all(args.images, channels=model.in_channels),
        read_all(args.labels, labels=True),
        strict=True,
    ):
        _checked(model, image, path)
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
    if args.command == "train":
        args.given = given_settings(argv)
    try:
        COMMANDS[args.command](args)
    except (ValueError, OSError) as err:  # OSError: a file not found, not writable, ...
        parser.exit(2, f"napari-unet: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
