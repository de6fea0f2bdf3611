import gc
import subprocess
import sys
import threading
import time

import pytest
from qtpy.QtCore import QCoreApplication, QEvent, QObject

from napari_unet._widgets import _workers

# A script that closes the viewer while the Annotate dock counts 4096x4096 labels,
# and exits at once: the worker ends after Qt deleted its signals.
CLOSE_AND_EXIT = """
import time
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
from superqt.utils._qthreading import WorkerBase
from napari_unet._widgets import _warm

_warm.start = lambda: None  # no compiling process: the worker computes
viewer = napari.Viewer(show=False)
rng = np.random.default_rng(0)
cells = (rng.random((256, 256)) * 1000).astype(np.int32).repeat(16, 0).repeat(16, 1)
viewer.add_image(rng.random(cells.shape, np.float32), name="img")
viewer.add_labels(cells, name="img labels")
dock = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")[1]
dock.image.value = viewer.layers["img"]
dock.labels_layer.value = viewer.layers["img labels"]
end = time.monotonic() + 30
while not WorkerBase._worker_set and time.monotonic() < end:
    QApplication.processEvents()
    time.sleep(0.005)
assert WorkerBase._worker_set, "no worker started"
viewer.close()
"""


@pytest.mark.slow
def test_a_script_that_exits_while_a_dock_computes_ends_cleanly():
    run = subprocess.run(
        [sys.executable, "-c", CLOSE_AND_EXIT], capture_output=True, text=True, timeout=300
    )
    # It aborted (-6), with "wrapped C/C++ object ... has been deleted".
    assert run.returncode == 0, run.stderr[-3000:]
    assert "deleted" not in run.stderr


@pytest.mark.parametrize("generator", [False, True])
def test_a_worker_whose_signals_were_deleted_ends_without_raising(generator, qapp):
    def steps(value):
        yield value

    worker = _workers.create_worker(steps if generator else abs, -1)
    worker.signals.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert not _workers._alive(worker.signals)
    worker.run()  # napari's worker raised RuntimeError here: PyQt aborts the process


def test_only_a_deleted_qt_object_counts_as_gone():
    # The error silenced is that of the worker's signals deleted, no other.
    parent = QObject()
    child = QObject(parent)
    assert _workers._alive(child)
    del parent  # deletes the Qt object, and its child with it
    gc.collect()
    assert not _workers._alive(child)


def test_the_docks_workers_are_of_the_kind_their_function_needs():
    def steps():
        yield

    assert isinstance(_workers.create_worker(steps), _workers.GeneratorWorker)
    assert isinstance(_workers.create_worker(print), _workers.FunctionWorker)


def test_a_generator_worker_quit_mid_run_lets_go_of_its_frame(qtbot):
    # superqt left it suspended, and napari keeps a run's worker as long as the window:
    # a cancelled prediction kept its copy of the image.
    closed = threading.Event()

    def steps():
        try:
            while True:
                yield
                time.sleep(0.01)
        finally:
            closed.set()

    worker = _workers.create_worker(steps)
    worker.yielded.connect(lambda _: worker.quit())
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.start()
    assert closed.wait(5)
