"""What a layer graph is, from its shapes alone: Keras's layer table, the summary text, a model's description.

:func:`graph_layer_table` and :func:`model_info` evaluate shapes with ``jax.eval_shape`` (nothing is
computed); :func:`format_table` writes Keras's ``model.summary()``. Used by :class:`jaxviz.Model` for a graph
whose front end has no table of its own (a model file). No I/O here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import graph as graph_lib
from . import layers as layers_lib
from . import ops as ops_lib
from .errors import printable
from .interface import LayerInfo, ModelInfo


def param_count(p) -> int:
    """Number of weights in the pytree ``p``."""
    return sum(int(np.prod(np.shape(v))) for v in jax.tree_util.tree_leaves(p))


def graph_layer_table(graph: graph_lib.Graph, params: Mapping, input_shape=None,
                      upto: str | None = None) -> list[LayerInfo]:
    """The layer table of any graph, from its shapes (``jax.eval_shape``: nothing is computed).

    A free spatial size (``None`` in ``input_shape``) is evaluated at 224 px (or the smallest size the
    graph takes) and reported as ``None``, as Keras does.
    """
    shape = tuple(graph.input_shape if input_shape is None else input_shape)
    free = any(d is None for d in shape[:2])
    probe = tuple(224 if d is None else int(d) for d in shape)
    needed = graph.ancestors([upto]) if upto is not None else None
    names = tuple(x.name for x in graph.layers if needed is None or x.name in needed)
    specs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.float32), params)
    fwd = functools.partial(graph_lib.forward, graph, ops=ops_lib.EXACT, upto=upto, taps=names)
    out = jax.eval_shape(lambda p, x: fwd(p, x)[1], specs,
                         jax.ShapeDtypeStruct((1, *probe), jnp.float32))
    rows = []
    for layer in (x for x in graph.layers if x.name in names):
        s = tuple(out[layer.name].shape[1:])
        if free and len(s) == 3:
            s = (None, None, s[-1])
        p = params.get(layer.name, {})
        kernel = p.get("kernel") if isinstance(p, Mapping) else None
        rows.append(LayerInfo(layer.name, layer.kind, s, param_count(p),
                              None if kernel is None else tuple(np.shape(kernel)), _non_trainable(layer, p),
                              layer.inputs))
    return rows


def _non_trainable(layer: graph_lib.Layer, params) -> int:
    """How many of a layer's weights Keras counts as non-trainable: all of a frozen layer's (``trainable=False``,
    its own or a frozen enclosing model's), else those Keras makes non-trainable (BatchNormalization's moving
    mean and variance)."""
    if not isinstance(params, Mapping):
        return 0
    if layer.cfg.get("trainable") is False:
        return param_count(params)
    fixed = [name for name, trainable in layers_lib.weight_names(layer.kind, layer.cfg) if not trainable]
    return sum(int(np.prod(np.shape(params[name]))) for name in fixed if name in params)


def model_info(graph: graph_lib.Graph, params: Mapping) -> ModelInfo:
    """A graph's :class:`ModelInfo`: classes from its output's shape, whether its head fixes the input size
    (a Flatten of a spatial map: a larger input fails to trace), the smallest side it takes."""
    shape = graph.input_shape
    specs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.float32), params)

    def output_shape(*dims):
        return jax.eval_shape(lambda p, x: graph_lib.forward(graph, p, x, ops=ops_lib.EXACT)[0], specs,
                              jax.ShapeDtypeStruct((1, *dims, shape[-1]), jnp.float32)).shape

    if len(shape) != 3:  # not an image: a flat vector of features (a Dense-only model)
        classes = int(output_shape(*shape[:-1])[-1])
        if classes == 1 and graph.head_activation == "sigmoid":
            classes = 2
        return ModelInfo(graph.name, classes, None, "flatten", graph.class_names, 1, int(shape[-1]), None)
    # A free input size: 224 px is what the CLI and the figures use by default (any size works).
    h, w = (224 if d is None else int(d) for d in shape[:2])
    out = output_shape(h, w)
    try:  # a head that fixes the input size (a Flatten of a spatial map) cannot take another size
        output_shape(h + 32, w + 32)
        fixed = False
    except (TypeError, ValueError):
        fixed = True
    classes = int(out[-1])
    if classes == 1 and graph.head_activation == "sigmoid":
        classes = 2  # class 1: the unit (Keras's P(y = 1)); class 0: its complement (see jaxviz.graph)
    return ModelInfo(graph.name, classes, h if h == w else None, "flatten" if fixed else "gap",
                     graph.class_names, graph_lib.min_input_side(graph), int(shape[-1]), (h, w))


def format_table(name: str, rows: Sequence[LayerInfo]) -> str:
    """Keras's ``model.summary()`` table of ``rows`` as text, with Keras's "Connected to" column for a model
    that is not a plain chain of layers (Keras leaves it out for Sequential-like models)."""
    cells = [[f"{printable(r.name)} ({printable(r.kind)})", str((None, *r.output_shape)), f"{r.params:,}"]
             for r in rows]
    heads = ["Layer (type)", "Output Shape", "Param #"]
    if not _is_chain(rows):
        heads.append("Connected to")
        for cell, r in zip(cells, rows):
            cell.append(", ".join(f"{printable(name)}[0][0]" for name in r.inputs) or "-")
    widths = [max(len(h), *(len(c[i]) for c in cells)) + 2 for i, h in enumerate(heads)]
    total = sum(r.params for r in rows)
    fixed = sum(r.non_trainable for r in rows)
    line = "━" * sum(widths)
    body = [f'Model: "{printable(name)}"', line, "".join(h.ljust(w) for h, w in zip(heads, widths)), line]
    body += ["".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells]
    body += [line, f" Total params: {total:,} ({_readable_bytes(4 * total)})",
             f" Trainable params: {total - fixed:,} ({_readable_bytes(4 * (total - fixed))})",
             f" Non-trainable params: {fixed:,} ({_readable_bytes(4 * fixed)})"]
    return "\n".join(body)


def _is_chain(rows: Sequence[LayerInfo]) -> bool:
    """Whether each layer takes the one before it (and nothing else), as Keras's summary decides it."""
    return all(not r.inputs or list(r.inputs) == [prev.name] for prev, r in zip(rows, rows[1:])) and \
        sum(r.kind == "InputLayer" for r in rows) <= 1


