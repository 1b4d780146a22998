"""Ablation-CAM: channel weights from the drop of the class score when the channel is zeroed.

Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via Gradient-free
Localization", WACV 2020, doi:10.1109/WACV45572.2020.9093360.

    w_k = (S_t − S_t^(k)) / S_t,     L = ReLU(Σ_k w_k A_k)

where ``S_t^(k)`` is the class score with channel ``k`` of the layer's output ``A`` set to 0 (the paper's
eq. 2–3; pytorch-grad-cam's ``AblationCAM`` with its default ``ratio_channels_to_ablate=1``; it zeroes a
channel when the layer's minimum is 0, as after a ReLU). An image whose score ``S_t`` is exactly 0 gets
weights 0 (the paper divides by 0 there). Gradient-free: one forward pass to the layer, then the layers
after it only, once per channel; the ablated copies run ``batch_size`` at a time, so memory is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .. import runtime
from . import _cam

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


def ablationcam(model, x, target: int | Sequence[int] | None = None, *, layer: str | None = None,
                score: str = "logit", upsample: bool = True, interpolation: str = "bilinear",
                normalize: bool = False, batch_size: int | None = None, reduce: str | None = "sum",
                params=None) -> jax.Array:
    """Desai & Ramaswamy's Ablation-CAM.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      layer: a layer with a spatial map; default the model's CAM layer (the last conv layer on VGG).
      score: ``"logit"`` (default, the paper's ``y_c``), ``"prob"`` or ``"log_prob"``.
      upsample: resize the map to the input size (``[N, H, W]``); ``False`` keeps the layer's ``[N, h, w]``.
      interpolation: ``"bilinear"`` or ``"nearest"``.
      normalize: divide each map by its maximum (an all-zero map stays zero).
      batch_size: ablated copies (channels × images) per chunk of the forward pass after ``layer``; default 8×
        the forward-pass default (128 on a CPU).
      reduce: accepted for the common signature; the map has no channel axis (``None`` repeats it 3×).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32, non-negative.
    """
    score = runtime.check_score(model, score)
    layer, x, targets, reduce = _cam.check_args(model, "ablationcam", x, target, layer, score, interpolation,
                                                reduce)
    if batch_size is None:  # the ablated copies run only the layers after `layer`: many per chunk
        batch_size = 8 * runtime.batch_size_for(model, x, None, 512 * x.shape[0], gradient=False)
    chunk = runtime.per_chunk(runtime.check_positive(batch_size, "batch_size"), x.shape[0])

    def build(fwd):
        def run(params, x, targets):
            def head(av):  # logits from the layer's output (what only the layer reads is not run)
                copies = av.shape[0] // x.shape[0]  # x, for any path to the head around the layer
                xs = jnp.broadcast_to(x[None], (copies, *x.shape)).reshape(-1, *x.shape[1:])
                return fwd(params, xs, upto="logits", replace={layer: av})[0]

            a = fwd(params, x, upto=layer)[0]
            logits = head(a)
            t = runtime.resolve_targets(targets, logits)
            s = runtime.class_score(logits, t, score)  # [N]

            def ablated(ks):  # ks: [c] channel indices → [c, N] scores with channel k zeroed
                keep = 1 - jax.nn.one_hot(ks, a.shape[-1], dtype=a.dtype)  # [c, K]
                av = (a[None] * keep[:, None, None, None, :]).reshape(-1, *a.shape[1:])
                return runtime.class_score(head(av), jnp.tile(t, ks.shape[0]), score).reshape(ks.shape[0], -1)

            s_k = runtime.chunked_map(ablated, jnp.arange(a.shape[-1]), chunk).T  # [N, K]
            w = jnp.where(s[:, None] != 0, (s[:, None] - s_k) / jnp.where(s[:, None] != 0, s[:, None], 1), 0)
            cam = jnp.maximum(jnp.einsum("nhwk,nk->nhw", a, w), 0)
            return _cam.finish_map(cam, x.shape[1:3], normalize, upsample, interpolation)

        return run

    key = (layer, score, bool(upsample), interpolation, bool(normalize), chunk)
    fn = runtime.compiled(model, "ablationcam", key, build)
    return runtime.finish_spatial(fn(runtime.params_of(model, params), x, targets), reduce, x.shape[-1])
