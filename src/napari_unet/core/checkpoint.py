"""Model files: one ``.safetensors`` file holding the weights and, in its header,
a JSON description (architecture, input normalisation, training settings).

Loading never unpickles, so opening a model file someone sent you cannot run
code. Files are written to a temporary name and renamed, so an interrupted save
never leaves a half-written model behind.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .. import __version__
from .device import default_device
from .model import UNet

FORMAT = 1
_KEY = "napari_unet"
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")
_OPTIMIZER = "optimizer."


def model_path(path: str | os.PathLike) -> Path:
    """``path`` with ``.safetensors`` added if it does not end so (``run.06`` becomes
    ``run.06.safetensors``, never ``run.safetensors``)."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")


def _saved_file(path: str | os.PathLike) -> Path:
    """``path``, or where :func:`save` wrote a model it was given that name for."""
    path = Path(path)
    return model_path(path) if not path.is_file() and model_path(path).is_file() else path


def save(
    path: str | os.PathLike,
    model: UNet,
    config: dict[str, Any] | None = None,
    optimizer: dict | None = None,
) -> Path:
    """Write ``model``, a JSON-serialisable ``config`` (e.g. training settings) and,
    to resume training, an optimizer's ``state_dict()``.

    Returns the path written. The suffix ``.safetensors`` is added if missing.
    """
    path = model_path(path)
    header = {
        "format": FORMAT,
        "version": __version__,
        "model": model.config,
        "config": config or {},
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if optimizer is not None:
        header["optimizer"] = {"param_groups": optimizer["param_groups"], "scalars": {}}
        for index, state in optimizer["state"].items():
            for name, value in state.items():
                key = f"{_OPTIMIZER}{index}.{name}"
                if torch.is_tensor(value):
                    tensors[key] = value.detach().cpu().contiguous()
                else:
                    header["optimizer"]["scalars"][key] = value
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.unlink(missing_ok=True)  # left by a save that was killed
    try:
        # safetensors writes files only their owner can read: give the model the
        # mode of the file it replaces, or that of any new file here (the umask's),
        # so that colleagues on a shared machine can read it.
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        mode = os.stat(path if path.exists() else tmp).st_mode & 0o777
        save_file(tensors, str(tmp), metadata={_KEY: json.dumps(header)})
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[UNet, dict]:
    """Read a model file written by :func:`save`.

    Returns
    -------
    model : UNet
        The network, in eval mode, on ``device``.
    config : dict
        The ``config`` given to :func:`save`.

    Raises
    ------
    ValueError
        The file is a pickle, truncated, not a napari-unet model, or from a newer version.
    """
    path = _saved_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    with open(path, "rb") as f:
        head = f.read(9)
    # A safetensors file opens with its header's length (8 bytes, little-endian), whose
    # first byte is the pickle opcode 0x80 for one header length in 256, then "{".
    header_length = int.from_bytes(head[:8], "little")
    safetensors = head[8:] == b"{" and header_length <= path.stat().st_size - 8
    if not safetensors and head.startswith(_PICKLE_MAGIC):
        raise ValueError(
            f"{path.name} is a pickle or a torch.save file. napari-unet does not open those, "
            "because unpickling can run arbitrary code; open the model in the program that "
            "made it and save it with napari_unet.core.checkpoint.save."
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            # float32 whatever the file holds (e.g. float16 from elsewhere): the
            # network computes in float32. The optimizer state is not read.
            weights = {
                k: _float32(f.get_tensor(k)) for k in f.keys() if not k.startswith(_OPTIMIZER)
            }
    except Exception as err:
        raise ValueError(
            f"{path.name} is not a readable model file (truncated or corrupted?): {err}"
        ) from err
    if _KEY not in meta:
        raise ValueError(
            f"{path.name} is a safetensors file but not a napari-unet model "
            "(its header has no napari-unet description)"
        )
    header = _header(path, meta[_KEY])
    try:
        model = UNet.from_state(header["model"], weights)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(
            f"{path.name}: the weights do not match the described network: {err}"
        ) from err
    return model.to(default_device(device)).eval(), header.get("config", {})


def _header(path: Path, text: str) -> dict:
    """The napari-unet description of a model file, checked enough to be read."""
    try:
        header = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path.name}: its napari-unet description is damaged: {err}") from err
    if (
        not isinstance(header, dict)
        or not isinstance(header.get("format", 0), int)
        or not isinstance(header.get("model"), dict)
        or not isinstance(header.get("config", {}), dict)
    ):
        raise ValueError(f"{path.name}: its napari-unet description is damaged")
    if header.get("format", 0) > FORMAT:
        raise ValueError(
            f"{path.name} was saved by napari-unet {header.get('version', '?')} in file format "
            f"{header['format']}; this napari-unet ({__version__}) reads up to format {FORMAT}. "
            "Please upgrade napari-unet."
        )
    unknown = sorted(set(header["model"]) - set(inspect.signature(UNet).parameters))
    if unknown:
        raise ValueError(
            f"{path.name} was saved by napari-unet {header.get('version', '?')} with network "
            f"settings this napari-unet ({__version__}) does not know: {', '.join(unknown)}. "
            "Please upgrade napari-unet."
        )
    return header


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.is_floating_point() else tensor


def load_optimizer_state(path: str | os.PathLike) -> dict | None:
    """The optimizer ``state_dict`` saved with a model, or None if there is none."""
    with safe_open(str(_saved_file(path)), framework="pt", device="cpu") as f:
        header = json.loads((f.metadata() or {}).get(_KEY, "{}"))
        if "optimizer" not in header:
            return None
        names = [k for k in f.keys() if k.startswith(_OPTIMIZER)]
        entries = [(k, f.get_tensor(k)) for k in names]
    entries += list(header["optimizer"]["scalars"].items())
    state: dict[int, dict] = {}
    for key, value in entries:
        index, name = key[len(_OPTIMIZER) :].split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": header["optimizer"]["param_groups"]}
