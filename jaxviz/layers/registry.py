"""The layer-kind registry: :func:`kind` registers a kind's function under Keras class names, and
:func:`apply_layer` applies a layer by its kind; with the small helpers every kind module shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import JaxvizError
from ..ops import Ops

KINDS: dict[str, Callable] = {}


def kind(*names: str):
    """Registers a layer kind under Keras class names."""

    def register(fn):
        for name in names:
            KINDS[name] = fn
        return fn

    return register


def apply_layer(layer, p: dict, inputs: Sequence[jax.Array], ops: Ops):
    fn = KINDS.get(layer.kind)
    if fn is None:
        raise unsupported(layer.name, layer.kind)
    return fn(p, inputs, layer.cfg, ops)


def unsupported(name: str, kind_name: str) -> JaxvizError:
    kinds = sorted(k for k in KINDS if not k.startswith("ops."))
    return JaxvizError(f"layer {name!r} is a {kind_name}, which jaxviz does not support; supported layer kinds: "
                       f"{', '.join(kinds)}")


def pair(v) -> tuple[int, int]:
    """A Keras size or stride (one int, or one per spatial axis) as ``(rows, columns)``."""
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(i) for i in v)


def check_channels_last(cfg: dict, what: str) -> None:
    if cfg.get("data_format", "channels_last") not in (None, "channels_last"):
        raise JaxvizError(f"{what} uses data_format={cfg['data_format']!r}; jaxviz runs channels_last models only")


def weight(p: dict, name: str, x: jax.Array) -> jax.Array:
    """The layer's weight ``name`` in the input's dtype."""
    return p[name].astype(x.dtype)


def constant(value, x: jax.Array) -> jax.Array:
    """A config number or list (Keras 3 may serialise arrays as ``{"class_name": "__numpy__", ...}``) in x's dtype."""
    if isinstance(value, dict):
        value = value.get("config", {}).get("value", value.get("value"))
    return jnp.asarray(value, dtype=x.dtype)


def concrete_zero(x):
    """A concrete 0 of ``x``'s dtype: ``reduce_window`` differentiates only a sum whose init is concrete (a traced
    ``jnp`` zero turns it into a generic reduction that reverse-mode autodiff refuses)."""
    return np.zeros((), x.dtype)


def axes_of(axis, ndim: int) -> tuple[int, ...]:
    """A Keras ``axis`` config (one axis or a list, negative ones counted from the end) as axis numbers."""
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return tuple(int(a) % ndim for a in axes)


def broadcast_along(v: jax.Array, axes: tuple[int, ...], ndim: int) -> jax.Array:
    """``v`` (shaped like the kept ``axes`` of an ``ndim``-array) reshaped to broadcast along them."""
    shape = [1] * ndim
    if v.ndim == 0:
        return v
    if v.ndim == len(axes):
        for a, n in zip(axes, v.shape):
            shape[a] = n
    else:  # a flat vector for one axis, or a broadcastable shape as stored
        return v if v.ndim == ndim else v.reshape(-1)
    return v.reshape(shape)
