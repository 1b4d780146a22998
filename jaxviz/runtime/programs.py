"""Compiled programs: the ONE program cache and trace counter that attribution methods, Grad-CAM, DeepVis,
the metrics and :meth:`jaxviz.Model.features` use.

A program is keyed by what shapes it: the model's graph, its ops (with the matmul precision of the call,
:meth:`jaxviz.ops.Ops.at_precision`), the method's name and its options. It is not keyed by the model object:
params and the kernels prepared from them are traced arguments, so a second model of the same graph (other
weights: the sanity check's randomised copies, a fine-tuned twin) reuses every compiled program. A program
holds the graph and the ops, never a model, so dropping a model frees it and its params.

Objects without a graph (hand-set test models with an ``apply`` of their own) get programs of their own, held
weakly with the object.
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Callable, Hashable

import jax

from ..graph import Network, forward
from .checks import check_input, params_of

#: How many times each program was traced, by name ("saliency", "gradcam_book", "deepvis",
#: "patterns_keras", …): tests assert that a second call does not retrace.
trace_counts: collections.Counter = collections.Counter()

# {signature: program}: programs keyed by what shapes them (graph, ops, name, options; the filter-pattern
# programs: graph, ops, layer, size, chunk, devices …), so every model of the same graph reuses them. The
# least recently used are dropped past MAX_PROGRAMS (a notebook that loads model after model).
_SHARED: collections.OrderedDict = collections.OrderedDict()
#: Programs kept at most; one dropped is rebuilt (or read from JAX's persistent cache) when asked for again.
MAX_PROGRAMS = 256
# {model: {key: program}} for models without a graph (their own apply); held weakly.
_BY_OBJECT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_program(key: Hashable, make: Callable[[], object]):
    """The program for ``key``, made by ``make()`` the first time (see :data:`_SHARED`)."""
    if key in _SHARED:
        _SHARED.move_to_end(key)
        return _SHARED[key]
    program = _SHARED[key] = make()
    while len(_SHARED) > MAX_PROGRAMS:
        _SHARED.popitem(last=False)
    return program


def clear_programs() -> None:
    """Forgets every cached program (they are rebuilt, or loaded from the persistent cache, when needed)."""
    _SHARED.clear()
    _BY_OBJECT.clear()


class _GraphForward:
    """The forward pass of a graph with its ops (:func:`jaxviz.graph.forward`), with the kernels prepared from
    the params (:meth:`jaxviz.Model.prepared`): the backward convs then use precomputed flipped kernels instead
    of flipping and transposing every kernel inside each program (the transposes run nearly serially on
    XLA:CPU; docs/PERFORMANCE.md), and the fast ops their Winograd, transposed and
    folded kernels."""

    __slots__ = ("_graph", "_ops", "_prepared")

    def __init__(self, graph, ops, prepared):
        self._graph, self._ops, self._prepared = graph, ops, prepared

    def __call__(self, params, x, upto=None, taps=(), relu=jax.nn.relu, perturb=None, replace=None):
        return forward(self._graph, params, x, ops=self._ops, upto=upto, taps=taps, relu=relu, perturb=perturb,
                       replace=replace, prepared=self._prepared)


class _ObjectForward:
    """``model.apply`` of a model without a graph, through a weak reference (a cached program must not keep
    its model alive)."""

    __slots__ = ("_ref",)

    def __init__(self, ref):
        self._ref = ref

    def __call__(self, params, x, upto=None, taps=(), relu=jax.nn.relu, perturb=None, replace=None):
        model = self._ref()
        if model is None:  # pragma: no cover - only if a program outlives its model
            raise RuntimeError("the model of this compiled program was deleted")
        extra = {} if replace is None else {"replace": replace}  # models whose apply takes no replacements
        return model.apply(params, x, upto=upto, taps=taps, relu=relu, perturb=perturb, **extra)


def program_ops(model):
    """``model.ops`` with the matmul precision of this call (``jax.default_matmul_precision``): read here, where
    a program is looked up, and fixed in the program's key, so nothing global is read while it is traced."""
    return model.ops.at_precision(jax.config.jax_default_matmul_precision)


def compiled(model, name: str, key: Hashable, build: Callable[[Callable], Callable]) -> Callable:
    """The jitted program ``build(fwd)`` for ``(model.graph, model.ops, name, key)``, built once and cached.

    ``fwd(params, x, upto=None, taps=(), relu=relu, perturb=None, replace=None)`` is the model's forward pass.
    The returned function ``fn(params, *args)`` counts its traces in :data:`trace_counts` under ``name``. On
    models with a graph it gets the kernels prepared from the params (:meth:`jaxviz.Model.prepared`, cached per
    params) as an argument: gradient programs use their input-gradient kernels, and on CPUs all programs their
    Winograd kernels (XLA drops whatever a program does not use).
    """
    graph, module = model.graph, model.module
    if graph is not None and module is not None and not isinstance(module, Network):
        if _hashable(module):  # a forward pass of its own (a Flax module)
            return _module_program(model, module, name, key, build)
        return _object_program(model, name, key, build)  # e.g. an nn.Sequential of a list: per model object
    if graph is None:
        return _object_program(model, name, key, build)
    ops = program_ops(model)

    def make():
        def counted(params, prepared, *args):
            trace_counts[name] += 1
            return build(_GraphForward(graph, ops, prepared))(params, *args)

        return jax.jit(counted)

    program = shared_program(("program", graph, ops, name, key), make)
    return lambda params, *args: program(params, model.prepared(params), *args)


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class _ModuleForward:
    """The forward pass of a model's own hashable ``module`` (``module.apply({"params": …}, x, …)``): a Flax
    module's run through Flax's interception (:class:`jaxviz.frontends.flax_network.FlaxNetwork`)."""

    __slots__ = ("_module",)

    def __init__(self, module):
        self._module = module

    def __call__(self, params, x, upto=None, taps=(), relu=jax.nn.relu, perturb=None, replace=None):
        return self._module.apply({"params": params}, x, upto=upto, taps=taps, relu=relu, perturb=perturb,
                                  replace=replace)


def _module_program(model, module, name: str, key: Hashable, build: Callable[[Callable], Callable]) -> Callable:
    """Programs keyed by the module (equal modules: equal programs), so other weights of it compile nothing."""

    def make():
        def counted(params, *args):
            trace_counts[name] += 1
            return build(_ModuleForward(module))(params, *args)

        return jax.jit(counted)

    return shared_program(("module program", module, name, key), make)


def _object_program(model, name: str, key: Hashable, build: Callable[[Callable], Callable]) -> Callable:
    per_model = _BY_OBJECT.setdefault(model, {})
    if (name, key) not in per_model:
        ref = weakref.ref(model)  # the cache's values must not hold its key: the model (and its params) would live on

        def counted(params, *args):
            trace_counts[name] += 1
            return build(_ObjectForward(ref))(params, *args)

        per_model[(name, key)] = jax.jit(counted)
    return per_model[(name, key)]


def logits_program(model) -> Callable:
    """``fn(params, x) -> [N, num_classes]`` pre-softmax scores: the one compiled forward pass that
    :func:`logits`, :meth:`jaxviz.Model.predict` and the methods' score evaluations share."""
    return compiled(model, "logits", (), lambda fwd: lambda params, x: fwd(params, x, upto="logits")[0])


def logits(model, x, params=None) -> jax.Array:
    """``[N, num_classes]`` pre-softmax scores (one compiled forward pass per graph, ops and input shape)."""
    return logits_program(model)(params_of(model, params), check_input(model, x))
