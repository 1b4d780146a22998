"""Any Flax module — linen or NNX — as a :class:`jaxviz.Model`: ``jaxviz.from_flax(module, variables, …)``.

The module runs as it is written; jaxviz only watches and steers its submodule calls, with Flax's own
mechanisms and nothing patched process-wide:

- linen: :func:`flax.linen.intercept_methods` around ``module.apply(variables, x, **apply_kwargs)``;
- NNX: the module is put in eval mode with :func:`flax.nnx.view` (``deterministic=True``,
  ``use_running_average=True``; the user's module is not changed), split into a graph definition and its
  state; inside every traced function a fresh copy is merged from the traced state and each of its
  submodules is swapped, on that copy only, for a :class:`_Tap` that calls it and reports its output.

A layer is a submodule call: its name is the submodule's path joined by ``/`` (``Conv_0``,
``backbone/layer1/0/conv2``, ``blocks/0/conv``; a second call of the same submodule is ``name:1``), its
output that call's return value. Layers are listed in the order their outputs are computed (a submodule's
children before it), then ``output``, the module's return value. The ``"logits"`` tap is the module's
output for ``output="logits"``, ``log p`` for ``"probs"`` (softmax inside the module: ``softmax(log p) = p``)
and ``log(p / (1 − p))`` for ``"sigmoid"``.

Taps read the reported outputs, ``perturb={layer: delta}`` adds ``delta`` to a call's return value before
the rest of the module reads it (Grad-CAM's zero delta), and a pass stops once its last wanted layer has
returned: nothing after it is computed. ReLUs written as functions are replaced by tracing the forward pass
to a jaxpr (:mod:`jaxviz.frontends.activations`) for guided backprop, deconvnet and DeepLIFT.

The weights are a flat dict ``{layer: {leaf: array}}`` (a layer's own variables, e.g. ``Conv_0``'s
``kernel`` and ``bias``, BatchNorm's ``scale``, ``bias``, ``mean``, ``var``) passed to every program as a
traced argument: the same module with other weights reuses the compiled programs.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import ops as ops_lib
from .. import preprocessing
from .. import profile as profile_lib
from ..errors import JaxvizError, LayerError
from ..graph import Graph, make_layer
from ..model import Model, ModelInfo
from ..vgg import LayerInfo
from . import activations

OUTPUTS = ("logits", "probs", "sigmoid")
#: The pseudo-layer holding the module's return value.
OUTPUT = "output"
#: The key of the root module's own variables in the flat weights.
ROOT = "(root)"
#: Eval-mode attributes :func:`flax.nnx.view` sets on the modules that have them.
NNX_EVAL = {"deterministic": True, "use_running_average": True}


class _Stop(Exception):
    """Raised once a truncated pass has what it needs; caught by :meth:`FlaxNetwork.forward`."""


class FlaxError(JaxvizError):
    """A Flax module or its arguments cannot be used as asked."""


# ---------------------------------------------------------------------------------------------------------
# Running the module with a hook on every submodule call


def _layer_name(path: Sequence, counts: collections.Counter) -> str:
    base = "/".join(str(p) for p in path)
    k = counts[base]
    counts[base] += 1
    return base if k == 0 else f"{base}:{k}"


class _Tap(nnx.Module):
    """Stands in for one submodule of a merged NNX copy: calls it, and reports its output to ``hook``."""

    def __init__(self, inner: nnx.Module, path: tuple, hook: Callable):
        self.inner = inner
        self.path = path
        self.hook = hook

    def __call__(self, *args, **kwargs):
        return self.hook(self.path, type(self.inner).__name__, self.inner(*args, **kwargs))


def _swap_submodules(root: nnx.Module, hook: Callable) -> None:
    """Replaces each submodule of ``root`` (a copy made inside the traced function) by a :class:`_Tap`."""
    nodes = {tuple(path): node for path, node in nnx.iter_graph(root)}
    for path, node in nodes.items():
        if not path or not isinstance(node, nnx.Module):
            continue
        parent, key = nodes[path[:-1]], path[-1]
        tap = _Tap(node, path, hook)
        if isinstance(parent, nnx.Module):
            setattr(parent, key, tap)
        else:  # a list of submodules (nnx.List, nnx.Sequential's layers)
            parent[key] = tap


def _is_float(value) -> bool:
    return hasattr(value, "dtype") and jnp.issubdtype(value.dtype, jnp.floating)


@dataclasses.dataclass(frozen=True, eq=False)
class FlaxNetwork:
    """A Flax module with how to run it; equal (and hashed) by everything that shapes a compiled program, so
    models of the same module share the programs cached by it (the filter patterns')."""

    api: str  # "linen" or "nnx"
    definition: object  # the linen module, or the NNX graph definition
    treedef: object  # of the float variables (linen: the variables dict; NNX: the state)
    keys: tuple[tuple[str, str], ...]  # (layer, leaf) of each float variable, in treedef order
    output: str
    apply_kwargs: tuple
    rest: object = None  # NNX: the state that is not float arrays (RNG keys, counts); linen: other collections
    graph: Graph | None = None
    ops: ops_lib.Ops = ops_lib.EXACT

    def _key(self):
        return (self.api, self.definition, self.treedef, self.keys, self.output, self.apply_kwargs)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, FlaxNetwork) and self._key() == other._key()

    # --- the module's own call, with a hook ---------------------------------------------------------

    def variables(self, params: Mapping):
        """The module's variables (linen) or state (NNX) from the flat ``params``."""
        leaves = [params[layer][leaf] for layer, leaf in self.keys]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def run(self, params: Mapping, x, hook: Callable):
        """The module's return value on ``x``; ``hook(path, kind, value) -> value`` sees every submodule call."""
        kwargs = dict(self.apply_kwargs)
        if self.api == "linen":
            variables = self.variables(params)
            if self.rest:
                variables = {**variables, **self.rest}

            def interceptor(next_fun, args, kw, context):
                out = next_fun(*args, **kw)
                if context.method_name != "__call__" or not context.module.path:
                    return out
                return hook(tuple(context.module.path), type(context.module).__name__, out)

            with nn.intercept_methods(interceptor):
                return self.definition.apply(variables, x, **kwargs)
        state = self.variables(params)
        module = nnx.merge(self.definition, state, self.rest) if self.rest is not None else \
            nnx.merge(self.definition, state)
        _swap_submodules(module, hook)
        return module(x, **kwargs)

    def logits(self, out):
        """The class scores before the module's final softmax / sigmoid (see the module docstring)."""
        if self.output == "probs":
            return jnp.log(out)
        if self.output == "sigmoid":
            z = jnp.log(out) - jnp.log1p(-out)
            return jnp.concatenate([-z, z], axis=-1) if out.shape[-1] == 1 else z
        return out

    # --- jaxviz's forward pass --------------------------------------------------------------------------

    def apply(self, variables: Mapping, x, upto: str | None = None, taps: Sequence[str] = (),
              relu: Callable | None = None, perturb: Mapping | None = None):
        """:class:`jaxviz.graph.Network`'s ``apply``: ``variables["params"]`` are the flat weights."""
        return self.forward(variables["params"], x, upto=upto, taps=taps, relu=relu, perturb=perturb)

    def forward(self, params: Mapping, x, upto: str | None = None, taps: Sequence[str] = (),
                relu: Callable | None = None, perturb: Mapping | None = None):
        """``(output, {tap: array})`` as :func:`jaxviz.graph.forward` (see the module docstring)."""
        resolve = self.graph.resolve
        target = OUTPUT if upto is None else ("logits" if upto == "logits" else resolve(upto))
        taps = tuple(taps)
        names = {t: ("logits" if t == "logits" else resolve(t)) for t in taps}
        delta = {("logits" if k == "logits" else resolve(k)): v for k, v in (perturb or {}).items()}
        if relu is None or relu is jax.nn.relu:
            return self._forward(params, x, target, names, delta)
        try:
            return activations.substitute(lambda p, v, d: self._forward(p, v, target, names, d), relu,
                                          params, x, delta)
        except activations.NoActivationError:
            raise FlaxError(f"{self.graph.name}: no ReLU found in its forward pass (jax.nn.relu, nn.relu, "
                            "jnp.maximum(x, 0)); guided backprop, deconvnet and DeepLIFT need one") from None
        except RuntimeError as e:  # jaxviz.runtime.injecting_relu: the layer's output is not a ReLU's
            if "injected activation" not in str(e):
                raise
            raise FlaxError(f"{self.graph.name}: {upto if upto else 'this layer'}'s output is not a ReLU's (its "
                            "ReLU is a function applied after the submodule); Ablation-CAM and Guided Grad-CAM "
                            "run the layers after a layer from its output through its ReLU call: give them "
                            "layer= a submodule whose output is a ReLU's, or use gradcam") from None

    def _forward(self, params, x, target: str, names: Mapping[str, str], delta: Mapping):
        wanted = {target, *names.values()}
        inner = wanted - {OUTPUT, "logits"}
        got: dict = {}
        counts: collections.Counter = collections.Counter()

        def hook(path, kind, value):
            name = _layer_name(path, counts)
            if name in delta:
                value = value + delta[name]
            if name in wanted:
                got[name] = value
            if inner == wanted and inner <= got.keys():
                raise _Stop
            return value

        try:
            out = self.run(params, x, hook)
            out = out + delta[OUTPUT] if OUTPUT in delta else out
            got[OUTPUT] = out
            got["logits"] = self.logits(out) + delta.get("logits", 0.0)
        except _Stop:
            pass
        return got[target], {t: got[n] for t, n in names.items()}

    def calls(self, params: Mapping, x_spec: jax.ShapeDtypeStruct, upto: str | None = None
              ) -> list[tuple[str, str, tuple]]:
        """``[(layer, kind, output shape)]`` of one traced call (shapes only), in the order outputs are computed,
        then the output; a call whose value is not an array is left out. With ``upto``, the trace stops once
        that layer has returned (a fixed-size head after it never runs)."""
        rows = []

        def probe(p, v):
            counts: collections.Counter = collections.Counter()

            def hook(path, kind, value):
                name = _layer_name(path, counts)
                if isinstance(value, jax.Array):
                    rows.append((name, kind, tuple(value.shape)))
                if name == upto:
                    raise _Stop
                return value

            out = self.run(p, v, hook)
            if not isinstance(out, jax.Array):
                raise FlaxError(f"the module returns {type(out).__name__}, not an array; jaxviz explains a "
                                "module whose output is one array (wrap it to return the class scores)")
            rows.append((OUTPUT, "Output", tuple(out.shape)))
            return out

        specs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), params)
        try:
            jax.eval_shape(probe, specs, x_spec)
        except _Stop:
            pass
        return rows


