"""Weighted layers: convolutions, dense, normalisations and scales, and :func:`weight_names`, the order in
which Keras creates each kind's weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..errors import JaxvizError
from .operations import OPERATIONS
from .registry import axes_of, broadcast_along, check_channels_last, concrete_zero, constant, kind, pair, weight


@kind("Conv2D", "Convolution2D")
def conv2d(p, inputs, cfg, ops):
    x = inputs[0]
    check_channels_last(cfg, "Conv2D")
    y = ops.conv2d(x, weight(p, "kernel", x), p.get("prepared"), strides=pair(cfg.get("strides", 1)),
                   padding=cfg.get("padding", "valid"), dilation=pair(cfg.get("dilation_rate", 1)),
                   groups=int(cfg.get("groups", 1)))
    if cfg.get("use_bias", True):
        y = y + weight(p, "bias", x)
    return y, cfg.get("activation", "linear")


def _depthwise(x, kernel, cfg, ops):
    """A depthwise convolution: ``kernel`` ``[kh, kw, C, multiplier]``; output channel ``c·multiplier + m``."""
    return ops.depthwise_conv2d(x, kernel, strides=pair(cfg.get("strides", 1)), padding=cfg.get("padding", "valid"),
                                dilation=pair(cfg.get("dilation_rate", 1)))


@kind("DepthwiseConv2D")
def depthwise_conv2d(p, inputs, cfg, ops):
    """Keras's ``DepthwiseConv2D``; its kernel ``[kh, kw, C, depth_multiplier]`` is ``p["kernel"]`` (Keras 3's
    name; Keras 2 called it ``depthwise_kernel``, :mod:`jaxviz.frontends.keras` stores it as ``kernel``)."""
    x = inputs[0]
    check_channels_last(cfg, "DepthwiseConv2D")
    y = _depthwise(x, weight(p, "kernel", x), cfg, ops)
    if cfg.get("use_bias", True):
        y = y + weight(p, "bias", x)
    return y, cfg.get("activation", "linear")


@kind("SeparableConv2D", "SeparableConvolution2D")
def separable_conv2d(p, inputs, cfg, ops):
    """Keras's ``SeparableConv2D``: a depthwise convolution (``depthwise_kernel``, with the strides, padding and
    dilation), then a 1×1 convolution (``pointwise_kernel``), then the bias."""
    x = inputs[0]
    check_channels_last(cfg, "SeparableConv2D")
    y = _depthwise(x, weight(p, "depthwise_kernel", x), cfg, ops)
    y = ops.conv2d(y, weight(p, "pointwise_kernel", x), None, strides=(1, 1), padding="valid")
    if cfg.get("use_bias", True):
        y = y + weight(p, "bias", x)
    return y, cfg.get("activation", "linear")


def _transpose_pads(k: int, stride: int, dilation: int, padding: str, output_padding) -> tuple[int, int]:
    """Keras's padding of a transposed convolution's dilated input (keras.backend.common.backend_utils)."""
    k = (k - 1) * dilation + 1
    if padding == "valid":
        extra = max(k, stride) - k if output_padding is None else int(output_padding)
        return k - 1, k - 1 + extra
    total = stride + k - 2 if output_padding is None else k + k % 2 - 2 + int(output_padding)
    left = min(total // 2 + total % 2, k - 1)
    return left, total - left


@kind("Conv2DTranspose", "Convolution2DTranspose")
def conv2d_transpose(p, inputs, cfg, ops):
    """Keras's ``Conv2DTranspose``: kernel ``[kh, kw, out, in]``, the gradient of a strided convolution."""
    x = inputs[0]
    check_channels_last(cfg, "Conv2DTranspose")
    kernel = weight(p, "kernel", x)
    strides, dilation = pair(cfg.get("strides", 1)), pair(cfg.get("dilation_rate", 1))
    out_pad = cfg.get("output_padding")
    out_pad = [None, None] if out_pad is None else list(pair(out_pad))
    pads = [_transpose_pads(kernel.shape[i], strides[i], dilation[i], cfg.get("padding", "valid"), out_pad[i])
            for i in (0, 1)]
    y = jax.lax.conv_transpose(x, kernel, strides, pads, rhs_dilation=dilation,
                               dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)
    if cfg.get("use_bias", True):
        y = y + weight(p, "bias", x)
    return y, cfg.get("activation", "linear")


@kind("Dense")
def dense(p, inputs, cfg, ops):
    x = inputs[0]
    y = ops.dense(x, weight(p, "kernel", x), p.get("prepared"))
    if cfg.get("use_bias", True):
        y = y + weight(p, "bias", x)
    return y, cfg.get("activation", "linear")


@kind("BatchNormalization")
def batch_normalization(p, inputs, cfg, ops):
    """Inference-mode batch normalisation (Ioffe & Szegedy, 2015) with the moving statistics, computed as
    Keras 3's JAX backend does: ``x · (γ / √(var + ε)) + (β − mean · γ / √(var + ε))``."""
    x = inputs[0]
    axes = axes_of(cfg.get("axis", -1), x.ndim)
    b = lambda v: broadcast_along(v, axes, x.ndim)
    inv = jax.lax.rsqrt(b(weight(p, "moving_variance", x)) + jnp.asarray(cfg.get("epsilon", 1e-3), x.dtype))
    if cfg.get("scale", True):
        inv = inv * b(weight(p, "gamma", x))
    res = -b(weight(p, "moving_mean", x)) * inv
    if cfg.get("center", True):
        res = res + b(weight(p, "beta", x))
    return x * inv + res


