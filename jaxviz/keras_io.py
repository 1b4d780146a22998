"""Whole Keras models read without Keras: ``.keras`` archives and legacy ``.h5`` files → a layer graph + params.

:func:`read_model` reads

- Keras 3's ``model.save("m.keras")``: a zip with ``config.json`` (the model's config), ``metadata.json``
  (the Keras version) and ``model.weights.h5``, whose variables sit at ``layers/<name>/vars/0, 1, …`` where
  ``<name>`` is the snake-case class name made unique within its model (``conv2d``, ``conv2d_1``, …, in the
  order of ``model.layers``; a nested model's layers under ``layers/<functional>/layers/…``); recent Keras 3
  also stores the layer's name in the ``vars`` group's ``name`` attribute, checked when present;
- the legacy whole-model HDF5 of ``model.save("m.h5")`` (Keras 2 / tf.keras, and Keras 3's legacy writer):
  root attribute ``model_config`` (JSON), ``keras_version``, ``backend``, and a ``model_weights`` group
  with one group per top-level layer whose ``weight_names`` attribute lists its datasets
  (``conv2d/kernel:0`` in Keras 2, ``conv2d/kernel`` in Keras 3; a nested model's group lists all its
  layers' weights, ``vgg16/block1_conv1/kernel`` — matched to the inner layers by name).

``Sequential`` and functional models (merges, branches, several outputs) are read, and **nested models**
(a model used as a layer) are flattened into one :class:`jaxviz.graph.Graph`: an inner layer is named
``outer/inner`` (``vgg16/block5_conv3``); :func:`resolve_name` also accepts the bare inner name where it
is unique. Each layer's weights are named as Keras names them (``kernel``, ``bias``, ``gamma``, ``beta``,
``moving_mean``, ``moving_variance``, ``depthwise_kernel``, ``pointwise_kernel``, ``alpha``, ``mean``,
``variance``, ``count``), except ``DepthwiseConv2D``'s kernel, which is ``kernel`` (Keras 3's name; Keras 2
called it ``depthwise_kernel``). See :func:`jaxviz.layers.weight_names` for each kind's weights.

jaxviz's own pickle-free format for a read model is :mod:`jaxviz.converted`.
"""

from __future__ import annotations

import heapq
import io
import json
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import layers as layers_lib
from . import untrusted
from .errors import JaxvizError, WeightsError, printable
from .graph import Graph, make_layer, name_problem
from .weights import _attr_list, _text  # Keras's HDF5 string attributes, read alike

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_MODEL_CLASSES = ("Sequential", "Functional", "Model")

# Limits on what a model file may declare, far above any real model (keras.applications' largest, NASNetLarge,
# has about 1,000 layers); a file beyond them is refused in one line before it is read further.
#: Layers of the flattened model.
MAX_LAYERS = 20_000
#: Models nested inside one another.
MAX_NESTING = 32
#: Members of a ``.keras`` zip archive (Keras writes three, plus assets).
MAX_MEMBERS = 1_000
#: Bytes of ``config.json`` and of ``metadata.json``.
MAX_CONFIG_BYTES = 64 << 20
MAX_METADATA_BYTES = 1 << 20
def _check_name(name, what: str) -> str:
    problem = name_problem(name)
    if problem:
        raise WeightsError(f"{what} '{printable(str(name)[:80])}' {problem}: the file was not written by Keras's "
                           "model.save (altered or crafted), so jaxviz refuses it")
    return name

#: keras.applications model names (lower case, as ``model.name``) → the preprocessing they expect.
#: EfficientNet(V2), MobileNetV3 and ConvNeXt rescale and normalise inside the model: "none".
APPLICATIONS = (
    (r"vgg1[69]$", "caffe"),
    (r"resnet(50|101|152)$", "caffe"),
    (r"resnet(50|101|152)v2$", "tf"),
    (r"inception_v3$", "tf"),
    (r"inception_resnet_v2$", "tf"),
    (r"xception$", "tf"),
    (r"mobilenet_\d", "tf"),
    (r"mobilenetv2_", "tf"),
    (r"nasnet", "tf"),
    (r"densenet(121|169|201)$", "torch"),
    (r"efficientnet", "none"),
    (r"mobilenetv3", "none"),
    (r"convnext", "none"),
)


