import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_unet.core.augment import augment, elastic_field, warp
from napari_unet.core.config import AugmentSettings

GEOMETRY_ONLY = {"brightness": (0.0, 0.0), "contrast": (1.0, 1.0), "gamma": (1.0, 1.0)}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(shape=(3, 2, 20, 20), seed=0, high=50):
    """Random image (B, C, H, W) float32, labels (B, H, W) int64, weights, uint8 mask."""
    rng = np.random.default_rng(seed)
    b, _, h, w = shape
    image = torch.from_numpy(rng.random(shape, dtype=np.float32))
    labels = torch.from_numpy(rng.integers(0, high, (b, h, w)))
    weights = torch.from_numpy(rng.random((b, h, w), dtype=np.float32))
    mask = torch.from_numpy(rng.integers(0, 2, (b, h, w), dtype=np.uint8))
    return image, labels, weights, mask


def lattice_variants(x: np.ndarray) -> dict[str, np.ndarray]:
    """The flips and rotations of the last two axes of ``x``, computed by numpy."""
    out = {}
    for flipped in (False, True):
        y = np.flip(x, -1) if flipped else x
        for k in range(4):
            if k % 2 and x.shape[-1] != x.shape[-2]:
                continue
            out[f"rot{90 * k}{'_flip' if flipped else ''}"] = np.rot90(y, k, axes=(-2, -1))
    return out


def test_zero_displacement_is_the_identity():
    image, labels, weights, mask = batch((2, 2, 17, 23))
    out = warp(image, labels, weights, mask, field=torch.zeros(2, 2, 17, 23))
    torch.testing.assert_close(out[0], image, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2], weights, atol=1e-5, rtol=0)
    assert torch.equal(out[1], labels) and torch.equal(out[3], mask)

    settings = AugmentSettings(sigma=0.0, flips=False, rotations=False, **GEOMETRY_ONLY)
    out = augment(image, labels, weights, mask, generator=seeded(), settings=settings)
    assert all(torch.equal(a, b) for a, b in zip(out, (image, labels, weights, mask), strict=True))


def test_tiny_displacement_through_augment_is_the_identity():
    # sigma > 0 takes the fused sampling grid of augment, not warp's.
    image, labels, weights, mask = batch((2, 1, 16, 24))
    settings = AugmentSettings(sigma=1e-6, flips=False, rotations=False, **GEOMETRY_ONLY)
    out = augment(image, labels, weights, mask, generator=seeded(), settings=settings)
    torch.testing.assert_close(out[0], image, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2], weights, atol=1e-5, rtol=0)
    assert torch.equal(out[1], labels) and torch.equal(out[3], mask)


