"""Pooling, resampling, padding and cropping layers (NHWC)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .registry import check_channels_last, concrete_zero, kind, pair


@kind("MaxPooling2D", "MaxPool2D")
def max_pooling2d(p, inputs, cfg, ops):
    check_channels_last(cfg, "MaxPooling2D")
    pool = pair(cfg.get("pool_size", 2))
    strides = cfg.get("strides")
    return ops.max_pool(inputs[0], pool, pool if strides is None else pair(strides), cfg.get("padding", "valid"))


@kind("AveragePooling2D", "AvgPool2D")
def average_pooling2d(p, inputs, cfg, ops):
    """Keras's ``AveragePooling2D``; with ``"same"`` padding the padded cells are not counted (as Keras)."""
    check_channels_last(cfg, "AveragePooling2D")
    pool = pair(cfg.get("pool_size", 2))
    strides = cfg.get("strides")
    return ops.avg_pool(inputs[0], pool, pool if strides is None else pair(strides),
                        str(cfg.get("padding", "valid")).lower())


@kind("AveragePool")
def average_pool(p, inputs, cfg, ops):
    """Average pooling with explicit ``pads`` ``((top, bottom), (left, right))`` of which ``counted`` (the
    inner part) count in the divisor: ONNX's ``AveragePool`` (``count_include_pad``; ``ceil_mode``'s extra
    cells are never counted)."""
    x = inputs[0]
    pool, strides = pair(cfg["pool_size"]), pair(cfg["strides"])
    pads, counted = pads_2d(cfg["pads"]), pads_2d(cfg.get("counted", 0))
    window, step = (1, *pool, 1), (1, *strides, 1)
    padding = ((0, 0), *pads, (0, 0))
    total = jax.lax.reduce_window(x, concrete_zero(x), jax.lax.add, window, step, padding)
    mask = jnp.pad(jnp.ones((1, *x.shape[1:3], 1), x.dtype), ((0, 0), *counted, (0, 0)), constant_values=1)
    rest = tuple((a - c0, b - c1) for (a, b), (c0, c1) in zip(pads, counted))
    mask = jnp.pad(mask, ((0, 0), *rest, (0, 0)))
    count = jax.lax.reduce_window(mask, concrete_zero(x), jax.lax.add, window, step, "VALID")
    return total / count


@kind("GlobalAveragePooling2D", "GlobalAvgPool2D")
def global_average_pooling2d(p, inputs, cfg, ops):
    check_channels_last(cfg, "GlobalAveragePooling2D")
    return inputs[0].mean(axis=(1, 2), keepdims=bool(cfg.get("keepdims", False)))


@kind("GlobalMaxPooling2D", "GlobalMaxPool2D")
def global_max_pooling2d(p, inputs, cfg, ops):
    check_channels_last(cfg, "GlobalMaxPooling2D")
    return inputs[0].max(axis=(1, 2), keepdims=bool(cfg.get("keepdims", False)))


@kind("UpSampling2D")
def up_sampling2d(p, inputs, cfg, ops):
    """Keras's ``UpSampling2D``: ``"nearest"`` repeats rows and columns; ``"bilinear"`` (and the other
    ``jax.image.resize`` methods) resizes with half-pixel centres, as Keras."""
    x = inputs[0]
    check_channels_last(cfg, "UpSampling2D")
    sh, sw = pair(cfg.get("size", 2))
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
    check_channels_last(cfg, "ZeroPadding2D")
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
    check_channels_last(cfg, "Cropping2D")
    x = inputs[0]
    (t, b), (left, r) = pads_2d(cfg.get("cropping", 0))
    return x[:, t: x.shape[1] - b, left: x.shape[2] - r, :]
