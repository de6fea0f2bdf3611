"""Speed and statistics of the elastic deformation, against the textbook version.

    python benchmarks/bench_augment.py [--repeat 5] [--draws 1000]

1. CPU time of our ``augment`` with the elastic deformation alone
   (``AugmentSettings.elastic_only()``: no flips, rotations or intensity changes) of
   one image + labels + loss weights, against ``elastic`` of
   ``../shared/reference/elastic.py`` (scipy), which deforms image + labels only: ours
   does the weights on top. 512x512 and 1024x1024, float32 image, int32 labels; best
   of ``--repeat`` runs after a warm-up, torch threads as set by default. Also ours with
   one torch thread (scipy uses one) and per image for a batch of 8.
2. The standard deviation of the displacement at the coarse grid points over
   ``--draws`` fields (the paper's 10 px), on 513x513 fields, where all 3x3 grid
   points fall on pixels.
3. With CUDA, our times on the GPU as well.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_unet.core.augment import augment, elastic_field
from napari_unet.core.config import AugmentSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "reference"))
from elastic import elastic  # the textbook anchor, not a package

SIZES = (512, 1024)


def best_time(fn, repeat: int, sync=None) -> float:
    fn()  # warm-up: first calls pay for allocation and kernel selection
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


def sample(size: int, batch: int, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((batch, 1, size, size), dtype=np.float32))
    labels = torch.from_numpy(rng.integers(0, 50, (batch, size, size), dtype=np.int32))
    weights = torch.from_numpy(rng.random((batch, size, size), dtype=np.float32))
    return image.to(device), labels.to(device), weights.to(device)


def ours(size: int, batch: int, repeat: int, device: str = "cpu") -> float:
    """Seconds per call of the elastic deformation of image + labels + weights."""
    image, labels, weights = sample(size, batch, device)
    generator = torch.Generator().manual_seed(0)
    settings = AugmentSettings.elastic_only()
    sync = torch.cuda.synchronize if device == "cuda" else None
    return best_time(
        lambda: augment(image, labels, weights, generator=generator, settings=settings),
        repeat,
        sync,
    )


def reference(size: int, repeat: int) -> float:
    """Seconds per call of the textbook scipy deformation of image + labels."""
    image, labels, _ = (t[0].squeeze(0).numpy() for t in sample(size, 1))
    draws = iter(range(10**6))
    return best_time(lambda: elastic(image, labels, rng=next(draws)), repeat)


def grid_point_std(draws: int, chunk: int = 100) -> float:
    """Standard deviation of the displacement components at the 3x3 grid points."""
    generator = torch.Generator().manual_seed(0)
    points = [0, 256, 512]
    values = []
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        field = elastic_field(n, 513, 513, generator=generator, sigma=10.0, grid=3)
        values.append(field[:, :, points][:, :, :, points].flatten())
    return float(torch.cat(values).std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()

    print(f"## elastic deformation on the CPU, {torch.get_num_threads()} torch threads")
    print("(ours: image + labels + weights; reference: image + labels only)")
    threads = torch.get_num_threads()
    for size in SIZES:
        t_ref = reference(size, args.repeat)
        t_ours = ours(size, 1, args.repeat)
        t_batch = ours(size, 8, args.repeat) / 8
        torch.set_num_threads(1)
        t_single = ours(size, 1, args.repeat)
        torch.set_num_threads(threads)
        print(
            f"{size}x{size}: reference {t_ref * 1000:.0f} ms, ours {t_ours * 1000:.1f} ms "
            f"= {t_ref / t_ours:.1f}x faster; in a batch of 8 {t_batch * 1000:.1f} ms per "
            f"image = {t_ref / t_batch:.1f}x; 1 thread {t_single * 1000:.1f} ms "
            f"= {t_ref / t_single:.1f}x"
        )

    std = grid_point_std(args.draws)
    print(
        f"## displacement at the 3x3 grid points, {args.draws} draws of 513x513, sigma 10: "
        f"std {std:.2f} px"
    )

    if not torch.cuda.is_available():
        print("## CUDA: not available, skipped")
        return
    print(f"## elastic deformation on {torch.cuda.get_device_name()}")
    for size in SIZES:
        t_one = ours(size, 1, args.repeat, "cuda")
        t_batch = ours(size, 8, args.repeat, "cuda") / 8
        print(
            f"{size}x{size}: ours {t_one * 1000:.2f} ms; in a batch of 8: "
            f"{t_batch * 1000:.2f} ms per image"
        )


if __name__ == "__main__":
    main()
