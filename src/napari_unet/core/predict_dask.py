"""Overlap-tile prediction of dask arrays: a lazy result, one task per output block.

Each task reads only the input window its tiles need (mirrored at the image
border by index, as in :mod:`.predict`) and rebuilds the network from a plain
payload of numpy weights, so the graph runs unchanged on a ``dask.distributed``
cluster.
"""

from __future__ import annotations

import uuid

import dask
import dask.array as da
import numpy as np
import torch

from .device import default_device
from .model import UNet
from .predict import (
    PlaneView,
    TileGeometry,
    TileRunner,
    choose_tile,
    predict_region,
    reflect_index,
)


def _window(geom: TileGeometry, axis: int, region: slice, length: int) -> tuple[int, int]:
    last = region.start + (region.stop - 1 - region.start) // geom.stride[axis] * geom.stride[axis]
    index = reflect_index(
        np.arange(region.start - geom.pad, last - geom.pad + geom.in_size[axis]), length
    )
    return int(index.min()), int(index.max()) + 1


def _predict_block(
    payload, window: np.ndarray, origin, plane_shape, region, geom, tta, device, add_channel
):
    config, state = payload
    dev = default_device(device)
    model = UNet.from_state(config, {k: torch.from_numpy(v) for k, v in state.items()})
    runner = TileRunner(model.to(dev).eval(), dev, tta)
    h, w = region[0].stop - region[0].start, region[1].stop - region[1].start
    out = np.empty((model.n_classes, h, w), np.float32)
    channels = () if add_channel else (slice(None),)
    source = PlaneView(window, channels, add_channel=add_channel, origin=origin)
    target = PlaneView(out, origin=(region[0].start, region[1].start))
    for _ in predict_region(runner, geom, source, plane_shape, target, region):
        pass
    return out


def predict_dask(
    model: UNet, image: da.Array, spatial, is_stack: bool, tile_size, tta: bool, device
) -> da.Array:
    """The lazy counterpart of ``predict_tiled`` for a dask ``image`` (already checked)."""
    # The tasks resolve the device where they run: a client without a GPU may
    # build the graph for workers with one.
    device = str(device if device is not None else next(model.parameters()).device)
    plane_shape = tuple(spatial[-2:])
    try:
        sizing = default_device(device) if tile_size is None else torch.device("cpu")
    except ValueError:
        sizing = torch.device("cpu")  # the CPU's tile then: exact, maybe slower there
    geom = choose_tile(model, plane_shape, sizing, tile_size)
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    payload = dask.delayed(
        (model.config, state), name=f"napari-unet-model-{uuid.uuid4().hex}", traverse=False
    )
    multi = model.in_channels > 1
    blocks = [
        max(1, round(c / s)) * s for c, s in zip(image.chunksize[-2:], geom.stride, strict=True)
    ]
    planes = []
    for z in range(spatial[0]) if is_stack else [None]:
        zs = () if z is None else (z,)
        rows = []
        for y0 in range(0, plane_shape[0], blocks[0]):
            row = []
            for x0 in range(0, plane_shape[1], blocks[1]):
                region = (
                    slice(y0, min(y0 + blocks[0], plane_shape[0])),
                    slice(x0, min(x0 + blocks[1], plane_shape[1])),
                )
                (r0, r1), (c0, c1) = (_window(geom, a, region[a], plane_shape[a]) for a in (0, 1))
                window = image[
                    (*((slice(None),) if multi else ()), *zs, slice(r0, r1), slice(c0, c1))
                ]
                task = dask.delayed(_predict_block, pure=True)(
                    payload, window, (r0, c0), plane_shape, region, geom, tta, device, not multi
                )
                shape = (model.n_classes, region[0].stop - y0, region[1].stop - x0)
                row.append(da.from_delayed(task, shape, dtype=np.float32))
            rows.append(row)
        planes.append(da.block(rows))
    return da.stack(planes, axis=1) if is_stack else planes[0]
