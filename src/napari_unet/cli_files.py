"""The command line's files: images and labels read, and where results go."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def read_image(path: Path, labels: bool = False):
    """An array for ``path``: zarr (lazy, as stored), TIFF, or anything scikit-image
    reads.

    Of a file, a trailing axis of one value, as some programs write a grey plane
    (Y, X, 1), is dropped: read as it is, it made a stack of Y slices one pixel wide.
    Of a grey image with an alpha channel, the grey; of ``labels`` saved as a palette
    image (as annotation tools often write them), the palette's indices, not colours.
    """
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

        try:
            image = tifffile.imread(path)
        except (OSError, ValueError) as err:  # TiffFileError is a ValueError
            raise ValueError(f"cannot read {path} as a TIFF: {err}") from err
    else:
        image = _palette_indices(path) if labels else None
        if image is None:
            image = _read_other(path)
        if image.ndim == 3 and image.shape[-1] == 2:  # grey and alpha (a PNG "LA")
            image = image[..., 0]
    if image.ndim >= 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return image


def read_all(paths: list[Path], labels: bool = False, channels: int = 1) -> list[np.ndarray]:
    # Channels moved before np.asarray, as predict moves them: never a zarr array's.
    return [np.asarray(channels_first(read_image(path, labels), channels)) for path in paths]


def channels_first(image, channels: int):
    """For a model of several ``channels``, an image in memory read channels last, as
    PNG and JPEG files hold colours (Y, X, C), as (C, Y, X)."""
    if channels > 1 and isinstance(image, np.ndarray) and image.ndim == 3:
        if image.shape[-1] == channels != image.shape[0]:
            return np.moveaxis(image, -1, 0)
    return image


def _read_other(path: Path) -> np.ndarray:
    from skimage import io

    try:
        return io.imread(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path} as an image ({type(err).__name__})") from err


def _palette_indices(path: Path) -> np.ndarray | None:
    """The indices of a palette image ("P" mode), else None."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image) if image.mode == "P" else None
    except OSError:  # not an image Pillow reads: scikit-image's readers may
        return None


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


def check_outputs(images: list[Path], stems: list[str], out: Path) -> None:
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


def writable_folder(folder: Path, option: str) -> None:
    """Make ``folder`` if missing and check that files can be written in it, so that
    a run fails at its start rather than after hours of training or prediction."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        file = next((p for p in (folder, *folder.parents) if p.is_file()), None)
        reason = f"{file} is a file" if file else err.strerror or type(err).__name__
        raise ValueError(f"{option}: cannot write in {folder} ({reason})") from err
