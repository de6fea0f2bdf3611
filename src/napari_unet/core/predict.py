"""Overlap-tile prediction (Ronneberger et al. 2015, Fig. 2), exact.

The image is mirror-padded (numpy/torch ``reflect``: the edge pixel is not
repeated) by the network's context, cut into tiles whose origins lie on the
``2**depth`` pooling grid, and the centre of each tile is written once. Nothing
is blended: the pooling windows of every tile coincide with those of one pass
over the whole padded image, so the tiled result equals that pass.

Only one tile is in memory at a time: the padding is never materialised, each
tile gathers its mirrored pixels from the source by index, so numpy, zarr and
dask inputs of any size are processed with memory bounded by the tile.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .device import default_device, is_out_of_memory, memory_budget
from .model import UNet, valid_margin

Progress = Callable[[int, int], None]

# Peak bytes of a forward pass per input pixel and per channel of the first level,
# measured on the CPU (17-29 for 572-1084 pixel tiles), with headroom.
_BYTES_PER_PIXEL_PER_WIDTH = 32
# On the CPU, 512-pixel tiles ran faster than one 1024-pixel tile in
# benchmarks/bench_tiling.py: smaller activations stay in cache.
CPU_TILE = 512


@dataclass(frozen=True)
class TileGeometry:
    """How one 2D plane is cut into tiles (all sizes per axis, ``(y, x)``).

    ``stride`` pixels of output are kept per tile, a multiple of the pooling grid;
    each tile reads ``in_size`` input pixels starting ``pad`` pixels before the
    region it keeps, and the kept region starts ``offset`` pixels into its output.
    """

    stride: tuple[int, int]
    in_size: tuple[int, int]
    pad: int
    offset: int

    @classmethod
    def for_model(cls, model: UNet, stride: Sequence[int]) -> TileGeometry:
        g, m = model.grid, valid_margin(model.depth)
        stride = tuple(max(g, round(s / g) * g) for s in stride)
        if model.cfg.padding == "valid":
            # Valid output lengths are g * k + (4 mod g): keep the grid-aligned part.
            return cls(stride, tuple(s + 4 % g + 2 * m for s in stride), m, 0)
        # A same net runs unpadded (UNet.as_valid) from 2 pixels past the grid, so
        # its output starts 2 pixels before the kept region.
        return cls(stride, tuple(s + 4 + 2 * m for s in stride), m + 2, 2)


def choose_tile(
    model: UNet,
    plane_shape: Sequence[int],
    device: torch.device,
    tile_size: int | Sequence[int] | None = None,
) -> TileGeometry:
    """Tile geometry for ``plane_shape``: the requested output size rounded to the
    pooling grid, or the largest square tile that fits the device's memory budget;
    never larger than one tile covering the whole plane."""
    g = model.grid
    if tile_size is None:
        per_pixel = _BYTES_PER_PIXEL_PER_WIDTH * model.cfg.width + 8 * model.in_channels
        side = int(math.sqrt(memory_budget(device) / per_pixel))
        extra = TileGeometry.for_model(model, (g, g)).in_size[0] - g
        tile_size = max(g, (side - extra) // g * g)
        if device.type == "cpu":
            tile_size = min(tile_size, CPU_TILE)
    if isinstance(tile_size, int | np.integer):
        tile_size = (int(tile_size), int(tile_size))
    elif isinstance(tile_size, np.ndarray):
        tile_size = tuple(tile_size.tolist())
    if (
        not isinstance(tile_size, Sequence)
        or len(tile_size) != 2
        or not all(isinstance(t, int | np.integer) and t >= 1 for t in tile_size)
    ):
        raise ValueError(f"tile_size must be a positive int or (y, x) pair; got {tile_size!r}")
    stride = [
        min(max(g, round(t / g) * g), -(-n // g) * g)
        for t, n in zip(tile_size, plane_shape, strict=True)
    ]
    return TileGeometry.for_model(model, stride)


def reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    """Map coordinates outside ``[0, length)`` by mirroring without repeating the edge."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.mod(index, period)
    return np.where(index >= length, period - index, index)


class PlaneView:
    """Read and write ``(C, Y, X)`` regions of one plane of an array-like.

    ``prefix`` indexes the plane (stack slice, channel axis); ``add_channel`` adds
    a length-1 channel axis to what is read; ``origin`` is the plane coordinate of
    the array's first pixel, for arrays holding only a window of the plane.
    """

    def __init__(
        self,
        array,
        prefix: tuple = (),
        add_channel: bool = False,
        origin: tuple[int, int] = (0, 0),
    ):
        self.array, self.prefix, self.add_channel, self.origin = array, prefix, add_channel, origin

    def _index(self, ys: slice, xs: slice) -> tuple:
        oy, ox = self.origin
        return (
            *self.prefix,
            slice(ys.start - oy, ys.stop - oy),
            slice(xs.start - ox, xs.stop - ox),
        )

    def read(self, ys: slice, xs: slice) -> np.ndarray:
        data = np.asarray(self.array[self._index(ys, xs)])
        return data[None] if self.add_channel else data

    def write(self, ys: slice, xs: slice, value: np.ndarray) -> None:
        self.array[(slice(None), *self._index(ys, xs))] = value


