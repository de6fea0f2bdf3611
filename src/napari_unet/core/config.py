"""Training settings, how samples are augmented among them, saved with every
checkpoint (kept apart from the code that uses them, :mod:`.train` and
:mod:`.augment`)."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

# The intensity settings that change nothing (:mod:`.intensity` skips them). Here, not
# there: this module does not import torch, which the Annotate dock does without.
NO_INTENSITY = {"brightness": (0.0, 0.0), "contrast": (1.0, 1.0), "gamma": (1.0, 1.0)}


@dataclass(frozen=True)
class AugmentSettings:
    """How training samples are augmented; saved with the model like its other settings.

    Parameters
    ----------
    elastic : bool
        Random elastic deformation, as in the paper.
    sigma, grid : float, int
        Standard deviation in pixels of each displacement component on the coarse grid,
        and its points per side (10 and 3 in the paper). Sigma 0 deforms nothing.
    flips, rotations : bool
        Mirror each sample along y and/or x; rotate it by a multiple of 90 degrees
        (only 0 or 180 when the samples are not square, so that their shape is kept).
    brightness : (float, float)
        Additive change, as a fraction of each channel's intensity span (max - min) in
        the sample; drawn uniformly.
    contrast, gamma : (float, float)
        Contrast factor around each channel's mean, and gamma exponent applied to each
        channel rescaled to [0, 1] and mapped back (so any intensity range works);
        drawn log-uniformly, so that ``(1/a, a)`` is symmetric about 1.

    Brightness ``(0, 0)`` or contrast or gamma ``(1, 1)`` turns that change off.
    """

    elastic: bool = True
    sigma: float = 10.0
    grid: int = 3
    flips: bool = True
    rotations: bool = True
    brightness: tuple[float, float] = (-0.1, 0.1)
    contrast: tuple[float, float] = (0.8, 1.25)
    gamma: tuple[float, float] = (0.8, 1.25)

    def __post_init__(self):
        for name in ("brightness", "contrast", "gamma"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 2 or not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name} must be a (low, high) pair of finite numbers")
            object.__setattr__(self, name, values)
        object.__setattr__(self, "sigma", float(self.sigma))
        checks = [
            (0 <= self.sigma < math.inf, "sigma (displacement in pixels) must be 0 or more"),
            (int(self.grid) == self.grid >= 2, "grid must be a whole number of at least 2"),
            (self.brightness[0] <= self.brightness[1], "brightness needs low <= high"),
            (0 < self.contrast[0] <= self.contrast[1], "contrast needs 0 < low <= high"),
            (0 < self.gamma[0] <= self.gamma[1], "gamma needs 0 < low <= high"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}; got {self}")
        object.__setattr__(self, "grid", int(self.grid))

    @classmethod
    def elastic_only(cls, sigma: float = 10.0, grid: int = 3) -> AugmentSettings:
        """The paper's elastic deformation alone: no flips, rotations or intensity changes."""
        return cls(sigma=sigma, grid=grid, flips=False, rotations=False, **NO_INTENSITY)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; saved with every checkpoint.

    ``steps`` and ``minutes`` are budgets: training ends at whichever comes first.
    ``tile`` is in output pixels per side. ``schedule`` "cosine" lowers the learning
    rate to 0 over the budget. ``amp``: bfloat16 mixed precision where the device
    computes it natively (``device.computes_bfloat16``; ignored elsewhere).
    ``validate_every``, ``preview_every`` and ``checkpoint_every`` are in steps, 0 for
    never; validation also runs at the end when there is a validation set, and a
    checkpoint is always written at the end when ``out`` is set. ``keep_best``: with a
    validation set, end with the weights that scored best on it (the adapted Rand
    error where its pairs are fully annotated, else the loss) rather than the last.
    """

    steps: int = 1000
    minutes: float | None = None
    batch_size: int = 4
    tile: int = 256
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.99  # for "sgd", the paper's
    schedule: str = "cosine"
    # Lower than the paper's w0 10 with class balance, which on ISBI 2012 pushed the
    # network to membranes too thick at 0.5. w0 1.5 scored ISBI a little better after
    # 5 minutes (0.092-0.097 against 0.104) and the same after 30, but separated truly
    # touching cells less reliably (benchmarks/README.md, seventh session). w0 4.5
    # scored both benchmarks better as trained but not with test-time augmentation,
    # the prediction default (tenth session).
    w0: float = 3.0
    sigma: float = 5.0
    class_balance: bool = False  # border term included: see class_balance.class_weights
    # No weight on the background pixel along each outline (core.outline): ISBI 2012
    # after 5 minutes 0.087 against 0.108 in one run, lower in every seed; after 30
    # 0.101 against 0.105 (earlier runs); touching cells the same (benchmarks/README.md,
    # ninth session).
    ignore_outline: bool = True
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    validate_every: int = 200
    # Off: on ISBI 2012 after 30 minutes, with 5 of the 25 slices held out, the best
    # validated weights scored 0.060 with test-time augmentation against the last
    # step's 0.063, but 0.106 against 0.068 as trained; the plain validation score is
    # too noisy to pick by (benchmarks/README.md, thirteenth session).
    keep_best: bool = False
    preview_every: int = 25
    checkpoint_every: int = 0
    out: str | None = None

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.tile < 1:
            raise ValueError("steps, batch_size and tile must be positive")
        # "not x > 0" also refuses NaN, which would make the budget endless.
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a positive number; got {self.lr}")
        if self.minutes is not None and not 0 < self.minutes < math.inf:
            raise ValueError(f"minutes must be a positive number; got {self.minutes}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be at least 0 and below 1; got {self.momentum}")
        if not 0 <= self.w0 < math.inf or not 0 < self.sigma < math.inf:
            raise ValueError(
                f"w0 must be 0 or more and sigma positive (pixels); got {self.w0}, {self.sigma}"
            )
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(self.device)):
            # Named only: whether the machine has it is checked when training starts.
            raise ValueError(
                f"{self.device!r} is not a device: use auto, cpu, cuda, cuda:1 or mps"
            )
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine'; got {self.schedule!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more; got {self.seed}")
        if min(self.validate_every, self.preview_every, self.checkpoint_every) < 0:
            raise ValueError("validate_every, preview_every and checkpoint_every must be >= 0")

    @classmethod
    def paper(cls, **changes) -> TrainConfig:
        """The training of Ronneberger et al. (2015), for their network (``UNet()``'s
        defaults): SGD with momentum 0.99 on one 388-pixel output tile (572-pixel
        input) a step at a constant rate; Eq. 2 with w0 10, sigma 5 and class balance,
        no outline ignored; the elastic deformation alone; float32. The paper gives
        no learning rate: 0.01 here, for this loss (the weighted mean over pixels).
        ``changes`` override any setting."""
        settings = {
            "optimizer": "sgd",
            "momentum": 0.99,
            "lr": 0.01,
            "batch_size": 1,
            "tile": 388,
            "schedule": "constant",
            "w0": 10.0,
            "sigma": 5.0,
            "class_balance": True,
            "ignore_outline": False,
            "augment": AugmentSettings.elastic_only(),
            "amp": False,
        }
        return cls(**{**settings, **changes})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, settings: dict) -> TrainConfig:
        """The inverse of :meth:`to_dict` (after a JSON round trip); unknown keys are
        refused so that a typo is not silently ignored."""
        settings = dict(settings)
        unknown = settings.keys() - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(sorted(unknown))}")
        augment_settings = {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in settings.pop("augment", {}).items()
        }
        return cls(**settings, augment=AugmentSettings(**augment_settings))
