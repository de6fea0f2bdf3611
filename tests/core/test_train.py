import threading
import time

import numpy as np
import pytest
import torch

from napari_unet.core import checkpoint
from napari_unet.core.config import TrainConfig
from napari_unet.core.data import TileSampler, make_pairs, split_validation, target_and_weights
from napari_unet.core.events import Done, Notice, Paused, Preview, Progress, Saved, Validation
from napari_unet.core.model import UNet
from napari_unet.core.synthetic import touching_cells
from napari_unet.core.train import Trainer, fitting_tile, tile_sizes


@pytest.fixture
def sample():
    return touching_cells((96, 96), n_cells=14, seed=0)


def tiny_model():
    torch.manual_seed(0)
    return UNet(width=8, depth=2, dropout=0.0)


def train(pairs, steps=4, trainer_args=None, **settings):
    settings = {"batch_size": 2, "tile": 36, **settings}
    trainer = Trainer(
        tiny_model(), pairs, TrainConfig(steps=steps, **settings), **(trainer_args or {})
    )
    events = list(trainer.run())
    return trainer, events


def test_loss_falls(sample):
    image, labels = sample
    _, events = train(make_pairs([image], [labels]), steps=60, lr=3e-3)
    losses = [e.loss for e in events if isinstance(e, Progress)]
    assert len(losses) == 60 and isinstance(events[-1], Done)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])


def test_stop_keeps_a_loadable_checkpoint(sample, tmp_path):
    image, labels = sample
    trainer = Trainer(
        tiny_model(),
        make_pairs([image], [labels]),
        TrainConfig(steps=100, batch_size=1, tile=36, out=str(tmp_path / "m")),
    )
    for event in trainer.run():
        if isinstance(event, Progress) and event.step == 3:
            trainer.stop()
    assert event == Done(3, True, tmp_path / "m.safetensors")
    model, config = checkpoint.load(event.path)
    assert config["step"] == 3 and config["training"]["tile"] == 36
    assert model.input_std.item() != 1.0  # normalisation saved with the model


def test_same_seed_same_model(sample):
    pairs = make_pairs([sample[0]], [sample[1]])
    a, _ = train(pairs)
    b, _ = train(pairs)
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key


def test_unannotated_pixels_change_nothing(sample):
    image, labels = sample
    annotated = np.zeros(labels.shape, bool)
    annotated[:, :50] = True
    other = labels.copy()
    other[:, 60:] = 0
    first, _ = train(make_pairs([image], [labels], [annotated]))
    second, _ = train(make_pairs([image], [other], [annotated]))
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key


def test_binary_masks_become_instances(sample):
    _, labels = sample
    mask = np.where(labels > 0, 255, 0).astype(np.uint8)
    pair = make_pairs([np.zeros(labels.shape)], [mask])[0]
    assert pair.labels.max() > 1


def test_stacks_give_one_pair_per_slice(sample):
    image, labels = sample
    assert len(make_pairs([np.stack([image] * 3)], [np.stack([labels] * 3)])) == 3


def test_unpainted_planes_train_only_inside_a_region(sample):
    image, labels = sample
    stack = np.zeros((5, *labels.shape), labels.dtype)
    stack[4] = labels
    images = [np.stack([image] * 5)]
    (pair,) = make_pairs(images, [stack])
    assert pair.annotated.all() and pair.labels.max() > 0
    region = np.zeros(stack.shape, bool)
    region[[0, 4]] = True  # slice 0 marked as annotated: no cell there
    empty, painted = make_pairs(images, [stack], [region])
    assert empty.labels.max() == 0 and empty.annotated.all() and painted.labels.max() > 0


def test_a_cell_free_image_trains_as_background_but_an_unpainted_slice_does_not(sample):
    image, labels = sample
    empty = np.zeros_like(labels)
    _, background = make_pairs([image, image], [labels, empty])
    assert background.annotated.all() and background.labels.max() == 0
    assert len(make_pairs([np.stack([image, image])], [np.stack([labels, empty])])) == 1


def test_negative_labels_mark_unannotated_pixels(sample):
    image, labels = sample
    marked = np.where(np.arange(labels.shape[1]) < 40, -1, labels).astype(np.int32)
    (pair,) = make_pairs([image], [marked])
    assert not pair.annotated[:, :40].any() and pair.annotated[:, 40:].all()
    assert pair.labels.min() == 0
    mask = np.where(labels > 0, 255, -1).astype(np.int16)  # cells and "not annotated"
    (pair,) = make_pairs([image], [mask])
    assert np.array_equal(pair.annotated, labels > 0) and pair.labels.max() > 0


