"""What the ascents maximise, on the model's forward pass (``model.module.apply``, :meth:`jaxviz.Model.apply`
of the same graph and ops, hashable so that models of the same shape share compiled programs) with the
model's prepared kernels (:meth:`jaxviz.Model.prepared`, a traced argument computed once per weights):

- :func:`channel_objective`: the mean activation of one channel per image (Chollet, *Deep Learning with
  Python*, listing 5.38; lucid's ``channel`` objective, optionally before the ReLU);
- :func:`class_logit`: one class's pre-softmax score per image (Yosinski et al. 2015);
- :func:`gram_similarity`: the diversity term (Olah et al., "Feature Visualization", Distill 2017).

Every image is scored on its own unit, selected by a one-hot contraction (not by indexing: the gradient of
an indexed read is a scatter, which XLA:CPU runs on one core), so ``objective(x).sum()`` gives each image
its own gradient.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .. import layers

CONV_KINDS = ("Conv2D", "Convolution2D")
MAX_POOL_KINDS = ("MaxPooling2D", "MaxPool2D")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How to compute one layer's per-channel objective."""

    layer: str
    channels: int
    spatial: bool  # the layer has H, W axes to average over
    before: str | None = None  # the target conv's input layer (None: a plain pass to `layer`)
    conv: str | None = None  # conv whose output channels can be computed column by column
    pool: bool = False  # a max-pool follows `conv` (the target is a pooling layer)
    preprocess: str = "caffe"  # the model's input space (jaxviz.preprocessing mode)
    in_channels: int = 3  # the model's input channels (1: grayscale)


def layer_table(model, size: int, layer: str):
    """The model's layer table for ``size`` × ``size`` inputs, up to ``layer``."""
    return model.layer_table((size, size, model.input_channels), upto=layer)


def _column_conv(graph, name: str) -> bool:
    """Whether output channel ``o`` of layer ``name`` depends on ``kernel[..., o]`` and ``bias[o]`` alone: a plain
    (ungrouped) convolution of one input, which can then compute just the channels an objective reads."""
    layer = graph.by_name[name]
    return layer.kind in CONV_KINDS and int(layer.cfg.get("groups", 1)) == 1 and len(layer.inputs) == 1


def plan(model, layer: str, size: int) -> Plan:
    """The :class:`Plan` of ``layer``'s channel objective at ``size`` × ``size`` inputs.

    A convolution (or a max-pool of one) is computed from its input by the conv with only the wanted kernel
    columns (``columns`` in :func:`prepare`); any other layer by a pass up to it."""
    space = dict(preprocess=model.preprocess, in_channels=model.input_channels)
    if layer == "logits":
        return Plan(layer, model.num_classes, False, **space)
    graph = model.graph
    name = graph.resolve(layer)
    row = next(r for r in layer_table(model, size, layer) if r.name == name)
    channels, spatial = row.output_shape[-1], len(row.output_shape) == 3
    target = graph.by_name[name]
    if _column_conv(graph, name):
        return Plan(layer, channels, True, target.inputs[0], name, False, **space)
    if target.kind in MAX_POOL_KINDS and len(target.inputs) == 1 and _column_conv(graph, target.inputs[0]):
        conv = target.inputs[0]
        return Plan(layer, channels, True, graph.by_name[conv].inputs[0], conv, True, **space)
    return Plan(layer, channels, spatial, **space)


def use_columns(p: Plan, chunk: int) -> bool:
    """Whether a chunk of ``chunk`` filters computes only its own channels of the target conv."""
    return p.conv is not None and chunk < p.channels


def cast(tree, dtype):
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), tree)


