import threading
from dataclasses import astuple

import numpy as np
import pytest

from napari_unet._widgets import _weights_job, weights
from napari_unet._widgets._session import WeightSettings
from napari_unet._widgets.weights import WeightsWidget
from napari_unet.core.weights import WeightMap


def plugin_widget(viewer) -> WeightsWidget:
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Weight map")
    return widget


def settle(widget, qtbot):
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)


@pytest.fixture
def defaults(loss_weights):
    """The loss weights with the docks' default settings (the Trainer's)."""
    return lambda labels, annotated=None: loss_weights(
        labels, *astuple(WeightSettings()), annotated=annotated
    )


def shown(viewer, name="cells labels weights"):
    return viewer.layers[name].data


def errors_shown(monkeypatch):
    errors = []
    monkeypatch.setattr("napari_unet._widgets.weights.show_error", errors.append)
    return errors


def test_weights_follow_painting_and_controls(
    viewer_with_sample, qtbot, monkeypatch, defaults, loss_weights
):
    viewer = viewer_with_sample
    labels = viewer.layers["cells labels"]
    widget = plugin_widget(viewer)
    assert isinstance(widget, WeightsWidget) and widget.labels_layer.value is labels
    settle(widget, qtbot)
    layer = viewer.layers["cells labels weights"]
    np.testing.assert_array_equal(layer.data, defaults(labels.data))
    assert layer.colormap.name == "inferno"
    assert layer.contrast_limits == pytest.approx([0.0, WeightSettings().w0 + 1.0])
    assert viewer.layers.selection.active is labels  # still the layer being painted

    # The first dock's thread that loads the kernels edits maps of its own.
    for thread in threading.enumerate():
        if thread.name == "napari-unet-kernels":
            thread.join(60)
    updates = []
    edit = WeightMap.edit
    monkeypatch.setattr(WeightMap, "edit", lambda m, *a: updates.append(a[0]) or edit(m, *a))
    labels.brush_size = 9
    labels.paint((128, 40), 99)  # a new cell touching others: a new ridge
    settle(widget, qtbot)
    assert updates == [(slice(124, 133), slice(36, 45))]  # only the stroke's box
    np.testing.assert_array_equal(shown(viewer), defaults(labels.data))

    widget.w0.value, widget.sigma.value = 10.0, 3.0
    widget.class_balance.value = True
    settle(widget, qtbot)
    np.testing.assert_array_equal(shown(viewer), loss_weights(labels.data, 10.0, 3.0, True))
    wb, wf = WeightMap(labels.data, 10.0, 3.0).classes  # the balance raises the cells here
    assert wb == 1.0 < wf
    assert layer.contrast_limits == pytest.approx([0.0, max(10.0 + wb, wf)])

    labels.undo()  # emits no paint event, still followed
    settle(widget, qtbot)
    np.testing.assert_array_equal(shown(viewer), loss_weights(labels.data, 10.0, 3.0, True))


def test_weights_follow_a_stroke_that_pauses(viewer_with_sample, qtbot, defaults):
    # The Weight map computes a stroke in milliseconds: waiting the docks' usual
    # 200 ms after the last edit was most of the time before the weights showed.
    viewer = viewer_with_sample
    labels = viewer.layers["cells labels"]
    widget = plugin_widget(viewer)
    settle(widget, qtbot)
    labels.brush_size = 9
    with labels.block_history():  # as napari's paint tool holds it while dragging
        labels.paint((128, 40), 99)
        qtbot.wait(weights.QUIET_MS + 70)  # a pause in the stroke
        assert not widget._live.timer.isActive()  # computing what is painted so far
        settle(widget, qtbot)
        np.testing.assert_array_equal(shown(viewer), defaults(labels.data))
        labels.paint((128, 48), 99)
    settle(widget, qtbot)
    np.testing.assert_array_equal(shown(viewer), defaults(labels.data))


def test_region_and_stack(make_napari_viewer, qtbot, defaults):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    stack = np.zeros((3, 40, 48), np.int32)
    stack[:, 5:20, 5:20], stack[:, 5:20, 20:35], stack[1, 25:35, 10:40] = 1, 2, 3
    labels = viewer.add_labels(stack, name="nuclei")
    widget = WeightsWidget(viewer)
    settle(widget, qtbot)
    np.testing.assert_array_equal(shown(viewer, "nuclei weights"), defaults(stack))
    region = viewer.add_labels(np.zeros_like(stack, np.uint8), name="nuclei region")
    assert widget.region.value is region  # marked later, found by its name
    settle(widget, qtbot)
    assert not shown(viewer, "nuclei weights").any()  # nothing annotated: no weight
    region.data = (rng.random(stack.shape) > 0.3).astype(np.uint8)
    settle(widget, qtbot)
    annotated = region.data != 0
    np.testing.assert_array_equal(shown(viewer, "nuclei weights"), defaults(stack, annotated))

    labels.data_setitem((np.array([2]), np.array([30]), np.array([30])), 4)
    settle(widget, qtbot)
    expected = defaults(labels.data, annotated)
    np.testing.assert_array_equal(shown(viewer, "nuclei weights"), expected)


