import numpy as np

from napari_unet._widgets._session import session


def test_session(make_napari_viewer):
    v = make_napari_viewer()
    s = session(v)
    assert session(v) is s
    im = v.add_image(np.zeros((8, 8)))
    lab = v.add_labels(np.zeros((8, 8), int))
    hits = []
    s.changed.connect(lambda: hits.append(1))
    a = s.add(im, lab)
    assert s.add(im, lab) is a and len(s.annotations) == 1
    v.layers.remove(lab)
    assert s.annotations == [] and len(hits) == 3
