"""Attribution methods: hand-derived maps on a tiny hand-set model, properties on vgg_tiny, the CLI."""

import functools
import logging
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attribution_models import HandModel, X, hand_params, tiny_with_biases

import jaxviz
from jaxviz import runtime
from jaxviz.attribution.deconvnet import deconvnet
from jaxviz.attribution.gradcam_plus_plus import gradcam_plus_plus
from jaxviz.attribution.guided_backprop import guided_backprop
from jaxviz.attribution.guided_gradcam import guided_gradcam
from jaxviz.attribution.integrated_gradients import integrated_gradients, quadrature
from jaxviz.attribution.lime import lime, segment, slic
from jaxviz.attribution.methods import METHODS, explain, get_method
from jaxviz.attribution.occlusion import occlusion
from jaxviz.attribution.saliency import saliency
from jaxviz.attribution.score_cam import score_cam
from jaxviz.attribution.smoothgrad import smoothgrad

# Cheap settings so every method runs in well under a second on vgg_tiny once compiled.
FAST = {
    "smoothgrad": dict(n=4, batch_size=8),
    "integrated_gradients": dict(steps=8, batch_size=16),
    "occlusion": dict(window=16, stride=16),
    "lime": dict(n_samples=16, segments="grid", n_segments=4),
    "score_cam": dict(batch_size=8),
    "rise": dict(n=64, batch_size=32),
    "gradient_shap": dict(n=4, batch_size=8),
    "ablationcam": dict(batch_size=64),
}


