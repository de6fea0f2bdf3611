"""Speed and exactness of the Eq. 2 weight map against the textbook, in one run.

    python benchmarks/bench_weights.py [--skip-textbook]

Prints, for 1024x1024 with ~400 touching disks and 4096x4096 with ~6,400
(``touching_disks`` of ../shared/reference/weights.py): the time of
``border_weight`` as a ratio to the textbook ``naive_border_term`` (1024 only;
it takes minutes at 4096) and to one ``scipy.ndimage.distance_transform_edt`` of
the same image, with the largest difference to the textbook; how the time grows
with the number of instances; and the time of ``WeightMap.update`` after one
brush stroke (a disk of radius 10 painted, erased or relabelled) at 4096x4096,
checked against a full recomputation.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.weights import WeightMap, border_weight, weight_map

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "reference"))
from weights import naive_border_term, touching_disks


def best(fn, repeat=5):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def full_maps(textbook: bool) -> None:
    print("## full map (best of 5; textbook once)")
    for size, n in ((1024, 400), (4096, 6400)):
        labels = touching_disks((size, size), n, seed=0)
        edt = best(lambda labels=labels: ndi.distance_transform_edt(labels == 0), 3)
        ours = best(lambda labels=labels: border_weight(labels))
        full = best(lambda labels=labels: weight_map(labels))
        line = (
            f"{size}x{size}, {labels.max()} instances: border_weight {ours * 1000:.0f} ms "
            f"= {ours / edt:.2f} x one scipy EDT ({edt * 1000:.0f} ms); weight_map "
            f"(gaps + classes) {full * 1000:.0f} ms = {full / edt:.2f} x EDT"
        )
        if textbook and size == 1024:
            start = time.perf_counter()
            reference = naive_border_term(labels)
            slow = time.perf_counter() - start
            diff = np.abs(border_weight(labels) - reference).max()
            line += f"; textbook {slow:.1f} s = {slow / ours:.0f}x ours, max difference {diff:.1e}"
        print(line)


def growth() -> None:
    print("## time against the number of instances, 1024x1024")
    for n in (100, 400, 1600, 6400):
        labels = touching_disks((1024, 1024), n, r=(3, 14), seed=1)
        t = best(lambda labels=labels: border_weight(labels))
        print(f"  {labels.max():5d} instances: {t * 1000:.0f} ms")


def brush(size: int = 4096) -> None:
    print(f"## one brush stroke (disk of radius 10) at {size}x{size}, WeightMap.update")
    labels = touching_disks((size, size), 6400, seed=2)
    yy, xx = np.ogrid[:size, :size]
    cy, cx = size // 2, size // 2
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= 10**2
    region = (slice(cy - 10, cy + 11), slice(cx - 10, cx + 11))
    target = labels[np.nonzero(disk)][0] or 1
    for name, value, balance in (
        ("relabel", None, True),
        ("paint", labels.max() + 1, True),
        ("erase", 0, True),
        ("paint", labels.max() + 1, False),
        ("erase", 0, False),
    ):
        live = WeightMap(labels, class_balance=balance)
        live.update(labels, region)  # warm-up: compiles the kernels for cropped windows
        edited = labels.copy()
        if value is None:
            edited[edited == target] = labels.max() + 7
            rows, cols = np.nonzero(edited != labels)
            region_used = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        else:
            edited[disk] = value
            region_used = region
        start = time.perf_counter()
        window = live.update(edited, region_used)
        t = time.perf_counter() - start
        whole = window == (slice(0, size), slice(0, size))
        exact = np.array_equal(live.weights, weight_map(edited, class_balance=balance))
        print(
            f"  {name:8s} class_balance={balance!s:5s}: {t * 1000:.1f} ms, exact {exact}, "
            f"{'whole map refreshed (class weights moved)' if whole else 'window only'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-textbook", action="store_true")
    args = parser.parse_args()
    full_maps(not args.skip_textbook)
    growth()
    brush()


if __name__ == "__main__":
    main()
