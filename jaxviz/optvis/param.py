"""Image parametrisations and the pixel spaces they live in.

- Pixel space (the book's, Chollet, *Deep Learning with Python*, listing 5.38; and DeepVis's, Yosinski et
  al. 2015): the model's input itself is optimised, starting from noise around gray or the mean image
  (:func:`book_start`, :func:`pixel_space`, :func:`pixel_range`).
- lucid's Fourier / decorrelated colour space (Olah et al., "Feature Visualization", Distill 2017;
  lucid's ``fft_image`` and ``to_valid_rgb``): rfft2 coefficients scaled by ``1/f**decay_power``, colours
  decorrelated with ImageNet's colour-correlation square root, a sigmoid to [0, 1]
  (:func:`fourier_init`, :func:`fourier_to_rgb`), then the model's preprocessing (:func:`to_model_space`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import preprocessing

# ImageNet colour correlation (square root of its covariance, from an SVD), as published with lucid.
COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
#: Caffe's ImageNet means, BGR order (Keras's "caffe" preprocessing subtracts them).
BGR_MEAN = np.asarray((103.939, 116.779, 123.68), np.float32)
#: The ImageNet mean pixel, RGB 0..255: the "mean image" DeepVis starts from and decays towards.
MEAN_RGB = np.asarray((123.68, 116.779, 103.939), np.float32)


# ---------------------------------------------------------------------------------------------------------
# Pixel space


def book_start(seed, filters, size: int, preprocess: str = "caffe", channels: int = 3):
    """The book's ``np.random.random((1, size, size, 3)) * 20 + 128.``, one key ``fold_in(key(seed), f)`` per
    filter index ``f``.

    For Caffe's VGG input (the book's) the values are used as they are; for any other preprocessing they
    are pixels (gray levels 128–148) mapped into the model's input range, so a model fed [0, 1] or [-1, 1]
    starts from the same mid-gray image."""
    base = jax.random.key(seed)
    x = jax.vmap(
        lambda f: jax.random.uniform(jax.random.fold_in(base, f), (size, size, channels), jnp.float32) * 20.0 + 128.0
    )(filters)
    if preprocess == "caffe":
        return x
    return preprocessing.preprocess(x, preprocess)


def pixel_range(mode: str, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The model-space values of RGB 0 and 255 per channel (the valid pixel range) for a preprocessing mode."""
    return preprocessing.value_range(mode, channels)


def pixel_space(mode: str, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``(centre, scale)`` per channel: the model-space value of the mean pixel and of one gray level.

    DeepVis's settings are in gray levels of 0..255 pixels, as the paper's for Caffe's VGG (whose model
    space is 0..255 minus the mean: centre 0, scale 1). For a model fed [0, 1] (scale 1/255), [-1, 1] or
    0..255 as is (centre ≈ 115), the start noise is ``centre + init_std · scale · N(0, 1)``, the step
    ``step_size · scale²`` (the gradient w.r.t. model space is ``1 / scale`` times that w.r.t. pixels, and
    a step of the same pixels is ``scale`` times smaller in model space), and the L2 decay pulls towards the
    centre: every mode then takes the same steps in pixels.
    """
    mean = MEAN_RGB if channels == 3 else np.full(channels, MEAN_RGB.mean(), np.float32)
    centre = np.asarray(preprocessing.preprocess(mean, mode), np.float32)
    return centre, preprocessing.gray_level(mode, channels)


# ---------------------------------------------------------------------------------------------------------
# lucid's Fourier / decorrelated colour parametrisation


def spectrum_scale(size: int, decay_power: float) -> np.ndarray:
    """lucid's 1/f scaling of an rfft2 spectrum of a ``size``×``size`` image: ``[size, size // 2 + 1]``."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    return (1.0 / np.maximum(freqs, 1.0 / size) ** decay_power).astype(np.float32)


def fourier_init(keys, size: int, init_std: float):
    """Start parameters ``[N, 2, 3, S, S//2+1]`` (real, imaginary) ~ N(0, init_std²), from ``fold_in(k, 0)``."""
    shape = (2, 3, size, size // 2 + 1)
    return jax.vmap(lambda k: init_std * jax.random.normal(jax.random.fold_in(k, 0), shape))(keys)


def fourier_to_rgb(param, size: int, opts: dict):
    """Fourier parameters ``[2, 3, S, S//2+1]`` → RGB image ``[S, S, 3]`` in (0, 1).

    ``opts``: ``decay_power`` (the spectrum's 1/f exponent) and ``decorrelate`` (ImageNet's colour
    correlation); with 0 and False the image is a plain sigmoid of pixel values."""
    scale = jnp.asarray(spectrum_scale(size, opts["decay_power"]))
    spectrum = lax.complex(param[0], param[1]) * scale
    img = jnp.fft.irfft2(spectrum, s=(size, size), norm="ortho").transpose(1, 2, 0) / 4.0
    if opts["decorrelate"]:
        c = COLOR_CORRELATION_SVD_SQRT
        c = c / np.max(np.linalg.norm(c, axis=0))
        img = img @ jnp.asarray(c.T)
    return jax.nn.sigmoid(img)


def to_model_space(rgb, mode: str = "caffe", channels: int = 3):
    """RGB in [0, 1] → the model's input (Keras's ``mode`` preprocessing; "caffe": BGR 0..255 minus the means;
    one channel: the RGB image's mean)."""
    if channels == 1:
        rgb = rgb.mean(axis=-1, keepdims=True)
    if mode == "caffe":
        return rgb[..., ::-1] * 255.0 - jnp.asarray(BGR_MEAN)
    return preprocessing.preprocess(rgb * 255.0, mode)
