import gc
import weakref

import numpy as np
from app_model.types import KeyBinding
from napari.utils.colormaps import CyclicLabelColormap
from napari.utils.colormaps.standardize_color import transform_color

from napari_unet._widgets._session import session
from napari_unet._widgets.annotate import AnnotateWidget, spans
from napari_unet.core.instances import touching_pairs
from napari_unet.core.weights import separation_borders


def plugin_widget(viewer) -> AnnotateWidget:
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")
    return widget


def settle(widget, qtbot):
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)


def errors_shown(monkeypatch):
    errors = []
    monkeypatch.setattr("napari_unet._widgets.annotate.show_error", errors.append)
    monkeypatch.setattr("napari_unet._widgets._common.show_error", errors.append)
    return errors


def square_cells(labels, *boxes):
    """Paint one new cell per (y0, y1, x0, x1) box, as a user would with New cell."""
    for y0, y1, x0, x1 in boxes:
        labels.keymap[KeyBinding.from_str("N")](labels)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        labels.data_setitem((yy.ravel(), xx.ravel()), labels.selected_label)


def test_sample_counts_and_gaps(viewer_with_sample, qtbot):
    viewer = viewer_with_sample
    widget = plugin_widget(viewer)
    labels = viewer.layers["cells labels"]
    assert widget.image.value is viewer.layers["cells"] and widget.labels_layer.value is labels
    settle(widget, qtbot)
    truth = labels.data.copy()
    assert widget.counts.value.startswith(f"{truth.max()} cells, {touching_pairs(truth)} touching")
    gaps = viewer.layers["cells labels gaps"].data
    np.testing.assert_array_equal(gaps, (truth > 0) & (separation_borders(truth) == 0))
    assert viewer.layers.selection.active is not viewer.layers["cells labels gaps"]

    labels.data = np.zeros_like(truth)
    settle(widget, qtbot)
    assert widget.counts.value.startswith("0 cells, 0 touching pairs, 0 gap pixels")


def test_edits_let_go_of_the_labels_copied_for_earlier_counts(viewer_with_sample, qtbot):
    # napari kept every worker it listed as a viewer's task, and each count's worker
    # its arguments, among them the copies of the labels counted before: every edit
    # kept one more copy of the plane until the window closed.
    viewer = viewer_with_sample
    widget = plugin_widget(viewer)
    labels = viewer.layers["cells labels"]
    settle(widget, qtbot)
    first = weakref.ref(widget._summary)
    for k in range(3):
        before = widget._summary
        labels.paint((10 + 20 * k, 10), 1000 + k)
        settle(widget, qtbot)
        assert widget._summary is not before  # counted anew
    gc.collect()
    assert first() is None


def test_cells_painted_with_one_label_are_counted_as_training_reads_them(
    make_napari_viewer, qtbot
):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 48), np.float32), name="cells")
    painted = np.zeros((40, 48), np.int32)
    painted[5:20, 5:20] = painted[5:20, 20:35] = painted[25:35, 5:15] = 1
    painted[36:, 30:] = -1  # not annotated
    viewer.add_labels(painted, name="cells labels")
    widget = plugin_widget(viewer)
    settle(widget, qtbot)
    # The two touching squares are one component, so one cell to training.
    assert widget.counts.value.startswith("2 cells, 0 touching pairs")


