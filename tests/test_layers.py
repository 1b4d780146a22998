"""Every layer kind of jaxviz.layers against Keras 3 (JAX backend): small models Keras builds and saves as
.keras, read back with jaxviz.frontends.keras (no Keras), each layer's output compared with Keras's own.

Exact mode under jax.default_matmul_precision("highest"); tolerance max|Δ| ≤ 1e-4·max|ref| per layer: the
two sides compute the same float32 formulas, differing only in summation order (~1e-6 relative).
"""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras", reason="Keras 3 is the parity reference for the layer kinds")

import jax  # noqa: E402
from keras_helpers import check, numpy_initializers  # noqa: E402

from jaxviz import layers as layers_lib  # noqa: E402
from jaxviz import ops as ops_lib  # noqa: E402
from jaxviz.errors import JaxvizError  # noqa: E402
from jaxviz.frontends import keras as keras_io  # noqa: E402

L = keras.layers


@pytest.fixture(autouse=True, scope="module")
def _fast_init():
    with numpy_initializers():
        yield


def seq(shape, *ls, name="m"):
    return keras.Sequential([keras.Input(shape), *ls], name=name)


def test_convolutions(tmp_path):
    check(seq((17, 17, 4),
              L.Conv2D(6, 3, strides=2, padding="valid", name="c_s2"),
              L.Conv2D(6, 3, dilation_rate=2, padding="same", activation="relu", name="c_dil"),
              L.Conv2D(8, (3, 1), groups=2, padding="same", name="c_groups"),
              L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same", name="dw_s2"),
              L.DepthwiseConv2D(3, dilation_rate=2, padding="same", use_bias=False, name="dw_dil"),
              L.SeparableConv2D(5, 3, depth_multiplier=2, padding="same", activation="tanh", name="sep"),
              L.SeparableConv2D(4, 2, strides=2, padding="valid", use_bias=False, name="sep_s2"),
              L.Conv2D(3, 1, use_bias=False, name="c_nobias"),
              L.Conv2DTranspose(4, 3, strides=2, padding="same", name="tconv_same"),
              L.Conv2DTranspose(3, 3, strides=2, padding="valid", activation="relu", name="tconv_valid"),
              L.Conv2DTranspose(2, 2, strides=1, dilation_rate=2, padding="same", use_bias=False, name="tconv_dil"),
              L.Conv2DTranspose(3, 3, strides=2, output_padding=1, padding="same", name="tconv_outpad")), tmp_path)


def test_normalizations(tmp_path):
    data = np.random.default_rng(3).normal(2, 3, (20, 8, 8, 3)).astype(np.float32)
    adapted = L.Normalization(axis=-1, name="norm_adapted")
    adapted.adapt(data)
    check(seq((8, 8, 3),
              L.Rescaling(1 / 127.5, offset=-1, name="rescale"),
              L.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.5, 0.5, 2.0], name="norm_cfg"),
              adapted,
              L.Conv2D(4, 3, padding="same", name="conv"),
              L.BatchNormalization(name="bn"),
              L.BatchNormalization(center=False, epsilon=1e-5, name="bn_nocenter"),
              L.BatchNormalization(scale=False, name="bn_noscale"),
              L.LayerNormalization(name="ln")), tmp_path)


def test_activation_layers(tmp_path):
    check(seq((6, 6, 4),
              L.Conv2D(4, 1, name="c"),
              L.ReLU(name="relu_default"),
              L.Conv2D(4, 1, name="c2"),
              L.ReLU(max_value=6.0, name="relu6"),
              L.Conv2D(4, 1, name="c3"),
              L.ReLU(negative_slope=0.1, name="relu_slope"),
              L.ReLU(threshold=0.2, name="relu_thr"),
              L.Conv2D(4, 1, name="c4"),
              L.ReLU(max_value=0.8, negative_slope=0.1, threshold=0.3, name="relu_all"),
              L.LeakyReLU(negative_slope=0.2, name="leaky"),
              L.ELU(alpha=0.7, name="elu"),
              L.PReLU(name="prelu"),
              L.PReLU(shared_axes=[1, 2], name="prelu_shared"),
              L.Softmax(name="softmax")), tmp_path)


ACTIVATION_STRINGS = ["linear", "relu", "relu6", "sigmoid", "softmax", "tanh", "swish", "silu", "gelu", "elu",
                      "selu", "hard_sigmoid", "hard_swish", "hard_silu", "softplus", "softsign", "mish",
                      "leaky_relu", "log_softmax", "exponential"]


def test_activation_strings(tmp_path):
    inp = keras.Input((5,))
    h = L.Dense(6, name="d")(inp)
    outs = [L.Activation(a, name=f"act_{a}")(h) for a in ACTIVATION_STRINGS]
    outs.append(L.Dense(3, activation="gelu", name="dense_gelu")(h))
    m = keras.Model(inp, L.Concatenate(name="cat")(outs), name="acts")
    x = np.linspace(-5, 5, 10, dtype=np.float32).reshape(2, 5)
    check(m, tmp_path, x=x)
    assert set(ACTIVATION_STRINGS) <= set(layers_lib.ACTIVATIONS)


