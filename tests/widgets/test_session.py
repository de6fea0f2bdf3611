import numpy as np

from napari_unet._widgets._session import session


def test_session(make_napari_viewer, monkeypatch, qtbot):
    warnings = []
    monkeypatch.setattr("napari_unet._widgets._session.show_warning", warnings.append)
    v = make_napari_viewer()
    s = session(v)
    assert session(v) is s
    im = v.add_image(np.zeros((8, 8)), name="im")
    lab = v.add_labels(np.zeros((8, 8), int), name="lab")
    hits = []
    s.changed.connect(lambda: hits.append(1))
    a = s.add(im, lab)
    assert s.add(im, lab) is a and len(s.annotations) == 1
    v.layers.remove(lab)
    assert s.annotations == [] and len(hits) == 3
    qtbot.waitUntil(lambda: bool(warnings))  # said from the event loop
    assert warnings == ["'lab' was deleted: 'im / lab' left the training set."]
    region = v.add_labels(np.zeros((8, 8), np.uint8), name="region")
    s.add(im, v.add_labels(np.zeros((8, 8), int), name="lab"), region)
    v.layers.remove(im)  # said once, not for every removal
    v.layers.remove(region)
    qtbot.wait(20)
    assert s.annotations == []
    assert warnings[1:] == ["'im' was deleted: 'im / lab' left the training set."]
    s.add(v.add_image(np.zeros((8, 8)), name="im"), v.layers["lab"])
    v.layers.clear()  # as closing the viewer does: no warning
    qtbot.wait(20)
    assert s.annotations == [] and len(warnings) == 2


def test_a_pair_copies_its_labels_and_region(make_napari_viewer):
    # Of a stack, only the painted slices are written (the rest stay zero pages);
    # the copies must still equal the layers, ids and dtype included.
    v = make_napari_viewer()
    labels = np.zeros((30, 64, 64), np.uint32)
    labels[3, 5:9, 5:9], labels[20, 0, 0] = 7, 2**32 - 1
    region = np.zeros(labels.shape, np.uint8)
    region[3:5] = 2
    layer = v.add_labels(labels.copy())
    pair = session(v).add(v.add_image(np.zeros(labels.shape)), layer, v.add_labels(region))
    _, copied, annotated = pair.arrays()
    layer.data[3] = 0  # painting goes on while a worker trains
    assert copied.dtype == np.uint32 and annotated.dtype == bool
    np.testing.assert_array_equal(copied, labels)
    np.testing.assert_array_equal(annotated, region != 0)
    flat = session(v).add(v.add_image(np.zeros((8, 8))), v.add_labels(np.eye(8, dtype=int)))
    np.testing.assert_array_equal(flat.arrays()[1], np.eye(8, dtype=int))


def test_every_dock_scrolls_rather_than_growing_the_window(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    docks = [
        viewer.window.add_plugin_dock_widget("napari-unet", name)
        for name in ("Annotate", "Weight map", "Train", "Predict")
    ]
    # As narrow before Qt's event loop runs: napari's start shows the window first.
    for dock, widget in docks:
        assert widget.native.minimumWidth() < 560, dock.name
    qtbot.wait(20)
    for dock, widget in docks:
        # The Train dock's controls alone need over 700 pixels.
        assert dock.minimumSizeHint().height() < 150, dock.name
        assert widget.native is dock.widget()  # the scroll area around the controls
        # Nor wider than the controls with their long lines wrapped: Annotate's hint
        # made its dock 750 pixels wide, the canvas 270 on a laptop.
        assert widget.native.minimumWidth() < 560, dock.name


def test_a_dock_opened_after_the_first_closed_shares_the_training_set(make_napari_viewer):
    # napari hands each dock a proxy of the viewer; the Session was keyed by the
    # first dock's, and left with it.
    import gc

    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "touching_cells")
    _, annotate = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")
    _, train = viewer.window.add_plugin_dock_widget("napari-unet", "Train")
    annotate.add_to_training_set()
    viewer.window.remove_dock_widget(annotate.native)
    del annotate
    gc.collect()
    _, again = viewer.window.add_plugin_dock_widget("napari-unet", "Annotate")
    assert len(session(viewer).annotations) == 1
    assert again._session is train._session is session(viewer)
