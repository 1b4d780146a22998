"""How layers compute: the one seam between exact (Keras parity) and fast (CPU) arithmetic.

Every layer kind (:mod:`jaxviz.layers`) computes its convolutions, dense products and max-pools through an
:class:`Ops` handed to it by the forward pass (:func:`jaxviz.graph.forward`) — the way ``flax.linen.Dense``
takes its ``dot_general`` as a field — so the choice is made once, when a model is built, not by global
state read inside the layers:

- ``Ops(fast=False)``, the **exact** ops: plain ``lax`` arithmetic, the same values as Keras (bit-identical
  on VGG16/VGG19 under ``jax.default_matmul_precision("highest")``). Stride-1 "same" convolutions with odd
  kernels and 2×2 max-pools get hand-written backward passes with the same values that stay on XLA:CPU's
  fast path inside loops (a forward-style conv with the flipped kernel; an elementwise mask instead of a
  serial select-and-scatter).
- ``Ops(fast=True)``, the **fast** ops (the default on CPUs): additionally Winograd F(4×4, 3×3)
  convolutions for wide 3×3 layers (:mod:`jaxviz.winograd`), the input gradient of a layer with few input
  channels (the first) as a matmul and shifted sums, dense layers whose input gradient uses a transposed
  kernel, depthwise convolutions as shifted multiply-adds (:func:`depthwise_conv`), strided 1×1
  convolutions on the subsampled input, and max-pools of any window with mask gradients
  (:func:`max_pool_taps`). Their rounding differs
  from the exact ops' by ~1e-5 relative per layer (see README, "Exactness"). Under
  ``jax.default_matmul_precision("highest"/"float32")`` — JAX's own statement that no approximation is
  wanted — the fast ops compute exactly as the exact ones.

The kernels the fast ops need (flipped, Winograd-transformed, transposed) are derived from the params once
per set of weights by :func:`prepare`; :class:`jaxviz.Model` owns and caches them and passes them to every
program as a traced argument.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import winograd, xla_cpu

# ---------------------------------------------------------------------------------------------------------
# Primitives with hand-written backward passes.
#
# Both give the same values and gradients as the plain lax ops, but compile to code that XLA:CPU runs fast
# inside loops (docs/PERFORMANCE.md): the conv's input gradient is an ordinary forward-style conv, and the
# max-pool gradient is an elementwise mask instead of a serial select-and-scatter.


def _conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def flip_kernel(kernel: jax.Array) -> jax.Array:
    """The kernel of a 3×3 "same" conv's input gradient: rotated by 180° with in/out channels swapped."""
    return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


def flipped_kernels(params: dict, transforms: bool | None = None) -> dict:
    """``{conv layer: {"kernel": flip_kernel(kernel), ...}}``, the ``"flipped"`` collection of :class:`VGG`.

    Compute it once, outside a loop of gradient steps, and pass it to the forward pass: XLA:CPU leaves the
    flips of the backward convs inside a ``fori_loop`` body, where they cost up to ~19 % of a step.
    With ``transforms`` (default: on the CPU backend) the layers :func:`jaxviz.winograd.kernel_eligible`
    also get their Winograd kernels ``"winograd"`` and ``"winograd_t"`` (of the kernel and of its flip),
    and the dense layers their transposed kernel (:func:`dense`).
    """
    if transforms is None:
        transforms = winograd.platform_uses_winograd()
    out = {}
    for name, p in params.items():
        if p["kernel"].ndim == 2:
            if transforms:  # see dense(): XLA:CPU's input gradient without it is up to 30× slower
                out[name] = {"kernel": p["kernel"].T}
            continue
        kernel_t = flip_kernel(p["kernel"])
        out[name] = {"kernel": kernel_t}
        if transforms and winograd.kernel_eligible(p["kernel"].shape):
            out[name]["winograd"] = winograd.transform_kernel(p["kernel"])
            out[name]["winograd_t"] = winograd.transform_kernel(kernel_t)
    return out


