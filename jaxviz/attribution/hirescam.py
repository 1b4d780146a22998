"""HiResCAM: the element-wise product of the gradient and the activations, summed over channels.

Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional neural
networks", arXiv:2011.08891, 2020.

    L_ij = ReLU(Σ_k ∂S_t/∂A_ijk · A_ijk)

(pytorch-grad-cam's ``HiResCAM``). When the layers after ``A`` are a (global-average or flatten) linear head,
``Σ_ij`` of the map before the ReLU is the class score minus the bias: the map shows the locations the score
comes from, which Grad-CAM's channel-averaged gradient does not guarantee. One forward and one backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from . import _cam


def hirescam(model, x, target: int | Sequence[int] | None = None, *, layer: str | None = None,
             score: str = "logit", upsample: bool = True, interpolation: str = "bilinear", normalize: bool = False,
             reduce: str | None = "sum", params=None) -> jax.Array:
    """Draelos & Carin's HiResCAM.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      layer: a layer with a spatial map; default the model's CAM layer (the last conv layer on VGG).
      score: ``"logit"`` (default, as the rest of the CAM family), ``"prob"`` or ``"log_prob"``.
      upsample: resize the map to the input size (``[N, H, W]``); ``False`` keeps the layer's ``[N, h, w]``.
      interpolation: ``"bilinear"`` or ``"nearest"``.
      normalize: divide each map by its maximum (an all-zero map stays zero).
      reduce: accepted for the common signature; the map has no channel axis (``None`` repeats it 3×).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32, non-negative.
    """
    return _cam.run_cam(model, "hirescam", x, target, hirescam_map, layer=layer, score=score, upsample=upsample,
                        interpolation=interpolation, normalize=normalize, reduce=reduce, params=params)


def hirescam_map(a: jax.Array, g: jax.Array) -> jax.Array:
    """``Σ_k g_ijk · A_ijk`` ``[N, h, w]`` (before the final ReLU) from ``A``, ``g`` ``[N, h, w, K]``."""
    return (g * a).sum(axis=-1)