def to_snake_case(name: str) -> str:
    """Keras's ``naming.to_snake_case`` (the ``.weights.h5`` group names: ``Conv2D`` → ``conv2d``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def application_preprocess(name: str | None) -> str | None:
    """The preprocessing of a ``keras.applications`` model by its name (``vgg16`` → ``"caffe"``), else None."""
    if not name:
        return None
    low = name.lower()
    for pattern, mode in APPLICATIONS:
        if re.match(pattern, low):
            return mode
    return None


# ---------------------------------------------------------------------------------------------------------
# Config → flat layers


class _Flattener:
    """Turns a (possibly nested) model config into flat layers ``(name, kind, cfg, inputs)``, each after its
    inputs, plus ``weighted``: per flat layer, where its weights are in the file."""

    def __init__(self, keras2: bool):
        self.keras2 = keras2
        self.layers: list[tuple[str, str, dict, list[str]]] = []
        self.names: set[str] = set()
        # flat layer name → (Keras 3 weights path, legacy top-level group, kind, cfg)
        self.weighted: dict[str, tuple[str, str, str, dict]] = {}
        self.frozen: set[str] = set()  # layers whose weights are all non-trainable (trainable=False here or above)
        self.models: list[str] = []  # model names, outermost first
        self._frozen_models = 0
        self._depth = 0

    def add(self, name, kind, cfg, inputs, h5path, top):
        if len(self.layers) >= MAX_LAYERS:
            raise WeightsError(f"the model declares more than {MAX_LAYERS:,} layers; jaxviz reads models up to that "
                               "size (a crafted file?)")
        if name in self.names:
            raise WeightsError(f"the model has two layers named {name!r}")
        self.names.add(name)
        cfg = dict(cfg)
        if self.keras2 and cfg.get("activation") == "hard_sigmoid":
            cfg["activation"] = "hard_sigmoid_keras2"  # tf.keras's 0.2x + 0.5, not Keras 3's relu6(x + 3) / 6
        if self._frozen_models:
            cfg["trainable"] = False  # a frozen model's layers are frozen (its summary counts them non-trainable)
        self.layers.append((name, kind, cfg, list(inputs)))
        if layers_lib.weight_names(kind, cfg):
            self.weighted[name] = (h5path, top, kind, cfg)
            if cfg.get("trainable") is False:
                self.frozen.add(name)

    def model(self, mcfg: dict, prefix: str, external: list[str] | None, h5path: str, top: str | None):
        """Adds model ``mcfg``'s layers; returns its outputs' flat names."""
        cls = mcfg.get("class_name")
        cfg = mcfg.get("config") or {}
        if isinstance(cfg, list):  # Keras 2.0–2.1 wrote a Sequential's config as the list of its layers
            cfg = {"name": "sequential", "layers": cfg}
        if not isinstance(cfg, Mapping):
            raise KeyError("a model's config is not a mapping")
        if cls not in _MODEL_CLASSES:
            _check_name(cls, "model class name")
        self.models.append(_check_name(cfg.get("name", "model"), "model name"))
        if self._depth >= MAX_NESTING:
            raise WeightsError(f"models are nested more than {MAX_NESTING} deep; jaxviz reads up to that depth "
                               "(a crafted file?)")
        frozen = cfg.get("trainable") is False
        self._frozen_models += frozen
        self._depth += 1
        try:
            if cls == "Sequential":
                return self._sequential(cfg, prefix, external, h5path, top)
            if cls in ("Functional", "Model"):
                return self._functional(cfg, prefix, external, h5path, top)
        finally:
            self._frozen_models -= frozen
            self._depth -= 1
        raise JaxvizError(f"the file holds a {cls} model; jaxviz reads Sequential and functional Keras models "
                          "(a subclassed model has no config of its layers: rebuild it as a functional model)")

    def _layer_entries(self, cfg):
        entries = cfg.get("layers")
        if not isinstance(entries, list):
            raise KeyError("model config without a layers list")
        used: dict[str, int] = {}
        for lc in entries:
            cls = _check_name(lc["class_name"], "class name")
            name = _check_name((lc.get("config") or {}).get("name") or lc.get("name"), "layer name")
            if _is_operation(lc):  # not in model.layers: no weights group, no count
                yield lc, cls, name, None
                continue
            snake = to_snake_case(cls)
            key = snake if snake not in used else f"{snake}_{used[snake] + 1}"
            used[snake] = used.get(snake, -1) + 1
            yield lc, cls, name, key

    def _check_kind(self, lc, cls, name):
        if cls == "TFOpLambda":
            fn = str((lc.get("config") or {}).get("function"))
            if fn not in TF_OPS:
                raise JaxvizError(f"layer {name!r} is the TensorFlow function tf.{fn} applied to tensors (a Keras 2 "
                                  "TFOpLambda), which jaxviz does not read; supported: "
                                  f"{', '.join('tf.' + f for f in sorted(TF_OPS))}")
            return
        if _is_operation(lc):
            if "ops." + cls not in layers_lib.KINDS:
                raise JaxvizError(
                    f"layer {name!r} is the Keras operation {cls} ({lc.get('module')}) applied to tensors, which "
                    f"jaxviz does not read; supported operations: "
                    f"{', '.join(sorted([*layers_lib.OPERATIONS, *layers_lib.UNARY_OPERATIONS]))}")
            return
        if cls not in layers_lib.KINDS and cls not in _MODEL_CLASSES:
            raise layers_lib.unsupported(name, cls)

    def _sequential(self, cfg, prefix, external, h5path, top):
        prev = external[0] if external else None
        for lc, cls, name, key in self._layer_entries(cfg):
            self._check_kind(lc, cls, name)
            lcfg = lc.get("config") or {}
            if cls == "InputLayer":
                if prev is None:
                    prev = prefix + name
                    self.add(prev, "InputLayer", _input_cfg(lcfg), [], None, top)
                continue
            if prev is None:  # a Keras 2 Sequential without an InputLayer: the first layer has the input shape
                shape = lcfg.get("batch_input_shape") or lcfg.get("batch_shape") or cfg.get("build_input_shape")
                if shape is None:
                    raise KeyError(f"Sequential model {cfg.get('name')!r} has no input shape")
                prev = prefix + "input_layer"
                self.add(prev, "InputLayer", {"batch_shape": list(shape)}, [], None, top)
            path = f"{h5path}/layers/{key}"
            if cls in _MODEL_CLASSES:
                prev = self.model(lc, f"{prefix}{name}/", [prev], path, top or name)[0]
            else:
                self.add(prefix + name, cls, lcfg, [prev], path, top or name)
                prev = prefix + name
        if prev is None:
            raise KeyError(f"Sequential model {cfg.get('name')!r} has no layers")
        return [prev]

    def _functional(self, cfg, prefix, external, h5path, top):
        inputs = _refs(cfg.get("input_layers"))
        outputs = _refs(cfg.get("output_layers"))
        entries = []  # (lc, cls, name, weights path, the tensors it takes)
        for lc, cls, name, key in self._layer_entries(cfg):
            self._check_kind(lc, cls, name)
            if cls == "InputLayer":
                refs = []
            elif cls == "TFOpLambda":
                refs = _tf_op_args(lc, name)[1]
            else:
                nodes = _inbound_nodes(lc)
                if len(nodes) > 1:
                    raise JaxvizError(f"layer {name!r} is called {len(nodes)} times (a shared layer), which jaxviz "
                                      "does not read; give each call its own layer")
                refs = nodes[0] if nodes else []
            entries.append((lc, cls, name, f"{h5path}/layers/{key}", refs))
        values: dict[str, list[str]] = {}
        for lc, cls, name, path, refs in _in_order(entries):
            lcfg = lc.get("config") or {}
            if cls == "InputLayer":
                if external is not None:
                    idx = [n for n, _, _ in inputs].index(name)
                    values[name] = [external[idx]]
                else:
                    self.add(prefix + name, "InputLayer", _input_cfg(lcfg), [], None, top)
                    values[name] = [prefix + name]
                continue
            ins = [values[n][t] for n, _, t in refs]
            if cls == "TFOpLambda":
                kind = "ops." + TF_OPS[lc["config"]["function"]]
                self.add(prefix + name, kind, {"args": _tf_op_args(lc, name)[0]}, ins, None, top)
                values[name] = [prefix + name]
            elif _is_operation(lc):
                op_cfg = {**{k: v for k, v in lcfg.items() if k != "name"}, "args": _operation_args(lc, name)}
                self.add(prefix + name, "ops." + cls, op_cfg, ins, None, top)
                values[name] = [prefix + name]
            elif cls in _MODEL_CLASSES:
                values[name] = self.model(lc, f"{prefix}{name}/", ins, path, top or name)
            else:
                self.add(prefix + name, cls, lcfg, ins, path, top or name)
                values[name] = [prefix + name]
        return [values[n][t] for n, _, t in outputs]


def _in_order(entries: list) -> list:
    """``entries`` (``(…, name, …, refs)``, refs ``(layer, node, tensor)``) each after the layers it takes, in
    linear time (Kahn's algorithm); among the layers ready at a time the earliest in the config comes first,
    so a config already in order (as Keras writes it) keeps its order. A layer taking its own output, a
    cycle, or an input no layer produces is one error line."""
    index: dict[str, int] = {}
    for i, e in enumerate(entries):
        if e[2] in index:
            raise WeightsError(f"the model has two layers named {e[2]!r}")
        index[e[2]] = i
    users: list[list[int]] = [[] for _ in entries]
    waiting = [0] * len(entries)
    unknown = []
    for i, e in enumerate(entries):
        producers = {r[0] for r in e[4]}
        if e[2] in producers:
            raise WeightsError(f"layer {e[2]!r} takes its own output as its input, which no Keras model does")
        unknown += [e[2] for p in producers if p not in index]
        for p in producers & index.keys():
            users[index[p]].append(i)
        waiting[i] = len(producers & index.keys())
    if unknown:
        raise KeyError(f"layers {list(dict.fromkeys(unknown))} take inputs that no layer of the model produces")
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(entries[i])
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) < len(entries):  # name one cycle: follow unplaced producers from an unplaced layer
        i, path = next(i for i, w in enumerate(waiting) if w), []
        while i not in path:
            path.append(i)
            i = next(index[r[0]] for r in entries[i][4] if waiting[index[r[0]]])
        cyc = [entries[j][2] for j in path[path.index(i):]]
        raise WeightsError(f"layers {cyc[:5]}{' …' if len(cyc) > 5 else ''} take each other's outputs as inputs "
                           "(a cycle), which no Keras model does")
    return order


def _is_operation(lc: Mapping) -> bool:
    module = str(lc.get("module") or "")
    return module.startswith(("keras.src.ops", "keras.ops"))


def _operation_args(lc: Mapping, name: str) -> list:
    """An operation's call arguments: ``{"__input__": i}`` for its i-th tensor, numbers as they are."""
    nodes = lc.get("inbound_nodes") or []
    args, i = [], 0
    for a in nodes[0].get("args", []) if nodes else []:
        if isinstance(a, dict) and a.get("class_name") == "__keras_tensor__":
            args.append({"__input__": i})
            i += 1
        elif isinstance(a, (int, float)) and not isinstance(a, bool):
            args.append(a)
        else:
            raise JaxvizError(f"layer {name!r} (the Keras operation {lc['class_name']}) takes an argument jaxviz "
                              f"does not read ({str(a)[:60]}); only tensors and numbers are supported")
    if nodes and nodes[0].get("kwargs"):
        raise JaxvizError(f"layer {name!r} (the Keras operation {lc['class_name']}) has keyword arguments "
                          f"{sorted(nodes[0]['kwargs'])}, which jaxviz does not read")
    return args


#: Keras 2's TFOpLambda functions (``x + 3.0`` in a tf.keras functional model) → jaxviz's ``ops.<Class>`` kinds.
TF_OPS = {
    "__operators__.add": "Add", "math.add": "Add", "math.subtract": "Subtract", "math.multiply": "Multiply",
    "math.truediv": "TrueDivide", "math.divide": "TrueDivide", "math.maximum": "Maximum",
    "math.minimum": "Minimum", "math.negative": "Negative", "math.abs": "Abs", "math.square": "Square",
    "math.sqrt": "Sqrt", "math.pow": "Power",
}


def _tf_op_args(lc: Mapping, name: str) -> tuple[list, list[tuple[str, int, int]]]:
    """A TFOpLambda call ``[[first, node, tensor, {"y": …, "name": …}]]`` (one node, not nested): its arguments (as
    :func:`_operation_args`) and tensor inputs. ``first`` is ``"_CONSTANT_VALUE"`` with the number as
    ``tensor`` when the first argument is a number; a tensor keyword argument is ``[layer, node, tensor]``."""
    nodes = lc.get("inbound_nodes") or []
    call = nodes[0] if len(nodes) == 1 else None
    if call and not isinstance(call[0], str) and len(call) == 1:  # [[[first, node, tensor, kwargs]]]
        call = call[0]
    if not call or not isinstance(call[0], str):
        raise JaxvizError(f"layer {name!r} (tf.{lc['config']['function']}) is called {len(nodes)} times or with "
                          "several tensors; jaxviz reads one call of an elementwise function")
    first, node, tensor, kwargs = (list(call) + [{}])[:4]
    args, refs = [], []

    def arg(value):
        if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str):
            args.append({"__input__": len(refs)})
            refs.append((str(value[0]), int(value[1]), int(value[2])))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            args.append(value)
        else:
            raise JaxvizError(f"layer {name!r} (tf.{lc['config']['function']}) takes an argument jaxviz does not "
                              f"read ({str(value)[:60]}); only tensors and numbers are supported")

    arg(tensor if first == "_CONSTANT_VALUE" else [first, node, tensor])
    for key, value in (kwargs or {}).items():
        if key != "name" and value is not None:
            arg(value)
    return args, refs