def test_augment_deforms_as_warp_with_elastic_field():
    image, labels, weights, mask = batch((3, 2, 24, 31))
    settings = AugmentSettings.elastic_only(sigma=4.0)
    out = augment(image, labels, weights, mask, generator=seeded(5), settings=settings)
    field = elastic_field(3, 24, 31, generator=seeded(5), sigma=4.0)
    expected = warp(image, labels, weights, mask, field=field)
    torch.testing.assert_close(out[0], expected[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[2], expected[2], atol=1e-4, rtol=0)
    assert torch.equal(out[1], expected[1]) and torch.equal(out[3], expected[3])
    assert not torch.equal(out[1], labels)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_labels_keep_their_values(dtype):
    big = [0, 7, 2**31 - 1] if dtype == torch.int32 else [0, 7, 2**32 - 1, 2**32, 2**40 + 1]
    image, _, weights, mask = batch((4, 1, 32, 32))
    rng = np.random.default_rng(1)
    # Blocks of one id each, so that the deformation has edges to move.
    blocks = rng.choice(big, size=(4, 4, 4))
    labels = torch.from_numpy(np.kron(blocks, np.ones((8, 8), dtype=blocks.dtype))).to(dtype)
    out = augment(image, labels, weights, mask, generator=seeded(), settings=AugmentSettings())
    assert out[1].dtype == dtype
    assert set(out[1].unique().tolist()) <= set(big)
    assert not torch.equal(out[1], labels)


def test_same_seed_same_result_other_seed_other_result():
    image, labels, weights, mask = batch()
    first = augment(image, labels, weights, mask, generator=seeded(3))
    again = augment(image, labels, weights, mask, generator=seeded(3))
    other = augment(image, labels, weights, mask, generator=seeded(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[1], other[1])


@pytest.mark.parametrize(("grid", "size"), [(3, 9), (4, 10)])
def test_displacement_std_at_the_grid_points_is_sigma(grid, size):
    field = elastic_field(4000, size, size, generator=seeded(), sigma=10.0, grid=grid)
    points = list(range(0, size, (size - 1) // (grid - 1)))
    at_points = field[:, :, points][:, :, :, points]
    assert abs(float(at_points.std()) - 10.0) < 1.0
    assert abs(float(at_points.mean())) < 0.5


def test_field_is_the_bicubic_interpolation_of_the_coarse_draws():
    field = elastic_field(2, 37, 50, generator=seeded(2), sigma=3.0, grid=3)
    coarse = torch.randn((2, 2, 3, 3), generator=seeded(2)) * 3.0
    expected = F.interpolate(coarse, size=(37, 50), mode="bicubic", align_corners=True)
    torch.testing.assert_close(field, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("shape", "flips", "rotations", "allowed"),
    [
        ((12, 12), True, True, 8),
        ((12, 15), True, True, 4),
        ((12, 12), False, True, 4),
        ((12, 15), False, True, 2),
        ((12, 15), True, False, 4),
    ],
)
@pytest.mark.parametrize("sigma", [0.0, 1e-5])
def test_flips_and_rotations_keep_everything_aligned(shape, flips, rotations, allowed, sigma):
    h, w = shape
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 50, (48, h, w)))
    image = labels[:, None].float().repeat(1, 2, 1, 1)
    weights, mask = labels.float() / 2, labels % 2 == 0
    settings = AugmentSettings(
        elastic=sigma > 0, sigma=sigma, flips=flips, rotations=rotations, **GEOMETRY_ONLY
    )
    out = augment(image, labels, weights, mask, generator=seeded(), settings=settings)
    assert torch.equal(out[3], out[1] % 2 == 0)
    torch.testing.assert_close(out[0][:, 1], out[1].float(), atol=1e-2, rtol=0)
    torch.testing.assert_close(out[2], out[1].float() / 2, atol=1e-2, rtol=0)
    seen = set()
    for sample, result in zip(labels.numpy(), out[1].numpy(), strict=True):
        matches = [k for k, v in lattice_variants(sample).items() if np.array_equal(v, result)]
        assert matches, "the result is no flip or rotation of the input"
        seen.add(matches[0])
    assert len(seen) == allowed  # each allowed flip or rotation, and no other, is drawn


@pytest.mark.parametrize(("axis", "shift"), [(1, -3), (1, 3), (0, -4), (0, 2), (1, 17)])
def test_outside_samples_mirror_as_numpy_reflect(axis, shift):
    h, w = 9, 8
    image, labels, weights, mask = batch((1, 1, h, w))
    field = torch.zeros(1, 2, h, w)
    field[:, axis] = shift
    out = warp(image, labels, weights, mask, field=field)
    k = abs(shift)
    start = 2 * k if shift > 0 else 0
    for before, after in zip((image[0, 0], labels[0], weights[0], mask[0]), out, strict=True):
        padded = np.pad(before.numpy(), k, mode="reflect")
        crop = padded[k : k + h, start : start + w] if axis else padded[start : start + h, k:-k]
        np.testing.assert_allclose(after.reshape(h, w).numpy(), crop, atol=1e-5)


def test_bicubic_taps_beyond_the_edge_are_mirrored():
    # Half-pixel positions near the edge use taps outside the image; inside a
    # reflect-padded copy the same positions use real pixels only.
    image, labels, _, _ = batch((1, 1, 10, 12))
    out = warp(image, labels, field=torch.full((1, 2, 10, 12), -1.5))[0]
    padded = torch.from_numpy(np.pad(image.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)), "reflect"))
    inside = warp(
        padded,
        torch.zeros(1, 18, 20, dtype=torch.int64),
        field=torch.full((1, 2, 18, 20), -1.5),
    )[0]
    torch.testing.assert_close(out, inside[..., 4:-4, 4:-4], atol=1e-5, rtol=0)


def test_intensity_changes_only_the_image():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(1000 + 500 * rng.random((6, 2, 16, 16), dtype=np.float32))
    image[0, 1] = 7.0  # a constant channel stays finite
    _, labels, weights, mask = batch((6, 2, 16, 16))
    settings = AugmentSettings(elastic=False, flips=False, rotations=False)
    out = augment(image, labels, weights, mask, generator=seeded(), settings=settings)
    assert out[1] is labels and out[2] is weights and out[3] is mask
    assert torch.isfinite(out[0]).all() and not torch.equal(out[0], image)

    gamma_only = dataclasses.replace(settings, **{**GEOMETRY_ONLY, "gamma": (0.5, 2.0)})
    bent = augment(image, labels, generator=seeded(), settings=gamma_only)[0]
    # Gamma keeps each channel's range and the order of its intensities.
    torch.testing.assert_close(bent.amin((-2, -1)), image.amin((-2, -1)))
    torch.testing.assert_close(bent.amax((-2, -1)), image.amax((-2, -1)))
    order = image.flatten(-2).argsort(-1)
    assert (bent.flatten(-2).gather(-1, order).diff(dim=-1) >= -1e-3).all()

    contrast_only = dataclasses.replace(settings, **{**GEOMETRY_ONLY, "contrast": (0.5, 2.0)})
    stretched = augment(image, labels, generator=seeded(), settings=contrast_only)[0]
    torch.testing.assert_close(stretched.mean((-2, -1)), image.mean((-2, -1)))

    shift_only = dataclasses.replace(settings, **{**GEOMETRY_ONLY, "brightness": (0.1, 0.2)})
    shifted = augment(image, labels, generator=seeded(), settings=shift_only)[0]
    span = image.amax((-2, -1)) - image.amin((-2, -1))
    shift = (shifted - image).mean((-2, -1))
    assert ((shift >= 0.1 * span - 1e-2) & (shift <= 0.2 * span + 1e-2)).all()


