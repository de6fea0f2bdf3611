import threading

from napari.qt.threading import create_worker
from qtpy.QtCore import QThreadPool

from napari_unet._widgets._common import start_long


def test_a_long_run_takes_a_thread_of_its_own_until_it_ends(qtbot):
    # napari's pool has one thread per core: training and a prediction would take
    # them all, and the docks' live counts and weights would wait for them.
    pool = QThreadPool.globalInstance()
    before = pool.maxThreadCount()
    release = threading.Event()
    worker = create_worker(release.wait, 30)
    start_long(worker)
    assert pool.maxThreadCount() == before + 1
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        release.set()
    qtbot.waitUntil(lambda: pool.maxThreadCount() == before, timeout=5_000)
