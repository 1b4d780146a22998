"""VGG networks in Flax with Keras's layer names, and the layer table that describes them.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.

One generic :class:`VGG` module; ``VGG16``/``VGG19`` and a tiny test variant are configurations of it.
Module names are Keras's layer names (``block1_conv1`` … ``block5_pool``, ``flatten``, ``fc1``, ``fc2``,
``predictions``), so converting Keras weights is a key-for-key copy. Kernels are HWIO and dense kernels
``[in, out]``, as Keras stores them. No I/O happens here.

The forward pass can stop early (``upto``) and return named intermediates (``taps``), and its ReLU is
swappable (guided backprop, deconvnet) without a second model definition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from . import winograd

# ---------------------------------------------------------------------------------------------------------
# Architecture descriptions


@dataclasses.dataclass(frozen=True)
class Arch:
    """A VGG configuration: convolutions per block, channels per block, and the classifier head."""

    name: str
    convs_per_block: tuple[int, ...]
    block_features: tuple[int, ...]
    fc_features: tuple[int, ...] = (4096, 4096)
    num_classes: int = 1000
    default_size: int = 224
    #: "flatten" (Keras VGG) or "gap" (global average pooling, the CAM head of Zhou et al. 2016).
    head: str = "flatten"
    #: Names of the output classes; None: ImageNet's for 1000 classes, else "class_<i>".
    class_names: tuple[str, ...] | None = None

    @property
    def min_size(self) -> int:
        return 2 ** len(self.convs_per_block)


ARCHS: dict[str, Arch] = {
    "vgg16": Arch("vgg16", (2, 2, 3, 3, 3), (64, 128, 256, 512, 512)),
    "vgg19": Arch("vgg19", (2, 2, 4, 4, 4), (64, 128, 256, 512, 512)),
    # VGG-shaped but tiny: for unit tests (same layer names as VGG16, a few channels each).
    "vgg_tiny": Arch("vgg_tiny", (2, 2, 3, 3, 3), (4, 6, 8, 8, 8), (16, 12), 10, 32),
}


def register_arch(arch: Arch) -> None:
    """Adds an architecture (e.g. the demo network) to the table `jaxviz.load` knows."""
    ARCHS[arch.name] = arch


def get_arch(arch: str | Arch) -> Arch:
    if isinstance(arch, Arch):
        return arch
    try:
        return ARCHS[arch.lower()]
    except KeyError:
        from .errors import JaxvizError

        raise JaxvizError(
            f"unknown architecture {arch!r}; choose one of: {', '.join(sorted(ARCHS))}"
        ) from None


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One row of Keras's model table."""

    name: str
    kind: str  # InputLayer, Conv2D, MaxPooling2D, Flatten, GlobalAveragePooling2D, Dense
    output_shape: tuple  # without the batch axis; None for a free spatial size
    params: int
    kernel_shape: tuple | None = None  # Conv2D/Dense: kernel shape; bias is kernel_shape[-1]


def layer_table(arch: str | Arch, include_top: bool = True, input_shape=None) -> list[LayerInfo]:
    """Keras's layer list for ``arch``: names, kinds, output shapes and parameter counts.

    Args:
      arch: architecture name or :class:`Arch`.
      include_top: whether the classifier head is part of the model.
      input_shape: ``(H, W, 3)``; default ``(S, S, 3)`` with the architecture's size when the top is
        included, ``(None, None, 3)`` without.
    """
    a = get_arch(arch)
    if input_shape is None:
        s = a.default_size if include_top else None
        input_shape = (s, s, 3)
    h, w, c = input_shape
    rows = [LayerInfo("input_layer", "InputLayer", (h, w, c), 0)]
    for b, (n_conv, feats) in enumerate(zip(a.convs_per_block, a.block_features), start=1):
        for i in range(1, n_conv + 1):
            kshape = (3, 3, c, feats)
            rows.append(LayerInfo(f"block{b}_conv{i}", "Conv2D", (h, w, feats), 9 * c * feats + feats, kshape))
            c = feats
        h = None if h is None else h // 2
        w = None if w is None else w // 2
        rows.append(LayerInfo(f"block{b}_pool", "MaxPooling2D", (h, w, c), 0))
    if include_top:
        if a.head == "gap":
            rows.append(LayerInfo("global_average_pooling", "GlobalAveragePooling2D", (c,), 0))
            n_in = c
        else:
            n_in = h * w * c
            rows.append(LayerInfo("flatten", "Flatten", (n_in,), 0))
        for i, feats in enumerate(a.fc_features, start=1):
            rows.append(LayerInfo(f"fc{i}", "Dense", (feats,), n_in * feats + feats, (n_in, feats)))
            n_in = feats
        rows.append(
            LayerInfo("predictions", "Dense", (a.num_classes,), n_in * a.num_classes + a.num_classes,
                      (n_in, a.num_classes))
        )
    return rows


