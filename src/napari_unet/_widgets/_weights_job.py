"""The Weight map dock's worker: the loss weights of a Labels layer's slices, kept
up to date by :class:`~napari_unet.core.weights.WeightMap` as they are edited.
No Qt here: the dock runs :func:`weights_job` in a thread."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..core.instances import annotated_labels, without_negatives
from ..core.outline import outline_update
from ..core.weights import WeightMap
from ..core.windows import changed_window, union_window
from . import _warm
from ._common import planes_of, read_before

# The label value that marks unannotated pixels for WeightMap: ids this large are
# never painted, and int64 holds every id a Labels layer can.
IGNORE = np.iinfo(np.int64).max


def _numbered_anew(labels: np.ndarray) -> bool:
    """Whether ``labels`` hold an id that ``IGNORE`` (2**63 - 1) or int64 cannot."""
    return labels.dtype.itemsize == 8 and labels.max(initial=0) >= IGNORE


def with_region(labels: np.ndarray, annotated: np.ndarray) -> np.ndarray:
    """int64 labels, with ``IGNORE`` outside the annotated region (a copy). Ids from
    2**63 - 1 on (which would read as ``IGNORE`` or not fit int64) are numbered anew,
    0 kept: the weights depend only on which pixels share an id."""
    if _numbered_anew(labels):
        values, index = np.unique(labels, return_inverse=True)
        labels = index.reshape(labels.shape) + int(values[0] != 0)
    out = labels.astype(np.int64)
    out[~annotated] = IGNORE
    return out


# Bytes of WeightMaps kept at once (512 MiB). A map holds about 25 bytes a pixel
# (100 MB for a 2048x2048 slice, 6 times int32 labels): of a large stack, the dock
# keeps the maps of the slices last used, and computes a slice whose map it
# dropped again whole when it is edited (a 20x2048x2048 stack took 2.7 GB).
MAPS_BUDGET = 1 << 29
_CLOCK = itertools.count()


@dataclass
class Plane:
    """A slice as the dock last read it, and the WeightMap computed from it (None
    where nothing is annotated, or dropped to save memory)."""

    labels: np.ndarray  # (1, Y, X) for a slice of a stack: annotated_labels reads it as one
    region: np.ndarray | None
    map: WeightMap | None
    # Three pixels of distinct values as training reads them, the first a cell, or
    # None: while an edit leaves them, the slice is neither a mask nor cell-free,
    # so it reads pixel by pixel and the edit can be read alone (see _edit).
    witnesses: tuple | None = None
    # (w0, sigma, class_balance) and class weights of the weights shown; None:
    # nothing annotated, all 0.
    eq2: tuple | None = None
    classes: tuple = (1.0, 1.0)
    used: int = 0  # when its map was last used


def _witnesses(plane: np.ndarray) -> tuple | None:
    """``(row, column)`` of three pixels of ``plane`` with distinct values once
    negative labels read as 0, the first above 0; None if there are no such three,
    or if its ids are numbered anew (see with_region)."""
    plane = np.asarray(plane).reshape(plane.shape[-2:])
    if _numbered_anew(plane):
        return None
    read = np.maximum(plane.ravel(), 0)
    first = int(np.argmax(read > 0))
    second = int(np.argmax(read != read[first]))
    third = int(np.argmax((read != read[first]) & (read != read[second])))
    if read[first] == 0 or len({read[first], read[second], read[third]}) < 3:
        return None
    return tuple(divmod(k, plane.shape[1]) for k in (first, second, third))


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
    if not _warm.wait():
        return ""
    whole = (slice(None), slice(None))
    eq2 = (settings.w0, settings.sigma, settings.class_balance)
    try:
        for z, (old, (live, live_region)) in enumerate(
            zip(planes, planes_of(labels, region), strict=True)
        ):
            kept = old is not None and old.map is not None and old.eq2 == eq2
            if kept and not redraw:
                alone, window = _edit(old, live, live_region)
                if alone:
                    if window is not None:
                        _used(planes, z)
                        yield z, *_shown(old, window, settings.ignore_outline)
                    continue
            same = read_before(old, live, live_region)
            # Up to date: all 0, or computed with these settings (by a map still
            # kept where the shown weights are drawn again).
            shown = old is not None and old.eq2 == eq2 and (old.map is not None or not redraw)
            if same and (old.eq2 is None or shown):
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
                    planes[z] = Plane(plane, plane_region, old.map, _witnesses(plane), eq2)
                    _used(planes, z)
                    if redraw:
                        window = whole
                    elif window is None:  # e.g. painted outside the annotated region
                        continue
                else:
                    weight_map = WeightMap(target, *eq2, ignore=IGNORE)
                    planes[z] = Plane(plane, plane_region, weight_map, _witnesses(plane), eq2)
                    _used(planes, z)
                    window = whole
            yield z, *_shown(planes[z], window, settings.ignore_outline)
    except ValueError as err:
        return str(err)
    return ""


def _used(planes: list, z: int) -> None:
    """Note that slice ``z``'s map was used (and its class weights), and drop the
    maps longest unused while they hold more than :data:`MAPS_BUDGET` (never the
    one just used)."""
    planes[z].used, planes[z].classes = next(_CLOCK), planes[z].map.classes
    held = sorted((p for p in planes if p is not None and p.map is not None), key=lambda p: p.used)
    total = sum(p.map.nbytes for p in held)
    for plane in held[:-1]:
        if total <= MAPS_BUDGET:
            break
        total -= plane.map.nbytes
        plane.map = None


def _edit(plane: Plane, live, live_region) -> tuple[bool, tuple | None]:
    """Bring ``plane`` up to date with the layers' data where they differ from it,
    read in that box alone: ``(True, the window of weights that changed)``, or
    ``(True, None)`` if nothing did. ``(False, None)``, with nothing changed, where
    the slice must be read whole: the edit reaches a witness (it may have made a
    mask or a cell-free slice of it), or the data changed type or shape."""
    old, labels = plane.labels, np.asarray(live)
    if plane.witnesses is None or (labels.dtype, labels.shape) != (old.dtype, old.shape):
        return False, None
    flat = old.shape[-2:]
    labels = labels.reshape(flat)
    box = changed_window(old.reshape(flat), labels)
    region = None
    if (live_region is None) != (plane.region is None):
        return False, None
    if live_region is not None:
        region = np.asarray(live_region).reshape(flat)
        if region.dtype != plane.region.dtype:
            return False, None
        edited = changed_window(plane.region.reshape(flat), region)
        box = edited if box is None else box if edited is None else union_window(box, edited)
    if box is None:
        return True, None
    rows, cols = box
    if any(
        rows.start <= p < rows.stop and cols.start <= q < cols.stop for p, q in plane.witnesses
    ):
        return False, None
    values = np.array(labels[box])  # a copy: the layer may be painted meanwhile
    annotated = np.ones(values.shape, bool)
    if region is not None:
        marked = np.array(region[box])
        annotated = marked != 0
    read, annotated = without_negatives(values, annotated)
    if _numbered_anew(read):
        return False, None
    old[(..., *box)] = values
    if region is not None:
        plane.region[(..., *box)] = marked
    return True, plane.map.edit(box, with_region(read, annotated))


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
