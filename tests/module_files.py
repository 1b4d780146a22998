"""Loading a Python file that is not on the import path as a module: a script of ``scripts/`` (the peer
comparisons, the gallery) or one file of a reference package whose ``__init__`` needs more than the test does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_module(name: str, path: Path):
    """The file at ``path`` executed as a new module called ``name`` (not registered in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_script(stem: str):
    """``scripts/{stem}.py`` as a module named ``stem``."""
    return load_module(stem, SCRIPTS / f"{stem}.py")
