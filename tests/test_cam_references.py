"""Grad-CAM++ and Score-CAM against their references: numpy ports of the authors' code, tf-keras-vis and
pytorch-grad-cam (written here from those implementations), and pytorch-grad-cam's own code where installed.

Each reference differs from the others in one step (see the modules' docstrings); every option of jaxviz is
compared with the reference it claims to match.
"""

import importlib.util
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from module_files import load_module, load_script

from jaxviz.attribution.gradcam_plus_plus import gradcam_plus_plus, plus_plus_map
from jaxviz.attribution.score_cam import score_cam


def _pytorch_grad_cam_module(name):
    """pytorch-grad-cam's ``{name}.py`` (e.g. ``score_cam``), loaded on its own, or a skip with the reason.

    The package's ``__init__`` imports every method and with them OpenCV, ttach, torchvision and
    scikit-learn, none of which Grad-CAM++'s or Score-CAM's weights use: the module is loaded from its
    file with a placeholder ``BaseCAM`` (only its ``get_cam_weights`` is called), and ``sys.modules`` is
    restored afterwards.
    """
    spec = importlib.util.find_spec("pytorch_grad_cam")
    if spec is None:
        pytest.skip("pytorch-grad-cam is not installed (pip install --no-deps grad-cam==1.5.7)")
    pytest.importorskip("torch", reason="pytorch-grad-cam needs torch")
    path = Path(spec.submodule_search_locations[0]) / f"{name}.py"
    with pytest.MonkeyPatch.context() as mp:
        pkg = types.ModuleType("pytorch_grad_cam")
        pkg.__path__ = []
        base = types.ModuleType("pytorch_grad_cam.base_cam")
        base.BaseCAM = object
        mp.setitem(sys.modules, "pytorch_grad_cam", pkg)
        mp.setitem(sys.modules, "pytorch_grad_cam.base_cam", base)
        module = load_module(f"_pgc_{name}", path)
    return module


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(1).normal(0, 30, size=(2, 32, 32, 3)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Grad-CAM++: ports of the three references' weights. A, g: [N, h, w, K] activations and ∂S/∂A.


def _pgc_plus_plus(a, g, eps=1e-6):
    """pytorch-grad-cam's GradCAMPlusPlus (eq. 19, no α normalisation, ``eps`` = 1e-6 in the denominator)."""
    g2, g3 = g**2, g**3
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 where g = 0 for eps = 0: replaced below
        alpha = g2 / (2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3 + eps)
    alpha = np.where(g != 0, alpha, 0)
    w = (np.maximum(g, 0) * alpha).sum(axis=(1, 2))
    return np.maximum(np.einsum("nhwk,nk->nhw", a, w), 0)


def _authors_plus_plus(a, g, s):
    """The authors' released code: exp(S)-scaled derivatives, α divided by its spatial sum per channel."""
    e = np.exp(s)[:, None, None, None]
    first, second, third = e * g, e * g**2, e * g**3
    denom = 2 * second + third * a.sum(axis=(1, 2), keepdims=True)
    alpha = second / np.where(denom != 0, denom, 1)
    alpha = alpha / alpha.sum(axis=(1, 2), keepdims=True)
    w = (np.maximum(first, 0) * alpha).sum(axis=(1, 2))
    return np.maximum(np.einsum("nhwk,nk->nhw", a, w), 0)


def _tfkv_plus_plus(a, g, s):
    """tf-keras-vis's GradcamPlusPlus: as the authors', with a zero α sum replaced by 1."""
    e = np.exp(s)[:, None, None, None]
    first, second, third = e * g, e * g**2, e * g**3
    denom = 2 * second + third * a.sum(axis=(1, 2), keepdims=True)
    alpha = second / (denom + (second == 0))
    total = alpha.sum(axis=(1, 2), keepdims=True)
    alpha = alpha / (total + (total == 0))
    w = (np.maximum(first, 0) * alpha).sum(axis=(1, 2))
    return np.maximum(np.einsum("nhwk,nk->nhw", a, w), 0)


def _unit(m):
    return m / m.max(axis=(1, 2), keepdims=True)


def _random_a_g(seed=0):
    rng = np.random.default_rng(seed)
    a = np.maximum(rng.normal(0.5, 1, (2, 5, 6, 7)), 0)  # ReLU outputs: many exact zeros
    # |g| in [0.5, 2]: pytorch-grad-cam's 1e-6 in α's denominator is then ≤ 2e-6 relative (it matters
    # only where g² is near 1e-6, and there the weight ReLU(g)·α is ~0 anyway)
    g = rng.choice([-1, 1], (2, 5, 6, 7)) * rng.uniform(0.5, 2, (2, 5, 6, 7))
    g[rng.random(g.shape) < 0.2] = 0  # max-pool routing leaves exact zeros
    g[:, :, :, 3] = 0  # a channel the class does not depend on: α sums to 0
    return a, g


def test_plus_plus_map_matches_each_reference():
    a, g = _random_a_g()
    s = np.array([3.0, -1.5])  # the class scores: only scale the authors' and tf-keras-vis's maps
    ours = np.asarray(plus_plus_map(jnp.asarray(a, jnp.float32), jnp.asarray(g, jnp.float32)), np.float64)
    # pytorch-grad-cam's 1e-6 in α's denominator: ≤ 2e-6 relative here; float32 inputs: ~1e-6
    np.testing.assert_allclose(ours, _pgc_plus_plus(a, g), rtol=2e-5, atol=2e-5 * ours.max())
    normed = np.asarray(plus_plus_map(jnp.asarray(a, jnp.float32), jnp.asarray(g, jnp.float32), True), np.float64)
    # exp(S) is a per-image factor the references keep and jaxviz leaves out: compare maps scaled to max 1
    np.testing.assert_allclose(_unit(normed), _unit(_tfkv_plus_plus(a, g, s)), rtol=1e-5, atol=1e-6)
    with np.errstate(invalid="ignore", divide="ignore"):
        authors = _authors_plus_plus(a, g, s)  # NaN weights from the 0/0 channel: the one difference
    assert np.isnan(authors).any()
    g_live = g.copy()
    g_live[:, 0, 0, 3] = 0.5  # give channel 3 a gradient: then the authors' code has no 0/0
    normed = np.asarray(plus_plus_map(jnp.asarray(a, jnp.float32), jnp.asarray(g_live, jnp.float32), True))
    np.testing.assert_allclose(_unit(normed), _unit(_authors_plus_plus(a, g_live, s)), rtol=1e-5, atol=1e-6)
    # the two options differ: the claim that they are different references is not vacuous
    assert np.abs(_unit(ours) - _unit(np.asarray(normed))).max() > 1e-2


def test_plus_plus_map_matches_pytorch_grad_cams_code():
    pgc = _pytorch_grad_cam_module("grad_cam_plusplus")
    a, g = _random_a_g(1)
    # pytorch-grad-cam works on NCHW arrays; get_cam_weights uses no state of the object
    w = pgc.GradCAMPlusPlus.get_cam_weights(None, None, None, None, a.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2))
    theirs = np.maximum(np.einsum("nhwk,nk->nhw", a, w), 0)
    ours = np.asarray(plus_plus_map(jnp.asarray(a, jnp.float32), jnp.asarray(g, jnp.float32)), np.float64)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-5 * theirs.max())  # their eps; float32 inputs