# ---------------------------------------------------------------------------------------------------------
# Taking a module apart: flat weights, and the state that is not weights


def _path_keys(path) -> list[str]:
    out = []
    for k in path:
        if isinstance(k, jax.tree_util.GetAttrKey) and k.name == "value":
            continue  # an NNX Variable's value
        out.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
    return out


def _flatten(tree, skip_first: bool) -> tuple[dict, object, tuple]:
    """``({layer: {leaf: array}}, treedef, keys)`` of a pytree of float arrays (``skip_first``: the linen
    collection name heads each path)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    flat: dict = {}
    keys = []
    for path, value in leaves:
        parts = _path_keys(path)
        collection = parts[0] if skip_first else "params"
        parts = parts[1:] if skip_first else parts
        layer = "/".join(parts[:-1]) or ROOT
        leaf = parts[-1]
        if leaf in flat.get(layer, {}):
            leaf = f"{collection}.{leaf}"
        flat.setdefault(layer, {})[leaf] = jnp.asarray(value)
        keys.append((layer, leaf))
    return flat, treedef, tuple(keys)


def _split_linen(variables) -> tuple[dict, object]:
    floats, rest = {}, {}
    for collection, tree in dict(variables).items():
        if all(_is_float(v) for v in jax.tree_util.tree_leaves(tree)):
            floats[collection] = tree
        else:
            rest[collection] = tree
    return floats, rest


def _float_variable(path, value) -> bool:
    return _is_float(value.get_value() if isinstance(value, nnx.Variable) else value)


def _split_nnx(module):
    """``(graphdef, float state, the rest)``: RNG keys and counts stay out of the weights."""
    return nnx.split(module, _float_variable, ...)


def _freeze_kwargs(apply_kwargs) -> tuple:
    try:
        frozen = tuple(sorted(dict(apply_kwargs or {}).items()))
        hash(frozen)
    except TypeError:
        raise FlaxError("apply_kwargs must be a dict of hashable values (e.g. {'train': False})") from None
    return frozen


def network_of(module, variables=None, *, output: str = "logits", apply_kwargs=None) -> tuple[FlaxNetwork, dict]:
    """``(network, flat weights)`` of a linen module with its variables, or of an NNX module (in eval mode)."""
    if output not in OUTPUTS:
        raise FlaxError(f"unknown output {output!r}; use one of: {', '.join(OUTPUTS)}")
    kwargs = _freeze_kwargs(apply_kwargs)
    if isinstance(module, nn.Module):
        if variables is None or not isinstance(variables, Mapping) or "params" not in variables:
            raise FlaxError("a linen module needs its variables: from_flax(module, variables) with "
                            "variables = module.init(...) or your trained {'params': …, 'batch_stats': …}")
        floats, rest = _split_linen(variables)
        flat, treedef, keys = _flatten(floats, skip_first=True)
        return FlaxNetwork("linen", module, treedef, keys, output, kwargs, rest or None), flat
    if isinstance(module, nnx.Module):
        if variables is not None:
            raise FlaxError("an NNX module holds its own weights: call from_flax(module) without variables")
        evaluated = nnx.view(module, raise_if_not_found=False, **NNX_EVAL)
        graphdef, floats, rest = _split_nnx(evaluated)
        flat, treedef, keys = _flatten(floats, skip_first=False)
        return FlaxNetwork("nnx", graphdef, treedef, keys, output, kwargs, rest), flat
    raise FlaxError(f"from_flax takes a flax.linen or flax.nnx Module, got {type(module).__name__}")


# ---------------------------------------------------------------------------------------------------------
# The model


def _row_params(flat: Mapping, name: str) -> tuple[int, tuple | None, int]:
    """``(weights, kernel shape, non-trainable weights)`` of a layer's own variables."""
    p = flat.get(name.split(":")[0], {})
    total = sum(int(np.prod(np.shape(v))) for v in p.values())
    fixed = sum(int(np.prod(np.shape(v))) for k, v in p.items() if k in ("mean", "var") or "." in k)
    kernel = p.get("kernel")
    return total, None if kernel is None else tuple(np.shape(kernel)), fixed


