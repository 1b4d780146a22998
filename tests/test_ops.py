"""The fast ops' window kernels against the exact (plain ``lax``) ones: values and input gradients.

Depthwise convolutions as shifted products, max-pools with mask gradients, few-input-channel convolutions with
a phase-split input gradient and strided 1×1 convolutions on the subsampled input — every stride, padding,
dilation and multiplier case Keras's layers allow that these cover."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxviz import ops


def _rand(rng, *shape):
    return jnp.asarray(rng.normal(size=shape).astype(np.float32))


def _vjp(f, x, g):
    return jax.vjp(f, x)[1](g)[0]


@pytest.mark.parametrize("h,w,c,m,k,s,pad,d", [
    (9, 11, 4, 1, 3, 1, "same", 1), (10, 9, 3, 2, 3, 2, "same", 1), (12, 12, 5, 1, 5, 2, "valid", 1),
    (13, 13, 2, 3, 3, 1, "same", 2), (11, 10, 2, 1, 5, 3, "same", 1)])
def test_depthwise_taps_equal_the_grouped_conv(h, w, c, m, k, s, pad, d):
    rng = np.random.default_rng(h * w + m)
    x, kernel = _rand(rng, 2, h, w, c), _rand(rng, k, k, c, m)
    kw = dict(strides=(s, s), padding=pad, dilation=(d, d))

    @jax.jit  # one program per case: op-by-op dispatch would compile every slice on its own
    def both(x, kernel, g):
        out = []
        for o in (ops.EXACT, ops.FAST):
            y, vjp = jax.vjp(lambda v, q, o=o: o.depthwise_conv2d(v, q, **kw), x, kernel)
            out.append((y, *vjp(g)))  # the value, the input and the kernel gradient (custom VJP)
        return out

    g = _rand(rng, *ops.EXACT.depthwise_conv2d(x, kernel, **kw).shape)
    exact, fast = both(x, kernel, g)
    for e, f in zip(exact, fast):
        assert f.shape == e.shape
        np.testing.assert_allclose(f, e, atol=1e-5 * float(jnp.abs(e).max()))


@pytest.mark.parametrize("h,w,k,s,pad", [(9, 11, 3, 2, "valid"), (10, 9, 3, 2, "same"), (7, 8, 2, 1, "valid")])
def test_window_max_pool_gradient_goes_to_the_first_maximum_as_select_and_scatter(h, w, k, s, pad):
    rng = np.random.default_rng(h + w)
    x = jnp.maximum(_rand(rng, 2, h, w, 4), 0)  # ties at zero: which one gets the gradient matters
    kw = ((k, k), (s, s), pad)

    @jax.jit
    def both(x, g):
        return [jax.vjp(lambda v, o=o: o.max_pool(v, *kw), x)[0] for o in (ops.EXACT, ops.FAST)] + \
               [jax.vjp(lambda v, o=o: o.max_pool(v, *kw), x)[1](g)[0] for o in (ops.EXACT, ops.FAST)]

    g = _rand(rng, *ops.EXACT.max_pool(x, *kw).shape)
    y_exact, y_fast, g_exact, g_fast = both(x, g)
    np.testing.assert_array_equal(y_fast, y_exact)
    np.testing.assert_array_equal(g_fast, g_exact)


@pytest.mark.parametrize("h,w,c,o,k,s,pad,d", [
    (20, 21, 3, 8, 7, 2, "same", 1), (19, 20, 3, 8, 7, 2, "valid", 1), (15, 17, 2, 4, 3, 1, "valid", 2),
    (16, 16, 3, 4, 4, 3, "same", 1)])
def test_few_channel_conv_input_gradient_by_phases(h, w, c, o, k, s, pad, d):
    rng = np.random.default_rng(h * c + k)
    x, kernel = _rand(rng, 2, h, w, c), _rand(rng, k, k, c, o)

    def direct(v):
        return lax.conv_general_dilated(v, kernel, (s, s), pad.upper(), rhs_dilation=(d, d),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def fast(v):
        return ops.FAST.conv2d(v, kernel, strides=(s, s), padding=pad, dilation=(d, d))

    g = _rand(rng, *direct(x).shape)
    y, y_fast, gx, gx_fast = jax.jit(lambda x, g: (direct(x), fast(x), _vjp(direct, x, g), _vjp(fast, x, g)))(x, g)
    np.testing.assert_array_equal(y_fast, y)
    np.testing.assert_allclose(gx_fast, gx, atol=1e-5 * float(jnp.abs(gx).max()))


@pytest.mark.parametrize("h,s,pad", [(9, 2, "valid"), (10, 2, "same"), (9, 1, "valid")])
def test_1x1_convs_any_padding_and_stride(h, s, pad):
    rng = np.random.default_rng(h * s)
    x, kernel = _rand(rng, 2, h, h, 8), _rand(rng, 1, 1, 8, 6)
    pre = ops.FAST.prepare_conv(kernel)
    assert ops.FAST.prepares_conv(kernel.shape, (s, s), pad)
    assert ops.EXACT.prepares_conv(kernel.shape, (s, s), pad) == (s == 1)

    def direct(v):
        return lax.conv_general_dilated(v, kernel, (s, s), pad.upper(), dimension_numbers=("NHWC", "HWIO", "NHWC"))

    fast = lambda v: ops.FAST.conv2d(v, kernel, pre, strides=(s, s), padding=pad)  # noqa: E731
    g = _rand(rng, *direct(x).shape)
    y, y_fast, gx, gx_fast = jax.jit(lambda x, g: (direct(x), fast(x), _vjp(direct, x, g), _vjp(fast, x, g)))(x, g)
    np.testing.assert_allclose(y_fast, y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gx_fast, gx, rtol=1e-5, atol=1e-5)


def test_fast_window_ops_compute_exactly_under_highest_precision():
    """Under ``jax.default_matmul_precision("highest")`` the fast ops are the exact ones (parity mode)."""
    rng = np.random.default_rng(1)
    x, kernel = _rand(rng, 1, 9, 9, 4), _rand(rng, 3, 3, 4, 2)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_array_equal(ops.FAST.depthwise_conv2d(x, kernel, strides=(2, 2), padding="same"),
                                      ops.EXACT.depthwise_conv2d(x, kernel, strides=(2, 2), padding="same"))
