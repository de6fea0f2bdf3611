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


class _Removal(QObject):
    def __init__(self, callback: Callable[[], None]):
        super().__init__()
        self._callback = callback

    def eventFilter(self, watched, event) -> bool:
        # napari detaches a dock's widget (setParent(None)) when the dock is closed.
        if event.type() == QEvent.Type.ParentChange and watched.parent() is None:
            self._callback()
        return False


def on_removed(widget, callback: Callable[[], None]) -> None:
    """Call ``callback`` when ``widget`` (a magicgui widget) is taken out of its dock."""
    watcher = _Removal(callback)
    widget.native.installEventFilter(watcher)
    widget.native._removal_watcher = watcher  # lives as long as the widget
