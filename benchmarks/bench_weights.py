"""Speed and exactness of the Eq. 2 weight map against the textbook, in one run.

    python benchmarks/bench_weights.py [--skip-textbook] [--threads N]

Prints, for 1024x1024 with ~400 touching disks and 4096x4096 with ~6,400
(``touching_disks`` of ../shared/reference/weights.py): the time of
``border_weight`` as a ratio to the textbook ``naive_border_term`` (1024 only;
it takes minutes at 4096) and to one ``scipy.ndimage.distance_transform_edt`` of
the same image, with the largest difference to the textbook; how the time grows
with the number of instances; and the time of ``WeightMap.update`` after each of
a few brush strokes (disks of radius 10 painted, erased or relabelled) at
4096x4096, checked against a full recomputation.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
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
    print(
        "## time against the number of instances, 1024x1024, with the pixels within "
        "reach of two instances (where the border term is not 0) that the time follows, "
        "and as a ratio to one scipy EDT of the same labels"
    )
    series = [
        touching_disks((1024, 1024), n, r=(3, 14), seed=1) for n in (100, 400, 1600, 6400, 25600)
    ]
    series.append(_lattice(1024))
    for labels in series:
        t = best(lambda labels=labels: border_weight(labels))
        edt = best(lambda labels=labels: ndi.distance_transform_edt(labels == 0), 3)
        near = np.count_nonzero(border_weight(labels)) / labels.size
        print(
            f"  {len(np.unique(labels)) - 1:5d} instances: {t * 1000:.0f} ms = "
            f"{t / edt:.2f} x EDT ({edt * 1000:.0f} ms), {near:.0%} within reach"
        )


def _lattice(size: int, pitch: int = 8, side: int = 3) -> np.ndarray:
    """A dense case: ``side``-pixel squares, each its own instance, every ``pitch``
    pixels, so that every background pixel is within reach of several instances."""
    cells = np.arange(1, (size // pitch) ** 2 + 1).reshape(size // pitch, size // pitch)
    square = np.zeros((pitch, pitch), bool)
    square[:side, :side] = True
    return (np.kron(cells, np.ones((pitch, pitch), int)) * np.tile(square, cells.shape))[
        :size, :size
    ].astype(np.int32)


def brush(size: int = 4096, strokes: int = 5) -> None:
    print(
        f"## brush strokes (disks of radius 10) at {size}x{size}, WeightMap.update: "
        f"median (min-max) of {strokes} strokes in a row, then checked against weight_map"
    )
    labels = touching_disks((size, size), 6400, seed=2)
    yy, xx = np.ogrid[:size, :size]
    rng = np.random.default_rng(0)
    centres = rng.integers(size // 4, 3 * size // 4, (strokes, 2))
    for name, balance in (
        ("relabel", True),
        ("paint", True),
        ("erase", True),
        ("paint", False),
        ("erase", False),
    ):
        live = WeightMap(labels, class_balance=balance)
        live.update(labels, (slice(0, 1), slice(0, 1)))  # compiles the kernels for windows
        edited, times, whole = labels, [], 0
        for cy, cx in centres:
            edited = edited.copy()
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= 10**2
            if name == "relabel":
                target = rng.choice(np.unique(edited[cy - 30 : cy + 30, cx - 30 : cx + 30])[1:])
                edited[edited == target] = edited.max() + 1
                rows, cols = np.nonzero(edited != live.labels)
            else:
                edited[disk] = edited.max() + 1 if name == "paint" else 0
                rows, cols = np.nonzero(disk)
            region = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
            start = time.perf_counter()
            window = live.update(edited, region)
            times.append(time.perf_counter() - start)
            whole += window == (slice(0, size), slice(0, size))
        exact = np.array_equal(live.weights, weight_map(edited, class_balance=balance))
        ms = np.array(times) * 1000
        print(
            f"  {name:8s} class_balance={balance!s:5s}: {np.median(ms):.1f} ms "
            f"({ms.min():.1f}-{ms.max():.1f}), exact {exact}, "
            f"whole map composed again (class weights moved) in {whole} of {strokes}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-textbook", action="store_true")
    parser.add_argument(
        "--threads", type=int, help="numba threads (default: numba's, one per core)"
    )
    args = parser.parse_args()
    if args.threads:
        numba.set_num_threads(args.threads)
    print(f"numba threads: {numba.get_num_threads()}")
    full_maps(not args.skip_textbook)
    growth()
    brush()


if __name__ == "__main__":
    main()
