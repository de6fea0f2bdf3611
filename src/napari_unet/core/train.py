"""Training as a generator of typed events, so a GUI and a command line drive one loop.

``Trainer.run()`` yields a :class:`Progress` after every step and ends with
:class:`Done`; ``stop()`` ends it after the current step (a checkpoint is saved
when ``TrainConfig.out`` is set). The loss is the pixel-weighted cross entropy
of the paper with the Eq. 2 weights, warped with each augmented sample.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint
from .augment import AugmentSettings, augment
from .data import Pair, TileSampler, normalization
from .device import default_device
from .model import UNet


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; saved with every checkpoint."""

    steps: int = 1000
    minutes: float | None = None
    batch_size: int = 4
    tile: int = 196  # output pixels per side
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.99  # for "sgd", the paper's
    w0: float = 10.0
    sigma: float = 5.0
    class_balance: bool = True
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    seed: int = 0
    device: str = "auto"
    out: str | None = None

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("steps, batch_size and lr must be positive")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {self.optimizer!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    loss: float
    steps_per_second: float
    seconds_left: float


@dataclass(frozen=True)
class Done:
    step: int
    stopped: bool
    path: Path | None


class Trainer:
    """Trains ``model`` on ``pairs``; see :meth:`run`."""

    def __init__(
        self,
        model: UNet,
        pairs: list[Pair],
        config: TrainConfig | None = None,
        normalize: bool = True,
    ):
        """``normalize``: fix the model's input normalisation from ``pairs``; False
        when fine-tuning a model on corrected labels, to keep the one it learnt with."""
        self.config = config or TrainConfig()
        self.model, self.pairs = model, pairs
        self.step = 0
        self._stop = threading.Event()
        self.device = default_device(self.config.device)
        out_size = self.config.tile
        in_size = model.input_size(out_size)
        if model.cfg.padding == "same":
            in_size = -(-out_size // model.grid) * model.grid
        self.in_size, self.out_size = in_size, model.output_size(in_size)
        largest = max(max(p.labels.shape) for p in pairs)
        if self.out_size > largest:
            raise ValueError(
                f"the tile ({self.out_size} output pixels) is larger than every "
                f"training image (largest side {largest}); choose a smaller tile"
            )
        torch.manual_seed(self.config.seed)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        cfg = self.config
        self.sampler = TileSampler(
            pairs, in_size, self.generator, cfg.w0, cfg.sigma, cfg.class_balance
        )
        if normalize:
            model.set_input_normalization(*normalization(pairs))
        self.model.to(self.device)
        params = self.model.parameters()
        if self.config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                params, lr=self.config.lr, momentum=self.config.momentum
            )
        else:
            self.optimizer = torch.optim.Adam(params, lr=self.config.lr)

    @classmethod
    def resume(cls, path, pairs: list[Pair], config: TrainConfig | None = None) -> Trainer:
        """Continue a checkpoint: its weights, normalisation, step count and optimizer
        state; ``config`` (e.g. more steps) defaults to the saved settings."""
        model, saved = checkpoint.load(path)
        if config is None:
            settings = dict(saved["training"])
            settings["augment"] = AugmentSettings(
                **{
                    k: tuple(v) if isinstance(v, list) else v
                    for k, v in settings["augment"].items()
                }
            )
            config = TrainConfig(**settings)
        trainer = cls(model, pairs, config, normalize=False)
        trainer.step = int(saved.get("step", 0))
        state = checkpoint.load_optimizer_state(path)
        if state is not None:
            trainer.optimizer.load_state_dict(state)
        return trainer

    def stop(self) -> None:
        """End :meth:`run` after the current step (thread-safe)."""
        self._stop.set()

    def loss(self) -> torch.Tensor:
        """One batch: sample, augment, forward, weighted cross entropy."""
        image, target, weights = self.sampler.sample(self.config.batch_size)
        image, target, weights, _ = augment(
            torch.from_numpy(image),
            torch.from_numpy(target),
            torch.from_numpy(weights),
            generator=self.generator,
            settings=self.config.augment,
        )
        crop = (self.in_size - self.out_size) // 2
        inner = slice(crop, crop + self.out_size)
        target, weights = target[:, inner, inner], weights[:, inner, inner]
        logits = self.model(image.to(self.device))
        per_pixel = F.cross_entropy(logits, target.to(self.device), reduction="none")
        weights = weights.to(self.device)
        return (per_pixel * weights).sum() / weights.sum().clamp_min(1e-6)

    def run(self):
        """Train; yields :class:`Progress` per step and finally :class:`Done`."""
        cfg = self.config
        deadline = None if cfg.minutes is None else time.monotonic() + 60 * cfg.minutes
        start, first = time.monotonic(), self.step
        self.model.train()
        while self.step < cfg.steps and not self._stop.is_set():
            if deadline is not None and time.monotonic() > deadline:
                break
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss()
            loss.backward()
            self.optimizer.step()
            self.step += 1
            rate = (self.step - first) / max(time.monotonic() - start, 1e-9)
            left = (cfg.steps - self.step) / rate
            if deadline is not None:
                left = min(left, max(0.0, deadline - time.monotonic()))
            yield Progress(self.step, cfg.steps, float(loss.detach()), rate, left)
        self.model.eval()
        path = None
        if cfg.out is not None:
            config = {"training": cfg.to_dict(), "step": self.step}
            path = checkpoint.save(
                cfg.out, self.model, _jsonable(config), self.optimizer.state_dict()
            )
        yield Done(self.step, self._stop.is_set(), path)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
