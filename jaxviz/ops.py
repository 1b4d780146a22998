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
  from the exact ops' by ~1e-5 relative per layer (see docs/EXACTNESS.md). Under
  ``jax.default_matmul_precision("highest"/"float32")`` — JAX's own statement that no approximation is
  wanted — the fast ops compute exactly as the exact ones.

The primitives with hand-written backward passes live in :mod:`jaxviz.conv_ops` (convolutions, dense) and
:mod:`jaxviz.window_ops` (pools, depthwise convolutions, window padding); this module decides where they apply.

The kernels the fast ops need (flipped, Winograd-transformed, transposed) are derived from the params once
per set of weights by :func:`prepare`; :class:`jaxviz.Model` owns and caches them and passes them to every
program as a traced argument.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax

from . import winograd, xla_cpu
from .conv_ops import FEW_CHANNELS, conv3x3, conv_few_channels, conv_strided, dense, flip_kernel, flipped_kernels
from .errors import JaxvizError
from .window_ops import avg_pool, depthwise_conv, max_pool2x2, max_pool_taps, reduce_max, window_pads

__all__ = ["EXACT", "FAST", "FEW_CHANNELS", "ElementwiseRule", "Ops", "avg_pool", "conv3x3", "conv_few_channels",
           "default_ops", "dense", "depthwise_conv", "flip_kernel", "flipped_kernels", "max_pool2x2",
           "max_pool_taps", "window_pads"]


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
        # XLA:CPU's input gradient without the transposed kernel is a slow path (see conv_ops.dense()).
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
        return conv_strided(x, kernel, strides, padding, dilation, groups)

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
        return reduce_max(x, tuple(pool), strides, padding)

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

    raise JaxvizError(f"unknown ops {ops!r}; use 'fast' (the CPU default) or 'exact' (Keras parity)")