def conv3x3(x: jax.Array, kernel: jax.Array, kernel_t: jax.Array | None = None,
            transformed: tuple[jax.Array, jax.Array] | None = None, few_channels: bool | None = None,
            approximate: bool | None = None, ynn_fusion: bool | None = None) -> jax.Array:
    """Stride-1 "same" convolution of NHWC ``x`` with an HWIO ``kernel`` of odd size (3×3 in VGG).

    ``kernel_t`` is :func:`flip_kernel` of ``kernel`` if the caller has it precomputed (it is derived from
    ``kernel`` here otherwise); only the input gradient uses it. ``transformed`` = the Winograd kernels of
    ``kernel`` and ``kernel_t`` (:func:`flipped_kernels`): then, where :func:`jaxviz.winograd.applies`, the
    forward pass and the input gradient run as Winograd convolutions (not under
    ``jax.default_matmul_precision("highest")``). ``few_channels`` (default: on the CPU backend) computes a
    3×3 kernel's input gradient with ≤ :data:`FEW_CHANNELS` input channels as a matmul and shifted sums.
    ``approximate`` and ``ynn_fusion`` are :class:`Ops`' facts (:attr:`Ops.approximate`, :attr:`Ops.ynn_fusion`);
    :meth:`Ops.conv2d` passes them, and only a direct call leaves them to be read here (default: the
    current matmul precision and ``XLA_FLAGS``).
    """
    kernel_t = flip_kernel(kernel) if kernel_t is None else kernel_t
    if approximate is None:
        approximate = winograd.precision_allows()
    if transformed is not None and winograd.applies(x.shape, min(kernel.shape[2:]), approximate):
        if ynn_fusion is None:
            ynn_fusion = not xla_cpu.ynn_disabled()
        return _conv3x3_winograd(ynn_fusion, x, kernel, *transformed)
    if few_channels is None:
        few_channels = winograd.platform_uses_winograd()
    few = few_channels and approximate and kernel.shape[:2] == (3, 3) and kernel.shape[2] <= FEW_CHANNELS
    return _conv3x3(few, x, kernel, kernel_t)


def _kernel_grad(x, kernel, g):
    # The kernel gradient is only computed if used (XLA removes it from input-gradient programs).
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k), kernel)
    return kernel_vjp(g)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv3x3_winograd(ynn_fusion, x, kernel, u, u_t):
    return winograd.conv(x, u, ynn_fusion=ynn_fusion)


def _conv3x3_winograd_fwd(ynn_fusion, x, kernel, u, u_t):
    return winograd.conv(x, u, ynn_fusion=ynn_fusion), (x, kernel, u, u_t)


def _conv3x3_winograd_bwd(ynn_fusion, res, g):
    x, kernel, u, u_t = res
    # The input gradient is the conv with the flipped kernel, so also a Winograd conv (with its transform).
    # The transforms are functions of kernel: its whole gradient is the direct one.
    return (winograd.conv(g, u_t, ynn_fusion=ynn_fusion), _kernel_grad(x, kernel, g), jnp.zeros_like(u),
            jnp.zeros_like(u_t))


_conv3x3_winograd.defvjp(_conv3x3_winograd_fwd, _conv3x3_winograd_bwd)


#: Input channels up to which a conv's input gradient is a matmul and shifted sums (the first layer's RGB).
FEW_CHANNELS = 4


def _input_grad_few_channels(g, kernel):
    """The input gradient of a 3×3 "same" conv with few input channels, as one matmul (each output pixel's
    contribution to its 3×3 neighbourhood) and nine shifted adds: 5–7× faster on XLA:CPU than the conv with
    a 3-channel output (64 → 3 channels at 224 px: 9.7 → 1.3 ms), whose vector lanes sit mostly idle."""
    n, h, w, _ = g.shape
    p = jnp.einsum("nhwo,ijco->nhwijc", g, kernel, precision=lax.Precision.HIGHEST)
    dx = sum(jnp.pad(p[:, :, :, i, j], ((0, 0), (i, 2 - i), (j, 2 - j), (0, 0))) for i in range(3) for j in range(3))
    return dx[:, 1:-1, 1:-1]


