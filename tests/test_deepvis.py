"""DeepVis class visualisation: ascent raises the class logit, batching, regularisers, errors."""

import numpy as np
import pytest

import jaxviz
from jaxviz import runtime
from jaxviz.visualize import deepvis as D
from jaxviz.visualize.deepvis import class_patterns, gaussian_blur, gaussian_kernel1d

CLASSES = [0, 3, 7]


def _scores(model, x, classes):
    logits = np.asarray(model.features(x, "logits")["logits"])
    return logits[np.arange(len(classes)), classes]


@pytest.mark.parametrize("kwargs", [dict(), dict(blur_every=0)])
def test_ascent_raises_each_class_logit(tiny, kwargs):
    start = class_patterns(tiny, CLASSES, steps=0, raw=True, progress=False)
    end = class_patterns(tiny, CLASSES, steps=40, raw=True, progress=False, **kwargs)
    before, after = _scores(tiny, start, CLASSES), _scores(tiny, end, CLASSES)
    assert np.all(after > before + 0.05), (before, after)


def test_batch_equals_each_class_alone(tiny):
    # (On random weights and a flatten head, jitter does not reliably raise the unshifted logit: the
    # flatten head is position-specific. Here it is checked for being per-class and reproducible.)
    both = class_patterns(tiny, CLASSES, steps=12, jitter=3, raw=True, progress=False)
    still = class_patterns(tiny, CLASSES, steps=12, raw=True, progress=False)
    assert np.abs(both - still).max() > 1.0  # jitter does change the path
    alone = np.concatenate([class_patterns(tiny, [c], steps=12, jitter=3, raw=True, progress=False)
                            for c in CLASSES])
    # per-class PRNG streams: same start and shifts; only float scheduling differs (values ~ 100)
    np.testing.assert_allclose(both, alone, atol=1e-2)


def test_progress_segments_give_the_same_result_without_retracing(tiny):
    a = class_patterns(tiny, [5], steps=10, jitter=3, raw=True, progress=False)
    before = runtime.trace_counts["deepvis"]
    b = class_patterns(tiny, [5], steps=10, jitter=3, raw=True, progress=True, progress_every=3)  # 3+3+3+1
    assert runtime.trace_counts["deepvis"] == before  # loop bounds are traced: one program serves every segment
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_output_images_and_valid_range(tiny):
    img = class_patterns(tiny, CLASSES, steps=5, step_size=1e4, progress=False)  # huge steps hit the clip
    assert img.dtype == np.uint8 and img.shape == (3, 32, 32, 3)
    raw = class_patterns(tiny, CLASSES, steps=5, step_size=1e4, progress=False, raw=True)
    from jaxviz.images import BGR_MEAN

    assert np.all(raw + np.asarray(BGR_MEAN) >= -1e-3) and np.all(raw + np.asarray(BGR_MEAN) <= 255 + 1e-3)


def test_gaussian_blur():
    k = gaussian_kernel1d(1.0)
    assert k.shape == (9,) and abs(k.sum() - 1) < 1e-6 and np.argmax(k) == 4
    flat = np.full((1, 8, 8, 3), 7.0, np.float32)
    np.testing.assert_allclose(gaussian_blur(flat, 1.0), flat, rtol=1e-6)  # normalised, reflected edges
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    y = np.asarray(gaussian_blur(x, 1.0))
    assert y.shape == x.shape and y.std() < 0.6 * x.std()  # white noise loses most of its variance
    np.testing.assert_allclose(y.mean(), x.mean(), atol=0.05)


def test_gaussian_blur_is_scipys_with_its_reflect_border():
    ndimage = pytest.importorskip("scipy.ndimage")  # a dependency of jax: present wherever jax is
    rng = np.random.default_rng(3)
    for h, w, sigma in [(16, 17, 1.0), (5, 6, 1.0), (3, 4, 2.0), (12, 12, 0.5)]:  # radius past the image too
        x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
        ref = np.stack([[ndimage.gaussian_filter(x[n, ..., c].astype(np.float64), sigma) for c in range(3)]
                        for n in range(2)]).transpose(0, 2, 3, 1)  # the toolbox: per channel, mode="reflect"
        np.testing.assert_allclose(np.asarray(gaussian_blur(x, sigma)), ref, atol=1e-6)  # float32 sums


