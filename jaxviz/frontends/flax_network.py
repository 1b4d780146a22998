"""Running a Flax module — linen or NNX — with a hook on every submodule call: :class:`FlaxNetwork`, the
forward pass :class:`jaxviz.frontends.flax.FlaxModel` runs (see :mod:`jaxviz.frontends.flax`).

linen modules run under :func:`flax.linen.intercept_methods`; an NNX module's graph definition and state
are merged into a fresh copy inside every traced function, and each submodule of that copy is swapped for a
:class:`_Tap` that calls it and reports its output. Nothing is patched process-wide.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import ops as ops_lib
from ..errors import JaxvizError
from ..graph import Graph
from . import flax_relu as activations

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
        # a container that is not called (nnx.List, nnx.Dict: Modules in recent Flax) keeps its place; its
        # items are tapped
        if not path or not isinstance(node, nnx.Module) or not callable(node):
            continue
        parent, key = nodes[path[:-1]], path[-1]
        tap = _Tap(node, path, hook)
        if isinstance(parent, nnx.Module) and isinstance(key, str):
            setattr(parent, key, tap)
        else:  # an item of a list of submodules (nnx.List, nnx.Sequential's layers)
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

    @functools.cached_property
    def _hash(self) -> int:
        # hashing an NNX graph definition walks every node (milliseconds for a VGG16), and each method call
        # looks its program up by this network: hashed once (every field is immutable)
        key = self._key()
        try:
            return hash(key)
        except TypeError:  # a linen module with a list field (nn.Sequential's layers): equality still decides
            return hash((self.api, type(self.definition), self.treedef, self.keys, self.output))

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        if self is other:
            return True
        return isinstance(other, FlaxNetwork) and self._hash == other._hash and self._key() == other._key()

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
              relu: Callable | None = None, perturb: Mapping | None = None, replace: Mapping | None = None):
        """:class:`jaxviz.graph.Network`'s ``apply``: ``variables["params"]`` are the flat weights."""
        return self.forward(variables["params"], x, upto=upto, taps=taps, relu=relu, perturb=perturb,
                            replace=replace)

    def forward(self, params: Mapping, x, upto: str | None = None, taps: Sequence[str] = (),
                relu: Callable | None = None, perturb: Mapping | None = None, replace: Mapping | None = None):
        """``(output, {tap: array})`` as :func:`jaxviz.graph.forward` (see the module docstring); ``replace``
        swaps a call's return value for the given array (Ablation-CAM's ablated maps)."""
        resolve = self.graph.resolve
        target = OUTPUT if upto is None else ("logits" if upto == "logits" else resolve(upto))
        taps = tuple(taps)
        names = {t: ("logits" if t == "logits" else resolve(t)) for t in taps}
        delta = {("logits" if k == "logits" else resolve(k)): v for k, v in (perturb or {}).items()}
        swap = {resolve(k): v for k, v in (replace or {}).items()}
        if relu is None or relu is jax.nn.relu:
            return self._forward(params, x, target, names, delta, swap)
        try:
            return activations.substitute(lambda p, v, d: self._forward(p, v, target, names, d, swap), relu,
                                          params, x, delta)
        except activations.NoActivationError:
            raise FlaxError(f"{self.graph.name}: no ReLU found in its forward pass (jax.nn.relu, nn.relu, "
                            "jnp.maximum(x, 0)); guided backprop, deconvnet and DeepLIFT need one") from None

    def _forward(self, params, x, target: str, names: Mapping[str, str], delta: Mapping, swap: Mapping):
        wanted = {target, *names.values()}
        inner = wanted - {OUTPUT, "logits"}
        got: dict = {}
        counts: collections.Counter = collections.Counter()

        def hook(path, kind, value):
            name = _layer_name(path, counts)
            if name in swap:
                value = swap[name]
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
