"""Render each dock of napari-unet in a real viewer, as the README shows them.

    xvfb-run -a python docs/screenshots.py        # writes docs/*.png

The loop of the README on the generated sample: paint the top half, mark it
as the annotated region, preview the weights, train 300 steps and predict into
a new Labels layer.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# Toasts for errors only (read when napari first loads its settings; "none" would
# show every level): an info left from a step would cover the next step's picture.
os.environ.setdefault("NAPARI_APPLICATION_GUI_NOTIFICATION_LEVEL", "error")

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).parent
SIZE = (1500, 1000)


def wait(condition, timeout: float = 300.0) -> None:
    """Run the Qt event loop until ``condition()`` holds."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the viewer did not get there in time")
        QApplication.processEvents()
        time.sleep(0.01)


def shoot(viewer, docks: dict, shown: str, name: str) -> None:
    for key, dock in docks.items():
        dock.setVisible(key == shown)
    viewer.window.resize(*SIZE)
    wait(lambda: True)
    for _ in range(20):
        QApplication.processEvents()
    viewer.screenshot(str(HERE / f"{name}.png"), canvas_only=False)
    print(f"wrote docs/{name}.png")


def main(train_steps: int = 300) -> None:
    viewer = napari.Viewer()
    viewer.open_sample("napari-unet", "touching_cells")
    truth = viewer.layers["cells labels"].data
    viewer.layers.remove("cells labels")
    docks = {}

    def open_dock(name: str):
        docks[name], widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
        return widget

    annotate = open_dock("Annotate")
    annotate.image.value = viewer.layers["cells"]
    annotate.create_labels()
    labels = viewer.layers["cells labels"]
    top = np.nonzero(truth[:128] > 0)
    labels.data_setitem(top, truth[:128][top])
    annotate.mark_region()
    viewer.layers["cells labels region"].data_setitem(np.nonzero(np.ones((128, 256))), 1)
    viewer.layers.selection.active = labels
    wait(lambda: not annotate.busy)
    annotate.add_to_training_set()
    shoot(viewer, docks, "Annotate", "annotate")

    weights = open_dock("Weight map")
    weights.labels_layer.value = labels
    wait(lambda: "cells labels weights" in viewer.layers and not weights.busy)
    for layer in ("cells labels gaps", "cells labels region"):
        viewer.layers[layer].visible = False
    shoot(viewer, docks, "Weight map", "weights")
    viewer.layers["cells labels weights"].visible = False

    train = open_dock("Train")
    train.device.value = "cpu"
    train.net_depth.value, train.net_width.value = 3, 8
    train.tile.value, train.batch.value = 60, 4
    train.start()
    wait(lambda: bool(train.plot.steps) and train.plot.steps[-1] >= train_steps)
    train.stop()
    wait(lambda: train._worker is None)
    wait(lambda: not train.plot._busy)
    shoot(viewer, docks, "Train", "train")

    viewer.layers["cells preview"].visible = False
    labels.visible = False
    predict = open_dock("Predict")
    predict.start()
    wait(lambda: predict._worker is None)
    shoot(viewer, docks, "Predict", "predict")
    viewer.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
