"""The Train dock's model file rows: save the current model under a name of the
user's, or load one as the current model."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from magicgui.widgets import FileEdit, Label, PushButton

from ..core.checkpoint import load, model_path
from ._rows import row


class ModelFiles:
    """The rows "Save model as" and "Load model", with their file fields. They report
    in the dock's ``status``, and why they failed through its ``fail``; ``loaded`` is
    called after a model was loaded into the Session."""

    def __init__(
        self, session, status: Label, fail: Callable[[str], None], loaded: Callable[[], None]
    ):
        self._session, self._status, self._fail, self._loaded = session, status, fail, loaded
        self.save_file = FileEdit(filter="*.safetensors", mode="w")
        self.save_button = PushButton(text="Save model as", enabled=False)
        self.load_file = FileEdit(filter="*.safetensors", mode="r")
        self.load_button = PushButton(
            text="Load model", tooltip="As the current model; not while training."
        )
        self.rows = [
            row(self.save_file, self.save_button, labels=False),
            row(self.load_file, self.load_button, labels=False),
        ]
        self.save_button.changed.connect(self.save)
        self.load_button.changed.connect(self.load)

    def save(self) -> None:
        source, target = self._session.model_path, Path(self.save_file.value)
        if source is None:
            self._fail("There is no model to save yet: train or load one first.")
            return
        if target.name in ("", "."):
            self._fail("Choose a file name to save the model as.")
            return
        target = model_path(target)
        try:
            shutil.copyfile(source, target)
        except OSError as err:
            self._fail(f"Cannot save the model as {target}: {err}")
            return
        self._status.value = f"saved {target}"

    def load(self) -> None:
        path = Path(self.load_file.value)
        try:
            model, _ = load(path)
        except (ValueError, FileNotFoundError, IsADirectoryError) as err:
            self._fail(f"Cannot load {path.name or path}: {err}")
            return
        self._session.set_model(model, path)
        self._loaded()
        self._status.value = f"loaded {path.name}"
