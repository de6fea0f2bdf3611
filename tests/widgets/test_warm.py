import gc
import os
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest
from qtpy.QtCore import QCoreApplication, QEvent

from napari_unet._widgets import _common, _warm
from napari_unet._widgets._session import WeightSettings
from napari_unet._widgets._summary import summary_job
from napari_unet._widgets._train_job import TrainJob
from napari_unet._widgets._weights_job import weights_job
from napari_unet._widgets.predict import predict_job
from napari_unet.core.config import TrainConfig
from napari_unet.core.events import Done
from napari_unet.core.model import UNet

# Run in a fresh process, whose kernels hold only what it compiles or loads itself:
# after warm_up, the docks' work on other data must need no kernel signature more.
DOCKS_WORK = """
import numpy as np
from numba.core.dispatcher import Dispatcher

from napari_unet._sample_data import touching_cells_sample
from napari_unet._widgets import _warm
from napari_unet._widgets._session import WeightSettings
from napari_unet._widgets._summary import summary_job
from napari_unet._widgets._train_job import TrainJob
from napari_unet._widgets._weights_job import weights_job
from napari_unet._widgets.annotate import LABELS_DTYPE
from napari_unet._widgets.predict import predict_job
from napari_unet.core import _count_kernels, _separation_kernels, _weights_kernels, windows
from napari_unet.core.config import TrainConfig
from napari_unet.core.model import UNet


def kernels():
    found = {}
    for module in (_count_kernels, _separation_kernels, _weights_kernels, windows):
        for name, value in vars(module).items():
            # one_at_a_time wraps some; a dispatcher's own __wrapped__ is its Python function
            wrapped = getattr(value, "__wrapped__", None)
            kernel = value if isinstance(value, Dispatcher) else wrapped
            if isinstance(kernel, Dispatcher):
                found[f"{module.__name__}.{name}"] = kernel
    return found


def signatures():
    return {name: set(map(str, kernel.signatures)) for name, kernel in kernels().items()}


_warm.warm_up()
before = signatures()
# all loaded from the cache that the process the docks start wrote
misses = {
    name: dict(kernel.stats.cache_misses)
    for name, kernel in kernels().items()
    if kernel.stats.cache_misses
}
assert not misses, f"compiled, not loaded: {misses}"
assert sum(bool(sigs) for sigs in before.values()) >= 10, before  # helpers are inlined

(image, _, _), (sample, _, _) = touching_cells_sample()
labels = np.zeros(sample.shape, LABELS_DTYPE)  # "Create labels", then painted
labels[:128] = sample[:128]
stack = np.stack([labels, np.zeros_like(labels), labels[::-1]])
painted = stack.copy()
painted[:, 200:210, 200:210] = labels.max() + 1
region = np.zeros(stack.shape, np.uint8)  # "Mark annotated region", then painted
region[:, :160] = 1
for within in (None, region):
    for before_edit, after_edit, marked in (
        (stack[0], painted[0], None if within is None else within[0]),
        (stack, painted, within),
    ):
        seen = summary_job(before_edit, marked)
        summary_job(after_edit, marked, seen)
        for balance in (False, True):
            planes = [None] * (3 if before_edit.ndim == 3 else 1)
            for data in (before_edit, after_edit):
                list(weights_job(planes, data, marked, WeightSettings(class_balance=balance)))

# Labels opened from files rather than painted: 16-bit ids, 8-bit masks, numpy's
# int64 (the kernels take them all as int32: label_checks.in_kernel_type).
opened = [painted.astype(np.uint16), (painted > 0).astype(np.uint8) * 255, painted.astype(int)]
for other in opened:
    summary_job(other, None)
    list(weights_job([None] * 3, other, None, WeightSettings()))

config = TrainConfig(steps=3, batch_size=2, tile=36, validate_every=2, class_balance=True)
model = UNet(depth=2, width=4, padding="same", norm="batch")
slices = np.concatenate([painted, painted[:2]])  # 5, so that 2 are held out to validate
images = [np.stack([image] * 5)] + [np.stack([image] * 3)] * len(opened)
regions = [np.ones(slices.shape, np.uint8)] + [None] * len(opened)  # marked, and not
job = TrainJob(images, [slices, *opened], regions, model, config, False, val_fraction=0.4)
assert any(type(event).__name__ == "Done" for event in job.run())

steps = predict_job(UNet(depth=2, width=4, padding="same"), image, None, False, "cpu", 0.5)
try:
    while True:
        next(steps)
except StopIteration as end:
    result = end.value
windows.changed_box(labels, result.labels.astype(LABELS_DTYPE))

new = {name: sorted(sigs - before[name]) for name, sigs in signatures().items()}
new = {name: sigs for name, sigs in new.items() if sigs}
assert not new, f"compiled after warm_up: {new}"
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the stamp's folder is set by XDG_CACHE_HOME")
def test_warm_up_compiles_every_kernel_signature_the_docks_use(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where the stamp goes
    assert not _warm.stamp().exists()
    other = _warm.stamp().parent.with_name("another-installation") / "0"
    other.parent.mkdir(parents=True)
    other.touch()
    _warm.stamp().parent.mkdir(parents=True)
    _warm.stamp().with_name("of-code-since-replaced").touch()
    for args in (["-m", "napari_unet._widgets._warm"], ["-c", DOCKS_WORK]):
        run = subprocess.run(
            [sys.executable, *args],
            cwd=tmp_path,  # a run's checkpoint lands here
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
    # the process the first dock starts leaves its stamp, and no other of its own
    names = {path.name for path in _warm.stamp().parent.iterdir()}
    assert names == {_warm.stamp().name}
    assert other.exists()


BORDER_KERNELS_USED = """
from napari_unet._widgets import _warm
from napari_unet.core import _weights_kernels as kernels

