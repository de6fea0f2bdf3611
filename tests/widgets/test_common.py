import gc
import threading

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, QThreadPool, Signal

from napari_unet._widgets._common import WorkerSlot, connect_all, disconnect_all, start_long


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


def test_worker_slots_are_not_called_once_disconnected_nor_once_their_dock_is_gone(qtbot):
    # A worker emits from its thread, so Qt queues the calls: PySide6 made those queued
    # before a disconnect, and made them on a dock Python had freed since; PyQt6 neither.
    class Signals(QObject):
        emitted = Signal(object)

    calls = []

    class Dock:
        def __init__(self, name):
            self.name = name

        def slot(self, value):
            calls.append((self.name, value))

    signals, kept, closed, gone = Signals(), Dock("kept"), Dock("closed"), Dock("gone")
    signals.emitted.connect(WorkerSlot(kept.slot))
    connections = connect_all([(signals.emitted, WorkerSlot(closed.slot))])
    signals.emitted.connect(WorkerSlot(gone.slot))
    emitting = threading.Thread(target=signals.emitted.emit, args=("queued",))
    emitting.start()
    emitting.join()
    disconnect_all(connections)
    del gone
    gc.collect()
    qtbot.waitUntil(lambda: len(calls) > 0, timeout=5_000)  # all three were queued
    assert calls == [("kept", "queued")]


def test_rows_lined_up_start_their_labels_and_fields_at_the_same_place(qtbot):
    from magicgui.widgets import ComboBox, Container, FloatSpinBox, SpinBox
    from qtpy.QtCore import QPoint

    from napari_unet._widgets._rows import line_up, row

    pairs = [
        (SpinBox(label="Depth"), SpinBox(label="Width")),
        (ComboBox(label="Padding", choices=["valid", "same"]), SpinBox(label="Batch")),
        (FloatSpinBox(label="Minutes"), SpinBox(label="Tile")),
        (FloatSpinBox(label="w0"), FloatSpinBox(label="sigma")),
    ]
    rows = [row(*pair) for pair in pairs]
    line_up(rows)
    dock = Container(widgets=rows)
    dock.native.resize(440, 200)
    dock.show()
    qtbot.waitUntil(lambda: all(w.native.isVisible() for p in pairs for w in p), timeout=5_000)
    qtbot.wait(50)

    def x(widget) -> int:
        return widget.native.mapTo(dock.native, QPoint(0, 0)).x()

    for column in (0, 1):
        assert len({x(pair[column]) for pair in pairs}) == 1
    dock.close()
