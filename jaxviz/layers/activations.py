"""Activations: Keras's ``activation=`` strings and the activation layers (ReLU, Softmax, LeakyReLU, …); every
plain ReLU goes through ``ops.relu`` and every other elementwise nonlinearity through ``ops.nonlinear``."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ..errors import JaxvizError
from ..ops import Ops
from .registry import kind, weight


def _relu_family(x, ops: Ops):
    return ops.relu(x)


def _clip6(x):
    return jnp.clip(x, jnp.asarray(0, x.dtype), jnp.asarray(6, x.dtype))


def _relu6(x, ops: Ops):
    # The ReLU part goes through ops.relu, so guided backprop's override applies to it.
    return ops.nonlinear(_clip6, x, lambda v: jnp.minimum(ops.relu(v), jnp.asarray(6, v.dtype)))


def _hard_sigmoid_fn(x):
    """Keras 3's ``hard_sigmoid``: ``relu6(x + 3) / 6``."""
    return jnp.clip(x + 3, 0, 6) / 6


def _hard_sigmoid(x, ops: Ops):
    return ops.nonlinear(_hard_sigmoid_fn, x)


def _hard_sigmoid_keras2(x):
    """Keras 2's (tf.keras) ``hard_sigmoid``: ``clip(0.2 x + 0.5, 0, 1)``; :mod:`jaxviz.frontends.keras` renames
    ``hard_sigmoid`` to this in files Keras 2 wrote."""
    return jnp.clip(jnp.asarray(0.2, x.dtype) * x + jnp.asarray(0.5, x.dtype), 0, 1)


#: The elementwise activations other than the ReLU's, each one function (one nonlinearity for DeepLIFT's
#: Rescale rule: :meth:`jaxviz.ops.Ops.nonlinear`).
ELEMENTWISE: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    # Keras 2 and 3 both default to the exact (erf) GELU for the "gelu" string.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "exponential": jnp.exp,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.2),  # Keras 3's default negative_slope
    "hard_sigmoid": _hard_sigmoid_fn,
    "hard_sigmoid_keras2": _hard_sigmoid_keras2,
    "hard_swish": lambda x: x * _hard_sigmoid_fn(x),
    "hard_silu": lambda x: x * _hard_sigmoid_fn(x),
}


def _elementwise(f):
    return lambda x, ops: ops.nonlinear(f, x)


ACTIVATIONS: dict[str, Callable[[jax.Array, Ops], jax.Array]] = {
    "linear": lambda x, ops: x,
    "relu": _relu_family,
    "relu6": _relu6,
    "softmax": lambda x, ops: jax.nn.softmax(x, axis=-1),
    "log_softmax": lambda x, ops: jax.nn.log_softmax(x, axis=-1),
    **{name: _elementwise(f) for name, f in ELEMENTWISE.items()},
}


def apply_activation(name, x: jax.Array, ops: Ops) -> jax.Array:
    """Keras's ``activation=`` string (or serialised activation) applied to ``x``."""
    if isinstance(name, dict):  # Keras 3 may serialise {"module": "keras.activations", "config": ..., ...}
        cfg = name.get("config")
        name = (cfg if isinstance(cfg, str) else (cfg or {}).get("name")) or name.get("class_name")
    name = "linear" if name in (None, "") else str(name)
    fn = ACTIVATIONS.get(name)
    if fn is None:
        raise JaxvizError(f"activation {name!r} is not supported; supported: {', '.join(sorted(ACTIVATIONS))}")
    return fn(x, ops)


@kind("Activation")
def activation(p, inputs, cfg, ops):
    return inputs[0], cfg.get("activation", "linear")


@kind("Softmax")
def softmax(p, inputs, cfg, ops):
    axis = cfg.get("axis", -1)
    return jax.nn.softmax(inputs[0], axis=tuple(axis) if isinstance(axis, list) else axis)


@kind("ReLU")
def relu(p, inputs, cfg, ops):
    """Keras's ``ReLU(max_value, negative_slope, threshold)``; the default one is ``ops.relu`` (guided backprop's
    override applies), ``max_value=6`` is :func:`_relu6`."""
    x = inputs[0]
    max_value, slope, threshold = cfg.get("max_value"), float(cfg.get("negative_slope") or 0), \
        float(cfg.get("threshold") or 0)
    if slope == 0 and threshold == 0:
        if max_value is None:
            return ops.relu(x)
        if float(max_value) == 6:
            return _relu6(x, ops)
        top = float(max_value)
        return ops.nonlinear(lambda v: jnp.clip(v, 0, jnp.asarray(top, v.dtype)), x,
                             lambda v: jnp.minimum(ops.relu(v), jnp.asarray(top, v.dtype)))
    return ops.nonlinear(lambda v: _keras_relu(v, max_value, slope, threshold), x)


def _keras_relu(x, max_value, slope: float, threshold: float):
    """Keras's general formula (keras.activations.relu)."""
    if slope != 0 and max_value is None and threshold == 0:
        return jax.nn.leaky_relu(x, slope)
    negative = jax.nn.relu(threshold - x) if threshold != 0 else jax.nn.relu(-x)
    y = x * (x > threshold).astype(x.dtype) if threshold != 0 else jax.nn.relu(x)
    if max_value is not None:
        y = jnp.clip(y, 0, jnp.asarray(max_value, x.dtype))
    if slope != 0:
        y = y - jnp.asarray(slope, x.dtype) * negative
    return y


@kind("Clip")
def clip(p, inputs, cfg, ops):
    """``min(max(x, min), max)`` (ONNX's ``Clip``; either bound may be absent). ``Clip(0, 6)`` and ``Clip(0, ∞)``
    are read as :func:`relu` layers, so guided backprop treats them as ReLUs."""
    x = inputs[0]
    lo, hi = cfg.get("min"), cfg.get("max")
    lo, hi = (None if v is None else jnp.asarray(v, x.dtype) for v in (lo, hi))
    return ops.nonlinear(lambda v: jnp.clip(v, lo, hi), x)


@kind("HardSigmoid")
def hard_sigmoid(p, inputs, cfg, ops):
    """``clip(alpha·x + beta, 0, 1)`` (ONNX's ``HardSigmoid``; PyTorch's ``Hardsigmoid`` is alpha = 1/6)."""
    x = inputs[0]
    alpha, beta = jnp.asarray(cfg.get("alpha", 0.2), x.dtype), jnp.asarray(cfg.get("beta", 0.5), x.dtype)
    return ops.nonlinear(lambda v: jnp.clip(alpha * v + beta, 0, 1), x)


@kind("Erf")
def erf(p, inputs, cfg, ops):
    return ops.nonlinear(jax.lax.erf, inputs[0])


@kind("LeakyReLU")
def leaky_relu(p, inputs, cfg, ops):
    slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))  # Keras 3: negative_slope; Keras 2: alpha
    slope = 0.3 if slope is None else slope
    return ops.nonlinear(lambda v: jax.nn.leaky_relu(v, jnp.asarray(slope, v.dtype)), inputs[0])


@kind("ELU")
def elu(p, inputs, cfg, ops):
    alpha = cfg.get("alpha", 1.0)
    return ops.nonlinear(lambda x: jnp.where(x > 0, x, jnp.asarray(alpha, x.dtype) * jnp.expm1(jnp.minimum(x, 0))),
                         inputs[0])


@kind("PReLU")
def prelu(p, inputs, cfg, ops):
    x = inputs[0]
    alpha = weight(p, "alpha", x)
    return ops.nonlinear(lambda v: jax.nn.relu(v) - alpha * jax.nn.relu(-v), x)
