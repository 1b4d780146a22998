"""The demo scenes and the shipped demo networks: attribution checked against known answers.

The scenes carry each object's mask, so "does the map point at the object?" has a ground truth here. The
checks that need jaxviz's attribution methods or metrics skip (with the reason) until those are importable;
the same properties are also checked now with small self-contained reference computations (a Grad-CAM by
``jax.grad`` through ``Model.apply``, vanilla-gradient saliency, integrated gradients, deletion/insertion),
so the trained model's ground-truth behaviour is tested regardless.
"""

from __future__ import annotations

import importlib
import itertools
import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz import demo
from jaxviz.demo import CLASS_NAMES, NUM_CLASSES, make_scenes, object_regions
from jaxviz.errors import JaxvizError
from jaxviz.frontends import vgg
from jaxviz.model import Model

TEST_SEED = 20_000  # fresh scenes: training used seeds (0, step), its held-out check seed 10_000
DILATE = 3  # pointing-game tolerance in pixels (Zhang et al. 2016 use 15 px at 224 px ≈ 4 px at 64)


def _preprocess(images):
    from jaxviz.images import preprocess_input

    return preprocess_input(images)


def _dilate(masks: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation of ``[N, H, W]`` masks by a disc of radius ``r`` (numpy only)."""
    n, h, w = masks.shape
    padded = np.pad(masks, ((0, 0), (r, r), (r, r)))
    out = np.zeros_like(masks)
    for dy, dx in itertools.product(range(-r, r + 1), repeat=2):
        if dy * dy + dx * dx <= r * r:
            out |= padded[:, r + dy: r + dy + h, r + dx: r + dx + w]
    return out


def _upsample(maps, size):
    maps = jnp.asarray(maps, jnp.float32)
    return np.asarray(jax.image.resize(maps, (maps.shape[0], size, size), "bilinear"))


def _pointing_hits(maps: np.ndarray, masks: np.ndarray, r: int = DILATE) -> np.ndarray:
    """Per image: is the map's peak (maps upsampled to the mask size) inside the mask dilated by ``r`` px?"""
    maps = _upsample(maps, masks.shape[-1]) if maps.shape[-1] != masks.shape[-1] else np.asarray(maps)
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    return _dilate(masks, r).reshape(len(masks), -1)[np.arange(len(masks)), flat]


# ---------------------------------------------------------------------------------------------------------
# Scenes


def test_scenes_are_deterministic_per_seed():
    a = make_scenes(30, seed=7)
    b = make_scenes(30, seed=7)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    c = make_scenes(30, seed=8)
    assert not np.array_equal(a[0], c[0])
    d, e = make_scenes(12, seed=(7, 1)), make_scenes(12, seed=(7, 2))  # per-step training seeds
    assert not np.array_equal(d[0], e[0])


def test_scenes_shapes_dtypes_and_balance():
    images, labels, masks = make_scenes(205, size=48, seed=1)
    assert images.shape == (205, 48, 48, 3) and images.dtype == np.uint8
    assert labels.shape == (205,) and np.issubdtype(labels.dtype, np.integer)
    assert masks.shape == (205, 48, 48) and masks.dtype == bool
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    assert counts.min() == 20 and counts.max() == 21  # exactly balanced: n // 10 or n // 10 + 1 each
    assert len(CLASS_NAMES) == NUM_CLASSES == 10
    assert len(set(labels[:30].tolist())) > 5  # shuffled, not in class order


def test_masks_cover_the_object():
    images, labels, masks = make_scenes(200, seed=2)
    area = masks.mean(axis=(1, 2))
    assert area.min() > 0.02 and area.max() < 0.5  # an object of 10–20 px radius in 64×64
    # The object is fully inside the frame (placed with a margin), so the border never belongs to it.
    assert not masks[:, 0].any() and not masks[:, -1].any() and not masks[:, :, 0].any() and not masks[:, :, -1].any()
    img = images.astype(np.float32)
    inside = np.stack([img[i][masks[i]].mean(0) for i in range(200)])
    ring = _dilate(masks, 3) & ~masks
    around = np.stack([img[i][ring[i]].mean(0) for i in range(200)])
    # Colours are chosen to contrast with the background: the mask marks pixels that look different from
    # their surroundings (distractors and noise keep this from being exact; 40 of 441 is a loose floor).
    assert np.median(np.linalg.norm(inside - around, axis=1)) > 40
    # Solid shapes are one colour + pixel noise (σ ≤ 12) inside the mask: the mask has no background in it.
    solid = labels < len(demo.scenes.SHAPES)
    spread = np.array([img[i][masks[i]].std(0).max() for i in np.flatnonzero(solid)])
    assert np.percentile(spread, 90) < 16


# ---------------------------------------------------------------------------------------------------------
# Shipped weights


@pytest.mark.parametrize("name", ["vgg_demo", "vgg_demo_gap"])
def test_shipped_weights_load_with_right_shapes_and_checksum(name):
    path = demo.demo_weights_path(name)
    assert path.stat().st_size < 2 * 2**20
    recorded = demo.shipped_sha256(name)
    assert recorded is not None, "weights/demo/SHA256SUMS has no entry for " + name
    assert demo.file_sha256(path) == recorded
    repo_copy = demo._REPO_WEIGHTS / f"{name}.npz"
    pkg_copy = demo._PACKAGE_DATA / f"{name}.npz"
    for p in (repo_copy, pkg_copy):
        assert p.is_file() and demo.file_sha256(p) == recorded, f"{p} differs from SHA256SUMS"
    params = demo.load_demo_params(name)
    expected = vgg.weighted_layers(name)
    assert set(params) == set(expected)
    for layer, (kshape, bshape) in expected.items():
        assert params[layer]["kernel"].shape == kshape and params[layer]["bias"].shape == bshape
        assert params[layer]["kernel"].dtype == np.float32
        assert np.isfinite(params[layer]["kernel"]).all()
    with zipfile.ZipFile(path) as z:  # pickle-free: every entry is a plain .npy
        assert all(n.endswith(".npy") for n in z.namelist())
    meta = json.loads(bytes(np.load(path, allow_pickle=False)["__jaxviz_meta__"]).decode())
    assert meta["arch"] == name and meta["seed"] == 0 and meta["heldout_accuracy"] >= 0.95
    no_top = demo.load_demo_params(name, include_top=False)
    assert set(no_top) == set(vgg.weighted_layers(name, include_top=False))


def test_the_vgg_table_rows_name_the_scenes_classes():
    # The rows live in jaxviz/frontends/vgg.py (the table is complete without registration); their classes
    # are the scenes'.
    for arch in (demo.VGG_DEMO, demo.VGG_DEMO_GAP):
        assert arch.class_names == CLASS_NAMES and arch.num_classes == NUM_CLASSES
        assert vgg.ARCHS[arch.name] is arch and arch.profile == "demo"
    assert demo.demo_image_path().is_file() and demo.demo_image_path() == vgg.front_end("vgg_demo").profile.image


def test_demo_weights_path_rejects_other_archs():
    with pytest.raises(JaxvizError, match="not a demo architecture"):
        demo.demo_weights_path("vgg16")


def test_jaxviz_load_finds_the_shipped_weights():
    ref = demo.load_demo_params("vgg_demo")
    for spec in ("imagenet", "demo"):
        model = jaxviz.load("vgg_demo", weights=spec)
        assert model.source.startswith("demo:")
        np.testing.assert_array_equal(np.asarray(model.params["fc1"]["kernel"]), ref["fc1"]["kernel"])
    # None stays what it means for every arch: deterministic random weights, not the trained ones.
    assert not np.array_equal(np.asarray(jaxviz.load("vgg_demo", weights=None).params["fc1"]["kernel"]),
                              ref["fc1"]["kernel"])


# ---------------------------------------------------------------------------------------------------------
# The trained models

N_POINT = 200  # scenes for the pointing game
N_AUC = 24  # scenes for deletion/insertion (17 curve points × 2 curves × 3 methods forward passes each)
AUC_STEPS = 16


@pytest.fixture(scope="module")
def flat_model():
    return Model("vgg_demo", demo.load_demo_params("vgg_demo"), source="shipped")


@pytest.fixture(scope="module")
def gap_model():
    return Model("vgg_demo_gap", demo.load_demo_params("vgg_demo_gap"), source="shipped")


@pytest.fixture(scope="module")
def scenes():
    images, labels, masks = make_scenes(500, seed=TEST_SEED)
    return _preprocess(images), labels, masks, object_regions(masks)


def test_heldout_accuracy(flat_model, gap_model, scenes):
    x, labels, _, _ = scenes
    for model in (flat_model, gap_model):
        acc = np.mean(model.predict(x, batch_size=250).argmax(-1) == labels)
        assert acc >= 0.95, f"{model.arch.name}: {acc:.3f} on 500 fresh scenes"


def _reference_gradcam(model, params, x, target, layer="block4_conv2"):
    """Grad-CAM (Selvaraju et al. 2017) straight from ``jax.grad`` through ``Model.apply``: the class logit's
    gradient w.r.t. the layer's output, read by adding a zero ``delta`` to that ReLU's output."""
    index = model.conv_layer_names.index(layer)
    a_shape = jax.eval_shape(lambda p, v: model.apply(p, v, upto=layer)[0], params, x)

    def score(delta):
        calls = itertools.count()

        def act(z):
            y = jax.nn.relu(z)
            return y + delta if next(calls) == index else y

        logits, taps = model.apply(params, x, upto="logits", taps=(layer,), relu=act)
        return jnp.take_along_axis(logits, target[:, None], axis=1).sum(), taps[layer]

    grads, a = jax.grad(score, has_aux=True)(jnp.zeros(a_shape.shape, a_shape.dtype))
    return jax.nn.relu(jnp.einsum("nhwc,nc->nhw", a, grads.mean(axis=(1, 2))))


_reference_gradcam_jit = jax.jit(_reference_gradcam, static_argnums=(0,), static_argnames=("layer",))


@pytest.fixture(scope="module")
def ref_gradcam(flat_model, scenes):
    x, labels, _, _ = scenes
    return np.asarray(_reference_gradcam_jit(flat_model, flat_model.params, jnp.asarray(x[:N_POINT]),
                                             jnp.asarray(labels[:N_POINT])))


def test_gradcam_pointing_game_reference(scenes, ref_gradcam):
    _, labels, masks, regions = scenes
    assert ref_gradcam.shape == (N_POINT, 8, 8)
    hits = _pointing_hits(ref_gradcam, regions[:N_POINT])
    assert hits.mean() >= 0.90, f"Grad-CAM pointing game {hits.mean():.3f}"
    # Against the bare masks the ring's hole counts as a miss; still most peaks are on object pixels.
    assert _pointing_hits(ref_gradcam, masks[:N_POINT]).mean() >= 0.80


def test_cam_is_exact_and_points_at_the_object(gap_model, scenes):
    x, labels, _, regions = scenes
    x, labels, regions = x[:N_POINT], labels[:N_POINT], regions[:N_POINT]
    maps = demo.cam(gap_model, x, labels)
    assert maps.shape == (N_POINT, 4, 4)
    logits = gap_model.apply(gap_model.params, jnp.asarray(x), upto="logits")[0]
    expect = np.take_along_axis(np.asarray(logits), labels[:, None], 1)[:, 0]
    got = np.asarray(maps.mean(axis=(1, 2))) + np.asarray(gap_model.params["predictions"]["bias"])[labels]
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-3)  # float32 sums of 16×64 terms
    hits = _pointing_hits(np.asarray(maps), regions)
    assert hits.mean() >= 0.85, f"CAM pointing game {hits.mean():.3f} (4×4 maps)"
    with pytest.raises(JaxvizError, match="global-average-pooling"):
        demo.cam(Model("vgg_demo", demo.load_demo_params("vgg_demo")), x[:1])


