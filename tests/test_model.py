"""The VGG module, the layer table and the model object, on tiny VGG-shaped models."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxviz
from jaxviz import ops
from jaxviz.frontends import vgg
from jaxviz.model import format_summary

KERAS_VGG16_LAYERS = [
    "input_layer",
    "block1_conv1", "block1_conv2", "block1_pool",
    "block2_conv1", "block2_conv2", "block2_pool",
    "block3_conv1", "block3_conv2", "block3_conv3", "block3_pool",
    "block4_conv1", "block4_conv2", "block4_conv3", "block4_pool",
    "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool",
    "flatten", "fc1", "fc2", "predictions",
]


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(1).normal(0, 30, size=(3, 32, 32, 3)).astype(np.float32)


def test_layer_names_and_param_totals_match_keras():
    assert vgg.layer_table("vgg16")[0].name == "input_layer"
    assert [r.name for r in vgg.layer_table("vgg16")] == KERAS_VGG16_LAYERS
    assert sum(r.params for r in vgg.layer_table("vgg16")) == 138_357_544
    assert sum(r.params for r in vgg.layer_table("vgg19")) == 143_667_240
    assert len(vgg.layer_table("vgg19")) == 26
    assert sum(r.params for r in vgg.layer_table("vgg16", include_top=False)) == 14_714_688


def test_summary_prints_keras_table():
    text = format_summary("vgg19")
    assert "Total params: 143,667,240" in text
    assert "fc1 (Dense)" in text and "(None, 25088)" in text and "102,764,544" in text
    assert "block5_pool (MaxPooling2D)  (None, 7, 7, 512)" in text
    no_top = format_summary("vgg16", include_top=False)
    assert "(None, None, None, 512)" in no_top and "fc1" not in no_top


def test_random_weights_are_deterministic_and_he_scaled():
    a = vgg.random_params("vgg_tiny", seed=3)
    b = vgg.random_params("vgg_tiny", seed=3)
    c = vgg.random_params("vgg_tiny", seed=4)
    assert all(np.array_equal(a[k]["kernel"], b[k]["kernel"]) for k in a)
    assert not np.array_equal(a["block1_conv1"]["kernel"], c["block1_conv1"]["kernel"])
    big = vgg.random_params("vgg16", include_top=False, seed=0)["block5_conv1"]["kernel"]
    # He-normal: std = sqrt(2 / fan_in), fan_in = 3·3·512; 2.4 M samples pin it to well under 1 %.
    assert big.std() == pytest.approx(np.sqrt(2 / (9 * 512)), rel=0.01)


def test_params_are_keyed_by_keras_names_with_keras_shapes(tiny):
    assert set(tiny.params) == {n for n in tiny.layer_names if "conv" in n or n.startswith(("fc", "pred"))}
    assert tiny.params["block1_conv1"]["kernel"].shape == (3, 3, 3, 4)  # HWIO
    assert tiny.params["fc1"]["kernel"].shape == (1 * 1 * 8, 16)  # [in, out]
    assert tiny.count_params == sum(r.params for r in vgg.layer_table("vgg_tiny"))


def test_features_from_one_truncated_pass_equal_the_full_pass(tiny, batch):
    got = tiny.features(batch, ["block2_pool", "block1_conv1"])
    _, full = tiny.apply(tiny.params, jnp.asarray(batch), taps=("block1_conv1", "block2_pool"))
    assert set(got) == {"block1_conv1", "block2_pool"}
    for name in got:
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(full[name]))
    assert got["block2_pool"].shape == (3, 8, 8, 6)


def test_truncated_pass_computes_nothing_after_the_deepest_layer(tiny, batch):
    def convs(upto):
        jaxpr = jax.make_jaxpr(lambda p, x: tiny.apply(p, x, upto=upto, taps=(upto,)))(tiny.params, batch)
        return str(jaxpr).count("conv_general_dilated")

    assert convs("block1_conv1") == 1
    assert convs("block2_conv2") == 4
    assert convs("block5_pool") == 13


def test_flatten_is_in_hwc_order_as_keras(tiny):
    x = np.random.default_rng(2).normal(0, 30, size=(1, 64, 64, 3)).astype(np.float32)
    big = jaxviz.Model("vgg_tiny", tiny.params, include_top=False)
    pooled = np.asarray(big.features(x, "block5_pool")["block5_pool"])  # [1, 2, 2, 8]
    # Keras's Flatten on channels-last data: index = (h·W + w)·C + c.
    manual = np.array([pooled[0, h, w, c] for h in range(2) for w in range(2) for c in range(8)])
    np.testing.assert_array_equal(pooled.reshape(1, -1)[0], manual)


def test_predict_gives_probabilities_independent_of_batch_size(tiny, batch):
    p = tiny.predict(batch)
    assert p.shape == (3, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(tiny.predict(batch, batch_size=2), p, rtol=1e-6, atol=1e-7)
    logits = tiny.features(batch, "logits")["logits"]
    np.testing.assert_allclose(jax.nn.softmax(logits), p, rtol=1e-5, atol=1e-7)


def test_no_recompile_on_second_call_with_same_shapes(tiny, batch, caplog):
    tiny.features(batch, ["block3_conv1"])
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        caplog.clear()
        tiny.features(batch, ["block3_conv1"])
        tiny.features(batch + 1, ("block3_conv1",))
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        tiny.features(batch[:2], ["block3_conv1"])  # a new shape must compile: the check can fail
    assert [r for r in caplog.records if "Compiling" in r.getMessage()]


def test_unknown_layer_lists_the_valid_ones(tiny, batch):
    with pytest.raises(jaxviz.LayerError, match="block5_conv4.*valid layers: input_layer, block1_conv1"):
        tiny.features(batch, ["block5_conv3", "block5_conv4"])


@pytest.mark.parametrize(
    "shape, message",
    [((32, 32, 3), "batch of images"), ((1, 32, 32, 1), "batch of images"), ((1, 16, 16, 3), "at least 32"),
     ((1, 48, 48, 3), "include_top=False")],
)
def test_bad_input_shapes_fail_clearly(tiny, shape, message):
    with pytest.raises(jaxviz.JaxvizError, match=message):
        tiny.predict(np.zeros(shape, np.float32))


def test_without_top_any_size_from_32_works():
    m = jaxviz.load("vgg_tiny", "random:0", include_top=False)
    for side in (32, 37, 50):
        out = m.features(np.ones((1, side, side + 3, 3), np.float32), "block5_pool")["block5_pool"]
        assert out.shape == (1, side // 32, (side + 3) // 32, 8)
    assert m.layer_names[-1] == "block5_pool"
    with pytest.raises(jaxviz.JaxvizError, match="include_top=True"):
        m.predict(np.ones((1, 32, 32, 3), np.float32))


def test_a_truncated_pass_takes_any_size_its_layers_allow(tiny):
    # vgg_tiny with its top needs 32×32 for its dense head, but block3_conv1 computes nothing of it
    bare = jaxviz.load("vgg_tiny", "random:0", include_top=False)
    x = np.random.default_rng(0).normal(0, 30, (2, 64, 64, 3)).astype(np.float32)
    got = tiny.features(x, ["block3_conv1", "block1_conv1"])
    want = bare.features(x, ["block3_conv1", "block1_conv1"])
    assert got["block3_conv1"].shape == (2, 16, 16, 8)
    np.testing.assert_array_equal(got["block3_conv1"], want["block3_conv1"])
    np.testing.assert_array_equal(got["block1_conv1"], want["block1_conv1"])
    assert tiny.features(x, "flatten")["flatten"].shape == (2, 2 * 2 * 8)  # no dense layer computed: any size
    # the smallest size is the truncated pass's: block2_conv1 needs one pixel after block1_pool
    assert tiny.features(np.ones((1, 2, 2, 3), np.float32), "block2_conv1")["block2_conv1"].shape == (1, 1, 1, 6)
    with pytest.raises(jaxviz.JaxvizError, match=r"^vgg_tiny up to block2_conv1 needs inputs of at least 2×2 "
                                                 r"pixels, got 1×1$"):
        tiny.features(np.ones((1, 1, 1, 3), np.float32), "block2_conv1")
    # the dense head still fixes the size where it is computed
    with pytest.raises(jaxviz.JaxvizError, match="with its top needs 32×32 inputs, got 64×64"):
        tiny.features(x, ["block3_conv1", "fc1"])
    with pytest.raises(jaxviz.JaxvizError, match="at least 32"):
        tiny.predict(np.ones((1, 16, 16, 3), np.float32))


def test_custom_vjp_conv_and_pool_match_lax_gradients():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jnp.round(jax.random.normal(k1, (2, 9, 7, 5)) * 2) / 2  # rounding makes pooling ties
    w = jax.random.normal(k2, (3, 3, 5, 4))

    def lax_conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def lax_pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    # jitted: op-by-op dispatch would compile every op of the custom VJPs on its own
    ours = jax.jit(jax.grad(lambda x, w: (ops.conv3x3(x, w) ** 2).sum(), (0, 1)))(x, w)
    ref = jax.jit(jax.grad(lambda x, w: (lax_conv(x, w) ** 2).sum(), (0, 1)))(x, w)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    c = jax.random.normal(k3, (2, 4, 3, 5))
    np.testing.assert_array_equal(jax.jit(ops.max_pool2x2)(x), lax_pool(x))
    # Ties route to the first maximum, exactly like XLA's select-and-scatter (and TensorFlow).
    np.testing.assert_array_equal(jax.jit(jax.grad(lambda x: (ops.max_pool2x2(x) * c).sum()))(x),
                                  jax.grad(lambda x: (lax_pool(x) * c).sum())(x))


def test_relu_is_swappable_without_a_second_model(tiny, batch):
    leaky = lambda v: jax.nn.leaky_relu(v, 0.5)
    a, _ = tiny.apply(tiny.params, jnp.asarray(batch), upto="block1_conv1")
    b, _ = tiny.apply(tiny.params, jnp.asarray(batch), upto="block1_conv1", relu=leaky)
    assert float(a.min()) == 0.0 and float(b.min()) < 0


def test_class_names_and_decode_follow_the_model():
    demo_model = jaxviz.load("vgg_demo")
    from jaxviz.demo import CLASS_NAMES

    assert demo_model.class_names == list(CLASS_NAMES)
    probs = np.eye(10, dtype=np.float32)[[3, 7]] * 0.9 + 0.01
    decoded = demo_model.decode_predictions(probs, top=2)
    assert [d[0][:2] for d in decoded] == [("3", CLASS_NAMES[3]), ("7", CLASS_NAMES[7])]
    tiny = jaxviz.load("vgg_tiny", weights=None)
    assert tiny.class_names[:2] == ["class_0", "class_1"]
    with pytest.raises(jaxviz.JaxvizError, match=r"\[N, 10\]"):
        tiny.decode_predictions(np.ones((1, 1000)))
    names = jaxviz.model.Model("vgg16", {}, include_top=True).class_names
    assert len(names) == 1000 and names[281] == "tabby"


def test_compiling_is_said_only_when_xla_compiles(capsys, monkeypatch):
    from jaxviz import runtime

    monkeypatch.setattr(runtime.CompileNotice, "after_s", 0.0)  # any compile counts as slow here
    runtime.clear_programs()  # programs are shared by every model of a graph: other tests' would serve this one
    model = jaxviz.load("vgg_tiny", "random:0")
    x = np.zeros((1, 32, 32, 3), np.float32)
    before = runtime.compile_count()
    model.predict(x)
    err = capsys.readouterr().err
    assert runtime.compile_count() > before  # JAX's compile events, counted
    assert "jaxviz: compiling vgg_tiny for inputs (1, 32, 32, 3) (once per input shape; kept " in err
    assert err.count("compiling") == 1  # one line per call, however many programs it compiles
    before = runtime.compile_count()
    model.predict(x)
    assert runtime.compile_count() == before and "compiling" not in capsys.readouterr().err  # nothing compiled
    with runtime.CompileNotice(model, "outer"):  # inside another notice (the CLI's): one line, the outer's
        model.predict(np.zeros((2, 32, 32, 3), np.float32))
    err = capsys.readouterr().err
    assert err.count("compiling") == 1 and "outer" in err
    monkeypatch.setattr(runtime.CompileNotice, "after_s", 60.0)
    with runtime.CompileNotice(model, "slow only"):  # a compile shorter than after_s: quiet
        model.predict(np.zeros((3, 32, 32, 3), np.float32))
    assert "compiling" not in capsys.readouterr().err


def test_a_model_is_freed_once_the_caller_drops_it(batch):
    """Compiled programs are cached per model but must not keep it (and its params) alive: a process that loads
    models one after another (a test run, a notebook) would otherwise hold every one of them."""
    import gc
    import weakref

    model = jaxviz.load("vgg_tiny", "random:1")
    model.predict(batch)
    jaxviz.gradcam(model, batch[:1])
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
