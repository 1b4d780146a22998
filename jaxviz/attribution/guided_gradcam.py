"""Guided Grad-CAM: guided backpropagation weighted by the (upsampled, non-negative) Grad-CAM map.

Selvaraju, Cogswell, Das, Vedantam, Parikh & Batra, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017, arXiv:1610.02391 (section 3.2).

    GGC = guided_backprop(x) ⊙ upsample(ReLU(Σ_k α_k A_k)),   α_k = mean_ij ∂S_t/∂A_ijk

Grad-CAM here is the paper's (sum over channels, not normalised), so the product equals Captum's
``GuidedGradCam``. The paper upsamples bilinearly (the default); Captum defaults to ``"nearest"``
(``interpolation="nearest"`` reproduces it). Its two backward passes share ONE forward pass (the guided
ReLU's forward values are the ReLU's): the guided backward pass goes to the input, and Grad-CAM's gradient
re-runs only the layers after the tapped conv layer with the plain ReLU, from the tapped activations.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .. import runtime
from . import _cam
from .guided_backprop import guided_relu

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


def guided_gradcam(model, x, target: int | Sequence[int] | None = None, *, layer: str | None = None,
                   score: str = "logit", interpolation: str = "bilinear", reduce: str | None = "abs_max",
                   params=None) -> jax.Array:
    """Selvaraju et al.'s Guided Grad-CAM.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      layer: conv layer for Grad-CAM; default the last one.
      score: ``"logit"`` (default, the paper), ``"prob"`` or ``"log_prob"``.
      interpolation: how Grad-CAM is upsampled: ``"bilinear"`` (paper) or ``"nearest"`` (Captum).
      reduce: channel reduction; default ``"abs_max"``; ``None`` keeps ``[N, H, W, 3]`` (Captum's output,
        channels last).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32 (``[N, H, W, 3]`` for ``reduce=None``).
    """
    score = runtime.check_score(model, score)
    layer, x, targets, reduce = _cam.check_args(model, "guided_gradcam", x, target, layer, score, interpolation,
                                                reduce)

    def build(fwd):
        def run(params, x, targets):
            # ONE forward pass, with the guided ReLU (its forward values are the ReLU's), tapping the layer.
            a_shape = jax.eval_shape(lambda p, v: fwd(p, v, upto=layer)[0], params, x)

            def forward(v, delta):
                logits, taps = fwd(params, v, upto="logits", taps=(layer,), relu=guided_relu,
                                   perturb={layer: delta})
                return logits, taps[layer]

            logits, vjp, a = jax.vjp(forward, x, jnp.zeros(a_shape.shape, a_shape.dtype), has_aux=True)
            t = runtime.resolve_targets(targets, logits)
            dlogits = jax.grad(lambda z: runtime.class_score(z, t, score).sum())(logits)
            gb, _ = vjp(dlogits)  # guided backpropagation to the input
            # Grad-CAM's gradient goes through the layers after the tap with the plain ReLU: re-run only
            # those (the head, for the last conv layer) from the tapped activations.
            g = _cam.head_gradient(fwd, params, x, a, layer, t, score)
            cam = jnp.maximum(_cam.gradcam_map(a, g), 0)
            cam = runtime.resize_maps(cam, x.shape[1:3], interpolation)
            return gb * cam[..., None]

        return run

    fn = runtime.compiled(model, "guided_gradcam", (layer, score, interpolation), build)
    return runtime.finish(fn(runtime.params_of(model, params), x, targets), reduce)