# --- self-contained saliency / integrated gradients / deletion-insertion ---------------------------------


def _logit_grad(model, params, x, target):
    def f(v):
        logits, _ = model.apply(params, v, upto="logits")
        return jnp.take_along_axis(logits, target[:, None], axis=1).sum()

    return jax.grad(f)(x)


_logit_grad_jit = jax.jit(_logit_grad, static_argnums=(0,))


def _reference_saliency_and_ig(model, x, target, steps=8):
    """Vanilla-gradient saliency (Simonyan et al. 2014: max over channels of |∂ logit / ∂ x|) and integrated
    gradients (Sundararajan et al. 2017: zero = mean-colour baseline, midpoint rule, summed over channels),
    from one batched gradient call."""
    n = len(x)
    alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps
    batch = np.concatenate([x, (alphas[:, None, None, None, None] * x[None]).reshape(-1, *x.shape[1:])])
    g = np.asarray(_logit_grad_jit(model, model.params, jnp.asarray(batch), jnp.asarray(np.tile(target, steps + 1))))
    saliency = np.abs(g[:n]).max(-1)
    ig = (x * g[n:].reshape(steps, *x.shape).mean(0)).sum(-1)
    return saliency, ig


def _deletion_insertion(model, x, target, maps, steps=AUC_STEPS):
    """Petsiuk et al. 2018 (RISE): area under the target probability while removing (deletion: to 0, the mean
    colour) or adding (insertion: onto the image's mean colour) pixels in decreasing map order."""
    n, h, w, _ = x.shape
    maps = _upsample(maps, h) if maps.shape[-1] != w else np.asarray(maps)
    order = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(h * w)[None], axis=1)
    shown = rank.reshape(n, h, w)[None] < np.linspace(0, h * w, steps + 1)[:, None, None, None]
    flat = np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
    dele = np.where(shown[..., None], 0.0, x[None]).reshape(-1, h, w, 3)
    ins = np.where(shown[..., None], x[None], flat[None]).reshape(-1, h, w, 3)
    probs = model.predict(np.concatenate([dele, ins]), batch_size=512)
    p = probs[np.arange(len(probs)), np.tile(target, 2 * (steps + 1))].reshape(2, steps + 1, n)
    auc = (p[:, 1:] + p[:, :-1]).mean(axis=1) / 2  # trapezoid on [0, 1]
    return auc[0], auc[1]


