"""Rows of controls side by side, to keep a dock short enough for a laptop screen."""

from __future__ import annotations

import contextlib

from magicgui.widgets import Container
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel


def row(*widgets, labels: bool = True) -> Container:
    """``widgets`` side by side, each after its label (``labels``)."""
    container = Container(widgets=widgets, layout="horizontal", labels=labels)
    container.margins = (0, 0, 0, 0)
    return container


def line_up(rows: list[Container]) -> None:
    """Line up rows of labelled controls made by :func:`row`, each with as many: every
    control takes an equal share of its row, and each column of labels the width of
    its widest, so that labels and fields start at the same place in every row. Done
    now and again once napari's style has set the font (before ``Dock.wrap`` fits the
    dock's width, if called first)."""
    for row_ in rows:
        for k in range(len(row_)):
            row_.native.layout().setStretch(k, 1)
    _widen_labels(rows)
    QTimer.singleShot(0, lambda: _widen_labels(rows))


def _widen_labels(rows: list[Container]) -> None:
    with contextlib.suppress(RuntimeError):  # the dock was deleted meanwhile
        columns = zip(*(row_.native.findChildren(QLabel) for row_ in rows), strict=True)
        for labels in columns:
            width = max(label.sizeHint().width() for label in labels) + 4  # a gap
            for label in labels:
                label.setMinimumWidth(width)
