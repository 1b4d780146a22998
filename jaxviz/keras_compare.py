"""Numerical comparison with Keras on the same weights (needs the optional ``keras`` extra).

Keras runs with the JAX backend (``KERAS_BACKEND=jax`` is set here if no backend was chosen), so no
TensorFlow is needed. Both sides run under ``jax.default_matmul_precision("highest")``: full float32
convolutions and matmuls, the setting parity is defined in.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from .errors import JaxvizError
from .model import Model

#: Layers compared: every block's end, fc2 and the probabilities (those present in the model).
COMPARED = ("block1_pool", "block2_pool", "block3_pool", "block4_pool", "block5_pool", "fc2", "predictions")


def import_keras():
    """Imports Keras with the JAX backend, or fails with one line saying how to install it."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError:
        raise JaxvizError("Keras is not installed; install it with: pip install 'jaxviz[keras]'") from None
    return keras


def keras_model(model: Model, input_shape=None):
    """The Keras application matching ``model`` (VGG16/VGG19), with ``model.params`` copied in by name."""
    keras = import_keras()
    builders = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}
    if model.arch.name not in builders:
        raise JaxvizError(f"Keras has no {model.arch.name}; compare-keras works for vgg16 and vgg19")
    if input_shape is None and not model.include_top:
        input_shape = (224, 224, 3)
    kmodel = builders[model.arch.name](weights=None, include_top=model.include_top, input_shape=input_shape)
    for name, p in model.params.items():
        kmodel.get_layer(name).set_weights([np.asarray(p["kernel"]), np.asarray(p["bias"])])
    return kmodel


def compare(model: Model, x, layers=COMPARED) -> list[dict]:
    """Runs jaxviz and Keras on the preprocessed batch ``x``; per layer: max|Δ|, max|ref|, their ratio."""
    x = np.asarray(x, np.float32)
    with jax.default_matmul_precision("highest"):
        kmodel = keras_model(model, input_shape=x.shape[1:])
    return compare_with(model, kmodel, x, layers)


def compare_with(model: Model, kmodel, x, layers=COMPARED) -> list[dict]:
    """:func:`compare` against a given Keras model (same weights, same layer names)."""
    keras = import_keras()
    layers = [name for name in layers if name in model.layer_names]
    x = np.asarray(x, np.float32)
    with jax.default_matmul_precision("highest"):
        probe = keras.Model(kmodel.inputs, [kmodel.get_layer(n).output for n in layers])
        ref = probe.predict(x, verbose=0)
        ours = model.features(x, layers)
    rows = []
    for name, r in zip(layers, ref):
        d = float(np.max(np.abs(np.asarray(ours[name]) - r)))
        m = float(np.max(np.abs(r)))
        rows.append({"layer": name, "max_abs_diff": d, "max_abs_ref": m, "rel": d / m if m else d})
    return rows
