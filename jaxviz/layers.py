"""Layer kinds: one small pure function per Keras layer class, ``kind(p, inputs, cfg, ops) -> output``.

- ``p``: the layer's params (``{"kernel", "bias", …}`` as Keras names its weights; ``"prepared"``: kernels
  :func:`jaxviz.graph.prepare` derived for the fast ops), ``{}`` for layers without weights;
- ``inputs``: the values of the layer's input layers, in order;
- ``cfg``: the layer's Keras config (``layer.get_config()``);
- ``ops``: the :class:`jaxviz.ops.Ops` that computes convolutions, dense products, pools and ReLUs.

A kind whose Keras layer has an ``activation=`` argument returns ``(pre_activation, activation)``: the
forward pass applies the activation (:func:`apply_activation`), so the pre-activation value is available
as the model's ``"logits"`` and every ReLU goes through ``ops.relu``. Values are NHWC (Keras's
``channels_last``); the computation runs in the input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .errors import JaxvizError
from .ops import Ops

KINDS: dict[str, Callable] = {}


def kind(*names: str):
    """Registers a layer kind under Keras class names."""

    def register(fn):
        for name in names:
            KINDS[name] = fn
        return fn

    return register


def apply_layer(layer, p: dict, inputs: Sequence[jax.Array], ops: Ops):
    fn = KINDS.get(layer.kind)
    if fn is None:
        raise unsupported(layer.name, layer.kind)
    return fn(p, inputs, layer.cfg, ops)


def unsupported(name: str, kind_name: str) -> JaxvizError:
    kinds = sorted(k for k in KINDS if not k.startswith("ops."))
    return JaxvizError(f"layer {name!r} is a {kind_name}, which jaxviz does not support; supported layer kinds: "
                       f"{', '.join(kinds)}")


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(i) for i in v)


def _check_channels_last(cfg: dict, what: str) -> None:
    if cfg.get("data_format", "channels_last") not in (None, "channels_last"):
        raise JaxvizError(f"{what} uses data_format={cfg['data_format']!r}; jaxviz runs channels_last models only")


def _w(p: dict, name: str, x: jax.Array) -> jax.Array:
    return p[name].astype(x.dtype)


def _const(value, x: jax.Array) -> jax.Array:
    """A config number or list (Keras 3 may serialise arrays as ``{"class_name": "__numpy__", ...}``) in x's dtype."""
    if isinstance(value, dict):
        value = value.get("config", {}).get("value", value.get("value"))
    return jnp.asarray(value, dtype=x.dtype)


def _zero(x):  # noqa: N802
    """A concrete 0 of ``x``'s dtype: ``reduce_window`` differentiates only a sum whose init is concrete (a traced
    ``jnp`` zero turns it into a generic reduction that reverse-mode autodiff refuses)."""
    return np.zeros((), x.dtype)


def _axes(axis, ndim: int) -> tuple[int, ...]:
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return tuple(int(a) % ndim for a in axes)


def _along(v: jax.Array, axes: tuple[int, ...], ndim: int) -> jax.Array:
    """``v`` (shaped like the kept ``axes`` of an ``ndim``-array) reshaped to broadcast along them."""
    shape = [1] * ndim
    if v.ndim == 0:
        return v
    if v.ndim == len(axes):
        for a, n in zip(axes, v.shape):
            shape[a] = n
    else:  # a flat vector for one axis, or a broadcastable shape as stored
        return v if v.ndim == ndim else v.reshape(-1)
    return v.reshape(shape)


# ---------------------------------------------------------------------------------------------------------
# Activations (Keras's ``activation=`` strings)


def _relu_family(x, ops: Ops):
    return ops.relu(x)


def _clip6(x):
    return jnp.clip(x, jnp.asarray(0, x.dtype), jnp.asarray(6, x.dtype))


def _relu6(x, ops: Ops):
    # The ReLU part goes through ops.relu, so guided backprop's override applies to it.
    return ops.nonlinear(_clip6, x, lambda v: jnp.minimum(ops.relu(v), jnp.asarray(6, v.dtype)))


def _hard_sigmoid_fn(x):
    """Keras 3's ``hard_sigmoid``: ``relu6(x + 3) / 6``."""
    return jnp.clip(x + 3, 0, 6) / 6


def _hard_sigmoid(x, ops: Ops):
    return ops.nonlinear(_hard_sigmoid_fn, x)