def _toolbox_ascent(model, x0, classes, steps, lr, decay, blur_every, sigma):
    """The toolbox's ``GradientOptimizer._optimize`` for each class (constant lr), returning ``best_xx``.

    ``steps + 1`` iterations: crop to the pixel range, score, snapshot the best, then (except on the last)
    step, decay and blur (SciPy's ``gaussian_filter``, mode "reflect") every ``blur_every`` iterations.
    """
    import jax
    from scipy.ndimage import gaussian_filter

    from jaxviz.images import BGR_MEAN

    mean = np.asarray(BGR_MEAN, np.float64)
    onehot = np.eye(model.arch.num_classes, dtype=np.float32)[classes]
    score = jax.jit(lambda v: (model.apply(model.params, v, upto="logits")[0] * onehot).sum(-1))
    grad = jax.jit(jax.grad(lambda v: score(v).sum()))
    xx = np.asarray(x0, np.float64)
    best, best_obj, best_ii = xx.copy(), np.full(len(classes), -np.inf), np.zeros(len(classes), int)
    for ii in range(steps + 1):
        xx = np.clip(xx + mean, 0, 255) - mean
        obj = np.asarray(score(xx.astype(np.float32)), np.float64)
        better = obj > best_obj
        best[better], best_obj[better], best_ii[better] = xx[better], obj[better], ii
        if ii < steps:
            xx = (xx + lr * np.asarray(grad(xx.astype(np.float32)), np.float64)) * (1 - decay)
            if blur_every and ii % blur_every == 0:
                xx = np.stack([[gaussian_filter(xx[n, ..., c], sigma) for c in range(3)]
                               for n in range(len(classes))]).transpose(0, 2, 3, 1)
    return best, best_ii


def test_returns_the_best_iterate_as_the_toolbox(tiny):
    pytest.importorskip("scipy.ndimage")
    # a large decay: every class's score peaks before the last step (best iterates 9, 7, 4 of 0..12)
    opts = dict(steps=12, step_size=3e3, l2_decay=0.2, blur_every=3, blur_sigma=1.0)
    start = class_patterns(tiny, CLASSES, steps=0, raw=True, progress=False)  # the (clipped) start images
    ref, best_ii = _toolbox_ascent(tiny, start, CLASSES, opts["steps"], opts["step_size"], opts["l2_decay"],
                                   opts["blur_every"], opts["blur_sigma"])
    assert (best_ii < opts["steps"]).all(), best_ii  # the best images are not the last ones: not vacuous
    ours = class_patterns(tiny, CLASSES, raw=True, progress=False, **opts)
    # float32 ascent vs a float64 reference with float32 gradients: measured 4e-6 on pixel values ~40
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_errors(tiny):
    with pytest.raises(jaxviz.JaxvizError, match="out of range"):
        class_patterns(tiny, [10], steps=1, progress=False)
    with pytest.raises(jaxviz.JaxvizError, match="32×32"):
        class_patterns(tiny, [1], size=64, steps=1, progress=False)
    notop = jaxviz.load("vgg_tiny", "random:0", include_top=False)
    with pytest.raises(jaxviz.JaxvizError, match="include_top=True"):
        class_patterns(notop, [1], steps=1, progress=False)


def test_class_title(tiny):
    assert D.class_title(tiny, 3) == "class 3"


# --- the demo network: its own defaults ------------------------------------------------------------------------


def test_defaults_come_from_the_model_profile():
    import dataclasses

    from jaxviz.optvis import transforms

    assert D.gaussian_blur is transforms.gaussian_blur  # DeepVis's blur is the shared one
    model = jaxviz.load("vgg_tiny", "random:0")
    assert dict(model.profile.deepvis) == D.DEFAULTS
    # No steps and no start noise in the profile: the class image is the mean image (0 in Caffe's space).
    model.profile = dataclasses.replace(model.profile, deepvis={**model.profile.deepvis, "steps": 0, "init_std": 0.0})
    np.testing.assert_array_equal(class_patterns(model, [1, 2], raw=True, progress=False), 0.0)


def test_defaults_per_architecture():
    profile = lambda name: dict(jaxviz.load(name, weights="random:0").profile.deepvis)  # noqa: E731
    assert profile("vgg_tiny") == D.DEFAULTS
    assert profile("vgg_demo") == D.DEMO_DEFAULTS == profile("vgg_demo_gap")
    assert D.DEFAULTS == dict(steps=1000, step_size=100.0, l2_decay=1e-4, blur_every=4, blur_sigma=1.0, jitter=0,
                              init_std=10.0)  # the paper's (Table 1, row 3): VGG16 unchanged


