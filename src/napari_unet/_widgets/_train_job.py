"""The worker side of a training run: arrays in, the core Trainer's events out;
what its end leaves, also once its dock is gone; and where runs keep their model
files.

Kept apart from the dock so that what runs in the worker thread touches no
layer and no control.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import platformdirs
from napari.utils.notifications import show_info

from ..core.checkpoint import model_path
from ..core.config import TrainConfig
from ..core.data import make_pairs, split_validation
from ..core.events import Done, Notice
from ..core.model import UNet
from ..core.train import Trainer, warm_up
from . import _warm

_warming: threading.Thread | None = None


def warm_optimizers() -> None:
    """Once per process, load in a thread what a run loads as it starts
    (``core.train.warm_up``, about 2 s), once the Train dock sees a training set: not as
    the Train dock opens, where that import, holding the GIL, made the viewer open
    about 1 s slower (``benchmarks/README.md``). Not a daemon: an interpreter that
    exits meanwhile waits for the import to end, rather than break it with a
    traceback."""
    global _warming
    if _warming is None:
        _warming = threading.Thread(target=warm_up, name="napari-unet-warm-up")
        _warming.start()


def _warmed() -> None:
    """Wait for :func:`warm_optimizers`' import: two threads importing
    ``torch._dynamo`` at once may see it half loaded."""
    if _warming is not None:
        _warming.join()


def models_dir() -> Path:
    """Where runs keep their checkpoints until the user saves one elsewhere."""
    return Path(platformdirs.user_data_dir("napari-unet")) / "models"


# Names handed out in this process: a run writes its file only at its first
# checkpoint, so another viewer's run started in the same second would reuse it.
_HANDED_OUT: set[Path] = set()


def new_model_path(name: str) -> Path:
    """A file name in ``models_dir()`` for a run on ``name`` that no file has yet,
    nor any run of this process."""
    models_dir().mkdir(parents=True, exist_ok=True)
    # A layer name may hold "/" or characters some file systems refuse.
    safe = re.sub(r"[^\w.-]+", "_", name).strip("._") or "model"
    stem = f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, k = models_dir() / stem, 1
    while model_path(out).exists() or out in _HANDED_OUT:
        k += 1
        out = models_dir() / f"{stem}-{k}"
    _HANDED_OUT.add(out)
    return out


class RunFailed(Exception):
    """A run's RuntimeError, raised again as another type: superqt drops a generator
    worker's RuntimeError without its errored and finished signals (taking it for a
    deleted Qt object), which would leave the dock waiting for the run to end."""


@dataclass(frozen=True)
class NoPreview(Notice):
    """A notice that the run previews nothing: the dock removes the layer it made."""


@dataclass(repr=False)
class TrainJob:
    """Everything a run needs, as arrays; controls that work before the Trainer exists."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    regions: list[np.ndarray | None]
    model: UNet | None  # None once its run's end has handed it over
    config: TrainConfig
    fine_tune: bool
    preview: np.ndarray | None = None
    val_fraction: float = 0.0  # of the pairs, held out for validation
    names: list[str] | None = None  # of the images, for messages
    trainer: Trainer | None = None
    dock_closed: bool = False  # by the user during the run: its end is told in a notice
    _stop: threading.Event = field(default_factory=threading.Event)
    _paused: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _events: Generator | None = None

    def __repr__(self) -> str:
        # napari names the run's task by it, in the dialog that asks before the window
        # closes while training: not 5,000 characters of arrays and network.
        return f"training on {', '.join(self.names or ['the training set'])}"

    def run(self):
        """Worker body: yields the Trainer's events; a bad training set returns a message.
        Once it ends, the job lets go of the training set and the trainer: napari keeps
        every worker, and so this job, until its window goes."""
        try:
            return (yield from self._run())
        finally:
            with self._lock:
                self.images, self.labels, self.regions = [], [], []
                self.preview, self.trainer, self._events = None, None, None

    def _run(self):
        if not _warm.wait():  # every dock closed: a run stopped before its first step
            yield Done(step=0, stopped=True, path=None)
            return ""
        try:
            if self.preview is not None:  # a slice of a lazy image: read it once, here
                self.preview = np.asarray(self.preview)
            pairs = make_pairs(
                self.images,
                self.labels,
                self.regions,
                in_channels=self.model.in_channels,
                names=self.names,
            )
            pairs, validation = split_validation(pairs, self.val_fraction)
            _warmed()
            trainer = Trainer(
                self.model,
                pairs,
                self.config,
                normalize=not self.fine_tune,
                validation=validation,
                preview=self.preview,
            )
        except ValueError as err:
            return str(err)
        if self.preview is not None and not np.isfinite(self.preview).all():
            # The slice in view need not be annotated, so make_pairs did not check it.
            trainer.preview = None
            yield NoPreview("The slice in view holds NaN or infinite values: no preview.")
        names = self.names or [f"pair {k + 1}" for k in range(len(self.images))]
        unmarked = [
            f"'{n}'"
            for n, r in zip(names, self.regions, strict=True)
            if r is not None and not r.any()
        ]
        if unmarked:
            yield Notice(
                f"Nothing is marked in the annotated region of {', '.join(unmarked)}: "
                "left out of this run (paint the region where the labels are right)."
            )
        if self.val_fraction > 0 and not validation:
            yield Notice(_no_validation(len(pairs)))
        with self._lock:  # pause, resume and stop act on the trainer from now on
            self.trainer = trainer
            if self._stop.is_set():
                trainer.stop()
            if self._paused.is_set():
                trainer.pause()
        self._events = trainer.run()
        try:
            for event in self._events:
                if isinstance(event, Done) and event.step == 0:
                    self._forget_untrained()
                    event = dataclasses.replace(event, path=None)
                yield event
        except RuntimeError as err:  # torch's, e.g. out of memory even at batch 1
            raise RunFailed(str(err)) from err
        return ""

    def abandon(self) -> None:
        """For a cancelled worker, which never resumes its generator (napari cancels
        the workers of a closing viewer): close the run, which saves its checkpoint.
        Runs in the worker's thread, so never during a step."""
        if self._events is not None:
            try:
                self._events.close()
            except Exception as err:  # raised in a Qt slot, it would abort Python (PyQt)
                warnings.warn(f"the cancelled run's checkpoint was not saved: {err}", stacklevel=1)
            if self.trainer.step == 0:
                self._forget_untrained()

    def _forget_untrained(self) -> None:
        """A run stopped before its first step leaves no model file behind."""
        model_path(self.config.out).unlink(missing_ok=True)

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            if self.trainer is not None:
                self.trainer.stop()

    def pause(self) -> None:
        with self._lock:
            self._paused.set()
            if self.trainer is not None:
                self.trainer.pause()

    def resume(self) -> None:
        with self._lock:
            self._paused.clear()
            if self.trainer is not None:
                self.trainer.resume()