def _hard_sigmoid_keras2(x):
    """Keras 2's (tf.keras) ``hard_sigmoid``: ``clip(0.2 x + 0.5, 0, 1)``; :mod:`jaxviz.keras_io` renames
    ``hard_sigmoid`` to this in files Keras 2 wrote."""
    return jnp.clip(jnp.asarray(0.2, x.dtype) * x + jnp.asarray(0.5, x.dtype), 0, 1)


#: The elementwise activations other than the ReLU's, each one function (one nonlinearity for DeepLIFT's
#: Rescale rule: :meth:`jaxviz.ops.Ops.nonlinear`).
ELEMENTWISE: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    # Keras 2 and 3 both default to the exact (erf) GELU for the "gelu" string.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "exponential": jnp.exp,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.2),  # Keras 3's default negative_slope
    "hard_sigmoid": _hard_sigmoid_fn,
    "hard_sigmoid_keras2": _hard_sigmoid_keras2,
    "hard_swish": lambda x: x * _hard_sigmoid_fn(x),
    "hard_silu": lambda x: x * _hard_sigmoid_fn(x),
}


def _elementwise(f):
    return lambda x, ops: ops.nonlinear(f, x)


ACTIVATIONS: dict[str, Callable[[jax.Array, Ops], jax.Array]] = {
    "linear": lambda x, ops: x,
    "relu": _relu_family,
    "relu6": _relu6,
    "softmax": lambda x, ops: jax.nn.softmax(x, axis=-1),
    "log_softmax": lambda x, ops: jax.nn.log_softmax(x, axis=-1),
    **{name: _elementwise(f) for name, f in ELEMENTWISE.items()},
}


def apply_activation(name, x: jax.Array, ops: Ops) -> jax.Array:
    """Keras's ``activation=`` string (or serialised activation) applied to ``x``."""
    if isinstance(name, dict):  # Keras 3 may serialise {"module": "keras.activations", "config": ..., ...}
        cfg = name.get("config")
        name = (cfg if isinstance(cfg, str) else (cfg or {}).get("name")) or name.get("class_name")
    name = "linear" if name in (None, "") else str(name)
    fn = ACTIVATIONS.get(name)
    if fn is None:
        raise JaxvizError(f"activation {name!r} is not supported; supported: {', '.join(sorted(ACTIVATIONS))}")
    return fn(x, ops)


@kind("Activation")
def activation(p, inputs, cfg, ops):
    return inputs[0], cfg.get("activation", "linear")


@kind("Softmax")
def softmax(p, inputs, cfg, ops):
    axis = cfg.get("axis", -1)
    return jax.nn.softmax(inputs[0], axis=tuple(axis) if isinstance(axis, list) else axis)


@kind("ReLU")
def relu(p, inputs, cfg, ops):
    """Keras's ``ReLU(max_value, negative_slope, threshold)``; the default one is ``ops.relu`` (guided backprop's
    override applies), ``max_value=6`` is :func:`_relu6`."""
    x = inputs[0]
    max_value, slope, threshold = cfg.get("max_value"), float(cfg.get("negative_slope") or 0), \
        float(cfg.get("threshold") or 0)
    if slope == 0 and threshold == 0:
        if max_value is None:
            return ops.relu(x)
        if float(max_value) == 6:
            return _relu6(x, ops)
        top = float(max_value)
        return ops.nonlinear(lambda v: jnp.clip(v, 0, jnp.asarray(top, v.dtype)), x,
                             lambda v: jnp.minimum(ops.relu(v), jnp.asarray(top, v.dtype)))
    return ops.nonlinear(lambda v: _keras_relu(v, max_value, slope, threshold), x)


def _keras_relu(x, max_value, slope: float, threshold: float):
    """Keras's general formula (keras.activations.relu)."""
    if slope != 0 and max_value is None and threshold == 0:
        return jax.nn.leaky_relu(x, slope)
    negative = jax.nn.relu(threshold - x) if threshold != 0 else jax.nn.relu(-x)
    y = x * (x > threshold).astype(x.dtype) if threshold != 0 else jax.nn.relu(x)
    if max_value is not None:
        y = jnp.clip(y, 0, jnp.asarray(max_value, x.dtype))
    if slope != 0:
        y = y - jnp.asarray(slope, x.dtype) * negative
    return y