def test_cells_of_one_label_and_unpainted_slices_are_read_as_training_reads_them(
    make_napari_viewer, qtbot, defaults
):
    viewer = make_napari_viewer()
    stack = np.zeros((3, 40, 48), np.int32)
    stack[0, 5:20, 5:20] = stack[0, 5:20, 23:35] = 1  # two cells, one label, 3 px apart
    stack[0, 30:, :] = -1  # not annotated
    stack[2, :10] = -1  # nothing but unannotated pixels and background: left out
    labels = viewer.add_labels(stack, name="nuclei")
    widget = WeightsWidget(viewer)
    settle(widget, qtbot)
    weights = shown(viewer, "nuclei weights")
    assert weights[0].max() > 1.5  # the border term between the two cells
    assert not weights[0, 30:].any()
    assert not weights[1].any() and not weights[2].any()  # no cell, no region
    np.testing.assert_array_equal(weights, defaults(stack))
    # Nothing annotated, nothing kept: a stack painted on few slices costs no
    # WeightMap (several int64 and float32 planes) for each of the others.
    assert [plane.map is None for plane in widget._planes] == [False, True, True]
    labels.data_setitem((np.array([1]), np.array([30]), np.array([30])), 1)
    settle(widget, qtbot)
    assert shown(viewer, "nuclei weights")[1].any()
    assert widget._planes[1].map is not None
    np.testing.assert_array_equal(shown(viewer, "nuclei weights"), defaults(labels.data))


def test_bad_region_is_a_message(make_napari_viewer, monkeypatch, qtbot):
    errors = errors_shown(monkeypatch)
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((20, 20), np.int32), name="cells")
    small = viewer.add_labels(np.zeros((10, 10), np.uint8), name="small")
    widget = WeightsWidget(viewer)
    widget.region.value = small
    settle(widget, qtbot)
    assert "shape" in errors[-1] and "shape" in widget.status.value
    assert "cells weights" not in viewer.layers
    widget.region.value = widget.labels_layer.value
    settle(widget, qtbot)
    assert "other than the labels" in errors[-1]
    widget.labels_layer.value = viewer.add_labels(np.zeros((2, 3, 8, 8), np.int32), name="tz")
    settle(widget, qtbot)
    assert errors[-1] == "'tz' has 4 axes: choose a 2D or (Z, Y, X) Labels layer"


