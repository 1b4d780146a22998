"""Batching: chunked maps and sums that keep ONE copy of a function in a program, and the default batch sizes."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..parallel import choose_chunk_size
from .checks import check_input, check_model, check_positive, check_reduce, check_score, check_targets
from .notices import chunk_done


def _plan(n: int, chunk: int) -> tuple[int, int]:
    """``(chunks, size)``: chunks of ``size`` items, ``chunk/2 < size ≤ chunk``, padding the fewest items.

    Padding items are evaluated and thrown away, so e.g. 50 IG steps with ``chunk=8`` run as 10 chunks of
    5 (50 evaluations) rather than 7 of 8 (56: 12 % wasted); on a CPU, a few inputs more or less per chunk
    change the time per input little (docs/PERFORMANCE.md). Ties go to the larger size.
    """
    chunk = max(1, min(chunk, n))
    best = min(range(chunk // 2 + 1, chunk + 1), key=lambda s: (-(-n // s) * s, -s))
    return -(-n // best), best


def _chunks(xs, n: int, count: int, size: int):
    """``xs`` (leading axis ``n``) padded with copies of its last item to ``count·size``, as ``[count, size, …]``."""

    def split(a):
        if count * size > n:
            a = jnp.concatenate([a, jnp.repeat(a[-1:], count * size - n, axis=0)])
        return a.reshape(count, size, *a.shape[1:])

    return jax.tree_util.tree_map(split, xs)


def chunked_sum(fn: Callable, xs, chunk: int):
    """``Σ_i fn(xs)[i]`` over the leading axis, evaluated at most ``chunk`` items at a time.

    ``fn`` maps a chunk (pytree, leading axis ``size``) to per-item results (pytree, leading axis
    ``size``). Chunks are balanced and the last one padded (padding items are masked out of the sum), so
    the program contains ONE copy of ``fn``: a ``lax.scan`` over chunks, or a plain call for one chunk.
    """
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    count, size = _plan(n, chunk)
    parts = _chunks(xs, n, count, size)
    valid = (jnp.arange(count * size) < n).reshape(count, size)

    def masked_sum(part, ok):
        out = fn(part)
        return jax.tree_util.tree_map(lambda a: jnp.where(ok.reshape(-1, *[1] * (a.ndim - 1)), a, 0).sum(0), out)

    if count == 1:
        return masked_sum(jax.tree_util.tree_map(lambda a: a[0], parts), valid[0])
    first = jax.tree_util.tree_map(lambda a: a[0], parts)
    init = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(masked_sum, first, valid[0]))

    def step(acc, c):
        part, ok, i = c
        acc = jax.tree_util.tree_map(jnp.add, acc, masked_sum(part, ok))
        chunk_done(i, count, acc)
        return acc, None

    total, _ = lax.scan(step, init, (parts, valid, jnp.arange(count)))
    return total


def chunked_map(fn: Callable, xs, chunk: int):
    """``fn`` over the leading axis at most ``chunk`` items at a time; results concatenated (ONE copy of ``fn``)."""
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    count, size = _plan(n, chunk)
    parts = _chunks(xs, n, count, size)
    if count == 1:
        out = fn(jax.tree_util.tree_map(lambda a: a[0], parts))
        return jax.tree_util.tree_map(lambda a: a[:n], out)

    def step(c):
        part, i = c
        out = fn(part)
        chunk_done(i, count, out)
        return out

    out = lax.map(step, (parts, jnp.arange(count)))
    return jax.tree_util.tree_map(lambda a: a.reshape(count * size, *a.shape[2:])[:n], out)


def per_chunk(batch_size: int, n_images: int) -> int:
    """How many samples (steps, masks, windows…) per chunk so a chunk is ≈ ``batch_size`` model inputs."""
    return max(1, int(batch_size) // max(1, n_images))


#: Default model inputs per chunk on a CPU (gradient programs, forward-only programs). A few inputs per
#: chunk use the cores as well as more would while keeping a VGG16 gradient chunk near 1 GB (docs/PERFORMANCE.md).
CPU_BATCH = {True: 8, False: 16}


def batch_size_for(model, x, batch_size: int | None, n_items: int, gradient: bool) -> int:
    """``batch_size`` checked, or a default for the device when it is ``None``.

    On an accelerator the default is as many inputs as half its free memory holds by
    :func:`jaxviz.parallel.choose_chunk_size`, from the activations a VGG keeps per input (the layer
    table's output sizes; ×3 for a gradient program) — one small image leaves a GPU idle.
    """
    if batch_size is not None:
        return check_positive(batch_size, "batch_size")
    device = jax.local_devices()[0]
    if device.platform == "cpu":
        return CPU_BATCH[bool(gradient)]

    per_item = activation_bytes(model, x.shape[1:3]) * (3 if gradient else 1)
    return choose_chunk_size(per_item, n_items, devices=[device])


def activation_bytes(model, size: tuple[int, int]) -> float:
    """float32 bytes of all layer outputs of one ``size`` input, from the model's layer table
    (:meth:`jaxviz.interface.ModelInterface.layer_table`)."""
    rows = model.layer_table((*size, model.input_channels))
    return 4.0 * sum(float(np.prod(r.output_shape)) for r in rows)


def check_sampled_args(model, method: str, x, target, score: str, reduce: str | None, count: int,
                       count_name: str, batch_size: int | None, gradient: bool):
    """The checks the sampling methods (IG, SmoothGrad, LIME) start with.

    Returns ``(x, targets, reduce, count, batch_size)``, the batch size resolved by :func:`batch_size_for`
    for ``count`` model inputs per image.
    """
    check_model(model, method)
    check_score(model, score)
    reduce = check_reduce(reduce)
    count = check_positive(count, count_name)
    x = check_input(model, x)
    batch_size = batch_size_for(model, x, batch_size, count * x.shape[0], gradient=gradient)
    return x, check_targets(model, target, x.shape[0]), reduce, count, batch_size
