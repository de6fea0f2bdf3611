"""Weight map dock: the Eq. 2 loss weights of a Labels layer, live while painting.

The Image layer "<labels> weights" holds exactly the weights the loss uses, for
every slice of a stack: ``weight_map(labels, w0, sigma, class_balance,
ignore=~annotated)``, the Eq. 2 map, with the background pixel along each
outline at 0 when "Ignore outline" is on (``core.outline``,
``TrainConfig.ignore_outline``, on by default). The labels are read as training
reads them (``core.instances.annotated_labels``: e.g. a plane of two values is a mask
of cells, and without a region a slice with no cell is not annotated). Each
slice keeps a :class:`~napari_unet.core.weights.WeightMap`; after an edit the
worker (``_weights_job``) compares the new labels with the slice's previous ones
and recomputes only the window the edit can reach. Comparing, rather than
reading the atoms of ``events.paint``, also catches undo and redo, which emit no
paint event. The work runs in one worker at a time, which reads the layers slice
by slice (the GUI thread copies nothing); edits made meanwhile are picked up when
it finishes.
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import Label, create_widget
from napari.utils.notifications import show_error

from ._common import Dock, FirstView, WeightControls, WorkerSlot, on_removed, weight_boxes
from ._layers import DERIVED, Derived, cell_labels, placement
from ._live import LiveJob
from ._session import WeightSettings, session
from ._weights_job import weights_job
from ._workers import create_live_worker

# An edit is computed in 2-50 ms (a brush stroke at 4096x4096), so the docks' usual
# 200 ms wait after the last edit was most of the time before the weights showed.
# Edits during a run start one more run when it ends, which sees them all.
QUIET_MS = 50


class WeightsWidget(Dock):
    """Dock widget: preview the loss weights of a Labels layer while painting it."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self._planes: list = []
        self._shape = None
        self._output = None
        self._outputs = Derived(viewer, "weights", "weights")
        self._settings = None
        self._stale = False  # planes shown out of date: runs draw them all until one ends
        self._last_error = ""
        self.labels_layer = create_widget(
            annotation=napari.layers.Labels,
            label="Labels",
            options={"choices": cell_labels(viewer)},
        )
        self.region = create_widget(
            annotation=napari.layers.Labels,
            label="Annotated region",
            options={
                "nullable": True,
                "tooltip": "Painted = annotated; none = everywhere (of a stack, every "
                "slice with a painted cell)",
            },
        )
        self.w0, self.sigma, self.class_balance, self.ignore_outline = weight_boxes()
        self._weights = WeightControls(
            session(viewer), self.w0, self.sigma, self.class_balance, self.ignore_outline
        )
        self.status = Label(label="", value="")
        self.extend(
            [
                self.labels_layer,
                self.region,
                self.w0,
                self.sigma,
                self.class_balance,
                self.ignore_outline,
            ]
        )
        self.append(self.status)
        self.wrap(self.status)
        self._live = LiveJob(self._begin, QUIET_MS)
        self._view = FirstView(self, self._on_first_view)
        self.labels_layer.changed.connect(self._on_labels_chosen)
        self.region.changed.connect(self._watch_layers)
        for control in (self.w0, self.sigma, self.class_balance, self.ignore_outline):
            control.changed.connect(self._live.timer.schedule)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        session(viewer).changed.connect(self._follow_pair)
        on_removed(self, self.stop)
        self._on_labels_chosen()

    @property
    def busy(self) -> bool:
        """Whether a computation is running or waiting to run."""
        return self._live.busy

    def stop(self):
        """Stop listening and quit the worker; the weights layer stays as it is."""
        if not self._live.stop():
            return
        self._weights.unlink()
        self._viewer.layers.events.inserted.disconnect(self._on_inserted)
        session(self._viewer).changed.disconnect(self._follow_pair)
        self._viewer.layers.events.removed.disconnect(self._on_removed)

    def _on_labels_chosen(self):
        self._shape = None
        labels = self.labels_layer.value
        self.region.value = None if labels is None else session(self._viewer).region_for(labels)
        self._watch_layers()

    def _on_inserted(self, event):
        self.reset_choices()
        labels = self.labels_layer.value
        # A region marked after the labels were chosen (the Annotate dock names it so).
        if labels is not None and self.region.value is None:
            if session(self._viewer).region_for(labels) is event.value:
                self.region.value = event.value

    def _on_removed(self, event) -> None:
        self.reset_choices()
        self._outputs.drop(event.value)  # its weights, not a stale overlay

    def _follow_pair(self):
        """Show the region training uses, when the Annotate dock gave the pair another."""
        labels = self.labels_layer.value
        paired = None if labels is None else session(self._viewer).pair_of(labels)
        if paired is not None and self.region.value is not paired.region:
            self.region.value = paired.region

    def _watch_layers(self):
        self._live.timer.watch((self.labels_layer.value, self.region.value))

    def _check(self) -> str:
        labels, region = self.labels_layer.value, self.region.value
        if labels is None:
            return ""
        if labels.multiscale:
            return f"'{labels.name}' is multiscale: choose a Labels layer of one resolution"
        if labels.ndim not in (2, 3):
            return f"'{labels.name}' has {labels.ndim} axes: choose a 2D or (Z, Y, X) Labels layer"
        if region is labels:
            return "Choose a region layer other than the labels themselves"
        if region is not None and region.data.shape != labels.data.shape:
            return (
                f"The region '{region.name}' has shape {region.data.shape}; the labels "
                f"'{labels.name}' have {labels.data.shape}"
            )
        return ""

    def _on_first_view(self):
        if not self._live.stopped:
            self._live.start()

    def _begin(self):
        if self._view.waiting:  # a tab behind another: no weights layer yet
            return None
        message = self._check()
        if self.labels_layer.value is None or message:
            self._report(message or "Choose a Labels layer to see its weights.", message)
            return None
        labels = self.labels_layer.value.data
        region = None if self.region.value is None else self.region.value.data
        settings = session(self._viewer).weights  # what the controls show
        if labels.shape != self._shape:
            self._planes = [None] * (1 if labels.ndim == 2 else labels.shape[0])
            self._shape = labels.shape
        outline_toggled = self._settings is not None and (
            settings.ignore_outline != self._settings.ignore_outline
        )
        if self._show_output(labels.shape, settings) or outline_toggled:
            self._stale = True
        self._settings = settings
        worker = create_live_worker(
            weights_job, self._planes, labels, region, settings, self._stale
        )
        worker.yielded.connect(WorkerSlot(self._on_plane))
        worker.returned.connect(WorkerSlot(self._on_returned))
        first = any(p is None for p in self._planes)
        self.status.value = "computing" if first else "updating"
        return worker

    def _show_output(self, shape, settings: WeightSettings) -> bool:
        """Find the weights layer, or create it (again, if the user deleted it) empty.
        Returns whether it was created or emptied (the labels changed shape), for
        the worker to fill every plane."""
        labels = self.labels_layer.value
        layer = self._outputs.find(labels)
        if isinstance(layer, napari.layers.Image):
            self._output = layer
            if layer.data.shape == shape:
                return False
            layer.data = np.zeros(shape, np.float32)  # one layer, whatever the shape
            return True
        active = self._viewer.layers.selection.active  # keep painting where the user was
        self._output = self._viewer.add_image(
            np.zeros(shape, np.float32),
            name=self._outputs.name(labels),
            colormap="inferno",
            contrast_limits=(0.0, settings.w0 + 1.0),
            opacity=0.7,  # the image shows through, under the labels being painted
            metadata={DERIVED: self._outputs.kind},
            **placement(labels, labels.ndim),
        )
        layers = self._viewer.layers
        if labels in layers:  # under the labels: painted cells stay bright over it
            layers.move(layers.index(self._output), layers.index(labels))
        if active is not None:
            layers.selection.active = active
        self._outputs.made(labels, self._output)
        return True

    def _on_plane(self, update):
        if self._live.stopped:  # the viewer may be gone
            return
        z, window, values = update
        data = self._output.data
        plane = data if data.ndim == 2 else data[z]
        plane[window] = values
        self._output.refresh()

    def _on_returned(self, message: str):
        if self._live.stopped:  # the viewer may be gone
            return
        if message:
            self._report(message, message)
            return
        self._stale = False
        self._output.contrast_limits = (0.0, self._largest_weight())
        self._last_error = ""
        self.status.value = (
            f"'{self._output.name}': w0 {self._settings.w0:g}, sigma {self._settings.sigma:g}"
        )

    def _largest_weight(self) -> float:
        """The most a pixel can weigh: w0 on the background's class weight, or the
        cells' class weight (which the balance can raise above that)."""
        w0 = self._settings.w0
        weighed = [p.classes for p in self._planes if p is not None and p.eq2 is not None]
        return max((max(wb + w0, wf) for wb, wf in weighed), default=w0 + 1.0)

    def _report(self, status: str, error: str):
        """Show ``status``; notify ``error`` once, not on every stroke."""
        self.status.value = status
        if error and error != self._last_error:
            show_error(error)
        self._last_error = error