def test_float64_positions_as_on_cuda_agree(monkeypatch):
    # On CUDA the sampling grid is built in float64 (TF32 matmuls would be too coarse);
    # the same code run here in float64 must agree with the float32 CPU result.
    import napari_unet.core.augment as module

    image, labels, weights, mask = batch((4, 2, 48, 48))
    cpu = augment(image, labels, weights, mask, generator=seeded(7))
    monkeypatch.setattr(module, "_exact_dtype", lambda device, dtype: torch.float64)
    exact = augment(image, labels, weights, mask, generator=seeded(7))
    torch.testing.assert_close(exact[0], cpu[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(exact[2], cpu[2], atol=1e-4, rtol=0)
    assert (exact[1] == cpu[1]).float().mean() > 0.999


@pytest.mark.parametrize(
    ("image_dtype", "label_dtype", "mask_dtype"),
    [
        (torch.float64, torch.int32, torch.bool),
        (torch.float16, torch.uint8, torch.uint8),
    ],
)
def test_dtypes_and_shapes_are_kept(image_dtype, label_dtype, mask_dtype):
    image, labels, weights, mask = batch((2, 3, 14, 19))
    out = augment(
        image.to(image_dtype),
        labels.to(label_dtype),
        weights.double(),
        mask.to(mask_dtype),
        generator=seeded(),
    )
    assert [t.dtype for t in out] == [image_dtype, label_dtype, torch.float64, mask_dtype]
    assert [t.shape for t in out] == [(2, 3, 14, 19), (2, 14, 19), (2, 14, 19), (2, 14, 19)]
    assert augment(image, labels, generator=seeded())[2:] == (None, None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": torch.rand(2, 8, 8)}, "channels"),
        ({"image": torch.zeros(2, 1, 8, 8, dtype=torch.int64)}, "floats"),
        ({"image": torch.rand(2, 1, 1, 8)}, "2x2"),
        ({"image": np.zeros((2, 1, 8, 8))}, "torch.Tensor"),
        ({"labels": torch.zeros(2, 8, 8)}, "integers"),
        ({"labels": torch.zeros(2, 1, 8, 8, dtype=torch.int64)}, "shape"),
        ({"weights": torch.zeros(2, 8, 8, dtype=torch.int64)}, "floats"),
        ({"weights": torch.zeros(3, 8, 8)}, "shape"),
        ({"mask": torch.zeros(2, 8, 8)}, "bool or uint8"),
        ({"generator": 0}, "torch.Generator"),
    ],
)
def test_bad_input_raises_a_clear_error(change, message):
    args = {
        "image": torch.rand(2, 1, 8, 8),
        "labels": torch.zeros(2, 8, 8, dtype=torch.int64),
        "weights": None,
        "mask": None,
        "generator": seeded(),
    }
    args.update(change)
    with pytest.raises(ValueError, match=message):
        augment(**args)


def test_bad_field_raises():
    image, labels, _, _ = batch((1, 1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        warp(image, labels, field=torch.zeros(1, 8, 8, 2))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"grid": 1}, "grid"),
        ({"grid": 2.5}, "grid"),
        ({"brightness": (0.2, 0.1)}, "brightness"),
        ({"contrast": (0.0, 1.0)}, "contrast"),
        ({"gamma": (2.0, 1.0)}, "gamma"),
        ({"gamma": (1.0,)}, "gamma"),
    ],
)
def test_bad_settings_raise(settings, message):
    with pytest.raises(ValueError, match=message):
        AugmentSettings(**settings)


def test_settings_are_frozen_and_serialisable():
    settings = AugmentSettings(contrast=[0.9, 1.1])
    assert settings.contrast == (0.9, 1.1)
    assert dataclasses.asdict(settings)["sigma"] == 10.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.sigma = 3.0


@pytest.mark.gpu
def test_cuda_runs_on_the_device_and_matches_the_cpu():
    image, labels, weights, mask = batch((4, 2, 64, 64))
    labels[0, :8, :8] = 2**40 + 3
    cpu = augment(image, labels, weights, mask, generator=seeded(7))
    moved = (t.cuda() for t in (image, labels, weights, mask))
    gpu = augment(*moved, generator=seeded(7))
    for a, b in zip(cpu, gpu, strict=True):
        assert b.device.type == "cuda"
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(gpu[2].cpu(), cpu[2], atol=1e-3, rtol=1e-4)
    # Positions are rounded to pixels: a position within rounding of a half pixel may
    # fall either way on the two devices.
    assert (gpu[1].cpu() == cpu[1]).float().mean() > 0.999
    assert set(gpu[1].unique().tolist()) <= set(labels.unique().tolist())

    on_device = torch.Generator(device="cuda")
    first = augment(*(t.cuda() for t in (image, labels)), generator=on_device.manual_seed(1))
    again = augment(*(t.cuda() for t in (image, labels)), generator=on_device.manual_seed(1))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
