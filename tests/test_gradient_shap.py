"""GradientSHAP / Expected Gradients: hand derivations on the hand-set model and parity with Captum's
``GradientShap`` on its own random draws, on the same VGG rebuilt in PyTorch."""

import jax
import numpy as np
import pytest
from attribution_models import HandModel, X
from test_gradient_methods import _rel, torch_side  # noqa: F401  (a fixture)

import jaxviz
from jaxviz.attribution.gradient_shap import gradient_shap, gradient_shap_from_draws
from jaxviz.attribution.methods import METHODS, explain


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
