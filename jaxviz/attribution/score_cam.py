"""Score-CAM: class-activation maps weighted by the class score of the image masked by each channel.

Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu, "Score-CAM: Score-Weighted Visual Explanations for
Convolutional Neural Networks", CVPR workshops 2020, arXiv:1910.01279.

For a conv layer's output ``A [h, w, K]``: every channel is upsampled to the input size and scaled to
[0, 1], ``M_k = (U(A_k) − min) / (max − min)``; the masked image ``x ⊙ M_k`` is scored, and

    w_k = softmax(f(x ⊙ M_k))_t             (score="prob", the paper's code; or the logit)
    L   = ReLU(Σ_k w_k U(A_k))

as in the authors' implementation (weights on the upsampled activations). Differences, on purpose:

- A channel whose upsampled map is constant (``max == min``, e.g. a dead ReLU) has no spatial
  information: its weight is 0 (the reference divides by zero and returns NaN).
- The paper's optional baseline score ``f(x_b)`` is not subtracted (the authors' code does not either).
- Masking multiplies in model space, so a masked-out pixel becomes the mean colour (model-space zero).

All ``K × N`` masked images are evaluated ``batch_size`` at a time inside one compiled program.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from . import _cam, _core


def score_cam(model, x, target: int | Sequence[int] | None = None, *, layer: str | None = None,
              score: str = "prob", batch_size: int | None = None, interpolation: str = "bilinear",
              normalize: bool = False, reduce: str | None = "sum", params=None) -> jax.Array:
    """Wang et al.'s Score-CAM.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      layer: conv layer; default the last one.
      score: ``"prob"`` (default, the paper) or ``"logit"`` / ``"log_prob"``.
      batch_size: masked images per model call (default: 16 on a CPU, more on an accelerator).
      interpolation: how activations are upsampled to masks: ``"bilinear"`` or ``"nearest"``.
      normalize: divide each map by its maximum.
      reduce: accepted for the common signature; the map has no channel axis (``None`` repeats it 3×).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32, non-negative.
    """
    layer, x, targets, reduce = _cam.check_args(model, "score_cam", x, target, layer, score, interpolation,
                                                reduce)
    batch_size = _core.batch_size_for(model, x, batch_size, 512 * x.shape[0], gradient=False)
    chunk = _core.per_chunk(batch_size, x.shape[0])

    def build(fwd):
        def run(params, x, targets):
            logits, taps = fwd(params, x, upto="logits", taps=(layer,))
            t = _core.resolve(targets, logits)
            weights = channel_scores(fwd, params, x, taps[layer], t, score, chunk, interpolation)
            up = upsampled(taps[layer], x.shape[1:3], interpolation)  # [N, H, W, K]
            cam = jnp.maximum(jnp.einsum("nhwk,nk->nhw", up, weights), 0)
            if normalize:
                peak = cam.max(axis=(1, 2), keepdims=True)
                cam = cam / jnp.where(peak > 0, peak, 1)
            return cam

        return run

    key = (layer, score, chunk, interpolation, bool(normalize))
    fn = _core.compiled(model, "score_cam", key, build)
    return _core.finish_spatial(fn(_core.params_of(model, params), x, targets), reduce, x.shape[-1])


def upsampled(a: jax.Array, size, interpolation: str) -> jax.Array:
    """``[N, h, w, K]`` → ``[N, H, W, K]``."""
    n, _, _, k = a.shape
    return jax.image.resize(a, (n, *size, k), method=interpolation)


def masks(a: jax.Array, size, interpolation: str) -> tuple[jax.Array, jax.Array]:
    """Score-CAM masks ``[N, H, W, K]`` in [0, 1] and which channels have any spatial variation ``[N, K]``."""
    up = upsampled(a, size, interpolation)
    lo = up.min(axis=(1, 2), keepdims=True)
    hi = up.max(axis=(1, 2), keepdims=True)
    span = hi - lo
    valid = span > 0
    m = jnp.where(valid, (up - lo) / jnp.where(valid, span, 1), 0)
    return m, valid[:, 0, 0, :]


def channel_scores(fwd, params, x, a, t, score, chunk, interpolation) -> jax.Array:
    """``[N, K]`` scores of the masked images ``x ⊙ M_k`` (0 for channels without spatial variation).

    Masks are made chunk by chunk from the layer's activations, so only ``chunk`` of them exist at a time.
    """

    def score_chunk(idx):  # [c] channel indices → ([c, N] scores, [c, N] valid)
        c = idx.shape[0]
        m, valid = masks(jnp.take(a, idx, axis=-1), x.shape[1:3], interpolation)  # [N, H, W, c], [N, c]
        xs = (x[None] * jnp.moveaxis(m, -1, 0)[..., None]).reshape(-1, *x.shape[1:])
        s = _core.scores_of(fwd, params, xs, jnp.tile(t, c), score).reshape(c, -1)
        return jnp.where(valid.T, s, 0)

    return _core.chunked_map(score_chunk, jnp.arange(a.shape[-1]), chunk).T  # [N, K]
