"""Programs are keyed by graph, ops and options, not by the model object: a second model of the same graph and
shapes (other weights) compiles nothing; and the ops' facts (backend, flags, precision) are fixed outside tracing."""

import jax
import numpy as np
import pytest

import jaxviz
from jaxviz import ops as ops_lib
from jaxviz import runtime
from jaxviz.attribution.saliency import saliency


def _calls(model, x):
    return (np.asarray(saliency(model, x, [1, 2])), np.asarray(jaxviz.gradcam(model, x, 3)),
            np.asarray(model.features(x, ["block2_conv1"])["block2_conv1"]))


def test_a_second_model_of_the_same_graph_compiles_nothing():
    first = jaxviz.load("vgg_tiny", "random:0")
    second = jaxviz.load("vgg_tiny", "random:1")  # other weights, same graph and shapes
    assert first.graph == second.graph and first.ops == second.ops
    x = np.random.default_rng(0).normal(0, 30, (2, 32, 32, 3)).astype(np.float32)
    second.prepared()  # its prepared kernels: a program of their own, shared by the models too
    runtime.compile_count()  # starts counting
    a = _calls(first, x)
    before = runtime.compile_count()
    b = _calls(second, x)
    assert runtime.compile_count() == before
    assert all(not np.allclose(u, v) for u, v in zip(a, b))  # the second model's own weights were used
    third = jaxviz.load("vgg_tiny", "random:1")
    for u, v in zip(b, _calls(third, x)):  # a program first traced for another model gives this model's numbers
        np.testing.assert_array_equal(u, v)


def test_ops_facts_are_fields_fixed_when_the_model_is_built():
    model = jaxviz.load("vgg_tiny", "random:0")
    assert model.ops.platform == jax.default_backend() and model.ops.ynn_fusion is not None
    assert model.ops.precision is None  # per call: see runtime.program_ops
    assert runtime.program_ops(model).precision == "default" and runtime.program_ops(model).approximate
    with jax.default_matmul_precision("highest"):
        exact = runtime.program_ops(model)
    assert exact.precision == "highest" and not exact.approximate and exact != runtime.program_ops(model)
    fixed = ops_lib.default_ops(ops_lib.Ops(fast=True, platform="gpu"))
    assert fixed.platform == "gpu" and not fixed.cpu  # a given fact is kept
    with pytest.raises(jaxviz.JaxvizError, match="unknown ops"):
        ops_lib.default_ops("faster")


def test_the_exact_mode_is_the_calls_precision_not_the_models():
    model = jaxviz.load("vgg_tiny", "random:0", ops="fast")
    exact_model = jaxviz.load("vgg_tiny", "random:0", ops="exact")
    x = np.random.default_rng(2).normal(0, 30, (1, 32, 32, 3)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        fast_in_exact_mode = np.asarray(saliency(model, x, 1, reduce=None))
        exact = np.asarray(saliency(exact_model, x, 1, reduce=None))
    np.testing.assert_array_equal(fast_in_exact_mode, exact)


def test_program_cache_drops_the_least_recently_used(monkeypatch):
    from jaxviz.runtime import programs

    programs.clear_programs()
    monkeypatch.setattr(programs, "MAX_PROGRAMS", 2)
    made = []
    get = lambda k: programs.shared_program(k, lambda: made.append(k) or k)  # noqa: E731
    get("a"), get("b"), get("a"), get("c")  # "b" is the least recently used when "c" arrives
    assert list(programs._SHARED) == ["a", "c"]
    get("a"), get("b")
    assert made == ["a", "b", "c", "b"]
    programs.clear_programs()
