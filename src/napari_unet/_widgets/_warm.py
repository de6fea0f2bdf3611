"""The compiled kernels, compiled before the docks need them, in a process of their own.

numba compiles a kernel at its first call with new argument types, holding one lock
for the whole process, and napari colours Labels layers with numba on the GUI thread.
A kernel compiled by a dock's worker therefore froze the viewer until it was done: on
a fresh install (or after an upgrade, which makes numba's disk cache stale) the
viewer stood still for 8-11 s when the sample opened and up to 15 s while the first
counts and weights were computed (``benchmarks/first_launch.py``).

So the first dock to open starts ``python -m napari_unet._widgets._warm``, which
compiles every kernel the docks call into numba's disk cache (the border term's in
a helper process alongside: numba compiles on one core) and then leaves a stamp;
the docks' workers wait for it. Once the stamp is there, later sessions start
no process. Either way a thread then loads the kernels from the cache, which holds
numba's lock a few milliseconds at a time (or compiles them, where no process could
run or the cache lacks them after all, as before).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
import platformdirs

# A worker waits at most this long for the compiling process, which is then ended:
# the workers compile what they need themselves, slower for the viewer but not stuck.
WAIT_S = 300

_lock = threading.Lock()
_started = False
_told = False
_process: subprocess.Popen | None = None
_ended = threading.Event()
_abandoned = threading.Event()  # every dock closed: the workers waiting give up
POLL_S = 0.1  # how often a waiting worker looks whether it was abandoned
LOG = "warm-up.log"  # the process's output, beside its stamp
# No console window on Windows, and below the viewer's priority (os.nice elsewhere).
_QUIET = (
    subprocess.CREATE_NO_WINDOW | subprocess.BELOW_NORMAL_PRIORITY_CLASS if os.name == "nt" else 0
)


def stamp() -> Path:
    """The file that says the disk cache holds every kernel for this code: in a
    folder of this installation (the package's place and numba's cache folder),
    named after the interpreter, numba, the processor and the package's source files
    (numba's cache goes stale when they change)."""
    package = Path(__file__).resolve().parents[1]
    sources = "".join(
        f"{path}|{path.stat().st_mtime_ns}|{path.stat().st_size}\n"
        for path in sorted(package.rglob("*.py"))
    )
    folder = Path(platformdirs.user_cache_dir("napari-unet")) / "kernels"
    place = _digest(f"{package}|{os.environ.get('NUMBA_CACHE_DIR', '')}")
    return folder / place / _digest(f"{sys.version}|{numba.__version__}|{_cpu()}|{sources}")


def _cpu() -> str:
    """The processor numba compiles for, part of its cache's keys (a home folder may
    be shared by machines of different processors)."""
    try:
        return repr(numba.core.registry.cpu_target.target_context.codegen().magic_tuple())
    except AttributeError:  # numba's internals moved: the machine's name, at least
        return platform.machine()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def start() -> None:
    """Once per session: start the compiling process unless the stamp is there, then
    load the kernels in a thread, so that the first edit need not. Where no process
    can be started, that thread compiles them (and holds numba's lock meanwhile)."""
    global _started, _process
    _abandoned.clear()  # a dock opened again
    with _lock:
        if _started or numba.config.DISABLE_JIT:
            return
        _started = True
        done = stamp()
        # A bundled app's executable may be the app itself, not a Python to run -m.
        if sys.executable and not getattr(sys, "frozen", False) and not done.exists():
            try:
                done.parent.mkdir(parents=True, exist_ok=True)
                with open(done.parent / LOG, "w") as log:
                    _process = subprocess.Popen(
                        [sys.executable, "-m", __name__],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        # Not the user's folder, whose files would shadow modules, but
                        # the modules this process imports.
                        cwd=done.parent,
                        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                        creationflags=_QUIET,
                    )
            except OSError:
                pass
    threading.Thread(target=_load, name="napari-unet-kernels", daemon=True).start()


def _load() -> None:
    if wait():
        warm_up()


def wait() -> bool:
    """Return True once the compiling process has ended, or has been ended after
    :data:`WAIT_S`; at once where there is none. False, at once, if every dock was
    closed meanwhile (:func:`abandon`): the caller's dock is gone, so it gives up.
    For workers: the GUI thread must not wait."""
    process = _process
    if process is None or _ended.is_set():
        return True
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            process.wait(POLL_S)
            break
        except subprocess.TimeoutExpired:
            if _abandoned.is_set():
                return False
            if time.monotonic() > deadline:
                process.kill()
                break
    _ended.set()
    return True


def abandon() -> None:
    """Every dock is closed (its viewer closed): workers still waiting for the
    process give up, rather than outlive the viewer (napari, quitting, waits for its
    workers: 18 s after the window closed). The process goes on and leaves its stamp
    for the next session."""
    _abandoned.set()


def news() -> str:
    """Once per session, while the process compiles: a line for the user, who
    otherwise sees no counts and no weights for 10 s."""
    global _told
    if _told or _process is None or _process.poll() is not None:
        return ""
    _told = True
    return (
        "napari-unet is compiling its image kernels, once after it is installed or "
        "upgraded (about 10 s on a laptop): the Annotate counts and the weight "
        "map appear when it is done."
    )


def warm_up(then: Callable[[], object] | None = None) -> None:
    """Run on small arrays what the docks run on the user's, so that each kernel is
    compiled for the types the docks give it: labels as Annotate creates them and
    Predict writes them (int32), regions as Annotate creates them (uint8), planes and
    stacks, with and without class balance. Labels of other integer types reach the
    kernels as int32 too, where their ids fit (``core.label_checks.in_kernel_type``).
    ``then`` is called between the counts and the weights: the process waits there
    for its helper, which compiles the border term's kernels (:func:`border_kernels`).
    Training calls these kernels with these types too (a slow test checks it), so
    this imports no torch: 1.2 s, holding the GIL in the docks' thread as the viewer
    opens, and in the process before it leaves its stamp."""
    from ..core.instances import to_instances
    from ..core.windows import changed_box
    from ._session import WeightSettings
    from ._summary import summary_job
    from ._weights_job import weights_job
    from .annotate import LABELS_DTYPE

    # Planes wider than twice the border term's reach, so that an edit recomputes
    # a window of them, not all.
    labels = np.zeros((2, 96, 96), LABELS_DTYPE)
    labels[:, 2:8, 2:8], labels[:, 8:14, 2:8], labels[:, 2:6, 10:16] = 1, 2, 3
    painted = labels.copy()
    painted[:, 86:90, 86:90] = 4  # a stroke far from the others
    relabelled = np.where(painted == 3, 5, painted)  # the class weights stay
    marked = np.ones(labels.shape, np.uint8)
    cases = [
        (edits, within)
        for region in (None, marked)
        for edits, within in (
            ([labels[0], painted[0], relabelled[0]], None if region is None else region[0]),
            ([labels, painted, relabelled], region),
        )
    ]
    for edits, within in cases:
        seen = None
        for data in edits:
            seen = summary_job(data, within, seen)
    image = np.random.default_rng(0).random(labels.shape[1:], np.float32)
    to_instances(np.stack([1 - image, image]))
    changed_box(labels, painted)
    changed_box(labels[0], painted[0])
    if then is not None:
        then()
    for edits, within in cases:
        for balance in (False, True):
            settings = WeightSettings(class_balance=balance)
            planes = [None] * (labels.shape[0] if edits[0].ndim == 3 else 1)
            for data in edits:
                list(weights_job(planes, data, within, settings))


def border_kernels() -> None:
    """The border term's kernels, for the types :func:`warm_up` gives them, compiled
    in a helper process while the warm-up process compiles the counts' (numba
    compiles a kernel on one core)."""
    from ..core import _weights_kernels as kernels
    from ..core.weights import border_weight

    labels = np.zeros((32, 32), np.int32)
    labels[2:8, 2:8], labels[8:14, 2:8] = 1, 2
    border_weight(labels)
    terms = np.zeros((8, 8), np.float32)
    out = np.empty_like(terms)
    for window in (np.s_[:, :], np.s_[1:3, 1:3]):  # whole maps, and windows of edits
        kernels.compose(terms[window], np.float32(1), np.float32(1), out[window])
    kernels.border_sums(terms, np.zeros(terms.shape[0]))


if __name__ == "__main__":
    if sys.argv[1:] == ["border"]:  # the helper, as nice as the process it came from
        border_kernels()
        sys.exit()
    if hasattr(os, "nice"):  # the viewer, opening meanwhile, goes first (POSIX)
        with contextlib.suppress(OSError):
            os.nice(10)
    helper = None
    if (os.cpu_count() or 1) > 1:  # numba compiles on one core: the border term on another
        with contextlib.suppress(OSError):  # without one, this process compiles them
            helper = subprocess.Popen(
                [sys.executable, "-m", __spec__.name, "border"],  # __name__ is "__main__"
                stdin=subprocess.DEVNULL,
                creationflags=_QUIET,
            )

    def helper_done() -> None:
        try:
            helper.wait(WAIT_S)
        except subprocess.TimeoutExpired:  # hung: this process compiles them
            helper.kill()

    warm_up(then=None if helper is None else helper_done)
    done = stamp()
    done.parent.mkdir(parents=True, exist_ok=True)
    for old in done.parent.iterdir():  # of code since replaced
        if old.name != LOG:
            old.unlink(missing_ok=True)
    done.touch()