@kind("Clip")
def clip(p, inputs, cfg, ops):
    """``min(max(x, min), max)`` (ONNX's ``Clip``; either bound may be absent). ``Clip(0, 6)`` and ``Clip(0, ∞)``
    are read as :func:`relu` layers, so guided backprop treats them as ReLUs."""
    x = inputs[0]
    lo, hi = cfg.get("min"), cfg.get("max")
    lo, hi = (None if v is None else jnp.asarray(v, x.dtype) for v in (lo, hi))
    return ops.nonlinear(lambda v: jnp.clip(v, lo, hi), x)


@kind("HardSigmoid")
def hard_sigmoid(p, inputs, cfg, ops):
    """``clip(alpha·x + beta, 0, 1)`` (ONNX's ``HardSigmoid``; PyTorch's ``Hardsigmoid`` is alpha = 1/6)."""
    x = inputs[0]
    alpha, beta = jnp.asarray(cfg.get("alpha", 0.2), x.dtype), jnp.asarray(cfg.get("beta", 0.5), x.dtype)
    return ops.nonlinear(lambda v: jnp.clip(alpha * v + beta, 0, 1), x)


@kind("Erf")
def erf(p, inputs, cfg, ops):
    return ops.nonlinear(jax.lax.erf, inputs[0])


@kind("LeakyReLU")
def leaky_relu(p, inputs, cfg, ops):
    slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))  # Keras 3: negative_slope; Keras 2: alpha
    slope = 0.3 if slope is None else slope
    return ops.nonlinear(lambda v: jax.nn.leaky_relu(v, jnp.asarray(slope, v.dtype)), inputs[0])


@kind("ELU")
def elu(p, inputs, cfg, ops):
    alpha = cfg.get("alpha", 1.0)
    return ops.nonlinear(lambda x: jnp.where(x > 0, x, jnp.asarray(alpha, x.dtype) * jnp.expm1(jnp.minimum(x, 0))),
                         inputs[0])


@kind("PReLU")
def prelu(p, inputs, cfg, ops):
    x = inputs[0]
    alpha = _w(p, "alpha", x)
    return ops.nonlinear(lambda v: jax.nn.relu(v) - alpha * jax.nn.relu(-v), x)


# ---------------------------------------------------------------------------------------------------------
# Weighted layers


@kind("Conv2D", "Convolution2D")
def conv2d(p, inputs, cfg, ops):
    x = inputs[0]
    _check_channels_last(cfg, "Conv2D")
    y = ops.conv2d(x, _w(p, "kernel", x), p.get("prepared"), strides=_pair(cfg.get("strides", 1)),
                   padding=cfg.get("padding", "valid"), dilation=_pair(cfg.get("dilation_rate", 1)),
                   groups=int(cfg.get("groups", 1)))
    if cfg.get("use_bias", True):
        y = y + _w(p, "bias", x)
    return y, cfg.get("activation", "linear")


def _depthwise(x, kernel, cfg, ops):
    """A depthwise convolution: ``kernel`` ``[kh, kw, C, multiplier]``; output channel ``c·multiplier + m``."""
    return ops.depthwise_conv2d(x, kernel, strides=_pair(cfg.get("strides", 1)), padding=cfg.get("padding", "valid"),
                                dilation=_pair(cfg.get("dilation_rate", 1)))


@kind("DepthwiseConv2D")
def depthwise_conv2d(p, inputs, cfg, ops):
    """Keras's ``DepthwiseConv2D``; its kernel ``[kh, kw, C, depth_multiplier]`` is ``p["kernel"]`` (Keras 3's
    name; Keras 2 called it ``depthwise_kernel``, :mod:`jaxviz.keras_io` stores it as ``kernel``)."""
    x = inputs[0]
    _check_channels_last(cfg, "DepthwiseConv2D")
    y = _depthwise(x, _w(p, "kernel", x), cfg, ops)
    if cfg.get("use_bias", True):
        y = y + _w(p, "bias", x)
    return y, cfg.get("activation", "linear")