def test_holding_out_never_takes_every_painted_slice(sample):
    image, labels = sample
    stack = np.zeros((10, *labels.shape), labels.dtype)
    stack[4] = labels
    region = np.ones(stack.shape, bool)  # every slice annotated, cells only on slice 4
    pairs = make_pairs([np.stack([image] * 10)], [stack], [region])
    assert split_validation(pairs, 0.2) == (pairs, [])
    trainer = Trainer(tiny_model(), pairs, TrainConfig(steps=2, batch_size=2, tile=36))
    assert isinstance(list(trainer.run())[-1], Done)


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        # The image's own shape, not with the channel axis it is given inside:
        (
            [np.zeros((20, 20))],
            [np.zeros((20, 21), int)],
            r"image of shape \(20, 20\) and labels of shape \(20, 21\) do not match",
        ),
        ([np.zeros((20, 20))], [np.zeros((20, 20), int)], "no labelled pixel"),
        ([np.full((20, 20), np.nan)], [np.ones((20, 20), int)], "NaN"),
        ([np.zeros((20, 20))], [np.zeros((20, 20))], "integers"),
        # No "annotated regions" where none were given (the command line's case):
        ([np.zeros((20, 20))] * 2, [np.ones((20, 20), int)], "^2 images, 1 label images: give"),
    ],
)
def test_bad_input_before_training(images, labels, match):
    with pytest.raises(ValueError, match=match):
        make_pairs(images, labels)


def test_a_region_that_leaves_out_every_cell_is_named():
    labels = np.zeros((20, 20), int)
    labels[2:6, 2:6] = 1
    region = np.zeros((20, 20), bool)
    with pytest.raises(ValueError, match="'cells': the annotated region is empty"):
        make_pairs([np.zeros((20, 20))], [labels], [region], names=["cells"])
    region[10:, 10:] = True
    with pytest.raises(ValueError, match="'cells': no painted cell lies inside"):
        make_pairs([np.zeros((20, 20))], [labels], [region], names=["cells"])


def test_ignore_outline_zeroes_the_edges_of_wide_background_only():
    labels = np.zeros((30, 50), int)
    labels[5:15, 5:15] = 1
    labels[5:15, 15:25] = 2  # touches 1: a one-pixel gap opens at column 14
    labels[5:15, 27:35] = 3  # two background columns from 2
    labels[5:15, 38:45] = 4  # three from 3
    pair = make_pairs([np.zeros(labels.shape)], [labels])[0]
    target, kept = target_and_weights(pair, 3.0, 5.0, False, ignore_outline=False)
    same_target, weights = target_and_weights(pair, 3.0, 5.0, False, ignore_outline=True)
    assert np.array_equal(target, same_target)
    dropped = kept != weights
    assert np.all(weights[dropped] == 0) and np.all(target[dropped] == 0)
    assert np.all(kept > 0)
    rows = slice(6, 14)
    assert np.all(weights[rows, 14] > 0)  # the separation gap
    assert np.all(weights[rows, 25:27] > 0)  # two pixels wide: every pixel touches a cell
    assert np.all(weights[rows, 35] == 0) and np.all(weights[rows, 37] == 0)
    assert np.all(weights[rows, 36] > 0)  # three wide: only its centre is away from cells
    assert np.all(weights[4, 6:14] == 0) and np.all(weights[3, 6:14] > 0)  # wide background
    assert np.array_equal(weights[target == 1], kept[target == 1])


@pytest.mark.parametrize(("in_size", "out_size"), [(40, 40), (64, 40)])
def test_output_windows_lie_inside_images_that_hold_them(in_size, out_size):
    labels = np.ones((60, 80), int)
    annotated = np.zeros(labels.shape, bool)
    annotated[0, 0] = annotated[-1, -1] = annotated[0, -1] = True  # corners only
    image = np.arange(labels.size, dtype=float).reshape(labels.shape)
    sampler = TileSampler(
        make_pairs([image], [labels], [annotated]),
        in_size,
        out_size,
        torch.Generator().manual_seed(0),
        w0=3.0,
        sigma=5.0,
        class_balance=False,
        ignore_outline=True,
    )
    images, _, weights = sampler.sample(12)
    margin = (in_size - out_size) // 2
    inner = slice(margin, margin + out_size)
    for tile, weight in zip(images[:, 0, inner, inner], weights[:, inner, inner], strict=True):
        y, x = np.unravel_index(int(tile[0, 0]), labels.shape)
        assert np.array_equal(tile, image[y : y + out_size, x : x + out_size])
        assert (y, x) in [(0, 0), (0, 40), (20, 40)]
        assert np.count_nonzero(weight) == 1  # the one annotated corner in the window


