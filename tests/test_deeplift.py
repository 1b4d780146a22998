"""DeepLIFT (Rescale): a hand derivation on the hand-set model; summation-to-delta at every elementwise
nonlinearity; parity with Captum's ``DeepLift`` on a small ReLU convnet without max-pooling (the one rule where
Captum and the DeepLIFT authors' default differ is max-pooling's; see jaxviz.attribution.deeplift) and on tanh
and sigmoid convnets with average pooling, rebuilt in PyTorch with the same weights, and on vgg_tiny where the
reference keeps every max-pool window's arg-max; a gate without a rule, by hand."""

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
from jaxviz.graph import Graph, make_layer
from jaxviz.interface import LayerInfo
from jaxviz.profile import file as file_profile


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
    name, num_classes, input_channels = "convnet", 5, 3
    arch = types.SimpleNamespace(name=name, num_classes=num_classes, channels=input_channels)
    graph = module = None  # no layer graph: the programs run apply
    profile, family = file_profile(), None  # a model file's defaults (score "prob"); no faster path
    layer_names = ["input_layer", "conv1", "conv2", "fc1", "predictions"]
    conv_layer_names = spatial_layer_names = ["conv1", "conv2"]
    cam_layer = "conv2"

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

    def layer_table(self, input_shape=None, upto=None):
        h, w, c = input_shape
        return [LayerInfo("input_layer", "InputLayer", (h, w, c), 0), LayerInfo("conv1", "Conv2D", (h, w, 8), 224),
                LayerInfo("conv2", "Conv2D", ((h + 1) // 2, (w + 1) // 2, 8), 584),
                LayerInfo("fc1", "Dense", (16,), 8208), LayerInfo("predictions", "Dense", (5,), 85)]

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


# ---------------------------------------------------------------------------------------------------------
# The Rescale rule at every elementwise nonlinearity. One graph holds a branch per nonlinearity — conv 3×3 →
# nonlinearity → 2×2 average pool → conv 3×3 → nonlinearity → global average pool —, concatenated into a dense
# head whose class k reads branch k alone, so one program checks summation-to-delta per nonlinearity.
# The 2×2 average pooling is a stride-2 depthwise convolution with weights ¼ (the same linear map as
# AveragePooling2D).

#: (name, layer kind or None for a fused ``activation=``, config, params)
NONLINEARITIES = [
    *[(a, None, {}, {}) for a in ("relu", "relu6", "tanh", "sigmoid", "elu", "selu", "softplus", "softsign", "swish",
                                  "silu", "gelu", "mish", "leaky_relu", "hard_sigmoid", "hard_sigmoid_keras2",
                                  "hard_swish", "exponential")],
    ("relu6_layer", "ReLU", {"max_value": 6.0}, {}),
    ("clipped_relu", "ReLU", {"max_value": 2.5}, {}),
    ("keras_relu", "ReLU", {"max_value": 2.5, "negative_slope": 0.1, "threshold": 0.5}, {}),
    ("leaky_relu_layer", "LeakyReLU", {"negative_slope": 0.2}, {}),
    ("elu_layer", "ELU", {"alpha": 0.7}, {}),
    ("prelu", "PReLU", {}, {"alpha": np.linspace(0.1, 0.4, 4, dtype=np.float32)}),
    ("ops_gelu_tanh", "ops.Gelu", {"approximate": True}, {}),
    ("ops_hard_silu", "ops.HardSilu", {}, {}),
    ("ops_square", "ops.Square", {"args": [{"__input__": 0}]}, {}),
    ("ops_abs", "ops.Absolute", {"args": [{"__input__": 0}]}, {}),
    ("ops_maximum", "ops.Maximum", {"args": [{"__input__": 0}, 0.3]}, {}),
    ("ops_power", "ops.Power", {"args": [{"__input__": 0}, 3.0]}, {}),
]
#: Pre-activation scale per branch: large enough for ReLU6 and the clipped ReLUs to saturate, small where the
#: nonlinearity grows fast.
GAIN = {"exponential": 0.3, "ops_square": 0.5, "ops_power": 0.4}


def _conv(name, act, inputs):
    return make_layer(name, "Conv2D", {"filters": 4, "kernel_size": 3, "padding": "same", "activation": act}, inputs)


def _avg_pool(name, channels, inputs, params):
    return make_layer(name, "AveragePooling2D", {"pool_size": 2, "strides": 2, "padding": "valid"}, inputs)


def _branchy_model(specs, seed=0, side=8):
    rng = np.random.default_rng(seed)
    layers, params, ends = [make_layer("input", "InputLayer", {"batch_shape": [None, side, side, 3]})], {}, []
    for name, kind, cfg, p in specs:
        gain, src = GAIN.get(name, 3.0), "input"
        for stage, fan_in in (("a", 3), ("b", 4)):
            conv = f"{name}_{stage}_conv"
            layers.append(_conv(conv, name if kind is None else "linear", [src]))
            params[conv] = {"kernel": (gain * rng.normal(0, 1 / np.sqrt(9 * fan_in), (3, 3, fan_in, 4))).astype(
                np.float32), "bias": rng.normal(0, 0.3, 4).astype(np.float32)}
            src = conv
            if kind is not None:
                layers.append(make_layer(f"{name}_{stage}", kind, cfg, [src]))
                if p:
                    params[f"{name}_{stage}"] = p
                src = f"{name}_{stage}"
            if stage == "a":
                layers.append(_avg_pool(f"{name}_pool", 4, [src], params))
                src = f"{name}_pool"
        layers.append(make_layer(f"{name}_gap", "GlobalAveragePooling2D", {}, [src]))
        ends.append(f"{name}_gap")
    k = len(specs)
    layers.append(make_layer("concat", "Concatenate", {"axis": -1}, ends))
    head = np.zeros((4 * k, k), np.float32)
    for i in range(k):
        head[4 * i: 4 * i + 4, i] = rng.normal(0, 1, 4)
    params["predictions"] = {"kernel": head, "bias": rng.normal(0, 0.3, k).astype(np.float32)}
    layers.append(make_layer("predictions", "Dense", {"units": k, "activation": "softmax"}, ["concat"]))
    return jaxviz.Model(Graph("branches", tuple(layers), ("predictions",)), params, ops="exact")


def test_summation_to_delta_at_every_nonlinearity():
    model = _branchy_model(NONLINEARITIES)
    k = len(NONLINEARITIES)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1.5, (1, 8, 8, 3)).astype(np.float32).repeat(k, 0)
    base = rng.normal(0, 1, (1, 8, 8, 3)).astype(np.float32).repeat(k, 0)
    t = list(range(k))
    with jax.default_matmul_precision("highest"):
        r = np.asarray(deeplift(model, x, t, baseline=base, reduce=None), np.float64)
        logits, taps = model.apply(model.params, np.concatenate([x[:1], base[:1]]), upto="logits",
                                   taps=["relu6_layer_a_conv", "clipped_relu_a_conv"])
    delta = np.asarray(logits[0] - logits[1], np.float64)
    for i, (name, *_) in enumerate(NONLINEARITIES):
        # float32 sums of ~200 terms: 1e-4 of |ΔS| (measured ≤ 1e-5)
        assert abs(r[i].sum() - delta[i]) <= 1e-4 * abs(delta[i]), (name, r[i].sum(), delta[i])
    # the saturating branches do saturate (else Rescale and the gradient would agree there)
    assert float(taps["relu6_layer_a_conv"].max()) > 6 and float(taps["clipped_relu_a_conv"].max()) > 2.5


def test_rescale_multiplier_and_its_gradient_fallback():
    from jaxviz.attribution.deeplift import EPS, rescale_relu

    z = jnp.array([0.5, 2.0, 1.0, -1.0])  # image half [0.5, 2.0], reference half [1.0, -1.0] per element
    g = jax.grad(lambda v: (rescale_relu.apply(jnp.tanh, v) * jnp.array([1.0, 1.0, 0.0, 0.0])).sum())(z)
    np.testing.assert_allclose(g[:2], [(np.tanh(0.5) - np.tanh(1)) / (0.5 - 1), (np.tanh(2) + np.tanh(1)) / 3],
                               rtol=1e-6)
    np.testing.assert_allclose(rescale_relu.apply(jnp.tanh, z), np.tanh(z), rtol=1e-7)  # value: f(z)
    # |z − z₀| < EPS: the gradient at z (tanh′(0.3) = 1 − tanh²(0.3)), as Captum
    same = jnp.array([0.3, 0.3 + EPS / 10])
    g = jax.grad(lambda v: rescale_relu.apply(jnp.tanh, v)[0])(same)
    np.testing.assert_allclose(g[0], 1 - np.tanh(0.3) ** 2, rtol=1e-6)


def _torch_tanh_net(model, act):
    import torch
    from torch import nn

    p = model.params
    c1, c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
    f1, f2 = nn.Linear(4 * 4 * 4, 8), nn.Linear(8, 5)
    for conv, k in ((c1, "c1"), (c2, "c2")):
        conv.weight.data = torch.from_numpy(np.ascontiguousarray(p[k]["kernel"].transpose(3, 2, 0, 1)))
        conv.bias.data = torch.from_numpy(np.asarray(p[k]["bias"]).copy())
    for lin, k in ((f1, "fc1"), (f2, "predictions")):
        lin.weight.data = torch.from_numpy(np.ascontiguousarray(np.asarray(p[k]["kernel"]).T))
        lin.bias.data = torch.from_numpy(np.asarray(p[k]["bias"]).copy())
    Act = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[act]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.a1, self.pool, self.c2, self.a2, self.f1, self.a3, self.f2 = \
                c1, Act(), nn.AvgPool2d(2), c2, Act(), f1, Act(), f2

        def forward(self, x):
            a = self.a2(self.c2(self.pool(self.a1(self.c1(x)))))
            a = a.permute(0, 2, 3, 1).reshape(a.shape[0], -1)  # channels-last flatten, as the jaxviz graph
            return self.f2(self.a3(self.f1(a)))

    return Net().eval()


def _act_convnet(act, seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    layers = (make_layer("input", "InputLayer", {"batch_shape": [None, 8, 8, 3]}),
              _conv("c1", act, ["input"]), _avg_pool("pool", 4, ["c1"], params), _conv("c2", act, ["pool"]),
              make_layer("flatten", "Flatten", {}, ["c2"]),
              make_layer("fc1", "Dense", {"units": 8, "activation": act}, ["flatten"]),
              make_layer("predictions", "Dense", {"units": 5, "activation": "softmax"}, ["fc1"]))

    def w(*shape):
        return rng.normal(0, 2 / np.sqrt(np.prod(shape[:-1])), shape).astype(np.float32)

    params.update(c1={"kernel": w(3, 3, 3, 4), "bias": w(1, 4)[0]}, c2={"kernel": w(3, 3, 4, 4), "bias": w(1, 4)[0]},
                  fc1={"kernel": w(64, 8), "bias": w(1, 8)[0]}, predictions={"kernel": w(8, 5), "bias": w(1, 5)[0]})
    return jaxviz.Model(Graph(f"{act}_net", layers, ("predictions",)), params, ops="exact")


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_deeplift_matches_captum_on_saturating_activations(act):
    torch = pytest.importorskip("torch", reason="parity with Captum needs torch")
    ca = pytest.importorskip("captum.attr", reason="parity with Captum needs captum")
    model = _act_convnet(act)
    net = _torch_tanh_net(model, act)
    rng = np.random.default_rng(5)
    x = rng.normal(0, 2, (3, 8, 8, 3)).astype(np.float32)
    base = rng.normal(0, 1, (3, 8, 8, 3)).astype(np.float32)
    t = [0, 2, 4]
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    with torch.no_grad():
        np.testing.assert_allclose(net(nchw(x)).numpy(), model.apply(model.params, x, upto="logits")[0], rtol=1e-4,
                                   atol=1e-5)
    theirs = ca.DeepLift(net).attribute(nchw(x), baselines=nchw(base), target=t).detach().numpy().transpose(0, 2, 3, 1)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(deeplift(model, x, t, baseline=base, reduce=None))
    assert _rel(ours, theirs) < 1e-4  # float32 sums in other orders
    # and not the gradient (which is what the ReLU-only rule gave on these nets: 44–52 % off Captum)
    g = np.asarray(input_x_gradient(model, x - base, t, reduce=None))
    assert _rel(g, theirs) > 0.05


def _gated_model():
    rng = np.random.default_rng(3)
    params = {}
    layers = (make_layer("input", "InputLayer", {"batch_shape": [None, 8, 8, 3]}),
              _conv("left", "tanh", ["input"]), _conv("right", "sigmoid", ["input"]),
              make_layer("gate", "Multiply", {}, ["left", "right"]),
              make_layer("gap", "GlobalAveragePooling2D", {}, ["gate"]),
              make_layer("predictions", "Dense", {"units": 3, "activation": "softmax"}, ["gap"]))
    for name, shape in (("left", (3, 3, 3, 4)), ("right", (3, 3, 3, 4)), ("predictions", (4, 3))):
        params[name] = {"kernel": rng.normal(0, 0.5, shape).astype(np.float32),
                        "bias": rng.normal(0, 0.3, shape[-1]).astype(np.float32)}
    return jaxviz.Model(Graph("gated", layers, ("predictions",)), params, ops="exact")


def test_a_gate_without_rule_passes_the_gradient_and_says_so():
    model = _gated_model()
    x = np.random.default_rng(0).normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"^deeplift: no DeepLIFT rule for gate \(Multiply of 2 tensors\); the "
                                         r"gradient passes through it \(as in Captum's DeepLift\)$"):
        with jax.default_matmul_precision("highest"):
            ours = np.asarray(deeplift(model, x, [0, 1], reduce=None))
    # By hand: S = Σ_c V[c, t] · mean_hw(L · R), L = tanh(z_L), R = σ(z_R), z = conv(x) (linear). Through the
    # gate the product rule at the image (∂S/∂L = V·R/HW, ∂S/∂R = V·L/HW); before it, Rescale from the zero
    # reference: m_L = (L − tanh(b_L)) / (z_L − b_L), likewise m_R; then the convolutions' transposes.
    p = model.params

    def z(v, k):
        return jax.lax.conv_general_dilated(v, p[k]["kernel"], (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision="highest") + p[k]["bias"]

    zl, zr = z(x, "left"), z(x, "right")
    bl, br = p["left"]["bias"], p["right"]["bias"]
    ml, mr = (jnp.tanh(zl) - jnp.tanh(bl)) / (zl - bl), (jax.nn.sigmoid(zr) - jax.nn.sigmoid(br)) / (zr - br)
    v = p["predictions"]["kernel"][:, jnp.array([0, 1])].T[:, None, None, :] / 64  # [N, 1, 1, C]
    _, vl = jax.vjp(lambda u: z(u, "left"), x)
    _, vr = jax.vjp(lambda u: z(u, "right"), x)
    expected = x * (vl(v * jax.nn.sigmoid(zr) * ml)[0] + vr(v * jnp.tanh(zl) * mr)[0])
    assert _rel(ours, np.asarray(expected)) < 1e-5


def test_cli_says_in_one_line_which_layers_pass_the_gradient(tmp_path, capsys):
    import keras

    from jaxviz.cli import main
    from jaxviz.images import sample_image_path

    inp = keras.Input((16, 16, 3))
    gate = keras.layers.Multiply(name="gate")([keras.layers.Conv2D(4, 3, activation="tanh")(inp),
                                               keras.layers.Conv2D(4, 3, activation="sigmoid")(inp)])
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(gate))
    keras.Model(inp, out).save(tmp_path / "gated.keras")
    rc = main(["explain", str(sample_image_path("chelsea")), "--method", "deeplift", "--arch",
               str(tmp_path / "gated.keras"), "-o", str(tmp_path / "out"), "--npy"])
    err = capsys.readouterr().err
    assert rc == 0 and (tmp_path / "out" / "chelsea_deeplift.npy").exists()
    lines = [line for line in err.splitlines() if "DeepLIFT rule" in line]
    assert lines == ["jaxviz: warning: deeplift: no DeepLIFT rule for gate (Multiply of 2 tensors); the gradient "
                     "passes through it (as in Captum's DeepLift)"], err