@kind("SeparableConv2D", "SeparableConvolution2D")
def separable_conv2d(p, inputs, cfg, ops):
    """Keras's ``SeparableConv2D``: a depthwise convolution (``depthwise_kernel``, with the strides, padding and
    dilation), then a 1×1 convolution (``pointwise_kernel``), then the bias."""
    x = inputs[0]
    _check_channels_last(cfg, "SeparableConv2D")
    y = _depthwise(x, _w(p, "depthwise_kernel", x), cfg, ops)
    y = ops.conv2d(y, _w(p, "pointwise_kernel", x), None, strides=(1, 1), padding="valid")
    if cfg.get("use_bias", True):
        y = y + _w(p, "bias", x)
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
    _check_channels_last(cfg, "Conv2DTranspose")
    kernel = _w(p, "kernel", x)
    strides, dilation = _pair(cfg.get("strides", 1)), _pair(cfg.get("dilation_rate", 1))
    out_pad = cfg.get("output_padding")
    out_pad = [None, None] if out_pad is None else list(_pair(out_pad))
    pads = [_transpose_pads(kernel.shape[i], strides[i], dilation[i], cfg.get("padding", "valid"), out_pad[i])
            for i in (0, 1)]
    y = jax.lax.conv_transpose(x, kernel, strides, pads, rhs_dilation=dilation,
                               dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)
    if cfg.get("use_bias", True):
        y = y + _w(p, "bias", x)
    return y, cfg.get("activation", "linear")


@kind("Dense")
def dense(p, inputs, cfg, ops):
    x = inputs[0]
    y = ops.dense(x, _w(p, "kernel", x), p.get("prepared"))
    if cfg.get("use_bias", True):
        y = y + _w(p, "bias", x)
    return y, cfg.get("activation", "linear")


@kind("BatchNormalization")
def batch_normalization(p, inputs, cfg, ops):
    """Inference-mode batch normalisation (Ioffe & Szegedy, 2015) with the moving statistics, computed as
    Keras 3's JAX backend does: ``x · (γ / √(var + ε)) + (β − mean · γ / √(var + ε))``."""
    x = inputs[0]
    axes = _axes(cfg.get("axis", -1), x.ndim)
    b = lambda v: _along(v, axes, x.ndim)
    inv = jax.lax.rsqrt(b(_w(p, "moving_variance", x)) + jnp.asarray(cfg.get("epsilon", 1e-3), x.dtype))
    if cfg.get("scale", True):
        inv = inv * b(_w(p, "gamma", x))
    res = -b(_w(p, "moving_mean", x)) * inv
    if cfg.get("center", True):
        res = res + b(_w(p, "beta", x))
    return x * inv + res


@kind("LayerNormalization")
def layer_normalization(p, inputs, cfg, ops):
    """Layer normalisation (Ba et al., 2016) over ``axis`` (default the last)."""
    x = inputs[0]
    axes = _axes(cfg.get("axis", -1), x.ndim)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + jnp.asarray(cfg.get("epsilon", 1e-3), x.dtype))
    if cfg.get("scale", True):
        y = y * _along(_w(p, "gamma", x), axes, x.ndim)
    if cfg.get("center", True):
        y = y + _along(_w(p, "beta", x), axes, x.ndim)
    return y


@kind("Normalization")
def normalization(p, inputs, cfg, ops):
    """Keras's ``Normalization``: ``(x − mean) / max(√variance, 1e-7)`` over ``axis`` (the statistics are weights
    of an adapted layer, or in the config); ``invert=True`` undoes it."""
    x = inputs[0]
    axis = cfg.get("axis", -1)
    axes = () if axis is None else _axes(axis, x.ndim)
    if "mean" in p:
        mean, var = _w(p, "mean", x), _w(p, "variance", x)
    else:
        if cfg.get("mean") is None or cfg.get("variance") is None:
            raise JaxvizError("a Normalization layer has neither adapted statistics nor mean/variance in its config")
        mean, var = _const(cfg["mean"], x), _const(cfg["variance"], x)
    mean, var = _along(mean, axes, x.ndim), _along(var, axes, x.ndim)
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
    total = jax.lax.reduce_window(sq, _zero(x), jax.lax.add, (1,) * (x.ndim - 1) + (size,),
                                  (1,) * x.ndim, "VALID")
    scale = jnp.asarray(cfg.get("bias", 1.0), x.dtype) + jnp.asarray(cfg.get("alpha", 1e-4) / size, x.dtype) * total
    return x / scale ** jnp.asarray(cfg.get("beta", 0.75), x.dtype)