def weighted_layers(arch: str | Arch, include_top: bool = True) -> dict[str, tuple[tuple, tuple]]:
    """``{layer: (kernel_shape, bias_shape)}`` for every layer that has weights, in network order."""
    return {
        r.name: (r.kernel_shape, (r.kernel_shape[-1],))
        for r in layer_table(arch, include_top)
        if r.kernel_shape is not None
    }


# ---------------------------------------------------------------------------------------------------------
# Primitives with hand-written backward passes.
#
# Both give the same values and gradients as the plain lax ops, but compile to code that XLA:CPU runs fast
# inside loops (see shared/PERF_NOTES.md): the conv's input gradient is an ordinary forward-style conv, and
# the max-pool gradient is an elementwise mask instead of a serial select-and-scatter.


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
            transformed: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """3×3, stride 1, "same" convolution of NHWC ``x`` with an HWIO ``kernel``.

    ``kernel_t`` is :func:`flip_kernel` of ``kernel`` if the caller has it precomputed (it is derived from
    ``kernel`` here otherwise); only the input gradient uses it. ``transformed`` = the Winograd kernels of
    ``kernel`` and ``kernel_t`` (:func:`flipped_kernels`): then, where :func:`jaxviz.winograd.applies`, the
    forward pass and the input gradient run as Winograd convolutions (not under
    ``jax.default_matmul_precision("highest")``).
    """
    kernel_t = flip_kernel(kernel) if kernel_t is None else kernel_t
    if transformed is not None and winograd.applies(x.shape):
        return _conv3x3_winograd(x, kernel, *transformed)
    return _conv3x3(x, kernel, kernel_t)


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


@jax.custom_vjp
def _conv3x3(x, kernel, kernel_t):
    return _conv(x, kernel)


def _conv3x3_fwd(x, kernel, kernel_t):
    return _conv(x, kernel), (x, kernel, kernel_t)


def _conv3x3_bwd(res, g):
    x, kernel, kernel_t = res
    if kernel.shape[2] <= FEW_CHANNELS and winograd.platform_uses_winograd() and winograd.precision_allows():
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


# ---------------------------------------------------------------------------------------------------------
# The Flax module


