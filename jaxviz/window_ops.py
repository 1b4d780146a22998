"""Window operations with hand-written backward passes: 2×2 max-pools whose gradient is an elementwise mask
instead of a serial select-and-scatter, and k×k window ops (depthwise convolutions, max-pools of any window)
as k·k strided slices of the padded input, combined elementwise; average pooling; Keras's window padding.

They give the same values and gradients as the plain ``lax`` ops, but compile to code that XLA:CPU runs fast
inside loops (docs/PERFORMANCE.md). :class:`jaxviz.ops.Ops` decides where they are used."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def with_input_gradient(forward: Callable, input_gradient: Callable) -> Callable:
    """``forward(x, kernel, strides, padding, dilation)`` as a custom-VJP op whose input gradient is
    ``input_gradient(x, kernel, g, strides, padding, dilation)``; its kernel gradient is autodiff's of
    ``forward`` (XLA removes it from programs that only need the input gradient)."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
    def op(x, kernel, strides, padding, dilation):
        return forward(x, kernel, strides, padding, dilation)

    def op_fwd(x, kernel, strides, padding, dilation):
        return forward(x, kernel, strides, padding, dilation), (x, kernel)

    def op_bwd(strides, padding, dilation, res, g):
        x, kernel = res
        _, kernel_vjp = jax.vjp(lambda k: forward(x, k, strides, padding, dilation), kernel)
        return input_gradient(x, kernel, g, strides, padding, dilation), kernel_vjp(g)[0]

    op.defvjp(op_fwd, op_bwd)
    return op


def _pool_windows(x):
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, : 2 * h2, : 2 * w2, :]
    return x.reshape(n, h2, 2, w2, 2, c)


@jax.custom_vjp
def max_pool2x2(x: jax.Array) -> jax.Array:
    """2×2 max pooling, stride 2, "valid" padding (odd edges dropped, as Keras's MaxPooling2D)."""
    return _pool_windows(x).max(axis=(2, 4))


def _max_pool_fwd(x):
    y = max_pool2x2(x)
    return y, (x, y)


def _max_pool_bwd(res, g):
    x, y = res
    win = _pool_windows(x)
    n, h2, _, w2, _, c = win.shape
    # Route the gradient to the FIRST maximum of each window in row-major order, as TensorFlow's and
    # XLA's select-and-scatter do; ties (e.g. several zeros after a ReLU) matter for deconvnet.
    hit = win == y[:, :, None, :, None, :]
    first = jnp.zeros_like(hit[:, :, 0, :, 0, :])
    masks = []
    for i in (0, 1):
        for j in (0, 1):
            m = hit[:, :, i, :, j, :] & ~first
            first = first | m
            masks.append(m)
    mask = jnp.stack(masks, axis=-1).reshape(n, h2, w2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    dwin = mask.astype(g.dtype) * g[:, :, None, :, None, :]
    dx = dwin.reshape(n, 2 * h2, 2 * w2, c)
    pad_h, pad_w = x.shape[1] - 2 * h2, x.shape[2] - 2 * w2
    if pad_h or pad_w:
        dx = jnp.pad(dx, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    return (dx,)


max_pool2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


# ---------------------------------------------------------------------------------------------------------
# Window taps: a k×k window op as k·k strided slices of the padded input, combined elementwise.
#
# XLA:CPU runs a depthwise convolution (``feature_group_count`` = channels) on a generic loop; as nine
# multiply-adds of strided slices XLA fuses it into one elementwise loop, far quicker (docs/PERFORMANCE.md).
# Overlapping max-pools (ResNet's 3×3, stride 2) get their gradient the same way, without the serial select-and-scatter.


def window_pads(size: int, k: int, stride: int, dilation: int, padding: str) -> tuple[int, tuple[int, int]]:
    """Output size and (before, after) padding of one spatial axis, as Keras/TensorFlow pad ("same": the
    extra row, if any, after)."""
    span = (k - 1) * dilation + 1
    if padding == "valid":
        return (size - span) // stride + 1, (0, 0)
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return out, (total // 2, total - total // 2)


def _window_taps(x: jax.Array, window, strides, padding: str, dilation=(1, 1), fill=0.0) -> list[jax.Array]:
    """The input under each window position ``(i, j)`` (row-major) for every output pixel: ``kh·kw`` arrays of
    the output's spatial shape, strided slices of ``x`` padded with ``fill``."""
    (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
    oh, pad_h = window_pads(x.shape[1], kh, sh, dh, padding)
    ow, pad_w = window_pads(x.shape[2], kw, sw, dw, padding)
    if any(pad_h + pad_w):
        x = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)), constant_values=fill)
    return [x[:, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw]
            for i in range(kh) for j in range(kw)]


def _depthwise_taps(x, kernel, strides, padding, dilation):
    kh, kw, c, m = kernel.shape
    taps = _window_taps(x, (kh, kw), strides, padding, dilation)
    if m > 1:
        taps = [jnp.repeat(t, m, axis=-1) for t in taps]
    weights = kernel.reshape(kh * kw, c * m)
    out = taps[0] * weights[0]
    for t, w in zip(taps[1:], weights[1:]):
        out = out + t * w
    return out


def _depthwise_input_grad(x, kernel, g, strides, padding, dilation):
    """The correlation of the stride-dilated output gradient with the flipped kernel."""
    kh, kw, c, m = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation
    _, (top, _) = window_pads(x.shape[1], kh, sh, dh, padding)
    _, (left, _) = window_pads(x.shape[2], kw, sw, dw, padding)
    if sh > 1 or sw > 1:  # the output gradient at the window origins of the padded input
        g = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (0, 0, sh - 1), (0, 0, sw - 1), (0, 0, 0)))
    # dx_padded[y] = Σ_i g_dilated[y − i·d] w_i: a stride-1 correlation with the flipped kernel over g_dilated
    # padded by (k − 1)·d in front; crop to x's rows (the padding's) and columns.
    span_h, span_w = (kh - 1) * dh, (kw - 1) * dw
    pad_h = (span_h - top, x.shape[1] + top - g.shape[1])
    pad_w = (span_w - left, x.shape[2] + left - g.shape[2])
    g = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (pad_h[0], pad_h[1], 0), (pad_w[0], pad_w[1], 0), (0, 0, 0)))
    flipped = jnp.flip(kernel, (0, 1)).reshape(kh * kw, c * m)
    dx = None
    for t, (i, j) in enumerate((i, j) for i in range(kh) for j in range(kw)):
        term = g[:, i * dh: i * dh + x.shape[1], j * dw: j * dw + x.shape[2]] * flipped[t]
        dx = term if dx is None else dx + term
    if m > 1:
        dx = dx.reshape(*dx.shape[:3], c, m).sum(-1)
    return dx


