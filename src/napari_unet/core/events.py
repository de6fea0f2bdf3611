"""The events :meth:`train.Trainer.run` yields, for a GUI or a command line to show."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Progress:
    """After each step: the mean loss of that step, and the pace. ``total`` is the
    step budget (10**9 where only a time budget was given, so use ``seconds`` and
    ``seconds_left`` for a progress bar then). ``seconds``: the time trained so far,
    pauses left out."""

    step: int
    total: int
    loss: float
    steps_per_second: float
    seconds_left: float
    seconds: float


@dataclass(frozen=True)
class Validation:
    """Means over the validation pairs; Rand error and VI only count fully
    annotated pairs (NaN when there is none)."""

    step: int
    loss: float
    pixel_error: float
    rand_error: float
    vi: float


@dataclass(frozen=True)
class Preview:
    """Cell probability of the preview image, ``(Y, X)`` float32."""

    step: int
    probability: np.ndarray


@dataclass(frozen=True)
class Saved:
    """A checkpoint written to ``path`` (model, settings, step and optimizer)."""

    step: int
    path: Path


@dataclass(frozen=True)
class Notice:
    """Something the user should know: ``level`` "warning" for a change they did not
    ask for (a batch halved after running out of memory), "info" for news (the
    validation kept an earlier model)."""

    message: str
    level: str = "warning"


@dataclass(frozen=True)
class Paused:
    """Training holds after ``step`` until resumed or stopped."""

    step: int


@dataclass(frozen=True)
class Done:
    """The last event: ``stopped`` if stopped before the budget ran out; ``path`` the
    model file written at the end (None without ``TrainConfig.out``)."""

    step: int
    stopped: bool
    path: Path | None
