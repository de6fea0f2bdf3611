"""The docks' workers: napari's, made to end quietly when their signals are gone
and to close a generator quit mid-run, and for the work redone after each edit
not registered as the viewer's tasks.

A script that closes the viewer while a dock's worker computes, and then exits,
aborted Python: as the interpreter exits, Qt's objects are deleted, the worker's
signals among them, and the worker's last ``finished.emit()`` raised a
``RuntimeError`` in a Qt thread, which PyQt makes a fatal error
(``Aborted``, exit status 134). napari waits for the workers only when its
application quits, which such a script never does. (A generator worker stopped
mid-run by the same deletion ends with superqt's warning "RuntimeError in aborted
thread", not an abort.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from napari.qt import threading as napari_threading
from superqt.utils import create_worker as unregistered_worker


class _EndsQuietly:
    def run(self) -> None:
        try:
            super().run()
        except RuntimeError:
            if _alive(self.signals):
                raise
            # Deleted: there is no one left to tell that this worker ended.


def _alive(qobject) -> bool:
    try:
        qobject.objectName()
    except RuntimeError:  # either binding's error for a deleted object
        return False
    return True


class GeneratorWorker(_EndsQuietly, napari_threading.GeneratorWorker):
    def work(self):
        try:
            return super().work()
        finally:
            # superqt leaves the generator of a worker quit mid-run suspended, and
            # napari keeps the worker as a task until the window closes: closing it
            # runs its cleanup and lets go of its frame (a prediction's image copy).
            self._gen.close()


class FunctionWorker(_EndsQuietly, napari_threading.FunctionWorker):
    pass


def _kind(func: Callable) -> type:
    return GeneratorWorker if inspect.isgeneratorfunction(func) else FunctionWorker


def create_worker(func: Callable, *args, **kwargs):
    """napari's ``create_worker``, with the workers above, for runs (training,
    prediction): napari lists each as a task of the current viewer, and asks before
    its window closes while one runs."""
    return napari_threading.create_worker(func, *args, _worker_class=_kind(func), **kwargs)


def create_live_worker(func: Callable, *args):
    """A worker for what a dock recomputes after each edit (counts, weights), not
    listed as a task: napari keeps a viewer's tasks, and so their workers, until its
    window closes, and a worker keeps its arguments. The Annotate dock passes the
    copies of the labels it last counted, so every edit kept one more: 350 MiB after
    15 strokes on a 2048x2048 plane. It would also ask the user to confirm a close
    during a count of a fraction of a second. Errors reach the user as before."""
    return unregistered_worker(func, *args, _worker_class=_kind(func))
