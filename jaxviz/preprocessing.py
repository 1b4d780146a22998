"""Keras's image preprocessing modes (``keras.applications.imagenet_utils.preprocess_input``), both ways.

- ``"caffe"`` (VGG16/VGG19, ResNet50 v1): RGB → BGR, minus the BGR ImageNet means; 0..255 scale.
- ``"tf"`` (ResNetV2, InceptionV3, Xception, MobileNet, MobileNetV2): ``x / 127.5 - 1``, in [-1, 1].
- ``"torch"`` (DenseNet): ``x / 255``, minus the RGB means, divided by the RGB standard deviations.
- ``"rescale"`` (models trained on ``x / 255``, e.g. with ``Rescaling(1./255)`` outside the model or
  ``ImageDataGenerator(rescale=1./255)``, as the book's own convnets): ``x / 255``, in [0, 1].
- ``"none"`` (EfficientNet, EfficientNetV2, MobileNetV3, and models that rescale inside themselves): as is.

Inputs are RGB 0..255, channels last, any leading axes; numpy in, float32 numpy out, or jax in, jax out.
"tf", "rescale" and "none" act on each value alone, so they also take grayscale (one-channel) images;
"caffe" and "torch" need the three RGB channels.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .errors import JaxvizError

MODES = ("caffe", "tf", "torch", "rescale", "none")
#: Modes that treat each channel alike (any channel count).
PER_VALUE_MODES = ("tf", "rescale", "none")

_CAFFE_BGR_MEAN = np.asarray((103.939, 116.779, 123.68), np.float32)
_TORCH_MEAN = np.asarray((0.485, 0.456, 0.406), np.float32)
_TORCH_STD = np.asarray((0.229, 0.224, 0.225), np.float32)


def check_mode(mode: str) -> str:
    if mode not in MODES:

        raise JaxvizError(f"unknown preprocessing {mode!r}; use one of: {', '.join(MODES)}")
    return mode


def check_channels(mode: str, channels: int) -> str:
    """``mode``, checked against a model's input channels ("caffe" and "torch" are per-RGB-channel)."""
    mode = check_mode(mode)
    if channels != 3 and mode not in PER_VALUE_MODES:

        raise JaxvizError(f"preprocessing {mode!r} is for RGB images (3 channels); the model takes {channels}: "
                          f"use one of {', '.join(PER_VALUE_MODES)}")
    return mode


def _xp(x):
    if type(x).__module__.startswith(("jax", "jaxlib")):

        return jnp, jnp.asarray(x, jnp.float32)
    return np, np.asarray(x, np.float32)


def preprocess(x, mode: str = "caffe"):
    """RGB 0..255 → the model's input in Keras's ``mode`` (see the module docstring); never modifies ``x``."""
    xp, x = _xp(x)
    mode = check_mode(mode)
    if mode == "caffe":
        return x[..., ::-1] - xp.asarray(_CAFFE_BGR_MEAN)
    if mode == "tf":
        return x / np.float32(127.5) - np.float32(1.0)
    if mode == "torch":
        return (x / np.float32(255.0) - xp.asarray(_TORCH_MEAN)) / xp.asarray(_TORCH_STD)
    if mode == "rescale":
        return x / np.float32(255.0)
    return x + 0  # a copy, like the others


def unpreprocess(x, mode: str = "caffe"):
    """The inverse of :func:`preprocess`: model input → RGB 0..255 (not clipped)."""
    xp, x = _xp(x)
    mode = check_mode(mode)
    if mode == "caffe":
        return (x + xp.asarray(_CAFFE_BGR_MEAN))[..., ::-1]
    if mode == "tf":
        return (x + np.float32(1.0)) * np.float32(127.5)
    if mode == "torch":
        return (x * xp.asarray(_TORCH_STD) + xp.asarray(_TORCH_MEAN)) * np.float32(255.0)
    if mode == "rescale":
        return x * np.float32(255.0)
    return x + 0


def value_range(mode: str = "caffe", channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` per channel: the model-space values of pixels 0 and 255 (the valid input range) in ``mode``."""
    lo = preprocess(np.zeros(channels, np.float32), mode)
    hi = preprocess(np.full(channels, 255.0, np.float32), mode)
    return np.minimum(lo, hi), np.maximum(lo, hi)


def gray_level(mode: str = "caffe", channels: int = 3) -> np.ndarray:
    """The model-space size of one gray level (1 of 255) per channel: 1 for "caffe" and "none", 1/255 for
    "rescale", 1/127.5 for "tf", 1/(255·std) for "torch"."""
    lo, hi = value_range(mode, channels)
    return ((hi - lo) / np.float32(255.0)).astype(np.float32)
