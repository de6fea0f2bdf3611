"""Data augmentation for training: the paper's elastic deformation, flips, rotations
and intensity changes, batched in torch on whatever device the tensors are on.

Ronneberger et al. (2015) deform with displacement vectors drawn on a coarse 3x3 grid
(standard deviation 10 px) and interpolated bicubically to every pixel. Here the outer
grid points sit on the image corners (``align_corners=True``), the image is resampled
bicubically, the labels by nearest neighbour, and positions outside the image are
mirrored as numpy's ``"reflect"`` (edge pixel not repeated), as the overlap-tile
strategy mirrors. Every random number comes from the ``torch.Generator`` passed in,
drawn in a fixed order whatever the settings: the same seed gives the same result, and
a CPU generator the same draws on the CPU and on CUDA.

Axes: image ``(B, C, H, W)`` float; labels ``(B, H, W)`` integer (any id an int64
holds); weights ``(B, H, W)`` float, the loss weights of Eq. 2; mask ``(B, H, W)`` bool
or uint8, the annotated region; field ``(B, 2, H, W)`` float, displacements
``(dy, dx)`` in pixels: output pixel ``p`` takes the input value at ``p + field[p]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import AugmentSettings
from .intensity import adjust_intensity, work_dtype

LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
MASK_DTYPES = (torch.bool, torch.uint8)

# Flips and rotations as integer affine maps from an output pixel (i, j) to its source
# pixel: y = a*i + b*j + c*(H-1), x = d*i + e*j + f*(W-1). Rows are (a, b, c, d, e, f).
_LATTICE_MAPS = {
    "identity": (1, 0, 0, 0, 1, 0),
    "flip_x": (1, 0, 0, 0, -1, 1),
    "flip_y": (-1, 0, 1, 0, 1, 0),
    "rot180": (-1, 0, 1, 0, -1, 1),
    "rot90": (0, 1, 0, -1, 0, 1),  # np.rot90: out[i, j] = in[j, W-1-i]
    "rot270": (0, -1, 1, 1, 0, 0),
    "transpose": (0, 1, 0, 1, 0, 0),
    "antitranspose": (0, -1, 1, -1, 0, 1),
}


def augment(
    image: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    generator: torch.Generator,
    settings: AugmentSettings | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Augment a batch of training samples, each sample on its own random draw.

    Flips, rotations and the elastic deformation move image, labels, weights and mask
    together, in one resampling as :func:`warp` does it; brightness, contrast and gamma
    change the image only. Everything runs on the device of ``image``.

    Parameters
    ----------
    image, labels, weights, mask : torch.Tensor
        ``(B, C, H, W)`` float images, ``(B, H, W)`` integer labels, and optionally
        ``(B, H, W)`` float loss weights and bool or uint8 annotated region.
    generator : torch.Generator
        Source of every random number, on the CPU or the device. A CPU generator gives
        the same draws whatever device the tensors are on.
    settings : AugmentSettings, optional
        What to do; ``AugmentSettings()`` by default.

    Returns
    -------
    tuple
        ``(image, labels, weights, mask)`` with the input shapes and dtypes, ``None``
        where ``None`` was given; tensors that nothing changes are returned as given.
    """
    settings = AugmentSettings() if settings is None else settings
    _check_generator(generator)
    _check_inputs(image, labels, weights, mask)
    batch, _, height, width = image.shape
    coarse, uniform = _draw(batch, settings.grid, generator)
    uniform = uniform.to(image.device)

    names = _allowed_maps(settings, square=height == width)
    deform = settings.elastic and settings.sigma > 0
    if deform or len(names) > 1:
        table = torch.tensor([_LATTICE_MAPS[n] for n in names], device=image.device)
        choice = (uniform[:, 0] * len(names)).long().clamp_(max=len(names) - 1)
        if deform:
            dtype = _exact_dtype(image.device, work_dtype(image))
            coarse = coarse.to(image.device, dtype) * settings.sigma
            grid = _sampling_grid(table[choice], coarse, height, width)
            image, labels, weights, mask = _resample(image, labels, weights, mask, grid)
        else:
            # Flips and rotations alone move whole pixels: a gather, exact for every dtype.
            index = _lattice_index(table[choice], height, width)
            image, labels, weights, mask = (
                _take(t, index) for t in (image, labels, weights, mask)
            )
    image = adjust_intensity(
        image, uniform[:, 1:], settings.brightness, settings.contrast, settings.gamma
    )
    return image, labels, weights, mask


