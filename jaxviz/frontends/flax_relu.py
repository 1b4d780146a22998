"""Replacing a traced function's ReLUs: guided backprop, deconvnet and DeepLIFT on code jaxviz did not write.

A Flax module applies its ReLUs as functions (``nn.relu(x)``, ``jax.nn.relu``, ``jnp.maximum(x, 0)``), so no
layer says where they are. :func:`substitute` traces the function to a jaxpr and evaluates it equation by
equation, computing every ReLU it finds — the ``relu`` custom-JVP call of ``jax.nn.relu``, a ``jit`` named
``relu``, and a ``max`` of a tensor and a literal zero — with the replacement instead. Jitted sub-functions
that hold a ReLU are inlined; everything else is bound as it was traced (its own derivative rules kept).
With an :class:`jaxviz.ops.ElementwiseRule` (DeepLIFT's Rescale rule), ``tanh`` and ``logistic`` (sigmoid)
get the rule too. The user's code is not changed and nothing is patched.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from jax.extend import core as jex

from ..ops import ElementwiseRule

#: Elementwise primitives an :class:`ElementwiseRule` also applies to, with the function each computes.
RULE_PRIMITIVES = {"tanh": jax.numpy.tanh, "logistic": jax.nn.sigmoid}


class NoActivationError(Exception):
    """The traced function has no ReLU to replace."""


def _is_zero_literal(v) -> bool:
    return isinstance(v, jex.Literal) and np.ndim(v.val) == 0 and float(v.val) == 0.0


def _inner(eqn):
    """The ``ClosedJaxpr`` a call equation runs (``jit``'s ``jaxpr``, a custom-JVP call's ``call_jaxpr``)."""
    for key in ("jaxpr", "call_jaxpr"):
        j = eqn.params.get(key)
        if isinstance(j, jex.ClosedJaxpr):
            return j
    return None


def _is_relu(eqn) -> bool:
    name = eqn.primitive.name
    if name == "max" and len(eqn.invars) == 2:
        a, b = eqn.invars
        return (_is_zero_literal(b) and not isinstance(a, jex.Literal)) or (
            _is_zero_literal(a) and not isinstance(b, jex.Literal))
    if name in ("jit", "pjit") and eqn.params.get("name") == "relu":
        return True
    if name == "custom_jvp_call":
        inner = _inner(eqn)
        return inner is not None and len(inner.jaxpr.eqns) == 1 and _is_relu(inner.jaxpr.eqns[0])
    return False


def _relu_input(eqn, invals):
    if eqn.primitive.name == "max":
        return invals[1] if _is_zero_literal(eqn.invars[0]) else invals[0]
    return invals[-1]


def _holds_relu(jaxpr, rule: bool) -> bool:
    for eqn in jaxpr.eqns:
        if _is_relu(eqn) or (rule and eqn.primitive.name in RULE_PRIMITIVES):
            return True
        inner = _inner(eqn)
        if inner is not None and eqn.primitive.name in ("jit", "pjit", "custom_jvp_call") and \
                _holds_relu(inner.jaxpr, rule):
            return True
    return False


def _eval(jaxpr, consts, args, relu: Callable, found: list):
    env = {}

    def read(v):
        return v.val if isinstance(v, jex.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    rule = isinstance(relu, ElementwiseRule)
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        inner = _inner(eqn)
        if _is_relu(eqn):
            found.append(name)
            outs = [relu(_relu_input(eqn, invals))]
        elif rule and name in RULE_PRIMITIVES:
            found.append(name)
            outs = [relu.apply(RULE_PRIMITIVES[name], invals[0])]
        elif inner is not None and name in ("jit", "pjit", "custom_jvp_call") and _holds_relu(inner.jaxpr, rule):
            # a custom-JVP call passes its consts first (num_consts); the inner jaxpr takes them all as inputs
            outs = _eval(inner.jaxpr, inner.consts, invals, relu, found)
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, val in zip(eqn.outvars, outs):
            env[v] = val
    return [read(v) for v in jaxpr.outvars]


def substitute(fn: Callable, relu: Callable, *args):
    """``fn(*args)`` with every ReLU it computes replaced by ``relu`` (see the module docstring).

    Raises :class:`NoActivationError` if ``fn`` computes no ReLU."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    found: list = []
    outs = _eval(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args), relu, found)
    if not found:
        raise NoActivationError
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)
