"""Validation of the labels and parameters that :mod:`.weights` takes."""

from __future__ import annotations

import math

import numpy as np


def check_labels(labels, name: str = "labels", window=None, ignore=None) -> np.ndarray:
    """Validated labels; ``window``, if given, is the only part that can hold new
    values (the rest was checked before), so only it is searched for negatives.
    Pixels marked by ``ignore`` (a label value or a mask) may be negative."""
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"{name} must be integer instance labels; got dtype {labels.dtype}")
    if labels.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be 2D (Y, X) or a stack (Z, Y, X); got shape {labels.shape}"
        )
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    labels = in_native_order(labels)
    searched = labels if window is None else labels[window]
    if np.issubdtype(labels.dtype, np.signedinteger) and searched.size and searched.min() < 0:
        negative = searched < 0
        if ignore is not None:
            marked = ignore_mask(labels, ignore)
            negative &= ~(marked if window is None else marked[window])
        if not negative.any():
            return labels
        raise ValueError(
            f"{name} must not be negative (0 is background); mark unannotated "
            "pixels with the ignore argument instead"
        )
    return labels


def in_native_order(array: np.ndarray) -> np.ndarray:
    """``array``, or a copy of it in this machine's byte order: the compiled kernels
    refuse big-endian data."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def in_kernel_type(labels: np.ndarray) -> np.ndarray:
    """``labels`` as the compiled kernels take them: int32 where every value fits,
    else int64 where every value fits, else as they are (uint64 ids from 2**63 on).
    The values stay the same, so the ids and their order do. numba compiles a kernel
    anew for each type it is given, for seconds and under a lock that napari's GUI
    thread needs too, so the other integer types are converted instead: a view where
    the bits are the same, a copy otherwise."""
    labels = in_native_order(labels)
    if labels.dtype == np.int32:
        return labels
    if labels.dtype.itemsize < 4:  # bool and 8- or 16-bit integers: all fit
        return labels.astype(np.int32)
    low, high = (labels.min(), labels.max()) if labels.size else (0, 0)
    for dtype in (np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            same_bits = labels.dtype.itemsize == info.bits // 8  # uint32 below 2**31, ...
            return labels.view(dtype) if same_bits else labels.astype(dtype)
    return labels


def fit(values: np.ndarray, dtype, ignore=None) -> bool:
    """Whether ``values``, but for the value ``ignore``, all fit the integer type
    ``dtype``: whether a map computing in ``in_kernel_type``'s int32 can take them."""
    if ignore is not None:
        values = values[values != ignore]
    info = np.iinfo(dtype)
    return values.size == 0 or (info.min <= values.min() and values.max() <= info.max)


def check_parameters(w0: float, sigma: float) -> None:
    if not (math.isfinite(w0) and w0 >= 0):
        raise ValueError(f"w0 must be a finite number >= 0; got {w0}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number of pixels; got {sigma}")


def ignore_mask(labels: np.ndarray, ignore) -> np.ndarray | None:
    if ignore is None:
        return None
    if np.ndim(ignore) == 0:
        return labels == ignore
    mask = np.asarray(ignore, bool)
    if mask.shape != labels.shape:
        raise ValueError(f"the ignore mask has shape {mask.shape}; the labels {labels.shape}")
    return mask