def _input_cfg(cfg: Mapping) -> dict:
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    return {"batch_shape": list(shape) if shape is not None else [None, None, None, 3],
            "name": cfg.get("name")}


def _refs(value) -> list[tuple[str, int, int]]:
    """``input_layers``/``output_layers``: ``[[name, node, tensor], …]`` or one ``[name, node, tensor]``."""
    if not value:
        return []
    if isinstance(value[0], str):
        value = [value]
    return [(str(v[0]), int(v[1]), int(v[2])) for v in value]


def _inbound_nodes(lc: Mapping) -> list[list[tuple[str, int, int]]]:
    """A layer's calls, each the list of its input tensors ``(layer, node, tensor)`` in order."""
    nodes = []
    for node in lc.get("inbound_nodes") or []:
        if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}} with __keras_tensor__ entries
            refs: list[tuple[str, int, int]] = []
            _collect_tensors(node.get("args", []), refs)
            nodes.append(refs)
        else:  # Keras 2: [[name, node, tensor, kwargs], ...]
            nodes.append([(str(r[0]), int(r[1]), int(r[2])) for r in node])
    return nodes


def _collect_tensors(value, out):
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            h = value["config"]["keras_history"]
            out.append((str(h[0]), int(h[1]), int(h[2])))
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _collect_tensors(v, out)