def test_create_paint_region_and_add(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((40, 50)), name="nuclei")
    widget = AnnotateWidget(viewer)
    labels = widget.create_labels()
    assert labels.name == "nuclei labels" and labels.data.shape == (40, 50)
    assert labels.data.dtype == np.int32 and widget.labels_layer.value is labels
    assert "N while the labels layer is selected" in widget.new_cell_button.tooltip

    square_cells(labels, (5, 15, 5, 15), (5, 15, 15, 25), (30, 38, 40, 48))
    assert labels.selected_label == 3
    settle(widget, qtbot)
    assert widget.counts.value == "3 cells, 1 touching pairs, 10 gap pixels"
    assert viewer.layers["nuclei labels gaps"].data[5:15, 14].all()

    region = widget.mark_region()
    assert region.name == "nuclei labels region" and widget.region.value is region
    # Every label shows in one colour, as every one counts, and not through a dict
    # colormap, whose first use compiles numba code on the GUI thread.
    for layer, colour in ((viewer.layers["nuclei labels gaps"], "yellow"), (region, "cyan")):
        assert isinstance(layer.colormap, CyclicLabelColormap)
        shown = layer.colormap.map(np.array([0, 1, 2, 7]))
        np.testing.assert_allclose(shown, [[0, 0, 0, 0], *transform_color([colour] * 3)])
    assert viewer.layers.selection.active is region
    settle(widget, qtbot)
    assert widget.counts.value.startswith("0 cells")  # nothing marked annotated yet
    region.data_setitem(tuple(np.mgrid[0:20, 0:12].reshape(2, -1)), 1)
    settle(widget, qtbot)
    assert widget.counts.value == "1 cells, 0 touching pairs, 0 gap pixels"

    widget.add_to_training_set()
    (annotation,) = session(viewer).annotations
    assert (annotation.image, annotation.labels, annotation.region) == (image, labels, region)
    assert widget.pairs.choices == (annotation,)
    assert widget.pairs.native.item(0).text() == "nuclei: nuclei labels + region (40x50)"


def test_stacks_and_several_pairs(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 24, 24), np.float32), name="stack")
    flat = viewer.add_image(np.zeros((16, 16), np.float32), name="flat")
    widget = AnnotateWidget(viewer)
    widget.image.value = viewer.layers["stack"]
    stack_labels = widget.create_labels()
    assert stack_labels.data.shape == (3, 24, 24)
    stack_labels.data[1, 2:8, 2:8], stack_labels.data[2, 2:8, 8:12] = 1, 2
    stack_labels.refresh()
    settle(widget, qtbot)
    # slice 0 has no cell and no region says otherwise: training leaves it out
    assert widget.counts.value == (
        "2 cells, 0 touching pairs, 0 gap pixels over 2 of 3 slices (1-2)"
    )
    widget.add_to_training_set()

    widget.image.value = flat
    assert widget.labels_layer.value is None  # the stack's labels do not fit
    flat_labels = widget.create_labels()
    square_cells(flat_labels, (2, 6, 2, 6))
    widget.add_to_training_set()
    first, second = session(viewer).annotations
    assert first.labels is stack_labels and second.labels is flat_labels
    rows = widget.pairs.native
    assert [rows.item(i).text() for i in range(rows.count())] == [
        "stack: stack labels (3 slices)",
        "flat: flat labels (16x16)",
    ]

    viewer.add_points(name="any other layer")  # the list stays as it is
    assert widget.pairs.choices == (first, second)
    widget.pairs.value = [first]
    viewer.layers.remove("any other layer")
    assert widget.pairs.value == [first]
    widget.remove_selected()
    assert session(viewer).annotations == [second] and widget.pairs.choices == (second,)
    widget.image.value = viewer.layers["stack"]
    assert widget.labels_layer.value is stack_labels  # found again by its name


def test_bad_inputs_are_messages(make_napari_viewer, monkeypatch, qtbot):
    errors = errors_shown(monkeypatch)
    viewer = make_napari_viewer()
    widget = AnnotateWidget(viewer)
    widget.create_labels()
    assert errors[-1] == "Choose an image layer." == widget.status.value

    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="rgb", rgb=True)
    widget.create_labels()
    assert "RGB" in errors[-1] and "Split RGB" in widget.status.value
    viewer.add_image(np.zeros((2, 3, 8, 8)), name="4d")
    widget.image.value = viewer.layers["4d"]
    widget.create_labels()
    assert "(Z, Y, X)" in errors[-1]

    viewer.add_image(np.zeros((20, 20)), name="grey")
    other = viewer.add_labels(np.zeros((10, 10), np.int32), name="other")
    widget.image.value = viewer.layers["grey"]
    widget.labels_layer.value = other
    assert "shape (10, 10)" in errors[-1]
    widget.add_to_training_set()
    assert "choose matching layers" in errors[-1]
    assert session(viewer).annotations == []

    labels = widget.create_labels()
    widget.add_to_training_set()
    assert "Paint at least one cell" in errors[-1]
    labels.data = np.full(labels.data.shape, -1, labels.data.dtype)  # all "not annotated"
    widget.add_to_training_set()
    assert "Paint at least one cell" in errors[-1] and session(viewer).annotations == []
    labels.data = np.zeros(labels.data.shape, labels.data.dtype)
    widget.region.value = other
    assert "cannot be the annotated region" in errors[-1]
    viewer.add_image(np.zeros((4, 4)), name="grey labels region")
    widget.mark_region()
    assert "not a Labels layer of shape (20, 20)" in errors[-1]
    assert session(viewer).annotations == [] and labels in viewer.layers
    full = viewer.add_labels(np.full((20, 20), 255, np.uint8), name="full")
    widget.labels_layer.value = full
    widget.new_cell()
    assert "no free label left in its uint8" in errors[-1]
    assert widget.status.value == "'full' has no free label left"
    settle(widget, qtbot)


