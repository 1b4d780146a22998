"""Keras 3 operations applied to tensors in a functional model (``x + 3.0``, ``x * (1 / 6)``: MobileNetV3's hard
sigmoid). :mod:`jaxviz.frontends.keras` reads them as kind ``"ops.<Class>"`` with ``cfg["args"]`` = the call's
arguments, ``{"__input__": i}`` marking the layer's i-th input and numbers kept as they are."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .activations import ELEMENTWISE, _hard_sigmoid, _relu6, elu
from .registry import KINDS

OPERATIONS: dict[str, Callable] = {
    "Add": jnp.add, "Subtract": jnp.subtract, "Multiply": jnp.multiply, "Divide": jnp.divide,
    "TrueDivide": jnp.true_divide, "Maximum": jnp.maximum, "Minimum": jnp.minimum, "Negative": jnp.negative,
    "Power": jnp.power, "Square": jnp.square, "Sqrt": jnp.sqrt, "Absolute": jnp.abs, "Abs": jnp.abs,
}


#: Operations linear in their tensor argument when every other argument is a number (the first argument's, for
#: the divisions).
LINEAR_OPERATIONS = ("Add", "Subtract", "Negative", "Multiply")
LINEAR_NUMERATOR = ("Divide", "TrueDivide")


def tensor_args(cfg: dict) -> list[int]:
    """The positions of an operation's arguments that are layer inputs (the others are numbers)."""
    return [i for i, a in enumerate(cfg["args"]) if isinstance(a, dict)]


def _operation(name, fn):
    def apply(p, inputs, cfg, ops):
        args = [inputs[a["__input__"]] if isinstance(a, dict) else jnp.asarray(a, inputs[0].dtype)
                for a in cfg["args"]]
        tensors = tensor_args(cfg)
        linear = name in LINEAR_OPERATIONS or (name in LINEAR_NUMERATOR and tensors == [0])
        if len(tensors) != 1 or linear:
            return fn(*args)
        # one tensor and numbers: an elementwise function of that tensor (x ** 2, maximum(x, 0), 1 / x)
        i = tensors[0]
        return ops.nonlinear(lambda v: fn(*args[:i], v, *args[i + 1:]), args[i])

    return apply


for _name, _fn in OPERATIONS.items():
    KINDS["ops." + _name] = _operation(_name, _fn)

#: keras.ops activations on a tensor (``keras.ops.relu(x)``), with their config (``approximate``, ``axis``, …).
UNARY_OPERATIONS: dict[str, Callable] = {
    "Relu": lambda x, cfg, ops: ops.relu(x),
    "Relu6": lambda x, cfg, ops: _relu6(x, ops),
    "Sigmoid": lambda x, cfg, ops: ops.nonlinear(jax.nn.sigmoid, x),
    "Tanh": lambda x, cfg, ops: ops.nonlinear(jnp.tanh, x),
    "Silu": lambda x, cfg, ops: ops.nonlinear(jax.nn.silu, x),
    "HardSigmoid": lambda x, cfg, ops: _hard_sigmoid(x, ops),
    "HardSilu": lambda x, cfg, ops: ops.nonlinear(ELEMENTWISE["hard_silu"], x),
    "Elu": lambda x, cfg, ops: elu(None, [x], cfg, ops),
    "Selu": lambda x, cfg, ops: ops.nonlinear(jax.nn.selu, x),
    "Softplus": lambda x, cfg, ops: ops.nonlinear(jax.nn.softplus, x),
    # keras.ops.gelu defaults to the tanh approximation (the "gelu" activation string does not).
    "Gelu": lambda x, cfg, ops: ops.nonlinear(lambda v: jax.nn.gelu(v, approximate=bool(cfg.get("approximate", True))),
                                              x),
    "Softmax": lambda x, cfg, ops: jax.nn.softmax(x, axis=cfg.get("axis", -1)),
    "Exp": lambda x, cfg, ops: ops.nonlinear(jnp.exp, x),
}


def _unary(fn):
    def apply(p, inputs, cfg, ops):
        return fn(inputs[0], cfg, ops)

    return apply


for _name, _fn in UNARY_OPERATIONS.items():
    KINDS["ops." + _name] = _unary(_fn)
