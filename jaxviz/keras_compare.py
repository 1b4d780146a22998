"""Numerical comparison with Keras on the same weights (needs the optional ``keras`` extra).

Keras runs with the JAX backend (``KERAS_BACKEND=jax`` is set here if no backend was chosen), so no
TensorFlow is needed. Both sides run under ``jax.default_matmul_precision("highest")``: full float32
convolutions and matmuls, the setting parity is defined in.
"""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from .attribution.gradcam import gradcam
from .errors import JaxvizError
from .interface import VGG_FAMILY
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
    if _version_tuple(keras.__version__) < MIN_KERAS:
        raise JaxvizError(f"Keras {keras.__version__} is older than {'.'.join(map(str, MIN_KERAS))}, whose loader "
                          "closes published safe-mode bypasses; upgrade it: pip install -U 'jaxviz[keras]'")
    return keras


#: The oldest Keras whose ``load_model(safe_mode=True)`` has no published bypass (pyproject's extras agree).
MIN_KERAS = (3, 11, 3)


def _version_tuple(version: str) -> tuple:

    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def keras_model(model: Model, input_shape=None):
    """The Keras model matching ``model``, with ``model.params`` copied in by name: Keras's application for
    VGG16/VGG19, else (the demo networks) the same layers built with Keras's own Conv2D/MaxPooling2D/Dense."""
    keras = import_keras()
    builders = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}
    if input_shape is None and not model.include_top:
        input_shape = (224, 224, 3)
    if model.name in builders:
        kmodel = builders[model.name](weights=None, include_top=model.include_top, input_shape=input_shape)
    else:
        kmodel = _keras_vgg(keras, model, input_shape)
    for name, p in model.params.items():
        kmodel.get_layer(name).set_weights([np.asarray(p["kernel"]), np.asarray(p["bias"])])
    return kmodel


def _keras_vgg(keras, model: Model, input_shape=None):
    """A Keras functional model with ``model``'s layers and names, for VGG-family models Keras does not ship
    (the demo networks): built from the model's layer table with Keras's own layers."""
    if model.family != VGG_FAMILY:
        raise JaxvizError("compare-keras works for VGG-family models (vgg16, vgg19, vgg_demo, vgg_demo_gap)")
    L = keras.layers
    shape = tuple(input_shape) if input_shape is not None else (*model.input_hw, model.input_channels)
    inp = keras.Input(shape=shape, name="input_layer")
    h = inp
    rows = model.layer_table()
    for r in rows[1:]:
        if r.kind == "Conv2D":
            h = L.Conv2D(r.output_shape[-1], 3, padding="same", activation="relu", name=r.name)(h)
        elif r.kind == "MaxPooling2D":
            h = L.MaxPooling2D(2, 2, name=r.name)(h)
        elif r.kind == "GlobalAveragePooling2D":
            h = L.GlobalAveragePooling2D(name=r.name)(h)
        elif r.kind == "Flatten":
            h = L.Flatten(name=r.name)(h)
        elif r.kind == "Dense":
            last = r is rows[-1]
            h = L.Dense(r.output_shape[-1], activation="softmax" if last else "relu", name=r.name)(h)
    return keras.Model(inp, h, name=model.name)


def compare(model: Model, x, layers=COMPARED) -> list[dict]:
    """Runs jaxviz and Keras on the preprocessed batch ``x``; per layer: max|Δ|, max|ref|, their ratio.

    A model loaded from a Keras file (``jaxviz.load("model.keras")``) is compared with that same file loaded
    by Keras (:func:`compare_file`): the output, every layer of the file's top level, and Grad-CAM.
    """
    x = np.asarray(x, np.float32)
    if is_keras_file(model.source):
        return compare_file(model, x)
    with jax.default_matmul_precision("highest"):
        kmodel = keras_model(model, input_shape=x.shape[1:])
    return compare_with(model, kmodel, x, layers)


def is_keras_file(source: str) -> bool:
    return str(source).lower().endswith((".keras", ".h5", ".hdf5"))


