"""The start command README.md gives opens what README.md says it opens."""

import re
import shlex
import sys
from pathlib import Path

import napari
import napari.__main__
import pytest
from qtpy.QtWidgets import QDockWidget

README = Path(__file__).resolve().parents[2] / "README.md"
DOCKS = ["Annotate", "Weight map", "Train", "Predict"]


@pytest.fixture
def started(monkeypatch):
    """The viewer napari's entry point makes for the command of "Install and start"."""
    command = re.search(r"pip install [^\n]* && (napari [^\n]*)", README.read_text()).group(1)
    monkeypatch.setattr(sys, "argv", shlex.split(command))
    opened = []
    monkeypatch.setattr(napari, "run", lambda **_: opened.append(napari.current_viewer()))
    try:
        napari.__main__._run()
        (viewer,) = opened
        yield viewer
    finally:
        if napari.current_viewer() is not None:
            napari.current_viewer().close()


def our_docks(viewer) -> dict:
    window = viewer.window._qt_window
    docks = window.findChildren(QDockWidget)
    return {d.windowTitle(): d for d in docks if "(napari-unet)" in d.windowTitle()}


def test_the_readme_start_command_opens_the_four_docks_as_tabs(started):
    docks = our_docks(started)
    assert sorted(docks) == sorted(f"{name} (napari-unet)" for name in DOCKS)
    first = docks["Annotate (napari-unet)"]
    tabbed = started.window._qt_window.tabifiedDockWidgets(first)
    assert set(tabbed) == set(docks.values()) - {first}


def test_the_weights_wait_for_their_tab_and_lie_under_the_labels(started, qtbot):
    started.open_sample("napari-unet", "touching_cells")
    qtbot.wait(600)  # past the docks' quiet time after an edit
    assert [layer.name for layer in started.layers] == [
        "cells",
        "cells labels",
        "cells labels gaps",
    ]
    our_docks(started)["Weight map (napari-unet)"].raise_()
    qtbot.waitUntil(lambda: "cells labels weights" in started.layers, timeout=30_000)
    names = [layer.name for layer in started.layers]
    assert names.index("cells labels weights") < names.index("cells labels")
