"""Convolutions and dense products with hand-written backward passes: stride-1 "same" convolutions whose input
gradient is a forward-style conv with the flipped kernel (or Winograd's, :mod:`jaxviz.winograd`), the input
gradient of a layer with few input channels as a matmul and shifted sums, and dense layers whose input
gradient uses a transposed kernel.

They give the same values and gradients as the plain ``lax`` ops, but compile to code that XLA:CPU runs fast
inside loops (docs/PERFORMANCE.md). :class:`jaxviz.ops.Ops` decides where they are used."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from . import winograd, xla_cpu
from .window_ops import window_pads, with_input_gradient


def _conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def flip_kernel(kernel: jax.Array) -> jax.Array:
    """The kernel of a 3×3 "same" conv's input gradient: rotated by 180° with in/out channels swapped."""
    return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


def flipped_kernels(params: dict, transforms: bool | None = None) -> dict:
    """``{conv layer: {"kernel": flip_kernel(kernel), ...}}`` for a params dict of plain convs and dense layers
    (a graph's kernels are prepared by :func:`jaxviz.graph.prepare`, which calls its ops per layer).

    Compute it once, outside a loop of gradient steps, and pass it to the forward pass: XLA:CPU leaves the
    flips of the backward convs inside a ``fori_loop`` body, where they would be redone every step
    (docs/PERFORMANCE.md).
    With ``transforms`` (default: on the CPU backend) the layers :func:`jaxviz.winograd.kernel_eligible`
    also get their Winograd kernels ``"winograd"`` and ``"winograd_t"`` (of the kernel and of its flip),
    and the dense layers their transposed kernel (:func:`dense`).
    """
    if transforms is None:
        transforms = winograd.platform_uses_winograd()
    out = {}
    for name, p in params.items():
        if p["kernel"].ndim == 2:
            if transforms:  # see dense(): XLA:CPU's input gradient without it is slow
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
    contribution to its 3×3 neighbourhood) and nine shifted adds, which fill XLA:CPU's vector lanes, unlike
    the conv with a 3-channel output, whose lanes sit mostly idle (docs/PERFORMANCE.md)."""
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


def conv_strided(x, kernel, strides, padding, dilation, groups=1):
    """XLA's own convolution: NHWC ``x``, HWIO ``kernel``, Keras's "same"/"valid" padding."""
    return lax.conv_general_dilated(x, kernel, tuple(strides), padding.upper(), rhs_dilation=tuple(dilation),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


_conv_few_channels = with_input_gradient(
    conv_strided, lambda x, kernel, g, *window: _input_grad_few_channels_strided(g, kernel, x.shape, *window))


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


def dense(x: jax.Array, kernel: jax.Array, kernel_t: jax.Array | None = None,
          approximate: bool | None = None) -> jax.Array:
    """``x @ kernel``; with ``kernel_t`` (its transpose, :func:`flipped_kernels`) the input gradient is
    ``g @ kernel_t``: XLA:CPU's ``g @ kernelᵀ`` for a few rows is a slow path that every gradient method on
    a batch would pay (docs/PERFORMANCE.md). For one row both directions are matrix–vector products over
    contiguous rows (``kernel_t @ x``, ``kernel @ g``), bounded by memory bandwidth. Not in the exact mode
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