# ---------------------------------------------------------------------------------------------------------
# Weights


def _weights_keras3(f, flat: _Flattener, source, budget) -> dict:
    """``model.weights.h5``: each weighted layer's ``vars`` group at the path its class names, or by name."""
    by_name: dict[str, object] = {}

    def walk(group):
        for key in group:
            g = untrusted.child(group, key, source)
            if not hasattr(g, "keys"):
                continue
            if untrusted.has(g, "vars"):
                v = untrusted.child(g, "vars", source)
                if "name" in v.attrs:
                    by_name.setdefault(_text(v.attrs["name"]), v)
            if untrusted.has(g, "layers"):
                walk(untrusted.child(g, "layers", source))

    found = {}
    for name, (path, _, kind, cfg) in flat.weighted.items():
        path = path.lstrip("/")
        try:
            group = untrusted.get(f, path + "/vars", source)
        except KeyError:
            group = None
        local = name.rsplit("/", 1)[-1]
        if group is not None and "name" in group.attrs and _text(group.attrs["name"]) != local:
            group = None
        if group is None:
            if not by_name:
                walk(untrusted.child(f, "layers", source) if untrusted.has(f, "layers") else f)
            group = by_name.get(local)
        if group is None:
            raise KeyError(f"no weights for layer {name!r} ({path}/vars)")
        arrays = [untrusted.child(group, str(i), source) for i in range(len(group))]
        found[name] = _named(name, kind, cfg, arrays, source, budget)
    return _read_all(found)


