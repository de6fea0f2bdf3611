import numpy as np
import pytest
import torch

from napari_unet.core.model import UNet


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def small_valid():
    torch.manual_seed(0)
    return UNet(width=4, depth=3, padding="valid")


@pytest.fixture
def small_same():
    torch.manual_seed(0)
    return UNet(width=4, depth=3, padding="same")


@pytest.fixture
def refused(capsys):
    """``refused(argv)``: the error napari-unet gives for ``argv``, after checking that
    it is one clear line (exit status 2, no traceback)."""
    from napari_unet.cli import main

    def run(argv) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in argv])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    return run


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
