"""The layers the docks make beside the user's (gaps, weights, preview,
probabilities): a user's own layer of such a name is never taken or overwritten,
and the docks' Image choosers never offer the docks' own images."""

import numpy as np
import torch
from training import stop_and_wait, train_until

from napari_unet._widgets import _train_job
from napari_unet.core import checkpoint
from napari_unet.core.model import UNet

NAMES = ["cells preview", "cells probabilities", "cells labels weights"]


def dock(viewer, name):
    return viewer.window.add_plugin_dock_widget("napari-unet", name)[1]


def test_layers_of_the_users_with_the_docks_names_are_left_alone(
    viewer_with_sample, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setattr(_train_job, "models_dir", lambda: tmp_path / "models")
    viewer = viewer_with_sample
    mine = {name: viewer.add_image(np.full((64, 96), 7.0), name=name) for name in NAMES}
    mine["cells labels gaps"] = viewer.add_labels(np.ones((256, 256), np.int32) * 3)
    mine["cells labels gaps"].name = "cells labels gaps"

    annotate = dock(viewer, "Annotate")
    annotate.image.value = viewer.layers["cells"]
    annotate.labels_layer.value = viewer.layers["cells labels"]
    weights = dock(viewer, "Weight map")
    weights.labels_layer.value = viewer.layers["cells labels"]
    qtbot.waitUntil(lambda: not annotate.busy and not weights.busy, timeout=60_000)
    qtbot.waitUntil(lambda: "cells labels weights [1]" in viewer.layers, timeout=60_000)
    assert "cells labels gaps [1]" in viewer.layers

    train = dock(viewer, "Train")
    train.device.value = "cpu"
    train.net_depth.value, train.net_width.value = 2, 4
    train.tile.value, train.batch.value = 36, 2
    train.image.value = viewer.layers["cells"]
    train.labels_layer.value = viewer.layers["cells labels"]
    train.add_pair()
    train.start()
    train_until(train, qtbot, 1)
    stop_and_wait(train, qtbot)
    assert "cells preview [1]" in viewer.layers

    predict = dock(viewer, "Predict")
    torch.manual_seed(0)
    predict.model_file.value = checkpoint.save(tmp_path / "m", UNet(width=4, depth=2))
    predict.image.value = viewer.layers["cells"]
    for _ in range(2):  # the second run reuses the layer the first made
        predict.start()
        qtbot.waitUntil(lambda: predict._worker is None, timeout=60_000)
    assert "cells probabilities [1]" in viewer.layers
    assert "cells probabilities [2]" not in viewer.layers

    for name, layer in mine.items():
        assert viewer.layers[name] is layer
        assert np.all(layer.data == (3 if "gaps" in name else 7))

    # The docks' images are not offered as images to annotate, train or predict on.
    for widget in (annotate, train, predict):
        offered = [layer.name for layer in widget.image.choices]
        assert offered == ["cells", *NAMES]

    # A result the user renamed to keep is not overwritten by the next prediction.
    kept = viewer.layers["cells probabilities [1]"]
    kept.name = "cells probabilities [old]"
    kept.data[:] = 0.25  # the user's own copy now
    predict.start()
    qtbot.waitUntil(lambda: predict._worker is None, timeout=60_000)
    assert np.all(kept.data == 0.25)

    # The docks' "[1]" layers follow a rename of the labels; the user's stay.
    viewer.layers["cells labels"].name = "nuclei"
    qtbot.waitUntil(lambda: "nuclei weights" in viewer.layers, timeout=60_000)
    qtbot.waitUntil(lambda: "nuclei gaps" in viewer.layers, timeout=60_000)
    qtbot.waitUntil(lambda: not annotate.busy and not weights.busy, timeout=60_000)
    names = [layer.name for layer in viewer.layers]
    assert "cells labels weights [1]" not in names and "cells labels gaps [1]" not in names
    assert names.count("nuclei weights") == names.count("nuclei gaps") == 1
    for name, layer in mine.items():
        assert viewer.layers[name] is layer


def test_a_source_that_takes_another_s_name_keeps_its_derived_layer():
    # Found by a review: "a" renamed "c" and "b" renamed "a"; "a gaps" is b's now,
    # and showing c's gaps again must not rename it "c gaps".
    from napari.components import ViewerModel

    from napari_unet._widgets._layers import DERIVED, Derived

    viewer = ViewerModel()
    gaps = Derived(viewer, "gaps", "gaps")

    def show(source):
        layer = gaps.find(source)
        if layer is None:
            layer = viewer.add_labels(
                np.zeros((4, 4), np.uint8), name=gaps.name(source), metadata={DERIVED: "gaps"}
            )
            gaps.made(source, layer)
        return layer

    a = viewer.add_labels(np.zeros((4, 4), np.uint8), name="a")
    b = viewer.add_labels(np.zeros((4, 4), np.uint8), name="b")
    show(a)
    show(b)
    a.name, b.name = "c", "a"
    of_b = show(b)
    assert of_b.name == "a gaps"
    of_c = show(a)
    assert of_b.name == "a gaps" and of_c.name == "c gaps" and of_c is not of_b


def test_removing_labels_removes_their_gaps_and_weights_but_not_a_kept_copy(
    viewer_with_sample, qtbot
):
    viewer = viewer_with_sample
    annotate = dock(viewer, "Annotate")
    weights = dock(viewer, "Weight map")
    second = viewer.add_labels(viewer.layers["cells labels"].data.copy(), name="second")
    annotate.labels_layer.value = weights.labels_layer.value = second
    qtbot.waitUntil(lambda: not annotate.busy and not weights.busy, timeout=60_000)
    kept = viewer.layers["second weights"]
    kept.name = "second weights (kept)"  # the user's now
    annotate.labels_layer.value = weights.labels_layer.value = viewer.layers["cells labels"]
    qtbot.waitUntil(lambda: not annotate.busy and not weights.busy, timeout=60_000)
    assert {"second gaps", "cells labels gaps", "cells labels weights"} <= {
        layer.name for layer in viewer.layers
    }
    viewer.layers.remove("second")
    viewer.layers.remove("cells labels")
    qtbot.waitUntil(lambda: not annotate.busy and not weights.busy, timeout=60_000)
    qtbot.wait(300)  # past the docks' quiet time
    assert [layer.name for layer in viewer.layers] == ["cells", "second weights (kept)"]
