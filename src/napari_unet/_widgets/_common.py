"""Small pieces the dock widgets share: device choices and knowing when a dock closes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from qtpy.QtCore import QEvent, QObject


def device_choices() -> list[tuple[str, str]]:
    """``(label, value)`` pairs for a device ComboBox; labels show free memory."""
    from ..core.device import default_device, describe

    names = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    best = str(default_device("auto"))
    choices = [(f"auto ({best})", "auto")]
    return choices + [(describe(torch.device(name)), name) for name in names]


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


def on_removed(widget, callback: Callable[[], None]) -> CloseWatcher:
    """Call ``callback`` when ``widget`` (a magicgui widget) closes or leaves the viewer."""
    return CloseWatcher(widget.native, callback)
