"""Every attribution method by name, behind the common signature ``method(model, x, target=None, **options)``.

:data:`METHODS` maps a name to its function; :func:`explain` calls one by name. Grad-CAM appears here
upsampled (bilinearly) to the input size so that every entry returns ``[N, H, W]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from types import MappingProxyType

import jax
import numpy as np

from .. import runtime
from ..errors import JaxvizError
from . import (
    ablationcam,
    deconvnet,
    deeplift,
    eigencam,
    gradcam_plus_plus,
    gradient_shap,
    guided_backprop,
    guided_gradcam,
    hirescam,
    input_x_gradient,
    integrated_gradients,
    layercam,
    lime,
    occlusion,
    rise,
    saliency,
    score_cam,
    smoothgrad,
    xgradcam,
)
from . import gradcam as book


def gradcam_at_input(model, x, target: int | Sequence[int] | None = None, *, layer: str | None = None,
            score: str = "logit", interpolation: str = "bilinear", reduce: str | None = "sum",
            params=None) -> jax.Array:
    """Grad-CAM (:func:`jaxviz.attribution.gradcam.gradcam`, the book's: scaled to [0, 1]) at input size.

    Args as the other methods; ``score`` defaults to ``"logit"`` like theirs (and Captum's, and the paper's):
    a confident model's softmax is saturated, its gradient vanishes and the map of the probability is noise.
    :func:`jaxviz.gradcam` keeps the book's ``"prob"``.

    Returns:
      ``[N, H, W]`` float32 in [0, 1].
    """
    runtime.check_choice(interpolation, ("bilinear", "nearest"), "interpolation")
    reduce = runtime.check_reduce(reduce)
    maps = book.gradcam(model, x, target, layer=layer, score=score, params=params)
    x = runtime.check_input(model, x)
    return runtime.finish_spatial(_resize(maps, x.shape[1:3], interpolation), reduce, x.shape[-1])


@functools.partial(jax.jit, static_argnames=("size", "method"))
def _resize(maps, size, method):
    return runtime.resize_maps(maps, size, method)


#: name → method, in the order the ``all`` panel shows them.
METHODS: dict[str, Callable] = {
    "saliency": saliency.saliency,
    "smoothgrad": smoothgrad.smoothgrad,
    "integrated_gradients": integrated_gradients.integrated_gradients,
    "input_x_gradient": input_x_gradient.input_x_gradient,
    "gradient_shap": gradient_shap.gradient_shap,
    "deeplift": deeplift.deeplift,
    "deconvnet": deconvnet.deconvnet,
    "guided_backprop": guided_backprop.guided_backprop,
    "gradcam": gradcam_at_input,
    "guided_gradcam": guided_gradcam.guided_gradcam,
    "gradcam_plus_plus": gradcam_plus_plus.gradcam_plus_plus,
    "score_cam": score_cam.score_cam,
    "layercam": layercam.layercam,
    "hirescam": hirescam.hirescam,
    "xgradcam": xgradcam.xgradcam,
    "eigencam": eigencam.eigencam,
    "ablationcam": ablationcam.ablationcam,
    "occlusion": occlusion.occlusion,
    "lime": lime.lime,
    "rise": rise.rise,
}

#: name → the module that defines the method (and declares how its maps are shown).
_MODULES = dict(zip(METHODS, (
    saliency, smoothgrad, integrated_gradients, input_x_gradient, gradient_shap, deeplift, deconvnet, guided_backprop,
    book, guided_gradcam, gradcam_plus_plus, score_cam, layercam, hirescam, xgradcam, eigencam, ablationcam, occlusion,
    lime, rise)))
#: name → the method's display policy, as its module declares it (``SIGNED``): True = the sign matters
#: (negative is evidence against the class), shown as the positive part; False = shown as the magnitude.
SIGNED = MappingProxyType({name: module.SIGNED for name, module in _MODULES.items()})

ALIASES = {"ig": "integrated_gradients", "gradcam++": "gradcam_plus_plus", "scorecam": "score_cam",
           "deconv": "deconvnet", "guided": "guided_backprop", "ixg": "input_x_gradient",
           "layer_cam": "layercam", "hires_cam": "hirescam", "xgrad_cam": "xgradcam", "eigen_cam": "eigencam",
           "ablation_cam": "ablationcam", "expected_gradients": "gradient_shap", "gradientshap": "gradient_shap"}


def method_name(name: str) -> str:
    """The canonical name for ``name`` (``-`` and ``_`` are interchangeable; a few aliases, e.g. ``ig``)."""
    key = str(name).strip().lower().replace("-", "_")
    key = ALIASES.get(key, ALIASES.get(str(name).strip().lower(), key))
    if key not in METHODS:
        raise JaxvizError(f"unknown attribution method {name!r}; valid methods: {', '.join(METHODS)} (or all)")
    return key


def get_method(name: str) -> Callable:
    """The method called ``name`` (see :data:`METHODS`)."""
    return METHODS[method_name(name)]


def explain(model, x, method: str = "saliency", target: int | Sequence[int] | None = None, **options):
    """``METHODS[method](model, x, target, **options)``: any method by name, ``[N, H, W]``.

    Images holding NaN or inf are refused (every method would return a NaN map without a word).
    """
    if not np.all(np.isfinite(np.asarray(x))):
        raise JaxvizError("the images hold NaN/inf values, which give NaN maps; check the preprocessing "
                          "(np.isfinite(x).all() should be True)")
    return get_method(method)(model, x, target, **options)