@kind("ElementwiseConstant")
def elementwise_constant(p, inputs, cfg, ops):
    """``op(x, value)`` (or ``op(value, x)`` with ``first``) with a stored tensor ``value`` broadcast against
    ``x``: an ONNX ``Add``/``Mul``/… of an activation and a weight (a per-channel scale, a bias)."""
    x, value = inputs[0], _w(p, "value", inputs[0])
    fn = OPERATIONS[cfg["op"]]
    return fn(value, x) if cfg.get("first") else fn(x, value)


@kind("LayerScale")
def layer_scale(p, inputs, cfg, ops):
    """ConvNeXt's ``LayerScale`` (keras.applications): ``x · γ`` per channel."""
    x = inputs[0]
    return x * _w(p, "gamma", x)


@kind("CustomScaleLayer")
def custom_scale_layer(p, inputs, cfg, ops):
    """InceptionResNetV2's residual sum (keras.applications): ``x + r · scale``."""
    return inputs[0] + inputs[1] * jnp.asarray(cfg["scale"], inputs[0].dtype)


@kind("Rescaling")
def rescaling(p, inputs, cfg, ops):
    x = inputs[0]
    return x * _const(cfg.get("scale", 1.0), x) + _const(cfg.get("offset", 0.0), x)


# ---------------------------------------------------------------------------------------------------------
# Pooling and resampling


@kind("MaxPooling2D", "MaxPool2D")
def max_pooling2d(p, inputs, cfg, ops):
    _check_channels_last(cfg, "MaxPooling2D")
    pool = _pair(cfg.get("pool_size", 2))
    strides = cfg.get("strides")
    return ops.max_pool(inputs[0], pool, pool if strides is None else _pair(strides), cfg.get("padding", "valid"))


@kind("AveragePooling2D", "AvgPool2D")
def average_pooling2d(p, inputs, cfg, ops):
    """Keras's ``AveragePooling2D``; with ``"same"`` padding the padded cells are not counted (as Keras)."""
    _check_channels_last(cfg, "AveragePooling2D")
    pool = _pair(cfg.get("pool_size", 2))
    strides = cfg.get("strides")
    return ops.avg_pool(inputs[0], pool, pool if strides is None else _pair(strides),
                        str(cfg.get("padding", "valid")).lower())


@kind("AveragePool")
def average_pool(p, inputs, cfg, ops):
    """Average pooling with explicit ``pads`` ``((top, bottom), (left, right))`` of which ``counted`` (the
    inner part) count in the divisor: ONNX's ``AveragePool`` (``count_include_pad``; ``ceil_mode``'s extra
    cells are never counted)."""
    x = inputs[0]
    pool, strides = _pair(cfg["pool_size"]), _pair(cfg["strides"])
    pads, counted = pads_2d(cfg["pads"]), pads_2d(cfg.get("counted", 0))
    window, step = (1, *pool, 1), (1, *strides, 1)
    padding = ((0, 0), *pads, (0, 0))
    total = jax.lax.reduce_window(x, _zero(x), jax.lax.add, window, step, padding)
    mask = jnp.pad(jnp.ones((1, *x.shape[1:3], 1), x.dtype), ((0, 0), *counted, (0, 0)), constant_values=1)
    rest = tuple((a - c0, b - c1) for (a, b), (c0, c1) in zip(pads, counted))
    mask = jnp.pad(mask, ((0, 0), *rest, (0, 0)))
    count = jax.lax.reduce_window(mask, _zero(x), jax.lax.add, window, step, "VALID")
    return total / count


@kind("GlobalAveragePooling2D", "GlobalAvgPool2D")
def global_average_pooling2d(p, inputs, cfg, ops):
    _check_channels_last(cfg, "GlobalAveragePooling2D")
    return inputs[0].mean(axis=(1, 2), keepdims=bool(cfg.get("keepdims", False)))


@kind("GlobalMaxPooling2D", "GlobalMaxPool2D")
def global_max_pooling2d(p, inputs, cfg, ops):
    _check_channels_last(cfg, "GlobalMaxPooling2D")
    return inputs[0].max(axis=(1, 2), keepdims=bool(cfg.get("keepdims", False)))