_depthwise_conv = with_input_gradient(_depthwise_taps, _depthwise_input_grad)


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding: str = "valid",
                   dilation=(1, 1)) -> jax.Array:
    """Keras's depthwise convolution as a sum of shifted products: ``kernel`` ``[kh, kw, C, multiplier]``,
    output channel ``c·multiplier + m`` (the grouped ``lax`` convolution's values up to float32 rounding).

    Its input gradient is computed the same way — the correlation of the stride-dilated output gradient with
    the flipped kernel — not as autodiff's transposed slices, whose padded sum XLA:CPU runs on a slow path.
    """
    return _depthwise_conv(x, kernel, tuple(strides), padding, tuple(dilation))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_taps(x: jax.Array, window, strides, padding: str) -> jax.Array:
    """Max pooling over ``window`` with ``strides`` and "valid"/"same" padding (padded cells never win), whose
    gradient goes to each window's first maximum in row-major order — as XLA's select-and-scatter routes it —
    computed with elementwise masks. The forward pass is XLA's own ``reduce_window`` (the same values)."""
    return reduce_max(x, window, strides, padding)


def reduce_max(x, window, strides, padding: str):
    """XLA's max-pool (its gradient: autodiff's select-and-scatter)."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), padding.upper())


def avg_pool(x: jax.Array, window, strides, padding: str) -> jax.Array:
    """Keras's average pooling: window sums over the count of input cells in each window ("same" padding's
    padded cells are not counted, as Keras).

    The sum is ``lax.reduce_window`` with a Python ``0`` as its initial value: JAX differentiates only the
    sum it recognises by a concrete zero (``reduce_window_sum``); an array zero — a tracer under ``jit`` —
    makes it the generic ``reduce_window``, which has no derivative ("Linearization failed …"). The counts
    depend on shapes only: a numpy constant.
    """
    (kh, kw), (sh, sw) = window, strides
    total = lax.reduce_window(x, 0, lax.add, (1, kh, kw, 1), (1, sh, sw, 1), padding.upper())
    if padding == "valid":
        return total / np.asarray(kh * kw, x.dtype)
    counts = []
    for size, k, s in ((x.shape[1], kh, sh), (x.shape[2], kw, sw)):
        out, (before, _) = window_pads(size, k, s, 1, padding)
        starts = np.arange(out) * s - before
        counts.append(np.minimum(starts + k, size) - np.maximum(starts, 0))
    return total / np.asarray(np.outer(*counts)[None, :, :, None], x.dtype)


def _max_pool_taps_fwd(x, window, strides, padding):
    y = max_pool_taps(x, window, strides, padding)
    return y, (x, y)


def _max_pool_taps_bwd(window, strides, padding, res, g):
    x, y = res
    taps, taps_vjp = jax.vjp(lambda x: _window_taps(x, window, strides, padding, fill=-jnp.inf), x)
    taken = jnp.zeros(y.shape, bool)
    cotangents = []
    for t in taps:
        hit = (t == y) & ~taken
        taken = taken | hit
        cotangents.append(jnp.where(hit, g, jnp.zeros_like(g)))
    return taps_vjp(cotangents)


max_pool_taps.defvjp(_max_pool_taps_fwd, _max_pool_taps_bwd)