@pytest.fixture(scope="module")
def biased():
    return tiny_with_biases(0)


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(1).normal(0, 30, size=(2, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def hand():
    return HandModel()


# ---------------------------------------------------------------------------------------------------------
# Known answers on the hand-set model (see tests/attribution_models.py).
# x = [[1, -2], [3, 0]];  A_0 = relu(x) = [[1, 0], [3, 0]],  A_1 = relu(-x) = [[0, 2], [0, 0]].
# Class 0: logit = ΣA_0 − 2ΣA_1, so the gradient reaching the conv ReLU is g = (1, −2) for (A_0, A_1).


def test_saliency_and_modified_backprops_by_hand(hand):
    # plain:   Σ_k g_k [z_k > 0] W_k = 1·[x > 0]·1 + (−2)·[−x > 0]·(−1) = [x > 0] + 2[x < 0]
    # guided:  only g_0 = 1 > 0 passes, where z_0 = x > 0          → [x > 0]
    # deconv:  relu(g) = (1, 0) regardless of the forward pass      → 1 everywhere
    np.testing.assert_array_equal(saliency(hand, X, 0, abs=False, reduce=None)[0, ..., 0], [[1, 2], [1, 0]])
    np.testing.assert_array_equal(guided_backprop(hand, X, 0, reduce=None)[0, ..., 0], [[1, 0], [1, 0]])
    np.testing.assert_array_equal(deconvnet(hand, X, 0, reduce=None)[0, ..., 0], [[1, 1], [1, 1]])
    # class 1: logit = ΣA_1, g = (0, 1): plain/guided (−1)·[x < 0]; deconv relu(0,1)·W = −1 everywhere
    np.testing.assert_array_equal(saliency(hand, X, 1, abs=False, reduce=None)[0, ..., 0], [[0, -1], [0, 0]])
    np.testing.assert_array_equal(guided_backprop(hand, X, 1, reduce=None)[0, ..., 0], [[0, -1], [0, 0]])
    np.testing.assert_array_equal(deconvnet(hand, X, 1, reduce=None)[0, ..., 0], [[-1, -1], [-1, -1]])


def test_gradcam_plus_plus_by_hand(hand):
    # α_k = g²/(2g² + ΣA_k g³): class 0, k=0: 1/(2 + 4) = 1/6; k=1 has relu(g_1) = 0 → w = (4·1/6, 0)
    #   map = relu(2/3 · A_0) = [[2/3, 0], [2, 0]]
    # class 1: g = (0, 1): k=0 has 0/0 → α = 0; k=1: 1/(2 + 2) = 1/4, w_1 = 4·1/4 = 1 → map = A_1
    m0 = gradcam_plus_plus(hand, X, 0, upsample=False)[0]
    np.testing.assert_allclose(m0, [[2 / 3, 0], [2, 0]], rtol=1e-6)  # float32 rounding of 1/6
    np.testing.assert_allclose(gradcam_plus_plus(hand, X, 1, upsample=False)[0], [[0, 2], [0, 0]], rtol=1e-6)


def test_guided_gradcam_and_score_cam_by_hand(hand):
    # Grad-CAM: α = mean g = (1, −2) → relu(A_0 − 2A_1) = [[1, 0], [3, 0]]; times guided [x > 0] (same size)
    np.testing.assert_array_equal(guided_gradcam(hand, X, 0, reduce=None)[0, ..., 0], [[1, 0], [3, 0]])
    # Score-CAM, logits: M_0 = A_0/3 → x·M_0 = [[1/3, 0], [3, 0]] → logit_0 = 10/3;
    # M_1 = A_1/2 → x·M_1 = [[0, −2], [0, 0]] → logit_0 = −4.  relu(10/3·A_0 − 4·A_1) = [[10/3, 0], [10, 0]]
    np.testing.assert_allclose(score_cam(hand, X, 0, score="logit")[0], [[10 / 3, 0], [10, 0]], rtol=1e-6)


def test_score_cam_constant_channel_gives_no_nan(hand):
    x = np.abs(X) + 1  # all positive: A_1 = relu(−x) = 0 everywhere, a mask with zero range
    m = np.asarray(score_cam(hand, x, 0))
    assert np.isfinite(m).all()
    # only channel 0 counts: relu(w_0 · A_0) with w_0 = softmax prob of class 0 of x·M_0 — positive
    assert (m > 0).all()


def test_occlusion_and_ig_by_hand(hand):
    # logit_0(x) = 4 − 4 = 0; zeroing one pixel: (0,0) → −1, (0,1) → 4, (1,0) → −3, (1,1) → 0
    np.testing.assert_allclose(occlusion(hand, X, 0, window=1, stride=1)[0], [[1, -4], [3, 0]])
    # zero bias + zero baseline: the network is homogeneous, IG = x · ∂logit/∂x exactly
    ig, delta = integrated_gradients(hand, X, 0, steps=5, reduce=None, return_convergence_delta=True)
    np.testing.assert_allclose(ig[0, ..., 0], [[1, -4], [3, 0]], rtol=1e-6)
    np.testing.assert_allclose(delta, [0], atol=1e-6)


def test_prob_score_is_the_softmax_gradient(hand):
    x = X * 0.3
    g_prob = saliency(hand, x, 0, score="prob", abs=False, reduce=None)
    ref = jax.grad(lambda v: jax.nn.softmax(hand.apply(hand.params, v, upto="logits")[0])[0, 0])(jnp.asarray(x))
    np.testing.assert_allclose(g_prob, ref, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# Properties on vgg_tiny


def test_integrated_gradients_completeness(biased, batch):
    # Completeness Σ IG = S(x) − S(x') holds up to the quadrature error. With non-zero biases the path is
    # piecewise linear with many kinks: 256 Gauss–Legendre steps give ≤ 1 % of |S(x) − S(x')| here
    # (measured 0.05–0.3 %), and the error must shrink as steps grow.
    coarse = integrated_gradients(biased, batch, steps=8, return_convergence_delta=True)[1]
    attr, delta = integrated_gradients(biased, batch, steps=256, return_convergence_delta=True)
    logits = np.asarray(biased.apply(biased.params, jnp.asarray(batch), upto="logits")[0])
    t = logits.argmax(-1)
    base = np.asarray(biased.apply(biased.params, jnp.zeros_like(batch), upto="logits")[0])
    diff = logits[np.arange(2), t] - base[np.arange(2), t]
    np.testing.assert_allclose(np.asarray(attr).sum((1, 2)) - diff, delta, rtol=1e-4, atol=1e-4)
    assert (np.abs(delta) <= 0.01 * np.abs(diff)).all()
    assert np.abs(delta).sum() < np.abs(coarse).sum()


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right",
                                    "riemann_middle"])
def test_quadrature_rules_match_captum(method):
    alphas, w = quadrature(method, 4)
    assert len(alphas) == len(w) == 4 and 0 <= alphas.min() and alphas.max() <= 1
    expected = {"riemann_trapezoid": 0.75, "gausslegendre": 1.0}.get(method, 1.0)  # Captum's trapezoid: 1 − 1/n
    assert w.sum() == pytest.approx(expected)
    pytest.importorskip("torch", reason="Captum needs torch")
    approx = pytest.importorskip("captum.attr._utils.approximation_methods", reason="compared with Captum's rules")
    step_sizes, alpha_fn = approx.approximation_parameters(method)
    for steps in (2, 3, 4, 7, 50):
        ours_a, ours_w = quadrature(method, steps)
        # Captum computes the Riemann nodes in float32 (torch.linspace) and Gauss–Legendre in float64
        np.testing.assert_allclose(ours_a, alpha_fn(steps), rtol=0, atol=1e-7, err_msg=f"{method} α, {steps}")
        np.testing.assert_allclose(ours_w, step_sizes(steps), rtol=0, atol=1e-12, err_msg=f"{method} w, {steps}")


def test_ig_baselines_and_batch_size_invariance(biased, batch):
    a = integrated_gradients(biased, batch, 3, steps=8, batch_size=6)  # 3 chunks of 2 steps (last padded)
    b = integrated_gradients(biased, batch, 3, steps=8)  # one chunk
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # chunking only changes summation order
    for base in ("black", "blur", np.zeros((1, 1, 1, 3), np.float32) + 5):
        attr, d = integrated_gradients(biased, batch, 3, baseline=base, steps=8, return_convergence_delta=True)
        assert np.isfinite(d).all() and not np.allclose(attr, b)
    with pytest.raises(jaxviz.JaxvizError, match="baseline"):
        integrated_gradients(biased, batch, baseline="grey")


def test_smoothgrad_is_seeded_and_batch_invariant(tiny, batch):
    a = smoothgrad(tiny, batch, n=4, seed=3, batch_size=2)
    b = smoothgrad(tiny, batch, n=4, seed=3, batch_size=8)  # per-sample keys: chunking does not matter
    c = smoothgrad(tiny, batch, n=4, seed=4, batch_size=8)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not np.allclose(a, c)
    # keys are per (image index, sample): the first image alone gets the noise it gets in the batch
    np.testing.assert_allclose(smoothgrad(tiny, batch[:1], n=4, seed=3)[0], a[0], rtol=1e-5, atol=1e-7)


def test_smoothgrad_values_by_hand(hand):
    # Hand model, class 0: ∂logit_0/∂x = [x > 0] + 2·[x < 0] per pixel (see the derivation above), so with
    # the noisy copies x + σ ε_k the SmoothGrad value is the mean of that step function over k.
    sigma = 0.15 * (X.max() - X.min())  # noise = 0.15 of the image's range (5) = 0.75
    n, seed = 64, 7
    # the noise of sample k of image i: normal draws from fold_in(fold_in(key(seed), i), k) (documented)
    key = jax.random.fold_in(jax.random.key(seed), 0)
    eps = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, k), X.shape[1:])) for k in range(n)])
    noisy = X[0] + sigma * eps  # [n, 2, 2, 1]
    step = (noisy > 0) * 1.0 + (noisy < 0) * 2.0
    plain = np.asarray(smoothgrad(hand, X, 0, n=n, seed=seed, abs=False, reduce=None))[0]
    np.testing.assert_allclose(plain, step.mean(0), rtol=1e-6)  # float32 sums of 1s and 2s
    squared = np.asarray(smoothgrad(hand, X, 0, n=n, seed=seed, squared=True, reduce=None))[0]
    np.testing.assert_allclose(squared, (step**2).mean(0), rtol=1e-6)
    assert not np.allclose(step.mean(0), step[0])  # the noise does flip signs here: not a vacuous check
    # and against the expectation, independently of the draws: E = Φ(x/σ)·1 + Φ(−x/σ)·2
    from math import erf, sqrt

    many = np.asarray(smoothgrad(hand, X, 0, n=4000, seed=1, abs=False, reduce=None))[0, ..., 0]
    phi = np.vectorize(lambda v: 0.5 * (1 + erf(v / sqrt(2))))(X[0, ..., 0] / sigma)
    expected = phi + 2 * (1 - phi)
    spread = np.sqrt(phi * (1 - phi) / 4000)  # the mean of n Bernoulli(Φ) steps of height 1: its std
    assert (np.abs(many - expected) < 5 * spread + 1e-6).all(), (many, expected)


