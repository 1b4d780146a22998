"""torchvision's model definitions for the ONNX parity tests, with seeded random weights (ImageNet weights
cannot be downloaded in CI).

The PyPI wheel of torchvision is built against CUDA torch: beside the CPU torch its C extension does not load,
and its package ``__init__`` registers that extension's operators at import, which fails. The model
definitions are plain Python and need none of it, so :func:`models` imports ``torchvision.models`` without
running the package's ``__init__`` when the normal import fails.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
import warnings

import pytest


def models():
    """``torchvision.models``, or a skip naming the missing wheel."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        pytest.skip("torchvision is not installed (pip install --no-deps torchvision==0.28.0)")
    try:
        import torchvision.models as tvm  # noqa: F401

        return tvm
    except (RuntimeError, ImportError, OSError):
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        root = os.path.dirname(spec.origin)
        package = types.ModuleType("torchvision")
        package.__path__ = [root]
        package.__spec__ = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
        package.__spec__.submodule_search_locations = [root]
        sys.modules["torchvision"] = package
        return importlib.import_module("torchvision.models")


def build(name: str, seed: int = 0):
    """``torchvision.models.<name>()`` in eval mode with torch's default initialisation under ``seed``."""
    import torch

    tvm = models()
    torch.manual_seed(seed)
    return getattr(tvm, name)().eval()


def export(model, path, size: int, dynamo: bool = False) -> str:
    """``torch.onnx.export`` of ``model`` at ``size``×``size`` with a free batch size, by the TorchScript
    exporter or (``dynamo=True``, PyTorch's default since 2.9; needs onnxscript) the dynamo exporter."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=64)
            torch.onnx.export(model, (torch.zeros(2, 3, size, size),), str(path), dynamo=True,
                              input_names=["input"], output_names=["logits"],
                              dynamic_shapes={"x": {0: batch}}, verbose=False)
        else:
            torch.onnx.export(model, torch.zeros(1, 3, size, size), str(path), dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
    return str(path)
