"""The demo network: a narrow VGG trained on :mod:`jaxviz.demo.scenes`, where every answer is known.

Two heads on one shared convolutional trunk (trained jointly by ``scripts/train_demo.py``):

- ``vgg_demo``: Keras VGG's head — ``flatten``, ``fc1``, ``fc2``, ``predictions`` — on 64×64 inputs.
- ``vgg_demo_gap``: global average pooling then ``predictions`` (no hidden dense layer), the head of
  Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016, for which the class
  activation map (:func:`cam`) is exact: the logit is the spatial mean of the CAM plus the bias.

Layer names are Keras's (``block1_conv1`` … ``block4_pool``, ``fc1``, ``predictions``), inputs are
``preprocess_input`` of RGB 0..255 images (BGR, mean-subtracted), exactly as for VGG16. No I/O here: the
shipped weights are found by :func:`jaxviz.demo.demo_weights_path`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .. import vgg
from .scenes import CLASS_NAMES, NUM_CLASSES

__all__ = ["DEMO_ARCHS", "VGG_DEMO", "VGG_DEMO_GAP", "cam", "register"]

_TRUNK = dict(convs_per_block=(2, 2, 2, 2), block_features=(8, 16, 32, 64), num_classes=NUM_CLASSES,
              default_size=64, class_names=CLASS_NAMES)

#: Flatten head, as Keras VGG: 4×4×64 → fc1 (64) → fc2 (64) → predictions (10).
VGG_DEMO = vgg.Arch("vgg_demo", fc_features=(64, 64), head="flatten", **_TRUNK)
#: CAM head: global average pooling of block4_pool → predictions (10).
VGG_DEMO_GAP = vgg.Arch("vgg_demo_gap", fc_features=(), head="gap", **_TRUNK)

DEMO_ARCHS: dict[str, vgg.Arch] = {a.name: a for a in (VGG_DEMO, VGG_DEMO_GAP)}



def register() -> None:
    """Adds the demo architectures to :data:`jaxviz.vgg.ARCHS` (so ``jaxviz.load("vgg_demo")`` knows them).

    Called once, explicitly, by ``jaxviz/__init__.py``; importing this module changes no table.
    """
    for arch in DEMO_ARCHS.values():
        vgg.register_arch(arch)


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
    a = model.arch
    if a.head != "gap" or a.fc_features or not model.include_top:
        from ..errors import JaxvizError

        raise JaxvizError(f"cam needs a global-average-pooling model without hidden dense layers (e.g. "
                          f"vgg_demo_gap), got {a.name}; use Grad-CAM for other models")
    params = model.params if params is None else params
    x = jnp.asarray(x, jnp.float32)
    last = f"block{len(a.convs_per_block)}_pool"
    logits, taps = model.apply(params, x, upto="logits", taps=(last,))
    if target is None:
        target = jnp.argmax(logits, axis=-1)
    target = jnp.broadcast_to(jnp.asarray(target), (x.shape[0],))
    w = params["predictions"]["kernel"][:, target].T  # [N, C]
    return jnp.einsum("nhwc,nc->nhw", taps[last], w)
