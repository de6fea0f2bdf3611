"""Speed of the separation gaps and of what uses them, on touching disks
(``touching_disks`` of ../shared/reference/weights.py).

    python benchmarks/bench_separation.py

Prints, best of 5 (the Annotate count best of 3), at 1024x1024 with ~400 disks and
4096x4096 with ~6,400: ``separation_borders``, ``weight_map``, and the Annotate
dock's count of one plane (``summary_job``: cells, touching pairs and gaps).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from napari_unet._widgets._summary import summary_job
from napari_unet.core.weights import separation_borders, weight_map

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "reference"))
from weights import touching_disks


def best_ms(fn, repeat: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


for size, n in ((1024, 400), (4096, 6400)):
    labels = touching_disks((size, size), n, seed=0).astype(np.int32)
    gaps = best_ms(lambda labels=labels: separation_borders(labels))
    weights = best_ms(lambda labels=labels: weight_map(labels))
    count = best_ms(lambda labels=labels: summary_job(labels, None), 3)
    print(
        f"{size}x{size}: separation_borders {gaps:.0f} ms, weight_map {weights:.0f} ms, "
        f"Annotate count {count:.0f} ms"
    )
