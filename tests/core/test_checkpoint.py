import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from napari_unet.core import checkpoint
from napari_unet.core.model import UNet


def test_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = UNet(width=4, depth=2, norm="batch", input_mean=(0.3,), input_std=(0.2,))
    model.down[0][1].running_mean.uniform_()
    settings = {"w0": 10.0, "sigma": 5.0, "steps": 12}
    path = checkpoint.save(tmp_path / "m", model, settings)
    assert path.name == "m.safetensors"
    assert checkpoint.model_path("run.2024.06").name == "run.2024.06.safetensors"
    loaded, config = checkpoint.load(path)
    assert config == settings
    assert loaded.config == model.config
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_header_length_that_begins_like_a_pickle_still_loads(tmp_path):
    model = UNet(width=4, depth=1)
    for pad in range(256):
        path = checkpoint.save(tmp_path / "m", model, {"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":  # one header length in 256
            break
    else:
        pytest.fail("no padding gave a header length of 0x80 modulo 256")
    assert checkpoint.load(path)[1] == {"pad": "x" * pad}


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickles_are_refused(tmp_path, writer):
    path = tmp_path / "model.safetensors"
    if writer == "torch":
        torch.save(UNet(width=2, depth=1).state_dict(), path)
    else:
        path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ValueError, match="pickle"):
        checkpoint.load(path)


def test_truncated_file_is_refused(tmp_path):
    path = checkpoint.save(tmp_path / "m.safetensors", UNet(width=2, depth=1))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        checkpoint.load(path)


def test_foreign_safetensors_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="not a napari-unet model"):
        checkpoint.load(path)


def test_newer_format_is_refused(tmp_path):
    model = UNet(width=2, depth=1)
    header = {"format": checkpoint.FORMAT + 1, "version": "9.0", "model": model.config}
    path = tmp_path / "new.safetensors"
    save_file(dict(model.state_dict()), str(path), metadata={"napari_unet": json.dumps(header)})
    with pytest.raises(ValueError, match="upgrade"):
        checkpoint.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "nothing.safetensors")
