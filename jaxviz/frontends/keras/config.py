"""Keras model configs → flat layers: nested models flattened, each layer after its inputs, and where each
layer's weights are in the file (:class:`Slot`).

A nested model's layers are named ``outer/inner``. A layer's Keras 3 weights group is the snake-case name of
its class made unique within its model (``conv2d``, ``conv2d_1``, … in the order of ``model.layers``; a nested
model's under ``layers/<model>/layers/…``); its legacy HDF5 group is its top-level layer's name.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping
from typing import NamedTuple

from ... import layers as layers_lib
from ...errors import JaxvizError, WeightsError, printable
from ...graph import name_problem

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


class Slot(NamedTuple):
    """Where one flat layer's weights are in a Keras file, and what they must be."""

    path: str  # its Keras 3 group ("/layers/conv2d_3", a nested model's "/layers/vgg16/layers/conv2d_3")
    top: str  # its top-level layer: the legacy HDF5 group that lists its weights
    kind: str
    cfg: dict


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


def graph_slots(graph) -> dict[str, Slot]:
    """Where Keras saves the weights of a flat :class:`jaxviz.graph.Graph` (no nested models, such as
    :func:`jaxviz.frontends.vgg.build_graph`'s), layer for layer as :class:`_Flattener` finds them for a model
    config."""
    used: dict[str, int] = {}
    slots = {}
    for layer in graph.layers:
        snake = to_snake_case(layer.kind)
        key = snake if snake not in used else f"{snake}_{used[snake] + 1}"
        used[snake] = used.get(snake, -1) + 1
        if layers_lib.weight_names(layer.kind, layer.cfg):
            slots[layer.name] = Slot(f"/layers/{key}", layer.name, layer.kind, layer.cfg)
    return slots


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
        self.weighted: dict[str, Slot] = {}  # flat layer name → where its weights are
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
            self.weighted[name] = Slot(h5path, top, kind, cfg)
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

