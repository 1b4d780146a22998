"""Integrated Gradients: the path integral of the input gradient from a baseline to the image.

Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017, arXiv:1703.01365.

    IG_i(x) = (x_i − x'_i) · ∫_0^1 ∂S_t/∂x_i (x' + α (x − x')) dα
            ≈ (x_i − x'_i) · Σ_k w_k ∂S_t/∂x_i (x' + α_k (x − x'))

The quadrature rules are Captum's (``captum.attr._utils.approximation_methods``), under the same names:

- ``"gausslegendre"`` (default, as Captum): Gauss–Legendre nodes and weights mapped to [0, 1].
- ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``: weights ``1/steps`` at the left ends,
  right ends or midpoints of ``steps`` equal intervals.
- ``"riemann_trapezoid"``: nodes ``linspace(0, 1, steps)``, weights ``1/steps`` with the two end weights
  halved — Captum's definition, whose weights sum to ``1 − 1/steps`` (the textbook trapezoid rule would use
  ``1/(steps−1)``); kept for parity.

Completeness: ``Σ_i IG_i = S_t(x) − S_t(x')`` up to the quadrature error; ``return_convergence_delta=True``
also returns that difference per image (Captum's convergence delta). Baselines: ``"zeros"`` (all-zero in
model space, i.e. the mean colour after ``preprocess_input``; Captum's default), ``"black"`` (a black
image, preprocessed), ``"blur"`` (the image blurred with a Gaussian of ``blur_sigma`` pixels, Sturmfels,
Lundberg & Lee, Distill 2020), or an array broadcastable to ``x`` (model space).

The ``steps × N`` gradient evaluations run ``batch_size`` model inputs at a time inside one compiled
program, so 200+ steps on 224×224 images fit in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import runtime
from ..errors import JaxvizError
from ..images import preprocess_input

#: Display policy: the map's sign matters (negative = evidence against the class), so it is shown
#: as its positive part.
SIGNED = True

RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")
BASELINES = ("zeros", "black", "blur")


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Captum's nodes ``α`` in [0, 1] and weights ``w`` for ``steps`` evaluations: ``(alphas, weights)``."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1), 0.5 * weights
    if method not in RULES:
        raise JaxvizError(f"unknown integration method {method!r}; use one of: {', '.join(RULES)}")
    if steps < 2:
        raise JaxvizError(f"{method} needs at least 2 steps, got {steps}")
    weights = np.full(steps, 1.0 / steps)
    rule = method.split("_", 1)[1]
    if rule == "trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        alphas = np.linspace(0, 1, steps)
    elif rule == "left":
        alphas = np.linspace(0, 1 - 1 / steps, steps)
    elif rule == "right":
        alphas = np.linspace(1 / steps, 1, steps)
    else:
        alphas = np.linspace(1 / (2 * steps), 1 - 1 / (2 * steps), steps)
    return alphas, weights


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of ``[N, H, W, C]`` images (radius 3σ, edges replicated)."""
    if sigma <= 0:
        return x
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = jnp.asarray(k / k.sum(), x.dtype)
    pad = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    rows = sum(k[i] * pad[:, i: i + h, :, :] for i in range(2 * r + 1))
    return sum(k[i] * rows[:, :, i: i + w, :] for i in range(2 * r + 1))


def make_baseline(baseline, x: jax.Array, blur_sigma: float = 10.0) -> jax.Array:
    """A model-space baseline ``[N, H, W, C]`` for ``x`` (see the module docstring for the names)."""
    if isinstance(baseline, str):
        if baseline == "zeros":
            return jnp.zeros_like(x)
        if baseline == "black":

            return jnp.broadcast_to(jnp.asarray(preprocess_input(np.zeros((1, 1, 3), np.float32))), x.shape)
        if baseline == "blur":
            return gaussian_blur(x, blur_sigma)
        raise JaxvizError(f"unknown baseline {baseline!r}; use one of: {', '.join(BASELINES)}, or an array")
    b = jnp.asarray(baseline, x.dtype)
    try:
        return jnp.broadcast_to(b, x.shape)
    except ValueError:
        raise JaxvizError(f"baseline of shape {b.shape} does not broadcast to the images' {x.shape}") from None


