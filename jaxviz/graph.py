"""jaxviz's model: a graph of named layers, and the one pure forward pass every method is built on.

A :class:`Graph` is a tuple of :class:`Layer` s (name, Keras class name as ``kind``, config, input layer
names) in an order where every layer comes after its inputs. VGG16/VGG19 and the demo networks are graphs
built from a table (:mod:`jaxviz.frontends.vgg`); a Keras ``.keras``/``.h5`` file is a graph read from its config
(:mod:`jaxviz.frontends.keras`). Each layer kind is one small pure function in :mod:`jaxviz.layers`.

:func:`forward` evaluates only the ancestors of what is asked for — a pass truncated at a layer computes
nothing after it —, returns named intermediates (taps), adds ``perturb={layer: delta}`` to layers' outputs
(Grad-CAM differentiates with respect to a zero delta), takes ``replace={layer: value}`` as layers' outputs
(the layers after a CAM layer run from given activations: Ablation-CAM, Guided Grad-CAM's head, occlusion's
split pass) and replaces every plain ReLU of the graph with ``relu`` (guided backprop, deconvnet). ``params``
is a plain pytree ``{layer: {"kernel": …, "bias": …}}`` keyed by the layers' names:
always a traced argument, never closed over.

The tap ``"logits"`` is the model's class score before its final softmax/sigmoid (the pre-activation of an
output layer with ``activation="softmax"``, or the input of a final ``Softmax``/``Activation`` layer; the
output itself when the model ends in a linear layer). A single sigmoid unit ``z`` (a binary classifier,
listing 5.5) gives the logits ``[-z, z]``: class 1 is the unit (Keras's ``P(y = 1)``, trained with binary
cross-entropy on labels 0/1), class 0 its complement, and their sigmoids are the probabilities ``[1 - p, p]``
(:attr:`Graph.head_activation` says which function turns logits into probabilities).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from .errors import JaxvizError, LayerError, printable
from .layers import apply_activation, apply_layer, pads_2d
from .ops import Ops
from .window_ops import window_pads

#: Final activations whose input is the model's "logits".
LOGIT_ACTIVATIONS = ("softmax", "sigmoid")
#: Final layers (by kind) whose input is the model's "logits", and the activation each applies
#: (``ops.<Class>``: a ``keras.ops`` function applied to a tensor in a Keras 3 functional model).
FINAL_KINDS = {"Softmax": "softmax", "ops.Softmax": "softmax", "ops.Sigmoid": "sigmoid"}


def _freeze(value):
    """A hashable copy of a JSON-like config value (lists → tuples, dicts → sorted item tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value):
    if isinstance(value, tuple) and value and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str)
                                                  for v in value):
        return {k: _thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Layer:
    """One node of the graph: Keras's layer name and class name, its config, and its input layers' names."""

    name: str
    kind: str
    config: tuple = ()  # frozen: see :func:`make_layer` and :attr:`cfg`
    inputs: tuple[str, ...] = ()

    @functools.cached_property
    def cfg(self) -> dict:
        return _thaw(self.config) if self.config else {}

    def __getstate__(self):  # keep the cached cfg out of copies
        return {k: getattr(self, k) for k in ("name", "kind", "config", "inputs")}


#: Longest name (of a layer, a model or a class) jaxviz accepts from a file.
MAX_NAME = 1_000


def name_problem(name) -> str | None:
    """Why a raw name from a model file cannot be a layer or model name (None if it can): Keras itself refuses
    ``/`` in a layer name; ``..``, control characters and empty or huge names never come from Keras either."""
    if not isinstance(name, str) or not name:
        return "is empty or not text"
    if len(name) > MAX_NAME:
        return f"is {len(name):,} characters long (at most {MAX_NAME:,})"
    if "/" in name:
        return "contains '/', which Keras does not allow in a name"
    if name in (".", ".."):
        return "is a path component ('.' or '..')"
    if printable(name) != name:
        return "contains control characters"
    return None


def make_layer(name: str, kind: str, config: Mapping | None = None, inputs: Sequence[str] = ()) -> Layer:
    return Layer(name, kind, _freeze(dict(config or {})), tuple(inputs))


@dataclasses.dataclass(frozen=True)
class Graph:
    """A model as a graph of named layers; hashable, so it keys compiled-program caches.

    Attributes:
      name: the model's name (Keras's ``model.name``).
      layers: every layer, each after its inputs; the first ones are the ``InputLayer`` s.
      outputs: the names of the layers whose values the model returns (one for the CNNs jaxviz explains).
      class_names: names of the output classes, if the model's maker knows them.
      aliases: ``(alias, layer)`` pairs: other names a layer answers to (an ONNX file's node names and the
        PyTorch module paths whose output a layer is: ``layer4`` → ``layer4.2.relu_2``).
    """

    name: str
    layers: tuple[Layer, ...]
    outputs: tuple[str, ...]
    class_names: tuple[str, ...] | None = None
    aliases: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        seen: set[str] = set()
        for layer in self.layers:
            if layer.name in seen:
                raise JaxvizError(f"layer name {layer.name!r} appears twice in model {self.name!r}")
            missing = [i for i in layer.inputs if i not in seen]
            if missing:
                raise JaxvizError(f"layer {layer.name!r} of {self.name!r} takes {missing[0]!r}, which comes "
                                  "later or does not exist")
            seen.add(layer.name)
        if not self.outputs or any(o not in seen for o in self.outputs):
            raise JaxvizError(f"model {self.name!r}: outputs {self.outputs} are not all layers")
        if any(target not in seen for _, target in self.aliases):
            raise JaxvizError(f"model {self.name!r}: an alias names a layer it does not have")

    # --- structure -------------------------------------------------------------------------------------

    @functools.cached_property
    def by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {layer.name: i for i, layer in enumerate(self.layers)}

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def input_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.kind == "InputLayer"]

    @property
    def input_shape(self) -> tuple:
        """The first input's shape without the batch axis (``None`` for a free size)."""
        cfg = self.input_layers[0].cfg
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        return tuple(shape[1:])

    @functools.cached_property
    def logits(self) -> tuple[str, bool]:
        """``(layer, pre_activation)``: where the ``"logits"`` tap is read (see the module docstring)."""
        out = self.by_name[self.outputs[0]]
        if out.cfg.get("activation") in LOGIT_ACTIVATIONS and out.kind != "Activation":
            return out.name, True
        final = out.kind in FINAL_KINDS or (out.kind == "Activation" and out.cfg.get("activation") in LOGIT_ACTIVATIONS)
        if final and out.inputs:
            return out.inputs[0], False
        return out.name, False

    @functools.cached_property
    def head_activation(self) -> str | None:
        """The final activation that turns the logits into the model's output: "softmax", "sigmoid" or None."""
        out = self.by_name[self.outputs[0]]
        if out.kind in FINAL_KINDS:
            return FINAL_KINDS[out.kind]
        act = out.cfg.get("activation")
        return act if act in LOGIT_ACTIVATIONS else None

    @functools.cached_property
    def bn_folds(self) -> dict[str, str]:
        """``{conv: batch_norm}`` for each Conv2D/DepthwiseConv2D without an activation of its own whose only
        reader is a BatchNormalization over its channels: pairs the fast ops compute as one convolution."""
        readers: dict[str, list[str]] = {}
        for layer in self.layers:
            for i in layer.inputs:
                readers.setdefault(i, []).append(layer.name)
        folds = {}
        for layer in self.layers:
            if layer.kind != "BatchNormalization" or len(layer.inputs) != 1:
                continue
            src = self.by_name[layer.inputs[0]]
            axis = layer.cfg.get("axis", -1)
            axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
            if (src.kind in ("Conv2D", "DepthwiseConv2D") and src.cfg.get("activation", "linear") in ("linear", None)
                    and axis in (-1, 3) and readers.get(src.name) == [layer.name] and src.name not in self.outputs):
                folds[src.name] = layer.name
        return folds

    @functools.cached_property
    def _with_bias(self) -> dict[str, Layer]:
        """The folded convolutions of :attr:`bn_folds`, configured with a bias (the folded one)."""
        return {c: make_layer(c, self.by_name[c].kind, {**self.by_name[c].cfg, "use_bias": True},
                              self.by_name[c].inputs) for c in self.bn_folds}

    def ancestors(self, names: Iterable[str], given: Iterable[str] = ()) -> set[str]:
        """The layers ``names`` depend on, themselves included; the inputs of the ``given`` layers (whose
        values are given, not computed) are not followed."""
        todo, seen, given = [self.resolve(n) for n in names], set(), set(given)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                if name not in given:
                    todo.extend(self.by_name[name].inputs)
        return seen

    def resolve(self, name: str) -> str:
        """A layer's full name: ``"logits"`` → the layer that holds the logits; a nested model's inner layer by
        its bare name where that is unique (``block5_conv3`` → ``vgg16/block5_conv3``); others as they are."""
        if name == "logits":
            return self.logits[0]
        if name in self.by_name:
            return name
        alias = dict(self.aliases).get(name)
        if alias is not None:
            return alias
        matches = [n for n in self.layer_names if n.endswith("/" + name)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise LayerError(f"layer name {name!r} is ambiguous in {self.name}: {', '.join(matches)}; give the full "
                             "name")
        raise LayerError(f"unknown layer {name!r} in {self.name}; valid layers: {', '.join(self.layer_names)}")

    def to_json(self) -> str:
        """The graph as JSON (jaxviz's pickle-free model format keeps it next to the arrays)."""
        return json.dumps({
            "name": self.name, "outputs": list(self.outputs),
            "class_names": None if self.class_names is None else list(self.class_names),
            **({"aliases": [list(a) for a in self.aliases]} if self.aliases else {}),
            "layers": [{"name": x.name, "kind": x.kind, "config": x.cfg, "inputs": list(x.inputs)}
                       for x in self.layers],
        })

    @classmethod
    def from_json(cls, text: str) -> Graph:
        d = json.loads(text)
        layers = tuple(make_layer(x["name"], x["kind"], x["config"], x["inputs"]) for x in d["layers"])
        names = d.get("class_names")
        aliases = tuple((str(a), str(t)) for a, t in d.get("aliases", ()))
        return cls(d["name"], layers, tuple(d["outputs"]), None if names is None else tuple(names), aliases)


# ---------------------------------------------------------------------------------------------------------
# The forward pass


def forward(graph: Graph, params: Mapping, x, *, ops: Ops, upto: str | None = None, taps: Sequence[str] = (),
            perturb: Mapping[str, jax.Array] | None = None, relu: Callable | None = None,
            prepared: Mapping | None = None, replace: Mapping[str, jax.Array] | None = None):
    """``(output, {tap: array})``: the graph on ``x``, evaluating only what ``upto`` and ``taps`` need.

    Args:
      graph: the model's :class:`Graph`.
      params: ``{layer: {"kernel", "bias", …}}``.
      x: ``[N, H, W, C]`` preprocessed input.
      ops: how convolutions, dense products and pools are computed (:class:`jaxviz.ops.Ops`); its facts
        (backend, flags, precision) are all this pass reads, and fields left ``None`` are read once here
        (:meth:`jaxviz.ops.Ops.resolved`).
      upto: the layer whose value is returned (``"logits"``: the class scores before the final softmax);
        default the model's output. Nothing that ``upto`` and ``taps`` do not depend on is computed.
      taps: layers whose values are also returned, by name.
      perturb: ``{layer: delta}`` added to those layers' outputs (``"logits"`` too) before anything reads them.
      relu: replaces every plain ReLU of the graph (fused ``activation="relu"`` and default ``ReLU`` layers).
      replace: ``{layer: value}``: those layers' outputs (after their activation) are ``value``; what only they
        read is not computed (with no other path from ``x``, ``x`` serves for its shape alone).
      prepared: the kernels :func:`prepare` derived from ``params`` (the fast ops' flipped/Winograd/transposed
        kernels); without them the fast ops derive what they need inside the program.
    """
    ops = ops.resolved().with_relu(relu)
    perturb = dict(perturb or {})
    replace = {graph.resolve(name): value for name, value in (replace or {}).items()}
    taps = tuple(taps)
    target = graph.outputs[0] if upto is None else (upto if upto == "logits" else graph.resolve(upto))
    needed = graph.ancestors((target, *taps), given=replace)
    logits_layer, logits_pre = graph.logits
    # Stopping at the logits: the output layer's activation runs only if a tap needs its value.
    skip_activation = target == "logits" and logits_layer not in graph.ancestors(t for t in taps if t != "logits")
    # Conv + BatchNorm pairs computed as one conv with folded kernels (fast ops; not where the conv's own
    # output is asked for, and not under "highest" precision).
    seen = {graph.resolve(t) for t in (*taps, *perturb) if t != "logits"} | {target} | set(replace)
    folded = {c: bn for c, bn in graph.bn_folds.items()
              if ops.fast and "folded_bias" in (prepared or {}).get(c, {}) and c not in seen and ops.approximate}
    folded_bns = {bn: c for c, bn in folded.items()}
    values: dict[str, jax.Array] = {}
    tapped: dict[str, jax.Array] = {}
    prepared = prepared or {}
    for layer in graph.layers:
        if layer.name not in needed:
            continue
        if layer.name in replace:
            out = replace[layer.name]
        elif layer.kind == "InputLayer":
            out = x
        elif layer.name in folded_bns:  # already applied by its convolution
            out = values[folded_bns[layer.name]]
        else:
            p = params.get(layer.name, {})
            kind_layer = layer
            if layer.name in folded:
                pre = prepared[layer.name]
                p = {"kernel": pre["folded_kernel"], "bias": pre["folded_bias"], "prepared": pre.get("folded_prepared")}
                kind_layer = graph._with_bias[layer.name]
            elif layer.name in prepared:
                p = {**p, "prepared": prepared[layer.name]}
            inputs = [values[i] for i in layer.inputs]
            out = apply_layer(kind_layer, p, inputs, ops)
            if isinstance(out, tuple):  # layers with a fused activation return (pre-activation, activation)
                pre, act = out
                if layer.name == logits_layer and logits_pre:
                    pre = _perturbed(pre, "logits", perturb)
                    tapped["logits"] = _binary_logits(pre, act)
                    if skip_activation:
                        continue
                out = apply_activation(act, pre, ops)
        out = _perturbed(out, layer.name, perturb)
        if layer.name == logits_layer and not logits_pre:
            out = _perturbed(out, "logits", perturb)
            tapped["logits"] = _binary_logits(out, graph.head_activation)
        values[layer.name] = out
    result = tapped["logits"] if target == "logits" else values[target]
    return result, {t: (tapped["logits"] if t == "logits" else values[graph.resolve(t)]) for t in taps}


def _binary_logits(z, activation):
    """A single sigmoid unit's logit ``z`` as the two classes ``[-z, z]`` (see the module docstring)."""
    if activation == "sigmoid" and z.shape[-1] == 1:
        return jax.numpy.concatenate([-z, z], axis=-1)
    return z


def _perturbed(value, name, perturb):
    delta = perturb.get(name)
    return value if delta is None else value + delta


def prepare(graph: Graph, params: Mapping, ops: Ops) -> dict:
    """``{layer: prepared kernels}`` for the convolution and dense layers ``ops`` precomputes kernels for.

    Compute it once per set of weights, outside any loop of gradient steps, and pass it to :func:`forward`
    (as a traced argument): XLA:CPU would otherwise redo the flips inside every program and every step.
    """
    out = {}
    for layer in graph.layers:
        p = params.get(layer.name)
        if not p or "kernel" not in p:
            continue
        cfg = layer.cfg
        k = p["kernel"]
        eligible = layer.kind == "Conv2D" and ops.prepares_conv(
            k.shape, _pair(cfg.get("strides", 1)), cfg.get("padding", "valid"), _pair(cfg.get("dilation_rate", 1)),
            cfg.get("groups", 1))
        if eligible:
            out[layer.name] = ops.prepare_conv(k)
        if ops.fast and layer.name in graph.bn_folds:
            fk, fb = _fold_batch_norm(layer, p, graph.by_name[graph.bn_folds[layer.name]], params)
            out.setdefault(layer.name, {}).update(folded_kernel=fk, folded_bias=fb)
            if eligible:
                out[layer.name]["folded_prepared"] = ops.prepare_conv(fk)
        elif layer.kind == "Dense":
            d = ops.prepare_dense(p["kernel"])
            if d is not None:
                out[layer.name] = d
    return out


def _fold_batch_norm(conv: Layer, p: Mapping, bn: Layer, params: Mapping):
    """The kernel and bias of ``conv`` followed by the inference-mode ``bn``: ``k·s`` and ``(b − mean)·s + β``
    with ``s = γ / √(var + ε)`` per output channel (Ioffe & Szegedy 2015, folded as inference engines do)."""
    q, cfg = params[bn.name], bn.cfg
    scale = jax.lax.rsqrt(q["moving_variance"] + cfg.get("epsilon", 1e-3))
    if cfg.get("scale", True):
        scale = scale * q["gamma"]
    bias = p["bias"] if conv.cfg.get("use_bias", True) else 0.0
    shift = (bias - q["moving_mean"]) * scale
    if cfg.get("center", True):
        shift = shift + q["beta"]
    kernel = p["kernel"]
    # DepthwiseConv2D: [kh, kw, C, multiplier], output channel c·multiplier + m.
    kernel = kernel * (scale if conv.kind == "Conv2D" else scale.reshape(kernel.shape[2:]))
    return kernel, shift


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.ndim(v) == 0 else tuple(int(i) for i in v)


# ---------------------------------------------------------------------------------------------------------
# Input sizes

#: Kinds that slide a window over the image: their output side follows Keras's ``padding`` arithmetic.
WINDOW_KINDS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "MaxPool2D",
                "AveragePooling2D", "AvgPool2D")
