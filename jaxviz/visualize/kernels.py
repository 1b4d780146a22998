"""Convolution kernels as pictures: a row per filter, a column per input channel.

The first thing to look at in a trained convnet are its weights. Each ``Conv2D`` layer has a kernel
``[kh, kw, C_in, C_out]`` (HWIO, as Keras stores it; 3×3 in VGG, 7×7 in ResNet50's first layer, 1×1 in its
bottlenecks); :func:`kernels` min–max normalises it over the WHOLE layer (one scale for every filter, so
filters can be compared by their brightness), :func:`kernel_grid` tiles the kh×kw slices into a gray grid,
and for a first layer on colour images (``C_in == 3``) :func:`kernel_colour_patches` shows each filter as one
colour patch. The input channels' order follows the model's preprocessing (:func:`channel_order`): Caffe's
("caffe": Keras's VGG16/VGG19 and ResNet50 weights) sees BGR, so its patches are flipped BGR → RGB to show
the colour each filter responds to; every other mode sees RGB. A one-channel (grayscale) model's kernels
are gray.

Examples:
  >>> model = jaxviz.load("vgg16")
  >>> k = kernels(model, "block1_conv1")          # [3, 3, 3, 64] in [0, 1]
  >>> save_kernel_figures(model, "block1_conv1", "out/")
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import confine, file_stems, save_npy
from ..errors import LayerError
from ..images import save_png
from ..render import image_grid


def channel_order(model) -> str:
    """The names of a model's input channels, in order: ``"B, G, R"`` for Caffe's preprocessing (the Keras
    VGG/ResNet50 weights), ``"R, G, B"`` for every other mode, ``"gray"`` for one channel."""
    channels = model.input_channels
    if channels == 1:
        return "gray"
    if channels != 3:
        return f"{channels} channels"
    return "B, G, R" if model.preprocess == "caffe" else "R, G, B"


def _check_conv_layer(model, layer: str) -> str:
    (layer,) = model.check_layers(layer)
    if layer not in model.conv_layer_names:
        raise LayerError(
            f"{layer!r} has no convolution kernel; choose a conv layer: {', '.join(model.conv_layer_names)}"
        )
    return layer


def kernels(model, layer: str) -> np.ndarray:
    """The kernel of a conv layer, min–max normalised over the whole layer to [0, 1].

    Args:
      model: a :class:`jaxviz.Model`.
      layer: a conv layer name, e.g. ``"block1_conv1"``.

    Returns:
      ``[kh, kw, C_in, C_out]`` float32 in [0, 1]: ``(k - k.min()) / (k.max() - k.min())``. A constant kernel
      (e.g. all zeros) gives flat 0.5 instead of NaN.

    Raises:
      LayerError: ``layer`` is unknown or not a conv layer (the message lists the conv layers).
    """
    layer = _check_conv_layer(model, layer)
    k = np.asarray(model.params[layer]["kernel"], np.float64)
    lo, hi = k.min(), k.max()
    if hi > lo:
        return ((k - lo) / (hi - lo)).astype(np.float32)
    return np.full(k.shape, 0.5, np.float32)


def _to_uint8(a) -> np.ndarray:
    return np.clip(np.rint(np.asarray(a, np.float64) * 255), 0, 255).astype(np.uint8)


def _upscale(a: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of ``[..., h, w(, C)]`` where h, w are axes 1, 2 of a stack."""
    return a.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else a


def _count(n: int | None, available: int, what: str) -> int:
    if n is None:
        return available
    if n < 1:
        raise ValueError(f"{what} must be at least 1, got {n}")
    return min(int(n), available)


