"""Any Flax module — linen or NNX — as a :class:`jaxviz.Model`: ``jaxviz.from_flax(module, variables, …)``.

The module runs as it is written (:class:`jaxviz.frontends.flax_network.FlaxNetwork`); jaxviz only watches
and steers its submodule calls, with Flax's own mechanisms and nothing patched process-wide:

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
to a jaxpr (:mod:`jaxviz.frontends.flax_relu`) for guided backprop, deconvnet and DeepLIFT.

The weights are a flat dict ``{layer: {leaf: array}}`` (a layer's own variables, e.g. ``Conv_0``'s
``kernel`` and ``bias``, BatchNorm's ``scale``, ``bias``, ``mean``, ``var``) passed to every program as a
traced argument: the same module with other weights reuses the compiled programs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import ops as ops_lib
from .. import preprocessing
from .. import profile as profile_lib
from ..errors import LayerError
from ..graph import Graph, make_layer
from ..interface import LayerInfo
from ..model import Model, ModelInfo
from .flax_network import OUTPUT, OUTPUTS, FlaxError, FlaxNetwork, network_of

__all__ = ["OUTPUT", "OUTPUTS", "FlaxError", "FlaxModel", "FlaxNetwork", "from_flax", "network_of"]


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
        self._table = None  # no front-end table: shapes come from tracing the module (layer_table)
        self._tables: dict = {}

    # --- running it ---------------------------------------------------------------------------------------

    def apply(self, params: dict, x, upto: str | None = None, taps: Sequence[str] = (),
              relu: Callable | None = None, perturb: Mapping | None = None, prepared=None, flipped=None,
              replace: Mapping | None = None):
        """``(output, {tap: array})``, :meth:`jaxviz.Model.apply`'s contract, by running the Flax module."""
        return self.module.forward(params, x, upto=upto, taps=taps, relu=relu, perturb=perturb, replace=replace)

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
