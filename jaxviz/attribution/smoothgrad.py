"""SmoothGrad: input gradients averaged over noisy copies of the image.

Smilkov, Thorat, Kim, Viégas & Wattenberg, "SmoothGrad: removing noise by adding noise", ICML workshop
2017, arXiv:1706.03825.

    M̂(x) = 1/n Σ_{k=1..n} ∂S_t/∂x (x + ε_k),   ε_k ~ N(0, σ²),   σ = noise · (max(x) − min(x))

σ is a fraction of each image's value range (the paper's "noise level", 10–20 % works best; Captum's
``NoiseTunnel`` takes an absolute ``stdevs``). The absolute value is taken after averaging, as the paper
visualises; Captum's ``NoiseTunnel(Saliency())`` averages ``|∂S/∂x|`` (abs before the mean). With
``abs=False`` this returns the plain mean gradient, what ``NoiseTunnel(Saliency(), abs=False)`` computes
(with other random draws).

Every (image, sample) pair draws its noise from its own PRNG key, folded from ``seed``, so the result does
not depend on ``batch_size``. The target is resolved on the clean image. Samples are evaluated
``batch_size`` model inputs at a time inside one compiled program, so memory stays bounded for any ``n``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .. import runtime

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


def smoothgrad(model, x, target: int | Sequence[int] | None = None, *, n: int = 50, noise: float = 0.15,
               seed: int = 0, batch_size: int | None = None, squared: bool = False, abs: bool = True,
               score: str = "logit", reduce: str | None = "max", params=None) -> jax.Array:
    """Smilkov et al.'s SmoothGrad of the plain input gradient.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class, on the clean image), a class index, or one per image.
      n: noisy samples per image (the paper uses 50).
      noise: noise standard deviation as a fraction of each image's range ``max − min``.
      seed: PRNG seed (an int, or a ``jax.random.key``).
      batch_size: model inputs (images × samples) per chunk; bounds memory. Default: 8 on a CPU, what
        half an accelerator's free memory holds otherwise (:func:`~jaxviz.runtime.batch_size_for`).
      squared: average the squared gradients (SmoothGrad-Squared, Hooker et al. 2019) instead.
      abs: take the absolute value of the averaged gradient (as the paper visualises it).
      score: ``"logit"`` (default), ``"prob"`` or ``"log_prob"``.
      reduce: channel reduction; default ``"max"`` as :func:`saliency`; ``None`` keeps ``[N, H, W, 3]``.
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32 (``[N, H, W, 3]`` for ``reduce=None``).
    """
    score = runtime.check_score(model, score)
    x, targets, reduce, n, batch_size = runtime.check_sampled_args(
        model, "smoothgrad", x, target, score, reduce, n, "n", batch_size, gradient=True)
    keys = runtime.fold_keys(seed, x.shape[0], n)  # [N, n]
    chunk = runtime.per_chunk(batch_size, x.shape[0])

    def build(fwd):
        def run(params, x, targets, keys, noise):
            t = runtime.resolve_targets(targets, fwd(params, x, upto="logits")[0])
            sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))  # [N]

            def chunk_grads(ks):  # ks: [c, N] keys → gradients [c, N, H, W, C]
                c = ks.shape[0]
                eps = jax.vmap(jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype)))(ks)
                xs = x[None] + sigma[None, :, None, None, None] * eps  # [c, N, H, W, C]
                g, _, _ = runtime.input_gradient(fwd, params, xs.reshape(-1, *x.shape[1:]),
                                               jnp.tile(t, c), score)
                g = g.reshape(c, *x.shape)
                return g * g if squared else g

            mean = runtime.chunked_sum(chunk_grads, jnp.swapaxes(keys, 0, 1), chunk) / keys.shape[1]
            return jnp.abs(mean) if abs else mean

        return run

    fn = runtime.compiled(model, "smoothgrad", (chunk, bool(squared), bool(abs), score), build)
    return runtime.finish(fn(runtime.params_of(model, params), x, targets, keys, jnp.float32(noise)), reduce)
