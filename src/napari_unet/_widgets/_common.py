"""Small pieces the dock widgets share: their base class (a scrolling column whose
choosers survive renames) and rows, device choices, knowing when a dock closes,
connections undone on closing, long runs on threads of their own, and the
weight-map controls kept equal across docks."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable

import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSpinBox
from magicgui.widgets.bases import CategoricalWidget
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject, QThreadPool, QTimer
from qtpy.QtWidgets import QDockWidget, QWidget

from ..core.windows import changed_window
from . import _warm


def same_data(seen, live) -> bool:
    """Whether ``live`` (a layer's data, or None) equals ``seen``, the copy a dock's
    worker read last: then it has nothing to recompute."""
    if seen is None or live is None:
        return seen is None and live is None
    live = np.asarray(live)
    if seen.shape != live.shape or seen.ndim < 2:
        return np.array_equal(seen, live)
    # In one compiled pass, not a mask of the plane: half np.array_equal's time.
    width = seen.shape[-1]
    return changed_window(seen.reshape(-1, width), live.reshape(-1, width)) is None


def planes_of(labels, region):
    """``(labels, region)`` of each plane of two layers' data (``region`` None for
    none), as the docks' workers read them one at a time: a 2D layer is one plane,
    and a stack's slices are one-slice stacks, which training reads as a stack."""
    stack = labels.ndim == 3
    for z in range(labels.shape[0] if stack else 1):
        index = slice(z, z + 1) if stack else ...
        yield labels[index], None if region is None else region[index]


def read_before(seen, labels, region) -> bool:
    """Whether ``seen`` (None, or what a worker kept of a plane: its ``labels`` and
    ``region`` copies) was read from these data."""
    return seen is not None and same_data(seen.labels, labels) and same_data(seen.region, region)


# After this long, a still compiling warm-up process is worth a word (_warm.news).
NEWS_MS = 5000


def _tell_news() -> None:
    line = _warm.news()
    if line:
        show_info(line)


_docks = 0  # not yet deleted (closing a viewer deletes its docks)


def _count_dock(root: QWidget) -> None:
    """Count a dock until Qt deletes it; when none is left, workers still waiting
    for the compiling process give up (``_warm.abandon``)."""
    global _docks
    _docks += 1
    root.destroyed.connect(_dock_deleted)


def _dock_deleted() -> None:
    global _docks
    _docks -= 1
    if _docks <= 0:
        _warm.abandon()


