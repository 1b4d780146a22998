"""Shared pieces of the class-activation-map family (Grad-CAM++, Guided Grad-CAM, Score-CAM).

``layer_gradients`` is one forward pass that taps a conv layer's output ``A`` and one backward pass to
``∂S_t/∂A``, through a zero perturbation of that layer's output (``perturb=`` of the forward pass).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .. import runtime
from ..errors import LayerError


def finish_map(cam: jax.Array, size, normalize: bool, upsample: bool, interpolation: str) -> jax.Array:
    """A CAM ``[N, h, w]`` made final: divided by its maximum (``normalize``; an all-zero map stays zero), then
    resized to the input ``size`` (``upsample``)."""
    if normalize:
        peak = cam.max(axis=(1, 2), keepdims=True)
        cam = cam / jnp.where(peak > 0, peak, 1)
    return runtime.resize_maps(cam, size, interpolation) if upsample else cam


def check_layer(model, layer: str | None, method: str = "class-activation maps need") -> str:
    """The layer a CAM is computed on: any layer with a spatial map ``[N, h, w, C]``; default the model's
    ``cam_layer``, the last such layer before the head (``block5_conv3`` on VGG16, ``conv5_block3_out`` on
    ResNet50)."""
    names = list(model.spatial_layer_names)
    if layer is None:
        return model.cam_layer
    if layer not in names:
        raise LayerError(f"{method} a conv layer (a layer with a spatial map), got {layer!r}; choose one "
                         f"of: {', '.join(names)}")
    return layer


def layer_gradients(fwd: Callable, params, x: jax.Array, layer: str, targets: jax.Array,
                    score: str, relu: Callable = jax.nn.relu):
    """``(A [N, h, w, K], ∂S_t/∂A [N, h, w, K], resolved targets [N])``: one forward, one backward pass."""
    a_shape = jax.eval_shape(lambda p, v: fwd(p, v, upto=layer)[0], params, x)
    delta0 = jnp.zeros(a_shape.shape, a_shape.dtype)

    def forward(delta):
        logits, taps = fwd(params, x, upto="logits", taps=(layer,), relu=relu,
                            perturb={layer: delta})
        return logits, taps[layer]

    logits, vjp, a = jax.vjp(forward, delta0, has_aux=True)
    t = runtime.resolve_targets(targets, logits)
    dlogits = jax.grad(lambda z: runtime.class_score(z, t, score).sum())(logits)
    (grads,) = vjp(dlogits)
    return a, grads, t


def head_gradient(fwd: Callable, params, x: jax.Array, a: jax.Array, layer: str, targets: jax.Array,
                  score: str) -> jax.Array:
    """``∂S_t/∂A [N, h, w, K]`` through the layers after ``layer``, with the plain ReLU, given ``A = a``.

    Only those layers run (for the last conv layer: pooling and the head): the forward pass takes ``a`` as the
    layer's output by name (``replace=``), so what only the layer reads is not computed; ``x`` feeds any other
    path to the head (a skip connection around the layer). ``a`` comes from a forward pass already done (e.g.
    Guided Grad-CAM's guided one, whose forward values are the same).
    """

    def total(av):
        logits = fwd(params, x, upto="logits", replace={layer: av})[0]
        return runtime.class_score(logits, targets, score).sum()

    return jax.grad(total)(a)


def gradcam_map(a: jax.Array, grads: jax.Array) -> jax.Array:
    """The paper's Grad-CAM before its ReLU: ``Σ_k mean_ij(∂S/∂A_ijk) · A_k`` → ``[N, h, w]``.

    Sum over channels as in Selvaraju et al. eq. 2 and Captum's ``LayerGradCam`` (jaxviz's
    :func:`~jaxviz.attribution.gradcam.gradcam` takes the mean and scales to [0, 1], as the book does).
    """
    weights = grads.mean(axis=(1, 2))
    return jnp.einsum("nhwk,nk->nhw", a, weights)


def check_args(model, method: str, x, target, layer: str | None, score: str, interpolation: str,
               reduce: str | None):
    """The checks every CAM method starts with; returns ``(layer, x, targets, reduce)``."""
    runtime.check_model(model, method)
    score = runtime.check_score(model, score)
    runtime.check_choice(interpolation, ("bilinear", "nearest"), "interpolation")
    reduce = runtime.check_reduce(reduce)
    layer = check_layer(model, layer)
    x = runtime.check_input(model, x)
    return layer, x, runtime.check_targets(model, target, x.shape[0]), reduce


def run_cam(model, name: str, x, target, map_fn: Callable, *, layer: str | None, score: str, upsample: bool,
            interpolation: str, normalize: bool, reduce: str | None, params, key: tuple = (),
            gradients: bool = True) -> jax.Array:
    """The one CAM driver: checks, ``map_fn(A, ∂S_t/∂A) → [N, h, w]`` (``∂S_t/∂A`` is ``None`` when
    ``gradients`` is False: one forward pass to the layer), ReLU, optional scaling to max 1, upsampling.

    ``key`` holds the options ``map_fn`` depends on (it is part of the compiled program's cache key).
    """
    score = runtime.check_score(model, score)
    layer, x, targets, reduce = check_args(model, name, x, target, layer, score, interpolation, reduce)

    def build(fwd):
        def run(params, x, targets):
            if gradients:
                a, g, _ = layer_gradients(fwd, params, x, layer, targets, score)
            else:
                a, g = fwd(params, x, upto=layer)[0], None
            cam = jnp.maximum(map_fn(a, g), 0)
            return finish_map(cam, x.shape[1:3], normalize, upsample, interpolation)

        return run

    fn = runtime.compiled(model, name, (layer, score, bool(upsample), interpolation, bool(normalize), *key), build)
    return runtime.finish_spatial(fn(runtime.params_of(model, params), x, targets), reduce, x.shape[-1])


#: The arguments every CAM variant made by :func:`cam_method` takes (their shared docstring).
CAM_METHOD_ARGS = """
    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image{target_note}.
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


def cam_method(name: str, map_fn: Callable, summary: str, *, gradients: bool = True, target_note: str = ""):
    """The public function of a CAM variant that is ``ReLU(map_fn(A, ∂S_t/∂A))`` (:func:`run_cam`): one
    signature and docstring for the family; ``summary`` is the docstring's first line."""

    def method(model, x, target=None, *, layer: str | None = None, score: str = "logit", upsample: bool = True,
               interpolation: str = "bilinear", normalize: bool = False, reduce: str | None = "sum",
               params=None) -> jax.Array:
        return run_cam(model, name, x, target, map_fn, layer=layer, score=score, upsample=upsample,
                       interpolation=interpolation, normalize=normalize, reduce=reduce, params=params,
                       gradients=gradients)

    method.__name__ = method.__qualname__ = name
    method.__module__ = map_fn.__module__
    method.__doc__ = summary + "\n" + CAM_METHOD_ARGS.format(target_note=target_note)
    return method
