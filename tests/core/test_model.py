import math

import pytest
import torch

from napari_unet.core.model import UNet, valid_output_size


def test_paper_sizes_572_to_388():
    model = UNet(width=2)
    assert model.margin == 92
    assert model.output_size(572) == 388
    assert model.input_size(388) == 572
    with torch.inference_mode():
        out = model.eval()(torch.zeros(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


def test_invalid_size_names_nearest_valid_sizes():
    model = UNet(width=2)
    with pytest.raises(ValueError, match=r"570.*556, 572"):
        model.output_size(570)
    with pytest.raises(ValueError, match="nearest valid"):
        model(torch.zeros(1, 1, 570, 572))


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_valid_arithmetic_matches_the_network(depth):
    model = UNet(width=2, depth=depth, dropout=0).eval()
    size = model.input_size(7)
    out = model(torch.zeros(1, 1, size, size))
    assert out.shape[-1] == valid_output_size(size, depth) == size - 2 * model.margin


def test_same_padding_keeps_size():
    model = UNet(width=2, padding="same").eval()
    assert model.margin == 0
    assert model(torch.zeros(1, 1, 64, 48)).shape == (1, 2, 64, 48)
    with pytest.raises(ValueError, match="48, 64"):
        model.output_size(50)


def test_he_initialisation():
    torch.manual_seed(0)
    model = UNet()
    checked = 0
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            fan_in = mod.in_channels * (k if isinstance(mod, torch.nn.Conv2d) else 1)
            w = mod.weight.detach()
            if w.numel() >= 10_000:
                assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
                assert abs(w.mean().item()) < 0.05 * math.sqrt(2 / fan_in)
                checked += 1
            assert torch.all(mod.bias == 0)
    assert checked >= 18


def test_config_rebuilds_the_same_network():
    model = UNet(
        in_channels=3,
        n_classes=3,
        depth=2,
        width=8,
        padding="same",
        norm="batch",
        input_mean=(1, 2, 3),
        input_std=(2, 2, 2),
    )
    again = UNet(**model.config)
    assert again.config == model.config
    assert [k for k in again.state_dict()] == [k for k in model.state_dict()]


def test_input_normalisation_is_part_of_the_model():
    torch.manual_seed(0)
    plain = UNet(width=2, depth=2, dropout=0).eval()
    shifted = UNet(**{**plain.config, "input_mean": (5.0,), "input_std": (2.0,)}).eval()
    weights = {k: v for k, v in plain.state_dict().items() if not k.startswith("input_")}
    shifted.load_state_dict(weights, strict=False)
    x = torch.rand(1, 1, 60, 60)
    torch.testing.assert_close(shifted(x * 2 + 5), plain(x))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        # The value given, not the whole configuration as before.
        ({"norm": "instance"}, "; got 'instance'$"),
        ({"padding": "reflect"}, "; got 'reflect'$"),
        ({"n_classes": 1}, "; got 1$"),
        ({"depth": 0}, r"between 1 and 8; got 0$"),
        ({"dropout": 1.0}, "; got 1.0$"),
        ({"input_std": (0.0,)}, "positive"),
        ({"in_channels": 2, "input_mean": (0, 0, 0)}, "one value per input channel"),
    ],
)
def test_bad_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        UNet(**bad)
