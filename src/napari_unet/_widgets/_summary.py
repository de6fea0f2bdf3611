"""The Annotate dock's worker: what training will see of a pair of layers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.instances import annotated_labels, cell_count, touching_pairs
from ..core.weights import separation_borders
from . import _warm
from ._common import planes_of, read_before


@dataclass
class Counted:
    """One plane (of a stack, a one-slice stack) as read, and what training sees of it."""

    labels: np.ndarray
    region: np.ndarray | None
    cells: int
    pairs: int
    gaps: np.ndarray  # uint8, 1 where separation_borders removes a pixel
    annotated: bool


@dataclass
class Summary:
    """What training sees of a pair: counts and the gaps it opens between cells,
    and the planes they were counted from."""

    cells: int = 0
    pairs: int = 0
    gaps: np.ndarray | None = None
    slices: list = field(default_factory=list)  # of a stack, those training takes
    message: str = ""
    planes: list = field(default_factory=list)  # of Counted


def summary_job(labels, region, seen: Summary | None = None) -> Summary | None:
    """Worker body: counts and gaps of the labels inside the annotated region (the
    layers' data, ``region`` None for none), read as training reads them
    (``core.instances.annotated_labels``: e.g. cells all painted with one label are told
    apart where they do not touch).

    A stack is read slice by slice, and a slice equal to the one ``seen`` counted is
    not counted again: a stroke recounts its slice, not the stack. None when nothing
    changed: napari refreshes a layer on every step through a stack, which starts a
    run. The data are read here, not copied on the GUI thread first: an edit made
    while they are read starts another run.
    """
    if not _warm.wait():
        return None
    stack = labels.ndim == 3
    count = labels.shape[0] if stack else 1
    before = seen.planes if seen is not None and len(seen.planes) == count else [None] * count
    planes, changed = [], False
    for old, (live, live_region) in zip(before, planes_of(labels, region), strict=True):
        if read_before(old, live, live_region):
            planes.append(old)
            continue
        changed = True
        try:
            # Copies: the layer may be painted meanwhile.
            planes.append(
                _count(np.array(live), None if region is None else np.array(live_region))
            )
        except ValueError as err:  # e.g. negative labels
            return Summary(message=str(err))
    if seen is not None and not changed:
        return None
    return Summary(
        cells=sum(p.cells for p in planes),
        pairs=sum(p.pairs for p in planes),
        gaps=np.concatenate([p.gaps for p in planes]) if stack else planes[0].gaps,
        slices=[z for z, p in enumerate(planes) if p.annotated] if stack else [],
        planes=planes,
    )


def _count(labels: np.ndarray, region: np.ndarray | None) -> Counted:
    instances, annotated = annotated_labels(labels, None if region is None else region != 0)
    trusted = np.where(annotated, instances, 0)
    gaps = (trusted != 0) & (separation_borders(trusted) == 0)
    counts = (cell_count(trusted), touching_pairs(trusted), gaps.astype(np.uint8))
    return Counted(labels, region, *counts, annotated=bool(annotated.any()))