@pytest.fixture(scope="module")
def ref_maps(flat_model, scenes, ref_gradcam):
    x, labels, _, _ = scenes
    saliency, ig = _reference_saliency_and_ig(flat_model, x[:N_AUC], labels[:N_AUC])
    return {"gradcam": ref_gradcam[:N_AUC], "saliency": saliency, "integrated_gradients": ig}


@pytest.mark.parametrize("method", ["gradcam", "saliency", "integrated_gradients"])
def test_insertion_beats_deletion_reference(flat_model, scenes, ref_maps, method):
    x, labels, _, _ = scenes
    deletion, insertion = _deletion_insertion(flat_model, x[:N_AUC], labels[:N_AUC], ref_maps[method])
    # A map that finds the object: inserting its top pixels restores the class, deleting them destroys it.
    assert insertion.mean() > deletion.mean() + 0.2, \
        f"{method}: insertion {insertion.mean():.3f} deletion {deletion.mean():.3f}"


def _kernel_shares(kernel: np.ndarray) -> tuple[float, float]:
    """For ``[3, 3, C, F]`` kernels: the share of energy in each 3×3 slice's spatial mean (its response to a
    uniform colour; median over filters), and in its constant + linear-ramp part (smooth; mean over
    filters). For i.i.d. noise both are expected to be 1/9 and 3/9."""
    s = np.asarray(kernel, np.float64).reshape(9, -1, kernel.shape[-1])  # [9, C, F]
    yy, xx = np.mgrid[-1:2, -1:2].reshape(2, 9)
    basis, _ = np.linalg.qr(np.stack([np.ones(9), yy, xx], 1))  # [9, 3] orthonormal
    energy = np.square(s).sum((0, 1))
    flat = np.square(s.sum(0)).sum(0) / 9 / energy
    smooth = np.square(np.einsum("kb,kcf->bcf", basis, s)).sum((0, 1)) / energy
    return float(np.median(flat)), float(smooth.mean())


