"""What the Weight map dock costs per edit on large labels: time on the GUI thread
(which napari cannot redraw meanwhile) and in the worker, for brush strokes, undo
and, for a stack, scrolling to other slices.

    xvfb-run -a python benchmarks/bench_weight_dock.py --shape 4096 4096
    xvfb-run -a python benchmarks/bench_weight_dock.py --shape 20 2048 2048

The labels are a grid of touching 61-pixel squares; strokes are disks of radius 10.
"""

from __future__ import annotations

import argparse
import time

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_unet._widgets import weights


def timed(record: list):
    """Wrap the dock's ``_begin`` (GUI thread) and ``weights_job`` (worker) so that
    each run appends ``(GUI seconds, worker seconds)`` to ``record``."""
    begin, job = weights.WeightsWidget._begin, weights.weights_job
    gui = []

    def timed_begin(self):
        start = time.perf_counter()
        worker = begin(self)
        gui.append(time.perf_counter() - start)
        return worker

    def timed_job(*args):
        start = time.perf_counter()
        message = yield from job(*args)
        record.append((gui.pop(0), time.perf_counter() - start))
        return message

    weights.WeightsWidget._begin, weights.weights_job = timed_begin, timed_job


def settle(widget) -> float:
    app, start = QApplication.instance(), time.perf_counter()
    while widget.busy:
        app.processEvents()
        time.sleep(0.002)
    return time.perf_counter() - start


def report(name: str, record: list) -> None:
    gui = " ".join(f"{g * 1e3:.0f}" for g, _ in record)
    work = " ".join(f"{w * 1e3:.0f}" for _, w in record)
    print(f"{name:8s} GUI thread ms: {gui:16s} worker ms: {work}")
    record.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[4096, 4096])
    shape = tuple(parser.parse_args().shape)
    yy, xx = np.indices(shape[-2:])
    plane = (yy // 64) * (shape[-1] // 64) + xx // 64 + 1
    plane[(yy % 64 > 60) | (xx % 64 > 60)] = 0
    labels = np.broadcast_to(plane.astype(np.int32), shape).copy()

    record: list = []
    timed(record)
    viewer = napari.Viewer(show=False)
    layer = viewer.add_labels(labels, name="cells labels")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Weight map")
    print(f"## Weight map dock, labels {shape} int32, {len(np.unique(plane)) - 1} cells a slice")
    print(f"first map: {settle(widget):.1f} s")
    record.clear()
    layer.brush_size = 21
    for k in range(3):
        layer.paint((0,) * (len(shape) - 2) + (500 + 40 * k, 500), 5000 + k)
        settle(widget)
    report("strokes", record)
    if len(shape) == 3:
        for z in range(1, 4):
            viewer.dims.set_current_step(0, z)
            settle(widget)
        report("scroll", record)
    layer.undo()
    settle(widget)
    report("undo", record)
    viewer.close()


if __name__ == "__main__":
    main()