@kind("UpSampling2D")
def up_sampling2d(p, inputs, cfg, ops):
    """Keras's ``UpSampling2D``: ``"nearest"`` repeats rows and columns; ``"bilinear"`` (and the other
    ``jax.image.resize`` methods) resizes with half-pixel centres, as Keras."""
    x = inputs[0]
    _check_channels_last(cfg, "UpSampling2D")
    sh, sw = _pair(cfg.get("size", 2))
    method = cfg.get("interpolation", "nearest")
    if method == "nearest":
        return jnp.repeat(jnp.repeat(x, sh, axis=1), sw, axis=2)
    n, h, w, c = x.shape
    return jax.image.resize(x, (n, h * sh, w * sw, c), method=method, antialias=False)


def pads_2d(v) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras's 2D ``padding``/``cropping``: ``n``, ``(h, w)`` or ``((top, bottom), (left, right))``."""
    if isinstance(v, int):
        return (v, v), (v, v)
    a, b = v
    a = (a, a) if isinstance(a, int) else tuple(a)
    b = (b, b) if isinstance(b, int) else tuple(b)
    return (int(a[0]), int(a[1])), (int(b[0]), int(b[1]))


@kind("ZeroPadding2D")
def zero_padding2d(p, inputs, cfg, ops):
    _check_channels_last(cfg, "ZeroPadding2D")
    (t, b), (left, r) = pads_2d(cfg.get("padding", 1))
    return jnp.pad(inputs[0], ((0, 0), (t, b), (left, r), (0, 0)))


@kind("Pad")
def pad(p, inputs, cfg, ops):
    """Padding of every axis after the batch axis: ``pads`` ``[(before, after), …]``, ``mode`` "constant" (with
    ``value``; ``-inf`` before an ONNX ``MaxPool``'s windows), "reflect" or "edge" (ONNX's ``Pad``)."""
    x = inputs[0]
    widths = [(0, 0), *((int(a), int(b)) for a, b in cfg["pads"])]
    mode = cfg.get("mode", "constant")
    if mode == "constant":
        return jnp.pad(x, widths, constant_values=jnp.asarray(float(cfg.get("value", 0.0)), x.dtype))
    return jnp.pad(x, widths, mode={"edge": "edge", "reflect": "reflect"}[mode])


@kind("Cropping2D")
def cropping2d(p, inputs, cfg, ops):
    _check_channels_last(cfg, "Cropping2D")
    x = inputs[0]
    (t, b), (left, r) = pads_2d(cfg.get("cropping", 0))
    return x[:, t: x.shape[1] - b, left: x.shape[2] - r, :]


# ---------------------------------------------------------------------------------------------------------
# Reshaping


@kind("Flatten")
def flatten(p, inputs, cfg, ops):
    # NHWC reshape flattens in H·W·C order, exactly as Keras's Flatten on channels-last data.
    x = inputs[0]
    return x.reshape(x.shape[0], -1)


@kind("Reshape")
def reshape(p, inputs, cfg, ops):
    x = inputs[0]
    return x.reshape(x.shape[0], *(int(d) for d in cfg["target_shape"]))


@kind("Permute")
def permute(p, inputs, cfg, ops):
    """Keras's ``Permute(dims)``: ``dims`` numbers the axes after the batch axis from 1."""
    return inputs[0].transpose(0, *(int(d) for d in cfg["dims"]))


@kind("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
      "AlphaDropout", "ActivityRegularization", "Identity", "StochasticDepth")
def identity(p, inputs, cfg, ops):
    """Layers that are the identity at inference."""
    return inputs[0]


@kind("InputLayer")
def input_layer(p, inputs, cfg, ops):
    """The model's input (:func:`jaxviz.graph.forward` feeds it ``x``)."""
    return inputs[0]


# ---------------------------------------------------------------------------------------------------------
# Merging


@kind("Add")
def add(p, inputs, cfg, ops):
    out = inputs[0]
    for v in inputs[1:]:
        out = out + v
    return out


@kind("Subtract")
def subtract(p, inputs, cfg, ops):
    return inputs[0] - inputs[1]


@kind("Multiply")
def multiply(p, inputs, cfg, ops):
    out = inputs[0]
    for v in inputs[1:]:
        out = out * v
    return out


@kind("Average")
def average(p, inputs, cfg, ops):
    return add(p, inputs, cfg, ops) / jnp.asarray(len(inputs), inputs[0].dtype)


@kind("Maximum")
def maximum(p, inputs, cfg, ops):
    out = inputs[0]
    for v in inputs[1:]:
        out = jnp.maximum(out, v)
    return out


@kind("Minimum")
def minimum(p, inputs, cfg, ops):
    out = inputs[0]
    for v in inputs[1:]:
        out = jnp.minimum(out, v)
    return out


