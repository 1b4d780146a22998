"""Deconvnet and guided backpropagation: input gradients through ReLUs with a modified backward rule.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014, arXiv:1311.2901
(the deconvnet). Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity: The All
Convolutional Net", ICLR workshop 2015, arXiv:1412.6806 (guided backpropagation).

Both are the gradient of the class score through the SAME network (:meth:`jaxviz.Model.apply`) with its
ReLU swapped for one whose forward pass is the ReLU and whose backward pass is, for a ReLU input ``z``
and incoming gradient ``g``:

    plain ReLU       g · [z > 0]
    deconvnet        max(g, 0)               (the "reversed ReLU": ignores the forward activation)
    guided backprop  max(g, 0) · [z > 0]     (both masks)

Max-pooling routes the gradient to the arg-max of each window in all three (the deconvnet's "switches"),
as in the papers and in Captum. Nothing else in the network changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from . import _core


@jax.custom_vjp
def guided_relu(z: jax.Array) -> jax.Array:
    """ReLU whose gradient passes only where both the input and the incoming gradient are positive."""
    return jnp.maximum(z, 0)


def _guided_fwd(z):
    return jnp.maximum(z, 0), z


def _guided_bwd(z, g):
    return (jnp.where((z > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_fwd, _guided_bwd)


@jax.custom_vjp
def deconv_relu(z: jax.Array) -> jax.Array:
    """ReLU whose gradient is the ReLU of the incoming gradient (Zeiler & Fergus's reversed ReLU)."""
    return jnp.maximum(z, 0)


def _deconv_fwd(z):
    return jnp.maximum(z, 0), None


def _deconv_bwd(_, g):
    return (jnp.maximum(g, 0),)


deconv_relu.defvjp(_deconv_fwd, _deconv_bwd)

RELUS = {"guided_backprop": guided_relu, "deconvnet": deconv_relu}


def _modified_gradient(name, model, x, target, score, reduce, params):
    _core.check_model(model, name)
    _core.check_choice(score, _core.SCORES, "score")
    reduce = _core.check_reduce(reduce)
    x = _core.check_input(model, x)
    targets = _core.check_targets(model, target, x.shape[0])
    relu = RELUS[name]

    def build(fwd):
        def run(params, x, targets):
            g, _, _ = _core.input_gradient(fwd, params, x, targets, score, relu=relu)
            return g

        return run

    fn = _core.compiled(model, name, (score,), build)
    return _core.finish(fn(_core.params_of(model, params), x, targets), reduce)


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
    return _modified_gradient("guided_backprop", model, x, target, score, reduce, params)


def deconvnet(model, x, target: int | Sequence[int] | None = None, *, score: str = "logit",
              reduce: str | None = "abs_max", params=None) -> jax.Array:
    """Zeiler & Fergus's deconvnet reconstruction of the class score, as a gradient with a reversed ReLU.

    Arguments and result as :func:`guided_backprop`; ``reduce=None`` equals Captum's ``Deconvolution``.
    """
    return _modified_gradient("deconvnet", model, x, target, score, reduce, params)
