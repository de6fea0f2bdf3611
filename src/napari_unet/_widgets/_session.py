"""What the dock widgets of one viewer share: the training set, the model in memory
and the weight-map settings.

Each widget is created separately by napari; they meet here. The training set
holds layers, not arrays, so labels corrected after a prediction are what the
next training run reads; :meth:`Annotation.arrays` copies the labels and region
on the GUI thread before a worker starts (the image is read by the worker).
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import napari
import numpy as np
from napari.utils.notifications import show_warning
from psygnal import Signal
from qtpy.QtCore import QTimer

from ..core.config import TrainConfig
from ._layers import fits

if TYPE_CHECKING:  # torch, 1.2 s to import, is not needed to open Annotate
    from ..core.model import UNet


@dataclass(eq=False)
class Annotation:
    """An image layer, its instance labels and, for partial annotation, a region
    layer whose painted (non-zero) pixels are the ones the labels are trusted on."""

    image: napari.layers.Image
    labels: napari.layers.Labels
    region: napari.layers.Labels | None = None

    def arrays(self) -> tuple:
        """(image, labels, annotated mask or None for everywhere), the last two
        copies: painting goes on while a worker trains. The image is the layer's own
        array (of a multiscale image, the full resolution): napari's tools never edit
        an image, and a lazy one (dask, zarr) is read by the worker only where it is
        annotated, not whole on the GUI thread."""
        image = self.image.data[0] if self.image.multiscale else self.image.data
        annotated = None if self.region is None else _copy(self.region.data, bool)
        return image, _copy(self.labels.data), annotated

    def layers(self) -> list:
        return [layer for layer in (self.image, self.labels, self.region) if layer is not None]


def _copy(data, dtype=None) -> np.ndarray:
    """A copy of a layer's array, as ``dtype``. Of a stack, only the slices holding a
    non-zero value are written: the others stay zero pages, which take no memory
    until written, so a stack painted on a few slices costs a few slices."""
    if np.ndim(data) != 3:
        return np.array(data, dtype)
    out = np.zeros(data.shape, dtype or data.dtype)
    for z in range(data.shape[0]):
        plane = np.asarray(data[z])
        if np.count_nonzero(plane):
            out[z] = plane
    return out


@dataclass(frozen=True)
class WeightSettings:
    """The parameters of Eq. 2 as the loss uses them, and whether it ignores the
    background pixel along each outline (``core.outline``)."""

    w0: float = TrainConfig.w0
    sigma: float = TrainConfig.sigma
    class_balance: bool = TrainConfig.class_balance
    ignore_outline: bool = TrainConfig.ignore_outline


class Session:
    """Training set, current model and weight settings of one viewer; ``changed`` fires
    on any edit of the first two, ``weights_changed`` on the third."""

    changed = Signal()
    weights_changed = Signal()

    def __init__(self, viewer: napari.viewer.Viewer):
        self.annotations: list[Annotation] = []
        self.model: UNet | None = None
        self.model_path = None
        # One set for the viewer, so the Weight map dock previews what Train uses.
        self.weights = WeightSettings()
        self._viewer = weakref.ref(viewer)
        viewer.layers.events.removed.connect(self._forget_removed)

    def pair_of(self, labels) -> Annotation | None:
        """The pair of the training set that uses ``labels``, or None."""
        return next((a for a in self.annotations if a.labels is labels), None)

    def worked_on(self) -> int:
        """The index of the pair whose image or labels layer is selected in the
        viewer (the one being worked on), else 0."""
        viewer = self._viewer()
        active = None if viewer is None else viewer.layers.selection.active
        return next((k for k, a in enumerate(self.annotations) if active in a.layers()), 0)

    def region_for(self, labels):
        """The annotated region of ``labels``: its pair's in the training set (None
        there is "everywhere"), else the Labels layer of its shape named "<labels>
        region", as the Annotate dock names the regions it makes, else None."""
        paired = self.pair_of(labels)
        if paired is not None:
            return paired.region
        viewer, name = self._viewer(), f"{labels.name} region"
        if viewer is None or name not in viewer.layers:
            return None
        layer = viewer.layers[name]
        return layer if fits(layer, labels.data.shape) else None

    def add(self, image, labels, region=None) -> Annotation:
        """Add a pair, or update the one that already uses ``labels``."""
        annotation = self.pair_of(labels)
        if annotation is None:
            annotation = Annotation(image, labels, region)
            self.annotations.append(annotation)
        annotation.image, annotation.region = image, region
        for layer in annotation.layers():  # the docks list the pairs by name
            layer.events.name.connect(self._renamed)
        self.changed.emit()
        return annotation

    def remove(self, annotation: Annotation) -> None:
        self.annotations.remove(annotation)
        self.changed.emit()

    def set_model(self, model: UNet, path=None) -> None:
        """Publish a trained model; widgets get a frozen copy, never the one training."""
        self.model = copy.deepcopy(model).cpu().eval()
        self.model_path = path
        self.changed.emit()

    def set_weights(self, **changes) -> None:
        weights = replace(self.weights, **changes)
        if weights != self.weights:
            self.weights = weights
            self.weights_changed.emit()

    def _renamed(self, event) -> None:
        if any(event.source in a.layers() for a in self.annotations):
            self.changed.emit()

    def _forget_removed(self, event) -> None:
        gone = [a for a in self.annotations if event.value in a.layers()]
        if gone:
            self.annotations = [a for a in self.annotations if a not in gone]
            pairs = ", ".join(f"'{a.image.name} / {a.labels.name}'" for a in gone)
            message = f"'{event.value.name}' was deleted: {pairs} left the training set."
            QTimer.singleShot(0, lambda: self._warn_unless_closed(message))
            self.changed.emit()

    def _warn_unless_closed(self, message: str) -> None:
        # Closing the viewer deletes every layer first: nothing to say then.
        viewer = self._viewer()
        if viewer is not None and len(viewer.layers):
            show_warning(message)


_sessions: WeakKeyDictionary = WeakKeyDictionary()


def session(viewer: napari.viewer.Viewer) -> Session:
    """The one :class:`Session` of ``viewer``."""
    # napari hands each dock its own proxy of the viewer: keyed by the first dock's,
    # the Session went with that dock, and a dock opened later began an empty one;
    # and the layers found through a proxy are proxies, never the layers themselves.
    viewer = getattr(viewer, "__wrapped__", viewer)
    if viewer not in _sessions:
        _sessions[viewer] = Session(viewer)
    return _sessions[viewer]
