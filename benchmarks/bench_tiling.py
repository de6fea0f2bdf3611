"""Seam error, time and memory of overlap-tile prediction, against MONAI in the same run.

    python benchmarks/bench_tiling.py [--size 1024] [--width 16] [--big 8192]

1. A same-padded U-Net (depth 4): one whole-image pass, MONAI's
   ``sliding_window_inference`` (256 px tiles, 0.25 constant and 0.5 gaussian
   overlap) and our ``predict_tiled``. Seam error is the largest difference of
   the class probabilities from a whole-image pass: for MONAI the pass over the
   zero-padded image (what it approximates), for us the pass over the
   mirror-padded image (what we claim to equal). Times are ratios to the
   whole-image pass of the unpadded image.
2. The paper's valid U-Net: the same for our tiles against the whole padded image.
3. Peak memory added by predicting a big image (resident set above the loaded
   model and input), in fresh processes, for two image sizes and one tile size:
   zarr to zarr (bounded by the tile) and numpy to numpy (plus the result).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from napari_unet.core.model import UNet
from napari_unet.core.predict import predict_tiled


def timed(fn, repeat=2):
    fn()  # warm-up: first calls pay for allocation and kernel selection
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def whole_padded(model: UNet, image: np.ndarray) -> np.ndarray:
    """Probabilities of one pass over the whole image, mirror-padded as our tiles see it."""
    n = image.shape[0]
    pad = model.halo
    total = model.input_size(n) if model.cfg.padding == "valid" else -(-(n + 2 * pad) // 16) * 16
    x = np.pad(image, (pad, total - n - pad), mode="reflect")
    with torch.inference_mode():
        p = torch.softmax(model.eval()(torch.from_numpy(x)[None, None]), 1)[0].numpy()
    off = 0 if model.cfg.padding == "valid" else pad
    return p[:, off : off + n, off : off + n]


def default_init(model: UNet) -> UNet:
    """PyTorch's default initialisation, as the anchor in ../shared/reference uses:
    He init without normalisation gives logits in the tens on random input, where
    every seam error looks like 1.0 after the softmax."""
    torch.manual_seed(0)
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model.eval()


def same_network(size: int, width: int) -> None:
    from monai.inferers import sliding_window_inference

    model = default_init(UNet(width=width, padding="same", dropout=0.0))
    image = np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)
    x = torch.from_numpy(image)[None, None]
    print(
        f"## same-padded U-Net, depth 4, width {width}, {size}x{size}, "
        f"{torch.get_num_threads()} threads"
    )
    for layout in ("NCHW", "channels_last"):
        net = model.to(memory_format=torch.channels_last) if layout != "NCHW" else model
        with torch.inference_mode():
            t_whole, logits = timed(lambda net=net: net(x))
            whole = torch.softmax(logits, 1)
            print(f"whole image ({layout} weights): {t_whole:.2f} s")
            for overlap, mode in [(0.25, "constant"), (0.5, "gaussian")]:
                t, tiled = timed(
                    lambda o=overlap, m=mode, net=net: sliding_window_inference(
                        x, (256, 256), 4, net, overlap=o, mode=m
                    )
                )
                seam = (torch.softmax(tiled, 1) - whole).abs().max().item()
                logit = (tiled - logits).abs().max().item()
                print(
                    f"  MONAI overlap {overlap} {mode:8s}: {t:.2f} s = {t / t_whole:.2f}x whole, "
                    f"seam error {seam:.2g} (logits {logit:.2g})"
                )
        if layout == "NCHW":
            t_nchw = t_whole
    reference = whole_padded(model, image)  # channels-last weights, as predict_tiled uses
    for tile in (None, 512, 256):
        t, ours = timed(lambda tile=tile: predict_tiled(model, image, tile_size=tile))
        seam = np.abs(ours - reference).max()
        print(
            f"  ours tile {tile or 'auto':>4}: {t:.2f} s = {t / t_nchw:.2f}x whole (NCHW), "
            f"{t / t_whole:.2f}x whole (channels_last), seam error {seam:.2g}"
        )


def valid_network(size: int, width: int) -> None:
    model = default_init(UNet(width=width, padding="valid", dropout=0.0))
    model.to(memory_format=torch.channels_last)  # as predict_tiled runs it
    image = np.random.default_rng(1).normal(size=(size, size)).astype(np.float32)
    print(f"## the paper's valid U-Net, depth 4, width {width}, {size}x{size}")
    t_whole, reference = timed(lambda: whole_padded(model, image))
    print(f"whole mirror-padded image: {t_whole:.2f} s")
    for tile in (None, 388):
        t, ours = timed(lambda tile=tile: predict_tiled(model, image, tile_size=tile))
        print(
            f"  ours tile {tile or 'auto':>4}: {t:.2f} s = {t / t_whole:.2f}x whole, "
            f"seam error {np.abs(ours - reference).max():.2g}"
        )


MAKE_INPUT = """
import sys, numpy as np, zarr
path, size = sys.argv[1], int(sys.argv[2])
image = zarr.open(path, mode="w", shape=(size, size), chunks=(1024, 1024), dtype="float32")
for y in range(0, size, 1024):
    image[y : y + 1024] = np.random.default_rng(y).normal(size=(min(1024, size - y), size))
"""

PREDICT = """
import json, resource, sys, threading, time
import numpy as np, torch, zarr
from napari_unet.core.model import UNet
from napari_unet.core.predict import predict_tiled
path, width, tile, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = UNet(width=width, padding="valid", dropout=0.0).eval()
image = zarr.open(path, mode="r")
out = None
if mode == "numpy":
    image = image[:]
else:
    out = zarr.open(path + ".out", mode="w", shape=(2, *image.shape), chunks=(1, 1024, 1024),
                    dtype="float32")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
peak = base = rss()
done = threading.Event()
def watch():
    global peak
    while not done.wait(0.002):
        peak = max(peak, rss())
watcher = threading.Thread(target=watch)
watcher.start()
start = time.perf_counter()
predict_tiled(model, image, tile_size=tile, out=out)
seconds = time.perf_counter() - start
done.set()
watcher.join()
print(json.dumps({"peak_mib": (peak - base) / 2**20, "seconds": seconds}))
"""


def memory(big: int, width: int, tile: int = 1012) -> None:
    print(
        f"## peak resident memory added by predict_tiled, valid U-Net width {width}, "
        f"tile {tile} (input {tile + 184})"
    )
    with tempfile.TemporaryDirectory() as folder:
        for size in (big // 2, big):
            path = f"{folder}/{size}.zarr"
            subprocess.run([sys.executable, "-c", MAKE_INPUT, path, str(size)], check=True)
            image_mib = size * size * 4 / 2**20
            for mode in ("zarr", "numpy"):
                result = subprocess.run(
                    [sys.executable, "-c", PREDICT, path, str(width), str(tile), mode],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                figures = json.loads(result.stdout.strip().splitlines()[-1])
                print(
                    f"  {size}x{size} {mode:5s} -> {mode:5s} (image {image_mib:.0f} MiB, "
                    f"result {2 * image_mib:.0f} MiB): +{figures['peak_mib']:.0f} MiB, "
                    f"{figures['seconds']:.0f} s"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--big", type=int, default=8192)
    args = parser.parse_args()
    same_network(args.size, args.width)
    valid_network(args.size, args.width)
    memory(args.big, args.width)


if __name__ == "__main__":
    main()
