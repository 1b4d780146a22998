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
    """The Keras model matching ``model``, with ``model.params`` copied in by name: Keras's application for
    VGG16/VGG19, else (the demo networks) the same layers built with Keras's own Conv2D/MaxPooling2D/Dense."""
    keras = import_keras()
    builders = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}
    if input_shape is None and not model.include_top:
        input_shape = (224, 224, 3)
    if model.arch.name in builders:
        kmodel = builders[model.arch.name](weights=None, include_top=model.include_top, input_shape=input_shape)
    else:
        kmodel = _keras_vgg(keras, model, input_shape)
    for name, p in model.params.items():
        kmodel.get_layer(name).set_weights([np.asarray(p["kernel"]), np.asarray(p["bias"])])
    return kmodel


def _keras_vgg(keras, model: Model, input_shape=None):
    """A Keras functional model with ``model``'s layers and names, for architectures Keras does not ship."""
    from . import vgg

    if not hasattr(model, "arch") or not isinstance(model.arch, vgg.Arch):
        raise JaxvizError("compare-keras works for VGG-family models (vgg16, vgg19, vgg_demo, vgg_demo_gap)")
    a = model.arch
    L = keras.layers
    shape = tuple(input_shape) if input_shape is not None else (a.default_size, a.default_size, 3)
    inp = keras.Input(shape=shape, name="input_layer")
    h = inp
    for b, (n, f) in enumerate(zip(a.convs_per_block, a.block_features), 1):
        for c in range(1, n + 1):
            h = L.Conv2D(f, 3, padding="same", activation="relu", name=f"block{b}_conv{c}")(h)
        h = L.MaxPooling2D(2, 2, name=f"block{b}_pool")(h)
    if model.include_top:
        if a.head == "gap":
            h = L.GlobalAveragePooling2D(name="global_average_pooling")(h)
        else:
            h = L.Flatten(name="flatten")(h)
        for i, f in enumerate(a.fc_features, 1):
            h = L.Dense(f, activation="relu", name=f"fc{i}")(h)
        h = L.Dense(a.num_classes, activation="softmax", name="predictions")(h)
    return keras.Model(inp, h, name=a.name)


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
