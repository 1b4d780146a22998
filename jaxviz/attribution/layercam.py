"""LayerCAM: every location's activation weighted by its own positive gradient.

Jiang, Zhang, Hou, Cheng & Wei, "LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization", IEEE Transactions on Image Processing 30, 5875–5888, 2021, doi:10.1109/TIP.2021.3089943.

    L_ij = ReLU(Σ_k ReLU(∂S_t/∂A_ijk) · A_ijk)

(the paper's eq. 3–4; pytorch-grad-cam's ``LayerCAM``). Unlike Grad-CAM's one weight per channel, each
location keeps its own weight, so the map stays sharp on early layers. One forward and one backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from . import _cam


def layercam(model, x, target: int | Sequence[int] | None = None, *, layer: str | None = None,
             score: str = "logit", upsample: bool = True, interpolation: str = "bilinear", normalize: bool = False,
             reduce: str | None = "sum", params=None) -> jax.Array:
    """Jiang et al.'s LayerCAM.

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
    return _cam.run_cam(model, "layercam", x, target, layercam_map, layer=layer, score=score, upsample=upsample,
                        interpolation=interpolation, normalize=normalize, reduce=reduce, params=params)


def layercam_map(a: jax.Array, g: jax.Array) -> jax.Array:
    """``Σ_k ReLU(g_ijk) · A_ijk`` ``[N, h, w]`` (before the final ReLU) from ``A``, ``g`` ``[N, h, w, K]``."""
    return (jnp.maximum(g, 0) * a).sum(axis=-1)