def test_tile_larger_than_every_image():
    pairs = make_pairs([np.zeros((20, 20))], [np.ones((20, 20), int)])
    with pytest.raises(ValueError, match="larger than every"):
        Trainer(tiny_model(), pairs, TrainConfig(tile=100))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_the_fitting_tile_is_the_largest_the_trainer_accepts(padding):
    model = UNet(width=4, depth=2, padding=padding)
    for largest in (20, 37, 64):
        tile = fitting_tile(model, 256, largest)
        assert tile <= largest < tile_sizes(model, tile + 1)[1]
        pairs = make_pairs([np.zeros((largest, 9))], [np.ones((largest, 9), int)])
        assert Trainer(model, pairs, TrainConfig(tile=tile)).out_size == tile
    assert fitting_tile(model, 8, 64) == 8  # a tile that fits is kept
    with pytest.raises(ValueError, match="too small for this network"):
        fitting_tile(UNet(width=4, depth=4, padding="same"), 256, 10)


def test_resume_continues_step_and_optimizer(sample, tmp_path):
    pairs = make_pairs([sample[0]], [sample[1]])
    first, events = train(pairs, steps=3, out=str(tmp_path / "m"))
    resumed = Trainer.from_checkpoint(events[-1].path, pairs)
    assert resumed.step == 3 and resumed.config == first.config
    saved = first.optimizer.state_dict()["state"]
    loaded = resumed.optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    for index, state in saved.items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(loaded[index][name]))
    more = Trainer.from_checkpoint(
        events[-1].path, pairs, TrainConfig(steps=5, batch_size=2, tile=36)
    )
    steps = [e.step for e in more.run() if isinstance(e, Progress)]
    assert steps == [4, 5]


def test_a_resumed_run_draws_new_samples(sample, tmp_path):
    pairs = make_pairs([sample[0]], [sample[1]])
    first, events = train(pairs, steps=3, out=str(tmp_path / "m"))
    fresh = Trainer(tiny_model(), pairs, first.config)
    resumed = [Trainer.from_checkpoint(events[-1].path, pairs) for _ in range(2)]
    batches = [t.sampler.sample(2)[0] for t in (fresh, *resumed)]
    assert not np.array_equal(batches[0], batches[1])  # not the first steps' tiles again
    assert np.array_equal(batches[1], batches[2])  # but the same for the same checkpoint


def test_a_resumed_time_budget_goes_on_where_it_stopped(sample, tmp_path):
    pairs = make_pairs([sample[0]], [sample[1]])
    config = TrainConfig(steps=10**6, minutes=1, batch_size=2, tile=36, out=str(tmp_path / "m"))
    trainer = Trainer(tiny_model(), pairs, config)
    trainer.seconds = 30.0  # half the budget spent
    path = trainer.save()
    resumed = Trainer.from_checkpoint(path, pairs)
    assert resumed.seconds == 30.0
    for event in resumed.run():
        if isinstance(event, Progress):
            resumed.stop()
    # The cosine schedule at half its budget, not back at its start.
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * config.lr, rel=0.02)
    resumed.seconds = 61.0
    path = resumed.save()
    spent = Trainer.from_checkpoint(path, pairs)  # the whole budget used: no more steps
    assert not any(isinstance(e, Progress) for e in spent.run())
    assert spent.step == resumed.step


def test_fine_tune_keeps_the_normalisation(sample, tmp_path):
    image, labels = sample
    _, events = train(make_pairs([image], [labels]), steps=2, out=str(tmp_path / "m"))
    model, _ = checkpoint.load(events[-1].path)
    before = model.config["input_mean"]
    brighter = make_pairs([image * 3 + 1], [labels])
    tuned = Trainer(model, brighter, TrainConfig(steps=2, batch_size=1, tile=36), normalize=False)
    list(tuned.run())
    assert tuned.model.config["input_mean"] == before and tuned.step == 2


