"""What the check for images unlike a model's training images costs each prediction:
``core.data.intensity_gap`` on planes and stacks in memory and on a lazy zarr plane.

    python benchmarks/bench_intensity_gap.py
"""

import tempfile
import time

import numpy as np
import zarr

from napari_unet.core.data import intensity_gap
from napari_unet.core.model import UNet


def best_ms(image, is_stack: bool, model) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        intensity_gap(model, image, is_stack)
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def main() -> None:
    model = UNet(width=4, depth=2, input_mean=(0.5,), input_std=(0.2,))
    rng = np.random.default_rng(0)
    cases = [
        ("numpy 1024x1024 float32, all read", rng.random((1024, 1024), dtype=np.float32), False),
        ("numpy 4096x4096 float32", rng.random((4096, 4096), dtype=np.float32), False),
        ("numpy 20x2048x2048 uint16", rng.integers(0, 65535, (20, 2048, 2048), np.uint16), True),
    ]
    lazy = zarr.open(
        tempfile.mkdtemp() + "/plane.zarr",
        mode="w",
        shape=(16384, 16384),
        chunks=(1024, 1024),
        dtype="f4",
    )
    lazy[:] = 0.5
    cases.append(("zarr 16384x16384, 1024x1024 chunks", lazy, False))
    print("## intensity_gap, best of 5")
    for name, image, is_stack in cases:
        print(f"  {name}: {best_ms(image, is_stack, model):.1f} ms")


if __name__ == "__main__":
    main()
