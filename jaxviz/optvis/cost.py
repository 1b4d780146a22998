"""What a filter-pattern ascent costs, from the model's layer table: FLOPs, the memory one filter keeps alive,
and the chunk of filters per compiled call that fits the device (:func:`default_chunk_size`)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .. import parallel
from . import objectives


def forward_flops(model, layer: str, size: int) -> float:
    """FLOPs of one image's forward pass up to ``layer`` (2 per multiply-add; convs and dense layers).

    One ascent step is forward + input gradient = about twice this (the weights are constants, so no
    kernel gradient is computed); a pattern of ``steps`` steps costs ``2 · steps · forward_flops``.
    """
    rows = objectives.layer_table(model, size, layer)
    total = 0.0
    for r in rows:
        if r.kernel_shape is not None:
            positions = r.output_shape[0] * r.output_shape[1] if len(r.output_shape) == 3 else 1
            total += 2.0 * positions * math.prod(r.kernel_shape)
        if r.name == model.graph.resolve(layer):
            break
    return total


def _activation_sizes(model, layer: str, size: int, columns: bool) -> list[int]:
    """Elements of the input and of every layer output up to ``layer`` (one filter), from the layer table."""
    rows = objectives.layer_table(model, size, layer)
    sizes = [3 * size * size]
    for r in rows[1:]:
        sizes.append(int(np.prod(r.output_shape)))
        if r.name == model.graph.resolve(layer):
            if columns and len(r.output_shape) == 3:
                sizes[-1] //= r.output_shape[-1]  # only the filter's own channel is computed
            break
    return sizes


def working_set_bytes_per_filter(model, layer: str, size: int, dtype: str = "float32",
                                 columns: bool = True) -> float:
    """The cache one filter occupies while a layer runs: the largest ``input + output`` of one layer.

    Layers run one after the other, so what must stay in cache for a convolution to run at full speed is
    its own input and output, not every activation the backward pass keeps (those stream to memory and
    back once per step), so the chunk is bounded by this working set, not by the whole program
    (docs/PERFORMANCE.md).
    """
    sizes = _activation_sizes(model, layer, size, columns)
    itemsize = jnp.dtype(dtype).itemsize
    return float(itemsize * max(a + b for a, b in zip(sizes[:-1], sizes[1:])))


def bytes_per_filter(model, layer: str, size: int, dtype: str = "float32", columns: bool = True) -> float:
    """Memory one filter's ascent keeps alive, from the layer table (the activations up to ``layer``).

    Forward activations are kept for the backward pass (conv outputs, ReLU masks, pool inputs) and the
    backward pass holds about two activation-sized buffers at a time: ``2·Σ act + 2·max act`` elements.
    XLA's memory analysis of the compiled program agrees within a factor of about two
    (``scripts/bench_patterns.py`` prints both; :func:`measured_bytes_per_filter` measures it).
    """
    sizes = _activation_sizes(model, layer, size, columns)
    itemsize = jnp.dtype(dtype).itemsize
    return float(itemsize * (2 * sum(sizes) + 2 * max(sizes)))


def measured_bytes_per_filter(model, layer: str, size: int, dtype: str = "float32",
                              devices=None) -> tuple[float, float]:
    """``(fixed_bytes, bytes_per_filter)`` from XLA's memory analysis of one ascent step at 1 and 2 filters."""
    plan = objectives.plan(model, layer, size)
    devices = parallel.local_devices(devices)[:1]

    def compile_for(n):
        columns = objectives.use_columns(plan, n)

        def one_step(params, prepared, x, filters):
            onehot = jax.nn.one_hot(filters, plan.channels, dtype=jnp.float32)
            prep = objectives.prepare(plan, params, prepared, onehot, columns=columns, dtype=dtype)
            return jax.grad(lambda x: objectives.channel_objective(model.module, plan, prep, x.astype(dtype)).sum())(x)

        x = jax.ShapeDtypeStruct((n, size, size, plan.in_channels), jnp.float32)
        f = jax.ShapeDtypeStruct((n,), jnp.int32)
        return jax.jit(one_step).lower(model.params, model.prepared(), x, f).compile()

    return parallel.measured_bytes_per_item(compile_for)


def weight_bytes(model, layer: str) -> float:
    """Bytes of the weights the pass up to ``layer`` reads (each step reads them about three times)."""
    total = 0
    for name in model.layer_names:
        if name in model.params:
            total += sum(int(np.prod(p.shape)) * 4 for p in model.params[name].values())
        if name == model.graph.resolve(layer):
            break
    return float(total)


def default_chunk_size(model, layer: str, size: int, n_filters: int, dtype: str = "float32",
                       devices=None) -> int:
    """The chunk :func:`jaxviz.visualize.patterns.filter_patterns` uses when ``chunk_size`` is not given (see
    :mod:`jaxviz.parallel`).

    CPUs: one layer's working set (:func:`working_set_bytes_per_filter`) against the last-level cache,
    grown while the weights (:func:`weight_bytes`, read three times a step: forward, and the flipped
    copy the backward pass makes and reads) outweigh one filter's activations. Accelerators: the
    compiled step's measured memory (two small compiles, remembered per signature) against free memory.
    """
    devices = parallel.local_devices(devices)
    if devices[0].platform == "cpu":
        return parallel.choose_chunk_size(working_set_bytes_per_filter(model, layer, size, dtype), n_filters,
                                          shared_bytes=3 * weight_bytes(model, layer), devices=devices)
    key = (model.module, layer, size, dtype, devices[0].platform)
    if key not in _MEASURED:
        _MEASURED[key] = measured_bytes_per_filter(model, layer, size, dtype, devices)
    fixed, per = _MEASURED[key]
    return parallel.choose_chunk_size(per, n_filters, shared_bytes=fixed, devices=devices)


_MEASURED: dict[tuple, tuple[float, float]] = {}
