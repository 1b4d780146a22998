"""GradientSHAP / Expected Gradients: input gradients at random points between random baselines and the
image, times the image's difference from the baseline, averaged.

- Erion, Janizek, Sturmfels, Lundberg & Lee, "Improving performance of deep learning models with axiomatic
  attribution priors and expected gradients", Nature Machine Intelligence 3, 2021, arXiv:1906.10670
  (Expected Gradients);
- Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017 (GradientSHAP, as
  Captum's ``GradientShap`` implements it).

For samples ``k = 1..n``: a baseline ``b_k`` drawn uniformly from ``baselines``, ``α_k ~ U(0, 1)``, and
optional input noise ``ε_k ~ N(0, σ²)`` (Captum's ``stdevs``; 0 = Expected Gradients):

    x̃_k = x + ε_k,     R = 1/n Σ_k (x̃_k − b_k) ⊙ ∂S_t/∂x (b_k + α_k (x̃_k − b_k))

This is Integrated Gradients with the path integral and the baseline both estimated by sampling: its
expectation over ``α`` (σ = 0) is IG from ``b``, averaged over the baselines. Each (image, sample) pair draws
from its own PRNG key folded from ``seed`` (independent of ``batch_size``); samples are evaluated
``batch_size`` model inputs at a time in one compiled program, so memory stays bounded for any ``n``. The
target is resolved on the clean image. Signed.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import runtime
from ..errors import JaxvizError

#: Display policy: the map's sign matters (negative = evidence against the class), so it is shown
#: as its positive part.
SIGNED = True


def gradient_shap(model, x, target: int | Sequence[int] | None = None, *, baselines=None, n: int = 20,
                  stdevs: float = 0.0, seed: int = 0, batch_size: int | None = None, score: str = "logit",
                  reduce: str | None = "sum", params=None) -> jax.Array:
    """GradientSHAP (Captum's ``GradientShap``); with ``stdevs=0`` and data as ``baselines``, Erion et al.'s
    Expected Gradients.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class, on the clean image), a class index, or one per image.
      baselines: ``[B, H, W, 3]`` (or one ``[H, W, 3]``) preprocessed reference images drawn from uniformly;
        Expected Gradients uses samples of the training data. Default: one all-zero image.
      n: samples per image.
      stdevs: standard deviation of the Gaussian noise added to the image per sample, in input units.
      seed: PRNG seed (an int, or a ``jax.random.key``).
      batch_size: model inputs (images × samples) per chunk; bounds memory.
      score: ``"logit"`` (default), ``"prob"`` or ``"log_prob"``.
      reduce: channel reduction; default ``"sum"``; ``None`` keeps ``[N, H, W, 3]``.
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32, signed (``[N, H, W, 3]`` for ``reduce=None``).
    """
    score = runtime.check_score(model, score)
    x, targets, reduce, n, batch_size = runtime.check_sampled_args(
        model, "gradient_shap", x, target, score, reduce, n, "n", batch_size, gradient=True)
    base = _check_baselines(baselines, x)
    if not (np.isfinite(stdevs) and stdevs >= 0):
        raise JaxvizError(f"stdevs must be a finite number ≥ 0, got {stdevs!r}")
    targets = runtime.resolve_on_clean_images(model, x, targets, params)
    keys = runtime.fold_keys(seed, x.shape[0], n)  # [N, n]
    chunk = runtime.per_chunk(batch_size, x.shape[0])
    noisy = bool(stdevs > 0)  # without noise no normal draws (x + 0·ε is x)

    def build(fwd):
        def run(params, x, t, keys, base, stdevs):
            def chunk_terms(ks):  # ks: [c, N] keys → terms [c, N, H, W, C]
                def draw(k):
                    kb, ka, ke = jax.random.split(k, 3)
                    b = base[jax.random.randint(kb, (), 0, base.shape[0])]
                    return b, jax.random.uniform(ka, (), x.dtype), ke

                b, alpha, ke = jax.vmap(jax.vmap(draw))(ks)  # [c, N, …]
                xs = jnp.broadcast_to(x, b.shape)
                if noisy:
                    xs = xs + stdevs * jax.vmap(jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype)))(ke)
                return _terms(fwd, params, xs, b, alpha, t, score)

            return runtime.chunked_sum(chunk_terms, jnp.swapaxes(keys, 0, 1), chunk) / keys.shape[1]

        return run

    fn = runtime.compiled(model, "gradient_shap", (chunk, score, noisy), build)
    out = fn(runtime.params_of(model, params), x, targets, keys, base, jnp.float32(stdevs))
    return runtime.finish(out, reduce)


def gradient_shap_from_draws(model, x_noisy, baselines, alphas, target, *, score: str = "logit",
                             reduce: str | None = "sum", params=None) -> jax.Array:
    """:func:`gradient_shap` with given draws: noisy images ``x̃`` and baselines ``[n, N, H, W, C]``, ``α``
    ``[n, N]``, resolved targets (one per image or one for all). For tests against other implementations'
    random draws."""
    score = runtime.check_score(model, score)
    reduce = runtime.check_reduce(reduce)
    xs, bs = jnp.asarray(x_noisy, jnp.float32), jnp.asarray(baselines, jnp.float32)
    targets = runtime.check_targets(model, target, xs.shape[1])

    def build(fwd):
        def run(params, xs, bs, alphas, t):
            return _terms(fwd, params, xs, bs, alphas, t, score).mean(0)

        return run

    fn = runtime.compiled(model, "gradient_shap_draws", (score,), build)
    return runtime.finish(fn(runtime.params_of(model, params), xs, bs, jnp.asarray(alphas, jnp.float32), targets),
                          reduce)


def _terms(fwd, params, xs, bs, alphas, t, score):
    """``(x̃ − b) ⊙ ∂S_t/∂x (b + α (x̃ − b))`` for ``[c, N, …]`` draws."""
    c, shape = xs.shape[0], xs.shape[1:]
    diff = xs - bs
    points = bs + alphas[..., None, None, None] * diff
    g, _, _ = runtime.input_gradient(fwd, params, points.reshape(-1, *shape[1:]), jnp.tile(t, c), score)
    return diff * g.reshape(c, *shape)


def _check_baselines(baselines, x) -> jax.Array:
    if baselines is None:
        return jnp.zeros((1, *x.shape[1:]), x.dtype)
    b = np.asarray(baselines, np.float32)
    if b.ndim == x.ndim - 1:
        b = b[None]
    if b.ndim != x.ndim or b.shape[1:] != tuple(x.shape[1:]) or b.shape[0] == 0:
        raise JaxvizError(f"baselines must be [B, {', '.join(map(str, x.shape[1:]))}] (or one image), got "
                          f"shape {b.shape}")
    if not np.isfinite(b).all():
        raise JaxvizError("baselines hold NaN/inf values; pass finite preprocessed images")
    return jnp.asarray(b)
