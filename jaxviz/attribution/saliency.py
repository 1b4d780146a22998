"""Saliency maps: the magnitude of the class score's gradient with respect to the input pixels.

Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising Image Classification
Models and Saliency Maps", ICLR workshop 2014, arXiv:1312.6034 (section 3.1).

    M_ij = max_c |∂S_t/∂x_ijc|

One forward and one backward pass for the whole batch. ``S_t`` is the pre-softmax score by default, as in
the paper (and in Captum when the model returns logits).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .. import runtime

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


def saliency(model, x, target: int | Sequence[int] | None = None, *, score: str = "logit",
             abs: bool = True, reduce: str | None = "max", params=None) -> jax.Array:
    """Simonyan et al.'s saliency map.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      score: ``"logit"`` (default), ``"prob"`` or ``"log_prob"``: the score differentiated.
      abs: take the gradient's absolute value (the paper; Captum's ``Saliency(abs=True)`` default).
      reduce: channel reduction (see :mod:`jaxviz.runtime`); ``"max"`` is the paper's
        max over colour channels, ``None`` keeps ``[N, H, W, 3]``.
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32 (``[N, H, W, 3]`` for ``reduce=None``).

    Examples:
      >>> m = saliency(model, x)                     # top class, [N, 224, 224]
      >>> g = saliency(model, x, 281, abs=False, reduce=None)   # raw gradient of class 281
    """
    post = (lambda x, g: jnp.abs(g)) if abs else None
    return runtime.gradient_method(model, "saliency", x, target, score, reduce, params, post=post, key=(bool(abs),))
