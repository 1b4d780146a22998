"""The layers after a CAM layer run from its activations given BY NAME (``forward(..., replace={layer: a})``):
Guided Grad-CAM's head gradient and Ablation-CAM's ablated passes are right whatever the CAM layer is — here a
BatchNormalization after a Conv2D without an activation, whose output no ReLU produces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz import runtime
from jaxviz.attribution.ablationcam import ablationcam
from jaxviz.attribution.guided_backprop import guided_backprop
from jaxviz.attribution.guided_gradcam import guided_gradcam
from jaxviz.graph import Graph, make_layer
from jaxviz.model import Model

EPS = 1e-3


def _graph() -> Graph:
    layers = (make_layer("inp", "InputLayer", {"batch_shape": [None, 8, 8, 3]}),
              make_layer("conv", "Conv2D", {"filters": 4, "kernel_size": [3, 3], "padding": "same",
                                            "activation": "linear"}, ["inp"]),
              make_layer("bn", "BatchNormalization", {"axis": -1, "epsilon": EPS}, ["conv"]),
              make_layer("act", "Activation", {"activation": "relu"}, ["bn"]),
              make_layer("gap", "GlobalAveragePooling2D", {}, ["act"]),
              make_layer("out", "Dense", {"units": 3, "activation": "softmax"}, ["gap"]))
    return Graph("bn_cam", layers, ("out",))


def _params(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    return {"conv": {"kernel": f(3, 3, 3, 4), "bias": f(4)},
            "bn": {"gamma": f(4), "beta": f(4), "moving_mean": f(4),
                   "moving_variance": np.abs(f(4)) + np.float32(0.5)},
            "out": {"kernel": f(4, 3), "bias": f(3)}}


def _bn_output(p, x):
    """The CAM layer's output, written out: conv, then inference-mode batch normalisation."""
    conv = jax.lax.conv_general_dilated(x, p["conv"]["kernel"], (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["conv"]["bias"]
    q = p["bn"]
    return (conv - q["moving_mean"]) / jnp.sqrt(q["moving_variance"] + EPS) * q["gamma"] + q["beta"]


def _head(p, a):
    """The logits from the CAM layer's output: ReLU, global average pooling, dense."""
    return jax.nn.relu(a).mean(axis=(1, 2)) @ p["out"]["kernel"] + p["out"]["bias"]


@pytest.fixture(scope="module")
def case():
    model = Model(_graph(), _params(), ops="exact")
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
    return model, x, jax.tree_util.tree_map(jnp.asarray, _params()), jnp.asarray(x)


def test_guided_gradcam_on_a_layer_no_relu_produces(case):
    model, x, p, xj = case
    targets = [0, 2]
    assert model.graph.by_name["bn"].kind == "BatchNormalization"  # no ReLU produces the CAM layer's output
    with jax.default_matmul_precision("highest"):
        got = np.asarray(guided_gradcam(model, x, targets, layer="bn", reduce=None))
        gb = np.asarray(guided_backprop(model, x, targets, reduce=None))
        a = _bn_output(p, xj)
        onehot = jax.nn.one_hot(jnp.asarray(targets), 3)
        grads = jax.grad(lambda a: (_head(p, a) * onehot).sum())(a)
        cam = jnp.maximum(jnp.einsum("nhwk,nk->nhw", a, grads.mean(axis=(1, 2))), 0)
        want = gb * np.asarray(runtime.resize_maps(cam, (8, 8)))[..., None]
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_ablationcam_on_a_layer_no_relu_produces(case):
    model, x, p, xj = case
    targets = jnp.asarray([1, 0])
    with jax.default_matmul_precision("highest"):
        got = np.asarray(ablationcam(model, x, [1, 0], layer="bn", upsample=False))
        a = _bn_output(p, xj)
        score = lambda a: jnp.take_along_axis(_head(p, a), targets[:, None], axis=1)[:, 0]  # noqa: E731
        s = score(a)
        s_k = jnp.stack([score(a.at[..., k].set(0)) for k in range(a.shape[-1])], axis=1)  # [N, K]
        w = (s[:, None] - s_k) / s[:, None]
        want = np.asarray(jnp.maximum(jnp.einsum("nhwk,nk->nhw", a, w), 0))
    assert want.max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * want.max())
