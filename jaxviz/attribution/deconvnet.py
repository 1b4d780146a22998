"""Deconvnet: Zeiler & Fergus's reconstruction of a class score, as an input gradient with a reversed ReLU.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014, arXiv:1311.2901.

The gradient of the class score through the same network with its ReLU's backward rule replaced by
``max(g, 0)`` (the "reversed ReLU", which ignores the forward activation). Max-pooling routes the gradient
to each window's arg-max (the paper's "switches"), as in Captum's ``Deconvolution`` (which ``reduce=None``
equals, channels last).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ._modified import modified_gradient

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


@jax.custom_vjp
def deconv_relu(z: jax.Array) -> jax.Array:
    """ReLU whose gradient is the ReLU of the incoming gradient (Zeiler & Fergus's reversed ReLU)."""
    return jnp.maximum(z, 0)


def _deconv_fwd(z):
    return jnp.maximum(z, 0), None


def _deconv_bwd(_, g):
    return (jnp.maximum(g, 0),)


deconv_relu.defvjp(_deconv_fwd, _deconv_bwd)


def deconvnet(model, x, target: int | Sequence[int] | None = None, *, score: str = "logit",
              reduce: str | None = "abs_max", params=None) -> jax.Array:
    """Zeiler & Fergus's deconvnet reconstruction of the class score, as a gradient with a reversed ReLU.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      score: ``"logit"`` (default), ``"prob"`` or ``"log_prob"``.
      reduce: channel reduction; default ``"abs_max"``; ``None`` keeps the signed ``[N, H, W, 3]``
        reconstruction (Captum's ``Deconvolution`` output, channels last).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32 (``[N, H, W, 3]`` for ``reduce=None``).
    """
    return modified_gradient("deconvnet", deconv_relu, model, x, target, score, reduce, params)
