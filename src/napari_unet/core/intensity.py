"""Random brightness, contrast and gamma for :func:`.augment.augment`, batched in torch."""

from __future__ import annotations

import math

import torch

from .config import NO_INTENSITY


def adjust_intensity(
    image: torch.Tensor,
    uniform: torch.Tensor,
    brightness: tuple[float, float],
    contrast: tuple[float, float],
    gamma: tuple[float, float],
) -> torch.Tensor:
    """Gamma, then contrast, then brightness, each drawn per sample between its bounds
    (see :class:`.config.AugmentSettings`); ``uniform`` (B, 3) holds the draws in [0, 1)."""
    if (brightness, contrast, gamma) == tuple(NO_INTENSITY.values()):
        return image
    work = work_dtype(image)
    out = image.to(work)
    uniform = uniform.to(work).view(-1, 3, 1, 1, 1)
    low, high = out.flatten(-2).aminmax(dim=-1)
    low, span = low[..., None, None], (high - low)[..., None, None]
    if gamma != (1.0, 1.0):
        exponent = _log_uniform(gamma, uniform[:, 2])
        # Rescaled per channel to [0, 1] so that gamma bends the intensities the same way
        # whatever their range; a constant channel (span 0) stays as it is.
        unit = ((out - low) / span.clamp(min=torch.finfo(work).tiny)).clamp_(0, 1)
        out = low + span * unit.pow(exponent)
    if contrast != (1.0, 1.0):
        mean = out.mean(dim=(-2, -1), keepdim=True)
        out = mean + _log_uniform(contrast, uniform[:, 1]) * (out - mean)
    if brightness != (0.0, 0.0):
        shift = brightness[0] + (brightness[1] - brightness[0]) * uniform[:, 0]
        out = out + shift * span
    return out.to(image.dtype)


def work_dtype(image: torch.Tensor) -> torch.dtype:
    """float64 for float64 images, else float32."""
    # Positions up to thousands of pixels need float32 at least: half precision would
    # put samples up to a pixel off (the elastic warp uses this dtype too).
    return torch.float64 if image.dtype == torch.float64 else torch.float32


def _log_uniform(bounds: tuple[float, float], uniform: torch.Tensor) -> torch.Tensor:
    low, high = math.log(bounds[0]), math.log(bounds[1])
    return torch.exp(low + (high - low) * uniform)
