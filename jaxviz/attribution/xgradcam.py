"""XGrad-CAM: channel weights from the activation-weighted gradient (axiom-based Grad-CAM).

Fu, Hu, Dong, Wang, Li & Li, "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of
CNNs", BMVC 2020, arXiv:2008.02312.

    w_k = Σ_ij (A_ijk / Σ_ab A_abk) · ∂S_t/∂A_ijk,     L = ReLU(Σ_k w_k A_k)

(the paper's eq. 9; pytorch-grad-cam's ``XGradCAM``). A channel whose activations sum to 0 gets weight 0
(pytorch-grad-cam adds 1e-7 to the sum instead; for ReLU outputs both give 0 there, since then every
``A_ijk`` is 0). One forward and one backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from . import _cam


def xgradcam(model, x, target: int | Sequence[int] | None = None, *, layer: str | None = None,
             score: str = "logit", upsample: bool = True, interpolation: str = "bilinear", normalize: bool = False,
             reduce: str | None = "sum", params=None) -> jax.Array:
    """Fu et al.'s XGrad-CAM.

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
    return _cam.run_cam(model, "xgradcam", x, target, xgradcam_map, layer=layer, score=score, upsample=upsample,
                        interpolation=interpolation, normalize=normalize, reduce=reduce, params=params)


def xgradcam_map(a: jax.Array, g: jax.Array) -> jax.Array:
    """``Σ_k w_k A_k`` ``[N, h, w]`` (before the final ReLU) with XGrad-CAM's weights ``w_k``."""
    total = a.sum(axis=(1, 2), keepdims=True)
    weights = (a / jnp.where(total != 0, total, 1) * g).sum(axis=(1, 2))  # [N, K]
    return jnp.einsum("nhwk,nk->nhw", a, weights)
