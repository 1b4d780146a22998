"""The model-file front end: whole-model files (Keras ``.keras`` / ``.h5``, ONNX, jaxviz's converted ``.npz``)
read into a graph, its weights and what the file says of itself, and the rules for the weights of a file.

:func:`read_model_file` dispatches on the file to :mod:`jaxviz.frontends.keras`, :mod:`jaxviz.frontends.onnx` or
:mod:`jaxviz.frontends.npz` (each reads untrusted bytes without pickles or code); :func:`seeded_params` gives
a file's graph fresh seeded weights (the model-randomisation sanity check, ``--weights random:SEED``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from .. import graph as graph_lib
from .. import profile as profile_lib
from ..errors import JaxvizError, WeightsError
from ..interface import FrontEnd, LayerInfo
from . import keras as keras_io
from . import npz as converted
from . import onnx as onnx_io
from . import vgg

#: Values one layer of a model file may output per image at its input size (1 GiB of float32; VGG16's
#: largest, block1_conv1 at 224 px, has 3.2 M).
MAX_ACTIVATION = 1 << 28


def is_model_file(arch) -> bool:
    """Whether ``arch`` names a whole-model file (by type, suffix or existence) rather than a table row."""
    if isinstance(arch, os.PathLike):
        return True
    if not isinstance(arch, str) or arch.lower() in vgg.ARCHS:
        return False
    return arch.lower().endswith((".keras", ".h5", ".hdf5", ".npz", ".onnx")) or os.path.isfile(arch) or os.path.isfile(
        os.path.join(arch, "config.json"))  # a .keras model saved unzipped (model.save(folder, zipped=False))


def read_model_file(path) -> tuple[graph_lib.Graph, dict, dict]:
    """``(graph, params, info)`` of a whole-model file: jaxviz's converted ``.npz`` (:mod:`jaxviz.frontends.npz`),
    an ONNX ``.onnx`` (:mod:`jaxviz.frontends.onnx`), or a Keras ``.keras`` / ``.h5``
    (:mod:`jaxviz.frontends.keras`)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise JaxvizError(f"no such model file: {path}; give the path of a .keras, .h5, .onnx or converted .npz file, "
                          f"or a built-in architecture ({', '.join(sorted(vgg.ARCHS))})")
    if converted.is_model_file(path) or path.lower().endswith(".npz"):
        return converted.read_model(path)
    if path.lower().endswith(".onnx"):
        return onnx_io.read_model(path)
    return keras_io.read_model(path)


def front_end(graph: graph_lib.Graph) -> FrontEnd:
    """A file's graph (or any graph of one's own) as a front end's output: the model describes it from its
    shapes (:func:`jaxviz.describe.model_info`, :func:`jaxviz.describe.graph_layer_table`); the ``file``
    profile."""
    return FrontEnd(graph, None, profile_lib.file())


def file_weights_seed(path, weights) -> int | None:
    """For a model file: ``None`` to use its own weights (``weights="imagenet"``, every entry point's default),
    else the seed of ``"random:SEED"`` (``None``: seed 0). Any other ``weights`` is refused in one line."""
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return None
    if weights is None:
        return 0
    if isinstance(weights, str) and weights.startswith("random:") and weights[7:].strip().isdigit():
        return int(weights[7:])
    raise file_weights_error(path, weights)


def file_weights_error(path, weights) -> JaxvizError:
    """The one-line refusal of ``weights`` other than random:SEED for a whole-model file."""
    return JaxvizError(f"--weights {weights}: {path} is a whole model and holds its own weights; drop --weights to "
                       "use them, or give random:SEED for seeded random weights on its graph")


def check_activation_sizes(path, rows: Sequence[LayerInfo], shape) -> None:
    """Refuses (one line) a file whose layers output more than :data:`MAX_ACTIVATION` values per image."""
    big = next((r for r in rows if math.prod(d or 1 for d in r.output_shape) > MAX_ACTIVATION), None)
    if big is not None:
        raise WeightsError(f"{path}: layer {big.name!r} outputs {math.prod(big.output_shape):,} values per image "
                           f"(shape {big.output_shape} at input {shape}), more than the {MAX_ACTIVATION:,} "
                           "jaxviz computes; the file declares a model too large to run (a crafted file?)")


def seeded_params(graph: graph_lib.Graph, params: Mapping, seed: int = 0) -> dict:
    """Seeded, untrained weights for ``graph`` in the layout of ``params`` (a fresh Keras model's state).

    Kernels are He-normal (``N(0, 2 / fan_in)``; a depthwise kernel's fan-in is its window), biases, ``beta``
    and PReLU's ``alpha`` zero, ``gamma`` one, BatchNormalization's moving statistics a fresh layer's (mean
    0, variance 1); a Normalization layer's data statistics are kept (they are the input's preprocessing).
    Layer ``i`` (in network order) draws from numpy's PCG64 seeded with ``(seed, i)``: the same seed gives
    the same weights on every platform.
    """
    order = {name: i for i, name in enumerate(graph.layer_names)}
    out = {}
    for name, p in params.items():
        if not isinstance(p, Mapping):
            out[name] = p
            continue
        rng = np.random.default_rng([seed, order.get(name, len(order))])
        new = {}
        for key, v in p.items():
            shape = np.shape(v)
            if "kernel" in key and len(shape) >= 2:
                fan_in = int(np.prod(shape[:-2] if key == "depthwise_kernel" else shape[:-1])) or 1
                new[key] = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
            elif key in ("bias", "beta", "alpha", "moving_mean"):
                new[key] = np.zeros(shape, np.float32)
            elif key in ("gamma", "moving_variance"):
                new[key] = np.ones(shape, np.float32)
            else:
                new[key] = np.asarray(v, np.float32)
        out[name] = new
    return out