def test_closing_stops_listening(viewer_with_sample, qtbot):
    viewer = viewer_with_sample
    widget = plugin_widget(viewer)
    settle(widget, qtbot)
    widget._live.start()  # a computation under way; its end is queued for the event loop
    worker = widget._live.worker
    viewer.window.remove_dock_widget(widget.native)
    assert worker.abort_requested
    qtbot.waitUntil(lambda: widget._live.worker is None, timeout=30_000)
    viewer.layers["cells labels"].paint((128, 128), 77)
    assert not widget.busy
    session(viewer).changed.emit()  # no longer connected: nothing to refresh


def test_renaming_a_layer_keeps_it_chosen_in_every_dock(viewer_with_sample, qtbot):
    viewer = viewer_with_sample
    annotate = plugin_widget(viewer)
    annotate.mark_region()
    region = viewer.layers["cells labels region"]  # not the proxy a plugin dock gets
    _, predict = viewer.window.add_plugin_dock_widget("napari-unet", "Predict")
    labels = viewer.layers["cells labels"]
    predict.into.value = labels
    changes = []
    annotate.labels_layer.changed.connect(changes.append)
    labels.name = "nuclei"
    region.name = "nuclei region"
    qtbot.wait(50)  # napari resets the choices from the event loop
    assert annotate.labels_layer.value is labels and annotate.region.value is region
    assert predict.into.value is labels
    assert changes == []  # nothing happened to the choice: no handler ran
    viewer.layers.remove(region)
    assert annotate.region.value is None
    settle(annotate, qtbot)


def test_the_layers_a_dock_derives_follow_a_renamed_source(viewer_with_sample, qtbot):
    viewer = viewer_with_sample
    annotate = plugin_widget(viewer)
    _, weights = viewer.window.add_plugin_dock_widget("napari-unet", "Weight map")
    qtbot.waitUntil(lambda: not annotate.busy and not weights.busy, timeout=30_000)
    derived = {"cells labels gaps", "cells labels weights"}
    assert derived <= {layer.name for layer in viewer.layers}
    viewer.layers["cells labels"].name = "nuclei"
    qtbot.waitUntil(lambda: "nuclei weights" in viewer.layers, timeout=30_000)
    qtbot.waitUntil(lambda: not annotate.busy and not weights.busy, timeout=30_000)
    names = {layer.name for layer in viewer.layers}
    assert {"nuclei gaps", "nuclei weights"} <= names and not derived & names


def test_the_sample_opened_after_the_dock_is_paired_with_its_labels(make_napari_viewer, qtbot):
    # As README starts napari: the docks first, then File > Open Sample, which adds
    # the image and then its labels.
    viewer = make_napari_viewer()
    annotate = plugin_widget(viewer)
    viewer.open_sample("napari-unet", "touching_cells")
    assert annotate.image.value is viewer.layers["cells"]
    assert annotate.labels_layer.value is viewer.layers["cells labels"]
    settle(annotate, qtbot)
    assert annotate.counts.value.endswith("gap pixels")


