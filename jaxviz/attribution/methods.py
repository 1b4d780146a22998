"""Every attribution method by name, behind the common signature ``method(model, x, target=None, **options)``.

:data:`METHODS` maps a name to its function; :func:`explain` calls one by name. Grad-CAM appears here
upsampled (bilinearly) to the input size so that every entry returns ``[N, H, W]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from ..errors import JaxvizError
from . import _cam, _core
from .gradcam_plus_plus import gradcam_plus_plus
from .guided import deconvnet, guided_backprop
from .guided_gradcam import guided_gradcam
from .integrated_gradients import integrated_gradients
from .lime import lime
from .occlusion import occlusion
from .saliency import saliency
from .score_cam import score_cam
from .smoothgrad import smoothgrad


def gradcam(model, x, target: int | Sequence[int] | None = None, *, layer: str | None = None,
            score: str = "prob", interpolation: str = "bilinear", reduce: str | None = "sum",
            params=None) -> jax.Array:
    """Grad-CAM (:func:`jaxviz.attribution.gradcam.gradcam`, the book's: scaled to [0, 1]) at input size.

    Args as the other methods; ``score`` defaults to ``"prob"`` as in :mod:`~jaxviz.attribution.gradcam`.
    With ``params`` (other weights, e.g. the sanity check's), the same map is computed by this package's
    CAM helpers, since ``gradcam`` always uses ``model.params``.

    Returns:
      ``[N, H, W]`` float32 in [0, 1].
    """
    _core.check_choice(interpolation, ("bilinear", "nearest"), "interpolation")
    reduce = _core.check_reduce(reduce)
    if params is None:
        from .gradcam import gradcam as book_gradcam

        maps = book_gradcam(model, x, target, layer=layer, score=score)
        x = _core.check_input(model, x)
        return _core.finish_spatial(_resize(maps, x.shape[1:3], interpolation), reduce, x.shape[-1])
    return _gradcam_with_params(model, x, target, layer, score, interpolation, reduce, params)


def _gradcam_with_params(model, x, target, layer, score, interpolation, reduce, params):
    _core.check_model(model, "gradcam")
    _core.check_choice(score, _core.SCORES, "score")
    layer = _cam.check_layer(model, layer)
    index = _cam.layer_index(model, layer)
    x = _core.check_input(model, x)
    targets = _core.check_targets(model, target, x.shape[0])

    def build(fwd):
        def run(params, x, targets):
            a, g, _ = _cam.layer_gradients(fwd, params, x, layer, index, targets, score)
            cam = jnp.maximum(_cam.gradcam_map(a, g), 0)
            peak = cam.max(axis=(1, 2), keepdims=True)
            cam = _core.resize_maps(cam / jnp.where(peak > 0, peak, 1), x.shape[1:3], interpolation)
            return cam

        return run

    fn = _core.compiled(model, "gradcam", (layer, score, interpolation), build)
    return _core.finish_spatial(fn(params, x, targets), reduce, x.shape[-1])


@functools.partial(jax.jit, static_argnames=("size", "method"))
def _resize(maps, size, method):
    return _core.resize_maps(maps, size, method)


#: name → method, in the order the ``all`` panel shows them.
METHODS: dict[str, Callable] = {
    "saliency": saliency,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    "deconvnet": deconvnet,
    "guided_backprop": guided_backprop,
    "gradcam": gradcam,
    "guided_gradcam": guided_gradcam,
    "gradcam_plus_plus": gradcam_plus_plus,
    "score_cam": score_cam,
    "occlusion": occlusion,
    "lime": lime,
}

ALIASES = {"ig": "integrated_gradients", "gradcam++": "gradcam_plus_plus", "scorecam": "score_cam",
           "deconv": "deconvnet", "guided": "guided_backprop"}


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
    """``METHODS[method](model, x, target, **options)``: any method by name, ``[N, H, W]``."""
    return get_method(method)(model, x, target, **options)
