"""Training steps per second of the paper's U-Net, with and without mixed precision.

    python benchmarks/bench_train_speed.py [--device cuda] [--tile 388] [--batch 1]

Trains on a generated image for ``--steps`` steps after ``--warm-up`` steps and
prints steps/s and the peak memory of the device. Mixed precision (bfloat16
autocast) is measured only on CUDA devices that support it.
"""

from __future__ import annotations

import argparse
import time

import torch

from napari_unet.core.data import make_pairs
from napari_unet.core.device import default_device
from napari_unet.core.model import UNet
from napari_unet.core.synthetic import touching_cells
from napari_unet.core.train import Progress, TrainConfig, Trainer


def steps_per_second(device, tile: int, batch: int, width: int, amp: bool, steps: int, warm: int):
    image, labels = touching_cells((1024, 1024), n_cells=300, seed=0)
    torch.manual_seed(0)
    config = TrainConfig(
        steps=warm + steps,
        tile=tile,
        batch_size=batch,
        device=str(device),
        amp=amp,
        validate_every=0,
        preview_every=0,
    )
    trainer = Trainer(UNet(width=width), make_pairs([image], [labels]), config)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = None
    for event in trainer.run():
        if isinstance(event, Progress) and event.step == warm:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rate = steps / (time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    )
    return rate, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tile", type=int, default=388, help="output pixels (paper: 388)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--width", type=int, default=64, help="paper: 64")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warm-up", type=int, default=5)
    args = parser.parse_args()
    device = default_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    setting = f"U-Net width {args.width}, tile {args.tile}, batch {args.batch}"
    print(f"## training speed on {name}: {setting}")
    modes = [False]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        modes.append(True)
    for amp in modes:
        rate, peak = steps_per_second(
            device, args.tile, args.batch, args.width, amp, args.steps, args.warm_up
        )
        label = "bfloat16 autocast" if amp else "float32"
        print(f"{label}: {rate:.2f} steps/s, peak memory {peak:.2f} GiB")


if __name__ == "__main__":
    main()
