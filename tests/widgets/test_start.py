"""The start command README.md gives opens what README.md says it opens."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import napari
import napari.__main__
import pytest
from qtpy.QtWidgets import QDockWidget

# In a fresh process: which modules the Annotate and Weight map docks import, with
# their workers and the thread that loads the kernels they call (run here at once).
ANNOTATING = """
import os, sys, time
import napari
from qtpy.QtWidgets import QApplication
from napari_unet._widgets import _warm

_warm.start = lambda: None  # no compiling process
viewer = napari.Viewer(show=False)
annotate = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")[1]
viewer.window.add_plugin_dock_widget("napari-unet", "Weight map")
viewer.open_sample("napari-unet", "touching_cells")
_warm.warm_up()
end = time.monotonic() + 60
def done():
    weights = "cells labels weights" in viewer.layers
    return weights and not annotate.busy and "touching" in str(annotate.counts.value)


while not done() and time.monotonic() < end:
    QApplication.processEvents()
    time.sleep(0.01)
assert done(), "the docks did not compute"
print("torch" in sys.modules, flush=True)
os._exit(0)  # not the viewer's teardown, which this test is not about
"""

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


@pytest.mark.slow
def test_annotating_imports_no_torch():
    """``napari --with napari-unet`` opens Annotate alone: torch, 1.2 s to import,
    holding the GIL as the viewer opens, waits for the Train or Predict dock."""
    run = subprocess.run(
        [sys.executable, "-c", ANNOTATING], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == "False"