def _neighbour_correlation(img: np.ndarray) -> np.ndarray:
    """Per image ``[N, H, W, 3]``: correlation of each pixel with its right and lower neighbours (noise ≈ 0)."""
    u = img.astype(np.float64) - img.mean(axis=(1, 2, 3), keepdims=True)
    var = (u * u).mean(axis=(1, 2, 3))
    return ((u[:, :, :-1] * u[:, :, 1:]).mean(axis=(1, 2, 3)) + (u[:, :-1] * u[:, 1:]).mean(axis=(1, 2, 3))) / (2 * var)


def test_demo_class_images_show_structure_and_raise_their_class():
    from jaxviz.demo import CLASS_NAMES
    from jaxviz.images import BGR_MEAN

    model = jaxviz.load("vgg_demo")
    classes = [0, 4, 7]  # disc, ring, vertical stripes
    start = class_patterns(model, classes, steps=0, raw=True, progress=False)
    raw = class_patterns(model, classes, steps=60, raw=True, progress=False)  # 300 by default; 60 suffice here
    img = raw + np.asarray(BGR_MEAN)
    # Not flat: the paper's ImageNet defaults leave these images gray (std ≈ 8, the start noise decayed);
    # not noise either: the start (σ = 50 white noise) has neighbour correlation ≈ 0.
    assert np.all(img.reshape(3, -1).std(axis=1) > 25)
    assert np.all(_neighbour_correlation(img) > 0.4), _neighbour_correlation(img)
    before, after = _scores(model, start, classes), _scores(model, raw, classes)
    assert np.all(after > before + 100), (before, after)  # logits are O(100) on this model
    logits = np.asarray(model.features(raw, "logits")["logits"])
    assert logits.argmax(axis=1).tolist() == classes  # each image is its class, for the model
    assert [D.class_title(model, c) for c in classes] == [CLASS_NAMES[c] for c in classes]


def test_ascent_gets_the_precomputed_kernels(tiny):
    # The flipped (input-gradient, transposed dense) kernels are computed once per weights and passed to the
    # ascent, as in the attribution programs; the fast default stays within float32 rounding of the exact mode.
    import jax

    tiny._prepared_cache = None
    fast = class_patterns(tiny, CLASSES, steps=6, raw=True, progress=False)
    assert tiny._prepared_cache is not None and "fc1" in tiny._prepared_cache[1]
    with jax.default_matmul_precision("highest"):
        exact = class_patterns(tiny, CLASSES, steps=6, raw=True, progress=False)
    assert np.abs(fast - exact).max() < 1e-2 * np.abs(exact).max()


def test_gradient_ascent_runs_its_hooks_in_order():
    # DeepVis's loop is optvis.ascent's: per step clip (before), score and gradient, best-iterate snapshot,
    # step, then the periodic transform (after). Image 0's score is x, image 1's is -x; each step moves the
    # image by its gradient's sign, the clip holds it in [-3, 3], and every even step adds 100 after the step.
    import jax.numpy as jnp

    from jaxviz.optvis import ascent

    sign = jnp.asarray([1.0, -1.0]).reshape(2, 1, 1, 1)
    hooks = dict(before=lambda v: jnp.clip(v, -3.0, 3.0), after=ascent.every(2, lambda v: v + 100.0))
    score_and_grad = ascent.jittered(lambda v: ((v * sign).sum((1, 2, 3)), sign), keys=None, jitter=0)
    x0, best0 = jnp.zeros((2, 1, 1, 1)), (jnp.zeros((2, 1, 1, 1)), jnp.full((2,), -jnp.inf))
    x, (best, best_score) = ascent.gradient_ascent(score_and_grad, lambda v, g: v + g, x0, 0, 5, best=best0, **hooks)
    # image 0: 0 → 1+100 → (clip 3) 4 → 104 → 4 → 104; its best is the first clipped 3
    # image 1: 0 → -1+100 → (clip 3) 2 → 1+100 → 2 → 101; its best is the start (score 0)
    np.testing.assert_array_equal(np.ravel(x), [104.0, 101.0])
    np.testing.assert_array_equal(np.ravel(best), [3.0, 0.0])
    np.testing.assert_array_equal(best_score, [3.0, 0.0])
    untracked = ascent.gradient_ascent(score_and_grad, lambda v, g: v + g, x0, 0, 5, **hooks)
    np.testing.assert_array_equal(untracked, x)
