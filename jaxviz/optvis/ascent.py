"""The ascent loops, each one ``lax.fori_loop`` inside one compiled program:

- :func:`normalised_ascent`: Chollet's, *Deep Learning with Python*, listing 5.38: ``x += step · g / rms(g)``
  in the model's input space, the gradient normalised per image;
- :func:`adam_ascent` and :func:`render_regularised`: lucid's ``render_vis`` (Olah et al., "Feature
  Visualization", Distill 2017): Adam on a Fourier / decorrelated parametrisation
  (:mod:`jaxviz.optvis.param`), the image randomly transformed at every step (:mod:`jaxviz.optvis.transforms`).

DeepVis's loop (clip, step, decay, blur, best iterate; Yosinski et al. 2015) is in
:mod:`jaxviz.visualize.deepvis`, built from the same transforms.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from . import param, transforms


def normalised_ascent(total: Callable, x0, step_size, steps, unit=1.0):
    """``steps`` steps ``x += step_size · unit · g / (rms(g) + 1e-5)`` of ``g = ∂ total(x) / ∂x``, the RMS taken
    per image (listing 5.38's ``grads /= (K.sqrt(K.mean(K.square(grads))) + 1e-5)``)."""
    grad = jax.grad(total)

    def step(_, x):
        g = grad(x).astype(jnp.float32)
        g = g / (jnp.sqrt(jnp.mean(jnp.square(g), axis=(1, 2, 3), keepdims=True)) + 1e-5)
        return x + step_size * unit * g

    return lax.fori_loop(0, steps, step, x0)


def adam_ascent(loss: Callable, param0, keys, step_size, steps):
    """``steps`` Adam steps (learning rate ``step_size``) minimising ``loss(param, step_keys)``; step ``i``'s keys
    are ``fold_in(keys[b], i)``."""
    opt = optax.adam(step_size)

    def step(i, carry):
        p, state = carry
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
        g = jax.grad(loss)(p, step_keys)
        updates, state = opt.update(g, state, p)
        return optax.apply_updates(p, updates), state

    p, _ = lax.fori_loop(0, steps, step, (param0, opt.init(param0)))
    return p


def render_regularised(objective: Callable, keys, step_size, steps, *, size: int, opts: dict, preprocess: str,
                       channels: int, dtype, penalty: Callable | None = None):
    """lucid's regularised ascent of one image per start key ``keys[b]``, maximising ``objective(x).sum()``
    (``objective``: model-space images ``[B, S, S, C]`` → ``[B]``) minus ``penalty(x)`` where given.

    The image is :func:`jaxviz.optvis.param.fourier_to_rgb` of parameters drawn from ``fold_in(keys[b], 0)``,
    transformed by :func:`jaxviz.optvis.transforms.random_transform` with keys from ``fold_in(keys[b], 1)``
    at every step. Returns the final images in model space (float32)."""
    param0 = param.fourier_init(keys, size, opts["init_std"])
    step_base = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)

    def loss(p, step_keys):
        rgb = jax.vmap(lambda q: param.fourier_to_rgb(q, size, opts))(p)
        rgb = jax.vmap(lambda im, k: transforms.random_transform(im, k, opts))(rgb, step_keys)
        x = param.to_model_space(rgb, preprocess, channels).astype(dtype)
        value = -objective(x).sum()
        return value if penalty is None else value + penalty(x)

    p = adam_ascent(loss, param0, step_base, step_size, steps)
    rgb = jax.vmap(lambda q: param.fourier_to_rgb(q, size, opts))(p)
    return param.to_model_space(rgb, preprocess, channels)