def test_no_labels_layer_says_so(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = WeightsWidget(viewer)
    settle(widget, qtbot)
    assert "Choose a Labels layer" in widget.status.value


def test_closing_stops_the_worker(viewer_with_sample, qtbot):
    viewer = viewer_with_sample
    widget = plugin_widget(viewer)
    labels = viewer.layers["cells labels"]
    settle(widget, qtbot)
    widget._live.start()  # a computation under way; its end is queued for the event loop
    worker = widget._live.worker
    viewer.window.remove_dock_widget(widget.native)
    assert worker.abort_requested
    qtbot.waitUntil(lambda: widget._live.worker is None, timeout=30_000)
    labels.paint((128, 128), 77)  # no longer followed
    assert not widget.busy
    widget.status.value = "closed"
    widget._on_returned("")  # a result queued before the close: the status may be deleted
    assert widget.status.value == "closed"


def test_edits_during_a_run_are_coalesced(viewer_with_sample, qtbot, monkeypatch, defaults):
    viewer = viewer_with_sample
    labels = viewer.layers["cells labels"]
    widget = plugin_widget(viewer)
    settle(widget, qtbot)
    started = []
    create = weights.create_live_worker
    monkeypatch.setattr(weights, "create_live_worker", lambda *a: started.append(a) or create(*a))
    widget._live.start()
    for x in (40, 60, 80):
        labels.paint((30, x), 50)
        widget._live.start()  # as the debounce timer would, while the first run is going
    assert len(started) == 1
    settle(widget, qtbot)
    assert len(started) == 2  # one more run for all three strokes
    np.testing.assert_array_equal(shown(viewer), defaults(labels.data))


def test_the_train_dock_and_this_one_share_the_weight_settings(
    viewer_with_sample, qtbot, monkeypatch, loss_weights
):
    built = []

    class Counted(WeightMap):
        def __init__(self, *args, **kwargs):
            built.append(args[1:4])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(_weights_job, "WeightMap", Counted)
    viewer = viewer_with_sample
    widget = plugin_widget(viewer)
    _, train = viewer.window.add_plugin_dock_widget("napari-unet", "Train")
    settle(widget, qtbot)
    train.w0.value, train.sigma.value = 6.0, 2.5
    train.class_balance.value = not train.class_balance.value
    balance = train.class_balance.value
    assert (widget.w0.value, widget.sigma.value, widget.class_balance.value) == (6.0, 2.5, balance)
    settle(widget, qtbot)
    labels = viewer.layers["cells labels"].data
    np.testing.assert_array_equal(shown(viewer), loss_weights(labels, 6.0, 2.5, balance))

    built.clear()
    train.ignore_outline.value = False
    assert not widget.ignore_outline.value
    settle(widget, qtbot)
    assert built == []  # the outline changes what is shown, not the Eq. 2 maps
    with_outline = loss_weights(labels, 6.0, 2.5, balance)
    without = loss_weights(labels, 6.0, 2.5, balance, ignore_outline=False)
    assert (without != with_outline).any()
    np.testing.assert_array_equal(shown(viewer), without)

    widget.w0.value = 3.0  # and back the other way
    widget.ignore_outline.value = True
    assert train.w0.value == 3.0 and train.ignore_outline.value
    settle(widget, qtbot)
    np.testing.assert_array_equal(shown(viewer), loss_weights(labels, 3.0, 2.5, balance))
    viewer.window.remove_dock_widget(widget.native)
    train.w0.value = 8.0  # a closed dock no longer follows
    assert widget.w0.value == 3.0
    settle(widget, qtbot)


def test_a_deleted_weights_layer_comes_back_with_the_loss_weights(
    viewer_with_sample, qtbot, defaults
):
    viewer = viewer_with_sample
    labels = viewer.layers["cells labels"]
    widget = plugin_widget(viewer)
    settle(widget, qtbot)
    viewer.layers.remove("cells labels weights")
    labels.brush_size = 5
    labels.paint((20, 20), 55)  # a small edit: the rest of the plane is not recomputed
    settle(widget, qtbot)
    np.testing.assert_array_equal(shown(viewer), defaults(labels.data))


def test_only_the_slices_that_changed_are_read_again_and_only_where_they_did(
    make_napari_viewer, qtbot, monkeypatch, defaults
):
    viewer = make_napari_viewer()
    stack = np.zeros((4, 40, 48), np.int32)
    stack[:, 5:20, 5:20], stack[:, 5:20, 20:35] = 1, 2
    labels = viewer.add_labels(stack, name="nuclei")
    region = viewer.add_labels(np.ones_like(stack, np.uint8), name="nuclei region")
    widget = WeightsWidget(viewer)
    assert widget.region.value is region
    settle(widget, qtbot)
    read, edits = [], []
    target, edit = _weights_job._target, WeightMap.edit
    monkeypatch.setattr(
        _weights_job, "_target", lambda plane, r: read.append(plane) or target(plane, r)
    )
    monkeypatch.setattr(WeightMap, "edit", lambda m, *a: edits.append((m, a[0])) or edit(m, *a))
    maps = [plane.map for plane in widget._planes]

    viewer.dims.set_current_step(0, 2)  # scrolling starts a run that reads nothing again
    widget._live.start()
    settle(widget, qtbot)
    assert read == [] and edits == []
    labels.data_setitem((np.array([2]), np.array([30]), np.array([30])), 7)
    settle(widget, qtbot)
    # No slice read whole: slice 2 in the box of its one changed pixel.
    assert read == [] and edits == [(maps[2], (slice(30, 31), slice(30, 31)))]
    region.data_setitem((np.array([3]), np.array([10]), np.array([10])), 0)
    settle(widget, qtbot)
    assert read == [] and edits[1:] == [(maps[3], (slice(10, 11), slice(10, 11)))]
    np.testing.assert_array_equal(
        shown(viewer, "nuclei weights"), defaults(labels.data, region.data != 0)
    )


def test_a_stroke_beside_an_unannotated_part_updates_only_around_it(
    make_napari_viewer, qtbot, monkeypatch, defaults
):
    viewer = make_napari_viewer()
    data = np.zeros((60, 80), np.int32)
    data[5:20, 5:20], data[5:20, 20:35] = 1, 2
    labels = viewer.add_labels(data, name="nuclei")
    marked = np.zeros_like(data, np.uint8)
    marked[:, :40] = 1  # the right half is not annotated
    region = viewer.add_labels(marked, name="nuclei region")
    widget = WeightsWidget(viewer)
    assert widget.region.value is region
    settle(widget, qtbot)
    regions = []
    edit = WeightMap.edit
    monkeypatch.setattr(
        WeightMap, "edit", lambda self, r, new: regions.append(r) or edit(self, r, new)
    )
    labels.data_setitem((np.array([30]), np.array([10])), 5)
    settle(widget, qtbot)
    assert regions == [(slice(30, 31), slice(10, 11))]
    np.testing.assert_array_equal(shown(viewer, "nuclei weights"), defaults(labels.data, marked))


def test_the_plugins_gaps_and_regions_are_never_chosen_as_cells(viewer_with_sample, qtbot):
    viewer = viewer_with_sample
    _, annotate = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")
    region = annotate.mark_region()
    qtbot.waitUntil(lambda: "cells labels gaps" in viewer.layers, timeout=30_000)
    widget = plugin_widget(viewer)
    assert list(widget.labels_layer.choices) == [viewer.layers["cells labels"]]
    assert region in widget.region.choices  # a region chooser still offers it
    settle(widget, qtbot)
    viewer.layers.remove("cells labels")
    assert widget.labels_layer.value is None and annotate.labels_layer.value is None
    settle(widget, qtbot)
    assert "cells labels gaps weights" not in viewer.layers


def test_labels_of_a_new_shape_keep_one_weights_layer(make_napari_viewer, qtbot, defaults):
    viewer = make_napari_viewer()
    stack = np.zeros((3, 40, 48), np.int32)
    stack[:, 5:20, 5:20], stack[:, 5:20, 20:35] = 1, 2
    labels = viewer.add_labels(stack, name="nuclei")
    widget = WeightsWidget(viewer)
    settle(widget, qtbot)
    for data in (np.concatenate([stack, stack[:1]]), stack[0]):  # a slice more; one plane
        labels.data = data
        settle(widget, qtbot)
        last = (data.shape[0] - 1,) if data.ndim == 3 else ()  # the new slice, or the plane
        labels.data_setitem(tuple(np.array([k]) for k in (*last, 30, 30)), 5)
        settle(widget, qtbot)
        names = [layer.name for layer in viewer.layers if "weights" in layer.name]
        assert names == ["nuclei weights"]
        np.testing.assert_array_equal(shown(viewer, "nuclei weights"), defaults(labels.data))


def test_a_weights_layer_the_user_renamed_is_left_alone(viewer_with_sample, qtbot):
    viewer = viewer_with_sample
    widget = plugin_widget(viewer)
    settle(widget, qtbot)
    kept = viewer.layers["cells labels weights"]
    kept.name = "weights w0 3 (kept)"
    before = kept.data.copy()
    widget.w0.value = 6.0
    settle(widget, qtbot)
    assert kept.name == "weights w0 3 (kept)"
    np.testing.assert_array_equal(kept.data, before)
    assert viewer.layers["cells labels weights"].data.max() > before.max()


def test_uint64_ids_beyond_int64_are_weighted_as_training_weighs_them(
    make_napari_viewer, qtbot, defaults
):
    viewer = make_napari_viewer()
    data = np.zeros((40, 48), np.uint64)
    data[5:20, 5:20], data[5:20, 20:35], data[25:35, 5:40] = 2**63 + 5, 3, 2**64 - 1
    viewer.add_labels(data, name="big")
    widget = WeightsWidget(viewer)
    settle(widget, qtbot)
    assert widget.status.value.startswith("'big weights'")  # no error
    np.testing.assert_array_equal(shown(viewer, "big weights"), defaults(data))


def test_a_region_marked_before_add_is_taken_at_once(make_napari_viewer, qtbot):
    # Through the manifest, as napari opens them: each dock gets its own proxy of the
    # viewer, and the region found through one was a proxy, never the layer added
    # (a walkthrough saw weights outside the region until Add to training set).
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "touching_cells")
    _, annotate = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")
    _, weights = viewer.window.add_plugin_dock_widget("napari-unet", "Weight map")
    settle(weights, qtbot)
    annotate.mark_region()
    assert weights.region.value is viewer.layers["cells labels region"]
    settle(weights, qtbot)
    assert not shown(viewer).any()  # nothing painted in the region yet: no weight


def test_the_region_follows_the_pair_when_marked_after_add(make_napari_viewer, qtbot):
    from napari_unet._widgets.annotate import AnnotateWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "touching_cells")
    annotate = AnnotateWidget(viewer)
    annotate.add_to_training_set()
    _, weights = viewer.window.add_plugin_dock_widget("napari-unet", "Weight map")
    assert weights.region.value is None
    region = annotate.mark_region()
    assert weights.region.value is region
    viewer.add_image(np.zeros((4, 4)), name="cells labels region [image]")
    assert weights.region.value.name == region.name
    qtbot.waitUntil(lambda: not weights.busy, timeout=30_000)
