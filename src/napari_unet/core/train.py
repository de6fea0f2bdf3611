"""Training as a generator of typed events, so a GUI and a command line drive one loop.

``Trainer.run()`` yields :class:`Progress` after every step, :class:`Validation`
and :class:`Preview` at their intervals, :class:`Saved` whenever a checkpoint is
written, :class:`Notice` for what the user should know (a batch or tile halved
after running out of memory, an earlier model kept), :class:`Paused` while held,
and ends with :class:`Done`. ``stop()``, ``pause()`` and ``resume()`` work from
any thread and act between steps. The loss is the pixel-weighted cross entropy
of the paper with the Eq. 2 weights, warped with each sample's augmentation on
the training device.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint
from .augment import augment
from .config import TrainConfig
from .data import Pair, TileSampler, normalization, target_and_weights
from .device import computes_bfloat16, default_device, is_out_of_memory
from .events import Done, Notice, Paused, Preview, Progress, Saved, Validation
from .metrics import score_segmentation
from .model import UNet
from .predict import check_input, predict_tiled

_PAUSE_POLL = 0.25  # seconds between Paused events while held


class Trainer:
    """Trains ``model`` on ``pairs``; see :meth:`run`.

    Parameters
    ----------
    model : UNet
    pairs : list of Pair
        Training pairs (``data.make_pairs``).
    config : TrainConfig, optional
    normalize : bool
        Fix the model's input normalisation from ``pairs``; False when fine-tuning a
        model on corrected labels, to keep the one it learnt with.
    validation : list of Pair, optional
        Scored every ``config.validate_every`` steps and at the end; with
        ``config.keep_best`` the weights that scored best are those the run ends with
        (the optimizer state and step count stay the last step's, for resuming).
    preview : ndarray, optional
        An image the model takes (``(Y, X)`` or ``(C, Y, X)``) whose cell probability
        is yielded every ``config.preview_every`` steps.
    """

    def __init__(
        self,
        model: UNet,
        pairs: list[Pair],
        config: TrainConfig | None = None,
        normalize: bool = True,
        validation: list[Pair] | None = None,
        preview: np.ndarray | None = None,
    ):
        self.config = cfg = config or TrainConfig()
        self.model, self.pairs = model, pairs
        self.validation = list(validation or [])
        if cfg.keep_best and not self.validation:
            raise ValueError(
                "keep_best needs a validation set: give validation pairs (napari-unet "
                "train: --val-images, or --val-fraction to hold some out)"
            )
        self.step = 0
        self.seconds = 0.0  # spent training, pauses left out; a time budget counts it
        # The step, validation score and weights that scored best, and the last score.
        self.best: tuple[int, float] | None = None
        self._best_weights: dict | None = None
        self._criterion, self._last_score = "", math.nan
        self.kept_step: int | None = None  # set when the run ends with self.best's weights
        self._stop, self._running = threading.Event(), threading.Event()
        self._running.set()
        self.device = default_device(cfg.device)
        self._set_tile(cfg.tile)
        largest = max(max(p.labels.shape) for p in pairs)
        if self.out_size > largest:
            raise ValueError(
                f"the tile ({self.out_size} output pixels) is larger than every "
                f"training image (largest side {largest}); choose a smaller tile"
            )
        if preview is not None:
            check_input(model, preview)
        self.preview = preview
        self.generator = torch.Generator()
        self._seed(0)
        settings = (cfg.w0, cfg.sigma, cfg.class_balance, cfg.ignore_outline)
        self.sampler = TileSampler(pairs, self.in_size, self.out_size, self.generator, *settings)
        self._targets = [target_and_weights(p, *settings) for p in self.validation]
        if normalize:
            model.set_input_normalization(*normalization(pairs))
        # Channels-last steps: 1.15x faster on the CPU in float32, 1.8x in bfloat16.
        self.model.to(self.device, memory_format=torch.channels_last)
        self._amp = cfg.amp and computes_bfloat16(self.device)
        params = self.model.parameters()
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
        else:
            self.optimizer = torch.optim.Adam(params, lr=cfg.lr)

    @classmethod
    def from_checkpoint(
        cls, path, pairs: list[Pair], config: TrainConfig | None = None, **kwargs
    ) -> Trainer:
        """Continue a checkpoint: its weights, normalisation, step count, training time
        and optimizer state; ``config`` (e.g. more steps) defaults to the saved
        settings. Budgets count what the checkpoint has done already, so the learning
        rate schedule goes on where it stopped: give more steps or minutes to train
        longer. Sampling and augmentation draw on from a seed of the step reached,
        not again from the first step's."""
        model, saved = checkpoint.load(path)
        config = config or TrainConfig.from_dict(saved["training"])
        trainer = cls(model, pairs, config, normalize=False, **kwargs)
        trainer.step = int(saved.get("step", 0))
        trainer.seconds = float(saved.get("seconds", 0.0))
        trainer._seed(trainer.step)
        state = checkpoint.load_optimizer_state(path)
        if state is not None:
            trainer.optimizer.load_state_dict(state)
        return trainer

    def stop(self) -> None:
        """End :meth:`run` after the current step, even while paused."""
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        """Hold :meth:`run` after the current step until :meth:`resume` or :meth:`stop`."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def _seed(self, step: int) -> None:
        """Seed dropout, sampling and augmentation for a run that starts at ``step``."""
        seed = self.config.seed
        if step > 0:
            seed = int(np.random.SeedSequence([seed, step]).generate_state(1)[0])
        torch.manual_seed(seed)
        self.generator.manual_seed(seed)

    def _set_tile(self, out_size: int) -> None:
        self.in_size, self.out_size = tile_sizes(self.model, out_size)

    def loss(self) -> torch.Tensor:
        """One batch: sample, augment on the device, forward, weighted cross entropy."""
        batch = self.sampler.sample(self.config.batch_size)
        image, target, weights = (torch.from_numpy(a).to(self.device) for a in batch)
        image, target, weights, _ = augment(
            image, target, weights, generator=self.generator, settings=self.config.augment
        )
        crop = (self.in_size - self.out_size) // 2
        inner = slice(crop, crop + self.out_size)
        target, weights = target[:, inner, inner], weights[:, inner, inner]
        image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self._amp):
            logits = self.model(image)
        per_pixel = F.cross_entropy(logits.float(), target, reduction="none")
        return (per_pixel * weights).sum() / weights.sum().clamp_min(1e-6)

    def run(self):
        """Train; yields the events of the module docstring, :class:`Done` last.

        A consumer that abandons the generator by closing it (the train dock does so
        when napari cancels its worker) still gets the checkpoint of the last
        finished step.
        """
        try:
            yield from self._steps()
        except GeneratorExit:
            self.model.eval()
            if self.config.out is not None:
                self.save()
            raise
        self.model.eval()
        cfg = self.config
        if self.validation and (cfg.validate_every == 0 or self.step % cfg.validate_every):
            yield self._validation()
        kept = self._keep_best()
        if kept:
            yield Notice(kept, level="info")
        path = None
        if cfg.out is not None:
            path = self.save()
            yield Saved(self.step, path)
        yield Done(self.step, self._stop.is_set(), path)

    def _steps(self):
        cfg = self.config
        budget = math.inf if cfg.minutes is None else 60 * cfg.minutes
        start, first, held, before = time.monotonic(), self.step, 0.0, self.seconds
        self.model.train()
        while self.step < cfg.steps and not self._stop.is_set():
            if not self._running.is_set():
                # Yield now and then while held, so a consumer can still give up.
                since = time.monotonic()
                yield Paused(self.step)
                self._running.wait(_PAUSE_POLL)
                held += time.monotonic() - since
                continue
            self.seconds = before + time.monotonic() - start - held
            if self.seconds > budget:
                break
            fraction = max(self.step / cfg.steps, self.seconds / budget)
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * _schedule(cfg.schedule, fraction)
            self.optimizer.zero_grad(set_to_none=True)
            try:
                loss = self.loss()
                loss.backward()
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                yield Notice(self._shrink())
                cfg = self.config
                continue
            self.optimizer.step()
            self.step += 1
            elapsed = time.monotonic() - start - held
            self.seconds = before + elapsed
            rate = (self.step - first) / max(elapsed, 1e-9)
            left = min((cfg.steps - self.step) / rate, max(0.0, budget - self.seconds))
            yield Progress(self.step, cfg.steps, float(loss.detach()), rate, left, self.seconds)
            yield from self._periodic()

    def _periodic(self):
        cfg = self.config
        if self.validation and _due(self.step, cfg.validate_every):
            yield self._validation()
        if self.preview is not None and _due(self.step, cfg.preview_every):
            yield Preview(self.step, predict_tiled(self.model, self.preview)[1])
        if cfg.out is not None and _due(self.step, cfg.checkpoint_every):
            yield Saved(self.step, self.save())

    def _shrink(self) -> str:
        """Halve the batch, or the tile at batch 1, after running out of memory."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        cfg = self.config
        if cfg.batch_size > 1:
            self.config = dataclasses.replace(cfg, batch_size=cfg.batch_size // 2)
            return f"out of memory: batch halved to {self.config.batch_size}"
        smaller = self.out_size // 2
        if smaller < self.model.grid:
            raise RuntimeError(
                f"out of memory even at batch 1 and a {self.out_size}-pixel tile on {self.device}"
            )
        self._set_tile(smaller)
        self.sampler.in_size, self.sampler.out_size = self.in_size, self.out_size
        self.config = dataclasses.replace(cfg, tile=self.out_size)
        return f"out of memory: tile halved to {self.out_size} output pixels"

    def validate(self) -> Validation:
        """Score the model on the validation pairs (see :class:`Validation`)."""
        losses, errors, rand, vi = [], [], [], []
        for pair, (target, weights) in zip(self.validation, self._targets, strict=True):
            image = pair.image[0] if self.model.in_channels == 1 else pair.image
            probability = predict_tiled(self.model, image)
            picked = np.take_along_axis(probability, target[None], 0)[0]
            log_p = np.log(np.maximum(picked, 1e-12))
            losses.append(-(log_p * weights).sum() / max(weights.sum(), 1e-6))
            wrong = (probability[1] > 0.5) != (target > 0)
            errors.append(wrong[pair.annotated].mean())
            if pair.annotated.all():
                scores = score_segmentation(probability[1], target > 0)
                rand.append(scores["rand_error"])
                vi.append(scores["vi"])
        return Validation(self.step, *(_mean(v) for v in (losses, errors, rand, vi)))

    def _validation(self) -> Validation:
        scores = self.validate()
        if self.config.keep_best:
            if math.isnan(scores.rand_error):
                self._criterion, score = "loss", scores.loss
            else:
                self._criterion, score = "adapted Rand error", scores.rand_error
            # Ties go to the later, longer-trained weights.
            if self.best is None or score <= self.best[1]:
                self.best = (self.step, score)
                self._best_weights = {
                    k: v.detach().clone() for k, v in self.model.state_dict().items()
                }
            self._last_score = score
        return scores

    def _keep_best(self) -> str | None:
        """After the last step's validation, load the best weights if they are not the
        last step's, and say so."""
        if self.best is None or self.best[0] == self.step:
            return None
        step, score = self.best
        self.model.load_state_dict(self._best_weights)
        self.kept_step = step
        return (
            f"kept the model of step {step}, the best on the validation set "
            f"({self._criterion} {score:.4f}, against {self._last_score:.4f} at step {self.step})"
        )

    def save(self) -> Path:
        """Write the model, settings, step and optimizer state to ``config.out``."""
        config = {"training": self.config.to_dict(), "step": self.step, "seconds": self.seconds}
        if self.kept_step is not None:
            config["kept_step"] = self.kept_step
        return checkpoint.save(
            self.config.out, self.model, _jsonable(config), self.optimizer.state_dict()
        )


def tile_sizes(model: UNet, out_size: int) -> tuple[int, int]:
    """``(input, output)`` pixels per side of the training tile for a requested
    ``out_size``: the smallest the network takes with at least that output."""
    in_size = model.input_size(out_size)
    if model.cfg.padding == "same":
        in_size = -(-out_size // model.grid) * model.grid
    return in_size, model.output_size(in_size)


def fitting_tile(model: UNet, tile: int, largest: int) -> int:
    """The largest training tile (output pixels) up to ``tile`` that fits in an
    image side of ``largest`` pixels; ValueError when even the smallest does not."""
    for out_size in range(min(tile, largest), 0, -1):
        fitted = tile_sizes(model, out_size)[1]
        if fitted <= largest:
            return fitted
    raise ValueError(
        f"the training images are too small for this network: its smallest tile has "
        f"{tile_sizes(model, 1)[1]} output pixels a side, and the largest image side is "
        f"{largest}; choose a shallower network"
    )


def warm_up() -> None:
    """Load ahead of time what the first run would load lazily: torch's compiler
    front end, imported by every optimizer (about 2 s). A GUI calls this in a thread
    ahead of the first run (the plugin's Train dock: once there is a training set),
    rather than when the user clicks Train; the plugin's docks compile the weight-map
    kernels apart (``_widgets._warm``)."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else math.nan


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _schedule(name: str, fraction: float) -> float:
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(fraction, 1.0)))
    return 1.0


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
