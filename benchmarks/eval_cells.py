"""Touching cells: train on generated crowded cells for a CPU budget, score held-out ones.

    python benchmarks/eval_cells.py [--minutes 1] [--seeds 0 1 2] [--set NAME=VALUE ...]

ISBI 2012 (eval_isbi.py) parts its cells by thick membranes; the cells biologists
paint in the plugin often touch, and only the border term of Eq. 2 parts those.
Settings chosen on ISBI alone once merged touching cells (benchmarks/README.md,
seventh session), so candidates for the defaults are run here too, with the same
options as ``eval_isbi.py``'s ours.

Data: ``core.synthetic.touching_cells`` as in the plugin's sample (256 x 256, 40
cells): 8 training images (seeds 0-7) and 4 test images (seeds 100-103). Scored as
the Predict dock labels cells (``core.instances.to_instances`` at 0.5): precision,
recall and F1 of instances matched at IoU > 0.5 over the test images, means over
the training seeds.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from eval_isbi import add_ours_arguments, ours, ours_options
from napari_unet.core.instances import to_instances
from napari_unet.core.metrics import match_instances
from napari_unet.core.synthetic import touching_cells

TRAIN_SEEDS, TEST_SEEDS = range(8), range(100, 104)


def cells(seeds) -> tuple[list[np.ndarray], list[np.ndarray]]:
    pairs = [touching_cells((256, 256), n_cells=40, seed=seed) for seed in seeds]
    return [image for image, _ in pairs], [labels for _, labels in pairs]


def score(predict, images, labels, tta=False) -> dict[str, float]:
    """Instances matched over all test images at once, so every cell counts the same."""
    cell = np.stack([predict(image, tta) for image in images])
    # In a stack, to_instances gives unique ids across slices, and match_instances
    # reads an id as one instance across slices: the truth needs unique ids too.
    predicted = to_instances(np.stack([1 - cell, cell]), 0.5)
    offsets = np.cumsum([0] + [int(t.max()) for t in labels[:-1]])
    truth = np.stack([np.where(t > 0, t + o, 0) for t, o in zip(labels, offsets, strict=True)])
    matching = match_instances(truth, predicted)
    return {"f1": matching.f1, "precision": matching.precision, "recall": matching.recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_ours_arguments(parser)
    args = parser.parse_args()
    options = ours_options(args)
    train, test = cells(TRAIN_SEEDS), cells(TEST_SEEDS)
    print(
        f"## touching cells, {len(TRAIN_SEEDS)} training and {len(TEST_SEEDS)} test images, "
        f"{args.minutes:g} CPU minutes, {torch.get_num_threads()} threads, seeds {args.seeds}, "
        f"ours with {options}"
    )
    results = {False: [], True: []}  # without and with test-time augmentation
    for seed in args.seeds:
        predict, steps = ours(*train, args.minutes, seed, **options)
        for tta, found in results.items():
            scores = score(predict, *test, tta=tta)
            found.append(scores)
            print(
                f"  ours{' tta' if tta else ''} seed {seed}: {steps} steps; "
                f"F1 {scores['f1']:.3f}, precision {scores['precision']:.3f}, "
                f"recall {scores['recall']:.3f}",
                flush=True,
            )
    for tta, found in results.items():
        mean = {k: np.mean([scores[k] for scores in found]) for k in found[0]}
        print(
            f"ours{' tta' if tta else ''} mean: F1 {mean['f1']:.3f}, precision "
            f"{mean['precision']:.3f}, recall {mean['recall']:.3f}"
        )


if __name__ == "__main__":
    main()
