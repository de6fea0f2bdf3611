import pytest


@pytest.fixture
def viewer_with_sample(make_napari_viewer):
    """A viewer with the plugin's sample open: layers "cells" and "cells labels"."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "touching_cells")
    return viewer
