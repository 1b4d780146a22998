"""ROAD: RemOve And Debias — the class score after the most (least) relevant pixels are replaced by a noisy
linear imputation of their neighbours, as pytorch-grad-cam ships it.

Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and Efficient Evaluation Strategy for Attribution
Methods", ICML 2022, arXiv:2202.00449.

For a percentile ``p`` of the map (numpy's ``percentile``, linear interpolation):

- MoRF (most relevant first): the pixels with ``map ≥ percentile(map, p)`` are removed (``p = 80``: the top
  20 %); LeRF (least relevant first): the same on ``1 − map``, i.e. the least relevant ones;
- a removed pixel's value ``v_i`` (per channel) solves the paper's linear system: the weighted mean of its 8
  neighbours (weight 1/6 for the 4 direct, 1/12 for the diagonal ones, neighbours outside the image left
  out), known neighbours at their values — ``s_i v_i − Σ_{j removed} w_ij v_j = Σ_{j kept} w_ij x_j`` — plus
  ``noise · N(0, 1)`` (pytorch-grad-cam's ``NoisyLinearImputer``, 0.01; in the model's input units);
- the result is the target's score on the imputed image minus its score on the image (pytorch-grad-cam's
  ``return_diff``), averaged over ``percentiles`` (its ``ROAD…Average``; default 10, 20, …, 90).

Lower MoRF (the score falls fast when the relevant pixels go) and higher LeRF are better;
:func:`road_combined` is ``(LeRF − MoRF) / 2`` (pytorch-grad-cam's ``ROADCombined``; higher is better).

A percentile that keeps no pixel (ties: e.g. ``p`` below the share of a ReLU'd CAM's zeros, where the threshold
is 0 and no value is below it) leaves a system with no known value: its solutions are the constants, and the
solver returns the image's mean colour there (pytorch-grad-cam's sparse LU fails on the singular matrix).

The system is symmetric positive definite on the removed pixels; it is solved matrix-free by conjugate
gradients (the neighbour sums are a 3×3 depthwise convolution), for every image and percentile at once in
one compiled program, to a relative residual of ``tol`` (pytorch-grad-cam solves it exactly with SciPy's
sparse LU, one image and percentile at a time).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import runtime
from ..errors import JaxvizError

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
_W = np.array([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], np.float32)


def road(model, x, maps, target: int | Sequence[int] | None = None, *, order: str = "morf",
         percentiles: Sequence[float] = PERCENTILES, noise: float = 0.01, seed: int = 0, score: str = "logit",
         tol: float = 1e-7, batch_size: int | None = None, params=None) -> np.ndarray:
    """ROAD (Rong et al. 2022) of ``maps``: the mean score change over ``percentiles``, one value per image.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      maps: ``[N, H, W]`` attribution maps (a CAM at layer resolution is upsampled bilinearly).
      target: the class the maps explain: ``None`` (each image's top class), an index, or one per image.
      order: ``"morf"`` (remove the most relevant pixels first) or ``"lerf"`` (the least relevant).
      percentiles: thresholds in [0, 100] (pytorch-grad-cam's default: 10, 20, …, 90).
      noise: standard deviation of the noise added to imputed values, in input units.
      seed: PRNG seed of that noise.
      score: ``"logit"`` (default; pytorch-grad-cam's ``ClassifierOutputTarget``), ``"prob"``, ``"log_prob"``.
      tol: relative residual at which conjugate gradients stop.
      batch_size: imputed images per chunk of the forward passes.
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N]`` float64: the mean of ``score(imputed) − score(x)``.
    """
    return road_scores(model, x, maps, target, order=order, percentiles=percentiles, noise=noise, seed=seed,
                       score=score, tol=tol, batch_size=batch_size, params=params).mean(0)


def road_combined(model, x, maps, target: int | Sequence[int] | None = None, **options) -> np.ndarray:
    """``(LeRF − MoRF) / 2`` (pytorch-grad-cam's ``ROADCombined``): higher is better. Options as :func:`road`."""
    morf = road(model, x, maps, target, order="morf", **options)
    lerf = road(model, x, maps, target, order="lerf", **options)
    return (lerf - morf) / 2


def road_scores(model, x, maps, target=None, *, order: str = "morf", percentiles: Sequence[float] = PERCENTILES,
                noise: float = 0.01, seed: int = 0, score: str = "logit", tol: float = 1e-7,
                batch_size: int | None = None, params=None, return_images: bool = False):
    """``[P, N]`` score changes per percentile (and the ``[P, N, H, W, C]`` imputed images with
    ``return_images``); see :func:`road`."""
    runtime.check_model(model, "road")
    score = runtime.check_score(model, score)
    runtime.check_choice(order, ("morf", "lerf"), "order")
    x = runtime.check_input(model, x)
    targets = runtime.check_targets(model, target, x.shape[0])
    m = np.asarray(maps)
    m = m if m.dtype in (np.float32, np.float64) else m.astype(np.float64)  # thresholds in the maps' own precision
    if not np.isfinite(m).all():
        raise JaxvizError("the maps hold NaN/inf values, which rank no pixels; check the method's inputs")
    if m.ndim != 3 or m.shape[0] != x.shape[0]:
        raise JaxvizError(f"expected one map [N, H, W] per image ({x.shape[0]} images), got shape {m.shape}; "
                          "reduce channels first (e.g. reduce='sum')")
    if m.shape[1:] != tuple(x.shape[1:3]):
        m = np.asarray(runtime.resize_maps(jnp.asarray(m, jnp.float32), tuple(x.shape[1:3]), "bilinear"))
    ps = [float(p) for p in percentiles]
    if not ps or not all(0 <= p <= 100 for p in ps):
        raise JaxvizError(f"percentiles must be numbers in [0, 100], got {list(percentiles)!r}")
    ranked = m if order == "morf" else 1 - m
    # keep[p, n] = 1 where the pixel stays (pytorch-grad-cam: map < percentile(map, p))
    keep = np.stack([np.stack([(r < np.percentile(r, p)) for r in ranked]) for p in ps]).astype(np.float32)
    keys = runtime.fold_keys(seed, x.shape[0], len(ps)).T  # [P, N]
    batch_size = runtime.batch_size_for(model, x, batch_size, len(ps) * x.shape[0], gradient=False)
    chunk = runtime.per_chunk(batch_size, x.shape[0])

    def build(fwd):
        def run(params, x, targets, keep, keys, noise, tol):
            logits = fwd(params, x, upto="logits")[0]
            t = runtime.resolve_targets(targets, logits)
            s = runtime.class_score(logits, t, score)
            imputed = jax.vmap(jax.vmap(impute, (0, 0, 0, None, None)), (None, 0, 0, None, None))(x, keep, keys, noise,
                                                                                                   tol)  # [P, N, …]

            def scores(chunk_imgs):  # [c, N, H, W, C] → [c, N]
                c = chunk_imgs.shape[0]
                flat = chunk_imgs.reshape(-1, *x.shape[1:])
                return runtime.scores_of(fwd, params, flat, jnp.tile(t, c), score).reshape(c, -1)

            return runtime.chunked_map(scores, imputed, chunk) - s[None], imputed

        return run

    fn = runtime.compiled(model, "road", (chunk, score), build)
    diffs, imgs = fn(runtime.params_of(model, params), x, targets, jnp.asarray(keep), keys, jnp.float32(noise),
                     jnp.float32(tol))
    diffs = np.asarray(diffs, np.float64)
    return (diffs, imgs) if return_images else diffs


def impute(img, keep, key, noise, tol):
    """One image ``[H, W, C]`` with the pixels where ``keep`` ``[H, W]`` is 0 replaced by the noisy linear
    imputation (see the module docstring)."""
    w = jnp.asarray(_W)
    miss = (1 - keep)[..., None]

    def neigh(v):  # Σ_j w_ij v_j over in-image neighbours, per channel
        k = jnp.tile(w[:, :, None, None], (1, 1, 1, v.shape[-1]))
        return jax.lax.conv_general_dilated(v[None], k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=v.shape[-1])[0]

    s = neigh(jnp.ones_like(img[..., :1]))  # [H, W, 1] the weights of in-image neighbours

    def op(u):  # SPD on the removed pixels, the identity on the kept ones
        return miss * (s * u - neigh(miss * u)) + (1 - miss) * u

    b = miss * neigh((1 - miss) * img)
    u, _ = jax.scipy.sparse.linalg.cg(op, b, x0=miss * img.mean(axis=(0, 1)), tol=tol, maxiter=10 * sum(img.shape[:2]))
    u = jnp.where(keep.any(), u, img.mean(axis=(0, 1)))  # nothing kept: the constant solution, the mean colour
    eps = jax.random.normal(key, img.shape, img.dtype)
    return jnp.where(miss > 0, u + noise * eps, img)
