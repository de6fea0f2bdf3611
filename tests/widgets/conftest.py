import subprocess
import sys

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """The docks' kernels compiled once, before the first dock starts the process that
    compiles them (``_widgets._warm``): the workers would wait for it, on a fresh
    machine longer than a test waits for a dock."""
    subprocess.run([sys.executable, "-m", "napari_unet._widgets._warm"], check=True, timeout=900)


@pytest.fixture
def viewer_with_sample(make_napari_viewer):
    """A viewer with the plugin's sample open: layers "cells" and "cells labels"."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "touching_cells")
    return viewer


@pytest.fixture
def close_after_exit():
    """``close_after_exit(widget, worker)``: the dock's close handler called again, as
    Qt calls it when it deletes the dock, as late as napari's exit, when the finished
    worker's signals may be deleted: a slot that raises then aborts napari."""
    from qtpy.QtCore import QCoreApplication, QEvent, QThreadPool

    def close(widget, worker) -> None:
        QThreadPool.globalInstance().waitForDone(10_000)  # it emits after finished too
        worker.signals.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        with pytest.raises(RuntimeError, match="deleted"):
            worker.yielded.connect(print)  # the signals are gone, as at exit
        widget._closed()

    return close


@pytest.fixture
def loss_weights():
    """``loss_weights(labels, w0, sigma, class_balance, ignore_outline=True,
    annotated=None)``: what the loss weighs each pixel with
    (``data.target_and_weights``), for a plane or a stack, with the labels read as
    training reads them (``instances.annotated_labels``)."""
    from napari_unet.core.data import Pair, target_and_weights
    from napari_unet.core.instances import annotated_labels

    def compute(labels, w0, sigma, class_balance, ignore_outline=True, annotated=None):
        instances, regions = annotated_labels(labels, annotated)
        flat = (-1, *instances.shape[-2:])
        settings = (w0, sigma, class_balance, ignore_outline)
        weights = [
            target_and_weights(Pair(None, plane, region), *settings)[1]
            for plane, region in zip(instances.reshape(flat), regions.reshape(flat), strict=True)
        ]
        return np.stack(weights).reshape(instances.shape)

    return compute
