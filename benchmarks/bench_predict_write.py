"""What writing a prediction into an existing Labels layer costs on the GUI thread
(which napari cannot redraw meanwhile), as one undo step: the Predict dock's
``write_undoable`` against napari's ``data_setitem`` of the changed pixels, in one
run, with the memory each keeps in the undo history and the time of undo.

    xvfb-run -a python benchmarks/bench_predict_write.py

The layer holds a few painted squares; the prediction is a grid of 61-pixel
cells, so that nearly every pixel changes.
"""

from __future__ import annotations

import time

import napari
import numpy as np

from napari_unet._widgets._layers import write_undoable


def setitem(layer, values):
    changed = np.nonzero(layer.data != values)
    layer.data_setitem(changed, values[changed])


def held(layer) -> int:
    """Bytes of the arrays in the layer's last undo step: (indices, before, after)."""
    total = 0
    for indices, before, after in layer._undo_history[-1]:
        arrays = [i for i in indices if isinstance(i, np.ndarray)] + [before, after]
        total += sum(np.asarray(a).nbytes for a in arrays)
    return total


def main():
    viewer = napari.Viewer(show=False)
    print("## a prediction written into a painted int32 Labels layer as one undo step")
    for shape in ((1024, 1024), (4096, 4096), (20, 2048, 2048)):
        painted = np.zeros(shape, np.int32)
        painted[..., 100:300, 100:300] = 7
        cells = np.arange(shape[-1]) // 61
        prediction = np.broadcast_to(1 + cells[:, None] * 100 + cells, shape).astype(np.int32)
        times = {}
        for name, write in (("data_setitem", setitem), ("write_undoable", write_undoable)):
            layer = viewer.add_labels(painted.copy())
            start = time.perf_counter()
            write(layer, prediction)
            written = time.perf_counter() - start
            kept = held(layer)
            start = time.perf_counter()
            layer.undo()
            undone = time.perf_counter() - start
            assert np.array_equal(layer.data, painted)
            layer.redo()
            assert np.array_equal(layer.data, prediction)
            times[name] = written
            print(
                f"{'x'.join(map(str, shape)):>14} {name:>14}: write {written:6.2f} s, "
                f"undo {undone:5.2f} s, undo step holds {kept / 2**20:5.0f} MiB"
            )
            viewer.layers.remove(layer)
        ratio = times["data_setitem"] / times["write_undoable"]
        print(f"{'':>14} data_setitem / write_undoable: {ratio:.1f}")


if __name__ == "__main__":
    main()