@kind("LayerNormalization")
def layer_normalization(p, inputs, cfg, ops):
    """Layer normalisation (Ba et al., 2016) over ``axis`` (default the last)."""
    x = inputs[0]
    axes = axes_of(cfg.get("axis", -1), x.ndim)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + jnp.asarray(cfg.get("epsilon", 1e-3), x.dtype))
    if cfg.get("scale", True):
        y = y * broadcast_along(weight(p, "gamma", x), axes, x.ndim)
    if cfg.get("center", True):
        y = y + broadcast_along(weight(p, "beta", x), axes, x.ndim)
    return y


@kind("Normalization")
def normalization(p, inputs, cfg, ops):
    """Keras's ``Normalization``: ``(x − mean) / max(√variance, 1e-7)`` over ``axis`` (the statistics are weights
    of an adapted layer, or in the config); ``invert=True`` undoes it."""
    x = inputs[0]
    axis = cfg.get("axis", -1)
    axes = () if axis is None else axes_of(axis, x.ndim)
    if "mean" in p:
        mean, var = weight(p, "mean", x), weight(p, "variance", x)
    else:
        if cfg.get("mean") is None or cfg.get("variance") is None:
            raise JaxvizError("a Normalization layer has neither adapted statistics nor mean/variance in its config")
        mean, var = constant(cfg["mean"], x), constant(cfg["variance"], x)
    mean, var = broadcast_along(mean, axes, x.ndim), broadcast_along(var, axes, x.ndim)
    std = jnp.maximum(jnp.sqrt(var), jnp.asarray(1e-7, x.dtype))
    return mean + x * std if cfg.get("invert", False) else (x - mean) / std


@kind("LRN")
def lrn(p, inputs, cfg, ops):
    """Local response normalisation across channels (Krizhevsky et al., 2012; ONNX's ``LRN``):
    ``x / (bias + alpha/size · Σ x²)^beta``, the sum over the ``size`` channels around each one."""
    x = inputs[0]
    size = int(cfg["size"])
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = jnp.pad(x * x, [(0, 0)] * (x.ndim - 1) + [(before, after)])
    total = jax.lax.reduce_window(sq, concrete_zero(x), jax.lax.add, (1,) * (x.ndim - 1) + (size,),
                                  (1,) * x.ndim, "VALID")
    scale = jnp.asarray(cfg.get("bias", 1.0), x.dtype) + jnp.asarray(cfg.get("alpha", 1e-4) / size, x.dtype) * total
    return x / scale ** jnp.asarray(cfg.get("beta", 0.75), x.dtype)


@kind("ElementwiseConstant")
def elementwise_constant(p, inputs, cfg, ops):
    """``op(x, value)`` (or ``op(value, x)`` with ``first``) with a stored tensor ``value`` broadcast against
    ``x``: an ONNX ``Add``/``Mul``/… of an activation and a weight (a per-channel scale, a bias)."""
    x, value = inputs[0], weight(p, "value", inputs[0])
    fn = OPERATIONS[cfg["op"]]
    return fn(value, x) if cfg.get("first") else fn(x, value)


@kind("LayerScale")
def layer_scale(p, inputs, cfg, ops):
    """ConvNeXt's ``LayerScale`` (keras.applications): ``x · γ`` per channel."""
    x = inputs[0]
    return x * weight(p, "gamma", x)


@kind("CustomScaleLayer")
def custom_scale_layer(p, inputs, cfg, ops):
    """InceptionResNetV2's residual sum (keras.applications): ``x + r · scale``."""
    return inputs[0] + inputs[1] * jnp.asarray(cfg["scale"], inputs[0].dtype)


@kind("Rescaling")
def rescaling(p, inputs, cfg, ops):
    x = inputs[0]
    return x * constant(cfg.get("scale", 1.0), x) + constant(cfg.get("offset", 0.0), x)


def weight_names(kind_name: str, cfg: dict) -> list[tuple[str, bool]]:
    """``[(weight name, trainable)]`` of a layer kind in the order Keras creates its variables (the order of
    ``layer.weights`` within the trainable and the non-trainable ones); ``[]`` for kinds without weights."""
    bias = [("bias", True)] if cfg.get("use_bias", True) else []
    if kind_name in ("Conv2D", "Convolution2D", "Dense", "DepthwiseConv2D", "Conv2DTranspose", "Conv1D"):
        return [("kernel", True), *bias]
    if kind_name in ("SeparableConv2D", "SeparableConvolution2D"):
        return [("depthwise_kernel", True), ("pointwise_kernel", True), *bias]
    if kind_name == "BatchNormalization":
        return ([("gamma", True)] if cfg.get("scale", True) else []) + \
            ([("beta", True)] if cfg.get("center", True) else []) + [("moving_mean", False), ("moving_variance", False)]
    if kind_name == "LayerNormalization":
        return ([("gamma", True)] if cfg.get("scale", True) else []) + \
            ([("beta", True)] if cfg.get("center", True) else [])
    if kind_name == "PReLU":
        return [("alpha", True)]
    if kind_name == "LayerScale":
        return [("gamma", True)]
    if kind_name == "ElementwiseConstant":
        return [("value", False)]
    if kind_name == "Normalization":
        if cfg.get("mean") is not None and cfg.get("variance") is not None:
            return []
        return [("mean", False), ("variance", False), ("count", False)]
    return []