#: Kinds after which the values have no image axes jaxviz follows.
FLAT_KINDS = ("GlobalAveragePooling2D", "GlobalAvgPool2D", "GlobalMaxPooling2D", "GlobalMaxPool2D", "Flatten",
              "Reshape", "Permute")


def _spatial_side(layer: Layer, sides: Sequence[tuple[int, int] | None]) -> tuple[int, int] | None:
    """``(height, width)`` of ``layer``'s output given its inputs'; ``None`` once no image axes remain."""
    if not sides or sides[0] is None or layer.kind in FLAT_KINDS:
        return None
    cfg, (h, w) = layer.cfg, sides[0]
    if layer.kind in WINDOW_KINDS:
        pooling = "Pool" in layer.kind
        k = _pair(cfg.get("pool_size", 2) if pooling else cfg.get("kernel_size", 1))
        strides = cfg.get("strides")
        s = k if pooling and strides is None else _pair(1 if strides is None else strides)
        d = _pair(cfg.get("dilation_rate", 1))
        pad = str(cfg.get("padding", "valid")).lower()
        return window_pads(h, k[0], s[0], d[0], pad)[0], window_pads(w, k[1], s[1], d[1], pad)[0]
    if layer.kind in ("ZeroPadding2D", "Cropping2D"):
        sign = 1 if layer.kind == "ZeroPadding2D" else -1
        (t, b), (left, r) = pads_2d(cfg.get("padding", 1) if sign > 0 else cfg.get("cropping", 0))
        return h + sign * (t + b), w + sign * (left + r)
    if layer.kind in ("UpSampling2D", "Conv2DTranspose"):
        s = _pair(cfg.get("size", 2) if layer.kind == "UpSampling2D" else cfg.get("strides", 1))
        return h * s[0], w * s[1]  # at least this large: enough to tell whether an input is too small
    return h, w