def test_block1_filters_are_learned_not_noise(flat_model):
    """Colours in the scenes are random, so the first layer learns colour-contrast edge detectors: kernels that
    are smooth (mostly constant + ramp) yet sum to ~0 over space in each colour (blind to flat colour), unlike
    random kernels. Thresholds are far outside the spread of 200 random initialisations (see the report)."""
    flat, smooth = _kernel_shares(flat_model.params["block1_conv1"]["kernel"])
    noise = np.array([_kernel_shares(vgg.random_params("vgg_demo", seed=s)["block1_conv1"]["kernel"])
                      for s in range(50)])
    print(f"block1: flat share {flat:.3f} (noise {noise[:, 0].mean():.3f}), smooth share {smooth:.3f} "
          f"(noise {noise[:, 1].mean():.3f})")
    assert flat < noise[:, 0].min(), f"flat share {flat:.3f}"
    assert smooth > noise[:, 1].max(), f"smooth share {smooth:.3f}"


def test_model_randomisation_changes_the_maps(flat_model, scenes, ref_gradcam):
    """Adebayo et al. 2018: re-initialising the top layers must change an explanation that depends on them."""
    x, labels, _, _ = scenes
    rand = vgg.random_params("vgg_demo", seed=123)
    params = dict(flat_model.params)
    for layer in ("predictions", "fc2", "fc1", "block4_conv2"):
        params[layer] = jax.tree_util.tree_map(jnp.asarray, rand[layer])
    maps = np.asarray(_reference_gradcam_jit(flat_model, params, jnp.asarray(x[:N_POINT]),
                                             jnp.asarray(labels[:N_POINT])))
    a, b = ref_gradcam.reshape(N_POINT, -1), maps.reshape(N_POINT, -1)
    corr = [np.corrcoef(u, v)[0, 1] if u.std() > 0 and v.std() > 0 else 0.0 for u, v in zip(a, b)]
    assert np.mean(corr) < 0.5, f"mean correlation {np.mean(corr):.2f}"


