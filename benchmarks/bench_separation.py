"""Speed of the separation gaps and of what uses them, on touching disks
(``touching_disks`` of ../shared/reference/weights.py).

    python benchmarks/bench_separation.py

Prints, best of 5 (the Annotate count best of 3), at 1024x1024 with ~400 disks and
4096x4096 with ~6,400: ``separation_borders``, ``weight_map``, and the Annotate
dock's count of one plane (``summary_job``: cells, touching pairs and gaps).
"""

from __future__ import annotations

import numpy as np

from bench_weights import best, touching_disks  # the latter from ../shared/reference
from napari_unet._widgets._summary import summary_job
from napari_unet.core.weights import separation_borders, weight_map

for size, n in ((1024, 400), (4096, 6400)):
    labels = touching_disks((size, size), n, seed=0).astype(np.int32)
    gaps = best(lambda labels=labels: separation_borders(labels)) * 1000
    weights = best(lambda labels=labels: weight_map(labels)) * 1000
    count = best(lambda labels=labels: summary_job(labels, None), 3) * 1000
    print(
        f"{size}x{size}: separation_borders {gaps:.0f} ms, weight_map {weights:.0f} ms, "
        f"Annotate count {count:.0f} ms"
    )
