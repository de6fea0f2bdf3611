"""Training samples from (image, labels, annotated region) pairs.

Any number of pairs of different sizes: 2D images, stacks (each slice a pair)
and channel-first multichannel images. Labels are instance labels; a plane
with only two values is a foreground mask and is split into instances by
4-connected components (``instances.as_instances``). Pixels outside the
annotated region carry no loss weight, and tiles are drawn around annotated
pixels only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .instances import annotated_labels
from .outline import outline
from .predict import reflect_index
from .weights import separation_borders, weight_map


@dataclass
class Pair:
    """One 2D training pair.

    Attributes
    ----------
    image : ndarray, float32, ``(C, Y, X)``
    labels : ndarray, int, ``(Y, X)``; instance ids, 0 background
    annotated : ndarray, bool, ``(Y, X)``; where the labels are to be trusted
    """

    image: np.ndarray
    labels: np.ndarray
    annotated: np.ndarray


def make_pairs(images, labels, annotated=None, in_channels: int = 1, names=None) -> list[Pair]:
    """Check and split (image, labels[, annotated]) triples into 2D pairs.

    The labels are read by :func:`annotated_labels`, a slice at a time, and only
    planes with annotated pixels become pairs (only their image is read).

    Parameters
    ----------
    images, labels, annotated : sequences of arrays
        ``(Y, X)`` or ``(Z, Y, X)`` images for one channel, ``(C, Y, X)`` or
        ``(C, Z, Y, X)`` for ``in_channels`` = C; labels ``(Y, X)`` or ``(Z, Y, X)``;
        annotated regions (bool) of the labels' shape, or None.
    names : sequence of str, optional
        What error messages call each triple (e.g. its image's name); "pair k" if not given.

    Raises
    ------
    ValueError
        Shapes that do not match, NaN in an image's annotated planes, or no labelled
        pixel at all.
    """
    regions = "" if annotated is None else f" and {len(annotated)} annotated regions"
    annotated = [None] * len(images) if annotated is None else annotated
    if not len(images) == len(labels) == len(annotated):
        raise ValueError(
            f"{len(images)} images, {len(labels)} label images{regions}: give one of each "
            "per image"
        )
    pairs = []
    for k, (image, label, region) in enumerate(zip(images, labels, annotated, strict=True)):
        which = f"'{names[k]}'" if names is not None else f"pair {k}"
        # Lazy arrays stay lazy: only the planes read below are loaded.
        label = label if hasattr(label, "shape") else np.asarray(label)  # e.g. nested lists
        image = image if hasattr(image, "shape") else np.asarray(image)
        shape = tuple(image.shape)
        one_channel = in_channels == 1 and len(shape) == label.ndim  # no channel axis
        if one_channel:
            shape = (1, *shape)
        if shape[0] != in_channels or shape[1:] != label.shape or label.ndim not in (2, 3):
            raise ValueError(
                f"{which}: image of shape {tuple(image.shape)} and "
                f"labels of shape {label.shape} do not match (the model takes "
                f"{in_channels} channel(s))"
            )
        if not np.issubdtype(label.dtype, np.integer) and label.dtype != bool:
            raise ValueError(f"{which}: labels must be integers; got {label.dtype}")
        if region is not None and np.shape(region) != label.shape:
            raise ValueError(
                f"{which}: annotated region {np.shape(region)} and labels "
                f"{label.shape} differ in shape"
            )
        # Plane by plane, and only the annotated planes of the image are read: a
        # stack may be large, or lazy. A 2D image is one plane, indexed by ...
        for z in [...] if label.ndim == 2 else range(label.shape[0]):
            if z is ...:
                cells, mask = annotated_labels(label, region)
            else:  # a stack of one slice, so that an unpainted slice is not annotated
                window = slice(z, z + 1)
                cells, mask = annotated_labels(
                    label[window], None if region is None else region[window]
                )
                cells, mask = cells[0], mask[0]
            if not mask.any():
                continue
            plane = image[z] if one_channel or z is ... else image[:, z]
            plane = np.asarray(plane, np.float32)
            if not np.isfinite(plane).all():
                raise ValueError(f"{which}: the image contains NaN or infinite values")
            pairs.append(Pair(plane[None] if one_channel else plane, cells, mask))
    if not any(np.any(p.annotated & (p.labels > 0)) for p in pairs):
        raise ValueError(_nothing_labelled(names, labels, annotated))
    return pairs


def _nothing_labelled(names, labels, annotated) -> str:
    """Why no pair has a labelled pixel: what to paint, or which region is empty."""
    for k, (label, region) in enumerate(zip(labels, annotated, strict=True)):
        if region is not None and np.any(np.asarray(label) > 0):
            which = f"'{names[k]}'" if names is not None else f"pair {k}"
            if not np.any(region):
                return (
                    f"{which}: the annotated region is empty; paint it over the cells "
                    "you annotated (unpainted pixels are not annotated), or remove it"
                )
            return (
                f"{which}: no painted cell lies inside the annotated region; paint the "
                "region over them, or remove it"
            )
    return "no labelled pixel: paint at least one cell before training"


def split_validation(pairs: list[Pair], fraction: float) -> tuple[list, list]:
    """Hold out ``fraction`` of the pairs (at least one) for validation, spread
    evenly over the set (a stack's slices alternate rather than its end going
    missing; of 25 pairs at 0.2, the 5th, 10th, ... 25th). Fewer than 5 pairs are
    all kept for training, and so are all pairs when holding out would leave no
    labelled cell to train on. ``fraction`` is at most 0.5."""
    if not 0 <= fraction <= 0.5:
        raise ValueError(f"the validation fraction must be between 0 and 0.5; got {fraction}")
    n = len(pairs)
    if fraction == 0 or n < 5:
        return list(pairs), []
    count = max(1, min(n // 2, round(fraction * n)))
    held = {(k + 1) * n // count - 1 for k in range(count)}
    kept = [p for k, p in enumerate(pairs) if k not in held]
    if not any(np.any(p.annotated & (p.labels > 0)) for p in kept):
        return list(pairs), []
    return kept, [pairs[k] for k in sorted(held)]


def target_and_weights(
    pair: Pair, w0: float, sigma: float, class_balance: bool, ignore_outline: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The training target (cells with one-pixel gaps, int64) and the Eq. 2 loss
    weights of ``pair``, zero outside its annotated region and, with
    ``ignore_outline``, on the outline of its cells (``outline.outline``; the class
    balance, when on, is computed before, with the outline counted)."""
    # Cells outside the annotated region must not open gaps inside it.
    cells = separation_borders(np.where(pair.annotated, pair.labels, 0)) > 0
    weights = weight_map(pair.labels, w0, sigma, class_balance, ignore=~pair.annotated)
    if ignore_outline:
        weights[outline(cells)] = 0
    return cells.astype(np.int64), weights


def normalization(pairs: list[Pair]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation over all training images."""
    stacked = [p.image.reshape(p.image.shape[0], -1) for p in pairs]
    values = np.concatenate(stacked, axis=1)
    return values.mean(1).tolist(), np.maximum(values.std(1), 1e-6).tolist()


# How far an image may lie from the training images' intensities before predicting
# warns, in their standard deviations (for the mean) and as a ratio (for the spread):
# a brighter or dimmer image of the same kind lies within a few; a 16-bit image for a
# model of 8-bit ones, or a float one in [0, 1], a hundred or more.
FAR = 10.0


def intensity_gap(model, image, is_stack: bool) -> str:
    """A warning where ``image``, as ``predict_tiled`` takes it for ``model``, lies far
    from the intensities ``model`` was trained on (its saved normalisation), else "".

    Read from the middle slice, whole up to 1024x1024 pixels, else from 4x4 windows of
    256x256 spread over it: a few chunks of a lazy image, and not one window of
    background in the middle of a sparse one."""
    prefix = (slice(None),) if model.in_channels > 1 else ()
    if is_stack:
        prefix += (image.shape[len(prefix)] // 2,)
    rows, cols = (_spread(size) for size in image.shape[-2:])
    sample = np.concatenate(
        [
            np.asarray(image[(*prefix, r, c)], np.float64).reshape(model.in_channels, -1)
            for r in rows
            for c in cols
        ],
        axis=1,
    )
    mean, std = np.asarray(model.cfg.input_mean), np.asarray(model.cfg.input_std)
    ratio = sample.std(1) / std
    # Wider or narrower alike; a blank image (ratio 0) has no spread to compare.
    spread = np.maximum(ratio, np.divide(1, ratio, out=np.ones_like(ratio), where=ratio > 0))
    far = np.maximum(np.abs(sample.mean(1) - mean) / std, spread)
    if not far.max() > FAR:  # NaN too: refused elsewhere, with its own message
        return ""
    c = int(far.argmax())
    which = f" in channel {c}" if model.in_channels > 1 else ""
    return (
        f"the image's intensities{which} (mean {_short(sample[c].mean())}, sd "
        f"{_short(sample[c].std())}) lie far from those the model was trained on (mean "
        f"{_short(mean[c])}, sd {_short(std[c])}): give it images of the same kind (bit "
        "depth, scaling) as its training images, or the prediction is likely wrong"
    )


def _spread(size: int) -> list[slice]:
    if size <= 1024:
        return [slice(0, size)]
    return [slice(start, start + 256) for start in np.linspace(0, size - 256, 4).astype(int)]


def _short(value: float) -> str:
    return f"{float(f'{value:.4g}'):g}"  # 4 digits, and 10040 rather than 1.004e+04


class TileSampler:
    """Random training tiles of ``in_size`` pixels: image, target and Eq. 2 weights.

    The Eq. 2 weight map of each pair is computed once, on the whole pair. The
    output window of ``out_size`` pixels is cut around a random annotated pixel and
    moved, where the image is large enough, to lie inside it: a window that ran past
    the border would supervise fewer pixels (about a quarter fewer for 256-pixel
    windows on 512-pixel images). The input reaches ``(in_size - out_size) / 2``
    pixels further, mirrored at the image border like the prediction's tiles.
    ``w0``, ``sigma``, ``class_balance`` and ``ignore_outline`` are the settings of
    :func:`target_and_weights`, given by the training's ``TrainConfig`` (no defaults
    here, so there is one place for them).
    """

    def __init__(
        self,
        pairs: list[Pair],
        in_size: int,
        out_size: int,
        generator: torch.Generator,
        w0: float,
        sigma: float,
        class_balance: bool,
        ignore_outline: bool,
    ):
        self.pairs, self.generator = pairs, generator
        self.in_size, self.out_size = in_size, out_size
        self.targets, self.weights = zip(
            *(target_and_weights(p, w0, sigma, class_balance, ignore_outline) for p in pairs),
            strict=True,
        )
        self.centres = [np.flatnonzero(p.annotated) for p in pairs]
        sizes = np.array([c.size for c in self.centres], float)
        self.chance = torch.from_numpy(sizes / sizes.sum())

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image (B, C, I, I), target (B, I, I), weights (B, I, I))`` at input size;
        the caller crops target and weights to the output after augmentation."""
        picks = torch.multinomial(self.chance, batch, True, generator=self.generator)
        images, targets, weights = [], [], []
        for k in picks.tolist():
            centres = self.centres[k]
            flat = centres[int(torch.randint(centres.size, (1,), generator=self.generator))]
            cy, cx = np.unravel_index(flat, self.pairs[k].labels.shape)
            h, w = self.pairs[k].labels.shape
            ys = np.arange(self.in_size) + self._start(cy, h)
            xs = np.arange(self.in_size) + self._start(cx, w)
            rows, cols = reflect_index(ys, h), reflect_index(xs, w)
            box = np.ix_(rows, cols)
            images.append(self.pairs[k].image[:, rows][:, :, cols])
            targets.append(self.targets[k][box])
            # The mirrored margin is context for the input, never a target.
            inside = np.outer((ys >= 0) & (ys < h), (xs >= 0) & (xs < w))
            weights.append(self.weights[k][box] * inside)
        return np.stack(images), np.stack(targets), np.stack(weights)

    def _start(self, centre: int, length: int) -> int:
        """First input pixel of a window around ``centre`` along an axis of ``length``."""
        start = centre - self.out_size // 2
        if length >= self.out_size:
            start = min(max(start, 0), length - self.out_size)
        return start - (self.in_size - self.out_size) // 2
