"""A session's first minute: how long the viewer stands still, and when each dock
shows its first result, with numba's disk cache as ``NUMBA_CACHE_DIR`` holds it.

    NUMBA_CACHE_DIR=$(mktemp -d) xvfb-run -a python benchmarks/first_launch.py  # fresh install
    xvfb-run -a python benchmarks/first_launch.py                                # every day
    xvfb-run -a python benchmarks/first_launch.py --labels-dtype uint16  # labels from a file
    xvfb-run -a python benchmarks/first_launch.py --pause 2  # Train clicked 2 s after the pair

Opens the four docks and the sample, chooses its layers in Annotate (which counts
them and shows their gaps) with the Weight map tab in front, then trains one step.
The viewer's stalls are the gaps between ticks of a 10 ms Qt timer; the longest
are printed with what the GUI thread was doing, sampled every 50 ms while stalled.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from napari_unet._widgets import _train_job

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument(
    "--labels-dtype",
    help="give the sample's labels this type, as a label image opened from a file has",
)
parser.add_argument(
    "--pause",
    type=float,
    default=0.0,
    help="seconds between adding the training pair and clicking Train (a user's move "
    "to the Train tab); 0 clicks at once",
)
args = parser.parse_args()

START = time.perf_counter()
MODELS = Path(tempfile.mkdtemp()) / "models"  # not the user's
_train_job.models_dir = lambda: MODELS  # one folder: each call made a new one

ticks = [START]
stalls = []  # (seconds the GUI thread was held, when it was let go)
stacks = collections.Counter()


def tick() -> None:
    now = time.perf_counter()
    stalls.append((now - ticks[-1], now - START))
    ticks.append(now)


def sample_stalled() -> None:
    main = threading.main_thread().ident
    while True:
        time.sleep(0.05)
        if time.perf_counter() - ticks[-1] > 0.3:
            frames = traceback.extract_stack(sys._current_frames()[main])[-1:-7:-1]
            stacks[" <- ".join(f"{Path(f.filename).name}:{f.name}" for f in frames)] += 1


def pump(done, timeout: float) -> bool:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end and not done():
        QApplication.processEvents()
        time.sleep(0.005)
    return done()


def worst(since: float) -> str:
    held = [held for held, when in stalls if when >= since]
    return f"{max(held, default=0) * 1000:.0f} ms"


viewer = napari.Viewer()
timer = QTimer()
timer.timeout.connect(tick)
timer.start(10)
threading.Thread(target=sample_stalled, daemon=True).start()
docks = {
    name: viewer.window.add_plugin_dock_widget("napari-unet", name, tabify=True)[1]
    for name in ("Annotate", "Weight map", "Train", "Predict")
}
viewer.open_sample("napari-unet", "touching_cells")
if args.labels_dtype:
    viewer.layers["cells labels"].data = viewer.layers["cells labels"].data.astype(
        args.labels_dtype
    )
pump(lambda: False, 1.0)
opened = time.perf_counter() - START
print(f"viewer, docks and sample: {opened:.1f} s; longest stall {worst(0)}")

annotate, shown = docks["Annotate"], {}
annotate.image.value = viewer.layers["cells"]
annotate.labels_layer.value = viewer.layers["cells labels"]
docks["Weight map"].native.parent().raise_()


def first_results() -> bool:
    after = time.perf_counter() - START - opened
    if "touching" in str(annotate.counts.value):
        shown.setdefault("Annotate counts", after)
    weights = [layer for layer in viewer.layers if layer.name.endswith("weights")]
    if weights and np.asarray(weights[0].data).any():
        shown.setdefault("weights", after)
    return len(shown) == 2


pump(first_results, 240)
print(
    "shown after the layers are chosen: "
    + ", ".join(f"{k} {v:.1f} s" for k, v in shown.items())
    + f"; longest stall meanwhile {worst(opened)}"
)
annotate.add_to_training_set()
pump(lambda: False, args.pause)
train = docks["Train"]
train.device.value = "cpu"
train.net_depth.value, train.net_width.value, train.tile.value = 2, 8, 36
clicked = time.perf_counter() - START
train.start()
pump(lambda: "step" in str(train.status.value), 240)
print(
    f"first training step {time.perf_counter() - START - clicked:.1f} s after Train; "
    f"longest stall meanwhile {worst(clicked)}"
)
train.stop()
pump(lambda: train._worker is None, 60)
print(
    "stalls over 200 ms (s held, at s):",
    [(round(h, 2), round(w, 1)) for h, w in stalls if h > 0.2],
)
for stack, count in stacks.most_common(3):
    print(f"  {count * 50} ms in {stack}")
viewer.close()
