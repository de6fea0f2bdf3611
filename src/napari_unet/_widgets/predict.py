"""Predict dock: a model and an image layer in, probability and Labels layers out.

The model is the one trained or loaded in this viewer (the Session's) or a file. The
prediction runs in a napari ``thread_worker`` on a snapshot of the layer's data;
layers are touched only on the GUI thread, in the ``returned`` slot: new layers
are added, or the instances are written into a chosen Labels layer as one edit
that Ctrl+Z undoes, so nothing the user painted is lost.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QTimer

from ..core.checkpoint import load
from ..core.data import intensity_gap
from ..core.device import default_device, device_choices
from ..core.instances import to_instances
from ..core.model import UNet
from ..core.predict import check_input, iter_predict
from . import _warm
from ._common import (
    Dock,
    WorkerSlot,
    chooser_links,
    connect_all,
    disconnect_all,
    on_removed,
    start_long,
)
from ._layers import (
    DERIVED,
    Derived,
    cell_labels,
    placement,
    source_images,
    write_undoable,
)
from ._session import session
from ._workers import create_worker

IN_MEMORY = "current (trained or loaded here)"
STROKE_WAIT_MS = 100  # between looks for the end of a brush stroke
NEW_LAYER = "new layer"


@dataclass
class PredictResult:
    """What the worker hands back: results, or a message for the user."""

    probabilities: np.ndarray | None = None
    labels: np.ndarray | None = None
    message: str = ""
    warning: str = ""  # the image unlike the model's training images (intensity_gap)


def predict_job(
    model: UNet | Path, image, tile: int | None, tta: bool, device: str, threshold: float
):
    """Worker body: yields ``(done, total)`` tiles, returns a :class:`PredictResult`.

    ``model`` is a model (a copy the worker may move) or a file. Mistakes in the
    input (wrong file, wrong shape) come back as a message, not an exception, so
    the user sees one clear line rather than a traceback.
    """
    try:
        if isinstance(model, Path):
            model, _ = load(model, device=default_device(device))
        else:
            model = model.to(default_device(device))
        warning = intensity_gap(model, image, check_input(model, image)[1])
        probabilities = yield from iter_predict(model, image, tile, tta)
    except (ValueError, FileNotFoundError) as err:
        return PredictResult(message=str(err))
    except RuntimeError as err:  # torch's; superqt would drop it without a signal
        return PredictResult(message=f"Prediction failed: {err}")
    if not _warm.wait():
        return PredictResult(message="The viewer closed before the prediction was labelled.")
    return PredictResult(probabilities, to_instances(probabilities, threshold), warning=warning)


class PredictWidget(Dock):
    """Dock widget: predict the chosen image layer with a U-Net."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self._session = session(viewer)
        self._worker = None
        self._connected: list = []  # (signal, slot) of the running worker
        self._source_layer = None
        self._probabilities = Derived(viewer, "probabilities", "probabilities")
        self._target = None
        self._model_seen = None
        self.image = create_widget(
            annotation=napari.layers.Image,
            label="Image",
            options={"choices": source_images(viewer)},
        )
        self.source = ComboBox(label="Model", choices=[IN_MEMORY, "file"], value="file")
        self.model_file = FileEdit(label="Model file", filter="*.safetensors", mode="r")
        self._cell_labels = cell_labels(viewer)
        self.into = ComboBox(label="Labels into", choices=self._label_targets)
        self.tile = SpinBox(label="Tile (0 = auto)", value=0, min=0, max=16384, step=16)
        self.tta = CheckBox(
            text="Test-time augmentation (8x slower)",
            value=True,
            tooltip="Average over the 8 flips and rotations of each tile: fewer merged "
            "and broken cells. Untick for speed on large images.",
        )
        self.device = ComboBox(label="Device", choices=device_choices(), value="auto")
        self.threshold = FloatSpinBox(label="Threshold", value=0.5, min=0.05, max=0.95, step=0.05)
        self.run_button = PushButton(text="Predict")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="Progress", value=0, min=0, max=1)
        self.status = Label(label="", value="")
        self.extend(
            [
                self.image,
                self.source,
                self.model_file,
                self.into,
                self.tile,
                self.tta,
                self.device,
                self.threshold,
                self.run_button,
                self.cancel_button,
                self.progress,
                self.status,
            ]
        )
        self.wrap(self.status)
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.source.changed.connect(self._show_source)
        # Undone on closing: a closed dock's controls may be deleted before the viewer.
        choosers = chooser_links(viewer, self.image, self.into)
        self._links = connect_all(
            [
                (self._session.changed, self._model_arrived),
                (viewer.layers.events.removed, self._on_removed),
                *choosers,
            ]
        )
        on_removed(self, self._closed)
        self._model_arrived()

    def _label_targets(self, _widget=None) -> list:
        # Not the gaps or regions the Annotate dock made: predicting into a region
        # would turn it into a mask of cells.
        return [(NEW_LAYER, None)] + [(layer.name, layer) for layer in self._cell_labels()]

    def _model_arrived(self) -> None:
        """Offer a newly trained model; other edits of the session leave the choice."""
        model = self._session.model
        if model is not None and model is not self._model_seen:
            self._model_seen = model
            self.source.value = IN_MEMORY
        self._show_source()

    def _show_source(self) -> None:
        self.model_file.visible = self.source.value == "file"

    def start(self):
        """Check the choices, then predict in a worker thread."""
        layer = self.image.value
        self.status.value = ""  # said of an earlier run
        if layer is None:
            self.fail("Choose an image layer to predict.")
            return
        if self.source.value == IN_MEMORY:
            if self._session.model is None:
                self.fail("No model has been trained in this viewer yet: train or load one.")
                return
            model = copy.deepcopy(self._session.model)  # the worker may move it
        else:
            model = Path(self.model_file.value)
            if not model.is_file():
                self.fail("Choose a model file (.safetensors) to predict with.")
                return
        if layer.rgb:
            self.fail(
                f"'{layer.name}' is an RGB image and the docks' models take one channel: "
                "split it (right-click the layer > Split RGB) and predict one channel."
            )
            return
        data = layer.data[0] if layer.multiscale else layer.data
        self._target = self.into.value
        if self._target is not None and self._target.data.shape != data.shape:
            self.fail(
                f"'{self._target.name}' has shape {self._target.data.shape}, the image "
                f"{data.shape}: choose a labels layer of the image's shape or a new layer."
            )
            return
        if isinstance(data, np.ndarray):
            data = data.copy()  # the worker reads a snapshot, whatever happens to the layer
        self._source_layer = layer
        tile = self.tile.value or None
        self._worker = create_worker(
            predict_job, model, data, tile, self.tta.value, self.device.value, self.threshold.value
        )
        self._connected = connect_all(self._slots())
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.progress.value = 0  # not the last run's
        self.status.value = f"predicting {layer.name}..."
        start_long(self._worker)

    def _slots(self) -> list:
        worker = self._worker
        return [
            (worker.yielded, WorkerSlot(self._on_progress)),
            (worker.returned, WorkerSlot(self._on_returned)),
            (worker.finished, WorkerSlot(self._on_finished)),
        ]

    def _closed(self) -> None:
        """The dock or its viewer closed: cancel, and touch no control (they may be
        deleted already) nor layer from then on."""
        disconnect_all(self._links + self._connected)
        self._links, self._connected = [], []
        if self._worker is not None:
            self._worker.quit()

    def cancel(self):
        """Stop after the current tile; no layer is added or changed."""
        if self._worker is not None:
            self._worker.quit()
            self.status.value = "cancelled"

    def _on_removed(self, event) -> None:
        if self._worker is not None and event.value is self._source_layer:
            self.cancel()  # its labels would lie over nothing
            self.status.value = f"cancelled: '{event.value.name}' was removed"

    def _on_progress(self, step: tuple[int, int]):
        done, total = step
        self.progress.max, self.progress.value = total, done

    def _on_returned(self, result: PredictResult):
        if self._worker.abort_requested:  # cancelled after its last tile: no layer
            return
        if result.message:
            self.fail(result.message)
            return
        # The image's name now: it may have been renamed while the prediction ran.
        name, labels = self._source_layer.name, result.labels
        where = placement(self._source_layer, labels.ndim)
        layers = self._viewer.layers
        shown = self._probabilities.find(self._source_layer)
        if isinstance(shown, napari.layers.Image):
            # The last prediction's, of any shape (the image cropped), not one more layer.
            shown.data = result.probabilities[1]
            for key, value in where.items():
                setattr(shown, key, value)
        else:
            shown = self._viewer.add_image(
                result.probabilities[1],
                name=self._probabilities.name(self._source_layer),
                colormap="magma",
                contrast_limits=(0, 1),
                visible=False,
                metadata={DERIVED: self._probabilities.kind},
                **where,
            )
            self._probabilities.made(self._source_layer, shown)
        # "<image> labels" is what the Annotate dock pairs with the image; beside the
        # user's own, "<image> predicted" says what it is better than napari's "[1]".
        new_name = f"{name} labels" if f"{name} labels" not in layers else f"{name} predicted"
        self._write(self._target, labels, new_name, where)
        found = f"{name}: {int(labels.max())} cells found"
        if labels.ndim == 3:  # ids run on from slice to slice: a nucleus counts per slice
            held = np.count_nonzero(labels.reshape(len(labels), -1).any(axis=1))
            found += f" slice by slice, in {held} of {len(labels)} slices"
        self.status.value = found
        show_info(self.status.value)
        if result.warning:
            show_warning(f"'{name}': {result.warning}")

    def _write(self, target, labels: np.ndarray, new_name: str, where: dict) -> None:
        """Write ``labels`` into ``target`` as one undoable edit, or into a new layer.
        Touches no control: it may run after the dock closed."""
        if target is not None and getattr(target, "_block_history", False):
            # A brush stroke on it is under way (napari's flag, private): written now,
            # the prediction would join the stroke's undo step.
            retry = partial(self._write, target, labels, new_name, where)
            QTimer.singleShot(STROKE_WAIT_MS, retry)
            return
        refusal = None if target is None else _cannot_hold(target, labels)
        if target is None or target not in self._viewer.layers:
            self._viewer.add_labels(labels, name=new_name, **where)
        elif refusal:
            show_warning(f"{refusal}; the labels went into a new layer instead.")
            self._viewer.add_labels(labels, name=new_name, **where)
        else:
            changed = write_undoable(target, labels.astype(target.data.dtype, copy=False))
            if changed and self._session.pair_of(target) is not None:
                show_warning(
                    f"'{target.name}' is in the training set: the prediction replaced its "
                    "painted cells (Ctrl+Z on the layer brings them back)."
                )

    def _on_finished(self):
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self._worker, self._connected = None, []
        self._source_layer = None  # not to keep a layer the user removes alive


def _cannot_hold(target, labels: np.ndarray) -> str:
    """Why the Labels layer ``target`` cannot take ``labels`` as one undoable edit
    (its data changed since Predict was clicked, or is lazy), or ""."""
    data = target.data
    if data.shape != labels.shape:
        return f"'{target.name}' now has shape {data.shape}, the prediction {labels.shape}"
    if not isinstance(data, np.ndarray):  # dask, zarr: napari cannot undo an edit of it
        return f"'{target.name}' is not held in memory ({type(data).__name__})"
    if labels.max() > np.iinfo(data.dtype).max:
        return f"'{target.name}' ({data.dtype}) cannot hold {labels.max()} cells"
    return ""