def test_derived_layers_follow_a_source_renamed_while_another_was_chosen(
    viewer_with_sample, qtbot
):
    viewer = viewer_with_sample
    first = viewer.layers["cells labels"]
    second = viewer.add_labels(first.data.copy(), name="second")
    annotate = plugin_widget(viewer)
    _, weights = viewer.window.add_plugin_dock_widget("napari-unet", "Weight map")

    def choose(layer):
        annotate.labels_layer.value = weights.labels_layer.value = layer
        qtbot.waitUntil(lambda: not annotate.busy and not weights.busy, timeout=30_000)

    choose(first)
    choose(second)
    first.name = "nuclei"  # while the docks show the second layer's
    choose(first)
    names = [layer.name for layer in viewer.layers]
    assert names.count("nuclei gaps") == names.count("nuclei weights") == 1
    assert not {"cells labels gaps", "cells labels weights"} & set(names)
    assert {"second gaps", "second weights"} <= set(names)


def test_another_image_of_the_same_shape_does_not_take_the_labels(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    t0 = viewer.add_image(np.zeros((40, 50), np.float32), name="t0")
    t1 = viewer.add_image(np.ones((40, 50), np.float32), name="t1")
    widget = AnnotateWidget(viewer)
    widget.image.value = t0
    labels = widget.create_labels()
    square_cells(labels, (2, 8, 2, 8))
    widget.add_to_training_set()
    widget.image.value = t1  # e.g. the other channel: its labels are still to be made
    assert widget.labels_layer.value is None
    assert "Create labels" in widget._pair_message()
    viewer.add_image(np.zeros((40, 50), np.float32), name="t2")
    other = viewer.add_labels(np.zeros((40, 50), np.int32), name="t2 labels")
    widget.image.value, widget.labels_layer.value = t1, other
    square_cells(other, (2, 8, 2, 8))
    widget.add_to_training_set()  # never paired before, whatever its name: nothing re-paired
    assert widget.status.value == "'t2 labels' is in the training set"
    session(viewer).remove(session(viewer).annotations[-1])
    widget.labels_layer.value = labels  # chosen on purpose: re-paired, and said so
    widget.add_to_training_set()
    assert (
        widget.status.value == "'t0 labels' is in the training set, now with 't1' instead of 't0'"
    )
    (annotation,) = session(viewer).annotations
    assert annotation.image is t1
    settle(widget, qtbot)


def test_scrolling_a_stack_does_not_count_it_again_and_a_stroke_counts_its_slice(
    make_napari_viewer, qtbot, monkeypatch
):
    from napari_unet._widgets import _summary

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 30, 30), np.float32), name="stack")
    widget = AnnotateWidget(viewer)
    labels = widget.create_labels()
    yy, xx = np.mgrid[2:8, 2:8]
    labels.data_setitem((np.full(yy.size, 1), yy.ravel(), xx.ravel()), 1)
    settle(widget, qtbot)
    counted = []
    read = _summary.annotated_labels
    monkeypatch.setattr(
        _summary, "annotated_labels", lambda *a: counted.append(a[0].shape) or read(*a)
    )
    for z in (1, 2, 3):
        viewer.dims.set_current_step(0, z)  # napari refreshes the layers: a run starts
        widget._live.start()
        settle(widget, qtbot)
    assert counted == []
    labels.data_setitem((np.array([3]), np.array([20]), np.array([20])), 9)
    settle(widget, qtbot)
    # A stroke recounts its slice, not the stack.
    assert counted == [(1, 30, 30)] and widget.counts.value.startswith("2 cells")
    assert widget.counts.value.endswith("over 2 of 4 slices (1, 3)")
    np.testing.assert_array_equal(
        viewer.layers["stack labels gaps"].data, np.zeros((4, 30, 30), np.uint8)
    )


