"""The train dock's live plot: training loss and validation scores per step.

Matplotlib renders into an off-screen Agg canvas on a thread of its own and the
GUI thread only shows the finished picture: a redraw costs 30 ms idle and three
to five times that while training shares the CPU, a stall the user would feel
if it ran on the GUI thread. Redraws are batched, at most one per second.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy

REDRAW_MS = 1000
MAX_POINTS = 400  # the loss curve is binned to this many points before drawing
SIZE = (360, 200)  # pixels


class _Rendered(QObject):
    # Emitted from the render thread; Qt queues it to the GUI thread.
    done = Signal(object)


class TrainingPlot(QLabel):
    """Loss (left axis) and validation pixel / Rand error (right axis)."""

    def __init__(self):
        super().__init__()
        self.setFixedHeight(SIZE[1])
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._figure = _figure()
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-unet-plot")
        self._rendered = _Rendered()
        self._rendered.done.connect(self._show)
        self._busy = self._dirty = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)
        self.destroyed.connect(lambda: self._renderer.shutdown(wait=False))
        self.clear()

    def clear(self) -> None:
        self.steps, self.losses, self.validations = [], [], []
        self._schedule()

    def add_loss(self, step: int, loss: float) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self._schedule()

    def add_validation(self, step: int, pixel_error: float, rand_error: float) -> None:
        self.validations.append((step, pixel_error, rand_error))
        self._schedule()

    def _schedule(self) -> None:
        self._dirty = True
        if not self._timer.isActive():
            self._timer.start()

    def _redraw(self) -> None:
        if self._busy:  # one render at a time; _show schedules the next
            return
        self._busy, self._dirty = True, False
        data = (np.asarray(self.steps), np.asarray(self.losses), list(self.validations))
        self._renderer.submit(self._render, *data)

    def _render(self, steps, losses, validations) -> None:
        image = None
        try:
            image = _draw(self._figure, steps, losses, validations)
        finally:  # always, so that a failed render does not stop later ones
            self._rendered.done.emit(image)

    def _show(self, image) -> None:
        self._busy = False
        if image is not None:
            self.setPixmap(QPixmap.fromImage(image))
        if self._dirty:
            self._schedule()


def _figure() -> tuple[Figure, dict]:
    figure = Figure(figsize=(SIZE[0] / 90, SIZE[1] / 90), dpi=90)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.14, right=0.86, bottom=0.2, top=0.86)
    loss_axis = figure.add_subplot()
    loss_axis.set_xlabel("step", fontsize=8)
    loss_axis.set_ylabel("loss", fontsize=8)
    score_axis = loss_axis.twinx()
    score_axis.set_ylabel("validation error", fontsize=8)
    score_axis.set_ylim(0, 1)
    for axis in (loss_axis, score_axis):
        axis.tick_params(labelsize=7)
    (loss,) = loss_axis.plot([], [], lw=1, color="tab:blue", label="loss")
    (pixel,) = score_axis.plot([], [], "o-", ms=3, lw=1, color="tab:orange", label="pixel error")
    (rand,) = score_axis.plot([], [], "s-", ms=3, lw=1, color="tab:green", label="Rand error")
    figure.legend(loc="upper center", ncols=3, fontsize=7, frameon=False)
    return figure, {"loss": loss, "pixel": pixel, "rand": rand, "axis": loss_axis}


def _draw(figure_and_lines, steps, losses, validations) -> QImage:
    figure, lines = figure_and_lines
    steps, losses = _binned(steps, losses)
    lines["loss"].set_data(steps, losses)
    scores = np.asarray(validations, float).reshape(-1, 3)
    lines["pixel"].set_data(scores[:, 0], scores[:, 1])
    lines["rand"].set_data(scores[:, 0], scores[:, 2])
    # Set even when empty (matplotlib's limits for no data are +-0.05 around 0), and
    # from finite losses only: a diverging run's inf must not stop the redraws.
    finite = losses[np.isfinite(losses)]
    lines["axis"].set_xlim(0, max(steps.max(initial=0), 1) * 1.02)
    lines["axis"].set_ylim(0, max(finite.max() if finite.size else 1.0, 1e-3) * 1.05)
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())
    height, width = rgba.shape[:2]
    image = QImage(rgba.tobytes(), width, height, 4 * width, QImage.Format.Format_RGBA8888)
    return image.copy()  # owns its pixels once the bytes are gone


def _binned(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means over equal bins: a smoother curve and a bounded drawing cost."""
    if len(steps) <= MAX_POINTS:
        return steps, values
    edges = np.linspace(0, len(steps), MAX_POINTS + 1).astype(int)
    return (
        np.add.reduceat(steps, edges[:-1]) / np.diff(edges),
        np.add.reduceat(values, edges[:-1]) / np.diff(edges),
    )