class Conv3x3(nn.Module):
    """Keras ``Conv2D(features, 3, padding="same")`` without its activation; params ``kernel``, ``bias``."""

    features: int
    kernel_init: Callable = nn.initializers.he_normal()

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (3, 3, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        # Precomputed input-gradient (and Winograd) kernels, when the caller passes the "flipped" collection.
        pre = {k: self.get_variable("flipped", k).astype(x.dtype)
               for k in ("kernel", "winograd", "winograd_t") if self.has_variable("flipped", k)}
        transformed = (pre["winograd"], pre["winograd_t"]) if "winograd" in pre else None
        return conv3x3(x, kernel.astype(x.dtype), pre.get("kernel"), transformed) + bias.astype(x.dtype)


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


class Dense(nn.Module):
    """Keras ``Dense(features)`` without its activation (params ``kernel``, ``bias``, as ``flax.linen.Dense``),
    using the precomputed transposed kernel of the ``"flipped"`` collection for its input gradient."""

    features: int
    kernel_init: Callable = nn.initializers.he_normal()

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        kernel_t = self.get_variable("flipped", "kernel") if self.has_variable("flipped", "kernel") else None
        kernel_t = None if kernel_t is None else kernel_t.astype(x.dtype)
        return dense(x, kernel.astype(x.dtype), kernel_t) + bias.astype(x.dtype)


class VGG(nn.Module):
    """A VGG network whose forward pass can stop at any layer and return named intermediates.

    ``__call__(x, upto=None, taps=(), relu=jax.nn.relu, perturb=None) -> (output, {tap: array})``:
      x: ``[N, H, W, 3]`` preprocessed (BGR, mean-subtracted) images.
      upto: the last layer to compute; ``None`` runs the whole network.
      taps: layer names whose outputs are returned in the dict.
      relu: the activation used after every conv and hidden dense layer (post-activation outputs are
        what Keras reports for those layers). ``predictions`` applies softmax; its pre-softmax value is
        available as the tap ``"logits"``.
      perturb: ``{layer: array}`` added to those layers' outputs (before taps see them and the pass goes
        on). A zero perturbation changes nothing, and the gradient with respect to it is the gradient with
        respect to the layer's output: how Grad-CAM and its family differentiate through a tap.
    """

    arch: Arch
    include_top: bool = True

    @nn.compact
    def __call__(self, x, upto: str | None = None, taps: Sequence[str] = (), relu: Callable = jax.nn.relu,
                 perturb: Mapping[str, jax.Array] | None = None):
        a = self.arch
        taps = tuple(taps)
        perturb = perturb or {}
        out: dict[str, jax.Array] = {}

        def emit(name, value):
            if name in perturb:
                value = value + perturb[name]
            if name in taps:
                out[name] = value
            return value, name == upto

        for b, (n_conv, feats) in enumerate(zip(a.convs_per_block, a.block_features), start=1):
            for i in range(1, n_conv + 1):
                x, stop = emit(f"block{b}_conv{i}", relu(Conv3x3(feats, name=f"block{b}_conv{i}")(x)))
                if stop:
                    return x, out
            x, stop = emit(f"block{b}_pool", max_pool2x2(x))
            if stop:
                return x, out
        if not self.include_top:
            return x, out
        if a.head == "gap":
            x = x.mean(axis=(1, 2))
            name = "global_average_pooling"
        else:
            # NHWC reshape flattens in H·W·C order, exactly as Keras's Flatten on channels-last data.
            x = x.reshape(x.shape[0], -1)
            name = "flatten"
        x, stop = emit(name, x)
        if stop:
            return x, out
        for i, feats in enumerate(a.fc_features, start=1):
            x, stop = emit(f"fc{i}", relu(Dense(feats, name=f"fc{i}")(x)))
            if stop:
                return x, out
        logits, stop = emit("logits", Dense(a.num_classes, name="predictions")(x))
        if stop:
            return logits, out
        probs, _ = emit("predictions", jax.nn.softmax(logits, axis=-1))
        return probs, out


def make_module(arch: str | Arch, include_top: bool = True) -> VGG:
    return VGG(get_arch(arch), include_top)


def random_params(arch: str | Arch, include_top: bool = True, seed: int = 0) -> dict:
    """Deterministic He-normal kernels and zero biases, ``{layer: {"kernel", "bias"}}`` as numpy float32.

    Drawn with numpy's PCG64 in network order, so the same seed gives the same weights on every platform
    and JAX version (for tests and benchmarks; these weights have learned nothing).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    params = {}
    for name, (kshape, bshape) in weighted_layers(arch, include_top).items():
        fan_in = int(np.prod(kshape[:-1]))
        kernel = rng.standard_normal(kshape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        params[name] = {"kernel": kernel, "bias": np.zeros(bshape, np.float32)}
    return params