def prepare(p: Plan, params, prepared, onehot, *, columns: bool, dtype) -> dict:
    """What :func:`channel_objective` needs that stays fixed during an ascent, computed once before its loop.

    The params and the model's prepared kernels (:meth:`jaxviz.Model.prepared`) in the compute dtype, and
    with ``columns`` the chunk's kernel columns of the target conv and of its flipped input-gradient kernel:
    picked by one-hot contractions (``[3,3,Cin,C] · [B,C] → [3,3,Cin,B]``; exact, and no gather or scatter
    appears in the program).
    """
    dtype = jnp.dtype(dtype)
    prep = {"params": cast(params, dtype), "prepared": cast(prepared, dtype), "onehot": onehot.astype(dtype)}
    if p.conv is not None and columns:
        conv, sel = prep["params"][p.conv], prep["onehot"]
        column = {"kernel": jnp.einsum("hwio,bo->hwib", conv["kernel"], sel)}
        if "bias" in conv:
            column["bias"] = sel @ conv["bias"]
        prep["column"] = {"params": column}
        flipped = prep["prepared"].get(p.conv, {}).get("kernel")
        if flipped is not None:  # flip_kernel(kernel) is [3,3,C,Cin]: its columns are the columns' flips
            prep["column"]["prepared"] = {"kernel": jnp.einsum("hwoi,bo->hwbi", flipped, sel)}
    return prep


def _target_variables(p: Plan, prep: dict) -> dict:
    """The forward pass's variables with the target conv's own: the chunk's kernel columns where ``prep`` has
    them, and of its prepared kernels only the flipped input-gradient one (so the target conv runs as a
    direct convolution, the same whether it computes some channels or all)."""
    params, prepared = dict(prep["params"]), dict(prep["prepared"])
    if "column" in prep:
        params[p.conv] = prep["column"]["params"]
        own = prep["column"].get("prepared")
    else:
        flipped = prepared.get(p.conv, {}).get("kernel")
        own = None if flipped is None else {"kernel": flipped}
    prepared.pop(p.conv, None)
    if own is not None:
        prepared[p.conv] = own
    return {"params": params, "prepared": prepared}


def forward(module, variables: dict, x, upto: str):
    """The model's forward pass up to ``upto`` (an input layer: ``x`` itself), without taps."""
    return module.apply(variables, x, upto=upto)[0]


def channel_objective(module, p: Plan, prep: dict, x, *, pre_relu: bool = False):
    """Per-image objective ``[B]``: the mean over positions of channel ``onehot[b]`` of ``p.layer``.

    ``prep`` is :func:`prepare`'s; with its ``column`` the target convolution computes only the chunk's
    channels, and the diagonal is taken by a one-hot contraction. ``pre_relu`` scores the convolution's
    output before its activation (conv layers only: the layer's own kind function gives both).
    """
    dtype = x.dtype
    if p.conv is not None and ("column" in prep or pre_relu):
        variables = _target_variables(p, prep)
        select = jnp.eye(x.shape[0], dtype=dtype) if "column" in prep else prep["onehot"]
        if pre_relu:
            layer = module.graph.by_name[p.conv]
            own = {**variables["params"][p.conv], "prepared": variables["prepared"].get(p.conv)}
            a = layers.apply_layer(layer, own, [forward(module, variables, x, p.before)], module.ops)[0]
        else:
            a = forward(module, variables, x, p.layer)
    else:
        a = forward(module, {"params": prep["params"], "prepared": prep["prepared"]}, x, p.layer)
        select = prep["onehot"]
    n = a.shape[1] * a.shape[2] if a.ndim == 4 else 1
    # Sum in float32 whatever the compute dtype.
    return jnp.einsum("b...c,bc->b", a, select, preferred_element_type=jnp.float32) / n


def class_logit(fwd, params, x, onehot):
    """``[N]``: each image's own class logit (``onehot[n]``) under the forward pass ``fwd`` (``model.apply``)."""
    return jnp.sum(fwd(params, x, upto="logits")[0] * onehot, axis=-1)


def gram_similarity(a) -> jax.Array:
    """Mean cosine similarity of the Gram matrices of a batch's activations ``[N, H, W, C]`` (or ``[N, C]``),
    over the ``N (N - 1)`` ordered pairs of different images: the term the diversity objective penalises."""
    a = a.reshape(a.shape[0], -1, a.shape[-1]).astype(jnp.float32)
    g = jnp.einsum("npc,npd->ncd", a, a).reshape(a.shape[0], -1) / a.shape[1]
    g = g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + 1e-8)
    sim = g @ g.T
    n = a.shape[0]
    return (sim.sum() - jnp.trace(sim)) / (n * (n - 1))
