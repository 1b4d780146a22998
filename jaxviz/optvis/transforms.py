"""Transformations applied to the image at each ascent step: random shifts (jitter), Gaussian blur, and
lucid's pad / scale / rotate / shift ("transformation robustness", Olah et al., "Feature Visualization",
Distill 2017). Every one is a dense linear map (rolls, padding, convolutions, interpolation matrices,
FFTs), so its gradient has no gather or scatter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# ---------------------------------------------------------------------------------------------------------
# Jitter by whole pixels (Mordvintsev et al. 2015, "Inceptionism"; DeepVis's jitter)


def roll2d(x: jax.Array, dy: jax.Array, dx: jax.Array) -> jax.Array:
    """Circular shift of one ``[H, W, C]`` image by traced offsets (forward-only: no scatter in any grad)."""
    return jnp.roll(jnp.roll(x, dy, axis=0), dx, axis=1)


def random_shifts(keys: jax.Array, step, jitter: int) -> jax.Array:
    """``[N, 2]`` integer shifts in ``[-jitter, jitter]`` for step ``step``, one per image key."""
    return jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, step), (2,), -jitter, jitter + 1))(keys)


def shift(x: jax.Array, shifts: jax.Array) -> jax.Array:
    """Each image of ``[N, H, W, C]`` rolled by its own ``shifts[n] = (dy, dx)``."""
    return jax.vmap(roll2d)(x, shifts[:, 0], shifts[:, 1])


def unshift(g: jax.Array, shifts: jax.Array) -> jax.Array:
    """:func:`shift` undone (e.g. on the gradient of the shifted images)."""
    return jax.vmap(roll2d)(g, -shifts[:, 0], -shifts[:, 1])


# ---------------------------------------------------------------------------------------------------------
# Gaussian blur (Yosinski et al. 2015's regulariser)


def gaussian_kernel1d(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps, truncated at 4σ (as ``scipy.ndimage.gaussian_filter``)."""
    radius = max(1, int(4.0 * sigma + 0.5))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of ``[N, H, W, C]`` images, each channel on its own.

    Equals ``scipy.ndimage.gaussian_filter(…, sigma)`` per channel (the DeepVis toolbox's blur): taps
    truncated at 4σ, and SciPy's default border "reflect" (``c b a | a b c``, the edge pixel repeated), which
    is ``jnp.pad``'s "symmetric" mode (``jnp.pad``'s "reflect" is SciPy's "mirror").
    """
    k = jnp.asarray(gaussian_kernel1d(sigma))
    r = (k.shape[0] - 1) // 2
    c = x.shape[-1]
    xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="symmetric")
    dn = ("NHWC", "HWIO", "NHWC")
    kh = jnp.tile(k.reshape(-1, 1, 1, 1), (1, 1, 1, c))
    kw = jnp.tile(k.reshape(1, -1, 1, 1), (1, 1, 1, c))
    y = lax.conv_general_dilated(xp, kh, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c)
    return lax.conv_general_dilated(y, kw, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c)


# ---------------------------------------------------------------------------------------------------------
# lucid's standard transforms: pad, scale, rotate, shift


def shear_x(img, amount):
    """Shifts row ``y`` of ``[H, W, C]`` by ``amount · (y − centre)`` pixels (exact, periodic: via the FFT)."""
    h, w = img.shape[:2]
    offset = amount * (jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2)
    freqs = jnp.fft.fftfreq(w).astype(jnp.float32)
    phase = jnp.exp(-2j * jnp.pi * offset[:, None] * freqs[None, :])
    return jnp.real(jnp.fft.ifft(jnp.fft.fft(img, axis=1) * phase[:, :, None], axis=1)).astype(img.dtype)


def rotate(img, theta):
    """Rotates ``[H, W, C]`` by ``theta`` radians about its centre with three shears (Paeth 1986)."""
    a, b = -jnp.tan(theta / 2), jnp.sin(theta)
    img = shear_x(img, a)
    img = shear_x(img.transpose(1, 0, 2), b).transpose(1, 0, 2)
    return shear_x(img, a)


def random_transform(rgb, key, opts: dict):
    """Random pad / scale / rotate / shift of one RGB image ``[S, S, 3]``, back to ``[S, S, 3]``.

    ``opts``: ``pad`` (gray border, px), ``scale`` (factor in ``[1 - scale, 1 + scale]``), ``rotate``
    (degrees, ±), ``jitter`` (shift, px, ±); the model sees the centre crop.
    """
    size = rgb.shape[0]
    pad = int(opts["pad"])
    img = jnp.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), constant_values=0.5)
    big = size + 2 * pad
    k_scale, k_rot, k_shift = jax.random.split(key, 3)
    s = 1.0 + opts["scale"] * jax.random.uniform(k_scale, (), minval=-1.0, maxval=1.0)
    offset = opts["jitter"] * jax.random.uniform(k_shift, (2,), minval=-1.0, maxval=1.0)
    # Output pixel o samples input (o − t) / s: scale about the centre, then shift.
    t = (1.0 - s) * big / 2 + offset
    img = jax.image.scale_and_translate(img, (big, big, 3), (0, 1), jnp.stack([s, s]), t, "linear",
                                        antialias=False)
    if opts["rotate"]:
        theta = jnp.deg2rad(opts["rotate"]) * jax.random.uniform(k_rot, (), minval=-1.0, maxval=1.0)
        img = rotate(img, theta)
    return img[pad: pad + size, pad: pad + size]
