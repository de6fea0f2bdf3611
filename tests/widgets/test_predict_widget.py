import numpy as np
import pytest
import torch
from qtpy.QtCore import QThreadPool

from napari_unet._widgets._session import session
from napari_unet._widgets.predict import IN_MEMORY, PredictWidget
from napari_unet.core import checkpoint
from napari_unet.core.instances import to_instances
from napari_unet.core.model import UNet
from napari_unet.core.predict import predict_tiled


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    return checkpoint.save(tmp_path / "tiny.safetensors", UNet(width=4, depth=2))


def plugin_widget(viewer) -> PredictWidget:
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Predict")
    return widget


def predicting(viewer, model_file) -> PredictWidget:
    """The dock, started on the sample with small tiles (many steps to stop between)."""
    widget = plugin_widget(viewer)
    widget.model_file.value = model_file
    widget.tile.value = 16
    widget.start()
    return widget


def test_manifest_gives_the_widget_and_sample(viewer_with_sample):
    assert [layer.name for layer in viewer_with_sample.layers] == ["cells", "cells labels"]
    widget = plugin_widget(viewer_with_sample)
    assert isinstance(widget, PredictWidget)
    assert widget.image.value is viewer_with_sample.layers["cells"]


def test_predict_adds_probability_and_labels_layers(viewer_with_sample, model_file, qtbot):
    widget = plugin_widget(viewer_with_sample)
    widget.model_file.value = model_file
    widget.tile.value = 64
    steps = []
    widget.progress.changed.connect(lambda value: steps.append((value, widget.progress.max)))
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    names = [layer.name for layer in viewer_with_sample.layers]
    assert names == ["cells", "cells labels", "cells probabilities", "cells predicted"]
    probs = viewer_with_sample.layers["cells probabilities"].data
    assert probs.shape == (256, 256) and 0 <= probs.min() and probs.max() <= 1
    # Test-time augmentation is on unless unticked, as on the command line.
    model, _ = checkpoint.load(model_file)
    image = viewer_with_sample.layers["cells"].data
    expected = predict_tiled(model, image, tile_size=64, tta=True)[1]
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert steps[-1] == (16, 16)
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    # Without labels of the user's, the prediction is the image's labels, which the
    # Annotate dock pairs with it for correcting; a failed start says why in the
    # status, not what the earlier run found.
    viewer_with_sample.layers.remove("cells predicted")
    viewer_with_sample.layers.remove("cells labels")
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert "cells labels" in viewer_with_sample.layers
    widget.model_file.value = model_file.parent / "gone.safetensors"
    widget.start()
    assert widget.status.value == "Choose a model file (.safetensors) to predict with."


def test_a_stack_is_predicted_slice_by_slice_and_said_so(make_napari_viewer, model_file, qtbot):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((3, 48, 48), dtype=np.float32), name="stack")
    widget = plugin_widget(viewer)
    widget.model_file.value, widget.tile.value = model_file, 32
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    labels = viewer.layers["stack labels"].data
    assert labels.shape == (3, 48, 48)
    held = sum(bool(plane.any()) for plane in labels)
    assert widget.status.value == (
        f"stack: {labels.max()} cells found slice by slice, in {held} of 3 slices"
    )


def test_cancel_adds_nothing(viewer_with_sample, model_file, qtbot):
    widget = predicting(viewer_with_sample, model_file)
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert len(viewer_with_sample.layers) == 2
    assert widget.status.value == "cancelled"
    widget.tile.value = 128  # a run to the end, then one cancelled at once
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert widget.progress.value == widget.progress.max
    widget.tile.value = 16
    widget.start()
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert widget.progress.value < widget.progress.max  # not the finished run's 100%


@pytest.mark.parametrize("finished", [False, True])
def test_removing_the_image_cancels_its_prediction(
    viewer_with_sample, model_file, qtbot, finished
):
    widget = predicting(viewer_with_sample, model_file)
    if finished:  # the last tile done, its result on its way to the GUI thread (a review)
        QThreadPool.globalInstance().waitForDone(60_000)
    viewer_with_sample.layers.remove("cells")
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert [layer.name for layer in viewer_with_sample.layers] == ["cells labels"]
    assert widget.status.value == "cancelled: 'cells' was removed"