class Dock(Container):
    """The base of the plugin's docks: labelled controls in a column that scrolls
    when the window is shorter than the docks (all four open need about 1900
    pixels), and choosers that keep their layers when a layer is renamed."""

    def __init__(self):
        super().__init__(labels=True, scrollable=True)
        self._column().addStretch()  # controls packed at the top of a tall dock
        _count_dock(self.root_native_widget)
        _warm.start()
        QTimer.singleShot(NEWS_MS, _tell_news)

    @property
    def native(self):
        # napari docks a magicgui widget's .native, which is the widget inside the
        # scroll area; the scroll area itself is the root.
        return self.root_native_widget

    def _column(self):
        return self.root_native_widget.widget().layout()

    def insert_qt(self, widget, after) -> None:
        """Add a plain Qt widget right below the control ``after``, inside the scroll
        area. Call it once every control is in: magicgui places the controls it adds
        later by its own count, which leaves Qt widgets out, so they would land above."""
        column = self._column()
        for index in range(column.count()):
            item = column.itemAt(index).widget()
            if item is not None and (item is after.native or item.isAncestorOf(after.native)):
                column.insertWidget(index + 1, widget)
                return
        raise ValueError(f"{after!r} is not in this dock")

    def wrap(self, *labels) -> None:
        """Let the long lines of these labels wrap, and the dock be as narrow as
        its controls then allow: magicgui sizes the scroll area to the widest line
        it has seen, and a hint or a path can be 750 pixels long."""
        for label in labels:
            label.native.setWordWrap(True)
        # Now, as napari's start shows the window before Qt lays the dock out (a
        # dock shown wider keeps its width), and again once napari's style applies.
        self._fit_width()
        QTimer.singleShot(0, self._fit_width)

    def _fit_width(self) -> None:
        with contextlib.suppress(RuntimeError):  # the dock was deleted meanwhile
            scroll = self.root_native_widget
            for widget in scroll.widget().findChildren(QWidget):
                widget.updateGeometry()  # the layouts still hold the unwrapped hints
            bar = scroll.verticalScrollBar().sizeHint().width()
            scroll.setMinimumWidth(scroll.widget().minimumSizeHint().width() + bar)

    def fail(self, message: str) -> None:
        """Say why an action did not go on: in the dock's status, which stays, and in
        a notification."""
        self.status.value = message
        show_error(message)

    def reset_choices(self, *_) -> None:
        """Called by napari whenever a layer is added, removed or renamed: keep what
        each chooser holds while it is still offered. magicgui matches a chooser's
        items by their names, so a renamed layer was dropped from it (an optional
        chooser went empty) and its handlers saw the change; now they see a change
        only when one is left."""
        choosers = list(_choosers(self))
        before = [(widget, widget.value) for widget in choosers]
        with contextlib.ExitStack() as stack:
            for widget in choosers:
                stack.enter_context(widget.changed.blocked())
            super().reset_choices()
            for widget, value in before:
                offered = widget.choices
                if isinstance(value, list):
                    widget.value = [v for v in value if v in offered]
                elif value in offered:
                    widget.value = value
        for widget, value in before:
            if widget.value != value:
                widget.changed.emit(widget.value)


def _choosers(container):
    for widget in container:
        if isinstance(widget, CategoricalWidget):
            yield widget
        elif isinstance(widget, Container):
            yield from _choosers(widget)


class CloseWatcher(QObject):
    """Calls ``callback`` when ``widget`` closes, leaves its dock or is deleted.

    napari sends dock widgets no close event: its close button only takes the
    widget out of the window (``setParent(None)``), and closing the viewer
    deletes it. ``callback`` may be called more than once.
    """

    def __init__(self, widget, callback: Callable[[], None]):
        super().__init__(widget)  # a child: lives and dies with the widget
        self._callback = callback
        widget.installEventFilter(self)
        widget.destroyed.connect(callback)

    def eventFilter(self, watched, event) -> bool:
        kind = event.type()
        if kind == QEvent.Type.Close or (
            kind == QEvent.Type.ParentChange and watched.parent() is None
        ):
            self._callback()
        return False


class FirstView(QObject):
    """Whether a dock has been in view yet. ``napari --with napari-unet __all__``
    opens the docks as tabs, and a tab behind another is out of view: a dock that
    adds layers as it works waits until its tab is first shown (Qt's
    ``visibilityChanged``), then calls ``callback``, rather than add layers nobody
    asked for. A dock never shown (a viewer without a window) counts as in view.
    """

    def __init__(self, widget, callback: Callable[[], None]):
        root = widget.root_native_widget
        super().__init__(root)  # a child: lives and dies with the widget
        self.seen = None  # not known until Qt says
        self._callback = callback
        self._dock = None
        root.installEventFilter(self)

    @property
    def waiting(self) -> bool:
        return self.seen is False

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            dock = watched.parent()
            if isinstance(dock, QDockWidget) and dock is not self._dock:
                self._dock = dock
                dock.visibilityChanged.connect(self._on_visibility)
        return False

    def _on_visibility(self, visible: bool) -> None:
        if visible and not self.seen:
            self.seen = True
            self._callback()
        elif not visible and self.seen is None:
            self.seen = False


def connect_all(connections: list) -> list:
    """Make ``(signal, slot)`` connections; returns them, for :func:`disconnect_all`."""
    for signal, slot in connections:
        signal.connect(slot)
    return connections


