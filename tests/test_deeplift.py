"""DeepLIFT (Rescale): a hand derivation on the hand-set model, summation-to-delta, and parity with Captum's
``DeepLift`` on a small ReLU convnet without max-pooling (the one rule where Captum and the DeepLIFT authors'
default differ is max-pooling's; see jaxviz.attribution.deeplift) rebuilt in PyTorch with the same weights,
and on vgg_tiny where the reference keeps every max-pool window's arg-max."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attribution_models import HandModel, X
from test_gradient_methods import _rel, torch_side  # noqa: F401  (a fixture)

import jaxviz
from jaxviz.attribution.deeplift import deeplift
from jaxviz.attribution.input_x_gradient import input_x_gradient
from jaxviz.attribution.methods import METHODS


def test_deeplift_by_hand():
    # HandModel, reference −1 everywhere. Per pixel, channel 0 has z = x, z₀ = −1; channel 1 z = −x, z₀ = 1.
    # x = 1: m₀ = (1 − 0)/(1 + 1) = ½, m₁ = (0 − 1)/(−1 − 1) = ½; class 0 multiplier ½·1·1 + ½·(−1)·(−2) = 3/2,
    # Δx = 2 → 3 = f(1) − f(−1) with f(v) = relu(v) − 2 relu(−v). Likewise x = −2 → f(−2) − f(−1) = −2,
    # x = 3 → 5, x = 0 → 2: one ReLU per path, so Rescale gives each pixel's exact difference.
    m = np.asarray(deeplift(HandModel(), X, 0, baseline=-1.0))[0]
    np.testing.assert_allclose(m, [[3, -2], [5, 2]], rtol=1e-6)
    assert m.sum() == 8  # summation-to-delta: logit_0(X) − logit_0(−1) = 0 − (−8)
    # from the zero reference a ReLU's rescale multiplier is its gradient: DeepLIFT = Input × Gradient
    np.testing.assert_allclose(deeplift(HandModel(), X, 1), input_x_gradient(HandModel(), X, 1), rtol=1e-6)
    assert METHODS["deeplift"] is deeplift and jaxviz.deeplift is deeplift
    with pytest.raises(jaxviz.JaxvizError, match="logit"):
        deeplift(HandModel(), X, 0, score="prob")


# ---------------------------------------------------------------------------------------------------------
# A ReLU convnet without max-pooling: conv 3×3 (8) → ReLU → conv 3×3 stride 2 (8) → ReLU → flatten → dense
# (16) → ReLU → dense (5), with random weights and biases, in JAX (the methods' model protocol) and PyTorch.


class ConvNet:
    include_top = True
    arch = types.SimpleNamespace(name="convnet", num_classes=5)
    layer_names = ["input_layer", "conv1", "conv2", "fc1", "predictions"]
    conv_layer_names = ["conv1", "conv2"]

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)

        def w(*shape, scale=1.0):
            return (rng.normal(0, scale / np.sqrt(np.prod(shape[:-1])), shape)).astype(np.float32)

        self.params = {"conv1": {"kernel": w(3, 3, 3, 8), "bias": w(1, 8)[0] * 0.3},
                       "conv2": {"kernel": w(3, 3, 8, 8), "bias": w(1, 8)[0] * 0.3},
                       "fc1": {"kernel": w(8 * 8 * 8, 16), "bias": w(1, 16)[0] * 0.3},
                       "predictions": {"kernel": w(16, 5), "bias": w(1, 5)[0] * 0.3}}

    def check_input(self, x):
        return jnp.asarray(x, jnp.float32)

    def apply(self, params, x, upto=None, taps=(), relu=jax.nn.relu, perturb=None):
        def conv(v, p, stride):
            dn = ("NHWC", "HWIO", "NHWC")
            return jax.lax.conv_general_dilated(v, p["kernel"], (stride, stride), ((1, 1), (1, 1)),
                                                dimension_numbers=dn) + p["bias"]

        out = {}
        a = relu(conv(x, params["conv1"], 1))
        if upto == "conv1":
            return a, out
        a = relu(conv(a, params["conv2"], 2))
        if upto == "conv2":
            return a, out
        h = relu(a.reshape(a.shape[0], -1) @ params["fc1"]["kernel"] + params["fc1"]["bias"])
        logits = h @ params["predictions"]["kernel"] + params["predictions"]["bias"]
        if upto == "logits":
            return logits, out
        return jax.nn.softmax(logits), out


def torch_convnet(model):
    import torch
    from torch import nn

    p = model.params
    c1, c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1)
    f1, f2 = nn.Linear(512, 16), nn.Linear(16, 5)
    for conv, k in ((c1, "conv1"), (c2, "conv2")):
        conv.weight.data = torch.from_numpy(np.ascontiguousarray(p[k]["kernel"].transpose(3, 2, 0, 1)))
        conv.bias.data = torch.from_numpy(p[k]["bias"].copy())
    for lin, k in ((f1, "fc1"), (f2, "predictions")):
        lin.weight.data = torch.from_numpy(np.ascontiguousarray(p[k]["kernel"].T))
        lin.bias.data = torch.from_numpy(p[k]["bias"].copy())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.r1, self.c2, self.r2, self.f1, self.r3, self.f2 = c1, nn.ReLU(), c2, nn.ReLU(), f1, \
                nn.ReLU(), f2

        def forward(self, x):
            a = self.r2(self.c2(self.r1(self.c1(x))))
            a = a.permute(0, 2, 3, 1).reshape(a.shape[0], -1)  # channels-last flatten, as the JAX model
            return self.f2(self.r3(self.f1(a)))

    return Net().eval()


def test_deeplift_matches_captum_without_max_pooling():
    torch = pytest.importorskip("torch", reason="parity with Captum needs torch")
    ca = pytest.importorskip("captum.attr", reason="parity with Captum needs captum")
    model = ConvNet(1)
    net = torch_convnet(model)
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (3, 16, 16, 3)).astype(np.float32)
    base = rng.normal(0, 1, (3, 16, 16, 3)).astype(np.float32)  # references with their own ReLU patterns
    t = [0, 3, 4]
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy(),
                                   model.apply(model.params, x, upto="logits")[0], rtol=1e-4, atol=1e-5)
    theirs = ca.DeepLift(net).attribute(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                                        baselines=torch.from_numpy(base.transpose(0, 3, 1, 2)), target=t)
    theirs = theirs.detach().numpy().transpose(0, 2, 3, 1)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(deeplift(model, x, t, baseline=base, reduce=None))
        delta = (model.apply(model.params, x, upto="logits")[0] - model.apply(model.params, base, upto="logits")[0])
    assert _rel(ours, theirs) < 1e-4  # float32 sums in other orders: ~1e-6 relative
    # summation-to-delta: Σ R = S_t(x) − S_t(x₀) (float32: 1e-4 of the largest |R|·pixels)
    np.testing.assert_allclose(ours.sum(axis=(1, 2, 3)), np.asarray(delta)[range(3), t], rtol=1e-4, atol=1e-4)
    # not the gradient: the rescale rule changed the multipliers
    g = np.asarray(input_x_gradient(model, x - base, t, reduce=None))
    assert np.abs(ours - g).max() > 0.01 * np.abs(ours).max()


def test_deeplift_matches_captum_on_vgg_with_a_scaled_reference(torch_side):  # noqa: F811
    # vgg_tiny with zero biases is positively homogeneous: the reference x/2 keeps every ReLU's sign and every
    # max-pool window's arg-max, where Captum's max-pool rule and the gradient agree.
    torch, cc, _, _, x = torch_side
    import captum.attr as ca

    model = jaxviz.load("vgg_tiny", "random:0")
    net, _ = cc.torch_vgg(model)
    t = [3, 8]
    theirs = cc.nhwc(ca.DeepLift(net).attribute(cc.nchw(x), baselines=cc.nchw(x / 2), target=t))
    with jax.default_matmul_precision("highest"):
        ours = deeplift(model, x, t, baseline=x / 2, reduce=None)
    assert _rel(ours, theirs) < 1e-4  # float32 sums in other orders: ~1e-6 relative
    # with biases and the zero reference: every window of the reference's maps is constant, so Captum's rule
    # sends Δ to x's arg-max with multiplier (out − out₀)/(x_p − x₀_p) = 1, the gradient's, wherever the
    # window's maximum grew (here: all windows that matter; measured 6.5e-7)
    _, _, biased, net_b, _ = torch_side
    theirs = cc.nhwc(ca.DeepLift(net_b).attribute(cc.nchw(x), baselines=cc.nchw(0 * x), target=t))
    with jax.default_matmul_precision("highest"):
        ours = deeplift(biased, x, t, reduce=None)
    assert _rel(ours, theirs) < 1e-4


def test_cli_explain_deeplift(tmp_path):
    from jaxviz.cli import main
    from jaxviz.images import sample_image_path

    out = tmp_path / "out"
    rc = main(["explain", str(sample_image_path("chelsea")), "--method", "deeplift", "--arch", "vgg_tiny",
               "--weights", "random:0", "-o", str(out), "--npy"])
    assert rc == 0 and np.load(out / "chelsea_deeplift.npy").shape == (32, 32)
