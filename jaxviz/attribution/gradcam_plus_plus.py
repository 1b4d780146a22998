"""Grad-CAM++: class-activation maps weighted by positive gradients with per-location coefficients.

Chattopadhay, Sarkar, Howlader & Balasubramanian, "Grad-CAM++: Improved Visual Explanations for Deep
Convolutional Networks", WACV 2018, arXiv:1710.11063.

With the exponential score ``Y = exp(S_t)`` (the paper's eq. 19), the higher derivatives are powers of the
first one, ``g = ∂S_t/∂A``, and ``exp(S_t)`` cancels in the coefficients:

    α_ijk = g_ijk² / (2 g_ijk² + Σ_ab A_abk g_ijk³)        (0 where the denominator is 0)
    w_k   = Σ_ij α_ijk · ReLU(g_ijk)
    L     = ReLU(Σ_k w_k A_k)

The paper's weights carry a further factor ``exp(S_t)`` (from ``∂Y/∂A = exp(S_t) g``): a positive constant
per image that only scales the map, and overflows float32 for large logits, so it is left out (as
pytorch-grad-cam does). One forward and one backward pass.

The references disagree on one step, so it is an option, ``normalize_alpha``:

- ``False`` (default): α exactly as the paper's eq. 19 — and pytorch-grad-cam's ``GradCAMPlusPlus``, the
  implementation most users compare with. It is the paper's definition; the map is the weighted sum the
  paper derives.
- ``True``: α divided by its spatial sum per channel, ``α_ijk / Σ_ab α_abk``, as the authors' released code
  and tf-keras-vis's ``GradcamPlusPlus`` do (a channel whose α sum is 0 gets weight 0, as tf-keras-vis;
  the authors' code divides 0 by 0 there).

Other differences, on purpose: pytorch-grad-cam adds 1e-6 to α's denominator; jaxviz divides exactly and
sets α = 0 where the denominator is 0 (both give 0 where the gradient is 0). The map is upsampled after its
ReLU, bilinearly with half-pixel centres.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .. import runtime
from . import _cam

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


def gradcam_plus_plus(model, x, target: int | Sequence[int] | None = None, *, layer: str | None = None,
                      score: str = "logit", upsample: bool = True, interpolation: str = "bilinear",
                      normalize: bool = False, normalize_alpha: bool = False, reduce: str | None = "sum",
                      params=None) -> jax.Array:
    """Chattopadhay et al.'s Grad-CAM++.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      layer: conv layer; default the last one.
      score: ``"logit"`` (default, the paper's ``S``), ``"prob"`` or ``"log_prob"``.
      upsample: resize the map to the input size (``[N, H, W]``); ``False`` keeps the layer's ``[N, h, w]``.
      interpolation: ``"bilinear"`` or ``"nearest"``.
      normalize: divide each map by its maximum (an all-zero map stays zero).
      normalize_alpha: ``False`` (default) the paper's eq. 19 and pytorch-grad-cam; ``True`` divides α by its
        spatial sum per channel, as the authors' code and tf-keras-vis (see the module docstring).
      reduce: accepted for the common signature; the map has no channel axis (``None`` repeats it 3×).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32, non-negative.
    """
    score = runtime.check_score(model, score)
    layer, x, targets, reduce = _cam.check_args(model, "gradcam_plus_plus", x, target, layer, score, interpolation,
                                                reduce)

    def build(fwd):
        def run(params, x, targets):
            a, g, _ = _cam.layer_gradients(fwd, params, x, layer, targets, score)
            cam = plus_plus_map(a, g, normalize_alpha)
            return _cam.finish_map(cam, x.shape[1:3], normalize, upsample, interpolation)

        return run

    key = (layer, score, bool(upsample), interpolation, bool(normalize), bool(normalize_alpha))
    fn = runtime.compiled(model, "gradcam_plus_plus", key, build)
    return runtime.finish_spatial(fn(runtime.params_of(model, params), x, targets), reduce, x.shape[-1])


def plus_plus_map(a: jax.Array, g: jax.Array, normalize_alpha: bool = False) -> jax.Array:
    """Grad-CAM++ from activations ``A`` and gradients ``g`` ``[N, h, w, K]`` → ``[N, h, w]``.

    ``normalize_alpha`` divides α by its spatial sum per channel (the authors' code, tf-keras-vis).
    """
    g2 = g * g
    denom = 2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g2 * g
    alpha = jnp.where(denom != 0, g2 / jnp.where(denom != 0, denom, 1), 0)
    if normalize_alpha:
        total = alpha.sum(axis=(1, 2), keepdims=True)
        alpha = alpha / jnp.where(total != 0, total, 1)
    weights = (alpha * jnp.maximum(g, 0)).sum(axis=(1, 2))  # [N, K]
    return jnp.maximum(jnp.einsum("nhwk,nk->nhw", a, weights), 0)
