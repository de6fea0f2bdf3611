"""``napari-unet train``: a new network, a fine-tuned one (``--init``) or a run
continued (``--resume``), driven with a progress bar."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
import threading

from .cli_files import read_all, writable_folder

NETWORK = ("width", "depth", "padding", "norm", "channels")  # what --init and --resume keep
CONTROL = ("validate_every", "checkpoint_every", "keep_best")  # --resume may change them


def train_command(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .core.events import Done, Notice, Progress, Validation
    from .core.train import Trainer

    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder: give the model file to write")
    start = args.resume or args.init
    kept = [f"--{name}" for name in NETWORK if name in args.given]
    if start is not None and kept:
        flag = "--resume" if args.resume else "--init"
        raise ValueError(f"{', '.join(kept)} shape a new network; {flag} keeps that of {start}")
    model, saved = _start(args)
    config = _resumed_config(args, saved) if args.resume else _config(args)
    pairs, validation = _pairs(args, model.in_channels)
    # A run resumed reports and saves as it did, unless told otherwise.
    control = [name for name in CONTROL if name in args.given or not args.resume]
    config = dataclasses.replace(
        config,
        **{name: getattr(args, name) for name in control},
        tile=_fitting(model, config.tile, pairs),
        device=args.device,
        preview_every=0,
        out=str(args.out),
    )
    writable_folder(args.out.parent, "--out")  # before training, not after
    if args.resume:
        trainer = Trainer.from_checkpoint(args.resume, pairs, config, validation=validation)
        minutes = trainer.seconds / 60
        print(f"resuming {args.resume} at step {trainer.step}, {minutes:.1f} minutes in")
    else:
        trainer = Trainer(model, pairs, config, normalize=args.init is None, validation=validation)
    endless = config.steps >= _ENDLESS
    with (
        tqdm(
            total=None if endless else config.steps,
            initial=trainer.step,
            unit="step",
            file=sys.stderr,
        ) as bar,
        _stop_on_signals(trainer, bar.write),
    ):
        for event in trainer.run():
            if isinstance(event, Progress):
                bar.update(event.step - bar.n)
                bar.set_postfix(loss=f"{event.loss:.4f}")
            elif isinstance(event, Validation):
                bar.write(
                    f"step {event.step}: validation loss {event.loss:.4f}, pixel error "
                    f"{event.pixel_error:.4f}, adapted Rand error {event.rand_error:.4f}, "
                    f"VI {event.vi:.4f}"
                )
            elif isinstance(event, Notice):
                bar.write(event.message)
            elif isinstance(event, Done):
                print(f"saved {event.path} after {event.step} steps")


# The step budget of a run given minutes alone: it runs until the time is up.
_ENDLESS = 10**9


def _start(args: argparse.Namespace):
    """The network to train, and the settings saved with it (empty for a new one)."""
    from .core.checkpoint import load
    from .core.model import UNet

    if args.resume or args.init:
        return load(args.resume or args.init)
    shape = {name: getattr(args, name) for name in ("width", "depth", "padding", "norm")}
    return UNet(in_channels=args.channels, **shape), {}


def _pairs(args: argparse.Namespace, channels: int):
    from .core.data import make_pairs, split_validation

    def pairs(images, labels):
        names = [f"{i.name} / {lab.name}" for i, lab in zip(images, labels, strict=False)]
        return make_pairs(
            read_all(images, channels=channels),
            read_all(labels, labels=True),
            in_channels=channels,
            names=names,
        )

    if args.val_images or args.val_labels:
        return pairs(args.images, args.labels), pairs(args.val_images, args.val_labels)
    training, validation = split_validation(pairs(args.images, args.labels), args.val_fraction)
    if args.val_fraction and not validation:
        print(
            f"--val-fraction {args.val_fraction:g}: nothing held out, as there are fewer than "
            "5 training slices or the others hold no cell"
        )
    return training, validation


def _budget(args: argparse.Namespace) -> dict:
    return {"steps": args.steps or (_ENDLESS if args.minutes else 1000), "minutes": args.minutes}


def _config(args: argparse.Namespace):
    from .core.config import TrainConfig

    preset = TrainConfig.paper() if args.preset == "paper" else TrainConfig()
    return dataclasses.replace(
        preset,
        **_budget(args),
        batch_size=args.batch,
        tile=args.tile,
        lr=args.lr,
        optimizer=args.optimizer,
        schedule=args.schedule,
        w0=args.w0,
        sigma=args.sigma,
        class_balance=args.class_balance,
        ignore_outline=args.ignore_outline,
        seed=args.seed,
    )


def _resumed_config(args: argparse.Namespace, saved: dict):
    """The settings of the run saved in ``--resume``, with a new budget if one is given."""
    from .core.config import TrainConfig

    if "training" not in saved:
        raise ValueError(
            f"{args.resume} holds a model but no training run to resume: fine-tune it with --init"
        )
    changed = sorted("--" + name.replace("_", "-") for name in args.given - {*NETWORK, *CONTROL})
    if changed:
        raise ValueError(
            f"--resume continues the run with its own settings; to train on with other "
            f"ones ({', '.join(changed)}), fine-tune it with --init"
        )
    config = TrainConfig.from_dict(saved["training"])
    if args.steps or args.minutes:
        config = dataclasses.replace(config, **_budget(args))
    step, seconds = int(saved.get("step", 0)), float(saved.get("seconds", 0.0))
    if step >= config.steps or (config.minutes and seconds >= 60 * config.minutes):
        budget = f"{config.minutes:g} minutes" if config.minutes else f"{config.steps} steps"
        raise ValueError(
            f"{args.resume} has trained {step} steps in {seconds / 60:.1f} minutes, its whole "
            f"budget of {budget}: give more --steps or --minutes, counted from its start"
        )
    return config


def _fitting(model, tile: int, pairs) -> int:
    """``tile``, lowered where the training images are smaller (the default tile on
    small crops)."""
    from .core.train import fitting_tile, tile_sizes

    largest = max(max(p.labels.shape) for p in pairs)
    if tile_sizes(model, tile)[1] <= largest:
        return tile
    tile = fitting_tile(model, tile, largest)
    print(f"tile lowered to {tile} pixels, the largest the training images fit")
    return tile


@contextlib.contextmanager
def _stop_on_signals(trainer, say):
    """The first Ctrl-C (SIGINT), or SIGTERM as a batch system sends at a time
    limit, stops ``trainer`` after its step, which saves the model; a second one
    has its usual effect at once. Only the main thread receives signals: called
    from another, this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if previous[signal.SIGINT] is None:  # installed outside Python: give Ctrl-C its usual effect
        previous[signal.SIGINT] = signal.default_int_handler
    if previous[signal.SIGTERM] is None:
        previous[signal.SIGTERM] = signal.SIG_DFL

    def restore():
        for number, handler in previous.items():
            signal.signal(number, handler)

    def stop(number, _):
        name = "Ctrl-C" if number == signal.SIGINT else signal.Signals(number).name
        say(f"stopping after this step and saving the model ({name} again to quit now)")
        trainer.stop()
        restore()

    for number in previous:
        signal.signal(number, stop)
    try:
        yield
    finally:
        restore()
