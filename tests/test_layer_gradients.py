"""The input gradient of every layer kind of jaxviz.layers against Keras 3's (JAX backend).

Small one- and two-layer models, each built and saved by Keras (seeded weights), read back by jaxviz
(no Keras); the vector–Jacobian product with a random cotangent through jaxviz's forward pass is compared
with ``jax.vjp`` through Keras's ``stateless_call`` on the same model, in both ops modes:

- "exact" under ``jax.default_matmul_precision("highest")``;
- "fast" at the default precision, so its hand-written backward passes run (Winograd, few-channel convs,
  depthwise convolutions as shifted products, mask max-pool gradients, transposed dense kernels,
  BatchNorm folded into convolutions); the cases that target one assert it is in the program.

Keras's side always runs at "highest". Tolerance max|Δ| ≤ 1e-4·max|ref| on the gradient (and the
output): float32 formulas in another summation order, and the fast ops' Winograd rounding (~1e-5).
"""

import collections
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras", reason="Keras 3 is the gradient reference for the layer kinds")

import jax  # noqa: E402
from keras_helpers import REL_TOL, max_rel_error, numpy_initializers, randomize  # noqa: E402

from jaxviz import graph as graph_lib  # noqa: E402
from jaxviz import layers as layers_lib  # noqa: E402
from jaxviz import ops as ops_lib  # noqa: E402
from jaxviz.frontends import keras as keras_io  # noqa: E402

L = keras.layers


def seq(shape, *ls):
    return keras.Sequential([keras.Input(shape), *ls])


def _merges():
    inp = keras.Input((5, 5, 3))
    a = L.Conv2D(4, 1, name="a")(inp)
    b = L.Conv2D(4, 1, name="b")(inp)
    c = L.Conv2D(4, 3, padding="same", name="c")(inp)
    merged = [L.Add()([a, b, c]), L.Subtract()([a, b]), L.Multiply()([a, b]),
              L.Average()([a, b]), L.Maximum()([a, b]), L.Minimum()([a, b])]
    return keras.Model(inp, L.Concatenate(axis=-1)(merged))


def _operations():
    """keras.ops calls on tensors (MobileNetV3's hard sigmoid and the other arithmetic jaxviz reads)."""
    ops = keras.ops
    inp = keras.Input((4, 4, 3))
    x = L.Conv2D(3, 1, name="c")(inp)
    outs = [x + 3.0, 2.0 - x, x * 0.5, x / 4.0, ops.divide(x, 3.0), ops.maximum(x, 0.1), ops.minimum(x, 0.2), -x,
            ops.power(ops.abs(x) + 1.0, 1.5), ops.square(x), ops.sqrt(ops.abs(x) + 1.0), ops.relu(x),
            ops.relu6(x * 4), ops.sigmoid(x), ops.tanh(x), ops.silu(x), ops.hard_sigmoid(x * 3), ops.hard_silu(x * 3),
            ops.elu(x, alpha=0.5), ops.selu(x), ops.softplus(x), ops.gelu(x), ops.softmax(x, axis=-1), ops.exp(x)]
    return keras.Model(inp, L.Concatenate()(outs))


def _activation_strings():
    inp = keras.Input((6,))
    h = L.Dense(6, name="d")(inp)
    names = [a for a in layers_lib.ACTIVATIONS if a != "hard_sigmoid_keras2"]
    return keras.Model(inp, L.Concatenate()([L.Activation(a)(h) for a in names]))


def _application_layers():
    """The layer classes keras.applications defines for itself (ConvNeXt's, InceptionResNetV2's)."""
    from keras.src.applications.convnext import LayerScale
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    inp = keras.Input((4, 4, 3))
    r = L.Conv2D(3, 1, name="r")(inp)
    return keras.Model(inp, LayerScale(0.5, 3, name="ls")(CustomScaleLayer(0.17, name="csl")([inp, r])))


def _normalization_adapted():
    layer = L.Normalization(axis=-1)
    layer.adapt(np.random.default_rng(3).normal(2, 3, (20, 6, 6, 3)).astype(np.float32))
    return seq((6, 6, 3), layer, L.Conv2D(4, 3))