def test_counts_and_gaps_come_back_for_a_pair_counted_before(viewer_with_sample, qtbot):
    viewer = viewer_with_sample
    widget = plugin_widget(viewer)
    settle(widget, qtbot)
    counts = widget.counts.value
    assert counts.startswith(f"{viewer.layers['cells labels'].data.max()} cells")
    viewer.add_image(np.zeros((10, 10), np.float32), name="small")
    widget.image.value = viewer.layers["small"]  # another shape: nothing to count
    settle(widget, qtbot)
    assert widget.counts.value == ""
    widget.image.value = viewer.layers["cells"]
    widget.labels_layer.value = viewer.layers["cells labels"]
    settle(widget, qtbot)
    assert widget.counts.value == counts  # the same data, not counted again, shown again
    viewer.layers.remove("cells labels gaps")
    widget._live.start()  # e.g. a step through a stack
    settle(widget, qtbot)
    assert "cells labels gaps" in viewer.layers


def test_cropped_labels_keep_their_one_gaps_layer(viewer_with_sample, qtbot):
    """A layer was added beside the old one, and one more at every stroke."""
    viewer = viewer_with_sample
    widget = plugin_widget(viewer)
    settle(widget, qtbot)
    gaps, labels = viewer.layers["cells labels gaps"], viewer.layers["cells labels"]
    viewer.layers["cells"].data = viewer.layers["cells"].data[:128, :100]
    labels.data = labels.data[:128, :100].copy()
    for _ in range(2):
        settle(widget, qtbot)
        labels.data_setitem((np.array([5]), np.array([5])), 99)  # a stroke
    settle(widget, qtbot)
    assert [layer for layer in viewer.layers if "gaps" in layer.name] == [gaps]
    truth = labels.data
    np.testing.assert_array_equal(gaps.data, (truth > 0) & (separation_borders(truth) == 0))


def test_a_region_marked_after_add_is_the_one_training_uses(
    make_napari_viewer, qtbot, monkeypatch
):
    infos = []
    monkeypatch.setattr("napari_unet._widgets.annotate.show_info", infos.append)
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((40, 50)), name="nuclei")
    widget = AnnotateWidget(viewer)
    labels = widget.create_labels()
    square_cells(labels, (5, 15, 5, 15), (30, 38, 40, 48))
    widget.add_to_training_set()
    (annotation,) = session(viewer).annotations
    assert annotation.region is None
    region = widget.mark_region()  # after Add: only part was corrected
    assert session(viewer).annotations == [annotation] and annotation.region is region
    assert annotation.image is image
    assert widget.pairs.native.item(0).text() == "nuclei: nuclei labels + region (40x50)"
    assert infos[-1] == "'nuclei labels' now trains only inside 'nuclei labels region'."
    widget.region.value = None  # chosen: all of it after all
    assert annotation.region is None and infos[-1] == "'nuclei labels' now trains on all of it."
    widget.region.value = region
    settle(widget, qtbot)
    region.data = np.ones_like(region.data)  # all of it checked
    widget.add_to_training_set()
    assert widget.status.value == "'nuclei labels' is in the training set"
    viewer.layers.remove(region)  # the pair leaves, as the warning says, not its region
    assert session(viewer).annotations == []
    assert widget.status.value == ""  # it said the labels were in the training set still
    region = widget.mark_region()
    region.data = np.ones_like(region.data)
    widget.add_to_training_set()
    widget.new_cell()  # the status moves on
    said = widget.status.value
    viewer.layers.remove(region)
    assert session(viewer).annotations == [] and widget.status.value == said


def test_layers_made_for_a_calibrated_image_keep_its_units(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 50)), name="nuclei", scale=(0.2, 0.2), units="um")
    widget = AnnotateWidget(viewer)
    labels = widget.create_labels()
    square_cells(labels, (5, 15, 5, 15), (5, 15, 15, 25))
    region = widget.mark_region()
    settle(widget, qtbot)
    for layer in (labels, region, viewer.layers["nuclei labels gaps"]):
        assert [str(u) for u in layer.units] == ["micrometer"] * 2
    assert str(viewer.layers.extent.units[-1]) == "micrometer"  # not dropped as mixed


def test_the_slices_taken_are_named_in_runs():
    assert spans([]) == ""
    assert spans([4]) == "4"
    assert spans([0, 1, 2, 3, 4, 7, 9, 10, 11, 12]) == "0-4, 7, 9-12"
    assert spans([0, 2, 4, 6, 8, 10, 12, 14]) == "0, 2, 4, 6, 8, 10, ..."
