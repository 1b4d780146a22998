"""The compiled ascent programs of :func:`jaxviz.visualize.patterns.filter_patterns` (one per method) and
:func:`jaxviz.visualize.patterns.diverse_patterns`, built from :mod:`.objectives`, :mod:`.param`,
:mod:`.transforms` and :mod:`.ascent` (Lucent's ``render``). Each takes the params and the model's prepared
kernels (:meth:`jaxviz.Model.prepared`) as traced arguments and runs the whole ascent as one program.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from .. import parallel, preprocessing, runtime
from ..graph import Network
from . import ascent, objectives, param
from .objectives import gram_similarity

# ---------------------------------------------------------------------------------------------------------
# The ascent programs (one per method)


def keras_program(module, plan, params, prepared, filters, seed, init, step_size, steps, *, size, columns, dtype):
    """Listing 5.38 for a chunk of filters: the book's start (or ``init``) and its RMS-normalised steps."""
    runtime.trace_counts["patterns_keras"] += 1
    dtype = jnp.dtype(dtype)
    x0 = param.book_start(seed, filters, size, plan.preprocess, plan.in_channels) if init is None else init
    # A step of `step_size` gray levels: the book's for Caffe's input, scaled to other input ranges.
    unit = 1.0 if plan.preprocess == "caffe" else jnp.asarray(preprocessing.gray_level(plan.preprocess,
                                                                                       plan.in_channels))
    onehot = jax.nn.one_hot(filters, plan.channels, dtype=jnp.float32)
    prep = objectives.prepare(plan, params, prepared, onehot, columns=columns, dtype=dtype)  # once, outside the loop

    def total(x):
        return objectives.channel_objective(module, plan, prep, x.astype(dtype)).sum()

    return ascent.normalised_ascent(total, x0, step_size, steps, unit)


def _pre_relu(plan, opts: dict) -> bool:
    return bool(dict(opts).get("pre_relu", False)) and plan.conv is not None and not plan.pool


def regularised_program(module, plan, params, prepared, filters, seed, init, step_size, steps, *, size, columns,
                         dtype, opts):
    """Olah et al.'s regularised ascent for a chunk of filters (lucid's ``render_vis``)."""
    runtime.trace_counts["patterns_regularised"] += 1
    dtype = jnp.dtype(dtype)
    onehot = jax.nn.one_hot(filters, plan.channels, dtype=jnp.float32)
    prep = objectives.prepare(plan, params, prepared, onehot, columns=columns, dtype=dtype)  # once, outside the loop
    base = jax.random.key(seed)
    keys = jax.vmap(lambda f: jax.random.fold_in(base, f))(filters)
    pre_relu = _pre_relu(plan, opts)
    return ascent.render_regularised(
        lambda x: objectives.channel_objective(module, plan, prep, x, pre_relu=pre_relu), keys, step_size, steps,
        size=size, opts=dict(opts), preprocess=plan.preprocess, channels=plan.in_channels, dtype=dtype)


def diverse_program(module, plan, params, prepared, unit, seed, step_size, steps, weight, *, size, n, opts):
    """``n`` regularised patterns of one unit, penalised by ``weight`` × n × :func:`gram_similarity` of the
    target layer's activations (Olah et al. 2017, "Feature Visualization", section "Diversity")."""
    runtime.trace_counts["patterns_diverse"] += 1
    onehot = jax.nn.one_hot(jnp.full((n,), unit), plan.channels, dtype=jnp.float32)
    prep = objectives.prepare(plan, params, prepared, onehot, columns=False, dtype=jnp.float32)
    base = jax.random.fold_in(jax.random.key(seed), unit)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n))
    variables = {"params": prep["params"], "prepared": prep["prepared"]}
    pre_relu = _pre_relu(plan, opts)

    def penalty(x):
        return weight * n * gram_similarity(objectives.forward(module, variables, x, plan.layer))

    return ascent.render_regularised(
        lambda x: objectives.channel_objective(module, plan, prep, x, pre_relu=pre_relu), keys, step_size, steps,
        size=size, opts=dict(opts), preprocess=plan.preprocess, channels=plan.in_channels, dtype=jnp.float32,
        penalty=penalty)


@dataclasses.dataclass(frozen=True)
class Signature:
    """What a compiled :func:`filter_patterns <jaxviz.visualize.patterns.filter_patterns>` program depends on
    (its cache key): the step count, step size and weights are run-time arguments."""

    module: object  # the model's graph and ops (model.module; hashable)
    layer: str
    size: int
    chunk: int
    method: str
    dtype: str
    columns: bool
    has_init: bool
    options: tuple
    devices: tuple  # device ids of the mesh
    preprocess: str = "caffe"  # the input space: where the ascent starts, its step, the image it returns
    # jax.default_matmul_precision at the call: "highest"/"float32" build the exact-mode program (direct
    # convolutions, see jaxviz.winograd), so it must not share a cache entry with the fast default's.
    precision: str | None = dataclasses.field(default_factory=lambda: jax.config.jax_default_matmul_precision)


#: XLA:CPU options for the ascent programs on jaxviz's own forward pass (a graph): LLVM at -O2 instead of -O3
#: compiles faster, and the time goes to matmuls and convolutions, which LLVM does not generate. A module's
#: own code (a Flax module) keeps -O3: its pooling gradients (scatters) and its convolutions' input gradients
#: inside the loop are code LLVM generates (docs/PERFORMANCE.md).
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 2}


def make_program(model, plan: objectives.Plan, sig: Signature, devices):
    """``(compiled, mesh)``: the program of ``sig`` lowered for ``model``'s params and prepared kernels and
    compiled, a chunk's filters sharded over ``devices``."""
    mesh = parallel.local_mesh(devices)
    rep, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    kw = dict(size=sig.size, columns=sig.columns, dtype=sig.dtype)
    if sig.method == "keras":
        fn = functools.partial(keras_program, sig.module, plan, **kw)
    else:
        fn = functools.partial(regularised_program, sig.module, plan, opts=dict(sig.options), **kw)
    in_shardings = (rep, rep, batch, rep, batch if sig.has_init else None, rep, rep)
    jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=batch)

    def abstract(tree, dtype=None):
        return jax.tree_util.tree_map(lambda p: jax.ShapeDtypeStruct(p.shape, dtype or p.dtype, sharding=rep), tree)

    filters = jax.ShapeDtypeStruct((sig.chunk,), jnp.int32, sharding=batch)
    seed = jax.ShapeDtypeStruct((), jnp.uint32, sharding=rep)
    init = None
    if sig.has_init:
        init = jax.ShapeDtypeStruct((sig.chunk, sig.size, sig.size, plan.in_channels), jnp.float32, sharding=batch)
    step = jax.ShapeDtypeStruct((), jnp.float32, sharding=rep)
    steps = jax.ShapeDtypeStruct((), jnp.int32, sharding=rep)
    options = CPU_COMPILER_OPTIONS if devices[0].platform == "cpu" and isinstance(sig.module, Network) else None
    lowered = jitted.lower(abstract(model.params, jnp.float32), abstract(model.prepared()), filters, seed, init, step,
                           steps)
    return lowered.compile(compiler_options=options), mesh