class FlaxModel(Model):
    """A Flax module as a :class:`jaxviz.Model` (made by :func:`from_flax`): every method and command takes it.

    ``graph`` is a chain of pseudo-layers (``input_layer``, each submodule call in the order its output is
    computed, ``output``) for the methods that read layer names and kinds; :meth:`apply` runs the module
    itself (:class:`FlaxNetwork`). ``params`` is the flat ``{layer: {leaf: array}}`` of the module's
    variables; :meth:`to_flax_variables` gives them back in the module's own layout.
    """

    def __init__(self, network: FlaxNetwork, params: dict, input_shape: tuple, *, name: str,
                 preprocess: str = "none", class_names: Sequence[str] | None = None, source: str = "flax"):
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        spec = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
        try:
            calls = network.calls(self.params, spec)
        except FlaxError:
            raise
        except Exception as e:  # noqa: BLE001 - any error of the user's module at this shape
            raise FlaxError(f"{name} cannot run on inputs of shape {(None, *input_shape)} "
                            f"({' '.join(str(e).split())[:200]}); pass the input_shape it takes") from None
        shape = (None, *input_shape)
        layers = [make_layer("input_layer", "InputLayer", {"batch_shape": list(shape)})]
        final = {"probs": "softmax", "sigmoid": "sigmoid"}.get(network.output)
        for n, kind, _ in calls:
            cfg = {"activation": final} if n == OUTPUT and final else {}
            layers.append(make_layer(n, kind, cfg, (layers[-1].name,)))
        self.graph = Graph(name, tuple(layers), (OUTPUT,), None if class_names is None else tuple(class_names))
        self.module = dataclasses.replace(network, graph=self.graph)
        self.ops = ops_lib.EXACT
        self._shapes = {n: s[1:] for n, _, s in calls}
        out_shape = self._shapes[OUTPUT]
        self.include_top = len(out_shape) == 1
        classes = int(out_shape[-1]) if self.include_top else 0
        if network.output == "sigmoid" and classes == 1:
            classes = 2
        spatial = len(input_shape) == 3
        hw = tuple(int(d) for d in input_shape[:2]) if spatial else None
        fixed = spatial and not self._takes((hw[0] + 32, hw[1] + 32, input_shape[-1]))
        if class_names is not None and len(class_names) != classes:
            raise FlaxError(f"{len(class_names)} class names for {classes} classes")
        self.arch = ModelInfo(name, classes, hw[0] if spatial and hw[0] == hw[1] else None,
                              "flatten" if fixed else "gap", None if class_names is None else tuple(class_names),
                              1, int(input_shape[-1]), hw)
        if fixed:  # a free size is checked against the module's shapes at each size asked for (layer_table)
            self.arch = dataclasses.replace(self.arch, min_size=min(hw))
        self.source = source
        self.preprocess = preprocessing.check_channels(preprocess, int(input_shape[-1]))
        self.profile = profile_lib.file()
        self._prepared_cache = None
        self._tables: dict = {}

    # --- running it ---------------------------------------------------------------------------------------

    def apply(self, params: dict, x, upto: str | None = None, taps: Sequence[str] = (),
              relu: Callable | None = None, perturb: Mapping | None = None, prepared=None, flipped=None):
        """``(output, {tap: array})``, :meth:`jaxviz.Model.apply`'s contract, by running the Flax module."""
        return self.module.forward(params, x, upto=upto, taps=taps, relu=relu, perturb=perturb)

    def prepared(self, params: dict | None = None) -> dict:
        """No precomputed kernels: the module computes as written."""
        return {}

    def to_flax_variables(self, params: Mapping | None = None):
        """The module's variables (linen: ``{"params": …, …}``) or NNX state for ``params`` (default: the model's)."""
        out = self.module.variables(self.params if params is None else params)
        if self.module.api == "linen" and self.module.rest:
            out = {**out, **self.module.rest}
        return out

    # --- shapes -------------------------------------------------------------------------------------------

    def _takes(self, shape) -> bool:
        try:
            self._calls(shape)
            return True
        except (TypeError, ValueError):
            return False

    def _calls(self, shape: tuple, upto: str | None = None) -> tuple:
        """The calls at input ``shape``, up to layer ``upto`` (default: all); ValueError if the module cannot
        take that shape or calls other submodules at it."""
        cache = self.__dict__.setdefault("_call_rows", {})
        key = (shape, upto)
        if key not in cache:
            cache[key] = self._trace_calls(shape, upto)
        return cache[key]

    def _trace_calls(self, shape: tuple, upto: str | None) -> tuple:
        try:
            rows = self.module.calls(self.params, jax.ShapeDtypeStruct((1, *shape), jnp.float32), upto)
        except Exception as e:  # noqa: BLE001 - the module's own error at this shape
            raise ValueError(" ".join(str(e).split())[:200]) from None
        names = [r[0] for r in rows]
        if names != self.graph.layer_names[1: len(names) + 1] or (upto is not None and names[-1:] != [upto]):
            raise ValueError(f"the module calls other submodules at input shape {shape}")
        if any(len(s) == 4 and min(s[1:3]) < 1 for _, _, s in rows):
            raise ValueError(f"a layer has no pixels left at input shape {shape}")
        return tuple(rows)

    def min_side(self, layers: str | Iterable[str] | None = None) -> int:
        return self.arch.min_size

    def layer_table(self, input_shape=None, upto: str | None = None) -> list[LayerInfo]:
        """Keras's layer list for the module: names, kinds (Flax class names), output shapes, weights."""
        shape = tuple(self.graph.input_shape if input_shape is None else input_shape)
        key = (shape, upto)
        if key not in self._tables:
            last = None if upto is None or upto == "logits" else self.graph.resolve(upto)
            calls = () if last == "input_layer" else self._calls(tuple(int(d) for d in shape),
                                                                 None if last == OUTPUT else last)
            rows = [LayerInfo("input_layer", "InputLayer", shape, 0)]
            prev = "input_layer"
            for name, kind, s in calls:
                count, kernel, fixed = _row_params(self.params, name)
                rows.append(LayerInfo(name, kind, tuple(s[1:]), count, kernel, fixed, (prev,)))
                prev = name
            self._tables[key] = rows
        return self._tables[key]

    @property
    def conv_layer_names(self) -> list[str]:
        """Submodule calls with a convolution kernel ``[kh, kw, in, out]`` and a spatial output."""
        return [r.name for r in self.layer_table() if r.kernel_shape is not None and len(r.kernel_shape) == 4
                and len(r.output_shape) == 3]

    @property
    def cam_layer(self) -> str:
        """Grad-CAM's default layer: the last spatial submodule output before the module pools or flattens it
        (not a pooling submodule's). Where the ReLU is a function applied after that submodule, its output is
        the map before the ReLU."""
        rows = [r for r in self.layer_table()[1:] if r.name != OUTPUT]
        spatial = [r.name for r in rows if len(r.output_shape) == 3 and "pool" not in r.kind.lower()]
        if not spatial:
            raise LayerError(f"{self.arch.name} has no submodule with a spatial map to explain")
        return spatial[-1]

    def __repr__(self) -> str:
        return (f"FlaxModel({self.arch.name!r}, {self.module.api}, output={self.module.output!r}, "
                f"params={self.count_params:,})")


