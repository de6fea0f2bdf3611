"""The Annotate dock's worker: what training will see of a pair of layers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.data import annotated_labels
from ..core.instances import cell_count, touching_pairs
from ..core.weights import separation_borders
from ._common import same_data


@dataclass
class Summary:
    """What training sees of a pair: counts and the gaps it opens between cells,
    and the labels and region they were read from."""

    cells: int = 0
    pairs: int = 0
    gaps: np.ndarray | None = None  # uint8, 1 where separation_borders removes a pixel
    slices: int = 0  # of a stack, those training takes (with annotated pixels)
    message: str = ""
    labels: np.ndarray | None = None
    region: np.ndarray | None = None


def summary_job(labels, region, seen: Summary | None = None) -> Summary | None:
    """Worker body: counts and gaps of the labels inside the annotated region (the
    layers' data, ``region`` None for none), read as training reads them
    (``core.data.annotated_labels``: e.g. cells all painted with one label are told
    apart where they do not touch).

    None when the data equal those ``seen`` was read from: napari refreshes a layer
    on every step through a stack, which starts a run, and recounting a large stack
    costs seconds. The data are read here, not copied on the GUI thread first: an
    edit made while they are read starts another run.
    """
    if seen is not None and same_data(seen.labels, labels) and same_data(seen.region, region):
        return None
    labels = np.array(labels)  # a copy: the layer may be painted meanwhile
    region = None if region is None else np.array(region)
    instances, annotated = annotated_labels(labels, None if region is None else region != 0)
    trusted = np.where(annotated, instances, 0)
    try:
        gaps = (trusted != 0) & (separation_borders(trusted) == 0)
    except ValueError as err:  # e.g. negative labels
        return Summary(message=str(err))
    slices = int(np.count_nonzero(annotated.any(axis=(-2, -1)))) if labels.ndim == 3 else 0
    counts = (cell_count(trusted), touching_pairs(trusted), gaps.astype(np.uint8), slices)
    return Summary(*counts, labels=labels, region=region)