# ---------------------------------------------------------------------------------------------------------
# jaxviz's own methods and metrics (written elsewhere): skip until importable


def _method(name):
    """``jaxviz.attribution.<name>`` as a function (module ``jaxviz/attribution/<name>.py`` or re-export)."""
    try:
        pkg = importlib.import_module("jaxviz.attribution")
    except ImportError as e:
        pytest.skip(f"jaxviz.attribution not importable: {e}")
    fn = getattr(pkg, name, None)
    if callable(fn):
        return fn
    try:
        fn = getattr(importlib.import_module(f"jaxviz.attribution.{name}"), name, None)
    except ImportError as e:
        pytest.skip(f"jaxviz.attribution.{name} not importable: {e}")
    if not callable(fn):
        pytest.skip(f"jaxviz.attribution.{name} has no function {name} yet")
    return fn


def _metric(name):
    try:
        mod = importlib.import_module("jaxviz.metrics")
    except ImportError as e:
        pytest.skip(f"jaxviz.metrics not importable: {e}")
    fn = getattr(mod, name, None)
    if not callable(fn):
        pytest.skip(f"jaxviz.metrics has no {name} yet")
    return fn


def test_library_gradcam_pointing_game(flat_model, scenes, ref_gradcam):
    gradcam = _method("gradcam")
    x, labels, _, regions = scenes
    maps = np.asarray(gradcam(flat_model, x[:N_POINT], target=labels[:N_POINT], layer="block4_conv2",
                              score="logit"))
    assert maps.shape == (N_POINT, 8, 8)
    ref = ref_gradcam / np.maximum(ref_gradcam.max(axis=(1, 2), keepdims=True), 1e-30)
    # Both are ReLU(Σ_k α_k A_k) up to a positive per-image scale; the library's is scaled to [0, 1].
    np.testing.assert_allclose(maps, ref, atol=1e-4)
    pointing_game = _metric("pointing_game")
    hits = pointing_game(maps, regions[:N_POINT], tolerance=DILATE, size=(64, 64))
    assert hits.mean() >= 0.90, f"pointing game {hits.mean():.3f}"


@pytest.mark.parametrize("method", ["gradcam", "saliency", "integrated_gradients"])
def test_library_insertion_beats_deletion(flat_model, scenes, method):
    fn = _method(method)
    deletion, insertion = _metric("deletion"), _metric("insertion")
    x, labels, _, _ = scenes
    x, t = x[:N_AUC], labels[:N_AUC]
    kwargs = {"steps": 8} if method == "integrated_gradients" else {}
    maps = np.asarray(fn(flat_model, x, target=t, **kwargs))
    d = deletion(flat_model, x, maps, target=t, steps=AUC_STEPS).auc.mean()
    i = insertion(flat_model, x, maps, target=t, steps=AUC_STEPS).auc.mean()
    assert i > d + 0.2, f"{method}: insertion {i:.3f} deletion {d:.3f}"


def test_library_randomisation_changes_gradcam(flat_model, scenes):
    model_randomisation = _metric("model_randomisation")
    x, labels, _, _ = scenes
    res = model_randomisation(flat_model, x[:N_AUC], "gradcam", labels[:N_AUC],
                              layers=["predictions", "fc2", "fc1", "block4_conv2"], checkpoints=["block4_conv2"])
    # A map that randomisation makes all-zero has no ranking (Spearman NaN): leave it out of the mean.
    assert np.nanmean(res.spearman[-1]) < 0.5, f"Spearman after randomising to block4_conv2: {res.spearman[-1]}"


# ---------------------------------------------------------------------------------------------------------
# The bundled demo scene (the default image of the demo's figure set)


def test_demo_image_is_the_documented_scene_and_is_classified(flat_model, gap_model):
    from PIL import Image

    from jaxviz.visualize.deepvis import class_title

    path = demo.demo_image_path()
    assert path.is_file() and path.suffix == ".png" and path.stat().st_size < 20_000
    shipped = np.asarray(Image.open(path).convert("RGB"))
    image, label, mask = demo.demo_image()  # regenerated from DEMO_IMAGE's seed: the PNG is that scene
    np.testing.assert_array_equal(shipped, image)
    assert CLASS_NAMES[label] == demo.DEMO_IMAGE["label"] == "star"
    assert 0.05 < mask.mean() < 0.3  # a clearly visible object, not the whole frame
    x = _preprocess(shipped[None].astype(np.float32))
    for model in (flat_model, gap_model):
        p = model.predict(x)[0]
        assert p.argmax() == label and p[label] > 0.99, (model.arch.name, p)
        assert class_title(model, label) == "star"