def test_occlusion_batched_equals_loop(tiny, batch):
    win, stride, fill = 12, 10, 0.0
    got = np.asarray(occlusion(tiny, batch, 4, window=win, stride=stride, batch_size=8, return_grid=True))
    one = np.asarray(occlusion(tiny, batch, 4, window=win, stride=stride, batch_size=1, return_grid=True))
    logits = lambda v: np.asarray(tiny.apply(tiny.params, jnp.asarray(v), upto="logits")[0])[:, 4]
    s0 = logits(batch)
    ref = np.zeros_like(got)
    starts = range(0, 32 - win + stride, stride)  # ceil((32 − 12)/10) + 1 = 3 positions, the last clipped
    for a, r in enumerate(starts):
        for b, c in enumerate(starts):
            occ = batch.copy()
            occ[:, r: r + win, c: c + win] = fill
            ref[:, a, b] = s0 - logits(occ)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one, got, rtol=1e-5, atol=1e-5)
    # the pixel map averages the drops of the windows covering each pixel
    m = np.asarray(occlusion(tiny, batch, 4, window=win, stride=stride))
    np.testing.assert_allclose(m[:, 0, 0], ref[:, 0, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m[:, 11, 11], ref[:, :2, :2].mean((1, 2)), rtol=1e-5, atol=1e-5)


def test_incremental_occlusion_equals_full_evaluation(biased, batch):
    from jaxviz.attribution.occlusion import split_plan

    # Crops cover every input an affected output of the split layer depends on, so the scores are the
    # full evaluation's; windows at all four borders are included (positions 0, 5, …, 25 with window 7).
    full = np.asarray(occlusion(biased, batch, 0, window=7, stride=5, incremental=False, return_grid=True))
    for layer in ("block1_conv2", "block2_conv1"):
        inc = np.asarray(occlusion(biased, batch, 0, window=7, stride=5, incremental=layer, batch_size=10,
                                   return_grid=True))
        np.testing.assert_allclose(inc, full, rtol=1e-5, atol=1e-5 * np.abs(full).max())
    # the plan needs the family and the layer table only (VGG16's weights are not loaded)
    vgg16 = types.SimpleNamespace(family="vgg", input_channels=3,
                                  layer_table=functools.partial(jaxviz.frontends.vgg.layer_table, "vgg16", True))
    plan = split_plan(vgg16, (224, 224), (16, 16), "auto")
    assert plan.layer == "block3_conv3" and plan.crop == (96, 96) and plan.cost < 0.55
    assert split_plan(biased, (32, 32), (32, 32), "auto") is None  # nothing to save
    with pytest.raises(jaxviz.JaxvizError, match="incremental"):
        occlusion(biased, batch, window=8, stride=8, incremental="fc1")


def test_score_cam_batched_equals_loop(tiny, batch):
    from jaxviz.attribution.score_cam import masks, upsampled

    got = np.asarray(score_cam(tiny, batch, 2, batch_size=6))  # 3 channels per chunk, the last padded
    np.testing.assert_allclose(score_cam(tiny, batch, 2, batch_size=8), got, rtol=1e-5, atol=1e-6)
    a = tiny.features(batch, "block5_conv3")["block5_conv3"]
    m, valid = masks(a, (32, 32), "bilinear")
    up = np.asarray(upsampled(a, (32, 32), "bilinear"))
    ref = np.zeros((2, 32, 32))
    for k in range(a.shape[-1]):
        probs = np.asarray(tiny.predict(batch * np.asarray(m)[..., k: k + 1]))[:, 2]
        ref += np.where(np.asarray(valid)[:, k], probs, 0)[:, None, None] * up[..., k]
    np.testing.assert_allclose(got, np.maximum(ref, 0), rtol=1e-4, atol=1e-6)


def test_lime_is_reproducible(tiny, batch):
    kw = dict(n_samples=16, segments="grid", n_segments=4)
    a = lime(tiny, batch, 1, seed=7, batch_size=6, **kw)
    b = lime(tiny, batch, 1, seed=7, **kw)
    c = lime(tiny, batch, 1, seed=8, **kw)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not np.allclose(a, c)
    # one value per superpixel
    labels = segment(batch, "grid", 4)
    for lab, m in zip(labels, np.asarray(a)):
        for s in np.unique(lab):
            assert np.ptp(m[lab == s]) == 0


def test_lime_recovers_a_linear_model(hand):
    # logit_0 = Σ relu(x) − 2 Σ relu(−x) is linear in the on/off pattern of positive superpixels: with fill 0
    # each pixel's on-coefficient is exactly its value (ridge shrinks it a little: alpha → 0).
    x = np.array([[[[1.0], [2.0]], [[3.0], [4.0]]]], np.float32)
    seg = np.array([[0, 1], [2, 3]])
    m = np.asarray(lime(hand, x, 0, segments=seg, fill=0.0, score="logit", n_samples=300, alpha=1e-6))
    np.testing.assert_allclose(m[0], x[0, ..., 0], rtol=1e-3)


def test_slic_segments():
    rng = np.random.default_rng(0)
    img = np.zeros((40, 40, 3), np.float32)
    img[:, 20:] = 200  # two flat halves
    img += rng.normal(0, 2, img.shape)
    lab = slic(img, n_segments=8)
    assert lab.shape == (40, 40) and lab.min() == 0 and 4 <= lab.max() + 1 <= 12
    # no superpixel straddles the edge between the halves
    for s in np.unique(lab):
        cols = np.nonzero(lab == s)[1]
        assert cols.max() < 20 or cols.min() >= 20


def test_lime_quickshift_is_limes_default_segmentation(tiny, batch):
    skimage_seg = pytest.importorskip("skimage.segmentation", reason="quickshift needs scikit-image")
    from jaxviz.attribution.lime import QUICKSHIFT
    from jaxviz.images import undo_preprocess

    assert QUICKSHIFT == dict(kernel_size=4, max_dist=200, ratio=0.2)  # lime's SegmentationAlgorithm defaults
    rgb = np.clip(np.rint(undo_preprocess(batch)), 0, 255).astype(np.uint8)
    ref = np.stack([skimage_seg.quickshift(im, kernel_size=4, max_dist=200, ratio=0.2) for im in rgb])
    np.testing.assert_array_equal(segment(batch, "quickshift"), ref)
    m = np.asarray(lime(tiny, batch, 1, segments="quickshift", n_samples=16))
    np.testing.assert_array_equal(m, np.asarray(lime(tiny, batch, 1, segments=ref, n_samples=16)))


def test_lime_quickshift_without_scikit_image_is_one_clear_error(tiny, batch, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "skimage" or m.startswith("skimage.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage → ImportError, installed or not
    with pytest.raises(jaxviz.JaxvizError, match=r"^segments='quickshift' \(lime's default\) needs scikit-image: "
                                                 r"pip install scikit-image; or use segments='slic' or 'grid'$"):
        lime(tiny, batch, 1, segments="quickshift", n_samples=16)


# ---------------------------------------------------------------------------------------------------------
# The common signature


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_common_signature_and_compiles_once(name, tiny, batch, caplog):
    fn = get_method(name)
    opts = FAST.get(name, {})
    m = np.asarray(fn(tiny, batch, **opts))
    assert m.shape == (2, 32, 32) and m.dtype == np.float32 and np.isfinite(m).all()
    full = np.asarray(fn(tiny, batch, None, reduce=None, **opts))
    assert full.shape == (2, 32, 32, 3)
    before = dict(runtime.trace_counts)
    fn(tiny, batch + 1, [1, 2], **opts)  # given targets share the program of "top class" targets
    assert dict(runtime.trace_counts) == before, name
    # the same calls again, with new pixel values: no new compilation
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        caplog.clear()
        fn(tiny, batch, **opts)
        fn(tiny, batch - 1, [1, 2], **opts)
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()], name


def test_book_gradcam_one_program_for_every_target(tiny, batch):
    from jaxviz.attribution.gradcam import gradcam as book_gradcam

    book_gradcam(tiny, batch, 3, layer="block4_conv1")
    before = runtime.trace_counts["gradcam_book"]
    a = np.asarray(book_gradcam(tiny, batch, 5, layer="block4_conv1"))  # another target
    b = np.asarray(book_gradcam(tiny, batch, [5, 0], layer="block4_conv1"))  # one per image
    top = np.asarray(tiny.predict(batch)).argmax(-1)
    c = np.asarray(book_gradcam(tiny, batch, layer="block4_conv1"))  # each image's top class
    d, classes = book_gradcam(tiny, batch, layer="block4_conv1", top=1)
    assert runtime.trace_counts["gradcam_book"] == before  # all four: the program of the first call
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(c, np.asarray(book_gradcam(tiny, batch, top.tolist(), layer="block4_conv1")))
    np.testing.assert_array_equal(np.asarray(d)[:, 0], c)
    np.testing.assert_array_equal(np.asarray(classes)[:, 0], top)
    book_gradcam(tiny, batch, layer="block4_conv1", top=3)  # K = 3 is another shape of the classes: once
    after = runtime.trace_counts["gradcam_book"]
    book_gradcam(tiny, batch, layer="block4_conv1", top=3)
    assert after == before + 1 and runtime.trace_counts["gradcam_book"] == after


def test_targets_none_int_and_list(tiny, batch):
    top = np.asarray(tiny.predict(batch)).argmax(-1)
    np.testing.assert_array_equal(saliency(tiny, batch), saliency(tiny, batch, list(top)))
    both = saliency(tiny, batch, [3, 5])
    np.testing.assert_allclose(both[1], saliency(tiny, batch[1:], 5)[0], rtol=1e-5, atol=1e-8)
    with pytest.raises(jaxviz.JaxvizError, match="out of range"):
        saliency(tiny, batch, 10)
    with pytest.raises(jaxviz.JaxvizError, match="2 images"):
        saliency(tiny, batch, [1, 2, 3])


def test_reduce_options_are_consistent(tiny, batch):
    g = np.asarray(saliency(tiny, batch, 1, abs=False, reduce=None))
    np.testing.assert_allclose(saliency(tiny, batch, 1), np.abs(g).max(-1), rtol=1e-6)
    np.testing.assert_allclose(saliency(tiny, batch, 1, abs=False, reduce="sum"), g.sum(-1), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(saliency(tiny, batch, 1, abs=False, reduce="norm"),
                               np.sqrt((g**2).sum(-1)), rtol=1e-5)
    with pytest.raises(jaxviz.JaxvizError, match="reduce"):
        saliency(tiny, batch, reduce="median")


def test_registry_names_and_gradcam_paths_agree(tiny, batch):
    np.testing.assert_array_equal(explain(tiny, batch, "ig", steps=4), integrated_gradients(tiny, batch, steps=4))
    a = np.asarray(explain(tiny, batch, "gradcam", 3))
    b = np.asarray(explain(tiny, batch, "gradcam", 3, params=tiny.params))  # the params= code path
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(jaxviz.JaxvizError, match="valid methods: saliency, smoothgrad"):
        get_method("gradcam+++")


def test_each_method_lives_in_a_module_named_after_it():
    import importlib

    for name in METHODS:
        module = importlib.import_module(f"jaxviz.attribution.{name}")
        assert callable(getattr(module, name)), name
        assert "arXiv" in module.__doc__ or "doi:" in module.__doc__, f"{name}'s module docstring cites no paper"


def test_params_override_is_used(tiny, batch):
    zero = jax.tree_util.tree_map(jnp.zeros_like, tiny.params)
    assert np.abs(np.asarray(saliency(tiny, batch, 1, params=zero))).max() == 0
    assert np.abs(np.asarray(saliency(tiny, batch, 1))).max() > 0


def test_hand_params_helper_changes_answers():
    m = HandModel(hand_params(kernel=(2.0, -1.0)))
    np.testing.assert_array_equal(guided_backprop(m, X, 0, reduce=None)[0, ..., 0], [[2, 0], [2, 0]])


# ---------------------------------------------------------------------------------------------------------
# CLI


def _image(tmp_path):
    from jaxviz.images import sample_image_path

    return str(sample_image_path("chelsea"))


def test_cli_explain_writes_maps(tmp_path, capsys):
    from jaxviz.cli import main

    out = tmp_path / "out"
    rc = main(["explain", _image(tmp_path), "--method", "saliency", "--method", "gradcam_plus_plus,ig",
               "--arch", "vgg_tiny", "--weights", "random:0", "-o", str(out), "--npy"])
    assert rc == 0
    for m in ("saliency", "gradcam_plus_plus", "integrated_gradients"):
        assert (out / f"chelsea_{m}.png").stat().st_size > 0
        assert np.load(out / f"chelsea_{m}.npy").shape == (32, 32)
    assert (out / "chelsea_panel.png").exists() and (out / "chelsea_explain.json").exists()


def test_cli_bad_method_is_one_line_exit_2(tmp_path, capsys):
    from jaxviz.cli import main

    rc = main(["explain", _image(tmp_path), "--method", "salincy", "--arch", "vgg_tiny", "--weights", "random:0",
               "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "salincy" in err and "valid methods: saliency" in err and "lime" in err
