import gc
import threading
import time
import weakref

import numpy as np
import pytest
from training import steps_seen, stop_and_wait, train_steps, train_until

from napari_unet._widgets import _common, _train_job
from napari_unet._widgets import train as train_module
from napari_unet._widgets._layers import DERIVED
from napari_unet._widgets._preview import PreviewLayer
from napari_unet._widgets._session import session
from napari_unet._widgets.train import TrainWidget
from napari_unet.core import checkpoint
from napari_unet.core.config import TrainConfig
from napari_unet.core.events import Notice
from napari_unet.core.model import UNet


@pytest.fixture
def viewer(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setattr(_train_job, "models_dir", lambda: tmp_path / "models")
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "touching_cells")
    return viewer


@pytest.fixture
def errors(monkeypatch):
    shown = []
    monkeypatch.setattr(_common, "show_error", shown.append)
    return shown


def dock(viewer) -> TrainWidget:
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Train")
    widget.device.value = "cpu"
    widget.net_depth.value, widget.net_width.value = 2, 4
    widget.tile.value, widget.batch.value = 36, 2
    return widget


def add_sample_pair(widget, viewer) -> None:
    widget.image.value = viewer.layers["cells"]
    widget.labels_layer.value = viewer.layers["cells labels"]
    widget.add_pair()


def previewed(viewer) -> bool:
    return "cells preview" in viewer.layers and viewer.layers["cells preview"].data.max() > 0


