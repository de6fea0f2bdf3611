"""Where the network runs: CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import psutil
import torch

# On the CPU the network shares memory with the image and the viewer: budget a
# quarter of what is available, and never more than this.
CPU_BUDGET_CAP = 2 * 1024**3


def default_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: ``device`` itself, or the best available for None/"auto".

    Raises
    ------
    ValueError
        If the named device is not available on this machine.
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kinds = "use auto, cpu, cuda, cuda:1 or mps"
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"{device!r} is not a device: {kinds}") from err
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"napari-unet does not run on {device!r}: {kinds}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but CUDA is not available here")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device {device!r} was asked for, but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s): cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1}"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} was asked for, but MPS is not available here")
    return dev


def free_memory(device: torch.device) -> tuple[int, int]:
    """``(free, total)`` bytes of memory the device can use for tensors."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(free), int(total)
    if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):  # torch 2.5+
        total = int(torch.mps.recommended_max_memory())
        return total - int(torch.mps.current_allocated_memory()), total
    # The CPU, and an Apple GPU under an older torch: the system's memory, which
    # psutil reads on Linux, macOS and Windows alike.
    memory = psutil.virtual_memory()
    return int(memory.available), int(memory.total)


def memory_budget(device: torch.device) -> int:
    """Bytes one prediction or training step may take on ``device``."""
    free, _ = free_memory(device)
    if device.type == "cpu":
        return min(free // 4, CPU_BUDGET_CAP)
    return int(free * 0.6)


def computes_bfloat16(device: torch.device) -> bool:
    """True where bfloat16 convolutions run natively: CUDA GPUs that support it and
    CPUs with AVX512-BF16 or AMX (training steps 1.8x faster than float32 on a
    Xeon with AMX). Elsewhere bfloat16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # A private check, hence the fallback: a torch without it trains in float32.
        return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    return False


def describe(device: torch.device) -> str:
    """A one-line report for people: name and free memory."""
    free, total = free_memory(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type.upper()
    return f"{name}: {free / 1024**3:.1f} GiB free of {total / 1024**3:.1f} GiB"


def is_out_of_memory(error: BaseException) -> bool:
    """True for the errors an oversized tile raises on any device."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    message = str(error).lower()
    # The CPU allocator says "DefaultCPUAllocator: can't allocate memory" (POSIX) or
    # "not enough memory" (Windows).
    return isinstance(error, RuntimeError) and any(
        words in message
        for words in ("out of memory", "can't allocate memory", "not enough memory")
    )


def device_choices() -> list[tuple[str, str]]:
    """``(label, value)`` pairs of the devices to offer a user (a GUI's chooser):
    "auto", naming the device it picks, then every device with its free memory."""
    names = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    best = str(default_device("auto"))
    choices = [(f"auto ({best})", "auto")]
    return choices + [(describe(torch.device(name)), name) for name in names]