def elastic_field(
    batch: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator,
    sigma: float = 10.0,
    grid: int = 3,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Random smooth displacement fields, as the paper draws them.

    Displacement vectors are drawn on a ``grid`` x ``grid`` lattice whose outer points
    sit on the image corners, each component normal with standard deviation ``sigma``
    pixels, and interpolated bicubically (``F.interpolate``, ``align_corners=True``) to
    every pixel. :func:`augment` with the same generator state draws the same vectors.

    Returns
    -------
    torch.Tensor
        ``(batch, 2, height, width)`` displacements ``(dy, dx)`` in pixels, of ``dtype``
        on ``device`` (the generator's device by default).
    """
    _check_generator(generator)
    AugmentSettings(sigma=sigma, grid=grid)  # the same checks of sigma and grid
    coarse, _ = _draw(batch, grid, generator)
    device = torch.device(generator.device if device is None else device)
    coarse = coarse.to(device, _exact_dtype(device, dtype)) * sigma
    along_y = _bicubic_weights(grid, height, coarse)
    along_x = _bicubic_weights(grid, width, coarse)
    return (along_y @ coarse @ along_x.T).to(dtype)


def warp(
    image: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    field: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Deform samples by a displacement field: output pixel ``p`` takes input ``p + field``.

    - The image is resampled bicubically: smooth, sharper than bilinear, though like
      any cubic it may overshoot the input range a little at strong edges.
    - The weights are resampled bilinearly, which keeps them within their input range.
      They are warped with the labels rather than recomputed from the warped labels:
      the Eq. 2 map needs distance transforms to the two nearest cells per sample, far
      more work than the warp, and a smooth deformation keeps the map close to it.
    - Labels and mask take the value of the pixel nearest to each position, gathered by
      index, so every output value is an input value (ids up to 2**63 stay exact).

    Positions outside the image are mirrored about the edge pixels, as numpy's
    ``"reflect"`` and the overlap-tile strategy do.

    Parameters
    ----------
    image, labels, weights, mask : torch.Tensor
        As for :func:`augment`.
    field : torch.Tensor
        ``(B, 2, H, W)`` float displacements ``(dy, dx)`` in pixels, on the image's device.

    Returns
    -------
    tuple
        ``(image, labels, weights, mask)`` deformed, with the input shapes and dtypes.
    """
    _check_inputs(image, labels, weights, mask)
    batch, _, height, width = image.shape
    expected = (batch, 2, height, width)
    if not isinstance(field, torch.Tensor) or tuple(field.shape) != expected:
        shape = tuple(field.shape) if isinstance(field, torch.Tensor) else type(field).__name__
        raise ValueError(
            f"field must have the shape (batch, 2, height, width) = {expected}; got {shape}"
        )
    if not field.dtype.is_floating_point or field.device != image.device:
        raise ValueError(f"field must hold floats on the image's device ({image.device})")
    work = work_dtype(image)
    rows = torch.arange(height, device=image.device, dtype=work).view(1, height, 1)
    cols = torch.arange(width, device=image.device, dtype=work)
    y = (rows + field[:, 0].to(work)) * (2 / (height - 1)) - 1
    x = (cols + field[:, 1].to(work)) * (2 / (width - 1)) - 1
    return _resample(image, labels, weights, mask, torch.stack((x, y), dim=-1))


def _draw(batch: int, grid: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    # Always the same draws in the same order, so that each part of the augmentation
    # sees the same numbers for a seed whatever the other settings are.
    device = generator.device
    coarse = torch.randn((batch, 2, grid, grid), generator=generator, device=device)
    # Columns: flip/rotation choice, brightness, contrast, gamma.
    uniform = torch.rand((batch, 4), generator=generator, device=device)
    return coarse, uniform


def _allowed_maps(settings: AugmentSettings, square: bool) -> list[str]:
    if settings.flips and settings.rotations and square:
        return list(_LATTICE_MAPS)
    # Flipping along both axes is the 180-degree rotation, so either option brings it.
    names = ["identity", "rot180"] if settings.flips or settings.rotations else ["identity"]
    if settings.flips:
        names += ["flip_x", "flip_y"]
    if settings.rotations and square:
        names += ["rot90", "rot270"]
    return names


def _lattice_index(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Flat source pixel ``(B, H*W)`` of the flips and rotations ``maps`` (B, 6)."""
    rows = torch.arange(height, device=maps.device).view(1, height, 1)
    cols = torch.arange(width, device=maps.device).view(1, 1, width)
    m = maps.view(-1, 6, 1, 1)
    from_rows = (m[:, 0] * rows + m[:, 2] * (height - 1)) * width + m[:, 3] * rows
    from_cols = m[:, 1] * cols * width + m[:, 4] * cols + m[:, 5] * (width - 1)
    return (from_rows + from_cols).flatten(1)


def _sampling_grid(
    maps: torch.Tensor, coarse: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """grid_sample positions ``(B, H, W, 2)`` of the flips and rotations ``maps`` (B, 6)
    followed by the displacements interpolated from ``coarse`` (B, 2, G, G) pixels."""
    # Each term is a function of the row times a function of the column (affine maps,
    # separable bicubic interpolation), so the grid is one product of (H, G + 2) row
    # terms with (B, G + 2, 2 W) column terms: one pass over the output instead of a
    # dozen element-wise ones, which would bound the time on the CPU.
    batch, grid = coarse.shape[0], coarse.shape[-1]
    like = {"device": coarse.device, "dtype": coarse.dtype}
    m = maps.to(coarse.dtype).view(batch, 6, 1)
    rows = torch.arange(height, **like)[:, None]
    cols = torch.arange(width, **like)
    row_terms = torch.cat(
        [_bicubic_weights(grid, height, coarse), rows, torch.ones_like(rows)], dim=1
    )
    of_rows = torch.stack([m[:, 0], m[:, 3]], dim=1)[..., None].expand(-1, -1, 1, width)
    rest = torch.stack(
        [m[:, 1] * cols + m[:, 2] * (height - 1), m[:, 4] * cols + m[:, 5] * (width - 1)],
        dim=1,
    )
    displacement = coarse @ _bicubic_weights(grid, width, coarse).T
    col_terms = torch.cat([displacement, of_rows, rest[:, :, None]], dim=2)  # (B, 2, G+2, W)
    scale = torch.tensor([2 / (height - 1), 2 / (width - 1)], **like).view(1, 2, 1, 1)
    col_terms = col_terms * scale
    col_terms[:, :, -1] -= 1  # grid_sample's -1 is the centre of pixel 0
    # grid_sample wants (x, y) on the last axis.
    col_terms = col_terms.flip(1).permute(0, 2, 3, 1).reshape(batch, grid + 2, 2 * width)
    return (row_terms @ col_terms).view(batch, height, width, 2)


def _bicubic_weights(grid: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """The ``(size, grid)`` matrix of F.interpolate's bicubic upsampling along one axis."""
    eye = torch.eye(grid, device=like.device, dtype=like.dtype).view(1, grid, grid, 1)
    up = F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=True)
    return up.view(grid, size).T


def _resample(image, labels, weights, mask, grid: torch.Tensor):
    """Sample every tensor at the normalised positions ``grid`` (B, H, W, 2)."""
    batch, _, height, width = image.shape
    grid = grid.to(work_dtype(image))
    # With align_corners=True, -1 and 1 are the centres of the edge pixels, and the
    # "reflection" padding mirrors about them: numpy's "reflect", edge pixel not repeated.
    image = _grid_sample(image, grid, "bicubic")
    if weights is not None:
        weights = _grid_sample(weights[:, None], grid, "bilinear")[:, 0]
    # The nearest pixel, mirrored the same way, comes from sampling the image of flat
    # pixel indices in nearest mode: the ids never pass through floats, only indices
    # below H*W, which float32 holds exactly up to 2**24 pixels (float64 beyond).
    dtype = torch.float32 if height * width <= 2**24 else torch.float64
    flat = torch.arange(height * width, device=image.device, dtype=dtype)
    flat = flat.view(1, 1, height, width).expand(batch, 1, height, width)
    index = _grid_sample(flat, grid.to(dtype), "nearest").view(batch, -1).long()
    return image, _take(labels, index), weights, _take(mask, index)


def _grid_sample(values: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    out = F.grid_sample(
        values.to(grid.dtype), grid, mode=mode, padding_mode="reflection", align_corners=True
    )
    return out.to(values.dtype)


def _take(values: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    """Gather ``(B, [C,] H, W)`` values at the flat pixel ``index`` (B, H*W)."""
    if values is None:
        return None
    if values.dim() == 4:
        index = index[:, None].expand(-1, values.shape[1], -1)
    return torch.gather(values.flatten(-2), -1, index).view(values.shape)


def _exact_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    # On CUDA, matrix products may run in TF32 (set_float32_matmul_precision("high")),
    # which would put positions up to half a pixel off; float64 is cheap for them there.
    return torch.float64 if device.type == "cuda" else dtype


def _check_generator(generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            "generator must be a torch.Generator, e.g. torch.Generator().manual_seed(0), "
            f"so that the augmentation can be repeated; got {type(generator).__name__}"
        )


def _check_inputs(image, labels, weights, mask) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(
            "image must be a torch.Tensor with the axes (batch, channels, height, width); "
            f"got {shape} (a single-channel batch (B, H, W) becomes image[:, None])"
        )
    if not image.dtype.is_floating_point:
        raise ValueError(f"image must hold floats (e.g. image.float()); got {image.dtype}")
    batch, _, height, width = image.shape
    if height < 2 or width < 2:
        raise ValueError(f"images must be at least 2x2 pixels; got {height}x{width}")
    expected = (batch, height, width)
    parts = [
        ("labels", labels, LABEL_DTYPES, "integers (class or cell ids)"),
        ("weights", weights, None, "floats"),
        ("mask", mask, MASK_DTYPES, "bool or uint8 (annotated or not)"),
    ]
    for name, tensor, dtypes, kind in parts:
        if tensor is None and name != "labels":
            continue
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor; got {type(tensor).__name__}")
        if tuple(tensor.shape) != expected:
            raise ValueError(
                f"{name} must have the shape (batch, height, width) = {expected} of the "
                f"image without its channel axis; got {tuple(tensor.shape)}"
            )
        ok = tensor.dtype.is_floating_point if dtypes is None else tensor.dtype in dtypes
        if not ok:
            raise ValueError(f"{name} must hold {kind}; got {tensor.dtype}")
        if tensor.device != image.device:
            raise ValueError(f"{name} is on {tensor.device} but the image is on {image.device}")