def _readable_bytes(n: float) -> str:
    """Keras's memory size text: ``632.00 B``, ``527.79 MB`` (steps of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024:
            return f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} PB"


def default_cam_layer(graph: graph_lib.Graph, rows: Sequence[LayerInfo], head_kinds: Sequence[str],
                      plumbing_kinds: Sequence[str]) -> str | None:
    """Grad-CAM's default layer: the last spatial map before the head that is not a pooling layer or one that
    only moves or pads a map, among the layers the output depends on (``None``: there is none).

    The head is a layer of ``head_kinds`` (global pooling, flatten) with no map of more than one pixel after
    it: a squeeze-and-excitation block's global pooling (EfficientNet, MobileNetV3) feeds a scale back into
    the spatial path and is not the head."""
    feeds = graph.ancestors(graph.outputs)
    spatial = [r.name for r in rows if len(r.output_shape) == 3 and r.kind != "InputLayer"]
    maps = {r.name for r in rows if len(r.output_shape) == 3
            and (r.output_shape[0] or 2) * (r.output_shape[1] or 2) > 1}
    after_head: set[str] = set()
    for layer in graph.layers:
        if layer.kind in head_kinds:
            below = _descendants(graph, layer.name) - {layer.name}
            if not below & maps:
                after_head |= below | {layer.name}
    names = [n for n in spatial if n in feeds and n not in after_head and "Pool" not in graph.by_name[n].kind
             and graph.by_name[n].kind not in plumbing_kinds]
    return names[-1] if names else None


def _descendants(graph: graph_lib.Graph, name: str) -> set[str]:
    """``name`` and every layer that depends on it."""
    out = {name}
    for layer in graph.layers:
        if any(i in out for i in layer.inputs):
            out.add(layer.name)
    return out