class TileRunner:
    """Runs the network on one tile, on one device, with optional test-time augmentation."""

    def __init__(self, model: UNet, device: torch.device, tta: bool = False):
        # Channels-last convolutions run about twice as fast on the CPU (oneDNN);
        # the values are unchanged.
        self.model = model.to(memory_format=torch.channels_last)
        self.network = model.as_valid().eval()
        self.device, self.tta = device, tta

    @torch.inference_mode()
    def __call__(self, tile: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tile, dtype=np.float32))[None].to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)

        def probabilities(t: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.network(t), 1)

        # Every valid tile has the same size modulo the pooling grid, so the mean over
        # the symmetries does not depend on the tile size.
        p = symmetry_mean(probabilities, x) if self.tta else probabilities(x)
        return p[0].cpu().numpy()


def symmetry_mean(
    probabilities: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """Test-time augmentation: the mean of ``probabilities`` over the 8 symmetries of
    the square (flips and 90-degree rotations of ``x``'s last two axes), each
    turned back before averaging."""
    total = 0
    for flip in (False, True):
        xf = x.flip(-1) if flip else x
        for k in range(4):
            p = torch.rot90(probabilities(torch.rot90(xf, k, (-2, -1))), -k, (-2, -1))
            total = total + (p.flip(-1) if flip else p)
    return total / 8


def predict_region(
    runner: TileRunner,
    geom: TileGeometry,
    source: PlaneView,
    plane_shape: tuple[int, int],
    target: PlaneView,
    region: tuple[slice, slice] | None = None,
) -> Iterator[None]:
    """Predict the output pixels ``region`` of a plane of ``plane_shape`` into ``target``,
    yielding after each tile. ``region`` must start on the tile grid."""
    region = region or (slice(0, plane_shape[0]), slice(0, plane_shape[1]))
    finite_check = not np.issubdtype(np.dtype(getattr(source.array, "dtype", float)), np.integer)
    (sy, sx), off = geom.stride, geom.offset
    for ty in range(region[0].start, region[0].stop, sy):
        rows = reflect_index(
            np.arange(ty - geom.pad, ty - geom.pad + geom.in_size[0]), plane_shape[0]
        )
        for tx in range(region[1].start, region[1].stop, sx):
            cols = reflect_index(
                np.arange(tx - geom.pad, tx - geom.pad + geom.in_size[1]), plane_shape[1]
            )
            r0, c0 = rows.min(), cols.min()
            box = source.read(slice(r0, rows.max() + 1), slice(c0, cols.max() + 1))
            tile = box[:, rows - r0][:, :, cols - c0]
            if finite_check:
                check_finite(tile)
            h, w = min(sy, region[0].stop - ty), min(sx, region[1].stop - tx)
            probs = runner(tile)
            target.write(
                slice(ty, ty + h), slice(tx, tx + w), probs[:, off : off + h, off : off + w]
            )
            yield


def check_finite(array: np.ndarray) -> None:
    """Raise a ``ValueError`` people understand if ``array`` holds NaN or infinity."""
    if not np.isfinite(array).all():
        raise ValueError(
            "the image contains NaN or infinite values; replace them "
            "(e.g. with numpy.nan_to_num) before predicting"
        )


def check_input(model: UNet, image) -> tuple[tuple[int, ...], bool]:
    """Validate ``image`` for ``model``; return its spatial shape and whether it is a stack."""
    cin = model.in_channels
    shape, ndim = tuple(image.shape), len(image.shape)
    dtype = np.dtype(image.dtype)
    real = np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    if not (real or np.issubdtype(dtype, np.bool_)):
        raise ValueError(f"the image must hold real numbers; got dtype {dtype}")
    if cin == 1 and ndim == 3 and 0 < shape[-1] <= 4 < min(shape[:2]):
        # Channels last (RGB, a plane saved as (Y, X, 1)), not planes a few pixels wide.
        raise ValueError(
            f"the image has shape {shape}: {shape[-1]} channel(s) last, as in RGB(A), but "
            "the model expects one grey channel (Y, X); convert it to grey"
        )
    if cin == 1 and ndim in (2, 3):
        spatial = shape
    elif cin > 1 and ndim in (3, 4) and shape[0] == cin:
        spatial = shape[1:]
    elif cin > 1 and ndim in (3, 4):
        raise ValueError(
            f"the model expects {cin} channels first, (C, Y, X) or (C, Z, Y, X); "
            f"the image has shape {shape}"
        )
    else:
        kinds = "(Y, X) or a stack (Z, Y, X)" if cin == 1 else f"({cin}, Y, X) or ({cin}, Z, Y, X)"
        hint = (
            "one channel and one time point at a time"
            if cin == 1
            else f"the model takes its {cin} channels as one array, channels first"
        )
        raise ValueError(f"expected a 2D image {kinds}; got an array of shape {shape}: {hint}")
    if 0 in shape:
        raise ValueError(f"the image is empty (shape {shape})")
    return spatial, len(spatial) == 3


def _runner_for(model: UNet, device, tta: bool) -> TileRunner:
    dev = default_device(device) if device is not None else next(model.parameters()).device
    dev = torch.empty(0, device=dev).device  # "cuda" as "cuda:0", which the model reports
    if next(model.parameters()).device != dev:
        model = copy.deepcopy(model).to(dev)
    return TileRunner(model, dev, tta)


def predict_tiled(
    model: UNet,
    image,
    tile_size: int | Sequence[int] | None = None,
    tta: bool = False,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    out=None,
):
    """Class probabilities of ``image`` by exact overlap-tile prediction.

    Parameters
    ----------
    model : UNet
        Put in eval mode while predicting (its mode is restored afterwards); its
        weights are moved to the channels-last layout (same values, faster).
    image : array-like
        ``(Y, X)`` or a stack ``(Z, Y, X)`` for a one-channel model;
        ``(C, Y, X)`` or ``(C, Z, Y, X)`` for a model with C input channels.
        numpy, zarr or anything sliceable; a dask array gives a lazy dask result
        (computed into ``out`` when it is given).
    tile_size : int or (int, int), optional
        Output pixels per tile (e.g. 388 for the paper's 572-pixel input tiles),
        rounded to the pooling grid. None: the largest tile the memory allows.
    tta : bool
        Average the probabilities over the 8 flips and 90-degree rotations (8x the
        work; the command line and the Predict dock do by default).
    device : str or torch.device, optional
        Where to run; None runs where the model's weights are.
    progress : callable, optional
        Called as ``progress(done, total)`` after each tile (not for dask input).
    out : array-like, optional
        Where to write the result (e.g. a zarr array), shape ``(n_classes, *spatial)``.

    Returns
    -------
    array, float32, shape ``(n_classes, *spatial)``
        Softmax probabilities; ``out`` if given.
    """
    if _is_dask(image):
        from .predict_dask import predict_dask

        spatial, is_stack = check_input(model, image)
        result = predict_dask(model, image, spatial, is_stack, tile_size, tta, device)
        if out is None:
            return result
        _check_out(out, result.shape)
        result.store(out)
        return out
    steps = iter_predict(model, image, tile_size, tta, device, out)
    while True:
        try:
            done, total = next(steps)
        except StopIteration as finished:
            return finished.value
        if progress is not None:
            progress(done, total)


def iter_predict(
    model: UNet,
    image,
    tile_size: int | Sequence[int] | None = None,
    tta: bool = False,
    device: str | torch.device | None = None,
    out=None,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """:func:`predict_tiled` as a generator: yields ``(done, total)`` tiles and
    returns the probabilities, so a caller can show progress and stop between tiles.
    Any sliceable input works (a dask array is read region by region)."""
    spatial, is_stack = check_input(model, image)
    if isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating):
        check_finite(image)  # fail before any tile runs
    shape = (model.n_classes, *spatial)
    if out is None:
        out = np.empty(shape, np.float32)
    _check_out(out, shape)
    was_training = model.training
    runner = _runner_for(model, device, tta)
    try:
        yield from _predict_planes(runner, image, spatial, is_stack, tile_size, out)
    finally:
        model.train(was_training)
    return out


def plane_views(model: UNet, image, out, is_stack: bool):
    """``(source, target)`` views of each plane of ``image`` and ``out``."""
    multi = model.in_channels > 1
    for z in range(image.shape[-3]) if is_stack else [None]:
        zs = () if z is None else (z,)
        prefix = (slice(None), *zs) if multi else zs
        yield PlaneView(image, prefix, add_channel=not multi), PlaneView(out, zs)


def _predict_planes(runner: TileRunner, image, spatial, is_stack, tile_size, out):
    plane_shape = tuple(spatial[-2:])
    geom = choose_tile(runner.model, plane_shape, runner.device, tile_size)
    n_planes = spatial[0] if is_stack else 1
    for index, (source, target) in enumerate(plane_views(runner.model, image, out, is_stack)):
        while True:
            per_plane = math.prod(
                -(-n // s) for n, s in zip(plane_shape, geom.stride, strict=True)
            )
            done, total = index * per_plane, n_planes * per_plane
            try:
                for _ in predict_region(runner, geom, source, plane_shape, target):
                    done += 1
                    yield done, total
                break
            except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
                if not is_out_of_memory(err) or max(geom.stride) <= runner.model.grid:
                    raise
                smaller = [max(runner.model.grid, s // 2) for s in geom.stride]
                warnings.warn(
                    f"out of memory with {geom.stride} tiles on {runner.device}; "
                    f"retrying with {tuple(smaller)}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                if runner.device.type == "cuda":
                    torch.cuda.empty_cache()
                geom = TileGeometry.for_model(runner.model, smaller)


def _check_out(out, shape: tuple[int, ...]) -> None:
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out has shape {tuple(out.shape)}; expected {tuple(shape)}")
    if not np.issubdtype(np.dtype(out.dtype), np.floating):
        raise ValueError(f"out must hold floats (probabilities); it holds {out.dtype}")


def _is_dask(image) -> bool:
    return type(image).__module__.startswith("dask.")
