"""VGG16 and VGG19 written in Flax, with the weights jaxviz loads.

:class:`VGG16` and :class:`VGG19` are NNX modules (:mod:`jaxviz.models.nnx`); :mod:`jaxviz.models.linen`
has the same networks in linen. :func:`vgg16` / :func:`vgg19` build one with Keras's converted weights,
from the same files and cache as :func:`jaxviz.load` (:mod:`jaxviz.weights`): ImageNet, a weight file, or
seeded random weights.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx as flax_nnx  # jaxviz.models.nnx, a submodule, takes the name nnx here

from .. import weights as weights_lib
from ..errors import JaxvizError, WeightsError
from ..frontends import vgg as vgg_lib
from . import linen
from .nnx import VGG, VGG16, VGG19

APIS = ("nnx", "linen")


def vgg16(weights: str | None = "imagenet", include_top: bool = True, api: str = "nnx",
          classifier_activation: str | None = "softmax"):
    """VGG16 in Flax with Keras's weights: the NNX module, or for ``api="linen"`` ``(module, variables)``.

    Args:
      weights: ``"imagenet"``, the path of a Keras ``.h5`` / ``.weights.h5`` or converted ``.npz`` file, or
        ``"random:SEED"`` (``None``: seed 0), as :func:`jaxviz.load`.
      include_top: the classifier (``flatten``, ``fc1``, ``fc2``, ``predictions``; 224×224 inputs).
      api: ``"nnx"`` or ``"linen"``.
      classifier_activation: ``"softmax"`` (Keras's output) or ``None`` (the logits, e.g. to fine-tune).
    """
    return vgg("vgg16", weights, include_top, api, classifier_activation)


def vgg19(weights: str | None = "imagenet", include_top: bool = True, api: str = "nnx",
          classifier_activation: str | None = "softmax"):
    """VGG19 in Flax with Keras's weights (see :func:`vgg16`)."""
    return vgg("vgg19", weights, include_top, api, classifier_activation)


def vgg(arch: str, weights: str | None = "imagenet", include_top: bool = True, api: str = "nnx",
        classifier_activation: str | None = "softmax"):
    """Any VGG row of jaxviz's architecture table with a flatten head (``vgg16``, ``vgg19``, ``vgg_tiny``) in
    Flax with its weights (see :func:`vgg16`)."""
    if api not in APIS:
        raise JaxvizError(f"unknown api {api!r}; use 'nnx' or 'linen'")
    if classifier_activation not in ("softmax", None):
        raise JaxvizError(f"classifier_activation must be 'softmax' or None, got {classifier_activation!r}")
    a = vgg_lib.get_arch(arch)
    if a.head != "flatten":
        raise JaxvizError(f"{a.name} has a {a.head} head; jaxviz.models builds the VGG tables with a flatten head")
    params, _ = weights_lib.load_params(a, weights, include_top)
    options = dict(include_top=include_top, fc_features=a.fc_features, num_classes=a.num_classes,
                   classifier_activation=classifier_activation)
    if api == "linen":
        module = linen.VGG(a.convs_per_block, a.block_features, **options)
        return module, {"params": {name: {k: jnp.asarray(v) for k, v in p.items()} for name, p in params.items()}}
    abstract = flax_nnx.eval_shape(lambda: VGG(a.convs_per_block, a.block_features, input_size=a.default_size,
                                          rngs=flax_nnx.Rngs(0), **options))
    graphdef, state = flax_nnx.split(abstract)
    pure = flax_nnx.to_pure_dict(state)
    if set(pure) != set(params):
        raise WeightsError(f"the {a.name} weights hold layers {sorted(params)}, the module {sorted(pure)}")
    for name, leaves in pure.items():
        for key, spec in leaves.items():
            value = np.asarray(params[name][key], np.float32)
            if value.shape != tuple(spec.shape):
                raise WeightsError(f"{a.name} {name}/{key}: weights of shape {value.shape}, the module "
                                   f"expects {tuple(spec.shape)}")
            leaves[key] = jnp.asarray(value)
    flax_nnx.replace_by_pure_dict(state, pure)
    return flax_nnx.merge(graphdef, state)


__all__ = ["APIS", "VGG", "VGG16", "VGG19", "linen", "vgg", "vgg16", "vgg19"]