def chooser_links(viewer, *choosers) -> list:
    """``(signal, slot)`` pairs for :func:`connect_all` that refresh ``choosers``
    as layers are added to or removed from ``viewer``."""
    events = viewer.layers.events
    return [(e, c.reset_choices) for c in choosers for e in (events.inserted, events.removed)]


def start_long(worker) -> None:
    """Start a worker that holds its thread for minutes (training, prediction) on a
    thread of its own: napari's pool has one thread per core, and the docks' live
    workers (counts, weights) would wait for long runs to end."""
    pool = QThreadPool.globalInstance()
    pool.setMaxThreadCount(pool.maxThreadCount() + 1)
    worker.finished.connect(lambda: pool.setMaxThreadCount(pool.maxThreadCount() - 1))
    worker.start()


class WorkerSlot:
    """A bound method as the slot of a worker's signal, called as PyQt6 calls it under
    either binding: not once :func:`disconnect_all` undid the connection, nor once its
    object is gone. A worker emits from its own thread, so Qt queues the calls; PySide6
    still makes those queued before a disconnect (on controls deleted by then), and
    those queued before the method's object was freed (a crash)."""

    def __init__(self, method: Callable) -> None:
        self._method: weakref.WeakMethod | None = weakref.WeakMethod(method)

    def __call__(self, *args) -> None:
        method = None if self._method is None else self._method()
        if method is not None:
            method(*args)

    def cut(self) -> None:
        self._method = None


def disconnect_all(connections: list) -> None:
    """Undo connections made by :func:`connect_all`, from the list kept, not read again
    from their objects: a finished worker's signals may be deleted by the time a
    dock's close handler runs again, as Qt deletes the dock (as late as napari's exit)."""
    for signal, slot in connections:
        if isinstance(slot, WorkerSlot):
            slot.cut()
        with contextlib.suppress(TypeError, RuntimeError):  # already disconnected
            signal.disconnect(slot)


def on_removed(widget, callback: Callable[[], None]) -> CloseWatcher:
    """Call ``callback`` when ``widget`` (a magicgui widget) closes or leaves the viewer."""
    return CloseWatcher(widget.native, callback)


def weight_boxes() -> tuple:
    """``(w0, sigma, class balance, ignore outline)``: the loss-weight controls of
    the Train and Weight map docks, made alike for both (``WeightControls`` keeps
    them equal)."""
    w0 = FloatSpinBox(
        label="w0",
        max=100.0,
        step=1.0,
        tooltip="Height of Eq. 2's border term: how much the gaps between touching cells weigh",
    )
    sigma = FloatSpinBox(
        label="sigma", min=0.5, max=50.0, step=0.5, tooltip="Width of the border term, in pixels"
    )
    ignore_outline = CheckBox(
        text="Ignore outline",
        tooltip="No weight on the background pixel just outside each cell where the "
        "background is wide: an outline drawn by hand is uncertain by a pixel. Gaps of "
        "1-2 pixels between touching cells keep theirs.",
    )
    return w0, sigma, CheckBox(text="Class balance"), ignore_outline


class WeightControls:
    """Keeps a dock's weight controls (w0, sigma, class balance, ignore outline) equal
    to ``session.weights``, both ways. Signals hold bound methods weakly, so the dock
    that keeps this object is never kept alive by the Session; :meth:`unlink` when the
    dock closes."""

    def __init__(self, session, w0, sigma, class_balance, ignore_outline):
        self._session = session
        self._controls = {
            "w0": w0,
            "sigma": sigma,
            "class_balance": class_balance,
            "ignore_outline": ignore_outline,
        }
        self.pull()
        for control in self._controls.values():
            control.changed.connect(self.push)
        session.weights_changed.connect(self.pull)

    def pull(self) -> None:
        # Setting a control to its own value emits nothing, so this settles at once.
        for name, control in self._controls.items():
            control.value = getattr(self._session.weights, name)

    def push(self, *_) -> None:
        values = {name: control.value for name, control in self._controls.items()}
        self._session.set_weights(**values)

    def unlink(self) -> None:
        self._session.weights_changed.disconnect(self.pull)
