"""Grad-CAM: known answers on hand-set weights, an independent re-computation, batching, top-K, Keras parity."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz import ops, runtime
from jaxviz.attribution.gradcam import gradcam, gradcam_result
from jaxviz.frontends import vgg
from jaxviz.model import Model


def _tiny(scale_head: float = 0.05) -> Model:
    """vgg_tiny with a shrunken classifier so the softmax is not saturated on N(0, 20) inputs."""
    params = vgg.random_params("vgg_tiny", True, seed=0)
    params["predictions"] = {k: v * scale_head for k, v in params["predictions"].items()}
    return Model("vgg_tiny", params, True, "test")


@pytest.fixture(scope="module")
def tiny():
    return _tiny()


@pytest.fixture(scope="module")
def xs():
    return np.random.default_rng(1).normal(0, 20, (2, 32, 32, 3)).astype(np.float32)


def _tail(model, params, a, layer):
    """The network after ``layer``, rebuilt from the layer table: an independent split of the model."""
    rows = vgg.layer_table(model.arch, True)
    names = [r.name for r in rows]
    for r in rows[names.index(layer) + 1:]:
        p = params.get(r.name)
        if r.kind == "Conv2D":
            a = jax.nn.relu(ops.conv3x3(a, p["kernel"]) + p["bias"])
        elif r.kind == "MaxPooling2D":
            a = ops.max_pool2x2(a)
        elif r.kind == "Flatten":
            a = a.reshape(a.shape[0], -1)
        elif r.kind == "GlobalAveragePooling2D":
            a = a.mean(axis=(1, 2))
        elif r.kind == "Dense":
            a = a @ p["kernel"] + p["bias"]
            if r.name != "predictions":
                a = jax.nn.relu(a)
    return a  # logits


def _reference(model, x, layer, cls, score):
    """Listing 5.43 in numpy, with ∂score/∂A from jax.grad through the split network."""
    a = model.apply(model.params, jnp.asarray(x), upto=layer)[0]

    def s(a_):
        logits = _tail(model, model.params, a_, layer)
        y = logits if score == "logit" else jax.nn.softmax(logits, axis=-1)
        return jnp.sum(y[jnp.arange(len(cls)), jnp.asarray(cls)])

    g = np.asarray(jax.jit(jax.grad(s))(a), np.float64)
    a = np.asarray(a, np.float64)
    out = []
    for n in range(len(cls)):
        pooled = g[n].mean(axis=(0, 1))
        heat = np.maximum((a[n] * pooled).mean(axis=-1), 0)
        out.append(heat / heat.max() if heat.max() > 0 else heat)
    return np.stack(out)


def test_split_reproduces_the_forward(tiny, xs):
    layer = "block4_conv2"
    a = tiny.apply(tiny.params, jnp.asarray(xs), upto=layer)[0]
    logits = tiny.features(xs, "logits")["logits"]
    # same float32 ops in the same order: only reassociation-level differences
    np.testing.assert_allclose(_tail(tiny, tiny.params, a, layer), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer, score", [("block5_conv3", "prob"), ("block4_conv2", "logit"),
                                          ("block3_conv1", "prob")])
def test_matches_independent_recomputation(tiny, xs, layer, score):
    cls = [3, 7]
    ours = np.asarray(gradcam(tiny, xs, target=cls, layer=layer, score=score))
    ref = _reference(tiny, xs, layer, cls, score)
    assert ours.shape == ref.shape
    # maps are in [0, 1]; float32 forward/backward vs a float64 final reduction
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def _hand_set_model(v):
    """vgg_tiny whose classifier is hand-set: logit_c = Σ_k v[k, c] · max_{ij} A[i, j, k] (A = block5_conv3).

    fc1 and fc2 pass the 8 pooled channels through unchanged (identity blocks, zero bias; the inputs are
    post-ReLU, so their ReLUs are identities too).
    """
    params = vgg.random_params("vgg_tiny", True, seed=3)
    params["fc1"] = {"kernel": np.eye(8, 16, dtype=np.float32), "bias": np.zeros(16, np.float32)}
    params["fc2"] = {"kernel": np.eye(16, 12, dtype=np.float32), "bias": np.zeros(12, np.float32)}
    k = np.zeros((12, 10), np.float32)
    k[:8] = v
    params["predictions"] = {"kernel": k, "bias": np.zeros(10, np.float32)}
    return Model("vgg_tiny", params, True, "hand-set")


def test_known_answer_on_hand_set_head(xs):
    # At 32 px block5_conv3 is 2×2×8 and block5_pool takes its max: ∂logit_c/∂A[i,j,k] = v[k, c] at the
    # window's maximum (first in row-major order), 0 elsewhere, so α_k = v[k, c] / 4 and the map is
    # ReLU(mean_k α_k A[:, :, k]) / max.
    v = np.random.default_rng(0).normal(size=(8, 10)).astype(np.float32)
    model = _hand_set_model(v)
    # (A dead channel, all zeros, still has α_k = v[k, c] / 4, the gradient going to its window's first
    # element, but adds nothing to the map since A_k = 0.)
    a = np.asarray(model.features(xs, "block5_conv3")["block5_conv3"], np.float64)  # [2, 2, 2, 8]
    for c in (0, 4):
        expected = []
        for n in range(2):
            heat = np.maximum((a[n] * (v[:, c] / 4)).mean(axis=-1), 0)
            expected.append(heat / heat.max() if heat.max() > 0 else heat)
        ours = np.asarray(gradcam(model, xs, target=c, score="logit"))
        np.testing.assert_allclose(ours, np.stack(expected), atol=1e-6)  # a few float32 ops away


def test_all_zero_map_stays_zero_not_nan(xs):
    # negative weights on every channel: α < 0 and A >= 0, so the weighted map is <= 0 and ReLU zeroes it
    v = -np.abs(np.random.default_rng(0).normal(size=(8, 10))).astype(np.float32)
    out = np.asarray(gradcam(_hand_set_model(v), xs, target=2, score="logit"))
    assert not np.isnan(out).any() and np.all(out == 0)


def test_per_image_pooling_matches_running_alone(tiny, xs):
    both = np.asarray(gradcam(tiny, xs))
    alone = np.concatenate([np.asarray(gradcam(tiny, xs[i:i + 1])) for i in range(2)])
    np.testing.assert_allclose(both, alone, atol=1e-6)  # batching changes nothing but float scheduling
    assert np.abs(both[0] - both[1]).max() > 1e-2  # two different images get two different maps


def test_top_k_ordering_and_consistency(tiny, xs):
    maps, classes = gradcam(tiny, xs, top=5)
    maps, classes = np.asarray(maps), np.asarray(classes)
    probs = tiny.predict(xs)
    assert maps.shape == (2, 5, 2, 2) and classes.shape == (2, 5)
    np.testing.assert_array_equal(classes, np.argsort(-probs, axis=1)[:, :5])
    for j in range(5):
        np.testing.assert_allclose(maps[:, j], np.asarray(gradcam(tiny, xs, target=list(classes[:, j]))),
                                   atol=1e-6)
    default = np.asarray(gradcam(tiny, xs))  # target None = the top class
    np.testing.assert_allclose(default, maps[:, 0], atol=1e-6)
    res = gradcam_result(tiny, xs, top=3)
    np.testing.assert_allclose(np.asarray(res.probs), probs, rtol=1e-5, atol=1e-7)


def test_logit_and_prob_scores_differ(tiny, xs):
    layer = "block4_conv3"
    p = np.asarray(gradcam(tiny, xs, target=5, layer=layer, score="prob"))
    lg = np.asarray(gradcam(tiny, xs, target=5, layer=layer, score="logit"))
    assert np.abs(p - lg).max() > 1e-2


def test_class_index_alias_and_int_target(tiny, xs):
    a = np.asarray(gradcam(tiny, xs, class_index=4))
    b = np.asarray(gradcam(tiny, xs, target=[4, 4]))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(jaxviz.JaxvizError, match="not both"):
        gradcam(tiny, xs, target=4, class_index=4)


def test_no_recompile_on_second_call(tiny, xs):
    gradcam(tiny, xs, target=1, layer="block5_conv2")
    before = runtime.trace_counts["gradcam_book"]
    gradcam(tiny, xs[::-1].copy(), target=2, layer="block5_conv2")  # new values and class, same shapes
    gradcam(tiny, xs, target=[0, 9], layer="block5_conv2")
    assert runtime.trace_counts["gradcam_book"] == before


@pytest.mark.parametrize("kwargs, needle", [
    (dict(layer="fc1"), "conv layer"),
    (dict(layer="nope"), "valid layers"),
    (dict(target=10), "out of range"),
    (dict(target=[1, 2, 3]), "3 targets for 2 images"),
    (dict(top=11), "top must be"),
    (dict(top=2, target=1), "not both"),
    (dict(score="softmax"), "unknown score"),
])
def test_errors(tiny, xs, kwargs, needle):
    with pytest.raises(jaxviz.JaxvizError, match=needle):
        gradcam(tiny, xs, **kwargs)


def test_needs_the_classifier():
    model = jaxviz.load("vgg_tiny", "random:0", include_top=False)
    with pytest.raises(jaxviz.JaxvizError, match="include_top=True"):
        gradcam(model, np.zeros((1, 32, 32, 3), np.float32))


# --- parity with Keras (listings 5.42–5.43) on full-size VGG16 ------------------------------------------------


@pytest.fixture(scope="module")
def vgg16_case():
    os.environ.setdefault("KERAS_BACKEND", "jax")  # as jaxviz.keras_compare does: no TensorFlow needed
    pytest.importorskip("keras")
    from jaxviz.images import load_image, preprocess_input, sample_image_path

    x = preprocess_input(load_image(sample_image_path("chelsea"))[None])
    params = vgg.random_params("vgg16", True, seed=0)
    # exact ops: Keras parity's mode, and no prepared fast-mode kernels (a transposed copy of fc1: +0.4 GB)
    model = Model("vgg16", params, True, "random:0", ops="exact")
    logits = np.asarray(model.features(x, "logits")["logits"])
    # scale the classifier so the softmax is not saturated (top probability well below 1)
    f = np.float32(2.0 / logits.std())
    params["predictions"] = {k: v * f for k, v in params["predictions"].items()}
    model = Model("vgg16", params, True, "random:0 scaled", ops="exact")
    return model, x


def _keras_listing(kmodel, keras, x, cls, layer="block5_conv3"):
    """DLwP listings 5.42–5.43 with Keras 3 (JAX backend): ∂output[:, c]/∂(conv output), pooled, weighted."""
    names = [lyr.name for lyr in kmodel.layers]
    conv_model = keras.Model(kmodel.input, kmodel.get_layer(layer).output)
    inp = keras.Input(kmodel.get_layer(layer).output.shape[1:])
    y = inp
    for name in names[names.index(layer) + 1:]:
        y = kmodel.get_layer(name)(y)
    classifier = keras.Model(inp, y)
    conv_out = conv_model(x)
    grads = jax.grad(lambda a: classifier(a)[0, cls])(conv_out)  # K.gradients(model.output[:, c], A)
    pooled_grads = np.asarray(jnp.mean(grads, axis=(0, 1, 2)))  # one image: the book's batch mean is harmless
    conv_layer_output_value = np.array(conv_out[0])
    for i in range(pooled_grads.shape[0]):
        conv_layer_output_value[:, :, i] *= pooled_grads[i]
    heatmap = np.mean(conv_layer_output_value, axis=-1)
    heatmap = np.maximum(heatmap, 0)
    heatmap /= np.max(heatmap)
    return heatmap, np.asarray(classifier(conv_out))


@pytest.mark.slow
def test_keras_parity_vgg16(vgg16_case):
    from jaxviz.keras_compare import import_keras, keras_model

    keras = import_keras()
    model, x = vgg16_case
    with jax.default_matmul_precision("highest"):
        probs = model.predict(x)
        cls = int(np.argmax(probs[0]))
        assert probs[0, cls] < 0.9  # not saturated: the prob-score gradient is informative
        ours = np.asarray(gradcam(model, x, target=cls))[0]
        kmodel = keras_model(model)
        ref, kprobs = _keras_listing(kmodel, keras, x, cls)
    np.testing.assert_allclose(kprobs, probs, rtol=1e-4, atol=1e-6)
    err = np.abs(ours - ref).max()
    print(f"Grad-CAM vs Keras listing 5.43: max |Δ| = {err:.2e} (maps scaled to max 1)")
    assert err < 1e-4  # relative: both maps are divided by their max (= 1)