def _layer_grad(model, x, layer, t):
    """``(A, ∂logit_t/∂A)`` of ``layer`` by plain autodiff through ``model.apply``'s perturbation."""
    a = np.asarray(model.features(x, layer)[layer])

    def logit(delta):
        logits, _ = model.apply(model.params, jnp.asarray(x), upto="logits", perturb={layer: delta})
        return logits[:, t].sum()

    return a, np.asarray(jax.grad(logit)(jnp.zeros(a.shape, jnp.float32))), np.asarray(
        model.features(x, "logits")["logits"][:, t])


def test_gradcam_plus_plus_options_end_to_end(tiny, batch):
    layer, t = "block3_conv3", 4
    a, g, s = (v.astype(np.float64) for v in _layer_grad(tiny, batch, layer, t))
    assert np.abs(g).max() < 0.1  # small gradients: pytorch-grad-cam's 1e-6 would move α by % here
    # so eq. 19 exactly (eps = 0) for the default, tf-keras-vis's for normalize_alpha=True
    for normalize_alpha, ref in [(False, _pgc_plus_plus(a, g, eps=0)), (True, _tfkv_plus_plus(a, g, s))]:
        ours = np.asarray(gradcam_plus_plus(tiny, batch, t, layer=layer, upsample=False, normalize=True,
                                            normalize_alpha=normalize_alpha), np.float64)
        # float32 forward and backward passes vs float64 here: ~1e-6 of the map's maximum (1)
        np.testing.assert_allclose(ours, _unit(ref), atol=1e-5, err_msg=f"normalize_alpha={normalize_alpha}")