_warm.warm_up()
for name in ("column_pass", "border_term", "compose", "border_sums"):
    kernel = getattr(kernels, name).__wrapped__
    assert kernel.stats.cache_hits and not kernel.stats.cache_misses, name
"""


@pytest.mark.slow
def test_the_helper_process_compiles_the_border_kernels_as_the_docks_call_them(tmp_path):
    # It compiles them while the warm-up process compiles the counts' kernels: of
    # use only if the warm-up then loads its work rather than compiling again.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    for args in (["-m", "napari_unet._widgets._warm", "border"], ["-c", BORDER_KERNELS_USED]):
        run = subprocess.run(
            [sys.executable, *args], env=env, capture_output=True, text=True, timeout=600
        )
        assert run.returncode == 0, run.stderr[-3000:]


def test_a_run_given_up_before_its_first_step_ends_as_one_stopped_there(monkeypatch):
    # so that the run's end (RunEnd) removes its preview, as for a run stopped then
    monkeypatch.setattr(_warm, "_process", Hung())
    monkeypatch.setattr(_warm, "_ended", threading.Event())
    monkeypatch.setattr(_warm, "_abandoned", threading.Event())
    _warm.abandon()
    job = TrainJob([], [], [], UNet(depth=2, width=4), TrainConfig(), fine_tune=False)
    assert list(job.run()) == [Done(step=0, stopped=True, path=None)]


class Recorded:
    """A compiling process that has ended, and who waited for it."""

    def __init__(self, *args, **kwargs):
        self.args, self.waits = args, []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return 0

    def poll(self):
        return 0 if self.waits else None


@pytest.mark.parametrize("stamped", [False, True], ids=["no stamp", "stamp"])
def test_the_first_dock_starts_the_compiling_process_once_unless_stamped(
    make_napari_viewer, monkeypatch, qtbot, tmp_path, stamped
):
    started, loaded = [], []
    monkeypatch.setattr(_warm, "_started", False)
    monkeypatch.setattr(_warm, "_process", None)
    monkeypatch.setattr(_warm, "_ended", threading.Event())
    monkeypatch.setattr(_warm, "stamp", lambda: tmp_path / "kernels-0")
    if stamped:
        (tmp_path / "kernels-0").touch()

    def popen(*args, **kwargs):
        started.append(Recorded(*args))
        return started[-1]

    # the module's own name for subprocess: vispy, in the same test, runs processes
    fake = types.SimpleNamespace(**vars(subprocess))
    fake.Popen = popen
    monkeypatch.setattr(_warm, "subprocess", fake)
    monkeypatch.setattr(_warm, "warm_up", lambda: loaded.append(True))
    viewer = make_napari_viewer()
    for name in ("Annotate", "Weight map", "Train", "Predict"):
        viewer.window.add_plugin_dock_widget("napari-unet", name)
    if stamped:
        assert started == []
    else:
        [process] = started
        assert process.args == ([sys.executable, "-m", "napari_unet._widgets._warm"],)
    # then the kernels are loaded in this process, after the process wrote them
    qtbot.waitUntil(lambda: loaded == [True], timeout=5000)
    assert all(process.waits == [_warm.POLL_S] for process in started)


def test_a_word_once_while_the_process_compiles(monkeypatch):
    process = Recorded()
    monkeypatch.setattr(_warm, "_process", process)
    monkeypatch.setattr(_warm, "_told", False)
    assert "compiling" in _warm.news()
    assert _warm.news() == ""  # once
    monkeypatch.setattr(_warm, "_told", False)
    process.wait()
    assert _warm.news() == ""  # done: nothing to say


def test_the_docks_workers_wait_for_the_compiling_process(monkeypatch):
    labels = np.zeros((32, 32), np.int32)
    labels[4:10, 4:10], labels[10:16, 4:10] = 1, 2
    model = UNet(depth=2, width=4, padding="same")
    jobs = {
        "counts": lambda: summary_job(labels, None),
        "weights": lambda: list(weights_job([None], labels, None, WeightSettings())),
        "prediction": lambda: list(predict_job(model, labels * 1.0, None, False, "cpu", 0.5)),
        "training": lambda: list(
            TrainJob([], [], [], model, TrainConfig(), fine_tune=False).run()
        ),
    }
    for name, job in jobs.items():
        process = Recorded()
        monkeypatch.setattr(_warm, "_process", process)
        monkeypatch.setattr(_warm, "_ended", threading.Event())
        monkeypatch.setattr(_warm, "_abandoned", threading.Event())  # by earlier viewers
        job()
        assert process.waits == [_warm.POLL_S], name
        job()  # the process has ended: no more waiting
        assert process.waits == [_warm.POLL_S], name


class Hung(Recorded):
    """A compiling process that never ends unless killed."""

    killed = False

    def wait(self, timeout=None):
        super().wait(timeout)
        time.sleep(timeout)
        raise subprocess.TimeoutExpired("warm-up", timeout)

    def kill(self):
        self.killed = True


def test_a_hung_process_is_ended_once_and_then_waited_for_no_more(monkeypatch):
    process = Hung()
    monkeypatch.setattr(_warm, "_process", process)
    monkeypatch.setattr(_warm, "_ended", threading.Event())
    monkeypatch.setattr(_warm, "_abandoned", threading.Event())  # by earlier tests' viewers
    monkeypatch.setattr(_warm, "WAIT_S", 0.5)
    assert _warm.wait()
    waited = len(process.waits)
    assert _warm.wait()
    assert process.killed and len(process.waits) == waited


def test_closing_the_viewer_lets_the_workers_waiting_for_the_process_go(
    make_napari_viewer, monkeypatch, qtbot
):
    # Waiting on, they outlived the viewer, and as Python exited signalled through
    # deleted Qt objects, which aborted it 20 s after the window closed.
    monkeypatch.setattr(_warm, "_process", Hung())
    monkeypatch.setattr(_warm, "_ended", threading.Event())
    monkeypatch.setattr(_warm, "_abandoned", threading.Event())
    monkeypatch.setattr(_warm, "_started", True)  # no process or thread of its own
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # earlier tests' docks
    gc.collect()
    monkeypatch.setattr(_common, "_docks", 0)
    viewer = make_napari_viewer()
    docks = [
        viewer.window.add_plugin_dock_widget("napari-unet", name)[1]
        for name in ("Annotate", "Weight map")
    ]
    labels = np.zeros((16, 16), np.int32)
    counted = []
    waiting = threading.Thread(target=lambda: counted.append(summary_job(labels, None)))
    waiting.start()
    docks[0].root_native_widget.deleteLater()  # one dock closed: the other waits on
    qtbot.waitUntil(lambda: _common._docks == 1)
    qtbot.wait(3 * int(_warm.POLL_S * 1000))
    assert waiting.is_alive()
    viewer.close()
    qtbot.waitUntil(lambda: not waiting.is_alive(), timeout=5000)
    assert counted == [None]
    viewer = make_napari_viewer()  # a dock opened again waits again
    viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")
    assert not _warm._abandoned.is_set()
