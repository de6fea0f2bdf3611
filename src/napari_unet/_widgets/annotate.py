"""Annotate dock: pair an image with instance labels and an annotated region,
see what training will make of them, and add the pair to the training set.

Training trusts the labels only inside the annotated region (a Labels layer,
painted = annotated; no region = the whole image, or of a stack every slice
with a painted cell: ``core.instances.annotated_labels``), so the counts and the
separation gaps shown here are those of the labels inside it, computed by the
core in a worker (``_summary``), debounced while the user paints.
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import Label, PushButton, Select, create_widget
from napari.utils.notifications import show_error, show_info

from ._common import Dock, WorkerSlot, on_removed
from ._layers import (
    DERIVED,
    Derived,
    cell_labels,
    fits,
    one_colour,
    placement,
    source_images,
    spatial_shape,
)
from ._live import LiveJob
from ._session import session
from ._summary import Summary, summary_job
from ._workers import create_live_worker

NEW_CELL_KEY = "n"
LABELS_DTYPE = np.int32  # as predicted labels, so corrections train unchanged
HINT = (
    "Mark where you painted: without a region, every unpainted pixel of a slice "
    "with a painted cell counts as background."
)


def select_new_cell(layer: napari.layers.Labels) -> bool:
    """Select the next free label of ``layer`` (one above the largest painted);
    False, with an error shown, when its data type holds none."""
    data = np.asarray(layer.data)
    following = int(data.max(initial=0)) + 1
    if following > np.iinfo(data.dtype).max:
        show_error(f"'{layer.name}' has no free label left in its {data.dtype} data type")
        return False
    layer.selected_label = following
    layer.mode = "paint"
    return True


class AnnotateWidget(Dock):
    """Dock widget: paint instance labels for training, with live counts and gaps."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self._session = session(viewer)
        self._summarised = None
        self._summary = None  # what was counted last, of _summarised
        self._added = None  # (labels, the status that says they are in the training set)
        self._gaps = Derived(viewer, "gaps", "gaps")
        self.image = create_widget(
            annotation=napari.layers.Image,
            label="Image",
            options={"choices": source_images(viewer)},
        )
        self.labels_layer = create_widget(
            annotation=napari.layers.Labels,
            label="Labels",
            options={"nullable": True, "choices": cell_labels(viewer)},
        )
        self.create_button = PushButton(text="Create labels")
        self.new_cell_button = PushButton(text=f"New cell ({NEW_CELL_KEY.upper()})")
        self.new_cell_button.tooltip = (
            f"Select the next free label. Shortcut: {NEW_CELL_KEY.upper()} while the "
            "labels layer is selected."
        )
        self.region = create_widget(
            annotation=napari.layers.Labels, label="Annotated region", options={"nullable": True}
        )
        self.region_button = PushButton(text="Mark annotated region")
        self.hint = Label(value=HINT)
        self.counts = Label(label="Training sees", value="")
        self.add_button = PushButton(text="Add to training set")
        # Choices read from the session, so that the dock's reset_choices on every
        # layer added or removed lists the training set again rather than emptying it.
        self.pairs = Select(label="Training set", choices=self._training_set)
        self.remove_button = PushButton(text="Remove from training set")
        self.status = Label(label="", value="")
        choosers = [self.image, self.labels_layer, self.create_button, self.new_cell_button]
        self.extend([*choosers, self.region, self.region_button, self.hint, self.counts])
        self.extend([self.add_button, self.pairs, self.remove_button, self.status])
        self.wrap(self.hint, self.counts, self.status)  # not to widen the dock over the canvas
        self.pairs.native.setMaximumHeight(120)
        self._live = LiveJob(self._begin)
        self.image.changed.connect(self._on_image)
        self.labels_layer.changed.connect(self._on_labels)
        self.region.changed.connect(self._on_region)
        self.create_button.changed.connect(self.create_labels)
        self.new_cell_button.changed.connect(self.new_cell)
        self.region_button.changed.connect(self.mark_region)
        self.add_button.changed.connect(self.add_to_training_set)
        self.remove_button.changed.connect(self.remove_selected)
        self._session.changed.connect(self._show_training_set)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        on_removed(self, self.stop)
        self._on_image()
        self._show_training_set()

    @property
    def busy(self) -> bool:
        """Whether counts and gaps are being computed or wait to be."""
        return self._live.busy

    def stop(self):
        """Stop listening to the viewer and quit the worker."""
        if not self._live.stop():
            return
        self._session.changed.disconnect(self._show_training_set)
        self._viewer.layers.events.inserted.disconnect(self._on_inserted)
        self._viewer.layers.events.removed.disconnect(self._on_removed)

    def _on_removed(self, event) -> None:
        self.reset_choices()
        self._gaps.drop(event.value)  # its gaps, not a leftover yellow overlay

    def _on_inserted(self, *_):
        self.reset_choices()
        if self.labels_layer.value is None:  # "<image> labels" may come after the image
            self._on_image()

    def create_labels(self):
        """Create the image's Labels layer (or attach the one named after it)."""
        shape, message = spatial_shape(self.image.value)
        if shape is None:
            return self.fail(message)
        image = self.image.value
        name = f"{image.name} labels"
        layer, message = self._named(name, shape)
        if message:
            return self.fail(message)
        if layer is None:
            layer = self._add_layer(
                np.zeros(shape, LABELS_DTYPE), name, **placement(image, image.ndim)
            )
        self.labels_layer.value = layer
        layer.selected_label, layer.mode = 1, "paint"
        self._viewer.layers.selection.active = layer
        self.status.value = f"paint cells on '{name}'; {NEW_CELL_KEY.upper()} for the next cell"
        return layer

    def new_cell(self):
        """Select the next free label on the labels layer, ready to paint."""
        message = self._pair_message(need_region=False)
        if message:
            return self.fail(message)
        labels = self.labels_layer.value
        if not select_new_cell(labels):
            self.status.value = f"'{labels.name}' has no free label left"
            return None
        self._viewer.layers.selection.active = labels
        self.status.value = f"painting cell {labels.selected_label}"
        return None

    def mark_region(self):
        """Create (or attach) "<labels> region" and select it for painting."""
        message = self._pair_message(need_region=False)
        if message:
            return self.fail(message)
        labels = self.labels_layer.value
        name = f"{labels.name} region"
        shape = labels.data.shape
        layer, message = self._named(name, shape)
        if message:
            return self.fail(message)
        if layer is None:
            layer = self._add_layer(
                np.zeros(shape, np.uint8),
                name,
                colormap=one_colour("cyan"),
                opacity=0.3,
                metadata={DERIVED: "region"},
                **placement(labels, labels.ndim),
            )
        self.region.value = layer
        layer.selected_label, layer.brush_size, layer.mode = 1, 30, "paint"
        self._viewer.layers.selection.active = layer
        self.status.value = f"paint on '{name}' where the cells are annotated"
        return layer

    def add_to_training_set(self):
        """Put the pair into the viewer's training set (or update its region)."""
        message = self._pair_message()
        if message:
            return self.fail(message)
        labels, region = self.labels_layer.value, self.region.value
        painted = np.asarray(labels.data) > 0  # negative labels mark unannotated pixels
        if region is not None:
            painted &= np.asarray(region.data) != 0
        if not painted.any():
            where = " inside the annotated region" if region is not None else ""
            return self.fail(f"Paint at least one cell{where} of '{labels.name}' first.")
        image = self.image.value
        paired = self._session.pair_of(labels)
        before = None if paired is None else paired.image.name
        self._session.add(image, labels, region)
        self.status.value = f"'{labels.name}' is in the training set"
        if before not in (None, image.name):
            self.status.value += f", now with '{image.name}' instead of '{before}'"
        self._added = labels, self.status.value
        show_info(self.status.value)
        return None

    def remove_selected(self):
        for annotation in self.pairs.value:
            self._session.remove(annotation)

    def _on_image(self):
        image = self.image.value
        for annotation in self._session.annotations:
            if annotation.image is image:
                self.labels_layer.value = annotation.labels
                return
        name = "" if image is None else f"{image.name} labels"
        shape = spatial_shape(image)[0]
        labels = self.labels_layer.value
        if name in self._viewer.layers and self._viewer.layers[name].data.shape == shape:
            self.labels_layer.value = self._viewer.layers[name]
        elif labels is not None and (
            labels.data.shape != shape or self._owner(labels) not in (None, image.name)
        ):
            # Another image's labels (e.g. the other channel's) are not this one's.
            self.labels_layer.value = None

    def _owner(self, labels) -> str | None:
        """The name of the image ``labels`` pair with in the training set, or are
        named after ("<image> labels"), or None."""
        paired = self._session.pair_of(labels)
        if paired is not None:
            return paired.image.name
        for layer in self._viewer.layers:
            if isinstance(layer, napari.layers.Image) and labels.name == f"{layer.name} labels":
                return layer.name
        return None

    def _on_labels(self):
        labels = self.labels_layer.value
        region = None
        self.status.value = ""  # said of the layers chosen before
        if labels is not None:
            labels.bind_key(NEW_CELL_KEY, select_new_cell, overwrite=True)
            region = self._session.region_for(labels)
            shape = spatial_shape(self.image.value)[0]
            if shape is not None and labels.data.shape != shape:
                self.fail(self._pair_message(need_region=False))
        self.region.value = region
        self._on_region()

    def _on_region(self):
        labels, region = self.labels_layer.value, self.region.value
        if (labels is not None and region is not None) and (
            region is labels or region.data.shape != labels.data.shape
        ):
            self.fail(f"'{region.name}' cannot be the annotated region of '{labels.name}'.")
        else:
            # A region marked or chosen after Add: training uses what the counts show.
            paired = self._session.pair_of(labels)
            if paired is not None and paired.region is not region:
                self._session.add(paired.image, labels, region)
                where = "on all of it" if region is None else f"only inside '{region.name}'"
                show_info(f"'{labels.name}' now trains {where}.")
        self._live.timer.watch((self.labels_layer.value, self.region.value))

    def _training_set(self, _widget=None) -> list:
        return [(describe(a), a) for a in self._session.annotations]

    def _show_training_set(self):
        self.pairs.reset_choices()
        labels, said = self._added or (None, "")
        if labels is not None and self._session.pair_of(labels) is None:
            self._added = None  # it left the training set (its region deleted, ...)
            if self.status.value == said:  # and the status has not moved on since
                self.status.value = ""

    def _begin(self):
        if self._pair_message():
            self.counts.value = ""
            return None
        labels, region = self.labels_layer.value, self.region.value
        # What the gaps layer shows; None: this pair's (the region may have changed).
        seen = self._summary if self._summarised is labels else None
        self._summarised = labels
        region = None if region is None else region.data
        worker = create_live_worker(summary_job, labels.data, region, seen)
        worker.returned.connect(WorkerSlot(self._on_summary))
        return worker

    def _on_summary(self, summary: Summary | None):
        if self._live.stopped:  # the viewer may be gone
            return None
        # None: the same data as last counted, shown again (the counts may have been
        # cleared meanwhile, the gaps layer deleted, the labels renamed).
        summary = self._summary = summary or self._summary
        if summary.message:
            self.counts.value = ""
            return self.fail(summary.message)
        labels = self._summarised
        if labels not in self._viewer.layers:  # removed while counted: no gaps for it
            return None
        slices = ""
        if labels.ndim == 3:
            taken = summary.slices
            slices = f" over {len(taken)} of {labels.data.shape[0]} slices"
            slices += f" ({spans(taken)})" if taken else ""
        self.counts.value = (
            f"{summary.cells} cells, {summary.pairs} touching pairs, "
            f"{int(summary.gaps.sum())} gap pixels{slices}"
        )
        layer = self._gaps.find(labels)
        if isinstance(layer, napari.layers.Labels):
            # Whatever its shape: after the labels changed shape, a layer made anew
            # beside it was followed by one more at every stroke (the name finds the old).
            if layer.data is not summary.gaps:
                layer.data = summary.gaps
        else:
            layer = self._add_layer(
                summary.gaps,
                self._gaps.name(labels),
                colormap=one_colour("yellow"),
                metadata={DERIVED: self._gaps.kind},
                **placement(labels, labels.ndim),
            )
            self._gaps.made(labels, layer)

    def _pair_message(self, need_region: bool = True) -> str:
        """Why the chosen image, labels and region do not make a pair ("" if they do)."""
        shape, message = spatial_shape(self.image.value)
        labels, region = self.labels_layer.value, self.region.value
        if shape is None:
            return message
        if labels is None:
            return "Create labels for the image, or choose a Labels layer."
        if labels.data.shape != shape:
            return (
                f"'{labels.name}' has shape {labels.data.shape} but the image "
                f"'{self.image.value.name}' has {shape}: choose matching layers."
            )
        if need_region and region is labels:
            return "The annotated region must be its own layer, not the labels."
        if need_region and region is not None and region.data.shape != shape:
            return f"The region '{region.name}' has shape {region.data.shape}, not {shape}."
        return ""

    def _named(self, name: str, shape) -> tuple[napari.layers.Labels | None, str]:
        """The Labels layer called ``name`` (None if there is none), or why it does not fit."""
        layer = self._viewer.layers[name] if name in self._viewer.layers else None
        if layer is not None and not fits(layer, shape):
            return None, f"A layer '{name}' exists but is not a Labels layer of shape {shape}."
        return layer, ""

    def _add_layer(self, data, name: str, **kwargs):
        """Add a Labels layer without taking the selection from the layer being painted."""
        active = self._viewer.layers.selection.active
        layer = self._viewer.add_labels(data, name=name, **kwargs)
        if active is not None:
            self._viewer.layers.selection.active = active
        return layer


def spans(indices: list[int], most: int = 6) -> str:
    """Sorted slice indices as runs, "0-4, 7, 9-12", the first ``most`` of them: a
    slice taken by a stray dab of paint shows, as napari's slider numbers it."""
    runs = []
    for z in indices:
        if runs and z == runs[-1][1] + 1:
            runs[-1][1] = z
        else:
            runs.append([z, z])
    text = [f"{a}-{b}" if b > a else f"{a}" for a, b in runs[:most]]
    return ", ".join(text + (["..."] if len(runs) > most else []))


def describe(annotation) -> str:
    """One line for the training-set list, e.g. "cells: cells labels + region (256x256)"."""
    region = " + region" if annotation.region is not None else ""
    shape = annotation.labels.data.shape
    size = f"{shape[0]} slices" if len(shape) == 3 else "x".join(map(str, shape))
    return f"{annotation.image.name}: {annotation.labels.name}{region} ({size})"