def kernel_grid(k, filters: int | None = None, channels: int | None = None, scale: int = 8,
                margin: int = 1) -> np.ndarray:
    """Gray picture of a kernel: row ``f`` shows filter ``f``, column ``c`` its weights on input channel ``c``.

    Args:
      k: ``[kh, kw, C_in, C_out]`` normalised kernel (from :func:`kernels`), values in [0, 1].
      filters: the first ``filters`` filters (rows); all by default.
      channels: the first ``channels`` input channels (columns); all by default.
      scale: each kh×kw slice is upscaled ``scale`` times (nearest neighbour).
      margin: white pixels between cells.

    Returns:
      uint8 ``[F·kh·s + (F-1)·m, C·kw·s + (C-1)·m]``.
    """

    k = np.asarray(k)
    kh, kw, c_in, c_out = k.shape
    nf = _count(filters, c_out, "filters")
    nc = _count(channels, c_in, "channels")
    # [F, C, kh, kw] -> a row-major stack of F·C cells, C per row.
    cells = np.transpose(k[:, :, :nc, :nf], (3, 2, 0, 1)).reshape(nf * nc, kh, kw)
    return image_grid(_upscale(_to_uint8(cells), scale), cols=nc, margin=margin, fill=255)


def kernel_colour_patches(k, filters: int | None = None, cols: int = 8, scale: int = 8, margin: int = 1,
                          bgr_to_rgb: bool = True) -> np.ndarray:
    """A first layer's filters as colour patches: filter ``f`` is its kh×kw×3 kernel shown as an RGB image.

    Args:
      k: ``[kh, kw, 3, C_out]`` normalised first-layer kernel (from :func:`kernels`).
      filters: the first ``filters`` filters; all by default.
      cols: patches per row.
      scale: each patch is upscaled ``scale`` times (nearest neighbour).
      margin: white pixels between patches.
      bgr_to_rgb: flip the input-channel axis (for BGR models: Caffe's preprocessing, as Keras's VGG weights;
        ``channel_order(model) == "B, G, R"``).

    Returns:
      uint8 ``[R·kh·s + (R-1)·m, cols·kw·s + (cols-1)·m, 3]``.
    """

    k = np.asarray(k)
    if k.ndim != 4 or k.shape[2] != 3:
        raise ValueError(f"colour patches need a first-layer kernel [kh, kw, 3, C_out], got shape {k.shape}")
    nf = _count(filters, k.shape[3], "filters")
    patches = np.transpose(k[..., :nf], (3, 0, 1, 2))  # [F, kh, kw, 3 channels]
    if bgr_to_rgb:
        patches = patches[..., ::-1]
    return image_grid(_upscale(_to_uint8(patches), scale), cols=min(cols, nf), margin=margin, fill=255)


def save_kernel_figures(model, layer: str, out_dir: str | os.PathLike, filters: int | None = 64,
                        channels: int | None = 64, scale: int = 8, npy: bool = False,
                        prefix: str = "kernels_") -> list[Path]:
    """Writes ``{prefix}{layer}.png`` (gray grid) and, for a first layer on colour images (in the channel order
    of the model's preprocessing, :func:`channel_order`), ``{prefix}{layer}_rgb.png``.

    Args:
      model: a :class:`jaxviz.Model`.
      layer: a conv layer.
      out_dir: output folder (created if missing).
      filters, channels: grid rows / columns (the first ones; capped at what the layer has).
      scale: pixels per kernel weight.
      npy: also save the normalised kernel ``[kh, kw, C_in, C_out]`` as ``{prefix}{layer}.npy``.

    Returns:
      The paths written, each written atomically.
    """

    k = kernels(model, layer)
    out = Path(out_dir)
    layer = file_stems(model.layer_names)[layer]
    paths = [save_png(confine(out, f"{prefix}{layer}.png"), kernel_grid(k, filters, channels, scale))]
    if k.shape[2] == 3 and model.input_channels == 3:
        patches = kernel_colour_patches(k, filters, scale=scale, bgr_to_rgb=channel_order(model) == "B, G, R")
        paths.append(save_png(confine(out, f"{prefix}{layer}_rgb.png"), patches))
    if npy:

        paths.append(save_npy(confine(out, f"{prefix}{layer}.npy"), k))
    return paths
