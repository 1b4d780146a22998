"""Input × Gradient and the noise tunnel: hand derivations on the hand-set model, statistics of the noise,
and parity with Captum (``InputXGradient``, ``NoiseTunnel``) on the same VGG rebuilt in PyTorch.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attribution_models import HandModel, X, tiny_with_biases
from module_files import load_script

import jaxviz
from jaxviz.attribution.input_x_gradient import input_x_gradient
from jaxviz.attribution.methods import METHODS, explain
from jaxviz.attribution.noise_tunnel import noise_tunnel, noise_tunnel_from_samples


@pytest.fixture(scope="module")
def hand():
    return HandModel()


@pytest.fixture(scope="module")
def torch_side():
    torch = pytest.importorskip("torch", reason="parity with Captum needs torch")
    pytest.importorskip("captum", reason="parity with Captum needs captum")
    cc = load_script("compare_captum")
    model = tiny_with_biases(3)
    net, _ = cc.torch_vgg(model)
    x = np.random.default_rng(4).normal(0, 40, (2, 32, 32, 3)).astype(np.float32)
    return torch, cc, model, net, x


def _rel(ours, theirs):
    return float(np.abs(np.asarray(ours, np.float64) - theirs).max() / np.abs(theirs).max())


# ---------------------------------------------------------------------------------------------------------
# Input × Gradient. HandModel, X = [[1, −2], [3, 0]]: ∂logit_0/∂x = 1 where x > 0, −1·(−2) = 2 where x < 0,
# 0 at x = 0 (ReLU'(0) = 0); ∂logit_1/∂x = −1 where x < 0, else 0.


def test_input_x_gradient_by_hand(hand):
    m0 = np.asarray(input_x_gradient(hand, X, 0))[0]
    np.testing.assert_allclose(m0, [[1, -4], [3, 0]], rtol=1e-6)
    assert m0.sum() == 0  # = logit_0 = 4 − 2·2: no biases, so Σ x·∂S/∂x = S (Euler)
    np.testing.assert_allclose(np.asarray(input_x_gradient(hand, X, 1))[0], [[0, 2], [0, 0]], rtol=1e-6)
    assert METHODS["input_x_gradient"] is input_x_gradient and jaxviz.input_x_gradient is input_x_gradient


def test_input_x_gradient_matches_captum(torch_side):
    torch, cc, model, net, x = torch_side
    import captum.attr as ca

    t = [3, 8]
    theirs = cc.nhwc(ca.InputXGradient(net).attribute(cc.nchw(x).requires_grad_(), target=t))
    with jax.default_matmul_precision("highest"):
        ours = explain(model, x, "input_x_gradient", t, reduce=None)
    assert _rel(ours, theirs) < 1e-4  # float32 sums in other orders (oneDNN vs XLA): ~1e-6 relative


# ---------------------------------------------------------------------------------------------------------
# The noise tunnel


def _first_channel(model, x, target=None, **options):
    """A method linear in x (the first channel itself): the tunnel's statistics are the noise's."""
    return jnp.asarray(x)[..., 0] * options.get("scale", 1.0)


def test_noise_tunnel_aggregates_by_hand(hand):
    # given samples: maps 1, 3 (one pixel): smoothgrad 2, smoothgrad_sq (1 + 9)/2 = 5, vargrad 5 − 4 = 1
    xs = np.array([1.0, 3.0], np.float32).reshape(2, 1, 1, 1, 1)
    for kind, want in [("smoothgrad", 2), ("smoothgrad_sq", 5), ("vargrad", 1)]:
        got = noise_tunnel_from_samples(_first_channel, hand, xs, [0], kind)
        np.testing.assert_allclose(got, [[[want]]], rtol=1e-6)


def test_noise_tunnel_statistics_are_the_noises(hand):
    # x's range is 5 (−2..3); noise 0.2 → σ = 1: smoothgrad → x, vargrad → σ² = 1, smoothgrad_sq → x² + 1.
    # n = 4000 samples: the mean's standard error is 1/√4000 ≈ 0.016 (tolerance 0.08: 5 standard errors);
    # the variance's is √(2/4000) ≈ 0.022 (tolerance 0.11)
    n = 4000
    x0 = X[..., 0]
    sg = np.asarray(noise_tunnel(_first_channel, hand, X, 0, n=n, noise=0.2, batch_size=1000))
    np.testing.assert_allclose(sg, x0, atol=0.08)
    vg = np.asarray(noise_tunnel(_first_channel, hand, X, 0, kind="vargrad", n=n, noise=0.2, batch_size=1000))
    np.testing.assert_allclose(vg, 1.0, atol=0.11)
    sq = np.asarray(noise_tunnel(_first_channel, hand, X, 0, kind="smoothgrad_sq", n=n, stdevs=1.0))
    np.testing.assert_allclose(sq, x0**2 + 1, atol=0.11 + 2 * 3 * 0.08)  # x² + 2xε̄ + ε²: both errors
    # batch_size only groups the samples: the same draws, the same result (up to summation order)
    other = np.asarray(noise_tunnel(_first_channel, hand, X, 0, n=n, noise=0.2, batch_size=7))
    np.testing.assert_allclose(other, sg, rtol=1e-5, atol=1e-5)


def test_noise_tunnel_wraps_methods_by_name(hand):
    x = np.concatenate([X, -X])
    m = np.asarray(noise_tunnel("input_x_gradient", hand, x, [0, 1], n=3, noise=0.0))
    np.testing.assert_allclose(m, np.asarray(input_x_gradient(hand, x, [0, 1])), rtol=1e-6)  # σ = 0: exact
    m = noise_tunnel("layercam", hand, x, n=5, kind="vargrad", layer="conv1", upsample=False)
    assert m.shape == (2, 2, 2) and np.isfinite(np.asarray(m)).all()
    assert jaxviz.noise_tunnel is noise_tunnel
    with pytest.raises(jaxviz.JaxvizError, match="kind"):
        noise_tunnel("saliency", hand, X, kind="smooth")


@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_matches_captum_on_its_noise(torch_side, kind, monkeypatch):
    torch, cc, model, net, x = torch_side
    import captum.attr as ca

    t, n = [3, 8], 4
    recorded = []
    add = ca.NoiseTunnel._add_noise_to_input

    def recording(input, stdev, partition):
        out = add(input, stdev, partition)
        recorded.append(out.detach().clone())
        return out

    monkeypatch.setattr(ca.NoiseTunnel, "_add_noise_to_input", staticmethod(recording))
    torch.manual_seed(0)
    theirs = cc.nhwc(ca.NoiseTunnel(ca.Saliency(net)).attribute(
        cc.nchw(x).requires_grad_(), target=t, nt_type=kind, nt_samples=n, nt_samples_batch_size=n, stdevs=20.0))
    (noisy,) = recorded  # [N·n] image-major (repeat_interleave)
    xs = np.swapaxes(cc.nhwc(noisy).reshape(2, n, *x.shape[1:]), 0, 1)  # [n, N, H, W, C]
    with jax.default_matmul_precision("highest"):
        ours = noise_tunnel_from_samples("saliency", model, xs, t, kind, reduce=None)
    assert _rel(ours, theirs) < 1e-4  # float32 sums in other orders: ~1e-6 relative


def test_cli_explain_input_x_gradient(tmp_path):
    from jaxviz.cli import main
    from jaxviz.images import sample_image_path

    out = tmp_path / "out"
    rc = main(["explain", str(sample_image_path("chelsea")), "--method", "input_x_gradient", "--arch", "vgg_tiny",
               "--weights", "random:0", "-o", str(out), "--npy"])
    assert rc == 0 and np.load(out / "chelsea_input_x_gradient.npy").shape == (32, 32)