def min_input_side(graph: Graph, limit: int = 2048, names: Iterable[str] | None = None) -> int:
    """The smallest square input side for which every layer of ``graph`` (or of ``names``, the layers a
    truncated pass computes) keeps at least one pixel, from the layers' windows, strides and paddings.
    InceptionV3: 75, as Keras asks; where Keras's applications ask for more than their layers need (Xception
    71, whose "same" layers run down to 7 px), this is the smaller, computable size."""
    keep = None if names is None else set(names)
    for side in range(1, limit + 1):
        sizes: dict[str, tuple[int, int] | None] = {}
        for layer in graph.layers:
            if keep is not None and layer.name not in keep:
                continue
            if layer.kind == "InputLayer":
                sizes[layer.name] = (side, side)
                continue
            out = _spatial_side(layer, [sizes[i] for i in layer.inputs])
            if out is not None and min(out) < 1:
                break
            sizes[layer.name] = out
        else:
            return side
    return limit


@dataclasses.dataclass(frozen=True)
class Network:
    """A graph with its ops, applied Flax-style: ``apply({"params": …, "prepared": …}, x, upto=…, taps=…)``.

    Hashable, so the pattern programs key their cache with it.
    """

    graph: Graph
    ops: Ops

    def apply(self, variables: Mapping, x, upto: str | None = None, taps: Sequence[str] = (),
              relu: Callable | None = None, perturb: Mapping | None = None, replace: Mapping | None = None):
        return forward(self.graph, variables["params"], x, ops=self.ops, upto=upto, taps=taps, perturb=perturb,
                       relu=relu, prepared=variables.get("prepared"), replace=replace)
