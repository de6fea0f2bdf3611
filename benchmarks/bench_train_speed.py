"""Training steps per second of the paper's U-Net, with and without mixed precision.

    python benchmarks/bench_train_speed.py [--device cuda] [--tile 388] [--batch 1]
    python benchmarks/bench_train_speed.py --tile 256 --batch 4 --width 16 \
        --padding same --norm batch          # the CPU defaults

Trains on a generated image for ``--steps`` steps after ``--warm-up`` steps and
prints steps/s and the peak memory of the device. Mixed precision (bfloat16
autocast) is measured where the device computes bfloat16 natively
(``device.computes_bfloat16``: CUDA, CPUs with AVX512-BF16 or AMX).
"""

from __future__ import annotations

import argparse
import time

import torch

from napari_unet.core.config import TrainConfig
from napari_unet.core.data import make_pairs
from napari_unet.core.device import computes_bfloat16, default_device
from napari_unet.core.events import Progress
from napari_unet.core.model import UNet
from napari_unet.core.synthetic import touching_cells
from napari_unet.core.train import Trainer


def steps_per_second(
    device, model_args: dict, tile: int, batch: int, amp: bool, steps: int, warm: int
):
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
    trainer = Trainer(UNet(**model_args), make_pairs([image], [labels]), config)
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
    parser.add_argument("--padding", choices=["valid", "same"], default="valid")
    parser.add_argument("--norm", choices=["none", "batch"], default="none")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warm-up", type=int, default=5)
    args = parser.parse_args()
    device = default_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    model_args = {"width": args.width, "padding": args.padding, "norm": args.norm}
    setting = f"U-Net {model_args}, tile {args.tile}, batch {args.batch}"
    print(f"## training speed on {name}, {torch.get_num_threads()} threads: {setting}")
    for amp in [False, True] if computes_bfloat16(device) else [False]:
        rate, peak = steps_per_second(
            device, model_args, args.tile, args.batch, amp, args.steps, args.warm_up
        )
        label = "bfloat16 autocast" if amp else "float32"
        memory = f", peak memory {peak:.2f} GiB" if device.type == "cuda" else ""
        print(f"{label}: {rate:.2f} steps/s{memory}")


if __name__ == "__main__":
    main()
