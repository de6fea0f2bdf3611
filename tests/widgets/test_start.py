"""The start command README.md gives opens what README.md says it opens."""

import re
import shlex
import sys
from pathlib import Path

import napari
import napari.__main__
from qtpy.QtWidgets import QDockWidget

README = Path(__file__).resolve().parents[2] / "README.md"
DOCKS = ["Annotate", "Weight map", "Train", "Predict"]


def test_the_readme_start_command_opens_the_four_docks_as_tabs(monkeypatch, qtbot):
    # The one after the install, in "Install and start".
    command = re.search(r"pip install [^\n]* && (napari [^\n]*)", README.read_text()).group(1)
    monkeypatch.setattr(sys, "argv", shlex.split(command))
    opened = []
    monkeypatch.setattr(napari, "run", lambda **_: opened.append(napari.current_viewer()))
    try:
        napari.__main__._run()
        (viewer,) = opened
        window = viewer.window._qt_window
        ours = [d for d in window.findChildren(QDockWidget) if "napari-unet" in d.windowTitle()]
        assert sorted(d.windowTitle() for d in ours) == sorted(f"{n} (napari-unet)" for n in DOCKS)
        assert set(window.tabifiedDockWidgets(ours[0])) == set(ours[1:])
    finally:
        if napari.current_viewer() is not None:
            napari.current_viewer().close()
