"""The ascent loops, each one ``lax.fori_loop`` inside one compiled program:

- :func:`gradient_ascent`: the loop of plain gradient steps, with the per-step hooks its users need: a
  transform before the gradient (DeepVis's clip), the step rule, a transform after the step (DeepVis's
  periodic blur, :func:`every`) and an optional best-iterate tracker (:func:`best_iterate`). Two step rules:
  :func:`normalised_step`, Chollet's (*Deep Learning with Python*, listing 5.38; :func:`normalised_ascent`),
  and :func:`decayed_step`, Yosinski et al.'s (2015, DeepVis: a step then L2 decay); :func:`jittered`
  computes the gradient on randomly shifted images;
- :func:`adam_ascent` and :func:`render_regularised`: lucid's ``render_vis`` (Olah et al., "Feature
  Visualization", Distill 2017): Adam on a Fourier / decorrelated parametrisation
  (:mod:`jaxviz.optvis.param`), the image randomly transformed at every step (:mod:`jaxviz.optvis.transforms`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from . import param, transforms


def best_iterate(best, best_score, x, score):
    """Each image's best iterate so far: ``x[n]`` (and ``score[n]``) where ``score[n] > best_score[n]``, else
    ``best[n]`` (the DeepVis toolbox's "best-ever objective" snapshot)."""
    better = score > best_score
    return jnp.where(better[:, None, None, None], x, best), jnp.where(better, score, best_score)


def gradient_ascent(score_and_grad: Callable, update: Callable, x, start, stop, *, before: Callable | None = None,
                    after: Callable | None = None, best=None):
    """Steps ``start`` … ``stop - 1`` of gradient ascent on the images ``x``, one ``lax.fori_loop``. Step ``i``:

    1. ``x = before(x)`` where given (e.g. DeepVis's clip to the valid pixels);
    2. ``score, g = score_and_grad(i, x)`` (``score``: ``[N]``, only read by the tracker);
    3. where ``best = (images, scores)`` is given, :func:`best_iterate` of ``x`` and ``score``;
    4. ``x = update(x, g)``: the step rule (:func:`normalised_step`, :func:`decayed_step`);
    5. ``x = after(i, x)`` where given (e.g. DeepVis's periodic blur, :func:`every`).

    ``start`` and ``stop`` may be traced (one program then runs any segment of the ascent). Returns ``x``, or
    ``(x, best)`` where ``best`` is given."""
    tracking = best is not None

    def body(i, carry):
        x, best = carry if tracking else (carry, None)
        if before is not None:
            x = before(x)
        score, g = score_and_grad(i, x)
        if tracking:
            best = best_iterate(*best, x, score)
        x = update(x, g)
        if after is not None:
            x = after(i, x)
        return (x, best) if tracking else x

    return lax.fori_loop(start, stop, body, (x, best) if tracking else x)


def jittered(score_and_grad: Callable, keys, jitter: int) -> Callable:
    """``score_and_grad(x)`` (``x → (score, g)``) as :func:`gradient_ascent`'s ``(i, x) → (score, g)``, with
    jitter (Mordvintsev et al. 2015, "Inceptionism"): at step ``i`` each image is shifted by up to ``jitter``
    pixels (:func:`jaxviz.optvis.transforms.random_shifts` of ``keys`` and ``i + 1``), the shift undone on
    its gradient; the score is the shifted image's. ``jitter=0``: no shift."""
    if not jitter:
        return lambda i, x: score_and_grad(x)

    def at_step(i, x):
        shifts = transforms.random_shifts(keys, i + 1, jitter)
        score, g = score_and_grad(transforms.shift(x, shifts))
        return score, transforms.unshift(g, shifts)

    return at_step


def every(n: int, transform: Callable) -> Callable:
    """:func:`gradient_ascent`'s ``after`` hook applying ``transform`` at the steps ``i`` with ``i % n == 0``."""
    return lambda i, x: lax.cond(i % n == 0, transform, lambda v: v, x)


def normalised_step(step_size, unit=1.0) -> Callable:
    """``x + step_size · unit · g / (rms(g) + 1e-5)``, the RMS taken per image (listing 5.38's
    ``grads /= (K.sqrt(K.mean(K.square(grads))) + 1e-5)``)."""
    def update(x, g):
        g = g.astype(jnp.float32)
        g = g / (jnp.sqrt(jnp.mean(jnp.square(g), axis=(1, 2, 3), keepdims=True)) + 1e-5)
        return x + step_size * unit * g

    return update


def decayed_step(step_size, l2_decay, centre, scale) -> Callable:
    """Yosinski et al.'s step then L2 decay towards ``centre`` (the mean image), in one expression:
    ``centre + (x - centre + step_size · scale² · g) · (1 - l2_decay)``. ``step_size`` is in gray levels and
    ``scale`` a gray level in model space (:func:`jaxviz.optvis.param.pixel_space`)."""
    return lambda x, g: centre + (x - centre + step_size * scale * scale * g) * (1.0 - l2_decay)


def normalised_ascent(total: Callable, x0, step_size, steps, unit=1.0):
    """``steps`` :func:`normalised_step` steps on ``g = ∂ total(x) / ∂x`` (Chollet's ascent)."""
    grad = jax.grad(total)
    return gradient_ascent(lambda i, x: (None, grad(x)), normalised_step(step_size, unit), x0, 0, steps)


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
