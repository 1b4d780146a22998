"""Deletion and insertion curves: how fast the class score falls (rises) as the most salient pixels go.

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018,
arXiv:1806.07421 (section 4.1).

Pixels are ranked by the map, most salient first (ties: row-major order). At step ``k`` the first
``min(k·p, H·W)`` pixels (``p = ceil(H·W / steps)``) are

- deletion: replaced by the baseline (default: model-space zero, i.e. the mean colour — what RISE's code
  gets from ``zeros_like`` on a normalised image);
- insertion: copied from the image onto the baseline (default: the image blurred as RISE's
  ``evaluation.py`` blurs it: an 11×11 convolution, zero padding, with the kernel ``gkern(11, 5)`` —
  SciPy's ``gaussian_filter`` (σ = 5, truncated at 4σ, "reflect" border) of an 11×11 delta, which folds
  the Gaussian's tails back into the window: nearly flat, edge/centre 0.936. :func:`rise_kernel`
  computes it without SciPy. Insertion AUCs are comparable with RISE's published ones only with this
  substrate);

and the target's softmax probability is recorded. The AUC is the trapezoid area under the curve over the
fraction of pixels in [0, 1]: low for a good map under deletion, high under insertion. All ``steps + 1``
images are evaluated ``batch_size`` at a time inside one compiled program, for the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import runtime
from ..attribution.integrated_gradients import make_baseline
from ..errors import JaxvizError


class Curve(NamedTuple):
    """A deletion or insertion curve.

    fractions: ``[T + 1]`` fraction of pixels deleted/inserted at each step (0 … 1).
    scores: ``[N, T + 1]`` the target's score at each step.
    auc: ``[N]`` trapezoid area under ``scores`` over ``fractions``.
    targets: ``[N]`` the classes scored.
    """

    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray
    targets: np.ndarray


def auc(fractions, scores) -> np.ndarray:
    """Trapezoid area under ``scores [..., T + 1]`` over ``fractions [T + 1]``."""
    f = np.asarray(fractions, np.float64)
    s = np.asarray(scores, np.float64)
    return ((s[..., 1:] + s[..., :-1]) * 0.5 * np.diff(f)).sum(-1)


def _check_maps(maps, x) -> jax.Array:
    finite = np.isfinite(np.asarray(maps, np.float32))
    if not finite.all():
        raise JaxvizError(f"the maps hold {int(finite.size - finite.sum())} NaN/inf values, which rank no pixels "
                          "(a NaN map would score an arbitrary AUC); check the method's inputs (np.isfinite)")
    m = jnp.asarray(maps, jnp.float32)
    if m.ndim != 3 or m.shape[0] != x.shape[0]:
        raise JaxvizError(f"expected one map [N, H, W] per image ({x.shape[0]} images), got shape {m.shape}; "
                          "reduce channels first (e.g. reduce='sum')")
    if m.shape[1:] != x.shape[1:3]:  # a CAM at layer resolution: upsample to the image
        m = runtime.resize_maps(m, x.shape[1:3], "bilinear")
    return m


def _curve(kind, model, x, maps, target, steps, baseline, score, batch_size, blur_sigma, params):
    runtime.check_model(model, kind)
    score = runtime.check_score(model, score)
    steps = runtime.check_positive(steps, "steps")
    x = runtime.check_input(model, x)
    batch_size = runtime.batch_size_for(model, x, batch_size, (steps + 1) * x.shape[0], gradient=False)
    maps = _check_maps(maps, x)
    targets = runtime.check_targets(model, target, x.shape[0])
    h, w = x.shape[1:3]
    per_step = math.ceil(h * w / steps)
    steps = math.ceil(h * w / per_step)
    if isinstance(baseline, str) and baseline == "blur":
        base = _rise_blur(x, blur_sigma)
    else:
        base = make_baseline(baseline, x)
    chunk = runtime.per_chunk(batch_size, x.shape[0])
    insert = kind == "insertion"

    def build(fwd):
        def run(params, x, base, maps, targets):
            t = runtime.resolve_targets(targets, fwd(params, x, upto="logits")[0])
            n = x.shape[0]
            order = jnp.argsort(-maps.reshape(n, -1), axis=1, stable=True)
            rank = jnp.argsort(order, axis=1).reshape(n, h, w)  # 0 = most salient

            def step_chunk(k):  # [c] step numbers → [c, N] scores
                c = k.shape[0]
                done = rank[None] < jnp.minimum(k * per_step, h * w)[:, None, None, None]  # [c, N, H, W]
                if insert:
                    xs = jnp.where(done[..., None], x[None], base[None])
                else:
                    xs = jnp.where(done[..., None], base[None], x[None])
                return runtime.scores_of(fwd, params, xs.reshape(-1, *x.shape[1:]), jnp.tile(t, c),
                                       score).reshape(c, n)

            return runtime.chunked_map(step_chunk, jnp.arange(steps + 1), chunk).T, t

        return run

    fn = runtime.compiled(model, kind, (per_step, steps, score, chunk), build)
    scores, t = fn(runtime.params_of(model, params), x, base, maps, targets)
    fractions = np.minimum(np.arange(steps + 1) * per_step, h * w) / (h * w)
    scores = np.asarray(scores)
    return Curve(fractions, scores, auc(fractions, scores), np.asarray(t))


def rise_kernel(size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """RISE's ``gkern(size, sigma)`` blur kernel ``[size, size]`` (sums to 1), computed in numpy.

    RISE smooths an ``size × size`` delta with ``scipy.ndimage.gaussian_filter(delta, sigma)``: a 1-D
    Gaussian of radius ``int(4σ + 0.5)`` (SciPy's ``truncate=4``), normalised, correlated along each axis
    with the "reflect" border (``d c b a | a b c d | d c b a``, repeated for radii beyond the window). The
    kernel is separable: the outer product of that 1-D result with itself.
    """
    k = _rise_kernel_1d(size, sigma)
    return np.outer(k, k)


def _rise_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """The separable factor of :func:`rise_kernel`: SciPy's 1-D Gaussian filter of a delta, reflect border."""
    radius = int(4.0 * float(sigma) + 0.5)
    taps = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (taps / float(sigma)) ** 2)
    w /= w.sum()
    k = np.zeros(size)
    for i in range(size):
        m = (i + taps) % (2 * size)  # reflect: a period of 2·size, the second half mirrored
        m = np.where(m >= size, 2 * size - 1 - m, m)
        k[i] = w[m == size // 2].sum()
    return k


def _rise_blur(x, sigma):
    """RISE's insertion substrate: ``conv2d(x, gkern(11, sigma), padding=5)`` per channel (zero padding)."""
    k = jnp.asarray(_rise_kernel_1d(11, sigma), jnp.float32)  # separable: rows, then columns
    n, h, w, c = x.shape
    pad = jnp.pad(x, ((0, 0), (5, 5), (5, 5), (0, 0)))
    rows = sum(k[i] * pad[:, i: i + h, :, :] for i in range(11))
    return sum(k[i] * rows[:, :, i: i + w, :] for i in range(11))


def deletion(model, x, maps, target: int | Sequence[int] | None = None, *, steps: int = 100,
             baseline="zeros", score: str = "prob", batch_size: int | None = None, params=None) -> Curve:
    """Petsiuk et al.'s deletion curve (lower AUC = a better map).

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      maps: ``[N, H, W]`` attribution maps (``[N, h, w]`` ones are upsampled bilinearly).
      target: the class scored; ``None`` = each image's top class.
      steps: number of deletion steps (the curve has ``steps + 1`` points).
      baseline: what deleted pixels become: ``"zeros"`` (default), ``"black"``, ``"blur"`` or an array.
      score: ``"prob"`` (default, as RISE), ``"logit"`` or ``"log_prob"``.
      batch_size: images per model call (default: 16 on a CPU, more on an accelerator).
      params: weights to use instead of ``model.params``.

    Returns:
      :class:`Curve`.
    """
    return _curve("deletion", model, x, maps, target, steps, baseline, score, batch_size, 5.0, params)


def insertion(model, x, maps, target: int | Sequence[int] | None = None, *, steps: int = 100,
              baseline="blur", blur_sigma: float = 5.0, score: str = "prob", batch_size: int | None = None,
              params=None) -> Curve:
    """Petsiuk et al.'s insertion curve (higher AUC = a better map).

    Arguments as :func:`deletion`; the default baseline is RISE's blurred image (:func:`rise_kernel` with
    σ = ``blur_sigma``, 5 as RISE's).
    """
    return _curve("insertion", model, x, maps, target, steps, baseline, score, batch_size, blur_sigma, params)