def test_cancel_after_the_last_tile_adds_nothing(viewer_with_sample, model_file, qtbot):
    widget = predicting(viewer_with_sample, model_file)
    QThreadPool.globalInstance().waitForDone(60_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert len(viewer_with_sample.layers) == 2
    assert widget.status.value == "cancelled"


def errors_shown(monkeypatch):
    shown = []
    monkeypatch.setattr("napari_unet._widgets._common.show_error", shown.append)
    return shown


def test_missing_model_file_is_a_message(viewer_with_sample, monkeypatch, tmp_path):
    shown = errors_shown(monkeypatch)
    widget = plugin_widget(viewer_with_sample)
    widget.model_file.value = tmp_path / "nothing.safetensors"
    widget.start()
    assert widget._worker is None
    assert "model file" in shown[0]


def test_not_a_model_file_is_a_message(viewer_with_sample, monkeypatch, tmp_path, qtbot):
    shown = errors_shown(monkeypatch)
    bad = tmp_path / "notes.safetensors"
    bad.write_bytes(b"\x80\x04 a pickle")
    widget = plugin_widget(viewer_with_sample)
    widget.model_file.value = bad
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    assert "pickle" in shown[0]
    assert len(viewer_with_sample.layers) == 2


def test_rgb_and_wrong_channels_are_messages(make_napari_viewer, monkeypatch, tmp_path, qtbot):
    shown = errors_shown(monkeypatch)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="rgb", rgb=True)
    widget = plugin_widget(viewer)
    widget.model_file.value = checkpoint.save(
        tmp_path / "three.safetensors", UNet(in_channels=3, width=2, depth=2)
    )
    widget.start()
    assert "RGB" in shown[-1] and "Split RGB" in shown[-1]
    viewer.add_image(np.zeros((32, 32), np.float32), name="grey")
    widget.image.value = viewer.layers["grey"]
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    assert "3 channels" in shown[-1] or "expected" in shown[-1]
    assert len(viewer.layers) == 2


def test_the_model_trained_in_the_viewer_is_used(viewer_with_sample, qtbot):
    torch.manual_seed(0)
    session(viewer_with_sample).set_model(UNet(width=4, depth=2))
    widget = plugin_widget(viewer_with_sample)
    assert widget.source.value == IN_MEMORY and not widget.model_file.visible
    widget.tile.value = 64
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert "cells predicted" in viewer_with_sample.layers


def test_a_chosen_model_file_stays_chosen_until_a_new_model_arrives(viewer_with_sample):
    viewer = viewer_with_sample
    torch.manual_seed(0)
    session(viewer).set_model(UNet(width=4, depth=2))
    widget = plugin_widget(viewer)
    widget.source.value = "file"
    session(viewer).add(viewer.layers["cells"], viewer.layers["cells labels"])
    assert widget.source.value == "file" and not widget.model_file.native.isHidden()
    session(viewer).set_model(UNet(width=4, depth=2))
    assert widget.source.value == IN_MEMORY and widget.model_file.native.isHidden()


def test_results_lie_over_a_calibrated_image(viewer_with_sample, model_file, qtbot):
    viewer = viewer_with_sample
    viewer.layers["cells"].scale = (0.25, 0.5)
    viewer.layers["cells"].translate = (100, 50)
    widget = plugin_widget(viewer)
    widget.model_file.value = model_file
    widget.tta.value = False
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    for name in ("cells probabilities", "cells predicted"):
        layer = viewer.layers[name]
        assert tuple(layer.scale) == (0.25, 0.5) and tuple(layer.translate) == (100, 50)


def test_predict_into_an_existing_labels_layer_is_one_undo(viewer_with_sample, model_file, qtbot):
    viewer = viewer_with_sample
    target = viewer.add_labels(np.zeros((256, 256), np.int32), name="mine")
    target.data[:10, :10] = 7
    widget = plugin_widget(viewer)
    widget.model_file.value = model_file
    widget.into.value = target
    widget.tile.value = 64
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    predicted = target.data.copy()
    assert [layer.name for layer in viewer.layers][-1] == "cells probabilities"
    probabilities = viewer.layers["cells probabilities"].data
    assert predicted.max() == to_instances(np.stack([1 - probabilities, probabilities])).max()
    target.undo()
    assert (target.data[:10, :10] == 7).all() and target.data[10:].max() == 0
    target.redo()
    np.testing.assert_array_equal(target.data, predicted)
    shown = viewer.layers["cells probabilities"]
    viewer.layers["cells"].name = "renamed"
    viewer.layers["cells probabilities"].name = "renamed probabilities"
    widget.start()  # again: the probabilities replace the last ones, under today's name
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert viewer.layers["renamed probabilities"] is shown
    assert not any("probabilities [" in layer.name for layer in viewer.layers)


