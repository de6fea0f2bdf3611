"""Weight map dock: the Eq. 2 loss weights of a Labels layer, live while painting.

The Image layer "<labels> weights" holds exactly the weights the loss uses, for
every slice of a stack: ``weight_map(labels, w0, sigma, class_balance,
ignore=~annotated)``, the Eq. 2 map, with the background pixel along each
outline at 0 when "Ignore outline" is on (``core.outline``,
``TrainConfig.ignore_outline``, on by default). The labels are read as training
reads them (``core.data.annotated_labels``: e.g. a plane of two values is a mask
of cells, and without a region a slice with no cell is not annotated). Each
slice keeps a :class:`~napari_unet.core.weights.WeightMap`; after an edit the
worker compares the new labels with the slice's previous ones and recomputes
only the window the edit can reach. Comparing, rather than reading the atoms of
``events.paint``, also catches undo and redo, which emit no paint event. The
work runs in one worker at a time, which reads the layers slice by slice (the
GUI thread copies nothing); edits made meanwhile are picked up when it finishes.
"""

from __future__ import annotations

from dataclasses import dataclass

import napari
import numpy as np
from magicgui.widgets import CheckBox, FloatSpinBox, Label, create_widget
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error

from ..core.data import annotated_labels
from ..core.outline import outline_update
from ..core.weights import WeightMap
from ._common import (
    Dock,
    FirstView,
    LiveJob,
    WeightControls,
    ignore_outline_box,
    on_removed,
    planes_of,
    read_before,
)
from ._layers import DERIVED, Derived, cell_labels, placement
from ._session import WeightSettings, session

# The label value that marks unannotated pixels for WeightMap: ids this large are
# never painted, and int64 holds every id a Labels layer can.
IGNORE = np.iinfo(np.int64).max


def with_region(labels: np.ndarray, annotated: np.ndarray) -> np.ndarray:
    """int64 labels, with ``IGNORE`` outside the annotated region (a copy). uint64
    ids too large for int64 (from 2**63) are numbered anew, 0 kept: the weights
    depend only on which pixels share an id."""
    if labels.dtype == np.uint64 and labels.max(initial=0) >= IGNORE:
        values, index = np.unique(labels, return_inverse=True)
        labels = index.reshape(labels.shape) + int(values[0] != 0)
    out = labels.astype(np.int64)
    out[~annotated] = IGNORE
    return out


@dataclass
class Plane:
    """A slice as the dock last read it, and the WeightMap computed from it (None
    where nothing is annotated: its weights are all 0)."""

    labels: np.ndarray  # (1, Y, X) for a slice of a stack: annotated_labels reads it as one
    region: np.ndarray | None
    map: WeightMap | None


def weights_job(planes: list, labels, region, settings, redraw=False):
    """Worker body: bring ``planes`` (one :class:`Plane` or None per slice) up to
    date with the layers' data, ``labels`` and ``region`` (or None).

    The data is read here, slice by slice, rather than copied whole on the GUI
    thread: a slice equal to the one last read costs one comparison (scrolling
    through a stack starts a run, as undo does), and a slice painted while it is
    read is read again by the run that the paint schedules. Yields ``(slice
    index, window, weights in the window)`` for each slice that changed, or for
    every slice whole when ``redraw`` (the maps are unchanged but what is shown of
    them is not: "Ignore outline" toggled, or the weights layer created again),
    and returns "" or, for labels the core refuses, a message.
    """
    whole = (slice(None), slice(None))
    eq2 = (settings.w0, settings.sigma, settings.class_balance)
    try:
        for z, (old, (live, live_region)) in enumerate(
            zip(planes, planes_of(labels, region), strict=True)
        ):
            same = read_before(old, live, live_region)
            kept = old is not None and old.map is not None
            kept = kept and (old.map.w0, old.map.sigma, old.map.class_balance) == eq2
            if same and (kept or old.map is None):
                if not redraw:
                    continue
                window = whole
            else:
                plane = np.array(live)  # a copy: the layer may be painted meanwhile
                plane_region = None if live_region is None else np.array(live_region)
                target = _target(plane, plane_region)
                if np.all(target == IGNORE):  # nothing annotated: no weight, no WeightMap
                    planes[z] = Plane(plane, plane_region, None)
                    window = whole
                elif kept:
                    window = old.map.changed(target)
                    if window is not None:
                        window = old.map.update(target, window)
                    planes[z] = Plane(plane, plane_region, old.map)
                    if redraw:
                        window = whole
                    elif window is None:  # e.g. painted outside the annotated region
                        continue
                else:
                    weight_map = WeightMap(target, *eq2, ignore=IGNORE)
                    planes[z] = Plane(plane, plane_region, weight_map)
                    window = whole
            yield z, *_shown(planes[z], window, settings.ignore_outline)
    except ValueError as err:
        return str(err)
    return ""


def _target(plane: np.ndarray, region: np.ndarray | None) -> np.ndarray:
    """The labels a slice's WeightMap takes: read as training reads them, 2D, with
    ``IGNORE`` where they are not annotated."""
    instances, annotated = annotated_labels(plane, None if region is None else region != 0)
    flat = plane.shape[-2:]
    return with_region(instances.reshape(flat), annotated.reshape(flat))


def _shown(plane: Plane, window, ignore_outline: bool):
    """``(window, weights)``: the weights of ``window`` as the loss uses them, grown
    to the outline pixels that change with it when the outline is ignored."""
    weight_map = plane.map
    if weight_map is None:
        return window, np.zeros(plane.labels.shape[-2:], np.float32)[window]
    if not ignore_outline:
        return window, weight_map.weights[window].copy()
    window, edges = outline_update(weight_map.gapped, window)
    return window, np.where(edges, np.float32(0), weight_map.weights[window])


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
        self.w0 = FloatSpinBox(label="w0", min=0.0, max=100.0, step=1.0)
        self.sigma = FloatSpinBox(label="sigma (px)", min=0.5, max=50.0, step=0.5)
        self.class_balance = CheckBox(text="Class balance")
        self.ignore_outline = ignore_outline_box()
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
        self._live = LiveJob(self._begin)
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
        worker = create_worker(weights_job, self._planes, labels, region, settings, self._stale)
        worker.yielded.connect(self._on_plane)
        worker.returned.connect(self._on_returned)
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
        maps = [p.map for p in self._planes if p is not None and p.map is not None]
        return max((max(m.classes[0] + w0, m.classes[1]) for m in maps), default=w0 + 1.0)

    def _report(self, status: str, error: str):
        """Show ``status``; notify ``error`` once, not on every stroke."""
        self.status.value = status
        if error and error != self._last_error:
            show_error(error)
        self._last_error = error
