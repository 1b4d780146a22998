"""Tiny models with hand-set weights whose attribution maps can be derived by hand.

``HandModel`` offers the members of :class:`jaxviz.interface.ModelInterface` the attribution methods use
(``apply(params, x, upto, taps, relu, perturb, replace)``, ``params``, ``check_input``, ``name``, ``num_classes``,
``input_channels``, ``profile``, ``family``, ``layer_table``, ``layer_names``, ``conv_layer_names``,
``spatial_layer_names``, ``cam_layer``; ``graph`` and ``module`` are ``None``: the programs run its own ``apply``):

    x [N, H, W, 1] ─ conv1: 1×1 conv, kernel (1, −1), bias (0, 0), ReLU ─ A [N, H, W, 2] = (relu(x), relu(−x))
                   ─ sum over positions ─ predictions: V = [[1, 0], [−2, 1]], bias 0 ─ logits

so ``logit_0 = Σ relu(x) − 2 Σ relu(−x)`` and ``logit_1 = Σ relu(−x)``, and ``∂logit_c/∂A_ijk = V[k, c]``
everywhere (the derivations in tests/test_attribution.py start from there).
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.interface import LayerInfo
from jaxviz.profile import file as file_profile

V = np.array([[1.0, 0.0], [-2.0, 1.0]], np.float32)


def hand_params(kernel=(1.0, -1.0), bias=(0.0, 0.0), head=V, head_bias=(0.0, 0.0)) -> dict:
    return {
        "conv1": {"kernel": jnp.asarray(np.reshape(kernel, (1, 1, 1, 2)), jnp.float32),
                  "bias": jnp.asarray(bias, jnp.float32)},
        "predictions": {"kernel": jnp.asarray(head, jnp.float32), "bias": jnp.asarray(head_bias, jnp.float32)},
    }


class HandModel:
    """The two-layer network above (a conv layer named ``conv1``, a dense head named ``predictions``)."""

    include_top = True
    name, num_classes, input_channels = "hand", 2, 1
    arch = types.SimpleNamespace(name=name, num_classes=num_classes, channels=input_channels)
    graph = module = None  # no layer graph: the programs run apply
    profile, family = file_profile(), None  # a model file's defaults (score "prob"); no faster path
    layer_names = ["input_layer", "conv1", "predictions"]
    conv_layer_names = spatial_layer_names = ["conv1"]
    cam_layer = "conv1"
    last_conv_layer = "conv1"

    def __init__(self, params=None):
        self.params = params if params is not None else hand_params()

    def layer_table(self, input_shape=None, upto=None):
        h, w, c = input_shape
        return [LayerInfo("input_layer", "InputLayer", (h, w, c), 0), LayerInfo("conv1", "Conv2D", (h, w, 2), 4),
                LayerInfo("predictions", "Dense", (2,), 6)]

    def check_input(self, x):
        return jnp.asarray(x, jnp.float32)

    def apply(self, params, x, upto=None, taps=(), relu=jax.nn.relu, perturb=None, replace=None):
        out = {}
        a = (replace or {}).get("conv1")
        if a is None:
            a = relu(jnp.einsum("nhwc,ck->nhwk", x, params["conv1"]["kernel"][0, 0]) + params["conv1"]["bias"])
        a = a + (perturb or {}).get("conv1", 0.0)
        if "conv1" in taps:
            out["conv1"] = a
        if upto == "conv1":
            return a, out
        logits = a.sum(axis=(1, 2)) @ params["predictions"]["kernel"] + params["predictions"]["bias"]
        if "logits" in taps:
            out["logits"] = logits
        if upto == "logits":
            return logits, out
        probs = jax.nn.softmax(logits, axis=-1)
        if "predictions" in taps:
            out["predictions"] = probs
        return probs, out


#: The image used by the hand derivations: one 2×2, 1-channel image.
X = np.array([[[[1.0], [-2.0]], [[3.0], [0.0]]]], np.float32)


def tiny_with_biases(seed: int = 0):
    """``vgg_tiny`` with random weights AND non-zero biases (zero biases make a ReLU net homogeneous, which
    makes Integrated Gradients exact and hides quadrature error)."""
    import jaxviz

    model = jaxviz.load("vgg_tiny", f"random:{seed}")
    rng = np.random.default_rng(seed + 100)
    model.params = {k: {"kernel": v["kernel"],
                        "bias": jnp.asarray(rng.normal(0, 0.1, v["bias"].shape), jnp.float32)}
                    for k, v in model.params.items()}
    return model