def test_validation_preview_and_checkpoint_events(sample, tmp_path):
    image, labels = sample
    pairs = make_pairs([image], [labels])
    trainer, events = train(
        pairs,
        steps=4,
        trainer_args={"validation": pairs, "preview": image},
        validate_every=2,
        preview_every=3,
        checkpoint_every=2,
        out=str(tmp_path / "m"),
    )
    validations = [e for e in events if isinstance(e, Validation)]
    assert [v.step for v in validations] == [2, 4]
    for v in validations:
        assert v.loss > 0 and 0 <= v.pixel_error <= 1 and 0 <= v.rand_error <= 1 and v.vi >= 0
    previews = [e for e in events if isinstance(e, Preview)]
    assert [p.step for p in previews] == [3]
    assert previews[0].probability.shape == image.shape
    assert [e.step for e in events if isinstance(e, Saved)] == [2, 4, 4]
    assert trainer.model.training is False


def test_validation_of_partial_annotations_skips_rand_error(sample):
    image, labels = sample
    annotated = np.zeros(labels.shape, bool)
    annotated[:48] = True
    pairs = make_pairs([image], [labels], [annotated])
    trainer = Trainer(tiny_model(), pairs, TrainConfig(tile=36), validation=pairs)
    scores = trainer.validate()
    assert np.isnan(scores.rand_error) and 0 <= scores.pixel_error <= 1


def test_a_bad_preview_image_is_refused_before_training(sample):
    pairs = make_pairs([sample[0]], [sample[1]])
    with pytest.raises(ValueError):
        Trainer(tiny_model(), pairs, TrainConfig(tile=36), preview=np.zeros((3, 4, 40, 40)))


def test_pause_holds_between_steps_and_stop_ends_a_pause(sample):
    pairs = make_pairs([sample[0]], [sample[1]])
    trainer = Trainer(tiny_model(), pairs, TrainConfig(tile=36))
    run = trainer.run()
    first = next(run)
    assert isinstance(first, Progress)
    trainer.pause()
    assert next(run) == Paused(1)
    threading.Timer(0.6, trainer.resume).start()
    held = time.monotonic()
    events = []
    while not events or isinstance(events[-1], Paused):
        events.append(next(run))
    assert time.monotonic() - held >= 0.55
    assert set(events[:-1]) == {Paused(1)} and len(events) >= 3  # repeated while held
    assert isinstance(events[-1], Progress) and events[-1].step == 2
    # The time trained, for progress bars: the pause is left out.
    assert 0 < events[-1].seconds - first.seconds < 0.5
    trainer.pause()
    assert next(run) == Paused(2)
    threading.Timer(0.1, trainer.stop).start()
    assert list(run)[-1] == Done(2, True, None)


def test_an_abandoned_run_still_saves_its_checkpoint(sample, tmp_path):
    pairs = make_pairs([sample[0]], [sample[1]])
    trainer = Trainer(tiny_model(), pairs, TrainConfig(tile=36, out=str(tmp_path / "m")))
    run = trainer.run()
    for event in run:
        if isinstance(event, Progress) and event.step == 2:
            break
    run.close()
    _, saved = checkpoint.load(tmp_path / "m.safetensors")
    assert saved["step"] == 2


def test_out_of_memory_halves_batch_then_tile(sample, monkeypatch):
    trainer = Trainer(
        tiny_model(),
        make_pairs([sample[0]], [sample[1]]),
        TrainConfig(steps=2, batch_size=2, tile=36),
    )
    forward = trainer.model.forward
    failures = iter([True, True])

    def failing(x):
        if next(failures, False):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return forward(x)

    monkeypatch.setattr(trainer.model, "forward", failing)
    events = list(trainer.run())
    notices = [(e.message, e.level) for e in events if isinstance(e, Notice)]
    assert notices == [
        ("out of memory: batch halved to 1", "warning"),
        (f"out of memory: tile halved to {trainer.out_size} output pixels", "warning"),
    ]
    assert trainer.config.batch_size == 1 and trainer.out_size < 36
    assert events[-1] == Done(2, False, None)


def test_cosine_schedule_ends_near_zero(sample):
    trainer, _ = train(make_pairs([sample[0]], [sample[1]]), steps=5, schedule="cosine")
    assert trainer.optimizer.param_groups[0]["lr"] < 0.1 * trainer.config.lr


def test_config_round_trip_and_typos():
    config = TrainConfig(steps=7, schedule="cosine")
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown training settings: stpes"):
        TrainConfig.from_dict({**config.to_dict(), "stpes": 3})
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="seed"):
        TrainConfig(seed=-1)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("lr", float("nan")),
        ("minutes", float("nan")),
        ("minutes", float("inf")),
        ("momentum", 5.0),
        ("w0", -1.0),
        ("sigma", 0.0),
        ("device", "gpu"),
    ],
)
def test_settings_out_of_bounds_are_refused(setting, value):
    # A NaN budget would never end; the others fail later, or nowhere.
    with pytest.raises(ValueError, match=setting):
        TrainConfig(**{setting: value})


