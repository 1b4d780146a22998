"""Xception's blocks (keras.applications) and the saliency check's max-pool margin (scripts/check_applications.py).

Xception's saliency once read 1.4e-2 off Keras's float32 gradient (exact ops) while the fast ops and Keras agreed
with a float64 reference within 1.4e-6: a max-pool window whose two largest inputs lay within float32 rounding
of each other (docs/APPLICATIONS.md). Here: the gradient of one of Xception's residual blocks equals Keras's in
both ops modes, and the check's :func:`pool_margins` measures the windows' top-two gaps the draw keeps clear.
"""

import os

import numpy as np
import pytest
from module_files import load_script

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras", reason="Keras 3 builds the models and is the gradient reference")

import jax  # noqa: E402
from keras_helpers import REL_TOL, max_rel_error, numpy_initializers, randomize  # noqa: E402

import jaxviz  # noqa: E402

L = keras.layers


@pytest.fixture(scope="module")
def script():
    return load_script("check_applications")


def _xception_block(size=9, channels=6):
    """Xception's entry-flow block: a strided 1×1 residual, two bias-free separable convolutions with
    BatchNormalization, a 3×3 stride-2 "same" max-pool and the residual sum."""
    inp = keras.Input((size, size, channels))
    residual = L.BatchNormalization()(L.Conv2D(8, 1, strides=2, padding="same", use_bias=False)(inp))
    x = L.BatchNormalization()(L.SeparableConv2D(8, 3, padding="same", use_bias=False)(inp))
    x = L.Activation("relu")(x)
    x = L.BatchNormalization()(L.SeparableConv2D(8, 3, padding="same", use_bias=False)(x))
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)
    return keras.Model(inp, L.Add()([x, residual]))


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    with numpy_initializers():
        kmodel = randomize(_xception_block(), seed=7)
    path = tmp_path_factory.mktemp("xception") / "block.keras"
    kmodel.save(path)
    return path, kmodel


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_xception_block_input_gradient_equals_keras(block, mode):
    path, kmodel = block
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (2, 9, 9, 6)).astype(np.float32)
    variables = ([v.value for v in kmodel.trainable_variables], [v.value for v in kmodel.non_trainable_variables])
    with jax.default_matmul_precision("highest"):
        y_ref, vjp = jax.vjp(lambda x: kmodel.stateless_call(*variables, x, training=False)[0], x)
        ct = rng.normal(0, 1, y_ref.shape).astype(np.float32)
        (g_ref,) = vjp(ct)
    model = jaxviz.load(path, ops=mode)
    with jax.default_matmul_precision("highest" if mode == "exact" else None):
        y, vjp = jax.vjp(jax.jit(lambda x: model.apply(model.params, x)[0]), x)
        (g,) = vjp(ct)
    assert max_rel_error(np.asarray(y), np.asarray(y_ref)) <= REL_TOL
    assert np.abs(g_ref).max() > 0
    assert max_rel_error(np.asarray(g), np.asarray(g_ref)) <= REL_TOL


def _top_two_gaps(v, k=3, s=2):
    """Per image: the smallest (largest − second largest) over the 3×3 stride-2 "same" windows of ``v`` whose two
    largest are not both 0, over max |v| (numpy, window by window)."""
    n, h, w, c = v.shape
    out = np.full(n, np.inf)
    for b in range(n):
        for oy in range(-(-h // s)):
            for ox in range(-(-w // s)):
                # "same" padding of 9 with k=3, s=2: 1 before, 1 after; padded cells never count
                cells = v[b, max(oy * s - 1, 0): oy * s - 1 + k, max(ox * s - 1, 0): ox * s - 1 + k]
                top = np.sort(cells.reshape(-1, c), axis=0)
                gaps = np.where((top[-1] == 0) & (top[-2] == 0), np.inf, top[-1] - top[-2])
                out[b] = min(out[b], gaps.min())
    return out / np.abs(v).reshape(n, -1).max(1)


def test_pool_margins_are_the_windows_top_two_gaps(script, block):
    """:func:`pool_margins` is the smallest top-two gap of the max-pool's windows over the pool's largest |input|;
    a window of a ReLU's zeros does not count, a near tie does, and the draw's margin is the smaller of the ReLU
    and the pool margins."""
    path, kmodel = block
    model = jaxviz.load(path, ops="exact")
    x = np.random.default_rng(1).normal(0, 1, (3, 9, 9, 6)).astype(np.float32)
    pool_input = kmodel.layers[[type(layer).__name__ for layer in kmodel.layers].index("MaxPooling2D")].input
    with jax.default_matmul_precision("highest"):
        before = np.asarray(keras.Model(kmodel.inputs, pool_input).predict(x, verbose=0))
    np.testing.assert_allclose(script.pool_margins(model, x), _top_two_gaps(before), rtol=1e-3)
    cfg = {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"}
    relu_output = np.where(before > 0, before, 0)
    np.testing.assert_allclose(script._pool_gaps(relu_output, cfg), _top_two_gaps(relu_output), rtol=1e-6)
    one = np.zeros((1, 9, 9, 1), np.float32)
    one[0, 4, 4, 0] = 2.0  # every other window is all zeros (a ReLU's): only this one's gap, 2, counts
    assert float(script._pool_gaps(one, cfg)[0]) == 1.0
    tied = before.copy()
    tied[0, 4, 4, 2] = tied[0, 4, 5, 2] = 3 * np.abs(before).max()  # one window's two largest equal
    assert float(script._pool_gaps(tied, cfg)[0]) == 0 < float(script._pool_gaps(tied, cfg)[1])
    np.testing.assert_allclose(script.kink_margins(model, x),
                               np.minimum(script.relu_margins(model, x), script.pool_margins(model, x)))


def test_keras_float64_gradient_computes_in_float64(script):
    """The check's float64 reference (:func:`keras_float64_gradient`): Keras's own layers in float64, the float32
    model's weights — within float32 rounding of Keras's float32 gradient, and not that gradient cast."""
    inp = keras.Input((6, 6, 3))
    h = L.BatchNormalization()(L.Conv2D(4, 3, activation="swish")(inp))
    kmodel = keras.Model(inp, L.Dense(3)(L.Dropout(0.5)(L.GlobalAveragePooling2D()(h))))
    with numpy_initializers():
        randomize(kmodel, seed=5)
    x = np.random.default_rng(2).normal(0, 1, (2, 6, 6, 3)).astype(np.float32)
    g32 = np.asarray(script.keras_logit_gradient(kmodel, x, np.arange(2)))
    g64 = script.keras_float64_gradient(kmodel, x, np.arange(2))
    assert g64.dtype == np.float64
    assert 0 < max_rel_error(g32, g64) <= 1e-5
    assert not np.array_equal(g64, g64.astype(np.float32))
