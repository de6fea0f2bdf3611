"""The U-Net of Ronneberger, Fischer & Brox (2015), with its size arithmetic.

``UNet(padding="valid")`` is the paper's network: unpadded 3x3 convolutions, so
the output is smaller than the input by ``2 * margin`` pixels and every output
pixel sees only real (or mirrored) image data. ``padding="same"`` is the padded
variant most public samples use; its output has the input's size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

PADDINGS = ("valid", "same")
# Instance, group and layer norm compute statistics over the tile, so a tiled
# prediction would depend on where the tiles fall: only tile-independent norms.
NORMS = ("none", "batch")


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to rebuild a :class:`UNet`; saved with every model file."""

    in_channels: int = 1
    n_classes: int = 2
    depth: int = 4
    width: int = 64
    padding: str = "valid"
    norm: str = "none"
    dropout: float = 0.5
    input_mean: tuple[float, ...] = (0.0,)
    input_std: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        checks = [
            (self.in_channels >= 1, "in_channels must be at least 1", self.in_channels),
            (
                self.n_classes >= 2,
                "n_classes must be at least 2 (background and foreground)",
                self.n_classes,
            ),
            (
                1 <= self.depth <= 8,
                "depth (the number of poolings) must be between 1 and 8",
                self.depth,
            ),
            (
                self.width >= 1,
                "width (channels of the first level) must be at least 1",
                self.width,
            ),
            (self.padding in PADDINGS, f"padding must be one of {PADDINGS}", self.padding),
            (
                self.norm in NORMS,
                f"norm must be one of {NORMS} (tile-dependent norms such as "
                "instance norm would make tiled prediction inexact)",
                self.norm,
            ),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)", self.dropout),
        ]
        for ok, message, value in checks:
            if not ok:
                raise ValueError(f"{message}; got {value!r}")
        for name in ("input_mean", "input_std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) == 1:
                values = values * self.in_channels
            if len(values) != self.in_channels:
                raise ValueError(f"{name} needs one value per input channel ({self.in_channels})")
            object.__setattr__(self, name, values)
        if not all(s > 0 and math.isfinite(s) for s in self.input_std):
            raise ValueError(f"input_std must be positive and finite; got {self.input_std}")


def valid_output_size(input_size: int, depth: int) -> int | None:
    """Output length of a valid U-Net for one input length, or None if invalid.

    Each level loses 4 pixels to its two unpadded convolutions and must leave an
    even length for the 2x2 pooling.
    """
    n = input_size
    for _ in range(depth):
        n -= 4
        if n < 2 or n % 2:
            return None
        n //= 2
    n -= 4
    if n < 1:
        return None
    for _ in range(depth):
        n = 2 * n - 4
    return n if n >= 1 else None


def valid_margin(depth: int) -> int:
    """Pixels a valid U-Net of ``depth`` poolings loses on each side (92 for depth 4)."""
    return 6 * 2**depth - 4


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, pad: int, norm: str):
        layers: list[nn.Module] = []
        for c in (cin, cout):
            layers.append(nn.Conv2d(c, cout, 3, padding=pad, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def _center_crop(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    dy = (x.shape[-2] - shape[-2]) // 2
    dx = (x.shape[-1] - shape[-1]) // 2
    return x[..., dy : dy + shape[-2], dx : dx + shape[-1]]


class UNet(nn.Module):
    """U-Net for 2D images, channel-first ``(N, C, Y, X)`` float tensors; the defaults
    are the paper's network (trained as in ``TrainConfig.paper()``).

    Parameters
    ----------
    in_channels, n_classes : int
        Input channels and output classes (logits, one per class).
    depth : int
        Number of 2x2 poolings (4 in the paper).
    width : int
        Channels of the first level, doubled at each level (64 in the paper).
    padding : {"valid", "same"}
        "valid" is the paper's unpadded network; "same" pads each convolution.
    norm : {"none", "batch"}
        Normalisation after each convolution. Batch norm in eval mode is a fixed
        affine map, so tiled prediction stays exact.
    dropout : float
        Dropout probability at the end of the contracting path.
    input_mean, input_std : sequence of float
        Per-channel input normalisation applied inside ``forward``, so that a
        saved model normalises raw images exactly as it did in training.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        depth: int = 4,
        width: int = 64,
        padding: str = "valid",
        norm: str = "none",
        dropout: float = 0.5,
        input_mean: Sequence[float] = (0.0,),
        input_std: Sequence[float] = (1.0,),
    ):
        super().__init__()
        cfg = UNetConfig(
            in_channels,
            n_classes,
            depth,
            width,
            padding,
            norm,
            dropout,
            tuple(input_mean),
            tuple(input_std),
        )
        self.cfg = cfg
        pad = 1 if padding == "same" else 0
        chans = [width * 2**k for k in range(depth + 1)]
        self.down = nn.ModuleList(
            _DoubleConv(cin, cout, pad, norm)
            for cin, cout in zip([in_channels, *chans[:-2]], chans[:-1], strict=True)
        )
        self.bottom = _DoubleConv(chans[-2], chans[-1], pad, norm)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[k + 1], chans[k], 2, stride=2) for k in reversed(range(depth))
        )
        self.dec = nn.ModuleList(
            _DoubleConv(2 * chans[k], chans[k], pad, norm) for k in reversed(range(depth))
        )
        self.head = nn.Conv2d(width, n_classes, 1)
        self.register_buffer("input_mean", torch.tensor(cfg.input_mean).view(-1, 1, 1))
        self.register_buffer("input_std", torch.tensor(cfg.input_std).view(-1, 1, 1))
        self.reset_parameters()

    @classmethod
    def from_state(cls, config: dict, state: Mapping[str, torch.Tensor]) -> UNet:
        """Build a network from ``config`` and ``state`` without initialising it first."""
        with torch.device("meta"):
            model = cls(**config)
        model.load_state_dict(state, assign=True)
        return model

    @property
    def config(self) -> dict:
        """Keyword arguments that rebuild this network: ``UNet(**model.config)``."""
        out = asdict(self.cfg)
        out["input_mean"] = [float(v) for v in self.input_mean.flatten()]
        out["input_std"] = [float(v) for v in self.input_std.flatten()]
        return out

    @property
    def in_channels(self) -> int:
        return self.cfg.in_channels

    @property
    def n_classes(self) -> int:
        return self.cfg.n_classes

    @property
    def depth(self) -> int:
        return self.cfg.depth

    @property
    def grid(self) -> int:
        """The pooling grid ``2**depth``: shifts by multiples of it commute with the net."""
        return 2**self.cfg.depth

    @property
    def margin(self) -> int:
        """Pixels lost on each side: 92 for the paper's depth-4 valid net, 0 for same."""
        return valid_margin(self.depth) if self.cfg.padding == "valid" else 0

    @property
    def halo(self) -> int:
        """Mirror padding that gives every image pixel real context in a whole-image pass.

        The margin for a valid net. For a same net, the receptive field rounded up
        to the pooling grid, so that the zero padding of its convolutions never
        reaches an image pixel and the pooling grid stays on the image origin.
        """
        if self.cfg.padding == "valid":
            return self.margin
        return -(-(valid_margin(self.depth) + self.grid) // self.grid) * self.grid

    def as_valid(self) -> UNet:
        """These weights evaluated without padding (shared with this net, not copied).

        Started 2 pixels past the pooling grid, the unpadded evaluation of a same
        net equals the same net at every pixel whose receptive field lies inside the
        input, and skips the border pixels a same net computes only to discard.
        """
        if self.cfg.padding == "valid":
            return self
        return UNet.from_state({**self.config, "padding": "valid"}, self.state_dict()).train(
            self.training
        )

    def reset_parameters(self) -> None:
        """He initialisation, std = sqrt(2 / N) with N the inputs of one unit."""
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                fan_in = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
            elif isinstance(mod, nn.ConvTranspose2d):
                # A stride-2 2x2 up-convolution feeds each output pixel from one input pixel.
                fan_in = mod.in_channels
            else:
                continue
            nn.init.normal_(mod.weight, 0.0, math.sqrt(2.0 / fan_in))
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)

    def set_input_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Fix the per-channel input normalisation (saved with the model)."""
        cfg = UNetConfig(
            **{**asdict(self.cfg), "input_mean": tuple(mean), "input_std": tuple(std)}
        )
        self.cfg = cfg
        self.input_mean.copy_(torch.tensor(cfg.input_mean).view(-1, 1, 1))
        self.input_std.copy_(torch.tensor(cfg.input_std).view(-1, 1, 1))

    def output_size(self, input_size: int) -> int:
        """Output length for one input length; ``ValueError`` naming valid ones if invalid."""
        if self.cfg.padding == "same":
            if input_size >= self.grid and input_size % self.grid == 0:
                return input_size
        else:
            out = valid_output_size(input_size, self.depth)
            if out is not None:
                return out
        below, above = self.nearest_valid_inputs(input_size)
        near = ", ".join(str(s) for s in (below, above) if s is not None)
        raise ValueError(
            f"input size {input_size} is not valid for this U-Net (depth {self.depth}, "
            f"{self.cfg.padding} padding); nearest valid input sizes: {near}"
        )

    def input_size(self, output_size: int) -> int:
        """The smallest valid input length whose output is at least ``output_size``."""
        size = max(1, output_size) + 2 * self.margin
        _, above = self.nearest_valid_inputs(size)
        return size if self._is_valid(size) else above

    def nearest_valid_inputs(self, size: int) -> tuple[int | None, int]:
        """The nearest valid input lengths at or below and above ``size``."""
        below = next((s for s in range(size, 0, -1) if self._is_valid(s)), None)
        above = next(s for s in itertools.count(size + 1) if self._is_valid(s))
        return below, above

    def _is_valid(self, size: int) -> bool:
        if self.cfg.padding == "same":
            return size >= self.grid and size % self.grid == 0
        return valid_output_size(size, self.depth) is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for n in x.shape[-2:]:
            self.output_size(int(n))
        x = (x - self.input_mean) / self.input_std
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.dropout(self.bottom(x))
        for up, block in zip(self.up, self.dec, strict=True):
            x = up(x)
            x = block(torch.cat([_center_crop(skips.pop(), x.shape), x], dim=1))
        return self.head(x)