def _input_grad_few_channels_strided(g, kernel, x_shape, strides, padding, dilation):
    """The input gradient of any convolution with few input channels (e.g. ResNet's first 7×7, stride 2),
    as one matmul (each output pixel's contribution to its window) and, for each of the stride's s×s output
    phases, a sum of shifted slices — no interior padding, which XLA:CPU fuses into slow code."""
    kh, kw, cin, _ = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation
    oh, (top, _) = window_pads(x_shape[1], kh, sh, dh, padding)
    ow, (left, _) = window_pads(x_shape[2], kw, sw, dw, padding)
    p = jnp.einsum("nhwo,ijco->nhwijc", g, kernel, precision=lax.Precision.HIGHEST)
    hp, wp = top + x_shape[1], left + x_shape[2]  # the padded input's rows/columns that reach x
    rows_a, cols_a = -(-hp // sh), -(-wp // sw)
    zero = jnp.zeros((), g.dtype)

    def phase(r, q):  # dx_padded[s·a + r, s·b + q] = Σ_{i·d ≡ r, j·d ≡ q} p_ij[a − (i·d − r)/s, b − (j·d − q)/s]
        total = None
        for i in range(kh):
            if (i * dh - r) % sh:
                continue
            for j in range(kw):
                if (j * dw - q) % sw:
                    continue
                ki, kj = (i * dh - r) // sh, (j * dw - q) // sw
                term = lax.pad(p[:, :, :, i, j], zero, ((0, 0, 0), (ki, rows_a - oh - ki, 0),
                                                        (kj, cols_a - ow - kj, 0), (0, 0, 0)))
                total = term if total is None else total + term
        return jnp.zeros((g.shape[0], rows_a, cols_a, cin), g.dtype) if total is None else total

    phases = jnp.stack([jnp.stack([phase(r, q) for q in range(sw)], axis=3) for r in range(sh)], axis=2)
    dx = phases.reshape(g.shape[0], rows_a * sh, cols_a * sw, cin)
    return dx[:, top: top + x_shape[1], left: left + x_shape[2]]


def _conv_strided(x, kernel, strides, padding, dilation, groups=1):
    """XLA's own convolution: NHWC ``x``, HWIO ``kernel``, Keras's "same"/"valid" padding."""
    return lax.conv_general_dilated(x, kernel, tuple(strides), padding.upper(), rhs_dilation=tuple(dilation),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


def _with_input_gradient(forward: Callable, input_gradient: Callable) -> Callable:
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


_conv_few_channels = _with_input_gradient(
    _conv_strided, lambda x, kernel, g, *window: _input_grad_few_channels_strided(g, kernel, x.shape, *window))


def conv_few_channels(x: jax.Array, kernel: jax.Array, strides, padding: str, dilation) -> jax.Array:
    """A convolution with ≤ :data:`FEW_CHANNELS` input channels (any kernel, stride, dilation, padding) whose
    input gradient is :func:`_input_grad_few_channels_strided`: XLA:CPU's own, a convolution with 3 output
    channels (and for strides a dilated one), leaves its vector lanes mostly idle."""
    return _conv_few_channels(x, kernel, tuple(strides), padding, tuple(dilation))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv3x3(few, x, kernel, kernel_t):
    return _conv(x, kernel)


def _conv3x3_fwd(few, x, kernel, kernel_t):
    return _conv(x, kernel), (x, kernel, kernel_t)


def _conv3x3_bwd(few, res, g):
    x, kernel, kernel_t = res
    if few:  # decided by conv3x3: few input channels, on a CPU, not in the exact mode
        dx = _input_grad_few_channels(g, kernel)
    else:
        # d/dx of a stride-1 "same" 3×3 conv = the same conv with the flipped kernel: a forward-style conv,
        # which stays on XLA:CPU's fast path inside loops (autodiff's reversed-kernel conv does not).
        dx = _conv(g, kernel_t)
    # kernel_t is flip_kernel(kernel): the kernel's whole gradient is the direct one, none flows through it.
    return dx, _kernel_grad(x, kernel, g), jnp.zeros_like(kernel_t)


_conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


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



def dense(x: jax.Array, kernel: jax.Array, kernel_t: jax.Array | None = None,
          approximate: bool | None = None) -> jax.Array:
    """``x @ kernel``; with ``kernel_t`` (its transpose, :func:`flipped_kernels`) the input gradient is
    ``g @ kernel_t``. XLA:CPU computes ``g @ kernelᵀ`` for 2–16 rows without it at 164–450 ms for fc1
    (25088 × 4096; one row: 13 ms) — every gradient method on a batch paid that; with it, ~25 ms. For one
    row both directions are matrix–vector products over contiguous rows (``kernel_t @ x``, ``kernel @ g``):
    fc1 13.7 ms instead of 19 ms, at this CPU's memory bandwidth. Not in the exact mode
    (``approximate`` False, :attr:`Ops.approximate`; default: the current matmul precision allows it), whose
    products and gradients stay autodiff's."""
    if approximate is None:
        approximate = winograd.precision_allows()
    if kernel_t is not None and approximate:
        return _dense(x, kernel, kernel_t)
    return x @ kernel


def _matvec_rows(x, kernel, kernel_t):
    """``x @ kernel`` for one row as ``kernel_t @ x[0]``: every output a dot product of a contiguous row."""
    return (kernel_t @ x[0])[None] if x.shape[0] == 1 else x @ kernel


@jax.custom_vjp
def _dense(x, kernel, kernel_t):
    return _matvec_rows(x, kernel, kernel_t)


def _dense_fwd(x, kernel, kernel_t):
    return _matvec_rows(x, kernel, kernel_t), (x, kernel, kernel_t)


def _dense_bwd(res, g):
    x, kernel, kernel_t = res
    # kernel_t is kernel's transpose: the kernel's whole gradient is the direct one.
    return _matvec_rows(g, kernel_t, kernel), x.T @ g, jnp.zeros_like(kernel_t)


_dense.defvjp(_dense_fwd, _dense_bwd)




# ---------------------------------------------------------------------------------------------------------
# Window taps: a k×k window op as k·k strided slices of the padded input, combined elementwise.
#
# XLA:CPU runs a depthwise convolution (``feature_group_count`` = channels) on a generic loop: MobileNetV2's
# seventeen depthwise layers at 224 px take ~200 ms forward at batch 1; as nine multiply-adds of strided
# slices, which XLA fuses into one elementwise loop, ~10 ms (docs/PERFORMANCE.md). Overlapping max-pools
# (ResNet's 3×3, stride 2) get their gradient the same way, without the serial select-and-scatter.


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


_depthwise_conv = _with_input_gradient(_depthwise_taps, _depthwise_input_grad)


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding: str = "valid",
                   dilation=(1, 1)) -> jax.Array:
    """Keras's depthwise convolution as a sum of shifted products: ``kernel`` ``[kh, kw, C, multiplier]``,
    output channel ``c·multiplier + m`` (the grouped ``lax`` convolution's values up to float32 rounding).

    Its input gradient is computed the same way — the correlation of the stride-dilated output gradient with
    the flipped kernel — not as autodiff's transposed slices, whose padded sum XLA:CPU runs ~10× slower.
    """
    return _depthwise_conv(x, kernel, tuple(strides), padding, tuple(dilation))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_taps(x: jax.Array, window, strides, padding: str) -> jax.Array:
    """Max pooling over ``window`` with ``strides`` and "valid"/"same" padding (padded cells never win), whose
    gradient goes to each window's first maximum in row-major order — as XLA's select-and-scatter routes it —
    computed with elementwise masks. The forward pass is XLA's own ``reduce_window`` (the same values)."""
    return _reduce_max(x, window, strides, padding)


def _reduce_max(x, window, strides, padding: str):
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



# ---------------------------------------------------------------------------------------------------------
# The seam


def _same_odd_stride1(kernel_shape, strides, padding, dilation, groups) -> bool:
    """Whether a conv's input gradient is the same conv with the flipped kernel (so :func:`conv3x3` applies):
    stride-1 "same" convs with odd kernels, and 1×1 convs with either padding (neither pads anything)."""
    kh, kw = kernel_shape[:2]
    return ((padding == "same" or (kh, kw) == (1, 1)) and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)
            and groups == 1 and kh % 2 == 1 and kw % 2 == 1)


