"""Train dock: the training set of the viewer's Session, settings, Train / Pause / Stop.

The layers' data are copied on the GUI thread when Train is clicked; the worker
builds the pairs and the core ``Trainer`` from those copies and yields its
events; the slots below, on the GUI thread, are the only code that touches
layers. Stop, closing the dock and closing the viewer all end the run with a
checkpoint of the last step (``Trainer.run`` saves even when abandoned; a run
stopped before its first step leaves none), and the trained model is published
to the Session for the Predict dock.
"""

from __future__ import annotations

import contextlib
import copy

import napari
import numpy as np
from magicgui.widgets import (
    ComboBox,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt

from ..core.config import TrainConfig
from ..core.device import default_device, device_choices
from ..core.events import Done, Notice, Paused, Preview, Progress, Saved, Validation
from ..core.model import UNet
from ..core.train import fitting_tile, tile_sizes
from ._common import (
    Dock,
    WeightControls,
    WorkerSlot,
    chooser_links,
    connect_all,
    disconnect_all,
    on_removed,
    start_long,
    weight_boxes,
)
from ._layers import cell_labels, source_images, spatial_shape
from ._model_files import ModelFiles
from ._plot import TrainingPlot
from ._preview import PreviewLayer
from ._rows import line_up, row
from ._session import session
from ._train_job import NoPreview, RunEnd, TrainJob, new_model_path, warm_optimizers
from ._workers import create_worker

# Width, padding, tile and batch on the CPU (False) and on a GPU (True).
_DEVICE_DEFAULTS = {
    False: (16, "same", TrainConfig.tile, TrainConfig.batch_size),
    True: (64, "valid", 388, 1),
}

# The controls a run reads when it starts.
_RUN_SETTINGS = (
    "start_from device net_depth net_width padding minutes tile batch lr w0 sigma "
    "class_balance ignore_outline val_fraction"
).split()


class TrainWidget(Dock):
    """Dock widget: train a U-Net on the viewer's training set in the background."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self._session = session(viewer)
        self._job: TrainJob | None = None
        self._worker = None
        self._connected: list = []  # (signal, slot) of the running worker
        self._preview = PreviewLayer(viewer)
        self.pairs = Label(label="Training set", value="")
        self.image = create_widget(
            annotation=napari.layers.Image,
            label="Image",
            options={"choices": source_images(viewer)},
        )
        self.labels_layer = create_widget(
            annotation=napari.layers.Labels,
            label="Labels",
            options={"choices": cell_labels(viewer)},
        )
        self.add_button = PushButton(text="Add image + labels to the training set")
        self.start_from = ComboBox(
            label="Start from",
            choices=["new model", "current model (fine-tune)"],
            tooltip="Fine-tuning keeps the current model's network: Depth, Width and "
            "Padding below are for new models",
        )
        self.device = ComboBox(label="Device", choices=device_choices(), value="auto")
        self.net_depth = SpinBox(label="Depth", value=4, min=1, max=6)
        self.net_width = SpinBox(label="Width", min=2, max=128)
        self.padding = ComboBox(
            label="Padding",
            choices=["valid", "same"],
            tooltip="valid: the paper's; same: faster on the CPU; both predict exactly",
        )
        self.minutes = FloatSpinBox(label="Minutes", value=2.0, min=0.1, max=10000, step=0.5)
        # Width, padding, tile and batch are set by _device_defaults.
        self._on_gpu: bool | None = None
        self.tile = SpinBox(
            label="Tile", min=4, max=4096, step=4, tooltip="Output pixels per tile side"
        )
        self.batch = SpinBox(label="Batch", min=1, max=64)
        self.lr = FloatSpinBox(
            label="Learning rate", value=TrainConfig.lr, min=1e-6, max=1, step=1e-4
        )
        self.w0, self.sigma, self.class_balance, self.ignore_outline = weight_boxes()
        self.val_fraction = FloatSpinBox(
            label="Validation share",
            value=0.0,
            min=0.0,
            max=0.5,
            step=0.1,
            tooltip="Share of the training images or slices (from 5) held out to plot "
            "validation scores; 0 trains on all of them",
        )
        self._weights = WeightControls(
            self._session, self.w0, self.sigma, self.class_balance, self.ignore_outline
        )
        self.train_button = PushButton(text="Train")
        self.pause_button = PushButton(text="Pause", enabled=False)
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="Progress", value=0, min=0, max=1000)
        self.status = Label(label="", value="")
        self.plot = TrainingPlot()
        self.files = ModelFiles(self._session, self.status, self.fail, self._fine_tune_next)
        pairs = [
            row(self.net_depth, self.net_width),
            row(self.padding, self.batch),
            row(self.minutes, self.tile),
            row(self.w0, self.sigma),
        ]
        line_up(pairs)
        self.extend(
            [
                self.pairs,
                self.image,
                self.labels_layer,
                self.add_button,
                self.start_from,
                self.device,
                *pairs[:3],
                self.lr,
                pairs[3],
                row(self.class_balance, self.ignore_outline, labels=False),
                self.val_fraction,
                row(self.train_button, self.pause_button, self.stop_button, labels=False),
                self.progress,
                self.status,
                *self.files.rows,
            ]
        )
        self.insert_qt(self.plot, after=self.status)
        self.wrap(self.pairs, self.status)  # a long path must not widen the dock
        self.add_button.changed.connect(self.add_pair)
        self.device.changed.connect(self._device_defaults)
        self._said_next_run = False
        for name in _RUN_SETTINGS:
            getattr(self, name).changed.connect(self._setting_changed)
        self.train_button.changed.connect(self.start)
        self.pause_button.changed.connect(self.toggle_pause)
        self.stop_button.changed.connect(self.stop)
        # Undone on closing: a closed dock's controls may be deleted before the viewer.
        choosers = chooser_links(viewer, self.image, self.labels_layer)
        self._links = connect_all(
            [
                (self._session.changed, self._show_session),
                (viewer.layers.events.removed, lambda event: self._preview.drop(event.value)),
                *choosers,
            ]
        )
        on_removed(self, self._closed)
        self._device_defaults()
        self._show_session()

    def _device_defaults(self) -> None:
        """The paper's network on a GPU; on the CPU a small same-padded one, which learns
        more per minute there (benchmarks/README.md, ISBI). Moving between the two
        changes only the settings the user left at the other's defaults."""
        on_gpu = default_device(self.device.value).type != "cpu"
        if on_gpu == self._on_gpu:
            return
        controls = (self.net_width, self.padding, self.tile, self.batch)
        previous = None if self._on_gpu is None else _DEVICE_DEFAULTS[self._on_gpu]
        for k, control in enumerate(controls):
            if previous is None or control.value == previous[k]:
                control.value = _DEVICE_DEFAULTS[on_gpu][k]
        self._on_gpu = on_gpu

    def _setting_changed(self) -> None:
        """A run keeps the settings it started with: say so, once a run, rather than
        let a change made while it trains look as if it took effect."""
        if self._job is not None and not self._said_next_run:
            self._said_next_run = True
            show_info("Settings changed while training apply to the next run.")

    def _fine_tune_next(self) -> None:
        self.start_from.value = "current model (fine-tune)"

    def _show_session(self) -> None:
        if self._session.annotations:
            warm_optimizers()
        names = [f"{a.image.name} / {a.labels.name}" for a in self._session.annotations]
        self.pairs.value = "; ".join(names) or "empty: add image + labels below or in Annotate"
        has_model = self._session.model is not None
        self.files.save_button.enabled = has_model and self._session.model_path is not None
        if not has_model:
            self.start_from.value = "new model"

    def add_pair(self) -> None:
        image, labels = self.image.value, self.labels_layer.value
        if image is None or labels is None:
            self.fail("Choose an image layer and a labels layer to add.")
            return
        shape, message = spatial_shape(image)
        if shape is not None and shape != labels.data.shape:
            message = (
                f"'{image.name}' {shape} and '{labels.name}' {tuple(labels.data.shape)} "
                "do not match: the labels must have the image's shape."
            )
        if message:
            self.fail(message)
            return
        # The region of a pair added again (e.g. with another image), else the one
        # the Annotate dock made for these labels ("<labels> region").
        region = self._session.region_for(labels)
        self._session.add(image, labels, region)
        if region is not None:
            self.status.value = f"'{labels.name}' trains only inside '{region.name}'"

    def start(self) -> None:
        """Snapshot the training set, then train in a worker thread."""
        annotations = self._session.annotations
        if not annotations:
            self.fail("The training set is empty: add an image and its labels first.")
            return
        fine_tune = self.start_from.value != "new model"
        if fine_tune and self._session.model is None:
            self.fail("There is no current model to fine-tune: train or load one first.")
            return
        arrays = [a.arrays() for a in annotations]
        images, labels, regions = (list(column) for column in zip(*arrays, strict=True))
        if fine_tune:
            model = copy.deepcopy(self._session.model)
        else:
            # Batch norm trains faster here and keeps tiling exact (benchmarks/README.md).
            model = UNet(
                depth=self.net_depth.value,
                width=self.net_width.value,
                padding=self.padding.value,
                norm="batch",
            )
        tile, largest = self.tile.value, max(max(np.shape(a)[-2:]) for a in labels)
        if tile_sizes(model, tile)[1] > largest:  # e.g. the default tile on small crops
            try:
                tile = fitting_tile(model, tile, largest)
            except ValueError as err:
                self.fail(f"Cannot train: {err}.")
                return
            self.tile.value = tile
            show_info(f"Tile lowered to {tile} pixels, the largest the training images fit.")
        out = new_model_path(annotations[0].image.name)
        config = TrainConfig(
            steps=10**9,
            minutes=self.minutes.value,
            batch_size=self.batch.value,
            tile=tile,
            lr=self.lr.value,
            w0=self.w0.value,
            sigma=self.sigma.value,
            class_balance=self.class_balance.value,
            ignore_outline=self.ignore_outline.value,
            device=self.device.value,
            out=str(out),
        )
        shown = self._session.worked_on()  # the pair to preview
        preview = self._preview.prepare(annotations[shown].image, images[shown])
        self._job = TrainJob(
            images,
            labels,
            regions,
            model,
            config,
            fine_tune,
            preview,
            self.val_fraction.value,
            names=[a.image.name for a in annotations],
        )
        self._worker = create_worker(self._job.run, _ignore_errors=True)
        # Held by the connection, not the dock: napari frees a dock closed during the run.
        end = RunEnd(self._session, self._preview, self._job)
        self._worker.yielded.connect(end)
        self._worker.finished.connect(end.release)  # queued after the last event
        self._worker.aborted.connect(self._job.abandon, Qt.ConnectionType.DirectConnection)
        self._connected = connect_all(self._slots())
        self.plot.clear()
        self._said_next_run = False
        self.progress.value = 0
        # A model loaded now would be replaced by the run's at its end.
        self.train_button.enabled = self.files.load_button.enabled = False
        self.pause_button.enabled = self.stop_button.enabled = True
        how = "fine-tune the current model" if fine_tune else "train a new model"
        self.status.value = f"preparing the training set to {how}..."
        start_long(self._worker)

    def toggle_pause(self) -> None:
        if self._job is None:
            return
        if self.pause_button.text == "Pause":
            self._job.pause()
            self.pause_button.text = "Resume"
        else:
            self._job.resume()
            self.pause_button.text = "Pause"

    def _slots(self) -> list:
        """The worker's connections to this dock's controls."""
        worker = self._worker
        return [
            (worker.yielded, WorkerSlot(self._on_event)),
            (worker.returned, WorkerSlot(self._on_returned)),
            (worker.errored, WorkerSlot(self._on_error)),
            (worker.finished, WorkerSlot(self._on_finished)),
        ]

    def _closed(self) -> None:
        """The dock closed or its viewer did: stop, and keep the controls, which may be
        deleted already, out of the rest of the run; the model still reaches the Session."""
        self._weights.unlink()
        disconnect_all(self._links + self._connected)
        self._links, self._connected = [], []
        if self._job is not None:
            self._job.stop()  # not self.stop(): it writes to the status
            with contextlib.suppress(RuntimeError):  # deleted with the viewer: none to tell
                self._job.dock_closed = self.root_native_widget.parent() is None  # the X

    def stop(self) -> None:
        """End training after the current step; the checkpoint and model are kept."""
        if self._job is not None:
            self._job.stop()
            self.status.value = "stopping after this step..."

    def _on_event(self, event) -> None:
        if isinstance(event, Progress):
            done = event.seconds  # paused time left out, as from seconds_left
            self.progress.value = int(1000 * done / max(done + event.seconds_left, 1e-9))
            self.status.value = (
                f"step {event.step}, loss {event.loss:.4f}, "
                f"{event.steps_per_second:.1f} steps/s, {event.seconds_left:.0f} s left"
            )
            self.plot.add_loss(event.step, event.loss)
        elif isinstance(event, Validation):
            self.plot.add_validation(event.step, event.pixel_error, event.rand_error)
        elif isinstance(event, Preview):
            self._preview.show(event.probability)
        elif isinstance(event, Paused):
            self.status.value = f"paused at step {event.step}"
        elif isinstance(event, Notice):
            if isinstance(event, NoPreview):
                self._preview.discard(even_kept=True)
            (show_info if event.level == "info" else show_warning)(event.message)
        elif isinstance(event, Saved) and event.step > 0:
            self._session.model_path = event.path
        elif isinstance(event, Done) and event.step == 0:  # the job deleted its file
            self.status.value = "stopped before the first step: the model is unchanged"
        elif isinstance(event, Done):
            how = "stopped" if event.stopped else "finished"
            self.status.value = f"{how} after {event.step} steps; model saved to {event.path}"
            show_info(f"Training {how}: the model is ready in the Predict dock.")

    def _on_returned(self, message: str) -> None:
        if message:
            self.fail(message)
            self._preview.discard()

    def _on_error(self, error: Exception) -> None:
        self.fail(f"Training failed: {error}")

    def _on_finished(self) -> None:
        self.train_button.enabled = self.files.load_button.enabled = True
        self.pause_button.enabled = self.stop_button.enabled = False
        self.pause_button.text = "Pause"
        self._worker, self._job, self._connected = None, None, []
