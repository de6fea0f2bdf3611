"""The layers the docks take and make: the choices their layer choosers offer,
and the layers they derive from the user's (gaps, regions, weights, previews,
probabilities): their mark, names and placement."""

from __future__ import annotations

import re
from collections.abc import Callable
from weakref import WeakKeyDictionary

import napari
import numpy as np
from napari.utils.colormaps import CyclicLabelColormap

from ..core.windows import changed_box

# The metadata key that marks the layers the docks make beside the user's (gaps,
# annotated regions, weights, previews, probabilities), with what each is: the
# docks' choosers leave them out, and only they are reused and overwritten.
DERIVED = "napari_unet"


def one_colour(colour: str) -> CyclicLabelColormap:
    """A Labels colormap that shows every label in ``colour``. napari's direct
    colormaps (a dict of colours) compile numba code on the GUI thread at their first
    use in a session: 1.1 s to show a gaps or region layer (``first_launch.py``)."""
    return CyclicLabelColormap(colors=["transparent", colour])


def derived_layer(viewer, name: str, kind: str):
    """The layer a dock made as ``kind`` (its ``DERIVED`` mark) named ``name``, or
    "<name> [k]" as napari names it beside a user's layer of that name; None if
    there is none. A user's own layer of that name is never taken."""
    numbered = re.compile(re.escape(name) + r" \[\d+\]")
    for layer in viewer.layers:
        if layer.metadata.get(DERIVED) == kind and (
            layer.name == name or numbered.fullmatch(layer.name)
        ):
            return layer
    return None


def _users(viewer, kind) -> Callable:
    def choices(_widget=None) -> list:
        return [
            layer
            for layer in viewer.layers
            if isinstance(layer, kind) and DERIVED not in layer.metadata
        ]

    return choices


def source_images(viewer) -> Callable:
    """Choices for an Image chooser: the user's images, not the weights, previews
    and probabilities the docks made (``DERIVED``), so that removing the chosen
    image never moves the chooser onto one of those."""
    return _users(viewer, napari.layers.Image)


def cell_labels(viewer) -> Callable:
    """Choices for a Labels chooser: the layers cells are painted on, without the
    gaps and regions the plugin made (``DERIVED``), so that removing the chosen
    layer never moves the chooser onto one of those."""
    return _users(viewer, napari.layers.Labels)


def fits(layer, shape) -> bool:
    """Whether ``layer`` is a Labels layer of ``shape``: one a dock can take by name
    (e.g. "<labels> region")."""
    return isinstance(layer, napari.layers.Labels) and layer.data.shape == shape


class Derived:
    """The layers a dock derives from the user's layers, one per source layer (e.g.
    "<labels> gaps" of each labels layer): named "<source> <suffix>", marked ``kind``
    (``DERIVED``), found again by that name and renamed when their source is."""

    def __init__(self, viewer, suffix: str, kind: str):
        self._viewer, self._suffix, self.kind = viewer, suffix, kind
        self._names = WeakKeyDictionary()  # source layer -> its derived layer's name

    def name(self, source) -> str:
        return f"{source.name} {self._suffix}"

    def find(self, source):
        """The layer derived from ``source``, or None. One made under the source's
        earlier name is renamed after it first, rather than left behind beside a new
        one; a user's own layer of either name is never taken."""
        name, layers = self.name(source), self._viewer.layers
        previous = self._names.get(source)
        if previous and previous != name and previous in layers and name not in layers:
            if DERIVED in layers[previous].metadata:
                layers[previous].name = name
        layer = derived_layer(self._viewer, name, self.kind)
        self._record(source, name if layer is None else layer.name)
        return layer

    def made(self, source, layer) -> None:
        """Record ``layer``, just made from ``source``, by the name napari gave it
        ("<name> [1]" beside a user's layer of that name)."""
        self._record(source, layer.name)

    def drop(self, source) -> None:
        """Remove the layer derived from ``source``, which left the viewer: it shows
        nothing without it. One the user renamed (to keep it) stays."""
        name, layers = self._names.pop(source, None), self._viewer.layers
        if name in layers and layers[name].metadata.get(DERIVED) == self.kind:
            layers.remove(name)

    def drop_others(self, source) -> None:
        """Remove the layers derived from sources other than ``source`` (e.g. a
        preview from an earlier run on another image, which would show an earlier
        model's output beside this run's)."""
        for other in [s for s in self._names if s is not source]:
            self.drop(other)

    def _record(self, source, name: str) -> None:
        # A source that took over another's name takes its layer too: the other
        # must not rename that layer after itself when next shown.
        for other in [s for s, n in self._names.items() if n == name and s is not source]:
            del self._names[other]
        self._names[source] = name


def write_undoable(layer, values: np.ndarray) -> bool:
    """Write ``values`` over the data of ``layer``, a Labels layer held in memory, as
    one undo step; False if nothing changed. The step may keep a view of
    ``values``: the caller must not change them afterwards.

    Only the box around the changed pixels is written, and napari's undo history
    keeps it as one (box, before, after) atom, which undo and redo replay with basic
    slicing. The public ``data_setitem`` takes the changed pixels' indices instead
    and spends about 0.2 microseconds on each on the GUI thread: 3.4 s for a
    4096x4096 prediction, against 0.07 s here (``bench_predict_write.py``)."""
    box = changed_box(layer.data, values)
    if box is None:
        return False
    after = values[box]
    if 2 * after.size < values.size:  # a view would keep all of ``values`` alive
        after = after.copy()
    # Private, as there is no public way to add an undo step: the atom is the
    # (indices, before, after) triple ``data_setitem`` saves, with slices for indices.
    layer._save_history((box, layer.data[box].copy(), after))
    layer.data[box] = after
    layer.refresh()
    return True


def placement(layer, ndim: int) -> dict:
    """Where ``layer`` lies, for a layer made from its data (or, with ``ndim`` below
    its own, from its last ``ndim`` axes) to lie over it in a calibrated viewer:
    ``scale`` and ``translate``, and for a whole layer its rotation, shear and
    affine too (a deskewed image's labels), and its units and axis labels."""
    where = {"scale": tuple(layer.scale[-ndim:]), "translate": tuple(layer.translate[-ndim:])}
    # Units too: one layer in pixels makes the viewer drop every layer's units.
    where.update(units=tuple(layer.units[-ndim:]), axis_labels=tuple(layer.axis_labels[-ndim:]))
    if ndim == layer.ndim:
        where.update(rotate=layer.rotate, shear=layer.shear, affine=layer.affine.affine_matrix)
    return where


def spatial_shape(image) -> tuple[tuple[int, ...] | None, str]:
    """The labels shape an image layer needs (of a multiscale image, its full
    resolution's), or None and a message saying why it cannot be annotated."""
    if image is None:
        return None, "Choose an image layer."
    if image.rgb:
        return None, (
            f"'{image.name}' is an RGB image and the U-Net takes one channel: split it "
            "(right-click the layer > Split RGB) and annotate one channel."
        )
    shape = tuple(image.data[0].shape if image.multiscale else image.data.shape)
    if len(shape) not in (2, 3):
        return None, (
            f"'{image.name}' has {len(shape)} axes {shape}: the U-Net takes a 2D image or "
            "a stack (Z, Y, X), one channel per layer (open channels with channel_axis); "
            "of a time series, one time point as its own layer."
        )
    return shape, ""