def test_pooling_and_resampling(tmp_path):
    check(seq((11, 11, 3),
              L.ZeroPadding2D(((1, 2), (0, 3)), name="pad"),
              L.MaxPooling2D(3, strides=2, padding="same", name="maxpool_same"),
              L.UpSampling2D(2, name="up_nearest"),
              L.AveragePooling2D(3, strides=1, padding="same", name="avg_same"),
              L.AveragePooling2D((3, 2), strides=(2, 1), padding="same", name="avg_same_rect"),
              L.UpSampling2D((2, 3), interpolation="bilinear", name="up_bilinear"),
              L.Cropping2D(((1, 0), (2, 1)), name="crop"),
              L.AveragePooling2D(2, name="avg_valid"),
              L.ZeroPadding2D(1, name="pad1"),
              L.MaxPooling2D(2, name="maxpool"),
              L.SpatialDropout2D(0.5, name="sdrop"),
              L.GaussianNoise(0.3, name="gnoise"),
              L.GaussianDropout(0.3, name="gdrop"),
              L.Permute((2, 1, 3), name="permute"),
              L.Reshape((-1, 3), name="reshape"),  # [10, 4, 3] after the permute → [40, 3]
              L.Reshape((4, 10, 3), name="reshape_back"),  # back to a 4D batch, in another layout
              L.Flatten(name="flatten"),
              L.Dropout(0.5, name="drop"),
              L.Dense(4, activation="softmax", name="out")), tmp_path)


def test_global_pooling_keepdims(tmp_path):
    inp = keras.Input((7, 5, 4))
    a = L.GlobalAveragePooling2D(keepdims=True, name="gap_keep")(inp)
    b = L.GlobalMaxPooling2D(name="gmp")(inp)
    c = L.GlobalAveragePooling2D(name="gap")(inp)
    d = L.GlobalMaxPooling2D(keepdims=True, name="gmp_keep")(inp)
    e = L.Multiply(name="se")([inp, L.Activation("sigmoid", name="gate")(a)])
    out = L.Concatenate(name="cat")([b, c, L.Flatten(name="f")(d), L.GlobalAveragePooling2D(name="g2")(e)])
    check(keras.Model(inp, out), tmp_path)


def test_merges_and_several_outputs(tmp_path):
    inp = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 3, padding="same", name="a")(inp)
    b = L.Conv2D(4, 1, name="b")(inp)
    c = L.Conv2D(4, 3, padding="same", activation="relu", name="c")(inp)
    merged = [L.Add(name="add")([a, b, c]), L.Subtract(name="sub")([a, b]), L.Multiply(name="mul")([a, b]),
              L.Average(name="avg")([a, b, c]), L.Maximum(name="max")([a, b]), L.Minimum(name="min")([b, c])]
    cat = L.Concatenate(axis=-1, name="cat")(merged)
    cat1 = L.Concatenate(axis=1, name="cat_rows")([a, b])
    out1 = L.Dense(3, activation="softmax", name="probs")(L.GlobalAveragePooling2D(name="gap")(cat))
    out2 = L.Flatten(name="flat")(cat1)
    m = keras.Model(inp, [out1, out2], name="two_outputs")
    graph, _, _, _ = check(m, tmp_path)
    assert graph.outputs == ("probs", "flat")
    assert graph.logits == ("probs", True)


def test_keras_operations_on_tensors(tmp_path):
    """``x + 3.0``, ``x * (1 / 6)`` (MobileNetV3's hard sigmoid) and other operations with numbers."""
    inp = keras.Input((4, 4, 3))
    x = L.Conv2D(3, 1, name="c")(inp)
    y = L.ReLU(6.0, name="relu6_layer")(x + 3.0) * (1.0 / 6.0)
    z = keras.ops.maximum(2.0 - x, 0.5) / 2.0 + (-x) ** 2
    ops = keras.ops
    acts = [ops.relu(x), ops.relu6(x * 4), ops.sigmoid(x), ops.tanh(x), ops.silu(x), ops.hard_sigmoid(x),
            ops.hard_silu(x), ops.elu(x, alpha=0.5), ops.selu(x), ops.softplus(x), ops.gelu(x),
            ops.gelu(x, approximate=False), ops.softmax(x, axis=-1), ops.exp(x)]
    m = keras.Model(inp, L.Concatenate(name="cat")([y, z, keras.ops.abs(x), *acts]))
    graph, _, _, _ = check(m, tmp_path)
    assert {"ops.Add", "ops.Multiply", "ops.Subtract", "ops.Maximum"} <= {x.kind for x in graph.layers}


def test_unsupported_layer_is_one_line(tmp_path):
    m = seq((4, 4, 3), L.UnitNormalization(name="unit_norm"))
    m.save(tmp_path / "u.keras")
    with pytest.raises(JaxvizError) as e:
        keras_io.read_model(tmp_path / "u.keras")
    msg = str(e.value)
    assert "'unit_norm'" in msg and "UnitNormalization" in msg and "Conv2D" in msg and "\n" not in msg


def test_unknown_activation_is_one_line():
    with pytest.raises(JaxvizError, match="activation 'nope' is not supported"):
        layers_lib.apply_activation("nope", np.zeros(3, np.float32), ops_lib.EXACT)


def test_relu_layer_uses_ops_relu():
    """Guided backprop replaces ops.relu: a default ReLU layer, relu6 and activation='relu' all go through it."""
    calls = []

    def spy(x):
        calls.append(1)
        return jax.nn.relu(x)

    o = ops_lib.EXACT.with_relu(spy)
    x = np.linspace(-8, 8, 9, dtype=np.float32)
    layers_lib.KINDS["ReLU"]({}, [x], {}, o)
    layers_lib.KINDS["ReLU"]({}, [x], {"max_value": 6.0}, o)
    layers_lib.apply_activation("relu", x, o)
    assert len(calls) == 3


def test_hard_sigmoid_keras2_formula():
    x = np.array([-4, -1, 0, 1, 4], np.float32)
    got = np.asarray(layers_lib.apply_activation("hard_sigmoid_keras2", x, ops_lib.EXACT))
    np.testing.assert_allclose(got, np.clip(0.2 * x + 0.5, 0, 1), rtol=0, atol=1e-7)  # float32 rounding