def _weights_legacy(group, flat: _Flattener, source, budget) -> dict:
    """``model_weights``: per top-level layer group, ``weight_names`` lists its (and its inner layers') weights."""
    found = {}
    tops: dict[str, list[str]] = {}
    for name, (_, top, _, _) in flat.weighted.items():
        tops.setdefault(top, []).append(name)
    for top, names in tops.items():
        if not untrusted.has(group, top):
            raise KeyError(f"no weight group for layer {top!r}")
        g = untrusted.child(group, top, source)
        wnames = _attr_list(g, "weight_names")
        datasets = [(w, untrusted.get(g, w, source)) for w in wnames]
        if len(names) == 1 and names[0] == top:
            _, _, kind, cfg = flat.weighted[top]
            found[top] = _named(top, kind, cfg, [d for _, d in datasets], source, budget)
            continue
        # A nested model: its weights' names end in "<inner layer>/<weight>" …
        by_layer = {}
        for name in names:
            _, _, kind, cfg = flat.weighted[name]
            local = name.rsplit("/", 1)[-1]
            by_layer[name] = [d for w, d in datasets if w.split(":")[0].split("/")[-2:-1] == [local]]
        if all(len(by_layer[n]) == len(layers_lib.weight_names(*flat.weighted[n][2:])) for n in names) and \
                sum(map(len, by_layer.values())) == len(datasets):
            for name in names:
                found[name] = _named(name, flat.weighted[name][2], flat.weighted[name][3], by_layer[name], source,
                                     budget)
            continue
        # … else by order, as Keras lists a model's weights: every trainable one, then the non-trainable ones
        # (all of a frozen layer's weights are non-trainable).
        slots = [(name, i) for trainable in (True, False) for name in names
                 for i, (_, t) in enumerate(layers_lib.weight_names(*flat.weighted[name][2:]))
                 if (t and name not in flat.frozen) == trainable]
        if len(slots) != len(datasets):
            raise KeyError(f"the weights of nested model {top!r} ({len(datasets)}) do not match its layers' "
                           f"({len(slots)})")
        arrays: dict[str, dict[int, object]] = {}
        for (name, i), (_, d) in zip(slots, datasets):
            arrays.setdefault(name, {})[i] = d
        for name in names:
            found[name] = _named(name, flat.weighted[name][2], flat.weighted[name][3],
                                 [arrays[name][i] for i in sorted(arrays[name])], source, budget)
    return _read_all(found)


