"""Any jaxviz model out to Flax: ``to_flax(model, api="nnx" | "linen")``, and ``save_flax`` for checkpoints.

A VGG of jaxviz's table becomes :class:`jaxviz.models.VGG` (readable Flax, Keras's layer names). Any other
graph — a Keras ``.keras`` / ``.h5`` file, an ONNX file — becomes a :class:`GraphModule`: its weights as
``nnx.Param`` (trainable) and ``nnx.BatchStat`` (Keras's non-trainable statistics), its forward pass
jaxviz's own (:func:`jaxviz.graph.forward`, exact ops), so it computes the same graph and trains with
optax like any NNX module. BatchNormalization layers run in inference mode (their moving statistics), as
a Keras model fine-tuned with frozen batch statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx, serialization

from .. import graph as graph_lib
from .. import layers as layers_lib
from .. import ops as ops_lib
from ..atomic import write_bytes
from ..errors import JaxvizError
from ..models import linen as linen_models
from ..models.nnx import VGG

APIS = ("nnx", "linen")


def _trainable(graph: graph_lib.Graph, layer: str, key: str) -> bool:
    node = graph.by_name.get(layer)
    if node is None:
        return True
    flags = dict(layers_lib.weight_names(node.kind, node.cfg))
    return flags.get(key, True) and node.cfg.get("trainable", True) is not False


class GraphModule(nnx.Module):
    """A jaxviz graph as an NNX module: ``weights[layer][name]`` are ``nnx.Param`` / ``nnx.BatchStat``."""

    def __init__(self, graph: graph_lib.Graph, params: dict):
        self.graph = graph
        self.weights = nnx.Dict({
            layer: nnx.Dict({key: (nnx.Param if _trainable(graph, layer, key) else nnx.BatchStat)(jnp.asarray(v))
                             for key, v in p.items()})
            for layer, p in params.items()})

    def __call__(self, x: jax.Array) -> jax.Array:
        params = {layer: {key: v[...] for key, v in p.items()} for layer, p in self.weights.items()}
        return graph_lib.forward(self.graph, params, x, ops=ops_lib.EXACT)[0]


class LinenGraphModule(nn.Module):
    """A jaxviz graph as a linen module; its variables are ``{"params": …, "batch_stats": …}`` by layer."""

    graph: graph_lib.Graph

    def __call__(self, x: jax.Array) -> jax.Array:
        params: dict = {}
        for collection in ("params", "batch_stats"):
            for layer, p in self.variables.get(collection, {}).items():
                params.setdefault(layer, {}).update(p)
        return graph_lib.forward(self.graph, params, x, ops=ops_lib.EXACT)[0]


def _linen_variables(graph: graph_lib.Graph, params: dict) -> dict:
    out: dict = {"params": {}, "batch_stats": {}}
    for layer, p in params.items():
        for key, v in p.items():
            collection = "params" if _trainable(graph, layer, key) else "batch_stats"
            out[collection].setdefault(layer, {})[key] = jnp.asarray(v)
    return {k: v for k, v in out.items() if v}


def to_flax(model, api: str = "nnx"):
    """``model`` (a :class:`jaxviz.Model`) as a Flax module holding its weights: NNX, or for ``api="linen"``
    ``(module, variables)``. A VGG of jaxviz's table is :class:`jaxviz.models.VGG` (softmax output, as Keras);
    any other graph a :class:`GraphModule` (its output layer's activation included)."""
    if api not in APIS:
        raise JaxvizError(f"unknown api {api!r}; use 'nnx' or 'linen'")
    arch = model.arch
    if model.family == "vgg" and arch.head == "flatten":
        options = dict(include_top=model.include_top, fc_features=arch.fc_features, num_classes=arch.num_classes)
        params = {name: {k: jnp.asarray(v) for k, v in p.items()} for name, p in model.params.items()}
        if api == "linen":
            return linen_models.VGG(arch.convs_per_block, arch.block_features, **options), {"params": params}
        abstract = nnx.eval_shape(lambda: VGG(arch.convs_per_block, arch.block_features,
                                              input_size=arch.default_size, rngs=nnx.Rngs(0), **options))
        graphdef, state = nnx.split(abstract)
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graphdef, state)
    if hasattr(model, "to_flax_variables"):  # already a Flax module (jaxviz.from_flax)
        raise JaxvizError(f"{arch.name} already is a Flax module (from_flax); use the module itself")
    graph = model.graph
    if api == "linen":
        return LinenGraphModule(graph), _linen_variables(graph, model.params)
    return GraphModule(graph, model.params)


def save_flax(model, path) -> tuple[Path, Path]:
    """Writes ``model`` for Flax: ``<path>.msgpack`` (the linen variables of :func:`to_flax`, by
    :func:`flax.serialization.to_bytes`: what Flax checkpoints hold) and ``<path>.json`` (the graph, or the
    VGG's configuration). Returns both paths."""
    stem = Path(path)
    stem = stem.with_suffix("") if stem.suffix in (".msgpack", ".json") else stem
    module, variables = to_flax(model, "linen")
    state = write_bytes(stem.with_suffix(".msgpack"), serialization.to_bytes(jax.device_get(variables)))
    if isinstance(module, LinenGraphModule):
        described = module.graph.to_json()
    else:
        described = json.dumps({"vgg": model.arch.name, "include_top": model.include_top})
    return state, write_bytes(stem.with_suffix(".json"), described)