# name → (model builder, input shape without batch, batch, fast-op custom VJP the case must use or None)
CASES = {
    "conv3x3_same": (lambda: seq((9, 9, 5), L.Conv2D(6, 3, padding="same", activation="relu")), 2, "_conv3x3"),
    "conv3x3_few_channels": (lambda: seq((9, 9, 3), L.Conv2D(8, 3, padding="same")), 2, "_conv3x3"),
    "conv3x3_winograd": (lambda: seq((16, 16, 64), L.Conv2D(128, 3, padding="same")), 3, "_conv3x3_winograd"),
    "conv7x7_s2_few_channels": (lambda: seq((17, 17, 3), L.Conv2D(8, 7, strides=2, padding="same")), 2, "op"),
    "conv1x1_s2": (lambda: seq((9, 9, 5), L.Conv2D(6, 1, strides=2)), 2, None),
    "conv_valid_dilated": (lambda: seq((12, 12, 5), L.Conv2D(6, 3, dilation_rate=2)), 2, None),
    "conv_groups_rect": (lambda: seq((8, 8, 6), L.Conv2D(4, (3, 1), groups=2, padding="same")), 2, None),
    "conv_batchnorm_folded": (lambda: seq((8, 8, 5), L.Conv2D(6, 3, padding="same", use_bias=False),
                                          L.BatchNormalization()), 2, "_conv3x3"),
    "depthwise_s2_multiplier": (lambda: seq((9, 9, 4), L.DepthwiseConv2D(3, strides=2, depth_multiplier=2,
                                                                         padding="same")), 2, "op"),
    "depthwise_dilated_valid": (lambda: seq((11, 11, 4), L.DepthwiseConv2D(3, dilation_rate=2)), 2, "op"),
    "depthwise_5x5_s2_valid": (lambda: seq((12, 12, 3), L.DepthwiseConv2D(5, strides=2, use_bias=False)), 2, "op"),
    "separable": (lambda: seq((8, 8, 3), L.SeparableConv2D(5, 3, depth_multiplier=2, padding="same",
                                                           activation="tanh")), 2, "op"),
    "separable_s2_valid": (lambda: seq((9, 9, 4), L.SeparableConv2D(4, 2, strides=2, use_bias=False)), 2, "op"),
    "conv_transpose_same": (lambda: seq((5, 5, 3), L.Conv2DTranspose(4, 3, strides=2, padding="same")), 2, None),
    "conv_transpose_valid_dilated": (lambda: seq((5, 5, 3), L.Conv2DTranspose(2, 2, dilation_rate=2)), 2, None),
    "dense_batch": (lambda: seq((3, 3, 4), L.Flatten(), L.Dense(7, activation="relu")), 2, "_dense"),
    "dense_one_row": (lambda: seq((3, 3, 4), L.Flatten(), L.Dense(7)), 1, "_dense"),
    "batchnorm": (lambda: seq((5, 5, 3), L.BatchNormalization(center=False, epsilon=1e-5)), 2, None),
    "layernorm": (lambda: seq((5, 5, 6), L.LayerNormalization(epsilon=1e-6)), 2, None),
    "normalization_config": (lambda: seq((5, 5, 3), L.Normalization(mean=[0.1, 0.2, 0.3],
                                                                   variance=[1.5, 0.5, 2.0])), 2, None),
    "normalization_adapted": (_normalization_adapted, 2, None),
    "rescaling": (lambda: seq((5, 5, 3), L.Rescaling(1 / 127.5, offset=-1), L.Conv2D(2, 1)), 2, None),
    "application_layers": (_application_layers, 2, None),
    "activation_strings": (_activation_strings, 2, None),
    "activation_layers": (lambda: seq((5, 5, 4), L.ReLU(), L.Conv2D(4, 1), L.ReLU(max_value=6.0), L.Conv2D(4, 1),
                                      L.ReLU(negative_slope=0.1, threshold=0.2), L.LeakyReLU(0.2), L.ELU(0.7),
                                      L.PReLU(), L.Softmax()), 2, None),
    "maxpool2x2_odd": (lambda: seq((9, 9, 3), L.MaxPooling2D(2)), 2, "max_pool2x2"),
    "maxpool3x3_s2_same": (lambda: seq((9, 9, 3), L.MaxPooling2D(3, strides=2, padding="same")), 2,
                           "max_pool_taps"),
    "maxpool3x3_s1_same": (lambda: seq((7, 7, 3), L.MaxPooling2D(3, strides=1, padding="same")), 2,
                           "max_pool_taps"),
    "maxpool3x2_valid": (lambda: seq((9, 8, 3), L.MaxPooling2D((3, 2), strides=(2, 1))), 2, "max_pool_taps"),
    "avgpool2x2_valid_odd": (lambda: seq((9, 9, 3), L.AveragePooling2D(2)), 2, None),
    "avgpool3x3_s1_same": (lambda: seq((7, 7, 3), L.AveragePooling2D(3, strides=1, padding="same")), 2, None),
    "avgpool3x2_s2_same": (lambda: seq((9, 8, 3), L.AveragePooling2D((3, 2), strides=2, padding="same")), 2, None),
    "avgpool3x3_s2_valid": (lambda: seq((9, 9, 3), L.AveragePooling2D(3, strides=2)), 2, None),
    "global_pools": (lambda: keras.Model(*_global_pools()), 2, None),
    "resampling_and_crop": (lambda: seq((6, 5, 3), L.ZeroPadding2D(((1, 2), (0, 3))), L.UpSampling2D(2),
                                        L.Cropping2D(((1, 0), (2, 1))), L.UpSampling2D((2, 3),
                                                                                    interpolation="bilinear")),
                            2, None),
    "reshaping_and_identities": (lambda: seq((4, 6, 3), L.Permute((2, 1, 3)), L.Dropout(0.5), L.SpatialDropout2D(0.5),
                                             L.GaussianNoise(0.3), L.GaussianDropout(0.3), L.AlphaDropout(0.3),
                                             L.ActivityRegularization(0.1), L.Identity(), L.Reshape((8, 9)),
                                             L.Reshape((4, 6, 3)), L.Flatten()), 2, None),
    "merges": (_merges, 2, None),
    "keras_operations": (_operations, 2, None),
}