def _pair(value) -> tuple:
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value), int(value))


def implied_shapes(kind: str, cfg: Mapping) -> dict[str, tuple]:
    """The shapes of a layer's weights as far as its config fixes them (``None``: set by the input, e.g. the
    input channels); kinds not listed here have only their sizes checked."""
    k = lambda: _pair(cfg.get("kernel_size", 1))  # noqa: E731
    if kind in ("Conv2D", "Convolution2D"):
        f = int(cfg["filters"])
        return {"kernel": (*k(), None, f), "bias": (f,)}
    if kind == "Conv1D":
        f = int(cfg["filters"])
        return {"kernel": (k()[0], None, f), "bias": (f,)}
    if kind == "Conv2DTranspose":
        f = int(cfg["filters"])
        return {"kernel": (*k(), f, None), "bias": (f,)}
    if kind == "Dense":
        u = int(cfg["units"])
        return {"kernel": (None, u), "bias": (u,)}
    if kind == "DepthwiseConv2D":
        return {"kernel": (*k(), None, int(cfg.get("depth_multiplier", 1))), "bias": (None,)}
    if kind in ("SeparableConv2D", "SeparableConvolution2D"):
        f = int(cfg["filters"])
        return {"depthwise_kernel": (*k(), None, int(cfg.get("depth_multiplier", 1))),
                "pointwise_kernel": (1, 1, None, f), "bias": (f,)}
    if kind == "BatchNormalization" and isinstance(cfg.get("axis", -1), int):
        return dict.fromkeys(("gamma", "beta", "moving_mean", "moving_variance"), (None,))
    return {}


