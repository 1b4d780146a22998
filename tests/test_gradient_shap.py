"""GradientSHAP / Expected Gradients: hand derivations on the hand-set model, parity with Captum's
``GradientShap`` on its own random draws, on the same VGG rebuilt in PyTorch, and the random draws themselves
(α, baseline, noise) compared statistically with Captum's."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attribution_models import HandModel, X
from test_gradient_methods import _rel, torch_side  # noqa: F401  (a fixture)

import jaxviz
from jaxviz.attribution.gradient_shap import gradient_shap, gradient_shap_from_draws
from jaxviz.attribution.methods import METHODS, explain
from jaxviz.interface import LayerInfo
from jaxviz.profile import file as file_profile


def test_gradient_shap_by_hand():
    # HandModel is linear on each orthant: from the zero baseline every point αX (α > 0) has X's signs, so
    # ∂logit_0/∂x = [[1, 2], [1, 0]] there and R = X ⊙ that = [[1, −4], [3, 0]] whatever the draws
    hand = HandModel()
    np.testing.assert_allclose(gradient_shap(hand, X, 0, n=7)[0], [[1, -4], [3, 0]], rtol=1e-6)
    # baselines 0 and 2X: from 2X the points (2 − α)X keep X's signs and x − b = −X, so each draw gives ±R and
    # the mean is (2p − 1) R with p the share of zero-baseline draws: p = 1/2 ± 1/(2√n); n = 4000 →
    # |2p − 1| < 0.08 (5 standard errors)
    m = np.asarray(gradient_shap(hand, X, 0, baselines=np.stack([np.zeros_like(X[0]), 2 * X[0]]), n=4000))[0]
    r = np.array([[1, -4], [3, 0]])
    ratio = m[0, 0] / r[0, 0]
    assert abs(ratio) < 0.08
    np.testing.assert_allclose(m, ratio * r, rtol=1e-4, atol=1e-5)  # every pixel the same multiple of R
    assert METHODS["gradient_shap"] is gradient_shap and jaxviz.gradient_shap is gradient_shap


def test_gradient_shap_batching_and_bad_baselines():
    hand = HandModel()
    x = np.concatenate([X, -X])
    a = np.asarray(gradient_shap(hand, x, [0, 1], n=9, stdevs=0.5, batch_size=4))
    b = np.asarray(gradient_shap(hand, x, [0, 1], n=9, stdevs=0.5, batch_size=100))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # the same draws in other chunks
    assert np.abs(a).max() > 0
    with pytest.raises(jaxviz.JaxvizError, match="baselines must be"):
        gradient_shap(hand, x, baselines=np.zeros((3, 3, 1), np.float32))


def test_gradient_shap_matches_captum_on_its_draws(torch_side, monkeypatch):  # noqa: F811
    torch, cc, model, net, x = torch_side
    import captum.attr as ca
    import captum.attr._core.gradient_shap as gs

    t, n = [3, 8], 4
    base = np.random.default_rng(7).normal(0, 20, (3, *x.shape[1:])).astype(np.float32)
    recorded = []
    scale = gs._scale_input

    def recording(input, baseline, alpha):
        recorded.append((input.detach().clone(), baseline.detach().clone(), alpha.detach().clone()))
        return scale(input, baseline, alpha)

    monkeypatch.setattr(gs, "_scale_input", recording)
    torch.manual_seed(0)
    np.random.seed(0)
    theirs = cc.nhwc(ca.GradientShap(net).attribute(cc.nchw(x), baselines=cc.nchw(base), target=t, n_samples=n,
                                                    stdevs=10.0))
    (xi, bi, ai), = recorded  # [N·n] image-major (repeat_interleave)

    def split(v):
        return np.swapaxes(np.asarray(v).reshape(2, n, *np.shape(v)[1:]), 0, 1)

    xs, bs = split(cc.nhwc(xi)), split(cc.nhwc(bi))
    assert not np.allclose(xs[0], x)  # the noise was drawn
    with jax.default_matmul_precision("highest"):
        ours = gradient_shap_from_draws(model, xs, bs, split(ai.numpy()), t, reduce=None)
    assert _rel(ours, theirs) < 1e-4  # float32 sums in other orders: ~1e-6 relative


def test_cli_explain_gradient_shap(tmp_path):
    from jaxviz.cli import main
    from jaxviz.images import sample_image_path

    out = tmp_path / "out"
    rc = main(["explain", str(sample_image_path("chelsea")), "--method", "gradient_shap", "--arch", "vgg_tiny",
               "--weights", "random:0", "-o", str(out), "--npy"])
    assert rc == 0 and np.load(out / "chelsea_gradient_shap.npy").shape == (32, 32)
    assert explain(HandModel(), X, "expected_gradients", 0).shape == (1, 2, 2)


# ---------------------------------------------------------------------------------------------------------
# The sampling itself, against Captum's, on a probe whose attributions reveal each draw: one pixel, three
# channels, S = x_A + ½ x_Q² + x_L. From x = (0, 1, 0) and baselines b_k = (10 k, 0, 0), one sample per image
# (n = 1, so each image's attribution is one draw) gives R_A = ε_A − 10 k (the baseline drawn), R_Q = α (1 + ε_Q)²
# (α itself without noise), R_L = ε_L (the noise).


class _Probe:
    include_top = True
    name, num_classes, input_channels = "probe", 2, 3
    arch = types.SimpleNamespace(name=name, num_classes=num_classes, channels=input_channels)
    graph = module = None  # no layer graph: the programs run apply
    profile, family = file_profile(), None  # a model file's defaults (score "prob"); no faster path
    layer_names = ["input_layer", "predictions"]
    conv_layer_names = spatial_layer_names = []
    params = {}

    def check_input(self, x):
        return jnp.asarray(x, jnp.float32)

    def layer_table(self, input_shape=None, upto=None):
        h, w, c = input_shape
        return [LayerInfo("input_layer", "InputLayer", (h, w, c), 0), LayerInfo("predictions", "Dense", (2,), 0)]

    def apply(self, params, x, upto=None, taps=(), relu=None, perturb=None):
        s = x[..., 0].sum((1, 2)) + 0.5 * (x[..., 1] ** 2).sum((1, 2)) + x[..., 2].sum((1, 2))
        return jnp.stack([s, jnp.zeros_like(s)], -1), {}


def _draws(n, stdevs, k_baselines):
    """Per image ``(baseline index, α or None, noise [n, 2])`` from jaxviz's and from Captum's sampling."""
    import torch
    from captum.attr import GradientShap

    x = np.zeros((n, 1, 1, 3), np.float32)
    x[..., 1] = 1
    base = np.zeros((k_baselines, 1, 1, 3), np.float32)
    base[:, 0, 0, 0] = 10 * np.arange(k_baselines)
    ours = np.asarray(gradient_shap(_Probe(), x, 0, baselines=base, n=1, stdevs=stdevs, seed=0, reduce=None))

    class Net(torch.nn.Module):
        def forward(self, v):  # NCHW
            s = v[:, 0].sum((1, 2)) + 0.5 * (v[:, 1] ** 2).sum((1, 2)) + v[:, 2].sum((1, 2))
            return torch.stack([s, 0 * s], -1)

    torch.manual_seed(0)
    np.random.seed(0)  # Captum draws α and the baselines with numpy's global generator
    nchw = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())  # noqa: E731
    theirs = GradientShap(Net()).attribute(nchw(x), baselines=nchw(base), n_samples=1, stdevs=stdevs, target=0)
    theirs = theirs.detach().numpy().transpose(0, 2, 3, 1)
    out = []
    for r in (ours[:, 0, 0].astype(np.float64), theirs[:, 0, 0].astype(np.float64)):
        k = np.round(-r[:, 0] / 10).astype(int)
        out.append((k, r[:, 1] if stdevs == 0 else None, np.stack([r[:, 0] + 10 * k, r[:, 2]], 1)))
    return out


def _ks(a, b):
    """The two-sample Kolmogorov–Smirnov statistic."""
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(np.sort(a), grid, "right") / len(a)
                        - np.searchsorted(np.sort(b), grid, "right") / len(b)).max())


def test_gradient_shap_samples_as_captum_does():
    pytest.importorskip("torch", reason="the comparison draws Captum's samples")
    pytest.importorskip("captum", reason="the comparison draws Captum's samples")
    n, k_base = 2000, 4
    # KS at significance 1e-3: c(α) = √(−ln(α/2)/2) = 1.95; means and shares: 4.5 standard errors
    ks_two, ks_one = 1.95 * np.sqrt(2 / n), 1.95 / np.sqrt(n)
    (ks, alphas, _), (kc, alphac, _) = _draws(n, 0.0, k_base)
    # α ~ U(0, 1) on both sides: against each other, against the uniform law, and its first two moments
    assert 0 < alphas.min() and alphas.max() < 1
    assert _ks(alphas, alphac) <= ks_two
    assert np.abs(np.sort(alphas) - (np.arange(1, n + 1) - 0.5) / n).max() <= ks_one
    assert abs(alphas.mean() - 0.5) <= 4.5 * np.sqrt(1 / 12 / n)
    assert abs(alphas.var() - 1 / 12) <= 4.5 * np.sqrt(1 / 180 / n)  # Var of (α − ½)² is 1/180
    # the baseline: uniform over the given ones, both sides (shares within 4.5 standard errors of ¼ and of
    # each other)
    assert set(ks) == set(kc) == set(range(k_base))
    share_s, share_c = np.bincount(ks, minlength=k_base) / n, np.bincount(kc, minlength=k_base) / n
    se = np.sqrt(0.25 * 0.75 / n)
    assert np.abs(share_s - 0.25).max() <= 4.5 * se and np.abs(share_s - share_c).max() <= 4.5 * np.sqrt(2) * se
    # the noise: N(0, σ²) per input value, on both sides
    sigma = 0.5
    (_, _, noise_s), (_, _, noise_c) = _draws(n, sigma, 1)
    a, b = noise_s.ravel(), noise_c.ravel()
    m = a.size
    assert _ks(a, b) <= 1.95 * np.sqrt(2 / m)
    assert abs(a.mean()) <= 4.5 * sigma / np.sqrt(m) and abs(b.mean()) <= 4.5 * sigma / np.sqrt(m)
    assert abs(a.std() / sigma - 1) <= 4.5 / np.sqrt(2 * m) and abs(b.std() / sigma - 1) <= 4.5 / np.sqrt(2 * m)
    assert abs(np.corrcoef(noise_s[:, 0], noise_s[:, 1])[0, 1]) <= 4.5 / np.sqrt(n)  # independent per value
