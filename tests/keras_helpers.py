"""Shared helpers of the Keras-file tests (test_layers.py, test_keras_models.py): fast Keras model building,
seeded weights, and the parity check of every layer's output."""

from __future__ import annotations

import contextlib
import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
import jax  # noqa: E402
import keras  # noqa: E402

from jaxviz import graph as graph_lib  # noqa: E402
from jaxviz import ops as ops_lib  # noqa: E402
from jaxviz.frontends import keras as keras_io  # noqa: E402


@contextlib.contextmanager
def numpy_initializers():
    """Keras's random initializers drawn with numpy while building models (their weights are replaced anyway).

    On XLA:CPU each new shape of ``jax.random`` compiles its own program (~1 s each on a busy 2-core
    machine): building ResNet50 with ``weights=None`` would spend minutes there.
    """
    import jax.numpy as jnp
    from keras.src.backend.jax import random as kr

    rng = np.random.default_rng(0)
    saved = {name: getattr(kr, name) for name in ("normal", "uniform", "truncated_normal")}

    def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        return jnp.asarray(rng.normal(mean, stddev, shape), dtype or "float32")

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        return jnp.asarray(rng.uniform(minval, maxval, shape), dtype or "float32")

    def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        return jnp.asarray(np.clip(rng.normal(0, 1, shape), -2, 2) * stddev + mean, dtype or "float32")

    kr.normal, kr.uniform, kr.truncated_normal = normal, uniform, truncated_normal
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(kr, name, fn)


REL_TOL = 1e-4  # float32 summation-order differences only


def randomize(model, seed=0):
    """Seeded weights: kernels ~ He scale, BatchNorm statistics random but keeping activations O(1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            randomize(layer, seed + 1)
            continue
        if layer.__class__.__name__ == "Normalization":
            continue  # Keras keeps the adapted statistics in other attributes than its weights: keep them
        new = []
        for w in layer.weights:
            shape, name = tuple(w.shape), w.name
            if name in ("moving_variance", "variance"):
                v = rng.uniform(0.5, 1.5, shape)
            elif name == "gamma":
                v = rng.uniform(0.5, 1.5, shape)
            elif name in ("moving_mean", "beta", "bias", "mean"):
                v = rng.normal(0, 0.1, shape)
            elif name == "count":
                v = np.full(shape, 10)
            elif name == "alpha":
                v = rng.uniform(0, 0.5, shape)
            else:
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
                if "depthwise" in name or layer.__class__.__name__ == "DepthwiseConv2D":
                    fan_in = int(np.prod(shape[:2]))
                v = rng.normal(0, np.sqrt(2.0 / max(fan_in, 1)), shape)
            new.append(np.asarray(v, np.float32))
        if new:
            layer.set_weights(new)
    return model


#: Both sides' programs compile without XLA's backend optimisations: 2–3× less compile time for the
#: 100–400-layer applications, and the same arithmetic (no fast-math; the parity is of the formulas).
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def forward_exact(graph, params, x, taps=()):
    """``graph``'s output and taps on ``x`` in the exact ops under matmul precision "highest" (one program)."""
    fn = jax.jit(lambda p, x: graph_lib.forward(graph, p, x, ops=ops_lib.EXACT, taps=tuple(taps)))
    with jax.default_matmul_precision("highest"):
        return fn.lower(params, x).compile(compiler_options=COMPILER_OPTIONS)(params, x)


def keras_outputs(model, x) -> list[np.ndarray]:
    """``model(x, training=False)`` as one compiled program (Keras's eager call compiles every op apart)."""
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    fn = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
    out = fn.lower(tv, ntv, x).compile(compiler_options=COMPILER_OPTIONS)(tv, ntv, x)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def max_rel_error(got, ref) -> float:
    """max|got − ref| / max|ref|."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-12))


def check(model, tmp_path, name="m.keras", x=None, seed=0, path=None):
    """Saves ``model``, reads it with jaxviz, compares every layer's output (taps) and the model's output.

    Returns ``(graph, params, info, {layer: max|Δ| / max|ref|})``.
    """
    if path is None:
        randomize(model, seed)
        path = tmp_path / name
        model.save(path)
    graph, params, info = keras_io.read_model(path)
    shape = tuple(model.inputs[0].shape[1:])
    if x is None:
        x = np.random.default_rng(seed + 7).normal(0, 1, (2, *shape)).astype(np.float32)
    # A layer named "logits" (MobileNetV3's) is shadowed by jaxviz's "logits" tap: compared through the output.
    names = [layer.name for layer in model.layers
             if not isinstance(layer, (keras.layers.InputLayer, keras.Model)) and layer.name != "logits"]
    ref_model = keras.Model(model.inputs, [model.get_layer(n).output for n in names] + list(model.outputs))
    refs = keras_outputs(ref_model, x)
    out, taps = forward_exact(graph, params, x, names)
    worst = {}
    for n, ref in zip(names + ["<output>"], refs):
        got = np.asarray(out if n == "<output>" else taps[n])
        assert got.shape == ref.shape, (n, got.shape, ref.shape)
        err = float(np.max(np.abs(got - ref)))
        scale = float(np.max(np.abs(ref)))
        assert err <= REL_TOL * max(scale, 1e-6), f"{n}: max|Δ| {err:.3g} vs max|ref| {scale:.3g}"
        worst[n] = err / max(scale, 1e-12)
    return graph, params, info, worst