def _named(name: str, kind: str, cfg: dict, arrays: list, source, budget) -> dict:
    """A layer's stored weights (in Keras's order) under their names, each dataset checked, none read yet."""
    spec = layers_lib.weight_names(kind, cfg)
    if len(arrays) != len(spec):
        raise KeyError(f"layer {name!r} ({kind}) has {len(arrays)} weights in the file, expected {len(spec)} "
                       f"({', '.join(w for w, _ in spec)})")
    shapes = implied_shapes(kind, cfg)
    return {w: untrusted.check_dataset(a, source, f"layer {name!r} weight {w!r}", shapes.get(w), budget)
            for (w, _), a in zip(spec, arrays)}


def _read_all(found: dict) -> dict:
    """The checked datasets of every layer, read as float32 numpy (only after all of them were checked)."""
    return {name: {w: np.asarray(d[()], np.float32) for w, d in weights.items()} for name, weights in found.items()}


# ---------------------------------------------------------------------------------------------------------
# The reader


def read_model(path: str | os.PathLike) -> tuple[Graph, dict, dict]:
    """Reads a whole Keras model (``.keras`` or legacy ``.h5``) without Keras.

    Returns:
      ``(graph, params, info)``: the :class:`jaxviz.graph.Graph` (nested models flattened, inner layers named
      ``outer/inner``), ``{layer: {weight name: float32 numpy array}}``, and ``info`` = ``{"format": "keras" |
      "h5", "keras_version", "backend", "name": the model's name, "application": the recognised
      ``keras.applications`` model's name or None, "preprocess": "caffe" | "tf" | "torch" | "none"}``.

    Raises:
      JaxvizError (one line): a missing, unreadable or non-Keras file, a weights-only file, or a layer kind
      jaxviz does not support (naming the layer, its class and the supported kinds).
    """
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").is_file() and (path / "model.weights.h5").is_file():
            return _guarded(path, lambda: _read_keras_dir(path))  # model.save(folder, zipped=False)
        raise WeightsError(f"{path} is a directory (a TensorFlow SavedModel?); jaxviz reads .keras and .h5 model "
                           "files: in Keras, save the model with model.save('model.keras')")
    if not path.is_file():
        raise WeightsError(f"model file {path} not found; check the path")
    return _guarded(path, lambda: _read_file(path))


def _read_file(path: Path):
    with open(path, "rb") as fh:
        head = fh.read(8)
    if zipfile.is_zipfile(path):
        return _read_keras_zip(path)
    if head == _HDF5_MAGIC:
        return _read_h5(path)
    raise WeightsError(f"{path} is neither a .keras archive nor an HDF5 file; give a model saved by Keras's "
                       "model.save('model.keras') or model.save('model.h5')")