@kind("Concatenate")
def concatenate(p, inputs, cfg, ops):
    return jnp.concatenate(inputs, axis=int(cfg.get("axis", -1)))


# ---------------------------------------------------------------------------------------------------------
# Keras 3 operations applied to tensors in a functional model (``x + 3.0``, ``x * (1 / 6)``: MobileNetV3's
# hard sigmoid). :mod:`jaxviz.keras_io` reads them as kind ``"ops.<Class>"`` with ``cfg["args"]`` = the call's
# arguments, ``{"__input__": i}`` marking the layer's i-th input and numbers kept as they are.

OPERATIONS: dict[str, Callable] = {
    "Add": jnp.add, "Subtract": jnp.subtract, "Multiply": jnp.multiply, "Divide": jnp.divide,
    "TrueDivide": jnp.true_divide, "Maximum": jnp.maximum, "Minimum": jnp.minimum, "Negative": jnp.negative,
    "Power": jnp.power, "Square": jnp.square, "Sqrt": jnp.sqrt, "Absolute": jnp.abs, "Abs": jnp.abs,
}


#: Operations linear in their tensor argument when every other argument is a number (the first argument's, for
#: the divisions).
LINEAR_OPERATIONS = ("Add", "Subtract", "Negative", "Multiply")
LINEAR_NUMERATOR = ("Divide", "TrueDivide")


def tensor_args(cfg: dict) -> list[int]:
    """The positions of an operation's arguments that are layer inputs (the others are numbers)."""
    return [i for i, a in enumerate(cfg["args"]) if isinstance(a, dict)]


def _operation(name, fn):
    def apply(p, inputs, cfg, ops):
        args = [inputs[a["__input__"]] if isinstance(a, dict) else jnp.asarray(a, inputs[0].dtype)
                for a in cfg["args"]]
        tensors = tensor_args(cfg)
        linear = name in LINEAR_OPERATIONS or (name in LINEAR_NUMERATOR and tensors == [0])
        if len(tensors) != 1 or linear:
            return fn(*args)
        # one tensor and numbers: an elementwise function of that tensor (x ** 2, maximum(x, 0), 1 / x)
        i = tensors[0]
        return ops.nonlinear(lambda v: fn(*args[:i], v, *args[i + 1:]), args[i])

    return apply


for _name, _fn in OPERATIONS.items():
    KINDS["ops." + _name] = _operation(_name, _fn)

#: keras.ops activations on a tensor (``keras.ops.relu(x)``), with their config (``approximate``, ``axis``, …).
UNARY_OPERATIONS: dict[str, Callable] = {
    "Relu": lambda x, cfg, ops: ops.relu(x),
    "Relu6": lambda x, cfg, ops: _relu6(x, ops),
    "Sigmoid": lambda x, cfg, ops: ops.nonlinear(jax.nn.sigmoid, x),
    "Tanh": lambda x, cfg, ops: ops.nonlinear(jnp.tanh, x),
    "Silu": lambda x, cfg, ops: ops.nonlinear(jax.nn.silu, x),
    "HardSigmoid": lambda x, cfg, ops: _hard_sigmoid(x, ops),
    "HardSilu": lambda x, cfg, ops: ops.nonlinear(ELEMENTWISE["hard_silu"], x),
    "Elu": lambda x, cfg, ops: elu(None, [x], cfg, ops),
    "Selu": lambda x, cfg, ops: ops.nonlinear(jax.nn.selu, x),
    "Softplus": lambda x, cfg, ops: ops.nonlinear(jax.nn.softplus, x),
    # keras.ops.gelu defaults to the tanh approximation (the "gelu" activation string does not).
    "Gelu": lambda x, cfg, ops: ops.nonlinear(lambda v: jax.nn.gelu(v, approximate=bool(cfg.get("approximate", True))),
                                              x),
    "Softmax": lambda x, cfg, ops: jax.nn.softmax(x, axis=cfg.get("axis", -1)),
    "Exp": lambda x, cfg, ops: ops.nonlinear(jnp.exp, x),
}


def _unary(fn):
    def apply(p, inputs, cfg, ops):
        return fn(inputs[0], cfg, ops)

    return apply


for _name, _fn in UNARY_OPERATIONS.items():
    KINDS["ops." + _name] = _unary(_fn)


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