def from_flax(module, variables=None, *, input_shape: Sequence[int], output: str = "logits",
              apply_kwargs: Mapping | None = None, preprocess: str = "none",
              class_names: Sequence[str] | None = None, name: str | None = None) -> FlaxModel:
    """Any Flax module as the :class:`jaxviz.Model` every method and command takes.

    Args:
      module: a ``flax.linen.Module`` (with ``variables``) or a ``flax.nnx.Module`` (holding its weights;
        put in eval mode by :func:`flax.nnx.view`, not changed).
      variables: the linen module's ``{"params": …, "batch_stats": …, …}``; ``None`` for NNX.
      input_shape: one input's shape without the batch axis, ``(H, W, C)`` (e.g. ``(28, 28, 1)``); a module
        that takes other sizes (a global-pooling head) is run at them too.
      output: what the module returns: ``"logits"`` (default), ``"probs"`` (a softmax inside) or
        ``"sigmoid"`` (independent or single-unit sigmoid outputs).
      apply_kwargs: keyword arguments of every call, for inference mode (e.g. ``{"train": False}``).
      preprocess: how RGB 0..255 images become the module's input ("none", "tf", "torch", "caffe", "rescale").
      class_names: the output classes' names.
      name: the model's name (default: the module's class name).
    """
    network, flat = network_of(module, variables, output=output, apply_kwargs=apply_kwargs)
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise FlaxError(f"input_shape must be (H, W, C) integers, got {input_shape!r}") from None
    if not shape or any(d < 1 for d in shape) or math.prod(shape) > 1 << 28:
        raise FlaxError(f"input_shape must be (H, W, C) positive integers, got {input_shape!r}")
    return FlaxModel(network, flat, shape, name=name or type(module).__name__,
                     preprocess=preprocessing.check_mode(preprocess), class_names=class_names,
                     source=f"flax:{network.api}")
