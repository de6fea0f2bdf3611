"""What one pixel of border costs in the ISBI 2012 scoring of eval_isbi.py.

    python benchmarks/isbi_scoring.py      # a few seconds

Scores the true test labels (slices 25-29) against themselves with every cell
shrunk or grown by one pixel (4- or 8-neighbourhood), and shrunk by two, exactly
as ``eval_isbi.py`` scores a prediction (``core.metrics.score_stack`` at 0.5),
with the "nearest" diagnostic beside it. Every pixel of predicted membrane inside
a true cell joins one false segment, so borders drawn a pixel too thick all
around cost more adapted Rand error than a trained model makes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from eval_isbi import DATA, load, nearest_cell_rand
from napari_unet.core.metrics import score_stack

CROSS = ndi.generate_binary_structure(2, 1)
SQUARE = ndi.generate_binary_structure(2, 2)


def shrunk(cells, structure, pixels=1):
    # border_value 1: the image's edge is not a membrane to draw.
    return ndi.binary_erosion(cells, structure, pixels, border_value=1)


CHANGES = {
    "as drawn": lambda cells: cells,
    "cells shrunk 1 px (4-neighbourhood)": lambda cells: shrunk(cells, CROSS),
    "cells grown 1 px (4-neighbourhood)": lambda cells: ndi.binary_dilation(cells, CROSS),
    "cells shrunk 1 px (8-neighbourhood)": lambda cells: shrunk(cells, SQUARE),
    "cells grown 1 px (8-neighbourhood)": lambda cells: ndi.binary_dilation(cells, SQUARE),
    "cells shrunk 2 px (4-neighbourhood)": lambda cells: shrunk(cells, CROSS, 2),
}


def main() -> None:
    if not DATA.exists():
        raise SystemExit(f"no ISBI data at {DATA}")
    truths = [label > 0 for label in load(range(25, 30))[1]]
    print("## the true labels of slices 25-29, changed, scored against themselves at 0.5")
    for name, change in CHANGES.items():
        probabilities = [change(truth).astype(np.float32) for truth in truths]
        half = score_stack(probabilities, truths, (0.5,))[0.5]
        print(
            f"{name:37s} Rand {half['rand_error']:.3f}, pixel {half['pixel_error']:.3f}, "
            f"VI {half['vi']:.2f}; nearest: Rand {nearest_cell_rand(probabilities, truths):.3f}"
        )


if __name__ == "__main__":
    main()
