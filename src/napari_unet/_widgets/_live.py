"""Recomputing after edits: a debounce timer on the edits of some layers, and the
worker of a dock that recomputes after each edit, one run at a time."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from qtpy.QtCore import QTimer

from ._common import WorkerSlot

DEBOUNCE_MS = 200  # quiet time after the last edit before recomputing, by default


class EditWatcher(QTimer):
    """A debounce timer on the edits of some layers: calls ``callback`` ``quiet_ms``
    after the last paint, data change, undo or rename of any of them, or
    :meth:`schedule`. napari changes the data at every move of a brush stroke, so a
    stroke that pauses that long is computed before it ends."""

    def __init__(self, callback: Callable[[], None], quiet_ms: int = DEBOUNCE_MS):
        super().__init__()
        self.setSingleShot(True)
        self.setInterval(quiet_ms)
        self.timeout.connect(callback)
        self._events: list = []

    def watch(self, layers) -> None:
        """Follow ``layers`` (None entries skipped) instead of the previous ones."""
        self.unwatch()
        for layer in layers:
            if layer is not None:
                events = layer.events
                for event in (events.paint, events.data, events.set_data, events.name):
                    event.connect(self.schedule)
                    self._events.append(event)
        self.schedule()

    def unwatch(self) -> None:
        for event in self._events:
            event.disconnect(self.schedule)
        self._events = []

    def schedule(self, *_) -> None:
        self.start()


class LiveJob:
    """The worker of a dock that recomputes after each edit, one run at a time.

    Edits (followed by :attr:`timer`, an :class:`EditWatcher`) start ``begin``
    after a quiet time; ``begin`` gathers on the GUI thread what the run needs
    (copies, or the layers' data for a worker that reads them itself) and returns
    an unstarted worker, or None when there is nothing to compute. Edits made
    during a run start one more run when it finishes, which sees every edit so far.
    """

    def __init__(self, begin: Callable, quiet_ms: int = DEBOUNCE_MS):
        self._begin = begin
        self.timer = EditWatcher(self.start, quiet_ms)
        self.worker = None
        self._pending = False
        self.stopped = False

    @property
    def busy(self) -> bool:
        """Whether a run is going on or waiting to."""
        return self.worker is not None or self._pending or self.timer.isActive()

    def start(self) -> None:
        if self.worker is not None:
            self._pending = True
            return
        self._pending = False
        self.timer.stop()  # this run sees every edit so far; later ones restart the timer
        self.worker = self._begin()
        if self.worker is not None:
            self.worker.finished.connect(WorkerSlot(self._finished))
            self.worker.start()

    def _finished(self) -> None:
        self.worker = None
        if self._pending:
            self.start()

    def stop(self) -> bool:
        """Stop following edits and quit the run; False if stopped already."""
        if self.stopped:
            return False
        self.stopped = True
        # At interpreter exit Qt may have deleted the timer already; an exception
        # here, in a slot, would abort the process.
        with contextlib.suppress(RuntimeError):
            self.timer.stop()
        self._pending = False
        self.timer.unwatch()
        if self.worker is not None:
            self.worker.quit()
        return True
