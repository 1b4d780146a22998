"""Infidelity and sensitivity-max: hand derivations on the hand-set model and parity with Captum's
``captum.metrics.infidelity`` / ``sensitivity_max`` on their own perturbations, same VGG in PyTorch."""

import jax
import numpy as np
import pytest
from attribution_models import HandModel, X
from test_gradient_methods import torch_side  # noqa: F401  (a fixture)

import jaxviz
from jaxviz.metrics import infidelity, sensitivity_max

G0 = np.array([[1.0, 2.0], [1.0, 0.0]], np.float32)  # ∂logit_0/∂x at X (tests/test_gradient_methods.py)


def test_infidelity_by_hand():
    hand = HandModel()
    # I = [[0.1, 0.2], [0.3, 0]] crosses no sign: X − I = [[0.9, −2.2], [2.7, 0]] → logit_0 = 3.6 − 4.4 = −0.8,
    # so f(X) − f(X − I) = 0.8 = Σ I · G0: the gradient map has infidelity 0, the zero map 0.8² = 0.64
    i = np.array([[0.1, 0.2], [0.3, 0.0]], np.float32).reshape(1, 1, 2, 2, 1)
    two = np.concatenate([i, 2 * i])  # and 2I: score change 1.6, still linear
    assert infidelity(hand, X, G0[None], 0, perturbations=two)[0] == pytest.approx(0, abs=1e-10)
    np.testing.assert_allclose(infidelity(hand, X, np.zeros((1, 2, 2)), 0, perturbations=two), [(0.64 + 2.56) / 2],
                               rtol=1e-5)
    # 3 × the gradient: (Σ I · 3G0 − 0.8)² = 1.6² and (3.2)² for 2I; normalize's β = 1/3 brings it back to 0
    np.testing.assert_allclose(infidelity(hand, X, 3 * G0[None], 0, perturbations=two), [(2.56 + 10.24) / 2],
                               rtol=1e-5)
    assert infidelity(hand, X, 3 * G0[None], 0, perturbations=two, normalize=True)[0] == pytest.approx(0, abs=1e-9)
    # random Gaussian perturbations: positive, reproducible, and ~0 for the gradient with tiny σ (no sign flips
    # at the nonzero pixels; the zero pixel's ReLUs make f − f(x − I) = 2|I| or −I there: not 0, but small)
    r = infidelity(hand, X, np.zeros((1, 2, 2)), 0, n=50, stdevs=0.01)
    assert r[0] > 0 and r[0] == infidelity(hand, X, np.zeros((1, 2, 2)), 0, n=50, stdevs=0.01)[0]
    with pytest.raises(jaxviz.JaxvizError, match="maps"):
        infidelity(hand, X, np.zeros((1, 3, 3)), 0)


def test_sensitivity_max_by_hand():
    hand = HandModel()
    # Input × Gradient at X = [[1, −4], [3, 0]] (norm √26); δ = 0.1 everywhere: at the zero pixel x + δ = 0.1 > 0
    # so its gradient becomes 1: Φ(X + δ) − Φ(X) = [[0.1, 0.2], [0.1, 0.1]] (norm √0.07); δ = 0 changes nothing
    d = np.stack([np.full((1, 2, 2, 1), 0.1, np.float32), np.zeros((1, 2, 2, 1), np.float32)])
    got = sensitivity_max("input_x_gradient", hand, X, 0, perturbations=d)
    np.testing.assert_allclose(got, [np.sqrt(0.07 / 26)], rtol=1e-5)
    # random uniform perturbations in [−r, r]: bounded by the first-order change, r·√Σ g² / √26 (+ the zero pixel)
    r = sensitivity_max("input_x_gradient", hand, X, 0, n=20, radius=0.01)
    assert 0 < r[0] < 0.01 * np.sqrt(1 + 4 + 1 + 1) / np.sqrt(26) * 1.01
    assert jaxviz.metrics.sensitivity_max is sensitivity_max


def test_infidelity_matches_captum(torch_side):  # noqa: F811
    torch, cc, model, net, x = torch_side
    from captum.metrics import infidelity as captum_infidelity

    t, n = [3, 8], 5
    rng = np.random.default_rng(3)
    maps = rng.normal(0, 1, x.shape).astype(np.float32)
    pert = rng.normal(0, 2, (n, *x.shape)).astype(np.float32)
    p_t = torch.from_numpy(np.swapaxes(pert, 0, 1).reshape(-1, *x.shape[1:]).transpose(0, 3, 1, 2).copy())

    def perturb(inputs):  # Captum's expanded inputs are image-major (repeat_interleave)
        return p_t, inputs - p_t

    for normalize in (False, True):
        theirs = captum_infidelity(net, perturb, cc.nchw(x), cc.nchw(maps), target=t, n_perturb_samples=n,
                                   normalize=normalize).numpy()
        with jax.default_matmul_precision("highest"):
            ours = infidelity(model, x, maps, t, perturbations=pert, normalize=normalize)
        # float32 logit differences (oneDNN vs XLA sums): ~1e-6 relative of the logits, squared terms
        np.testing.assert_allclose(ours, theirs, rtol=1e-4)


def test_sensitivity_max_matches_captum(torch_side):  # noqa: F811
    torch, cc, model, net, x = torch_side
    import captum.attr as ca
    from captum.metrics import sensitivity_max as captum_sensitivity

    t, n = [3, 8], 4
    rng = np.random.default_rng(5)
    pert = rng.uniform(-0.5, 0.5, (n, *x.shape)).astype(np.float32)
    p_t = torch.from_numpy(np.swapaxes(pert, 0, 1).reshape(-1, *x.shape[1:]).transpose(0, 3, 1, 2).copy())

    def perturb(inputs, radius):
        return inputs + p_t

    def explain(inputs, target):
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs  # Captum passes the first call a tuple
        with torch.enable_grad():  # and zips over the result: a tuple of one tensor
            return (ca.InputXGradient(net).attribute(inputs.clone().requires_grad_(), target=target).detach(),)

    theirs = captum_sensitivity(explain, cc.nchw(x), perturb_func=perturb, n_perturb_samples=n, target=t).numpy()
    with jax.default_matmul_precision("highest"):
        ours = sensitivity_max("input_x_gradient", model, x, t, perturbations=pert, reduce=None)
    assert (theirs > 1e-3).all()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)  # float32 gradients in other summation orders