def test_keep_best_without_a_validation_set_is_refused(sample):
    pairs = make_pairs([sample[0]], [sample[1]])
    with pytest.raises(ValueError, match="keep_best needs a validation set"):
        Trainer(tiny_model(), pairs, TrainConfig(tile=36, keep_best=True))


def test_split_validation_spreads_the_held_out_pairs(sample):
    image, labels = sample
    pairs = make_pairs([np.stack([image] * 10)], [np.stack([labels] * 10)])
    train_pairs, held = split_validation(pairs, 0.2)
    assert [len(split_validation(pairs, f)[1]) for f in (0.1, 0.3, 0.4, 0.5)] == [1, 3, 4, 5]
    assert len(train_pairs) == 8 and held == [pairs[4], pairs[9]]
    assert split_validation(pairs[:4], 0.2) == (pairs[:4], [])


@pytest.mark.parametrize("keep_best", [True, False])
@pytest.mark.parametrize("criterion", ["adapted Rand error", "loss"])
def test_keep_best_ends_with_the_best_validated_weights(
    sample, tmp_path, monkeypatch, keep_best, criterion
):
    pairs = make_pairs([sample[0]], [sample[1]])
    config = TrainConfig(
        steps=6,
        batch_size=1,
        tile=36,
        validate_every=2,
        keep_best=keep_best,
        out=str(tmp_path / "m"),
    )
    trainer = Trainer(tiny_model(), pairs, config, validation=pairs)
    scores = iter([0.3, 0.1, 0.2])  # the best at step 4 of 2, 4 and 6

    def scripted():
        score = next(scores)
        if criterion == "loss":  # partly annotated pairs have no Rand error
            return Validation(trainer.step, score, 0.1, float("nan"), float("nan"))
        return Validation(trainer.step, 0.5, 0.1, score, 1.0)

    monkeypatch.setattr(trainer, "validate", scripted)
    weights, notices = {}, []
    for event in trainer.run():
        if isinstance(event, Validation):
            weights[event.step] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        elif isinstance(event, Notice):
            notices.append((event.message, event.level))
    model, saved = checkpoint.load(tmp_path / "m.safetensors")
    ends_with = 4 if keep_best else 6
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[ends_with][name]), name
    assert saved["step"] == 6 and weights[4]["head.weight"].ne(weights[6]["head.weight"]).any()
    if keep_best:
        kept = (
            f"kept the model of step 4, the best on the validation set ({criterion} 0.1000, "
            "against 0.2000 at step 6)"
        )
        assert notices == [(kept, "info")]
        assert trainer.kept_step == saved["kept_step"] == 4
    else:
        assert notices == [] and trainer.kept_step is None and "kept_step" not in saved


class _Recorded:
    """An array that records which planes are read, as a lazy (dask, zarr) stack."""

    def __init__(self, array):
        self.array, self.read = array, []
        self.shape, self.ndim, self.dtype = array.shape, array.ndim, array.dtype

    def __getitem__(self, key):
        self.read.append(key)
        return self.array[key]


def test_only_the_annotated_planes_of_a_stack_are_read():
    stack = np.random.default_rng(0).random((6, 32, 32), dtype=np.float32)
    stack[4] = np.nan  # unannotated: never read, so no reason to refuse
    labels = np.zeros(stack.shape, np.int32)
    labels[2, 5:15, 5:15] = 1
    image = _Recorded(stack)
    (pair,) = make_pairs([image], [labels])
    assert image.read == [2]
    np.testing.assert_array_equal(pair.image, stack[2][None])
    channels = _Recorded(np.stack([stack, stack]))  # (C, Z, Y, X)
    (pair,) = make_pairs([channels], [labels], in_channels=2)
    assert len(channels.read) == 1 and pair.image.shape == (2, 32, 32)
    lazy_labels = _Recorded(labels)  # read a slice at a time, never whole
    (pair,) = make_pairs([stack], [lazy_labels])
    assert lazy_labels.read == [slice(z, z + 1) for z in range(6)]
    np.testing.assert_array_equal(pair.labels, labels[2])
    stack[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make_pairs([stack], [labels])
