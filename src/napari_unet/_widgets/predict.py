"""Predict dock: a model file and an image layer in, probability and Labels layers out.

The prediction runs in a napari ``thread_worker`` on a snapshot of the layer's
data; layers are created only on the GUI thread, in the ``returned`` slot, and
never replace an existing layer, so nothing the user painted is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from ..core.checkpoint import load
from ..core.device import default_device
from ..core.instances import to_instances
from ..core.predict import check_input, iter_predict


@dataclass
class PredictResult:
    """What the worker hands back: results, or a message for the user."""

    probabilities: np.ndarray | None = None
    labels: np.ndarray | None = None
    message: str = ""


def predict_job(
    model_path: Path, image, tile: int | None, tta: bool, device: str, threshold: float
):
    """Worker body: yields ``(done, total)`` tiles, returns a :class:`PredictResult`.

    Mistakes in the input (wrong file, wrong shape) come back as a message, not
    an exception, so the user sees one clear line rather than a traceback.
    """
    try:
        model, _ = load(model_path, device=default_device(device))
        check_input(model, image)
        probabilities = yield from iter_predict(model, image, tile, tta)
    except (ValueError, FileNotFoundError) as err:
        return PredictResult(message=str(err))
    return PredictResult(probabilities, to_instances(probabilities, threshold))


class PredictWidget(Container):
    """Dock widget: predict the chosen image layer with a saved U-Net."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        self._worker = None
        self._layer_name = ""
        self.image = create_widget(annotation=napari.layers.Image, label="Image")
        self.model_file = FileEdit(label="Model", filter="*.safetensors", mode="r")
        self.tile = SpinBox(label="Tile (0 = auto)", value=0, min=0, max=16384, step=16)
        self.tta = CheckBox(text="Test-time augmentation (8x slower)", value=False)
        self.device = ComboBox(label="Device", choices=_devices(), value="auto")
        self.threshold = FloatSpinBox(label="Threshold", value=0.5, min=0.05, max=0.95, step=0.05)
        self.run_button = PushButton(text="Predict")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="Progress", value=0, min=0, max=1)
        self.status = Label(label="", value="")
        self.extend(
            [
                self.image,
                self.model_file,
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
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        viewer.layers.events.inserted.connect(self.image.reset_choices)
        viewer.layers.events.removed.connect(self.image.reset_choices)

    def start(self):
        """Check the choices, then predict in a worker thread."""
        layer = self.image.value
        path = Path(self.model_file.value)
        if layer is None:
            show_error("Choose an image layer to predict.")
            return
        if not path.is_file():
            show_error("Choose a model file (.safetensors) to predict with.")
            return
        if layer.rgb:
            show_error(
                f"'{layer.name}' is an RGB image; convert it to grey "
                "(Layers > Convert) or train a three-channel model."
            )
            return
        data = layer.data[0] if layer.multiscale else layer.data
        if isinstance(data, np.ndarray):
            data = data.copy()  # the worker reads a snapshot, whatever happens to the layer
        self._layer_name = layer.name
        tile = self.tile.value or None
        self._worker = create_worker(
            predict_job, path, data, tile, self.tta.value, self.device.value, self.threshold.value
        )
        self._worker.yielded.connect(self._on_progress)
        self._worker.returned.connect(self._on_returned)
        self._worker.finished.connect(self._on_finished)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"predicting {layer.name}..."
        self._worker.start()

    def cancel(self):
        """Stop after the current tile; no layer is added."""
        if self._worker is not None:
            self._worker.quit()
            self.status.value = "cancelled"

    def _on_progress(self, step: tuple[int, int]):
        done, total = step
        self.progress.max, self.progress.value = total, done

    def _on_returned(self, result: PredictResult):
        if result.message:
            show_error(result.message)
            self.status.value = "failed: see the message"
            return
        name = self._layer_name
        self._viewer.add_image(
            result.probabilities[1],
            name=f"{name} probabilities",
            colormap="magma",
            contrast_limits=(0, 1),
            visible=False,
        )
        self._viewer.add_labels(result.labels, name=f"{name} labels")
        self.status.value = f"{name}: {int(result.labels.max())} cells found"
        show_info(self.status.value)

    def _on_finished(self):
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self._worker = None


def _devices() -> list[str]:
    import torch

    names = ["auto", "cpu"]
    names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names
