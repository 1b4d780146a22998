"""jaxviz.graph: the layer graph and its one forward pass; jaxviz.ops: the exact/fast seam; the converted
format; preprocessing modes."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz import graph, layers, ops, preprocessing
from jaxviz.errors import JaxvizError, LayerError
from jaxviz.frontends import npz as converted
from jaxviz.frontends import vgg
from jaxviz.graph import Graph, make_layer
from jaxviz.model import Model

CALLS: list[str] = []


@layers.kind("_CountedIdentity")
def _counted(p, inputs, cfg, ops):
    CALLS.append(cfg["tag"])
    return inputs[0]


def _small_graph(final="dense_softmax"):
    """input → conv(relu) → counted → pool → gap → dense[softmax] (or dense → Softmax layer)."""
    L = [make_layer("inp", "InputLayer", {"batch_shape": [None, None, None, 3]}),
         make_layer("conv", "Conv2D", {"filters": 4, "kernel_size": [3, 3], "padding": "same", "activation": "relu"},
                    ["inp"]),
         make_layer("mark", "_CountedIdentity", {"tag": "mark"}, ["conv"]),
         make_layer("pool", "MaxPooling2D", {"pool_size": [2, 2]}, ["mark"]),
         make_layer("gap", "GlobalAveragePooling2D", {}, ["pool"])]
    if final == "dense_softmax":
        L.append(make_layer("out", "Dense", {"units": 3, "activation": "softmax"}, ["gap"]))
        outputs = ("out",)
    else:
        L.append(make_layer("dense", "Dense", {"units": 3}, ["gap"]))
        L.append(make_layer("out", "Softmax", {}, ["dense"]))
        outputs = ("out",)
    return Graph("small", tuple(L), outputs)


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"conv": {"kernel": rng.normal(size=(3, 3, 3, 4)).astype("float32"),
                     "bias": rng.normal(size=4).astype("float32")},
            "out": {"kernel": rng.normal(size=(4, 3)).astype("float32"), "bias": np.zeros(3, "float32")},
            "dense": {"kernel": rng.normal(size=(4, 3)).astype("float32"), "bias": np.zeros(3, "float32")}}


def _x(n=2, s=8):
    return jnp.asarray(np.random.default_rng(1).normal(size=(n, s, s, 3)), jnp.float32)


def _reference(params, x):
    conv = jax.lax.conv_general_dilated(x, params["conv"]["kernel"], (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["conv"]["bias"]
    a = jax.nn.relu(conv)
    n, h, w, c = a.shape
    pooled = a.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4)).mean(axis=(1, 2))
    return a, pooled @ params["out"]["kernel"] + params["out"]["bias"]


def test_forward_matches_hand_computation_and_logits_tap():
    g, p, x = _small_graph(), _params(), _x()
    a, logits = _reference(p, x)
    out, taps = graph.forward(g, p, x, ops=ops.EXACT, taps=("conv", "logits"))
    np.testing.assert_allclose(taps["conv"], a, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(taps["logits"], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, jax.nn.softmax(logits), rtol=1e-5, atol=1e-7)


def test_logits_of_a_separate_softmax_layer():
    g = _small_graph("softmax_layer")
    assert g.logits == ("dense", False)
    p = _params()
    logits, _ = graph.forward(g, p, _x(), ops=ops.EXACT, upto="logits")
    dense, _ = graph.forward(g, p, _x(), ops=ops.EXACT, upto="dense")
    np.testing.assert_array_equal(logits, dense)


def test_truncated_pass_computes_nothing_after_upto():
    g, p, x = _small_graph(), _params(), _x()
    CALLS.clear()
    graph.forward(g, p, x, ops=ops.EXACT, upto="conv")
    assert CALLS == []  # "mark" comes after conv: not evaluated
    graph.forward(g, p, x, ops=ops.EXACT, upto="pool")
    assert CALLS == ["mark"]


def test_perturb_adds_to_a_layer_and_its_gradient_is_the_layers():
    g, p, x = _small_graph(), _params(), _x()
    _, taps = graph.forward(g, p, x, ops=ops.EXACT, taps=("conv",))

    def score(delta):
        return graph.forward(g, p, x, ops=ops.EXACT, upto="logits", perturb={"conv": delta})[0][:, 0].sum()

    def score_from_conv(a):  # max-pool gradients go to the first maximum of a window, as TensorFlow's
        pooled = ops.max_pool2x2(a).mean(axis=(1, 2))
        return (pooled @ p["out"]["kernel"])[:, 0].sum()

    np.testing.assert_allclose(jax.grad(score)(jnp.zeros_like(taps["conv"])),
                               jax.grad(score_from_conv)(taps["conv"]), rtol=1e-5, atol=1e-7)


def test_relu_override_replaces_every_relu():
    g, p, x = _small_graph(), _params(), _x()
    _, taps = graph.forward(g, p, x, ops=ops.EXACT, taps=("conv",), relu=lambda v: v)  # identity "ReLU"
    conv = jax.lax.conv_general_dilated(x, p["conv"]["kernel"], (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["conv"]["bias"]
    np.testing.assert_allclose(taps["conv"], conv, rtol=1e-6, atol=1e-6)
    assert float(conv.min()) < 0  # the override really changed something


def test_graph_checks_its_structure_and_names():
    a = make_layer("a", "InputLayer", {"batch_shape": [None, 4, 4, 3]})
    with pytest.raises(JaxvizError, match="appears twice"):
        Graph("g", (a, a), ("a",))
    with pytest.raises(JaxvizError, match="comes later or does not exist"):
        Graph("g", (a, make_layer("b", "Flatten", {}, ["c"])), ("b",))
    with pytest.raises(LayerError, match="unknown layer 'nope'"):
        _small_graph().ancestors(["nope"])


def test_unknown_kind_names_layer_class_and_supported_kinds():
    g = Graph("g", (make_layer("inp", "InputLayer", {"batch_shape": [None, 4, 4, 3]}),
                    make_layer("odd", "FancyLayer", {}, ["inp"])), ("odd",))
    with pytest.raises(JaxvizError, match=r"layer 'odd' is a FancyLayer, which jaxviz does not support; "
                                          r"supported layer kinds: .*Conv2D"):
        graph.forward(g, {}, _x(), ops=ops.EXACT)


def test_json_round_trip_is_equal_and_hashable():
    g = vgg.build_graph("vgg_tiny")
    back = Graph.from_json(g.to_json())
    assert back == g and hash(back) == hash(g)


def test_vgg_graph_is_keras_vgg16_layer_for_layer():
    g = vgg.build_graph("vgg16")
    assert g.layer_names == [r.name for r in vgg.layer_table("vgg16")]
    conv = g.by_name["block3_conv2"]
    assert (conv.kind, conv.cfg["padding"], conv.cfg["activation"], conv.inputs) == (
        "Conv2D", "same", "relu", ("block3_conv1",))
    assert g.logits == ("predictions", True)


def test_model_on_any_graph(tmp_path):
    g = _small_graph()
    p = {k: v for k, v in _params().items() if k != "dense"}
    m = Model(g, p, ops="exact", preprocess="tf")
    assert (m.num_classes, m.input_size, m.arch.head) == (3, 224, "gap")  # free size: 224 px by default
    assert m.cam_layer == "mark"  # the last spatial map that is not a pooling layer
    x = _x()
    np.testing.assert_allclose(m.predict(x), jax.nn.softmax(_reference(p, x)[1]), rtol=1e-5, atol=1e-7)
    table = m.layer_table((8, 8, 3))
    assert [r.output_shape for r in table][-2:] == [(4,), (3,)]
    assert sum(r.params for r in table) == 3 * 3 * 3 * 4 + 4 + 4 * 3 + 3
    assert "Total params: 127" in m.summary(print_fn=lambda s: None)
    maps = jaxviz.saliency(m, x)
    assert maps.shape == (2, 8, 8) and float(jnp.abs(maps).max()) > 0


def test_converted_model_round_trip(tmp_path):
    g, p = _small_graph(), {k: v for k, v in _params().items() if k != "dense"}
    path = converted.write_model(tmp_path / "small", g, p, {"preprocess": "torch"})
    assert path.endswith(".npz") and converted.is_model_file(path)
    with np.load(path, allow_pickle=False) as data:  # numpy alone reads it, nothing pickled
        assert "conv/kernel" in data.files
    m = jaxviz.load(path, ops="exact")
    assert m.preprocess == "torch" and m.graph == g
    x = _x()
    np.testing.assert_array_equal(m.predict(x), Model(g, p, ops="exact").predict(x))


def test_weights_only_npz_is_refused_as_a_model(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, **{"block1_conv1/kernel": np.zeros((3, 3, 3, 4), np.float32)})
    with pytest.raises(JaxvizError, match="holds weights only"):
        jaxviz.load(str(path))
    with pytest.raises(JaxvizError, match="no such model file"):
        jaxviz.load(str(tmp_path / "missing.keras"))


def test_fast_and_exact_ops_agree_and_prepare_only_eligible_convs():
    rng = np.random.default_rng(0)
    g = Graph("w", (make_layer("inp", "InputLayer", {"batch_shape": [None, 16, 16, 128]}),
                    make_layer("c3", "Conv2D", {"filters": 128, "kernel_size": 3, "padding": "same"}, ["inp"]),
                    make_layer("c1s2", "Conv2D", {"filters": 8, "kernel_size": 1, "strides": 2}, ["c3"])),
              ("c1s2",))
    p = {"c3": {"kernel": rng.normal(0, 0.05, (3, 3, 128, 128)).astype("float32"), "bias": np.zeros(128, "f4")},
         "c1s2": {"kernel": rng.normal(0, 0.1, (1, 1, 128, 8)).astype("float32"), "bias": np.zeros(8, "f4")}}
    prepared = graph.prepare(g, p, ops.FAST)
    # The strided 1×1 conv is the 1×1 conv of the subsampled input in the fast ops: its transpose is prepared.
    assert set(prepared) == {"c3", "c1s2"} and "winograd" in prepared["c3"]
    assert set(graph.prepare(g, p, ops.EXACT)) == {"c3"} and "winograd" not in graph.prepare(g, p, ops.EXACT)["c3"]
    x = jnp.asarray(rng.normal(size=(3, 16, 16, 128)), jnp.float32)  # 3 × 16 tiles: Winograd applies
    # jitted: op-by-op dispatch would compile every Winograd tile op on its own
    exact = jax.jit(lambda p, x: graph.forward(g, p, x, ops=ops.EXACT)[0])(p, x)
    fast = jax.jit(lambda p, x, pr: graph.forward(g, p, x, ops=ops.FAST, prepared=pr)[0])(p, x, prepared)
    assert exact.shape == (3, 8, 8, 8)
    # Winograd's rounding differs from the direct convolution's by ~1e-5 relative per layer.
    np.testing.assert_allclose(fast, exact, atol=1e-4 * float(jnp.abs(exact).max()))


def test_model_prepared_kernels_are_cached_per_weights():
    m = jaxviz.load("vgg_tiny", "random:0")
    first = m.prepared()
    assert m.prepared() is first
    m.params = jax.tree_util.tree_map(lambda a: a + 0, m.params)
    assert m.prepared() is not first


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_preprocessing_modes_equal_keras_and_invert(mode):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    ref = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode=mode)
    np.testing.assert_allclose(preprocessing.preprocess(x, mode), ref, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(preprocessing.unpreprocess(preprocessing.preprocess(x, mode), mode), x, atol=1e-3)
    with pytest.raises(JaxvizError, match="unknown preprocessing"):
        preprocessing.preprocess(x, "bogus")


def test_fast_ops_fold_batch_norm_into_the_conv():
    """Conv2D/DepthwiseConv2D followed only by a BatchNormalization run as one conv in the fast ops (kernels
    folded once per weights); the exact ops, "highest" precision and a tap of the conv itself do not fold."""
    rng = np.random.default_rng(0)
    L = [make_layer("inp", "InputLayer", {"batch_shape": [None, 12, 12, 3]}),
         make_layer("c", "Conv2D", {"filters": 4, "kernel_size": 3, "padding": "same", "use_bias": False}, ["inp"]),
         make_layer("bn", "BatchNormalization", {"epsilon": 1e-3}, ["c"]),
         make_layer("d", "DepthwiseConv2D", {"kernel_size": 3, "depth_multiplier": 2, "padding": "same"}, ["bn"]),
         make_layer("bn2", "BatchNormalization", {"epsilon": 1e-3, "scale": False}, ["d"]),
         make_layer("gap", "GlobalAveragePooling2D", {}, ["bn2"])]
    g = Graph("f", tuple(L), ("gap",))
    assert g.bn_folds == {"c": "bn", "d": "bn2"}
    bn = lambda n, gamma=True: {**({"gamma": rng.uniform(.5, 2, n).astype("f4")} if gamma else {}),
                                "beta": rng.normal(size=n).astype("f4"), "moving_mean": rng.normal(size=n).astype("f4"),
                                "moving_variance": rng.uniform(.5, 2, n).astype("f4")}
    p = {"c": {"kernel": rng.normal(size=(3, 3, 3, 4)).astype("f4")}, "bn": bn(4),
         "d": {"kernel": rng.normal(size=(3, 3, 4, 2)).astype("f4"), "bias": rng.normal(size=8).astype("f4")},
         "bn2": bn(8, gamma=False)}
    x = _x(2, 12)

    def run(o, pr=None, taps=()):  # one program per call: op-by-op dispatch would compile every op on its own
        return jax.jit(lambda p, x, pr: graph.forward(g, p, x, ops=o, prepared=pr, taps=taps))(p, x, pr)

    exact, taps = run(ops.EXACT, taps=("c",))
    prepared = graph.prepare(g, p, ops.FAST)
    assert "folded_kernel" in prepared["c"] and "folded_kernel" in prepared["d"]
    fast = run(ops.FAST, prepared)[0]
    np.testing.assert_allclose(fast, exact, rtol=1e-5, atol=1e-5 * float(jnp.abs(exact).max()))
    _, fast_taps = run(ops.FAST, prepared, taps=("c",))  # the conv's own output
    np.testing.assert_allclose(fast_taps["c"], taps["c"], rtol=1e-6, atol=1e-6)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_array_equal(run(ops.FAST, prepared)[0], exact)
    grad = jax.jit(lambda o, pr: jax.grad(lambda v: graph.forward(g, p, v, ops=o, prepared=pr)[0].sum())(x),
                   static_argnums=0)
    np.testing.assert_allclose(grad(ops.FAST, prepared), grad(ops.EXACT, None), rtol=1e-4, atol=1e-5)


def test_min_input_side_follows_paddings_windows_and_strides():
    # side n → n + 2 (padding) → (n − 1) // 2 + 1 (3×3, stride 2, valid) → a 3×3 pool needs 3 of those: n ≥ 5
    g = Graph("small", (make_layer("inp", "InputLayer", {"batch_shape": [None, None, None, 3]}),
                        make_layer("pad", "ZeroPadding2D", {"padding": 1}, ["inp"]),
                        make_layer("conv", "Conv2D", {"filters": 4, "kernel_size": 3, "strides": 2}, ["pad"]),
                        make_layer("same", "Conv2D", {"filters": 4, "kernel_size": 5, "padding": "same"}, ["conv"]),
                        make_layer("pool", "MaxPooling2D", {"pool_size": 3, "strides": 1}, ["same"]),
                        make_layer("gap", "GlobalAveragePooling2D", {}, ["pool"]),
                        make_layer("fc", "Dense", {"units": 2}, ["gap"])), ("fc",))
    assert graph.min_input_side(g) == 5
    rng = np.random.default_rng(0)
    p = {"conv": {"kernel": rng.normal(size=(3, 3, 3, 4)), "bias": np.zeros(4)},
         "same": {"kernel": rng.normal(size=(5, 5, 4, 4)), "bias": np.zeros(4)},
         "fc": {"kernel": rng.normal(size=(4, 2)), "bias": np.zeros(2)}}
    pool_shape = lambda n: jax.eval_shape(lambda x: graph.forward(g, p, x, ops=ops.EXACT, upto="pool")[0],
                                          jax.ShapeDtypeStruct((1, n, n, 3), jnp.float32)).shape
    # One pixel at 5; at 4 the pool has nothing left (XLA gives an empty map, whose average is NaN).
    assert pool_shape(5) == (1, 1, 1, 4) and pool_shape(4) == (1, 0, 0, 4)
    model = Model(g, p)
    assert model.arch.min_size == 5
    with pytest.raises(JaxvizError, match="at least 5×5 pixels"):
        model.check_input(np.zeros((1, 4, 4, 3), np.float32))
