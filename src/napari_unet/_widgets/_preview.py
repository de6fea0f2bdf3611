"""The Train dock's preview: the cell probability of a training image (the one
selected, else the first; of a stack, the slice in view), drawn over it while
the model trains."""

from __future__ import annotations

import numpy as np

from ._layers import DERIVED, Derived, placement


class PreviewLayer:
    """The Image layer "<image> preview" of one viewer."""

    def __init__(self, viewer):
        self._viewer = viewer
        self._previews = Derived(viewer, "preview", "preview")
        self._layer = None  # the preview layer of the last prepare (never a user's)
        self._where: dict = {}  # scale and translate of the previewed image
        self._made = False  # by the last prepare, to be removed if the run does not start

    def prepare(self, layer, image: np.ndarray) -> np.ndarray | None:
        """The plane of ``image`` (the data of ``layer``) to preview, or None, with
        its preview layer made now, on the click, so that the first preview is a
        cheap data swap. Of a stack, the layer holds the one slice it previews,
        where that slice lies, so that it is not drawn over the others."""
        plane = None
        if image.ndim == 2:
            plane, self._where = image, placement(layer, 2)
        elif image.ndim == 3 and self._viewer.dims.ndim >= 3:
            # The slice in view, in the layer's own (scaled, translated) coordinates.
            z = round(float(layer.world_to_data(self._viewer.dims.point)[-3]))
            z = min(max(z, 0), image.shape[0] - 1)
            plane, self._where = image[z], placement(layer, 3)
            # The one-slice layer starts z slices in: move its translate by where one
            # step along z goes, before the layer's affine (rotation, shear, scale).
            step = np.subtract(layer.data_to_world((z, 0, 0)), layer.data_to_world((0, 0, 0)))
            shift = np.linalg.solve(np.asarray(layer.affine.linear_matrix), step)
            self._where["translate"] = tuple(np.add(self._where["translate"], shift))
        self._previews.drop_others(layer)  # an earlier model's, beside this run's
        self._layer = self._previews.find(layer)  # renamed after the image, if it was
        ndim = len(self._where.get("scale", ()))
        if plane is not None and self._layer is not None and self._layer.ndim != ndim:
            self._viewer.layers.remove(self._layer)  # kept from a run on the other kind
            self._layer = None
        self._made = plane is not None and self._layer is None
        if plane is None:
            return None
        empty = np.zeros(plane.shape[-2:], np.float32)
        if self._layer is None:
            self._layer = self._viewer.add_image(
                empty[None] if ndim == 3 else empty,
                name=self._previews.name(layer),
                colormap="magma",
                contrast_limits=(0, 1),
                opacity=0.6,
                blending="additive",
                metadata={DERIVED: self._previews.kind},
                **self._where,
            )
            self._previews.made(layer, self._layer)
        else:
            self.show(empty)
            for key, value in self._where.items():
                setattr(self._layer, key, value)
        return plane

    def show(self, probability: np.ndarray) -> None:
        """Draw ``probability``, ``(Y, X)``, over the previewed plane; nothing once the
        user deleted the layer."""
        if self._layer is not None and self._layer in self._viewer.layers:
            self._layer.data = probability[None] if self._layer.ndim == 3 else probability

    def drop(self, source) -> None:
        """Remove the preview of ``source``, a layer that left the viewer: it would lie
        over nothing."""
        self._previews.drop(source)

    def discard(self, even_kept: bool = False) -> None:
        """Remove the layer the last :meth:`prepare` made, still empty; ``even_kept``,
        also one kept from an earlier run, which that prepare emptied."""
        kept = self._layer is not None and self._layer in self._viewer.layers
        if (self._made or even_kept) and kept:
            self._viewer.layers.remove(self._layer)