# ---------------------------------------------------------------------------------------------------------
# Score-CAM on a layer at the input's resolution (block1_conv2 of vgg_tiny, 32×32): no upsampling, so the
# references' order (weights on the layer's activations, then upsample) and the authors' (upsample, then
# weight) agree, and their masks are the activations scaled to [0, 1].


def _masked_scores(model, x, a, t, score):
    """``[N, K]`` class score of ``x ⊙ M_k`` with ``M_k`` channel k of ``a`` scaled to [0, 1] (1e-8 as pgc)."""
    lo, hi = a.min(axis=(1, 2), keepdims=True), a.max(axis=(1, 2), keepdims=True)
    m = (a - lo) / (hi - lo + 1e-8)
    n, k = a.shape[0], a.shape[-1]
    out = np.zeros((n, k))
    for i in range(n):
        xs = x[i][None] * np.moveaxis(m[i], -1, 0)[..., None]  # [K, H, W, 3]
        logits = np.asarray(model.features(xs, "logits")["logits"], np.float64)
        if score == "prob":
            p = np.exp(logits - logits.max(-1, keepdims=True))
            out[i] = (p / p.sum(-1, keepdims=True))[:, t[i]]
        else:
            out[i] = logits[:, t[i]]
    return out


def test_score_cam_options_match_their_references(tiny, batch):
    layer, t = "block1_conv2", np.array([2, 7])
    a = np.asarray(tiny.features(batch, layer)[layer], np.float64)
    assert (a.max(axis=(1, 2)) > a.min(axis=(1, 2))).all()  # every channel has spatial information
    # tf-keras-vis / the authors' first code: w_k = the masked input's class probability
    w = _masked_scores(tiny, batch, a, t, "prob")
    ref = np.maximum(np.einsum("nhwk,nk->nhw", a, w), 0)
    ours = np.asarray(score_cam(tiny, batch, t, layer=layer), np.float64)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * ref.max())  # float32 forward passes
    # pytorch-grad-cam / Algorithm 1: softmax over the channels of the masked inputs' logits
    s = _masked_scores(tiny, batch, a, t, "logit")
    w = np.exp(s - s.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    ref = np.maximum(np.einsum("nhwk,nk->nhw", a, w), 0)
    ours = np.asarray(score_cam(tiny, batch, t, layer=layer, score="logit", softmax_channels=True), np.float64)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * ref.max())


def test_score_cam_softmax_matches_pytorch_grad_cams_code(tiny, batch):
    pgc = _pytorch_grad_cam_module("score_cam")
    import torch

    cc = load_script("compare_captum")
    net, _ = cc.torch_vgg(tiny)
    layer, t = "block1_conv2", [2, 7]
    a = np.asarray(tiny.features(batch, layer)[layer])
    fake = types.SimpleNamespace(model=net, device=torch.device("cpu"), batch_size=16)
    targets = [lambda o, c=c: o[c] for c in t]  # ClassifierOutputTarget: the class's logit
    w = pgc.ScoreCAM.get_cam_weights(fake, cc.nchw(batch), None, targets, np.array(a.transpose(0, 3, 1, 2)), None)
    theirs = np.maximum(np.einsum("nhwk,nk->nhw", a.astype(np.float64), w), 0)
    ours = np.asarray(score_cam(tiny, batch, t, layer=layer, score="logit", softmax_channels=True), np.float64)
    # PyTorch's oneDNN and XLA sum in different orders (~1e-6 relative on the logits); their 1e-8 in the
    # masks' span is 1e-8 relative here
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * theirs.max())


def test_score_cam_softmax_leaves_out_constant_channels(tiny):
    # a black image: every block1_conv2 channel is constant (its bias), so no channel carries information
    x = np.zeros((1, 32, 32, 3), np.float32)
    for soft in (False, True):
        m = np.asarray(score_cam(tiny, x, 0, layer="block1_conv2", softmax_channels=soft))
        assert np.isfinite(m).all() and (m == 0).all()
