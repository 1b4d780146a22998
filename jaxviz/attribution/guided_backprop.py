"""Guided backpropagation: the input gradient through ReLUs that pass only positive gradients of active units.

Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity: The All Convolutional Net", ICLR
workshop 2015, arXiv:1412.6806.

The gradient of the class score through the same network with its ReLU's backward rule replaced by
``max(g, 0) · [z > 0]`` (incoming gradient ``g``, ReLU input ``z``): both the forward mask of the ReLU and
the deconvnet's mask of the gradient. Max-pooling routes the gradient to each window's arg-max, as in the
paper and in Captum's ``GuidedBackprop`` (which ``reduce=None`` equals, channels last).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ._modified import modified_gradient

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


@jax.custom_vjp
def guided_relu(z: jax.Array) -> jax.Array:
    """ReLU whose gradient passes only where both the input and the incoming gradient are positive."""
    return jnp.maximum(z, 0)


def _guided_fwd(z):
    return jnp.maximum(z, 0), z


def _guided_bwd(z, g):
    return (jnp.where((z > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_fwd, _guided_bwd)


def guided_backprop(model, x, target: int | Sequence[int] | None = None, *, score: str = "logit",
                    reduce: str | None = "abs_max", params=None) -> jax.Array:
    """Springenberg et al.'s guided backpropagation.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      score: ``"logit"`` (default), ``"prob"`` or ``"log_prob"``.
      reduce: channel reduction; default ``"abs_max"``; ``None`` keeps the signed ``[N, H, W, 3]``
        gradient (Captum's ``GuidedBackprop`` output, channels last).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32 (``[N, H, W, 3]`` for ``reduce=None``).
    """
    return modified_gradient("guided_backprop", guided_relu, model, x, target, score, reduce, params)