def integrated_gradients(model, x, target: int | Sequence[int] | None = None, *, baseline="zeros",
                         steps: int = 50, method: str = "gausslegendre", batch_size: int | None = None,
                         blur_sigma: float = 10.0, score: str = "logit", reduce: str | None = "sum",
                         return_convergence_delta: bool = False, params=None):
    """Sundararajan et al.'s Integrated Gradients.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      baseline: ``"zeros"`` (default), ``"black"``, ``"blur"`` or an array broadcastable to ``x``.
      steps: number of gradient evaluations along the path (Captum's ``n_steps``).
      method: quadrature rule, named as in Captum (see the module docstring).
      batch_size: model inputs (images × steps) per chunk; bounds memory. Default: 8 on a CPU, what half
        an accelerator's free memory holds otherwise (:func:`~jaxviz.runtime.batch_size_for`).
      blur_sigma: Gaussian σ in pixels for the ``"blur"`` baseline.
      score: ``"logit"`` (default), ``"prob"`` or ``"log_prob"``.
      reduce: channel reduction; default ``"sum"`` (keeps completeness); ``None`` keeps ``[N, H, W, 3]``
        (Captum's ``IntegratedGradients`` output, channels last).
      return_convergence_delta: also return ``Σ IG − (S(x) − S(x'))`` per image.
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32 (``[N, H, W, 3]`` for ``reduce=None``); with ``return_convergence_delta`` a
      tuple ``(attributions, delta [N])``.
    """
    score = runtime.check_score(model, score)
    x, targets, reduce, steps, batch_size = runtime.check_sampled_args(
        model, "integrated_gradients", x, target, score, reduce, steps, "steps", batch_size, gradient=True)
    alphas, weights = quadrature(method, steps)
    base = make_baseline(baseline, x, blur_sigma)
    chunk = runtime.per_chunk(batch_size, x.shape[0])

    # Forward passes on the image and the baseline run only when something needs them: the convergence
    # delta, or a top class to resolve (2 of the 2 + steps passes; Captum skips them too).
    with_delta = bool(return_convergence_delta)

    def build(fwd):
        def run(params, x, base, targets, alphas, weights):
            if with_delta:
                s_x, t = _scores_and_targets(fwd, params, x, targets, score)
            else:  # given targets skip the forward pass at run time (one program for both)
                t = jax.lax.cond(jnp.any(targets < 0), lambda: _scores_and_targets(fwd, params, x, targets, score)[1],
                                 lambda: targets)
            diff = x - base

            def chunk_grads(aw):  # aw: ([c], [c]) → weighted gradients [c, N, H, W, C]
                a, w = aw
                c = a.shape[0]
                xs = base[None] + a[:, None, None, None, None] * diff[None]
                g, _, _ = runtime.input_gradient(fwd, params, xs.reshape(-1, *x.shape[1:]), jnp.tile(t, c), score)
                return w[:, None, None, None, None] * g.reshape(c, *x.shape)

            avg = runtime.chunked_sum(chunk_grads, (alphas, weights), chunk)
            attr = diff * avg
            if not with_delta:
                return attr, None
            s_b = runtime.scores_of(fwd, params, base, t, score)
            delta = attr.sum(axis=(1, 2, 3)) - (s_x - s_b)
            return attr, delta

        return run

    fn = runtime.compiled(model, "integrated_gradients", (chunk, score, with_delta), build)
    attr, delta = fn(runtime.params_of(model, params), x, base, targets, jnp.asarray(alphas, jnp.float32),
                     jnp.asarray(weights, jnp.float32))
    attr = runtime.finish(attr, reduce)
    return (attr, delta) if return_convergence_delta else attr


def _scores_and_targets(fwd, params, x, targets, score):
    logits = fwd(params, x, upto="logits")[0]
    t = runtime.resolve_targets(targets, logits)
    return runtime.class_score(logits, t, score), t
