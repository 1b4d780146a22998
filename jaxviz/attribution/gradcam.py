"""Grad-CAM: where in the image the evidence for a class is (DLwP 1st ed., listings 5.40–5.44).

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
ICCV 2017, arXiv:1610.02391.

For a conv layer's output ``A [h, w, C]`` and a class score ``y_c``:

    α_k = mean_{i,j} ∂y_c/∂A_{ijk}                (gradient pooled per channel, per image)
    L   = ReLU( mean_k α_k · A_k ) / max(…)       (the book's weighted mean over channels, scaled to [0, 1])

computed with ONE forward pass (which taps ``A``) and ONE backward pass (a vjp w.r.t. that tap, batched over
the classes asked for). The classes are a traced argument (``-1`` = "the next most probable class"): one
program serves every target, the top class and ``top=1``; ``top=K`` differs only in the shape ``[N, K]``.
The tap is made differentiable by adding a zero perturbation to the layer's output inside the forward pass
(``perturb=`` of :meth:`jaxviz.Model.apply`): the gradient w.r.t. it is ∂y_c/∂A.

Differences from the references, on purpose:
- Pooling is per image. The keras.io example averages the gradient over the batch axis too, which mixes
  the images of a batch; here each image's map equals the one it gets alone.
- An all-zero map (no positive evidence) stays zero instead of becoming NaN through ``0 / 0``.
- ``score="prob"`` (default) differentiates the softmax output, as the book does; ``score="logit"`` the
  pre-softmax score, as the paper does.

Examples:
  >>> model = jaxviz.load("vgg16")
  >>> x = preprocess_input(load_image(path)[None])
  >>> heatmap = gradcam(model, x, target=386)[0]           # [14, 14] in [0, 1]
  >>> maps, classes = gradcam(model, x, top=5)             # [1, 5, 14, 14], [1, 5]
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import runtime
from ..errors import JaxvizError
from . import _cam
from .scores import default_score

SCORES = ("prob", "logit")

#: Display policy: a Grad-CAM map is a ReLU of evidence for the class, never negative (shown as its magnitude).
SIGNED = False

class GradCAMResult(NamedTuple):
    """Everything one Grad-CAM call computes.

    maps: ``[N, K, h, w]`` in [0, 1], one map per image and class.
    classes: ``[N, K]`` int32, the class of each map (given, or the top-K in descending probability).
    probs: ``[N, num_classes]`` softmax probabilities of the same forward pass.
    """

    maps: jax.Array
    classes: jax.Array
    probs: jax.Array


class GradCAMReport(NamedTuple):
    """What a Grad-CAM figure shows, from one compiled program (one forward, one batched backward pass).

    heatmaps: ``[N, h, w]``, the map of each image's explained class (its top class, or the target given).
    heat_classes: ``[N]`` int32, that class.
    maps: ``[N, K, h, w]``, the maps of each image's K most probable classes, in descending probability.
    classes: ``[N, K]`` int32, those classes.
    probs: ``[N, num_classes]`` probabilities; logits: the logits of the same forward pass.
    """

    heatmaps: jax.Array
    heat_classes: jax.Array
    maps: jax.Array
    classes: jax.Array
    probs: jax.Array
    logits: jax.Array


def _build(fwd, layer: str, score: str, relu: Callable):
    """The Grad-CAM program on ``fwd`` (:func:`jaxviz.runtime.compiled`'s forward pass).

    ``classes [N, K]``: a class index, or ``-1`` for the image's ``j``-th most probable class in column ``j``.
    """

    def run(params, x, classes):
        a_shape = jax.eval_shape(lambda p, v: fwd(p, v, upto=layer)[0], params, x)
        delta0 = jnp.zeros(a_shape.shape, a_shape.dtype)

        def forward(delta):
            logits, taps = fwd(params, x, upto="logits", taps=(layer,), relu=relu, perturb={layer: delta})
            probs = runtime.probabilities(logits, score)
            y = logits if score.endswith("logit") else probs
            return y, (taps[layer], probs, logits)

        y, vjp_fn, (a, probs, logits) = jax.vjp(forward, delta0, has_aux=True)
        k = min(classes.shape[1], probs.shape[-1])  # top-K and a target: K + 1 columns, K ranked
        ranked = jax.lax.top_k(probs, k)[1]  # ranking: same for logits and probabilities
        if k < classes.shape[1]:
            ranked = jnp.pad(ranked, ((0, 0), (0, classes.shape[1] - k)))  # under given classes only
        classes = jnp.where(classes < 0, ranked, classes).astype(jnp.int32)
        cot = jax.nn.one_hot(classes.T, y.shape[-1], dtype=y.dtype)  # [K, N, num_classes]
        (grads,) = jax.vmap(vjp_fn)(cot)  # [K, N, h, w, C]: one batched backward pass
        weights = grads.mean(axis=(2, 3))  # [K, N, C]: pooled per image and channel
        cam = jnp.einsum("nhwc,knc->nkhw", a, weights) / a.shape[-1]  # weighted mean over channels
        cam = jnp.maximum(cam, 0)
        peak = cam.max(axis=(2, 3), keepdims=True)
        cam = cam / jnp.where(peak > 0, peak, 1)  # all-zero maps stay zero, never 0/0
        return cam, classes, probs, logits

    return run


def _compiled(model, layer, score, relu):
    return runtime.compiled(model, "gradcam_book", (layer, score, relu), lambda fwd: _build(fwd, layer, score, relu))


def _check_layer(model, layer):
    if layer is not None:
        (layer,) = model.check_layers(layer)
    return _cam.check_layer(model, layer, "Grad-CAM needs")


def gradcam_result(model, x, target: int | Sequence[int] | None = None, layer: str | None = None,
                   score: str | None = None, top: int | None = None, relu: Callable = jax.nn.relu, *,
                   class_index: int | Sequence[int] | None = None, params: dict | None = None) -> GradCAMResult:
    """Grad-CAM maps with their classes and the probabilities; see :func:`gradcam` for the arguments.

    Returns:
      :class:`GradCAMResult` with ``maps [N, K, h, w]`` (K = ``top``, or 1 for a target/the top class).
    """
    if class_index is not None:
        if target is not None:
            raise JaxvizError("give the class as target= or class_index=, not both")
        target = class_index
    score, layer, x = _checked(model, x, layer, score)
    n, num_classes = x.shape[0], model.arch.num_classes
    if top is not None:
        if target is not None:
            raise JaxvizError("give either a target class or top=K, not both")
        _check_top(top, num_classes)
    if target is not None:
        classes = runtime.check_targets(model, target, n)[:, None]
    else:
        classes = jnp.full((n, int(top or 1)), -1, jnp.int32)  # -1: the j-th most probable class
    fn = _compiled(model, layer, score, relu)
    maps, classes, probs, _ = fn(model.params if params is None else params, x, classes)
    return GradCAMResult(maps, classes, probs)


def gradcam_report(model, x, top: int = 5, target: int | Sequence[int] | None = None, layer: str | None = None,
                   score: str | None = None) -> GradCAMReport:
    """Everything a Grad-CAM figure draws, in one pass: the map of each image's top class (or of ``target``),
    the maps of its ``top`` most probable classes, the probabilities and the logits.

    One compiled program (:func:`gradcam`'s): the ``top`` ranked classes and, with a target, that class in
    one more column, all from one forward and one batched backward pass. Arguments as :func:`gradcam`;
    ``top`` is capped at the number of classes.

    Returns:
      :class:`GradCAMReport`.
    """
    score, layer, x = _checked(model, x, layer, score)
    n, num_classes = x.shape[0], model.arch.num_classes
    k = min(operator.index(top), num_classes)
    _check_top(k, num_classes)
    classes = jnp.full((n, k), -1, jnp.int32)  # -1: the j-th most probable class
    if target is not None:
        classes = jnp.concatenate([classes, runtime.check_targets(model, target, n)[:, None]], axis=1)
    maps, classes, probs, logits = _compiled(model, layer, score, jax.nn.relu)(model.params, x, classes)
    if target is not None:
        return GradCAMReport(maps[:, k], classes[:, k], maps[:, :k], classes[:, :k], probs, logits)
    return GradCAMReport(maps[:, 0], classes[:, 0], maps, classes, probs, logits)


def _check_top(top, num_classes: int) -> None:
    if not 1 <= operator.index(top) <= num_classes:
        raise JaxvizError(f"top must be in 1..{num_classes}, got {top}")


def _checked(model, x, layer, score):
    """The score, layer and images checked (one error line each), as the program takes them."""
    if not model.include_top:
        raise JaxvizError("Grad-CAM needs the classifier: load the model with include_top=True")
    score = default_score(model, score)
    if score not in SCORES:
        raise JaxvizError(f"unknown score {score!r}; use one of: {', '.join(SCORES)}")
    score = runtime.check_score(model, score)
    layer = _check_layer(model, layer)
    return score, layer, model.check_input(x)  # also refuses NaN/inf images, which would give NaN maps


def gradcam(model, x, target: int | Sequence[int] | None = None, layer: str | None = None,
            score: str | None = None, top: int | None = None, relu: Callable = jax.nn.relu, *,
            class_index: int | Sequence[int] | None = None, params: dict | None = None):
    """Grad-CAM class-activation maps, one forward and one backward pass for the whole batch.

    Args:
      model: a :class:`jaxviz.Model` with its classifier (``include_top=True``).
      x: ``[N, H, W, 3]`` preprocessed images (:func:`jaxviz.images.preprocess_input`).
      target: the class to explain: ``None`` = each image's top class, an ``int`` for all images, or a
        sequence with one class per image.
      layer: conv layer whose output is weighted; default the last one (``block5_conv3`` on VGG16).
      score: ``"prob"`` differentiates the softmax probability (the book), ``"logit"`` the pre-softmax
        score (the paper); default (``None``) the probability, except on the demo networks, whose saturated
        softmax has no gradient: the logit there (:func:`jaxviz.attribution.scores.default_score`).
      top: ``K`` gives the maps of each image's K most probable classes instead of one target.
      relu: the network's activation (e.g. a guided-backprop ReLU for Guided Grad-CAM variants).
      class_index: alias of ``target`` (the book's name).
      params: weights to use instead of ``model.params`` (same tree; e.g. the sanity check's randomised ones).

    Returns:
      ``[N, h, w]`` float32 maps in [0, 1] (each divided by its max; an all-zero map stays zero), or with
      ``top=K`` a tuple ``(maps [N, K, h, w], classes [N, K])`` in descending probability. ``h, w`` is the
      layer's resolution (14×14 for block5_conv3 at 224 px): resize it to the image to overlay it
      (:func:`jaxviz.images.overlay`).

    Compiled once per (model, layer, score, relu) and input shape (with ``top=K``, K is part of the shape);
    params and the classes are traced arguments, so another target does not recompile.
    """
    res = gradcam_result(model, x, target, layer, score, top, relu, class_index=class_index, params=params)
    if top is not None:
        return res.maps, res.classes
    return res.maps[:, 0]
