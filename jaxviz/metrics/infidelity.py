"""Infidelity and sensitivity-max: how well a map predicts the model's response to perturbations, and how
much the map itself moves under small ones.

Yeh, Hsieh, Suggala, Inouye & Ravikumar, "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019,
arXiv:1901.09392 (definitions 2.1 and 3.1; Captum's ``captum.metrics.infidelity`` and ``sensitivity_max``).

Infidelity, for perturbations ``I_k`` (``k = 1..n``, default Gaussian ``N(0, σ²)``) and the target's score
``f`` (the logit by default):

    INFD = 1/n Σ_k (Σ_ij I_k,ij · Φ_ij − (f(x) − f(x − I_k)))²

with ``normalize=True`` the map is first scaled by the least-squares ``β = Σ_k a_k d_k / Σ_k a_k²``
(``a_k = Σ I_k Φ``, ``d_k`` the score change), as Captum's ``normalize``. A map ``[N, H, W]`` is per pixel
(each ``I_k`` the same on every channel); ``[N, H, W, C]`` is per input value (Captum's layout).

Sensitivity-max, for perturbations ``δ_k`` uniform in ``[−r, r]`` per input value (Captum's default):

    SENS = max_k ‖Φ(x + δ_k) − Φ(x)‖_F / ‖Φ(x)‖_F      (‖Φ(x)‖ = 0 → divided by 1, as Captum)

The target is resolved once on the clean image. Perturbations come from per-(image, sample) PRNG keys
folded from ``seed``; ``perturbations=`` takes given ones (e.g. another implementation's, for comparisons).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import runtime
from ..attribution.methods import get_method
from ..errors import JaxvizError


def infidelity(model, x, maps, target: int | Sequence[int] | None = None, *, n: int = 10,
               stdevs: float | None = None, perturbations=None, normalize: bool = False, seed: int = 0,
               batch_size: int | None = None, score: str = "logit", params=None) -> np.ndarray:
    """Yeh et al.'s infidelity of ``maps`` (lower is better), one value per image.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      maps: ``[N, H, W]`` (per pixel) or ``[N, H, W, 3]`` attributions of ``target``.
      target: the class the maps explain: ``None`` (each image's top class), an index, or one per image.
      n: perturbations per image.
      stdevs: σ of the Gaussian perturbations in input units; default 10 % of each image's range.
      perturbations: given ``I`` ``[n, N, H, W, 1 or C]`` instead of random ones.
      normalize: scale the map by the least-squares β first (Captum's ``normalize``).
      seed: PRNG seed.
      batch_size: model inputs per chunk; bounds memory.
      score: ``"logit"`` (default), ``"prob"`` or ``"log_prob"``.
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N]`` float64.
    """
    score = runtime.check_score(model, score)
    x, targets, _, n, batch_size = runtime.check_sampled_args(model, "infidelity", x, target, score, "sum", n, "n",
                                                             batch_size, gradient=False)
    m = _check_attr(maps, x)
    per_pixel = m.ndim == 3
    if perturbations is None:
        keys = runtime.fold_keys(seed, x.shape[0], n)
        if stdevs is None:
            sigma = 0.1 * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
        else:
            if not (np.isfinite(stdevs) and stdevs >= 0):
                raise JaxvizError(f"stdevs must be a finite number ≥ 0, got {stdevs!r}")
            sigma = jnp.full((x.shape[0],), stdevs, jnp.float32)
        shape = (*x.shape[1:3], 1 if per_pixel else x.shape[-1])
        pert = jax.vmap(lambda ks, s: jax.vmap(lambda k: s * jax.random.normal(k, shape))(ks), out_axes=1)(keys, sigma)
    else:
        pert = jnp.asarray(perturbations, jnp.float32)
        want = (x.shape[0], *x.shape[1:3])
        if pert.ndim != 5 or tuple(pert.shape[1:4]) != want or pert.shape[4] not in (1, x.shape[-1]):
            raise JaxvizError(f"perturbations must be [n, {', '.join(map(str, want))}, 1 or {x.shape[-1]}], got "
                              f"shape {pert.shape}")
    chunk = runtime.per_chunk(batch_size, x.shape[0])
    if per_pixel:
        m = m[..., None]

    def build(fwd):
        def run(params, x, targets, m, pert):
            logits = fwd(params, x, upto="logits")[0]
            t = runtime.resolve_targets(targets, logits)
            s = runtime.class_score(logits, t, score)  # [N]

            def terms(ip):  # [c, N, H, W, 1|C] → (a, d) [c, N]
                c = ip.shape[0]
                xs = (x[None] - ip).reshape(-1, *x.shape[1:])
                d = s[None] - runtime.scores_of(fwd, params, xs, jnp.tile(t, c), score).reshape(c, -1)
                a = (ip * m[None]).sum(axis=(2, 3, 4))
                return jnp.stack([a * a, a * d, d * d, (a - d) ** 2], -1)  # [c, N, 4]

            return runtime.chunked_sum(terms, pert, chunk)  # [N, 4]

        return run

    fn = runtime.compiled(model, "infidelity", (chunk, score), build)
    sums = np.asarray(fn(runtime.params_of(model, params), x, targets, m, pert), np.float64)
    k = pert.shape[0]
    if not normalize:
        return sums[:, 3] / k
    aa, ad, dd = sums[:, 0], sums[:, 1], sums[:, 2]
    beta = np.where(aa != 0, ad / np.where(aa != 0, aa, 1), 0)
    return (beta * beta * aa - 2 * beta * ad + dd) / k


def sensitivity_max(method: str | Callable, model, x, target: int | Sequence[int] | None = None, *, n: int = 10,
                    radius: float = 0.02, perturbations=None, seed: int = 0, batch_size: int | None = None,
                    **options) -> np.ndarray:
    """Yeh et al.'s max-sensitivity of ``method``'s maps (lower is better), one value per image.

    Args:
      method: a method name (as :func:`jaxviz.explain`) or a function with the common signature.
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class, on the clean image), an index, or one per image.
      n: perturbations per image.
      radius: the L∞ radius ``r`` of the uniform perturbations (Captum's ``perturb_radius``), input units.
      perturbations: given ``δ`` ``[n, N, H, W, C]`` instead of random ones.
      seed: PRNG seed.
      batch_size: perturbed images per call of ``method``; default ``N``.
      **options: passed to ``method``.

    Returns:
      ``[N]`` float64.
    """

    fn = get_method(method) if isinstance(method, str) else method
    runtime.check_model(model, "sensitivity_max")
    n = runtime.check_positive(n, "n")
    x = runtime.check_input(model, x)
    if not (np.isfinite(radius) and radius >= 0):
        raise JaxvizError(f"radius must be a finite number ≥ 0, got {radius!r}")
    targets = np.asarray(runtime.resolve_on_clean_images(model, x, runtime.check_targets(model, target, x.shape[0])))
    if perturbations is None:
        keys = runtime.fold_keys(seed, x.shape[0], n)
        pert = jax.vmap(lambda ks: jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], x.dtype, -radius, radius))(ks),
                        out_axes=1)(keys)
    else:
        pert = jnp.asarray(perturbations, jnp.float32)
        if pert.ndim != 5 or tuple(pert.shape[1:]) != tuple(x.shape):
            raise JaxvizError(f"perturbations must be [n, {', '.join(map(str, x.shape))}], got shape {pert.shape}")
    k = pert.shape[0]
    base = np.asarray(fn(model, x, targets, **options), np.float64).reshape(x.shape[0], -1)
    norm = np.linalg.norm(base, axis=1)
    norm = np.where(norm == 0, 1, norm)
    per_call = max(1, min(k, (batch_size or x.shape[0]) // x.shape[0]))
    tiled = np.tile(targets, per_call)
    best = np.full(x.shape[0], -np.inf)
    for start in range(0, k, per_call):
        c = min(per_call, k - start)
        p = pert[start:start + per_call]
        if c < per_call:  # the last call padded to the same shape (no new compilation); extra results dropped
            p = jnp.concatenate([p, pert[:per_call - c]])
        xs = (x[None] + p).reshape(-1, *x.shape[1:])
        maps = np.asarray(fn(model, xs, tiled, **options), np.float64).reshape(per_call, x.shape[0], -1)[:c]
        best = np.maximum(best, (np.linalg.norm(maps - base[None], axis=2) / norm[None]).max(0))
    return best


def _check_attr(maps, x) -> jax.Array:
    m = np.asarray(maps, np.float32)
    if not np.isfinite(m).all():
        raise JaxvizError("the maps hold NaN/inf values; check the method's inputs (np.isfinite)")
    if m.shape not in (tuple(x.shape[:3]), tuple(x.shape)):
        raise JaxvizError(f"expected maps [N, H, W] or [N, H, W, C] matching the images {tuple(x.shape)}, got shape "
                          f"{m.shape}; upsample CAMs to the input size first")
    return jnp.asarray(m)
