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
  convolutions for wide 3×3 layers (:mod:`jaxviz.winograd`), the first layer's input gradient as a matmul
  and shifted sums, and dense layers whose input gradient uses a transposed kernel. Their rounding differs
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
from jax import lax

from . import winograd

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
            transformed: tuple[jax.Array, jax.Array] | None = None, few_channels: bool | None = None) -> jax.Array:
    """Stride-1 "same" convolution of NHWC ``x`` with an HWIO ``kernel`` of odd size (3×3 in VGG).

    ``kernel_t`` is :func:`flip_kernel` of ``kernel`` if the caller has it precomputed (it is derived from
    ``kernel`` here otherwise); only the input gradient uses it. ``transformed`` = the Winograd kernels of
    ``kernel`` and ``kernel_t`` (:func:`flipped_kernels`): then, where :func:`jaxviz.winograd.applies`, the
    forward pass and the input gradient run as Winograd convolutions (not under
    ``jax.default_matmul_precision("highest")``). ``few_channels`` (default: on the CPU backend) computes a
    3×3 kernel's input gradient with ≤ :data:`FEW_CHANNELS` input channels as a matmul and shifted sums.
    """
    kernel_t = flip_kernel(kernel) if kernel_t is None else kernel_t
    if transformed is not None and winograd.applies(x.shape):
        return _conv3x3_winograd(x, kernel, *transformed)
    if few_channels is None:
        few_channels = winograd.platform_uses_winograd()
    few = few_channels and kernel.shape[:2] == (3, 3) and kernel.shape[2] <= FEW_CHANNELS
    return _conv3x3(few, x, kernel, kernel_t)


def _kernel_grad(x, kernel, g):
    # The kernel gradient is only computed if used (XLA removes it from input-gradient programs).
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k), kernel)
    return kernel_vjp(g)[0]


@jax.custom_vjp
def _conv3x3_winograd(x, kernel, u, u_t):
    return winograd.conv(x, u)


def _conv3x3_winograd_fwd(x, kernel, u, u_t):
    return winograd.conv(x, u), (x, kernel, u, u_t)


def _conv3x3_winograd_bwd(res, g):
    x, kernel, u, u_t = res
    # The input gradient is the conv with the flipped kernel, so also a Winograd conv (with its transform).
    # The transforms are functions of kernel: its whole gradient is the direct one.
    return winograd.conv(g, u_t), _kernel_grad(x, kernel, g), jnp.zeros_like(u), jnp.zeros_like(u_t)


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _conv3x3(few, x, kernel, kernel_t):
    return _conv(x, kernel)


def _conv3x3_fwd(few, x, kernel, kernel_t):
    return _conv(x, kernel), (x, kernel, kernel_t)


def _conv3x3_bwd(few, res, g):
    x, kernel, kernel_t = res
    if few and winograd.precision_allows():
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



def dense(x: jax.Array, kernel: jax.Array, kernel_t: jax.Array | None = None) -> jax.Array:
    """``x @ kernel``; with ``kernel_t`` (its transpose, :func:`flipped_kernels`) the input gradient is
    ``g @ kernel_t``. XLA:CPU computes ``g @ kernelᵀ`` for 2–16 rows without it at 164–450 ms for fc1
    (25088 × 4096; one row: 13 ms) — every gradient method on a batch paid that; with it, ~25 ms. For one
    row both directions are matrix–vector products over contiguous rows (``kernel_t @ x``, ``kernel @ g``):
    fc1 13.7 ms instead of 19 ms, at this CPU's memory bandwidth. Not in the exact mode
    (``jax.default_matmul_precision("highest")``), whose products and gradients stay autodiff's."""
    if kernel_t is not None and winograd.precision_allows():
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
# The seam


def _same_odd_stride1(kernel_shape, strides, padding, dilation, groups) -> bool:
    """Whether a conv's input gradient is the same conv with the flipped kernel (so :func:`conv3x3` applies)."""
    kh, kw = kernel_shape[:2]
    return (padding == "same" and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1
            and kh % 2 == 1 and kw % 2 == 1)


@dataclasses.dataclass(frozen=True)
class Ops:
    """How the layers compute (see the module docstring). Hashable: part of every compiled program's key.

    Attributes:
      fast: use the fast CPU arithmetic where it applies (prepared kernels, Winograd, transposed dense).
      relu: the function every ReLU-family activation of the graph applies where it is a plain ReLU
        (guided backprop and deconvnet swap it for a custom-VJP one; :meth:`with_relu`).
    """

    fast: bool = False
    relu: Callable = jax.nn.relu

    def with_relu(self, fn: Callable | None) -> Ops:
        return self if fn is None or fn is self.relu else dataclasses.replace(self, relu=fn)

    @property
    def name(self) -> str:
        return "fast" if self.fast else "exact"

    # --- what the fast ops precompute from the params ----------------------------------------------------

    def prepares_conv(self, kernel_shape, strides=(1, 1), padding="same", dilation=(1, 1), groups=1) -> bool:
        return _same_odd_stride1(kernel_shape, strides, padding, dilation, groups)

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
        if _same_odd_stride1(kernel.shape, strides, padding, dilation, groups):
            pre = prepared or {}
            transformed = None
            if self.fast and "winograd" in pre and kernel.shape[:2] == (3, 3):
                transformed = (pre["winograd"].astype(x.dtype), pre["winograd_t"].astype(x.dtype))
            kernel_t = pre.get("kernel")
            kernel_t = None if kernel_t is None else kernel_t.astype(x.dtype)
            few = self.fast and winograd.platform_uses_winograd()
            return conv3x3(x, kernel, kernel_t, transformed, few_channels=few)
        return lax.conv_general_dilated(x, kernel, tuple(strides), padding.upper(), rhs_dilation=tuple(dilation),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)

    def dense(self, x: jax.Array, kernel: jax.Array, prepared: Mapping | None = None) -> jax.Array:
        """``x @ kernel`` over the last axis (Keras ``Dense`` without bias)."""
        kernel_t = (prepared or {}).get("kernel") if self.fast else None
        if kernel_t is not None and x.ndim == 2:
            return dense(x, kernel, kernel_t.astype(x.dtype))
        return x @ kernel

    def max_pool(self, x: jax.Array, pool=(2, 2), strides=None, padding: str = "valid") -> jax.Array:
        """Keras ``MaxPooling2D``: windows ``pool``, ``strides`` (default = pool), "valid" or "same" padding."""
        strides = tuple(pool) if strides is None else tuple(strides)
        if tuple(pool) == (2, 2) and strides == (2, 2) and padding == "valid":
            return max_pool2x2(x)
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, *pool, 1), (1, *strides, 1), padding.upper())


EXACT = Ops(fast=False)
FAST = Ops(fast=True)


def default_ops(ops: str | Ops | None = None) -> Ops:
    """``"fast"``/``"exact"``/an :class:`Ops`; ``None`` = fast on the CPU backend, exact on accelerators (whose
    own convolution libraries already are the fast path)."""
    if isinstance(ops, Ops):
        return ops
    if ops is None:
        return FAST if winograd.platform_uses_winograd() else EXACT
    if ops in ("fast", "exact"):
        return FAST if ops == "fast" else EXACT
    from .errors import JaxvizError

    raise JaxvizError(f"unknown ops {ops!r}; use 'fast' (the CPU default) or 'exact' (Keras parity)")
