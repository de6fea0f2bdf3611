"""Command line: ``napari-unet predict`` (headless, for large data and clusters)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

# Above this many pixels an image's results go to zarr rather than TIFF.
ZARR_PIXELS = 2**26


def read_image(path: Path):
    """An array for ``path``: zarr (lazy), TIFF, or anything scikit-image reads."""
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

    return io.imread(path)


class _BarProgress:
    """``progress(done, total)`` for ``predict_tiled``, drawn as a tqdm bar."""

    def __init__(self, bar):
        self.bar = bar

    def __call__(self, done: int, total: int) -> None:
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()


def predict_command(args: argparse.Namespace) -> None:
    import tifffile
    from tqdm import tqdm

    from .core.checkpoint import load
    from .core.device import default_device
    from .core.instances import to_instances
    from .core.predict import check_input, predict_tiled

    device = default_device(args.device)
    model, _ = load(args.model, device=device)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = read_image(path)
        spatial, is_stack = check_input(model, image)
        shape = (model.n_classes, *spatial)
        large = hasattr(image, "chunks") or np.prod(spatial) > ZARR_PIXELS
        stem = path.name.split(".")[0]
        with tqdm(desc=path.name, unit="tile", file=sys.stderr) as bar:
            progress = _BarProgress(bar)
            if large:
                import zarr

                group = zarr.open_group(str(args.out / f"{stem}.zarr"), mode="w")
                chunks = (1, *((1,) if is_stack else ()), 1024, 1024)
                probs = group.zeros(
                    name="probabilities", shape=shape, chunks=chunks, dtype="float32"
                )
                predict_tiled(model, image, args.tile, args.tta, device, progress, out=probs)
            else:
                probs = predict_tiled(model, image, args.tile, args.tta, device, progress)
        if large:
            labels = group.zeros(name="labels", shape=spatial, chunks=chunks[1:], dtype="int32")
            for z in range(spatial[0]) if is_stack else [None]:
                index = (slice(None),) if z is None else (slice(None), z)
                plane = to_instances(np.asarray(probs[index]), args.threshold, args.min_size)
                labels[() if z is None else (z,)] = plane
            print(f"{path.name}: wrote {args.out / (stem + '.zarr')}")
        else:
            labels = to_instances(probs, args.threshold, args.min_size)
            for name, data in (("probabilities", probs), ("labels", labels)):
                tifffile.imwrite(
                    args.out / f"{stem}_{name}.tif",
                    data,
                    compression="zlib",
                    photometric="minisblack",
                )
            print(f"{path.name}: {labels.max()} instances -> {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-unet", description="U-Net segmentation without a screen."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict",
        help="segment images with a trained model",
        description="Exact overlap-tile prediction; writes <name>_labels.tif and "
        "<name>_probabilities.tif, or <name>.zarr for large or zarr inputs.",
    )
    predict.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="TIFF, PNG, zarr array or any image scikit-image reads",
    )
    predict.add_argument("--model", required=True, type=Path, help="a .safetensors model file")
    predict.add_argument("--out", required=True, type=Path, help="folder for the results")
    predict.add_argument(
        "--tta", action="store_true", help="average over the 8 flips and rotations (8x slower)"
    )
    predict.add_argument(
        "--tile",
        type=int,
        default=None,
        help="output pixels per tile side (default: largest that fits memory)",
    )
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    predict.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="cell probability above which a pixel is foreground",
    )
    predict.add_argument(
        "--min-size", type=int, default=10, help="drop instances smaller than this many pixels"
    )
    predict.set_defaults(run=predict_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"napari-unet: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
