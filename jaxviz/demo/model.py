"""The demo network: a narrow VGG trained on :mod:`jaxviz.demo.scenes`, where every answer is known.

Two heads on one shared convolutional trunk (trained jointly by ``scripts/train_demo.py``):

- ``vgg_demo``: Keras VGG's head — ``flatten``, ``fc1``, ``fc2``, ``predictions`` — on 64×64 inputs.
- ``vgg_demo_gap``: global average pooling then ``predictions`` (no hidden dense layer), the head of
  Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016, for which the class
  activation map (:func:`cam`) is exact: the logit is the spatial mean of the CAM plus the bias.

Their rows (:data:`VGG_DEMO`, :data:`VGG_DEMO_GAP`) are rows of the VGG table, :data:`jaxviz.frontends.vgg.ARCHS`.
Layer names are Keras's (``block1_conv1`` … ``block4_pool``, ``fc1``, ``predictions``), inputs are
``preprocess_input`` of RGB 0..255 images (BGR, mean-subtracted), exactly as for VGG16. No I/O here: the
shipped weights are found by :func:`jaxviz.demo.demo_weights_path`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ..errors import JaxvizError
from ..frontends.vgg import DEMO_ARCHS, VGG_DEMO, VGG_DEMO_GAP

__all__ = ["DEMO_ARCHS", "VGG_DEMO", "VGG_DEMO_GAP", "cam"]


def cam(model, x: ArrayLike, target: ArrayLike | None = None, params: dict | None = None) -> jax.Array:
    """Class activation maps (Zhou et al. 2016) of a global-average-pooling model.

    ``CAM_c(i, j) = Σ_k w_kc · A_k(i, j)`` with ``A`` the maps the GAP layer averages (the last pool) and
    ``w`` the ``predictions`` kernel; so ``mean_ij CAM_c + b_c`` is exactly the class-``c`` logit.

    Args:
      model: a :class:`jaxviz.Model` with ``head="gap"`` and no hidden dense layer (``vgg_demo_gap``).
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``[N]`` class indices (or one int for all); ``None`` = each image's top class.
      params: the weights to use; default ``model.params``.

    Returns:
      ``[N, h, w]`` maps at the last pool's resolution (4×4 for 64×64 inputs), signed and unnormalised;
      upsample with ``jax.image.resize`` to overlay.
    """
    rows = model.layer_table() if model.include_top else []
    gap = [r for r in rows if r.kind == "GlobalAveragePooling2D"]
    if model.head != "gap" or len(gap) != 1 or [r.name for r in rows if r.kind == "Dense"] != ["predictions"]:
        raise JaxvizError(f"cam needs a global-average-pooling model without hidden dense layers (e.g. "
                          f"vgg_demo_gap), got {model.name}; use Grad-CAM for other models")
    params = model.params if params is None else params
    x = jnp.asarray(x, jnp.float32)
    last = rows[rows.index(gap[0]) - 1].name  # the maps the GAP layer averages
    logits, taps = model.apply(params, x, upto="logits", taps=(last,))
    if target is None:
        target = jnp.argmax(logits, axis=-1)
    target = jnp.broadcast_to(jnp.asarray(target), (x.shape[0],))
    w = params["predictions"]["kernel"][:, target].T  # [N, C]
    return jnp.einsum("nhwc,nc->nhw", taps[last], w)