def test_a_stack_predicted_into_its_labels_is_one_undo_of_the_changed_box(
    make_napari_viewer, model_file, qtbot, monkeypatch
):
    # napari's data_setitem keeps every changed pixel's indices and took 3.4 s on the
    # GUI thread for a 4096x4096 prediction: the step holds the changed box instead.
    cells = np.zeros((3, 48, 48), np.int32)
    cells[1, 10:20, 30:40], cells[2, 12:14, 5:9] = 5, 6
    monkeypatch.setattr("napari_unet._widgets.predict.to_instances", lambda *_: cells)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 48, 48), np.float32), name="stack")
    mine = np.zeros((3, 48, 48), np.uint16)
    mine[1, 10:20, 30:40], mine[2, 12:14, 5:7] = 5, 3  # painted as predicted, and not
    target = viewer.add_labels(mine.copy(), name="mine")
    widget = plugin_widget(viewer)
    widget.model_file.value, widget.tile.value, widget.into.value = model_file, 32, target
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    np.testing.assert_array_equal(target.data, cells)
    assert target.data.dtype == np.uint16
    [(box, before, after)] = target._undo_history[-1]
    assert box == (slice(2, 3), slice(12, 14), slice(5, 9))
    np.testing.assert_array_equal(before, mine[box])
    np.testing.assert_array_equal(after, cells[box])
    target.undo()
    np.testing.assert_array_equal(target.data, mine)
    target.redo()
    np.testing.assert_array_equal(target.data, cells)
    target.undo()
    target.data_setitem((np.array([2]), np.array([0]), np.array([0])), 9)  # a stroke after
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    [(box, _, _)] = target._undo_history[-1]
    assert box == (slice(2, 3), slice(0, 14), slice(0, 9))
    np.testing.assert_array_equal(target.data, cells)
    target.undo()
    assert target.data[2, 0, 0] == 9 and target.data[2, 12, 5] == 3


def test_no_model_in_memory_and_a_target_of_another_shape_are_messages(
    viewer_with_sample, model_file, monkeypatch
):
    shown = errors_shown(monkeypatch)
    widget = plugin_widget(viewer_with_sample)
    widget.source.value = IN_MEMORY
    widget.start()
    assert "No model" in shown[-1]
    widget.source.value = "file"
    widget.model_file.value = model_file
    widget.into.value = viewer_with_sample.add_labels(np.zeros((5, 5), np.int32), name="small")
    widget.start()
    assert "shape" in shown[-1] and widget._worker is None
    assert len(viewer_with_sample.layers) == 3


def test_closing_the_viewer_while_predicting_is_quiet(viewer_with_sample, model_file, qtbot):
    widget = predicting(viewer_with_sample, model_file)
    worker = widget._worker
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        viewer_with_sample.close()


def test_labels_into_offers_cells_and_warns_before_overwriting_training_labels(
    viewer_with_sample, model_file, qtbot, monkeypatch
):
    warnings = []
    monkeypatch.setattr("napari_unet._widgets.predict.show_warning", warnings.append)
    viewer = viewer_with_sample
    _, annotate = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")
    annotate.mark_region()
    viewer.layers["cells labels region"].data[:] = 1
    annotate.add_to_training_set()
    qtbot.waitUntil(lambda: "cells labels gaps" in viewer.layers, timeout=30_000)
    widget = plugin_widget(viewer)
    offered = [getattr(layer, "name", layer) for layer in widget.into.choices]
    assert offered == [None, "cells labels"]  # not the region nor the gaps
    widget.model_file.value = model_file
    widget.into.value = widget.into.choices[1]
    widget.tile.value = 64
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert warnings == [
        "'cells labels' is in the training set: the prediction replaced its painted cells "
        "(Ctrl+Z on the layer brings them back)."
    ]


def test_closing_the_dock_while_predicting_adds_nothing_and_closes_again_quietly(
    viewer_with_sample, model_file, qtbot, close_after_exit
):
    widget = predicting(viewer_with_sample, model_file)
    worker = widget._worker
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        viewer_with_sample.window.remove_dock_widget(widget.native)
    assert [layer.name for layer in viewer_with_sample.layers] == ["cells", "cells labels"]
    close_after_exit(widget, worker)