def _strided_1x1(kernel_shape, strides, groups) -> bool:
    """A strided 1×1 conv reads only its windows' origins (no padding either way): the 1×1 conv of
    ``x[:, ::s, ::s]``, whose input gradient then needs no dilated convolution."""
    return tuple(kernel_shape[:2]) == (1, 1) and tuple(strides) != (1, 1) and groups == 1


class ElementwiseRule:
    """A backward rule for every elementwise nonlinearity of the graph (DeepLIFT's Rescale rule), given to the
    forward pass as its ``relu``: :meth:`apply` computes ``f(x)`` with the rule's backward pass; calling the
    rule on ``x`` is ``apply(jax.nn.relu, x)``."""

    def apply(self, f: Callable, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.apply(jax.nn.relu, x)


@dataclasses.dataclass(frozen=True)
class Ops:
    """How the layers compute (see the module docstring). Hashable: part of every compiled program's key.

    Ops decides alone: the facts the arithmetic depends on — the backend, XLA:CPU's flags, the matmul
    precision — are its fields, as ``flax.linen.Dense`` takes its ``precision`` and ``dot_general`` as fields,
    and the layers read nothing global while they are traced. :func:`default_ops` fixes the backend and the
    flags when a model is built. The precision is fixed per call, where a program is looked up
    (:meth:`at_precision`, :func:`jaxviz.runtime.compiled`), not when the model is built: a model built
    before a ``with jax.default_matmul_precision("highest"):`` block (the comparisons' exact mode) must
    compute exactly inside it, and the precision is then part of the program's key, so the exact and the
    fast programs never share a cache entry. A field left ``None`` is read once where the forward pass
    starts (:meth:`resolved`): only for ops used directly, outside a model's programs.

    Attributes:
      fast: use the fast CPU arithmetic where it applies (prepared kernels, Winograd, transposed dense).
      relu: the function every ReLU-family activation of the graph applies where it is a plain ReLU
        (guided backprop and deconvnet swap it for a custom-VJP one; :meth:`with_relu`); an
        :class:`ElementwiseRule` applies to every elementwise nonlinearity (:meth:`nonlinear`).
      platform: the JAX backend the programs run on ("cpu", "gpu", "tpu"): the CPU-only fast paths (Winograd,
        few-channel and strided-1×1 convolutions) apply on "cpu" only.
      ynn_fusion: whether XLA:CPU hands fusions to YNNPACK (JAX's default; off with jaxviz's ``XLA_FLAGS``,
        :mod:`jaxviz.xla_cpu`): Winograd's tile transforms take the form that stays fast under it.
      precision: the matmul precision the programs are traced under (``jax.default_matmul_precision``'s
        value, ``"default"`` for none): "highest"/"float32" is the exact mode, where the fast ops compute as
        the exact ones (:attr:`approximate`).
    """

    fast: bool = False
    relu: Callable = jax.nn.relu
    platform: str | None = None
    ynn_fusion: bool | None = None
    precision: str | None = None

    def with_relu(self, fn: Callable | None) -> Ops:
        return self if fn is None or fn is self.relu else dataclasses.replace(self, relu=fn)

    def at_precision(self, precision: str | None) -> Ops:
        """These ops under the matmul ``precision`` (a ``jax.default_matmul_precision`` value; ``None``: JAX's
        default)."""
        return dataclasses.replace(self, precision=_precision_name(precision))

    def resolved(self) -> Ops:
        """These ops with every field left ``None`` read from JAX's current state (backend, ``XLA_FLAGS``,
        matmul precision)."""
        if None not in (self.platform, self.ynn_fusion, self.precision):
            return self
        return dataclasses.replace(
            self, platform=jax.default_backend() if self.platform is None else self.platform,
            ynn_fusion=not xla_cpu.ynn_disabled() if self.ynn_fusion is None else self.ynn_fusion,
            precision=(_precision_name(jax.config.jax_default_matmul_precision) if self.precision is None
                       else self.precision))

    @property
    def approximate(self) -> bool:
        """Whether approximations are allowed: False under the "highest"/"float32" matmul precision (the exact
        mode; then the fast ops compute as the exact ones). Read from JAX's current state when :attr:`precision`
        is not fixed (ops used directly, outside the forward pass)."""
        if self.precision is None:
            return winograd.precision_allows()
        return self.precision not in winograd.EXACT_PRECISIONS

    @property
    def cpu(self) -> bool:
        """Whether the programs run on XLA:CPU (where Winograd and the other CPU fast paths apply); read from
        JAX's default backend when :attr:`platform` is not fixed (ops used directly)."""
        if self.platform is None:
            return winograd.platform_uses_winograd()
        return self.platform == "cpu"

    def nonlinear(self, f: Callable, x: jax.Array, via_relu: Callable | None = None) -> jax.Array:
        """The elementwise nonlinearity ``f`` on ``x``: ``relu.apply(f, x)`` under an :class:`ElementwiseRule`;
        otherwise ``via_relu(x)`` where given (``f`` written with :attr:`relu`, so that guided backprop's ReLU
        rule reaches the ReLU inside a clipped ReLU), else ``f(x)``."""
        if isinstance(self.relu, ElementwiseRule):
            return self.relu.apply(f, x)
        return f(x) if via_relu is None else via_relu(x)

    @property
    def name(self) -> str:
        return "fast" if self.fast else "exact"

    # --- what the fast ops precompute from the params ----------------------------------------------------

    def prepares_conv(self, kernel_shape, strides=(1, 1), padding="same", dilation=(1, 1), groups=1) -> bool:
        return (_same_odd_stride1(kernel_shape, strides, padding, dilation, groups)
                or (self.fast and _strided_1x1(kernel_shape, strides, groups)))

    def prepare_conv(self, kernel: jax.Array) -> dict:
        """``{"kernel": flipped, ["winograd", "winograd_t"]}`` for a conv :meth:`prepares_conv` accepts."""
        kernel_t = flip_kernel(kernel)
        out = {"kernel": kernel_t}
        if self.fast and winograd.kernel_eligible(kernel.shape):
            out["winograd"] = winograd.transform_kernel(kernel)
            out["winograd_t"] = winograd.transform_kernel(kernel_t)
        return out

    def prepare_dense(self, kernel: jax.Array) -> dict | None:
        # XLA:CPU's input gradient without the transposed kernel is up to 30× slower (see dense()).
        return {"kernel": kernel.T} if self.fast else None

    # --- the arithmetic ------------------------------------------------------------------------------

    def conv2d(self, x: jax.Array, kernel: jax.Array, prepared: Mapping | None = None, *, strides=(1, 1),
               padding: str = "same", dilation=(1, 1), groups: int = 1) -> jax.Array:
        """Keras ``Conv2D``'s convolution (no bias): NHWC ``x``, HWIO ``kernel`` (``[kh, kw, Cin/groups, Cout]``)."""
        fast_cpu = self.fast and self.cpu and self.approximate
        if fast_cpu and _strided_1x1(kernel.shape, strides, groups):
            x, strides = x[:, :: strides[0], :: strides[1]], (1, 1)
        if _same_odd_stride1(kernel.shape, strides, padding, dilation, groups):
            pre = prepared or {}
            transformed = None
            if self.fast and "winograd" in pre and kernel.shape[:2] == (3, 3):
                transformed = (pre["winograd"].astype(x.dtype), pre["winograd_t"].astype(x.dtype))
            kernel_t = pre.get("kernel")
            kernel_t = None if kernel_t is None else kernel_t.astype(x.dtype)
            return conv3x3(x, kernel, kernel_t, transformed, few_channels=self.fast and self.cpu,
                           approximate=self.approximate, ynn_fusion=self.ynn_fusion)
        if fast_cpu and groups == 1 and kernel.shape[2] <= FEW_CHANNELS:
            return conv_few_channels(x, kernel, tuple(strides), padding, tuple(dilation))
        return _conv_strided(x, kernel, strides, padding, dilation, groups)

    def depthwise_conv2d(self, x: jax.Array, kernel: jax.Array, *, strides=(1, 1), padding: str = "valid",
                         dilation=(1, 1)) -> jax.Array:
        """Keras ``DepthwiseConv2D``'s convolution (no bias): ``kernel`` ``[kh, kw, C, multiplier]``, output
        channel ``c·multiplier + m``. Fast: :func:`depthwise_conv`; exact: the grouped ``lax`` convolution."""
        if self.fast and self.approximate:
            return depthwise_conv(x, kernel, tuple(strides), padding, tuple(dilation))
        kh, kw, c, m = kernel.shape
        return self.conv2d(x, kernel.reshape(kh, kw, 1, c * m), None, strides=strides, padding=padding,
                           dilation=dilation, groups=c)

    def dense(self, x: jax.Array, kernel: jax.Array, prepared: Mapping | None = None) -> jax.Array:
        """``x @ kernel`` over the last axis (Keras ``Dense`` without bias)."""
        kernel_t = (prepared or {}).get("kernel") if self.fast else None
        if kernel_t is not None and x.ndim == 2:
            return dense(x, kernel, kernel_t.astype(x.dtype), approximate=self.approximate)
        return x @ kernel

    def max_pool(self, x: jax.Array, pool=(2, 2), strides=None, padding: str = "valid") -> jax.Array:
        """Keras ``MaxPooling2D``: windows ``pool``, ``strides`` (default = pool), "valid" or "same" padding."""
        strides = tuple(pool) if strides is None else tuple(strides)
        if tuple(pool) == (2, 2) and strides == (2, 2) and padding == "valid":
            return max_pool2x2(x)
        if self.fast and self.approximate:
            return max_pool_taps(x, tuple(pool), strides, padding)
        return _reduce_max(x, tuple(pool), strides, padding)

    def avg_pool(self, x: jax.Array, pool=(2, 2), strides=None, padding: str = "valid") -> jax.Array:
        """Keras ``AveragePooling2D`` (:func:`avg_pool`; the same in both modes)."""
        return avg_pool(x, tuple(pool), tuple(pool) if strides is None else tuple(strides), padding)


#: The exact and the fast ops with nothing fixed yet (:func:`default_ops` fixes the backend and the flags).
EXACT = Ops(fast=False)
FAST = Ops(fast=True)


def _precision_name(precision) -> str:
    """A ``jax.default_matmul_precision`` value as a hashable name (``"default"`` for JAX's default)."""
    return "default" if precision is None else str(precision)


def default_ops(ops: str | Ops | None = None) -> Ops:
    """``"fast"``/``"exact"``/an :class:`Ops`; ``None`` = fast on the CPU backend, exact on accelerators (whose
    own convolution libraries already are the fast path). The backend and the CPU flags are fixed here, when
    the model is built (fields an :class:`Ops` given leaves ``None``); the precision stays per call (see
    :class:`Ops`)."""
    platform = jax.default_backend()
    facts = dict(platform=platform, ynn_fusion=not xla_cpu.ynn_disabled())
    if isinstance(ops, Ops):
        return dataclasses.replace(ops, **{k: v for k, v in facts.items() if getattr(ops, k) is None})
    if ops is None:
        ops = "fast" if platform == "cpu" else "exact"
    if ops in ("fast", "exact"):
        return dataclasses.replace(FAST if ops == "fast" else EXACT, **facts)
    from .errors import JaxvizError

    raise JaxvizError(f"unknown ops {ops!r}; use 'fast' (the CPU default) or 'exact' (Keras parity)")
