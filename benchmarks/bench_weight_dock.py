"""What the Weight map dock costs per edit on large labels: time on the GUI thread
(which napari cannot redraw meanwhile: starting the run, then drawing each slice
it yields into the weights layer) and in the worker, for brush strokes, undo and,
for a stack, scrolling to other slices; and how long after the edit the weights
are shown (the dock's quiet time after an edit, the run and the drawing).

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


def timed(record: list, drawn: list):
    """Wrap the dock's ``_begin`` (GUI thread) and ``weights_job`` (worker) so that
    each run appends ``(GUI seconds, worker seconds)`` to ``record``, and its
    ``_on_plane`` (GUI thread) so that each slice drawn appends its seconds to
    ``drawn``."""
    begin, job, draw = (
        weights.WeightsWidget._begin,
        weights.weights_job,
        weights.WeightsWidget._on_plane,
    )
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

    def timed_draw(self, update):
        start = time.perf_counter()
        draw(self, update)
        drawn.append(time.perf_counter() - start)

    weights.WeightsWidget._begin, weights.weights_job = timed_begin, timed_job
    weights.WeightsWidget._on_plane = timed_draw


def settle(widget, stalls: list | None = None) -> float:
    """Process Qt events until the dock is idle, and then once more (the redraw);
    append the longest the event loop was held at once (the GUI thread's longest
    stall, napari's redraw of the canvas included) to ``stalls``."""
    app, start, longest = QApplication.instance(), time.perf_counter(), 0.0
    for last in (False, True):
        while widget.busy or last:
            step = time.perf_counter()
            app.processEvents()
            longest = max(longest, time.perf_counter() - step)
            if last:
                break
            time.sleep(0.002)
    if stalls is not None:
        stalls.append(longest)
    return time.perf_counter() - start


def report(name: str, record: list, drawn: list, stalls: list, shown: list) -> None:
    def ms(values):
        return " ".join(f"{v * 1e3:.0f}" for v in values)

    print(
        f"{name:8s} GUI thread ms: {ms(g for g, _ in record):10s} "
        f"drawing ms: {ms(drawn):10s} longest stall ms: {ms(stalls):10s} "
        f"worker ms: {ms(w for _, w in record):12s} shown after ms: {ms(shown)}"
    )
    for values in (record, drawn, stalls, shown):
        values.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[4096, 4096])
    shape = tuple(parser.parse_args().shape)
    yy, xx = np.indices(shape[-2:])
    plane = (yy // 64) * (shape[-1] // 64) + xx // 64 + 1
    plane[(yy % 64 > 60) | (xx % 64 > 60)] = 0
    labels = np.broadcast_to(plane.astype(np.int32), shape).copy()

    record, drawn, stalls, shown = [], [], [], []
    timed(record, drawn)
    viewer = napari.Viewer()
    layer = viewer.add_labels(labels, name="cells labels")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Weight map")
    print(f"## Weight map dock, labels {shape} int32, {len(np.unique(plane)) - 1} cells a slice")
    print(f"first map: {settle(widget):.1f} s")
    for values in (record, drawn):
        values.clear()
    layer.brush_size = 21
    for k in range(3):
        layer.paint((0,) * (len(shape) - 2) + (500 + 40 * k, 500), 5000 + k)
        shown.append(settle(widget, stalls))
    report("strokes", record, drawn, stalls, shown)
    if len(shape) == 3:
        for z in range(1, 4):
            viewer.dims.set_current_step(0, z)
            shown.append(settle(widget, stalls))
        report("scroll", record, drawn, stalls, shown)
    layer.undo()
    shown.append(settle(widget, stalls))
    report("undo", record, drawn, stalls, shown)
    viewer.close()


if __name__ == "__main__":
    main()
