import json
import os
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
    assert checkpoint.load(tmp_path / "m")[0].config == model.config  # the name saved as


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_model_files_get_the_permissions_of_any_new_file(tmp_path):
    previous = os.umask(0o022)
    try:
        path = checkpoint.save(tmp_path / "m", UNet(width=2, depth=1))
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == 0o644  # colleagues can read it
    os.chmod(path, 0o664)
    (tmp_path / ".m.safetensors.tmp").write_bytes(b"")  # left by a killed save
    os.chmod(tmp_path / ".m.safetensors.tmp", 0o600)
    checkpoint.save(tmp_path / "m", UNet(width=2, depth=1))
    assert os.stat(path).st_mode & 0o777 == 0o664  # a model saved again keeps its mode
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


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


def write(path, model, header, weights=None):
    weights = dict(model.state_dict()) if weights is None else weights
    save_file(weights, str(path), metadata={"napari_unet": json.dumps(header)})
    return path


@pytest.mark.parametrize(
    "header", ["[1, 2]", {"format": 1}, {"format": "1", "model": {}}, {"model": None}]
)
def test_a_damaged_description_is_refused(tmp_path, header):
    path = tmp_path / "m.safetensors"
    text = header if isinstance(header, str) else json.dumps(header)
    save_file(dict(UNet(width=2, depth=1).state_dict()), str(path), {"napari_unet": text})
    with pytest.raises(ValueError, match="description is damaged"):
        checkpoint.load(path)


def test_settings_of_a_newer_version_ask_for_an_upgrade(tmp_path):
    model = UNet(width=2, depth=1)
    header = {"format": 1, "version": "9.0", "model": {**model.config, "attention": True}}
    path = write(tmp_path / "m.safetensors", model, header)
    with pytest.raises(
        ValueError, match=r"9\.0 with network settings .* attention\. Please upgrade"
    ):
        checkpoint.load(path)


def test_weights_of_another_precision_load_as_float32(tmp_path):
    model = UNet(width=2, depth=1, norm="batch")
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = write(tmp_path / "m.safetensors", model, {"format": 1, "model": model.config}, half)
    loaded, _ = checkpoint.load(path)
    assert {v.dtype for v in loaded.state_dict().values()} == {torch.float32, torch.int64}
    assert loaded(torch.zeros(1, 1, 18, 18)).dtype == torch.float32


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "nothing.safetensors")
