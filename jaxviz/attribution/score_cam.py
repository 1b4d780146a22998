"""Score-CAM: class-activation maps weighted by the class score of the image masked by each channel.

Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu, "Score-CAM: Score-Weighted Visual Explanations for
Convolutional Neural Networks", CVPR workshops 2020, arXiv:1910.01279.

For a conv layer's output ``A [h, w, K]``: every channel is upsampled to the input size and scaled to
[0, 1], ``M_k = (U(A_k) − min) / (max − min)``; the masked image ``x ⊙ M_k`` is scored, ``s_k = S_t(x ⊙ M_k)``
(``score``: the class probability by default, or the logit), and

    w_k = s_k                                (softmax_channels=False, the default)
    w_k = exp(s_k) / Σ_k' exp(s_k')          (softmax_channels=True)
    L   = ReLU(Σ_k w_k U(A_k))

The references differ in the weights, so both are offered:

- ``softmax_channels=False`` (default): each masked input's own class probability is the channel's weight
  — the paper's eq. 8 (the "increase of confidence" of the masked input), the authors' first released code
  and tf-keras-vis's ``Scorecam``. The default because a weight is then the masked image's evidence for
  the class on its own, comparable across layers and images, not a share of a softmax over hundreds of
  channels whose sharpness depends on the logits' scale.
- ``softmax_channels=True`` with ``score="logit"``: pytorch-grad-cam's ``ScoreCAM`` and the paper's v2,
  Algorithm 1 (``α = softmax(S)`` over the channels of the masked inputs' class scores).

Weights are applied to the upsampled activations, as in the authors' implementation (pytorch-grad-cam and
tf-keras-vis weight the layer-resolution activations and upsample the map after its ReLU; the two agree
where the layer has the input's resolution). Other differences, on purpose:

- A channel whose upsampled map is constant (``max == min``, e.g. a dead ReLU) has no spatial
  information: its weight is 0 and it is left out of the channel softmax (the authors' code divides by
  zero and returns NaN; pytorch-grad-cam and tf-keras-vis add 1e-8 / 1e-7 to the span, so its mask is 0
  and they score an all-zero image for it).
- The paper's optional baseline score ``f(x_b)`` is not subtracted (the authors' code does not either).
- Masking multiplies in model space, so a masked-out pixel becomes the mean colour (model-space zero).

All ``K × N`` masked images are evaluated ``batch_size`` at a time inside one compiled program.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .. import runtime
from . import _cam

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


def score_cam(model, x, target: int | Sequence[int] | None = None, *, layer: str | None = None,
              score: str = "prob", batch_size: int | None = None, interpolation: str = "bilinear",
              normalize: bool = False, softmax_channels: bool = False, reduce: str | None = "sum",
              params=None) -> jax.Array:
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
      softmax_channels: ``False`` (default): a channel's weight is its masked input's score (the paper's
        eq. 8, the authors' code, tf-keras-vis); ``True``: a softmax of those scores over the channels
        (pytorch-grad-cam and the paper's Algorithm 1, which use ``score="logit"``).
      reduce: accepted for the common signature; the map has no channel axis (``None`` repeats it 3×).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32, non-negative.
    """
    score = runtime.check_score(model, score)
    layer, x, targets, reduce = _cam.check_args(model, "score_cam", x, target, layer, score, interpolation,
                                                reduce)
    batch_size = runtime.batch_size_for(model, x, batch_size, 512 * x.shape[0], gradient=False)
    chunk = runtime.per_chunk(batch_size, x.shape[0])

    def build(fwd):
        def run(params, x, targets):
            logits, taps = fwd(params, x, upto="logits", taps=(layer,))
            t = runtime.resolve_targets(targets, logits)
            weights, valid = channel_scores(fwd, params, x, taps[layer], t, score, chunk, interpolation,
                                            with_valid=True)
            if softmax_channels:  # over the channels with spatial information only
                top = jnp.max(jnp.where(valid, weights, -jnp.inf), axis=1, keepdims=True)
                e = jnp.where(valid, jnp.exp(weights - jnp.where(jnp.isfinite(top), top, 0)), 0)
                total = e.sum(axis=1, keepdims=True)
                weights = e / jnp.where(total > 0, total, 1)
            up = upsampled(taps[layer], x.shape[1:3], interpolation)  # [N, H, W, K]
            cam = jnp.maximum(jnp.einsum("nhwk,nk->nhw", up, weights), 0)
            if normalize:
                peak = cam.max(axis=(1, 2), keepdims=True)
                cam = cam / jnp.where(peak > 0, peak, 1)
            return cam

        return run

    key = (layer, score, chunk, interpolation, bool(normalize), bool(softmax_channels))
    fn = runtime.compiled(model, "score_cam", key, build)
    return runtime.finish_spatial(fn(runtime.params_of(model, params), x, targets), reduce, x.shape[-1])


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


def channel_scores(fwd, params, x, a, t, score, chunk, interpolation, with_valid: bool = False):
    """``[N, K]`` scores of the masked images ``x ⊙ M_k`` (0 for channels without spatial variation).

    Masks are made chunk by chunk from the layer's activations, so only ``chunk`` of them exist at a time.
    ``with_valid`` also returns which channels have spatial variation ``[N, K]``.
    """

    def score_chunk(idx):  # [c] channel indices → ([c, N] scores, [c, N] valid)
        c = idx.shape[0]
        m, valid = masks(jnp.take(a, idx, axis=-1), x.shape[1:3], interpolation)  # [N, H, W, c], [N, c]
        xs = (x[None] * jnp.moveaxis(m, -1, 0)[..., None]).reshape(-1, *x.shape[1:])
        s = runtime.scores_of(fwd, params, xs, jnp.tile(t, c), score).reshape(c, -1)
        return jnp.where(valid.T, s, 0), valid.T

    s, valid = runtime.chunked_map(score_chunk, jnp.arange(a.shape[-1]), chunk)
    return (s.T, valid.T) if with_valid else s.T  # [N, K]
