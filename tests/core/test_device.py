import numpy as np
import pytest
import torch

from napari_unet.core import device as devices
from napari_unet.core import predict
from napari_unet.core.predict import predict_tiled


def test_default_device_prefers_accelerators():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert devices.default_device().type == expected
    assert devices.default_device("auto").type == expected
    assert devices.default_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        devices.default_device("cuda")


def test_a_name_that_is_no_device_is_a_clear_error():
    with pytest.raises(ValueError, match="'nonsense' is not a device"):
        devices.default_device("nonsense")
    with pytest.raises(ValueError, match="does not run on 'meta'"):
        devices.default_device("meta")


def test_a_gpu_the_machine_lacks_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.default_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        devices.default_device("cuda:7")


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_only_where_the_cpu_computes_it(native, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    assert devices.computes_bfloat16(torch.device("cpu")) is native
    assert not devices.computes_bfloat16(torch.device("meta"))


def test_memory_report():
    free, total = devices.free_memory(torch.device("cpu"))
    assert 0 < free <= total
    assert 0 < devices.memory_budget(torch.device("cpu")) <= devices.CPU_BUDGET_CAP
    assert "GiB free" in devices.describe(torch.device("cpu"))


def test_memory_is_read_without_posix_only_calls(monkeypatch):
    # Windows has no os.sysconf (nor macOS its "SC_AVPHYS_PAGES"); an Apple GPU under
    # torch < 2.5 has no torch.mps.recommended_max_memory: the system's memory then.
    import os

    monkeypatch.delattr(os, "sysconf", raising=False)
    monkeypatch.delattr(torch.mps, "recommended_max_memory", raising=False)
    for kind in ("cpu", "mps"):
        free, total = devices.free_memory(torch.device(kind))
        assert 0 < free <= total
    assert "GiB free" in devices.describe(torch.device("cpu"))


def test_out_of_memory_halves_the_tile_and_stays_exact(small_valid, rng, monkeypatch):
    image = rng.random((60, 70), dtype=np.float32)
    expected = predict_tiled(small_valid, image, tile_size=8)
    real_call = predict.TileRunner.__call__

    def limited(self, tile):
        if tile.shape[-1] > 100:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_call(self, tile)

    monkeypatch.setattr(predict.TileRunner, "__call__", limited)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        result = predict_tiled(small_valid, image, tile_size=64)
    np.testing.assert_allclose(result, expected, atol=1e-5)


def test_out_of_memory_is_recognised_on_every_device():
    with pytest.raises(RuntimeError) as cpu:
        torch.empty(2**62, dtype=torch.uint8)  # more than any machine has
    assert devices.is_out_of_memory(cpu.value)
    assert devices.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    windows = "DefaultCPUAllocator: not enough memory: you tried to allocate 4 GB."
    assert devices.is_out_of_memory(RuntimeError(windows))
    assert not devices.is_out_of_memory(RuntimeError("something else"))


def test_other_errors_are_not_retried(small_valid, monkeypatch):
    def broken(self, tile):
        raise RuntimeError("something else")

    monkeypatch.setattr(predict.TileRunner, "__call__", broken)
    with pytest.raises(RuntimeError, match="something else"):
        predict_tiled(small_valid, np.zeros((40, 40), np.float32), tile_size=32)