def _no_validation(count: int) -> str:
    if count < 5:
        return (
            "No validation: holding out a share needs 5 or more annotated images or "
            f"slices, and the training set has {count}; all of them train."
        )
    return (
        f"No validation: holding out would leave no painted cell to train on; all {count} train."
    )


def closed_during(done: Done) -> str:
    """What a run whose dock was closed during it left, said when it ends."""
    if done.step == 0:
        return (
            "Training stopped before its first step, as its dock was closed; the current "
            "model is unchanged."
        )
    return (
        f"Training stopped after {done.step} steps, as its dock was closed; the model is "
        f"saved to {done.path}."
    )


class RunEnd:
    """What a run's end does, on the GUI thread, connected to its worker apart from
    the dock (napari frees a dock closed during the run): the model reaches the
    Session, the preview (a ``PreviewLayer``) of a run that trained no step goes,
    and the run of a dock the user closed says how it ended."""

    def __init__(self, session, preview, job: TrainJob):
        self._held = (session, preview, job)

    def __call__(self, event) -> None:
        if not isinstance(event, Done) or self._held is None:
            return
        session, preview, job = self._held
        # napari keeps every worker, and so this slot, until its window goes: held,
        # the preview would keep a closed viewer alive.
        self._held = None
        # The Session keeps a copy: the job, kept too, lets go of the network (its GPU
        # memory where it trained on one).
        model, job.model = job.model, None
        if event.step > 0:
            session.set_model(model, event.path)  # the Trainer trained it in place
        else:  # the current model stays as it was
            preview.discard()
        if job.dock_closed:  # no status left to say it in
            show_info(closed_during(event))

    def release(self) -> None:
        """After the run's last event: a run that ended without ``Done`` (it failed,
        or its training set was refused) lets go of the network all the same, which
        a retry after running out of GPU memory would otherwise add to."""
        if self._held is not None:
            self._held[2].model = None
            self._held = None