@pytest.mark.parametrize("case", ["lazy", "reshaped", "uint8"])
def test_a_target_that_cannot_take_the_labels_gets_them_in_a_new_layer(
    viewer_with_sample, model_file, qtbot, monkeypatch, case
):
    import dask.array as da

    warnings = []
    monkeypatch.setattr("napari_unet._widgets.predict.show_warning", warnings.append)
    monkeypatch.setattr("napari_unet._widgets.predict.to_instances", lambda *_: many_cells)
    many_cells = np.arange(256 * 256, dtype=np.int32).reshape(256, 256)
    viewer = viewer_with_sample
    data = np.zeros((256, 256), np.uint8 if case == "uint8" else np.int32)
    target = viewer.add_labels(da.from_array(data) if case == "lazy" else data, name="mine")
    widget = predicting(viewer, model_file)
    widget._target = target  # as if chosen in "Labels into"
    if case == "reshaped":  # while the prediction runs
        target.data = np.zeros((64, 64), np.int32)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    why = {
        "lazy": "'mine' is not held in memory (Array)",
        "reshaped": "'mine' now has shape (64, 64), the prediction (256, 256)",
        "uint8": "'mine' (uint8) cannot hold 65535 cells",
    }[case]
    assert warnings == [f"{why}; the labels went into a new layer instead."]
    assert viewer.layers[-1].name == "cells predicted"  # beside the sample's "cells labels"
    np.testing.assert_array_equal(viewer.layers[-1].data, many_cells)
    assert not np.asarray(target.data).any()  # untouched
    assert widget.status.value == "cells: 65535 cells found"


def test_a_prediction_arriving_mid_stroke_waits_for_the_stroke_to_end(
    viewer_with_sample, model_file, qtbot, monkeypatch
):
    # Written during a stroke, the prediction would join the stroke's undo step, and
    # one Ctrl+Z would take both away.
    cells = np.zeros((256, 256), np.int32)
    cells[100:120, 100:120], cells[150:170, 150:170] = 11, 12
    monkeypatch.setattr("napari_unet._widgets.predict.to_instances", lambda *_: cells)
    viewer = viewer_with_sample
    target = viewer.add_labels(np.zeros((256, 256), np.int32), name="mine")
    stroke = target.block_history()  # as napari's paint tool holds it while dragging
    stroke.__enter__()
    target.paint((5, 5), 9, refresh=False)
    widget = predicting(viewer, model_file)
    widget._target = target  # as if chosen in "Labels into"
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    qtbot.wait(300)
    assert target.data.max() == 9  # the stroke alone so far
    stroke.__exit__(None, None, None)
    qtbot.waitUntil(lambda: target.data.max() == 12, timeout=5_000)
    np.testing.assert_array_equal(target.data, cells)
    target.undo()  # the prediction
    assert target.data.max() == 9 and target.data[5, 5] == 9
    target.undo()  # the stroke
    assert target.data.max() == 0


def test_a_runtime_error_ends_the_run_with_a_message(
    viewer_with_sample, model_file, qtbot, monkeypatch
):
    # torch raises RuntimeError; superqt drops those of generator workers silently,
    # which left the dock "predicting..." for good and the pool a thread short.
    from qtpy.QtCore import QThreadPool

    shown = errors_shown(monkeypatch)

    def fails(*_):
        raise RuntimeError("out of memory even at batch 1")
        yield

    monkeypatch.setattr("napari_unet._widgets.predict.iter_predict", fails)
    threads = QThreadPool.globalInstance().maxThreadCount()
    widget = predicting(viewer_with_sample, model_file)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    assert shown == ["Prediction failed: out of memory even at batch 1"]
    assert widget.run_button.enabled and widget.status.value == shown[0]
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().maxThreadCount() == threads)


def test_the_probabilities_follow_a_renamed_image(viewer_with_sample, model_file, qtbot):
    viewer = viewer_with_sample
    widget = predicting(viewer, model_file)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    shown = viewer.layers["cells probabilities"]
    viewer.layers["cells"].name = "nuclei"
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert viewer.layers["nuclei probabilities"] is shown  # renamed, not one more
    assert "cells probabilities" not in viewer.layers


def test_a_cropped_image_keeps_its_one_probabilities_layer(viewer_with_sample, model_file, qtbot):
    """One more "[k]" layer was added at each prediction after the image changed shape."""
    viewer = viewer_with_sample
    widget = predicting(viewer, model_file)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    shown = viewer.layers["cells probabilities"]
    viewer.layers["cells"].data = viewer.layers["cells"].data[:64, :48]
    for _ in range(2):
        widget.start()
        qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert [layer for layer in viewer.layers if "probabilities" in layer.name] == [shown]
    assert shown.data.shape == (64, 48)


def test_an_image_unlike_the_training_images_is_warned_of(
    viewer_with_sample, tmp_path, monkeypatch, qtbot
):
    warnings = []
    monkeypatch.setattr("napari_unet._widgets.predict.show_warning", warnings.append)
    eight_bit = UNet(width=4, depth=2, input_mean=(120.0,), input_std=(40.0,))
    widget = predicting(viewer_with_sample, checkpoint.save(tmp_path / "m", eight_bit))
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert "cells predicted" in viewer_with_sample.layers  # predicted all the same
    (warning,) = warnings
    assert warning.startswith("'cells': the image's intensities (mean 0.")
    assert "trained on (mean 120, sd 40)" in warning