def load_keras_file(path: str):
    """``keras.saving.load_model(path)`` (no compile), or one line saying why Keras cannot read it."""
    keras = import_keras()
    try:
        # safe_mode=True (Keras's default, stated so no change of default can turn it off): no lambda or other
        # code stored in the file is deserialised.
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many kinds for files it cannot read (e.g. Keras 2 nested .h5)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise JaxvizError(f"Keras {keras.__version__} cannot load {path} ({type(e).__name__}: {first[:200]}); "
                          "jaxviz reads it, but there is no Keras reference to compare with") from None


def compare_file(model: Model, x) -> list[dict]:
    """jaxviz against Keras running the same file: the output, each top-level layer, Grad-CAM (listing 5.42).

    Rows as :func:`compare_with`'s; the Grad-CAM row compares ``jaxviz.gradcam(model, x, score="prob")`` at
    the model's default layer with the book's recipe computed on Keras's own layers (the model up to that
    layer, then the rest of its layers applied to the map, the gradient by ``jax.grad``).
    """
    keras = import_keras()
    kmodel = load_keras_file(model.source)
    names = {lyr.name for lyr in kmodel.layers}
    layers = [n for n in model.layer_names if n in names and not isinstance(kmodel.get_layer(n), keras.Model)
              and kmodel.get_layer(n).__class__.__name__ != "InputLayer"]
    rows = compare_with(model, kmodel, x, layers)
    cam = gradcam_row(model, kmodel, x)
    return rows + ([cam] if cam is not None else [])


def _row(name: str, ours, ref) -> dict:
    d = float(np.max(np.abs(np.asarray(ours) - np.asarray(ref))))
    m = float(np.max(np.abs(ref)))
    return {"layer": name, "max_abs_diff": d, "max_abs_ref": m, "rel": d / m if m else d}


def gradcam_row(model: Model, kmodel, x) -> dict | None:
    """Grad-CAM of each image's top class, jaxviz vs the book's recipe on Keras's layers; None where the
    default layer is inside a nested model or the layers after it do not form a chain."""


    keras = import_keras()
    layer = model.cam_layer
    order = [lyr.name for lyr in kmodel.layers]
    if layer not in order:
        return None
    after = kmodel.layers[order.index(layer) + 1:]
    with jax.default_matmul_precision("highest"):
        trunk = keras.Model(kmodel.inputs, kmodel.get_layer(layer).output)
        head_in = keras.Input(tuple(trunk.output.shape[1:]))
        h = head_in
        try:
            for lyr in after:
                h = lyr(h)
        except Exception:  # a DAG after the layer: no simple head model
            return None
        if tuple(h.shape[1:]) != tuple(kmodel.layers[-1].output.shape[1:]):
            return None
        head = keras.Model(head_in, h)
        a = jnp.asarray(trunk.predict(x, verbose=0))
        tv = [jnp.array(np.asarray(v)) for v in head.trainable_variables]  # copies: Keras may donate buffers
        ntv = [jnp.array(np.asarray(v)) for v in head.non_trainable_variables]

        def score(a, t):
            p = head.stateless_call(tv, ntv, a, training=False)[0]
            if p.shape[-1] == 1:  # one sigmoid unit: class 1 is the unit (Keras's P(y = 1)), class 0 1 - p
                p = jnp.concatenate([1 - p, p], axis=-1)
            return jnp.sum(p * jax.nn.one_hot(t, p.shape[-1]))

        probs = head.stateless_call(tv, ntv, a, training=False)[0]
        t = jnp.argmax(probs, -1) if probs.shape[-1] > 1 else (probs[:, 0] >= 0.5).astype(jnp.int32)
        g = jax.grad(score)(a, t)
        ref = jax.nn.relu(jnp.mean(a * jnp.mean(g, axis=(1, 2), keepdims=True), axis=-1))
        ref = ref / jnp.maximum(jnp.max(ref, axis=(1, 2), keepdims=True), 1e-30)
        ours = gradcam(model, x, target=np.asarray(t), layer=layer, score="prob")
    return _row(f"gradcam({layer})", ours, ref)


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