def test_the_dock_starts_from_the_trainers_defaults_on_the_cpu(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Train")
    widget.device.value = "cpu"
    config = TrainConfig()
    shown = (widget.tile, widget.batch, widget.lr, widget.w0, widget.sigma)
    assert [w.value for w in shown] == [
        config.tile,
        config.batch_size,
        config.lr,
        config.w0,
        config.sigma,
    ]
    assert widget.class_balance.value == config.class_balance
    assert widget.ignore_outline.value == config.ignore_outline


def test_optimizers_load_ahead_once_there_is_a_training_set_not_as_the_dock_opens(
    viewer, monkeypatch
):
    loaded = []
    monkeypatch.setattr(_train_job, "_warming", None)
    monkeypatch.setattr(_train_job, "warm_up", lambda: loaded.append(1))
    widget = dock(viewer)
    assert _train_job._warming is None  # it would hold the GIL while the viewer opens
    add_sample_pair(widget, viewer)
    _train_job._warming.join(10)
    assert loaded == [1]
    add_sample_pair(widget, viewer)
    dock(viewer)  # a second dock on a session with a training set
    _train_job._warming.join(10)
    assert loaded == [1]  # once per process


def test_a_run_waits_for_the_optimizers_import_under_way(viewer, qtbot, monkeypatch):
    # Two threads importing torch._dynamo at once may see it half loaded.
    release, order = threading.Event(), []

    def slow_import():
        release.wait(10)
        order.append("warmed")

    monkeypatch.setattr(_train_job, "_warming", None)
    monkeypatch.setattr(_train_job, "warm_up", slow_import)
    real_trainer = _train_job.Trainer

    def trainer(*args, **kwargs):
        order.append("trainer")
        return real_trainer(*args, **kwargs)

    monkeypatch.setattr(_train_job, "Trainer", trainer)
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.start()
    qtbot.wait(300)
    assert order == []  # the worker waits, the viewer does not
    release.set()
    train_until(widget, qtbot, 1)
    stop_and_wait(widget, qtbot)
    assert order == ["warmed", "trainer"]


def test_the_run_is_named_by_its_images_as_napari_lists_it(viewer, qtbot):
    # napari names a worker's task by its function, in the dialog that asks before
    # the window closes during a run: it showed the arrays and the whole network.
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.start()
    assert str(widget._job.run) == "<bound method TrainJob.run of training on cells>"
    stop_and_wait(widget, qtbot)


def test_train_stop_publishes_the_model_and_checkpoint(viewer, qtbot, tmp_path):
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    assert "cells / cells labels" in widget.pairs.value
    widget.ignore_outline.value = False
    widget.start()
    assert not widget.train_button.enabled and widget.stop_button.enabled
    # The preview comes every 25 steps, from the GUI thread's slot.
    qtbot.waitUntil(lambda: previewed(viewer), timeout=120_000)
    preview = viewer.layers["cells preview"].data
    assert preview.shape == (256, 256) and 0 <= preview.min() <= preview.max() <= 1
    stop_and_wait(widget, qtbot)
    current = session(viewer)
    assert current.model is not None and not current.model.training
    _, config = checkpoint.load(current.model_path)
    assert current.model_path.parent == tmp_path / "models"
    assert config["step"] == steps_seen(widget) >= 25
    assert config["training"]["ignore_outline"] is False
    assert widget.train_button.enabled and "stopped after" in widget.status.value
    assert widget.files.save_button.enabled
    widget.files.save_file.value = tmp_path / "mine"
    widget.files.save()
    assert checkpoint.load(tmp_path / "mine.safetensors")[1]["step"] == config["step"]


def test_pause_holds_and_resume_continues(viewer, qtbot):
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.start()
    train_until(widget, qtbot, 2)
    widget.toggle_pause()
    assert widget.pause_button.text == "Resume"
    qtbot.waitUntil(lambda: widget.status.value.startswith("paused at step"), timeout=30_000)
    held = steps_seen(widget)
    qtbot.wait(300)
    assert steps_seen(widget) == held
    widget.toggle_pause()
    qtbot.waitUntil(lambda: steps_seen(widget) > held, timeout=30_000)
    stop_and_wait(widget, qtbot)


@pytest.mark.parametrize("held", [True, False], ids=["dock held", "dock freed"])
def test_closing_the_dock_stops_training_and_hands_over_the_checkpoint(
    viewer, qtbot, tmp_path, close_after_exit, monkeypatch, held
):
    # napari keeps no reference to a dock it closed: the run's end must not be its slot.
    infos = []
    monkeypatch.setattr(_train_job, "show_info", infos.append)
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.start()
    train_until(widget, qtbot, 2)
    worker, kept = widget._worker, weakref.ref(widget)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        viewer.window.remove_dock_widget(widget.native)
        if not held:
            del widget
            gc.collect()
            assert kept() is None
    (saved,) = (tmp_path / "models").glob("*.safetensors")
    steps = checkpoint.load(saved)[1]["step"]
    assert infos == [
        f"Training stopped after {steps} steps, as its dock was closed; the model is "
        f"saved to {saved}."
    ]
    assert session(viewer).model_path == saved and session(viewer).model is not None
    if held:
        close_after_exit(kept(), worker)


def test_a_runs_end_lets_go_of_the_viewer_the_network_and_the_training_set(
    viewer, qtbot, monkeypatch
):
    # napari keeps every worker, and so the slots on its signals, until the window
    # goes: held, the preview layer would keep a closed viewer alive (checked ad hoc
    # with napari.Viewer; make_napari_viewer keeps its viewers to the test's end).
    ends = []

    class RecordedEnd(_train_job.RunEnd):
        def __init__(self, *args):
            super().__init__(*args)
            ends.append(self)

    monkeypatch.setattr(train_module, "RunEnd", RecordedEnd)
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.start()
    [end] = ends
    assert any(isinstance(held, PreviewLayer) for held in end._held)
    train_until(widget, qtbot, 2)
    job = widget._job
    trainer = weakref.ref(job.trainer)  # its optimizer and training set
    model = weakref.ref(job.model)  # on the GPU where it trained on one
    stop_and_wait(widget, qtbot)
    assert session(viewer).model is not None
    assert end._held is None
    gc.collect()  # the job, kept with its worker, keeps no trainer, network or arrays
    assert trainer() is None and model() is None and not job.images and not job.labels


def test_a_cancelled_run_whose_checkpoint_cannot_be_saved_says_so(viewer, qtbot, monkeypatch):
    # napari cancels the runs of a closing window; an error raised there, in a Qt
    # slot, aborted Python.
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.start()
    train_until(widget, qtbot, 1)

    def full(*_):
        raise OSError("No space left on device")

    monkeypatch.setattr(widget._job.trainer, "save", full)
    warned = []
    widget._worker.warned.connect(warned.append)
    widget._worker.quit()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    qtbot.waitUntil(lambda: bool(warned), timeout=5_000)
    assert "checkpoint was not saved: No space left on device" in str(warned[0][0])


def test_the_preview_follows_a_renamed_image(viewer, qtbot):
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    train_steps(widget, qtbot, 1)
    viewer.layers["cells"].name = "nuclei"
    train_steps(widget, qtbot, 1)
    names = [layer.name for layer in viewer.layers]
    assert "nuclei preview" in names and "cells preview" not in names


def test_the_preview_goes_with_its_image(viewer, qtbot):
    """It stayed, over nothing, when the image was deleted (a review helper)."""
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    train_steps(widget, qtbot, 1)
    viewer.layers["cells preview"].name = "kept"  # renamed by the user: theirs to keep
    train_steps(widget, qtbot, 1)
    viewer.layers.remove("cells")
    assert [layer.name for layer in viewer.layers] == ["cells labels", "kept"]


def test_the_preview_is_of_the_pair_being_worked_on(viewer, qtbot):
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    cells, labels = viewer.layers["cells"].data, viewer.layers["cells labels"].data
    other = viewer.add_image(cells[:, ::-1].copy(), name="other")
    widget.image.value = other
    widget.labels_layer.value = viewer.add_labels(labels[:, ::-1].copy(), name="other labels")
    widget.add_pair()
    viewer.layers.selection.active = viewer.layers["other labels"]  # painting the second
    train_steps(widget, qtbot, 1)
    names = [layer.name for layer in viewer.layers]
    assert "other preview" in names and "cells preview" not in names
    viewer.layers.selection.active = viewer.layers["cells"]  # and now the first
    train_steps(widget, qtbot, 1)
    names = [layer.name for layer in viewer.layers]
    # The other's, of the earlier model, is not left beside it (found by a walkthrough).
    assert "cells preview" in names and "other preview" not in names


def test_stop_while_paused_ends_training(viewer, qtbot):
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.start()
    train_until(widget, qtbot, 1)
    widget.toggle_pause()
    qtbot.waitUntil(lambda: widget.status.value.startswith("paused"), timeout=30_000)
    stop_and_wait(widget, qtbot)
    assert session(viewer).model is not None


def test_pause_at_once_holds_and_stop_before_a_step_keeps_the_current_model(
    viewer, qtbot, tmp_path, monkeypatch
):
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.start()
    widget.toggle_pause()  # while the training set is still being prepared
    assert widget._job.trainer is None
    qtbot.waitUntil(lambda: widget.status.value == "paused at step 0", timeout=30_000)
    stop_and_wait(widget, qtbot)
    assert widget.status.value == "stopped before the first step: the model is unchanged"
    assert session(viewer).model is None and session(viewer).model_path is None
    assert not list((tmp_path / "models").glob("*"))  # no untrained model file left
    assert "cells preview" not in viewer.layers  # nor an empty preview

    infos = []
    monkeypatch.setattr(_train_job, "show_info", infos.append)
    widget.start()
    worker = widget._worker
    widget.stop()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        viewer.window.remove_dock_widget(widget.native)  # closed before a step either
    assert not list((tmp_path / "models").glob("*"))
    assert infos == [
        "Training stopped before its first step, as its dock was closed; the current "
        "model is unchanged."
    ]
    qtbot.waitUntil(lambda: "cells preview" not in viewer.layers, timeout=10_000)


def test_runs_started_in_the_same_second_get_files_of_their_own(viewer, monkeypatch, tmp_path):
    monkeypatch.setattr(_train_job.time, "strftime", lambda _: "20261128-030000")
    monkeypatch.setattr(_train_job, "_HANDED_OUT", set())
    checkpoint.save(tmp_path / "models" / "cells-20261128-030000", UNet(width=4, depth=2))
    first = _train_job.new_model_path("cells")  # a file has the name: another session's
    assert first.name == "cells-20261128-030000-2"
    # Before its run wrote anything, as another viewer's run starting now would see it.
    assert _train_job.new_model_path("cells").name == "cells-20261128-030000-3"
    # A layer name is no path: no folder made, nothing Windows refuses.
    assert _train_job.new_model_path("plate 1/A:2").name == "plate_1_A_2-20261128-030000"


def test_a_tile_larger_than_the_images_is_lowered_to_fit(viewer, qtbot, errors, monkeypatch):
    infos = []
    monkeypatch.setattr(train_module, "show_info", infos.append)
    widget = dock(viewer)
    crop = (slice(0, 90), slice(0, 101))
    image = viewer.add_image(viewer.layers["cells"].data[crop], name="crop")
    labels = viewer.add_labels(viewer.layers["cells labels"].data[crop], name="crop labels")
    widget.image.value, widget.labels_layer.value = image, labels
    widget.add_pair()
    widget.tile.value = 256
    widget.start()
    assert widget.tile.value == 100 and "Tile lowered to 100" in infos[-1]
    train_until(widget, qtbot, 1)
    stop_and_wait(widget, qtbot)
    assert checkpoint.load(session(viewer).model_path)[1]["training"]["tile"] == 100
    widget.net_depth.value = 4
    tiny = viewer.add_image(np.zeros((10, 12), np.float32), name="tiny")
    tiny_labels = viewer.add_labels(np.ones((10, 12), np.int32), name="tiny labels")
    session(viewer).remove(session(viewer).annotations[0])
    widget.image.value, widget.labels_layer.value = tiny, tiny_labels
    widget.add_pair()
    widget.start()
    assert "too small for this network" in errors[-1] and widget._worker is None


def test_fine_tune_continues_from_the_current_model(viewer, qtbot):
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    train_steps(widget, qtbot, 2)
    first = session(viewer).model
    labels = viewer.layers["cells labels"]
    labels.data = np.where(labels.data == 3, 0, labels.data)  # a correction
    widget.start_from.value = "current model (fine-tune)"
    widget.start()
    assert widget.status.value == "preparing the training set to fine-tune the current model..."
    train_until(widget, qtbot, 2)
    stop_and_wait(widget, qtbot)
    tuned = session(viewer).model
    assert tuned is not first
    assert tuned.config["input_mean"] == first.config["input_mean"]  # kept, not refit
    assert tuned.cfg == first.cfg


@pytest.mark.parametrize("case", ["empty", "no labels", "rgb", "fine-tune nothing", "bad file"])
def test_bad_input_is_a_notification(viewer, errors, tmp_path, case):
    widget = dock(viewer)
    if case == "empty":
        widget.start()
    elif case == "no labels":
        widget.image.value = viewer.layers["cells"]
        widget.labels_layer.value = viewer.add_labels(np.zeros((10, 10), np.int32))
        widget.add_pair()
    elif case == "rgb":
        widget.image.value = viewer.add_image(np.zeros((256, 256, 3), np.uint8), rgb=True)
        widget.labels_layer.value = viewer.layers["cells labels"]
        widget.add_pair()
    elif case == "fine-tune nothing":
        add_sample_pair(widget, viewer)
        widget.start_from.value = "current model (fine-tune)"
        widget.start()
    else:
        (tmp_path / "notes.safetensors").write_text("not a model")
        widget.files.load_file.value = tmp_path / "notes.safetensors"
        widget.files.load()
    assert len(errors) == 1 and widget._worker is None
    assert session(viewer).model is None


def test_a_validation_share_holds_out_slices_and_plots_their_scores(viewer, qtbot):
    image, labels = viewer.layers["cells"].data, viewer.layers["cells labels"].data
    widget = dock(viewer)
    assert widget.val_fraction.value == 0  # all the painted slices train by default
    widget.image.value = viewer.add_image(np.stack([image] * 5), name="stack")
    widget.labels_layer.value = viewer.add_labels(np.stack([labels] * 5), name="stack labels")
    widget.add_pair()
    widget.val_fraction.value = 0.2
    widget.minutes.value = widget.minutes.min
    trainers = []

    def started() -> bool:
        job = widget._job
        if not trainers and job is not None and job.trainer is not None:
            trainers.append(job.trainer)
        return bool(trainers)

    widget.start()
    qtbot.waitUntil(started, timeout=60_000)
    assert len(trainers[0].pairs) == 4 and len(trainers[0].validation) == 1
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    assert widget.plot.validations  # scored at the end at least


def test_a_validation_share_too_small_a_set_cannot_give_is_said(viewer, qtbot, monkeypatch):
    warnings = []
    monkeypatch.setattr(train_module, "show_warning", warnings.append)
    widget = dock(viewer)
    add_sample_pair(widget, viewer)  # one image
    widget.val_fraction.value = 0.2
    widget.start()
    qtbot.waitUntil(lambda: bool(warnings), timeout=60_000)
    assert warnings == [
        "No validation: holding out a share needs 5 or more annotated images or slices, "
        "and the training set has 1; all of them train."
    ]
    stop_and_wait(widget, qtbot)


def test_adding_a_pair_again_keeps_its_region(viewer):
    widget = dock(viewer)
    labels = viewer.layers["cells labels"]
    region = viewer.add_labels(np.ones(labels.data.shape, np.uint8), name="region")
    session(viewer).add(viewer.layers["cells"], labels, region)
    add_sample_pair(widget, viewer)
    (annotation,) = session(viewer).annotations
    assert annotation.region is region


def test_the_preview_lies_over_a_calibrated_image(viewer, qtbot):
    viewer.layers["cells"].scale = (0.25, 0.5)
    viewer.layers["cells"].translate = (100, 50)
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.start()
    preview = viewer.layers["cells preview"]
    assert tuple(preview.scale) == (0.25, 0.5) and tuple(preview.translate) == (100, 50)
    train_until(widget, qtbot, 1)  # a run stopped before its first step removes it
    stop_and_wait(widget, qtbot)
    viewer.layers["cells"].scale = (2, 2)  # calibrated again: the kept preview follows
    widget.start()
    assert preview is viewer.layers["cells preview"] and tuple(preview.scale) == (2, 2)
    stop_and_wait(widget, qtbot)


def test_save_model_as_keeps_the_name_and_reports_failures(viewer, errors, tmp_path):
    widget = dock(viewer)
    widget.files.save_file.value = tmp_path / "run.2024.06"
    widget.files.save()
    assert errors == ["There is no model to save yet: train or load one first."]
    trained = checkpoint.save(tmp_path / "trained", UNet(width=4, depth=2))
    session(viewer).set_model(UNet(width=4, depth=2), trained)
    widget.files.save()
    assert (tmp_path / "run.2024.06.safetensors").read_bytes() == trained.read_bytes()
    assert widget.status.value == f"saved {tmp_path / 'run.2024.06.safetensors'}"
    widget.files.save_file.value = tmp_path / "missing folder" / "run"
    widget.files.save()
    assert len(errors) == 2 and errors[1].startswith("Cannot save the model as")
    assert widget.status.value == errors[1]  # not the earlier save's "saved"


def test_no_model_is_loaded_while_training(viewer, qtbot):
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    assert widget.files.load_button.enabled
    widget.start()
    assert not widget.files.load_button.enabled  # the run's model would replace it
    train_until(widget, qtbot, 1)
    stop_and_wait(widget, qtbot)
    assert widget.files.load_button.enabled


def test_closed_train_and_predict_docks_no_longer_follow_the_session(viewer):
    # A run stopped just before its dock closed publishes its model later: the
    # closed dock's deleted controls must not hear of it.
    changed = session(viewer).changed
    before = len(changed)
    docks = [dock(viewer), viewer.window.add_plugin_dock_widget("napari-unet", "Predict")[1]]
    assert len(changed) == before + 2
    for widget in docks:
        viewer.window.remove_dock_widget(widget.native)
    assert len(changed) == before


def test_notices_are_shown_at_their_level(viewer, monkeypatch):
    shown = []
    monkeypatch.setattr(train_module, "show_info", lambda m: shown.append(("info", m)))
    monkeypatch.setattr(train_module, "show_warning", lambda m: shown.append(("warning", m)))
    widget = dock(viewer)
    widget._on_event(Notice("out of memory: batch halved to 1"))
    widget._on_event(Notice("kept the model of step 4", level="info"))
    assert shown == [
        ("warning", "out of memory: batch halved to 1"),
        ("info", "kept the model of step 4"),
    ]


def test_a_setting_changed_while_training_is_said_to_apply_to_the_next_run(
    viewer, qtbot, monkeypatch
):
    infos = []
    monkeypatch.setattr(train_module, "show_info", infos.append)
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.w0.value = 5.0  # before a run: nothing to say
    widget.start()
    train_until(widget, qtbot, 1)
    widget.w0.value = 7.0
    widget.lr.value = 0.01
    stop_and_wait(widget, qtbot)
    assert [m for m in infos if "next run" in m] == [
        "Settings changed while training apply to the next run."
    ]
    assert checkpoint.load(session(viewer).model_path)[1]["training"]["w0"] == 5.0


def test_the_loss_plot_sits_under_the_status_on_axes_from_zero(viewer):
    from napari_unet._widgets._plot import _draw, _figure

    widget = dock(viewer)
    column = widget._column()
    order = [column.itemAt(i).widget() for i in range(column.count())]
    at = order.index(widget.plot)

    def holds(item, control):
        return item is control.native or item.isAncestorOf(control.native)

    assert holds(order[at - 1], widget.status)
    assert holds(order[at + 1], widget.files.save_button)
    figure, lines = _figure()  # not the dock's, which its render thread draws
    _draw((figure, lines), np.zeros(0), np.zeros(0), [])
    assert lines["axis"].get_xlim() == (0, 1.02) and lines["axis"].get_ylim() == (0, 1.05)
    _draw((figure, lines), np.arange(3), np.array([0.5, np.inf, np.nan]), [])  # diverged
    assert lines["axis"].get_ylim() == (0, 0.525)


def test_a_failed_load_replaces_the_earlier_status(viewer, errors, tmp_path):
    widget = dock(viewer)
    widget.files.load_file.value = checkpoint.save(tmp_path / "good", UNet(width=4, depth=2))
    widget.files.load()
    assert widget.status.value == "loaded good.safetensors"
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a model")
    widget.files.load_file.value = broken
    widget.files.load()
    assert len(errors) == 1 and errors[0].startswith("Cannot load broken.safetensors")
    assert widget.status.value == errors[0]


def test_a_training_set_without_cells_is_refused_in_the_widget(viewer, qtbot, errors):
    widget = dock(viewer)
    viewer.layers["cells labels"].data = np.zeros((256, 256), np.int32)
    add_sample_pair(widget, viewer)
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert errors == ["no labelled pixel: paint at least one cell before training"]
    assert widget.status.value == errors[0]
    assert "cells preview" not in viewer.layers  # made on the click, gone with the run


def test_a_bad_image_is_named_in_the_message(viewer, qtbot, errors):
    widget = dock(viewer)
    viewer.layers["cells"].data = np.full((256, 256), np.nan, np.float32)
    add_sample_pair(widget, viewer)
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert errors == ["'cells': the image contains NaN or infinite values"]


def test_training_does_not_stall_the_viewer(viewer, qtbot):
    """The longest gap between ticks of a 5 ms Qt timer while training runs, with the
    live plot and the preview layer refreshing (goal: under 50 ms), from the first
    step to the 100th: four previews and a plot redraw a second."""
    from qtpy.QtCore import QTimer

    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.start()
    train_until(widget, qtbot, 1, timeout=120_000)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(5)
    train_until(widget, qtbot, 100, timeout=120_000)
    timer.stop()
    stop_and_wait(widget, qtbot)
    assert previewed(viewer)
    gaps = np.diff(ticks) * 1000
    print(f"{len(ticks)} ticks, longest stall {gaps.max():.1f} ms")
    assert gaps.max() < 50


def test_closing_the_viewer_stops_training_and_keeps_the_checkpoint(
    viewer, qtbot, tmp_path, monkeypatch
):
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.start()
    train_until(widget, qtbot, 2)
    worker = widget._worker
    infos = []
    monkeypatch.setattr(train_module, "show_info", infos.append)
    monkeypatch.setattr(_train_job, "show_info", infos.append)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        viewer.close()
    assert infos == []  # no dock left to tell of
    saved = list((tmp_path / "models").glob("*.safetensors"))
    assert len(saved) == 1 and checkpoint.load(saved[0])[1]["step"] >= 2


def test_a_device_of_the_other_kind_keeps_the_settings_the_user_chose(viewer, monkeypatch):
    import torch

    widget = dock(viewer)  # width 4, tile 36, batch 2 chosen; padding left at "same"
    monkeypatch.setattr(train_module, "default_device", lambda _: torch.device("cuda"))
    widget._device_defaults()
    assert (widget.net_width.value, widget.padding.value) == (4, "valid")
    assert (widget.tile.value, widget.batch.value) == (36, 2)
    widget.tile.value = 388  # back at the GPU's default
    monkeypatch.setattr(train_module, "default_device", lambda _: torch.device("cpu"))
    widget._device_defaults()
    assert (widget.padding.value, widget.tile.value) == ("same", TrainConfig.tile)


def test_the_preview_of_a_stack_lies_on_its_slice(viewer, qtbot):
    image, labels = viewer.layers["cells"].data, viewer.layers["cells labels"].data
    widget = dock(viewer)
    widget.image.value = viewer.add_image(np.stack([image] * 3), name="stack", scale=(4, 1, 1))
    widget.labels_layer.value = viewer.add_labels(np.stack([labels] * 3), name="stack labels")
    widget.add_pair()
    viewer.dims.set_point(0, 4)  # world z 4: slice 1
    widget.start()
    preview = viewer.layers["stack preview"]
    assert preview.data.shape == (1, 256, 256) and tuple(preview.translate) == (4, 0, 0)
    qtbot.waitUntil(lambda: preview.data.max() > 0, timeout=120_000)
    assert preview.data.shape == (1, 256, 256)
    stop_and_wait(widget, qtbot)


@pytest.mark.filterwarnings("ignore:Non-orthogonal slicing")  # napari, of the tilted stack
def test_derived_layers_follow_a_rotated_sheared_image(viewer, qtbot):
    image, labels = viewer.layers["cells"].data, viewer.layers["cells labels"].data
    stack = viewer.add_image(
        np.stack([image] * 3), name="stack", scale=(3, 1, 1), rotate=30, shear=[0, 0, 0.2]
    )
    stack.affine = np.diag([1.0, 2.0, 1.0, 1.0])
    _, annotate = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")
    annotate.image.value = viewer.layers["stack"]
    annotate.create_labels()
    made = viewer.layers["stack labels"]
    for corner in ((0, 0, 0), (2, 255, 255)):
        np.testing.assert_allclose(made.data_to_world(corner), stack.data_to_world(corner))
    made.data = np.stack([labels] * 3)
    widget = dock(viewer)
    widget.image.value, widget.labels_layer.value = viewer.layers["stack"], made
    widget.add_pair()
    stack.rotate = (0, 30, 0)  # the z axis tilted too
    viewer.dims.point = stack.data_to_world((1, 128, 128))
    widget.start()
    preview = viewer.layers["stack preview"]
    for y, x in ((0, 0), (255, 255)):  # the preview's slice lies on slice 1
        np.testing.assert_allclose(
            preview.data_to_world((0, y, x)), stack.data_to_world((1, y, x)), atol=1e-9
        )
    stop_and_wait(widget, qtbot)


def test_adding_labels_with_a_marked_region_adds_the_region(viewer):
    from napari_unet._widgets.annotate import AnnotateWidget

    annotate = AnnotateWidget(viewer)
    annotate.labels_layer.value = viewer.layers["cells labels"]
    region = annotate.mark_region()
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    (annotation,) = session(viewer).annotations
    assert annotation.region is region
    assert widget.status.value == "'cells labels' trains only inside 'cells labels region'"


def test_the_training_set_is_listed_under_the_layers_new_names(viewer, qtbot):
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    viewer.layers["cells labels"].name = "corrected"
    viewer.layers["cells"].name = "plate 1"
    assert widget.pairs.value == "plate 1 / corrected"


def test_a_pair_whose_region_marks_nothing_is_said_to_be_left_out():
    from napari_unet.core.events import Progress

    image, labels = np.zeros((48, 48), np.float32), np.zeros((48, 48), np.int32)
    labels[10:20, 10:20], labels[30:40, 30:40] = 1, 2
    job = _train_job.TrainJob(
        [image, image],
        [labels, labels],
        [None, np.zeros(labels.shape, bool)],
        UNet(width=4, depth=2),
        TrainConfig(steps=1, tile=36, batch_size=1, device="cpu"),
        fine_tune=False,
        names=["whole", "partly"],
    )
    events = list(job.run())
    assert events[0] == Notice(
        "Nothing is marked in the annotated region of 'partly': left out of this run "
        "(paint the region where the labels are right)."
    )
    assert any(isinstance(e, Progress) for e in events)


def test_lazy_multiscale_and_4d_images_in_the_training_set(viewer, errors):
    import dask.array as da

    widget = dock(viewer)
    lazy = da.from_array(np.random.default_rng(0).random((8, 64, 64), dtype=np.float32))
    widget.image.value = viewer.add_image(lazy, name="lazy")
    widget.labels_layer.value = viewer.add_labels(np.zeros((8, 64, 64), np.int32))
    widget.add_pair()
    # Not read on the GUI thread: the worker reads the annotated slices only.
    assert session(viewer).annotations[0].arrays()[0] is lazy
    full = np.zeros((64, 64), np.float32)
    widget.image.value = viewer.add_image([full, full[::2, ::2]], multiscale=True)
    widget.labels_layer.value = viewer.add_labels(np.zeros((64, 64), np.int32))
    widget.add_pair()
    assert session(viewer).annotations[1].arrays()[0] is full  # the full resolution
    widget.image.value = viewer.add_image(np.zeros((2, 3, 16, 16)), name="tz")
    widget.labels_layer.value = viewer.add_labels(np.zeros((2, 3, 16, 16), np.int32))
    widget.add_pair()
    assert len(session(viewer).annotations) == 2
    assert errors == [
        "'tz' has 4 axes (2, 3, 16, 16): the U-Net takes a 2D image or a stack (Z, Y, X), "
        "one channel per layer (open channels with channel_axis); of a time series, one "
        "time point as its own layer."
    ]


def test_a_preview_slice_with_nan_is_skipped_not_fatal():
    from napari_unet.core.events import Done

    stack = np.random.default_rng(0).random((4, 48, 48), dtype=np.float32)
    stack[3, :5] = np.nan  # the slice in view, not annotated
    labels = np.zeros(stack.shape, np.int32)
    labels[1, 10:20, 10:20], labels[1, 30:40, 30:40] = 1, 2
    job = _train_job.TrainJob(
        [stack],
        [labels],
        [None],
        UNet(width=4, depth=2),
        TrainConfig(steps=3, tile=36, batch_size=1, device="cpu", preview_every=1),
        fine_tune=False,
        preview=stack[3],
    )
    events = list(job.run())
    message = "The slice in view holds NaN or infinite values: no preview."
    assert _train_job.NoPreview(message) in events
    assert isinstance(events[-1], Done) and events[-1].step == 3


def test_a_preview_dropped_for_nan_leaves_no_empty_layer(viewer, qtbot, monkeypatch):
    warnings = []
    monkeypatch.setattr(train_module, "show_warning", warnings.append)
    image, labels = viewer.layers["cells"].data, viewer.layers["cells labels"].data
    stack = np.stack([image, image]).astype(np.float32)
    stack[1, :5] = np.nan  # the slice in view, not annotated
    widget = dock(viewer)
    widget.image.value = viewer.add_image(stack, name="stack")
    widget.labels_layer.value = viewer.add_labels(np.stack([labels, 0 * labels]))
    widget.add_pair()
    message = "The slice in view holds NaN or infinite values: no preview."
    for kept in (False, True):  # made by this run, or kept from an earlier one
        if kept:
            previous = {DERIVED: "preview"}  # as an earlier run leaves its layer
            viewer.add_image(np.ones((1, 256, 256)), name="stack preview", metadata=previous)
        viewer.dims.set_point(0, 1)
        warnings.clear()
        widget.start()
        qtbot.waitUntil(lambda: warnings == [message], timeout=60_000)
        assert "stack preview" not in viewer.layers
        train_until(widget, qtbot, 1)  # the run goes on
        stop_and_wait(widget, qtbot)


def test_a_runtime_error_ends_the_run_with_a_message(viewer, qtbot, errors, monkeypatch):
    # torch raises RuntimeError; superqt drops those of generator workers silently,
    # which left Train and Load disabled for good.
    from napari_unet.core.train import Trainer

    def fails(self):
        raise RuntimeError("out of memory even at batch 1")
        yield

    monkeypatch.setattr(Trainer, "run", fails)
    widget = dock(viewer)
    add_sample_pair(widget, viewer)
    widget.start()
    model = weakref.ref(widget._job.model)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    assert errors == ["Training failed: out of memory even at batch 1"]
    assert widget.train_button.enabled and widget.files.load_button.enabled
    assert widget.status.value == "Training failed: out of memory even at batch 1"
    gc.collect()  # without Done, the run kept its network: one more on the GPU per retry
    assert model() is None


def test_the_progress_bar_leaves_pauses_out(viewer):
    """It measured the wall time since Train: paused 15 s 2 s into a 12-second run,
    the bar read 66 % with 9 s of training left."""
    from napari_unet.core.events import Progress

    widget = dock(viewer)
    widget._on_event(Progress(5, 10**9, 0.5, 1.0, seconds_left=9.0, seconds=3.0))
    assert widget.progress.value == 250  # 3 s trained of 12