def _global_pools():
    inp = keras.Input((5, 4, 3))
    a = L.GlobalAveragePooling2D(keepdims=True)(inp)
    gate = L.Activation("sigmoid")(a)
    out = L.Concatenate()([L.GlobalMaxPooling2D()(inp), L.GlobalAveragePooling2D()(L.Multiply()([inp, gate])),
                           L.Flatten()(L.GlobalMaxPooling2D(keepdims=True)(inp))])
    return inp, out


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{case: (path, keras model, x, cotangent, Keras's output, Keras's input gradient)}, built once."""
    folder = tmp_path_factory.mktemp("grads")
    out = {}
    with numpy_initializers():
        for i, (name, (build, batch, _)) in enumerate(CASES.items()):
            model = randomize(build(), seed=i)
            path = folder / f"{name}.keras"
            model.save(path)
            rng = np.random.default_rng(100 + i)
            x = rng.normal(0, 1, (batch, *model.inputs[0].shape[1:])).astype(np.float32)
            variables = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
            with jax.default_matmul_precision("highest"):
                y, vjp = jax.vjp(lambda x, m=model, v=variables: m.stateless_call(*v, x, training=False)[0], x)
                ct = rng.normal(0, 1, y.shape).astype(np.float32)
                (gx,) = vjp(ct)
            out[name] = (path, x, ct, np.asarray(y), np.asarray(gx))
    return out


def _jaxviz_vjp(path, x, ct, mode):
    graph, params, _ = keras_io.read_model(path)
    ops = ops_lib.default_ops(mode)
    prepared = graph_lib.prepare(graph, params, ops)  # as jaxviz.Model does, once per set of weights
    fn = jax.jit(lambda x: graph_lib.forward(graph, params, x, ops=ops, prepared=prepared)[0])
    y, vjp = jax.vjp(fn, x)
    return graph, fn, np.asarray(y), np.asarray(vjp(ct)[0])


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("case", list(CASES))
def test_input_gradient_equals_keras(saved, case, mode):
    path, x, ct, y_ref, g_ref = saved[case]
    precision = "highest" if mode == "exact" else None
    with jax.default_matmul_precision(precision):
        graph, fn, y, g = _jaxviz_vjp(path, x, ct, mode)
        jaxpr = str(jax.make_jaxpr(fn)(x))
    assert max_rel_error(y, y_ref) <= REL_TOL, "output"
    assert np.abs(g_ref).max() > 0, "a case whose gradient is zero tests nothing"
    assert max_rel_error(g, g_ref) <= REL_TOL, "input gradient"
    # The fast-op cases run the backward pass they are there for (a custom VJP, named in the program).
    custom = CASES[case][2]
    if mode == "fast" and custom is not None:
        assert f"name={custom}" in jaxpr, f"{case} does not use {custom}"


def _kind_groups() -> dict:
    """Registered kinds grouped by the function that computes them (aliases such as ``MaxPool2D``, the
    inference identities, ``ops.Abs`` = ``ops.Absolute``)."""
    groups = collections.defaultdict(set)
    for name, fn in layers_lib.KINDS.items():
        if name.startswith("_"):  # a kind another test module registers for itself (test_graph's counter)
            continue
        key = name[4:] if name.startswith("ops.") else None
        key = layers_lib.OPERATIONS.get(key) or (("unary", key) if key in layers_lib.UNARY_OPERATIONS else fn)
        groups[key].add(name)
    return groups


#: Kinds only the ONNX reader makes: their input gradients are checked against PyTorch's autograd in
#: tests/test_onnx.py (test_onnx_kinds_input_gradient_equals_torch).
ONNX_ONLY = {"Clip", "HardSigmoid", "Erf", "LRN", "ElementwiseConstant", "AveragePool", "Pad"}


def test_every_layer_kind_has_a_gradient_case(saved):
    seen = set(ONNX_ONLY)
    for path, *_ in saved.values():
        graph, _, _ = keras_io.read_model(path)
        seen |= {x.kind for x in graph.layers}
    missing = [sorted(names) for names in _kind_groups().values() if not names & seen]
    assert not missing, f"layer kinds without a gradient case: {missing}"
