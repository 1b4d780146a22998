"""The methods' shared drivers: the one-input-gradient method, and the finishing of a method's maps (channel
reduction, repetition over channels, resizing) as small shared programs."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from .checks import check_input, check_model, check_reduce, check_score, check_targets, params_of
from .programs import compiled
from .scores import input_gradient


def gradient_method(model, name: str, x, target, score: str, reduce: str | None, params, *,
                    relu: Callable = jax.nn.relu, post: Callable | None = None, key: tuple = ()) -> jax.Array:
    """The driver of the methods that are one input gradient: checks, ``post(x, ∂S_t/∂x)`` (default: the
    gradient itself) with ``relu`` in place of the network's ReLUs, then the channel reduction.

    One program per (graph, ops, ``name``, score, ``key``); ``key`` holds whatever ``post`` depends on.
    """
    check_model(model, name)
    score = check_score(model, score)
    reduce = check_reduce(reduce)
    x = check_input(model, x)
    targets = check_targets(model, target, x.shape[0])

    def build(fwd):
        def run(params, x, targets):
            g, _, _ = input_gradient(fwd, params, x, targets, score, relu=relu)
            return g if post is None else post(x, g)

        return run

    fn = compiled(model, name, (score, *key), build)
    return finish(fn(params_of(model, params), x, targets), reduce)


def reduce_channels(a: jax.Array, reduce: str | None) -> jax.Array:
    """``[N, H, W, C]`` → ``[N, H, W]`` (or unchanged for ``None``)."""
    if reduce is None:
        return a
    if reduce == "sum":
        return a.sum(-1)
    if reduce == "mean":
        return a.mean(-1)
    if reduce == "max":
        return a.max(-1)
    if reduce == "abs_max":
        return jnp.abs(a).max(-1)
    if reduce == "abs_sum":
        return jnp.abs(a).sum(-1)
    if reduce == "norm":
        return jnp.sqrt((a * a).sum(-1))
    raise ValueError(reduce)


@functools.partial(jax.jit, static_argnames=("reduce",))
def _reduce(a, reduce):
    return reduce_channels(a, reduce)


def finish(a: jax.Array, reduce: str | None) -> jax.Array:
    """Applies the channel reduction to a method's ``[N, H, W, C]`` result.

    A separate small program (shared by all methods), so a method's compiled program does not depend on
    ``reduce``.
    """
    return a if reduce is None else _reduce(a, reduce)


@functools.partial(jax.jit, static_argnames=("channels",))
def _repeat(m, channels):
    return jnp.repeat(m[..., None], channels, axis=-1)


def finish_spatial(m: jax.Array, reduce: str | None, channels: int = 3) -> jax.Array:
    """A channel-free ``[N, H, W]`` map, repeated over ``channels`` when ``reduce`` is ``None``."""
    return _repeat(m, channels) if reduce is None else m


def resize_maps(maps: jax.Array, size: tuple[int, int], method: str = "bilinear") -> jax.Array:
    """``[N, h, w]`` → ``[N, H, W]``.

    "bilinear" uses half-pixel centres with edge clamping and "nearest" picks ``floor(i·h/H)`` for integer
    up-scaling factors: both equal ``torch.nn.functional.interpolate`` (``align_corners=False``) then.
    """
    n = maps.shape[0]
    if maps.shape[1:] == tuple(size):
        return maps
    return jax.image.resize(maps, (n, *size), method=method)
