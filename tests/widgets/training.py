"""Driving the Train dock from tests: wait for steps, stop and wait for the worker."""


def steps_seen(widget) -> int:
    return widget.plot.steps[-1] if widget.plot.steps else 0


def train_until(widget, qtbot, steps: int, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: steps_seen(widget) >= steps, timeout=timeout)


def stop_and_wait(widget, qtbot) -> None:
    widget.stop()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)


def train_steps(widget, qtbot, steps: int) -> None:
    """Start a run, let it train ``steps`` steps, and stop it."""
    widget.start()
    train_until(widget, qtbot, steps)
    stop_and_wait(widget, qtbot)
