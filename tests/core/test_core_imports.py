import subprocess
import sys

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6",
                                  "magicgui", "superqt", "vispy"}:
            raise ImportError("GUI package imported by the core: " + name)
sys.meta_path.insert(0, Block())
import pkgutil, importlib, napari_unet.core as core
for mod in pkgutil.iter_modules(core.__path__):
    importlib.import_module("napari_unet.core." + mod.name)
import napari_unet.cli
print("ok")
"""


def test_core_imports_without_gui_packages():
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