def _guarded(path: Path, read):
    """``read()``, with every error of a malformed file turned into one WeightsError line naming ``path``."""
    try:
        return read()
    except JaxvizError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from None
    except MemoryError:
        raise WeightsError(f"{path}: out of memory while reading this model file; it declares more than this "
                           "machine can hold (a crafted or corrupt file?)") from None
    except (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError,
            zipfile.BadZipFile, json.JSONDecodeError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise WeightsError(f"cannot read {path} as a Keras model ({reason}): it is truncated, corrupt or not "
                           "saved by Keras's model.save; save the model again") from None


def _read_keras_zip(path: Path):
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        if len(infos) > MAX_MEMBERS:
            raise WeightsError(f"{path}: the archive has {len(infos):,} members, more than the {MAX_MEMBERS:,} "
                               "jaxviz reads (a .keras file has a few); refusing it")
        names = {i.filename for i in infos}
        if "config.json" not in names or "model.weights.h5" not in names:
            raise WeightsError(f"{path} is a zip archive without config.json and model.weights.h5: not a .keras "
                               "model file; save the model with model.save('model.keras')")
        config = json.loads(untrusted.zip_member(z, "config.json", MAX_CONFIG_BYTES, path))
        meta = {}
        if "metadata.json" in names:
            meta = json.loads(untrusted.zip_member(z, "metadata.json", MAX_METADATA_BYTES, path))
        flat, outputs, version = _flatten_keras3(config, meta)
        weights = untrusted.zip_member(z, "model.weights.h5", 1 << 62, path)
    return _read_keras3(flat, outputs, version, io.BytesIO(weights), len(weights), path)


def _read_keras_dir(path: Path):
    links = [n for n in ("config.json", "metadata.json", "model.weights.h5") if (path / n).is_symlink()]
    if links:  # a folder from elsewhere must not make jaxviz read some other local file
        raise WeightsError(f"{path}: {links[0]} is a symbolic link; jaxviz reads only files stored in the model "
                           "folder itself")

    def text(name, limit):
        if (path / name).stat().st_size > limit:
            raise WeightsError(f"{path / name} is larger than the {limit:,} bytes jaxviz reads; refusing it")
        return (path / name).read_text("utf8")

    config = json.loads(text("config.json", MAX_CONFIG_BYTES))
    meta = json.loads(text("metadata.json", MAX_METADATA_BYTES)) if (path / "metadata.json").is_file() else {}
    flat, outputs, version = _flatten_keras3(config, meta)
    weights = path / "model.weights.h5"
    return _read_keras3(flat, outputs, version, weights, weights.stat().st_size, weights)


def _flatten_keras3(config, meta):
    if not isinstance(config, Mapping) or not isinstance(meta, Mapping):
        raise KeyError("config.json or metadata.json is not a JSON object")
    version = str(meta.get("keras_version", "3"))
    flat = _Flattener(keras2=version.startswith("2"))
    outputs = flat.model(config, "", None, "", None)
    return flat, outputs, version


def _read_keras3(flat, outputs, version, data, size: int, source):
    import h5py

    with h5py.File(data, "r") as f:
        params = _weights_keras3(f, flat, source, untrusted.Budget(source, size))
    return _result(flat, outputs, params, {"format": "keras", "keras_version": version, "backend": None})


def _read_h5(path: Path):
    import h5py

    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            what = "weights only" if ("layers" in f or "layer_names" in f.attrs or "model_weights" in f) else \
                "not a Keras model"
            raise WeightsError(f"{path} is an HDF5 file without a model config ({what}); jaxviz needs the whole "
                               "model: save it with model.save('model.keras') (or .h5), not save_weights")
        config = json.loads(_text(f.attrs["model_config"]))
        if not isinstance(config, Mapping):
            raise KeyError("model_config is not a JSON object")
        version = _text(f.attrs["keras_version"]) if "keras_version" in f.attrs else "2"
        backend = _text(f.attrs["backend"]) if "backend" in f.attrs else None
        flat = _Flattener(keras2=not version.startswith("3"))
        outputs = flat.model(config, "", None, "", None)
        params = _weights_legacy(untrusted.child(f, "model_weights", path), flat, path,
                                 untrusted.Budget(path, path.stat().st_size))
    return _result(flat, outputs, params, {"format": "h5", "keras_version": version, "backend": backend})


def _result(flat: _Flattener, outputs, params, info):
    layers = tuple(make_layer(n, k, c, i) for n, k, c, i in flat.layers)
    name = flat.models[0] if flat.models else "model"
    graph = Graph(name, layers, tuple(dict.fromkeys(outputs)))
    app = next((m for m in flat.models if application_preprocess(m)), None)
    info = {**info, "name": name, "application": app, "preprocess": application_preprocess(app) or "none"}
    return graph, params, info


def resolve_name(graph: Graph, name: str) -> str:
    """:meth:`jaxviz.graph.Graph.resolve`: a full name, ``"logits"``, or a unique bare inner name."""
    return graph.resolve(name)
