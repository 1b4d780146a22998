"""Keras files read without Keras: whole models (``.keras``, legacy ``.h5``) → a layer graph + params, and
the weights of every Keras HDF5 layout.

One job per module:

- :mod:`jaxviz.frontends.keras.config`: a model's config → flat layers (nested models flattened: an inner layer is
  named ``outer/inner``, ``vgg16/block5_conv3``) and where each layer's weights are in the file;
- :mod:`jaxviz.frontends.keras.h5`: the one reader of Keras HDF5 weights, every layout (legacy ``save_weights``
  files, the 2016 keras-applications files, Keras 3 ``.weights.h5``), given the layers whose weights to read:
  a whole model's (from its config) or a graph's (:func:`graph_slots`, for weights-only files such as
  Keras's VGG files);
- :mod:`jaxviz.frontends.keras.model_file`: :func:`read_model`, ``.keras`` archives and folders and legacy
  whole-model ``.h5`` files.

``Sequential`` and functional models (merges, branches, several outputs) are read. Each layer's weights are
named as Keras names them (``kernel``, ``bias``, ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``,
``depthwise_kernel``, ``pointwise_kernel``, ``alpha``, ``mean``, ``variance``, ``count``), except
``DepthwiseConv2D``'s kernel, which is ``kernel`` (Keras 3's name; Keras 2 called it ``depthwise_kernel``).
See :func:`jaxviz.layers.weight_names` for each kind's weights.

jaxviz's own pickle-free format for a read model is :mod:`jaxviz.frontends.npz`.
"""

from .config import (
    APPLICATIONS,
    MAX_CONFIG_BYTES,
    MAX_LAYERS,
    MAX_MEMBERS,
    MAX_METADATA_BYTES,
    MAX_NESTING,
    TF_OPS,
    Slot,
    application_preprocess,
    graph_slots,
    to_snake_case,
)
from .h5 import implied_shapes, open_weights, read_weights, stored_layers
from .model_file import read_model, resolve_name

__all__ = [
    "APPLICATIONS", "MAX_CONFIG_BYTES", "MAX_LAYERS", "MAX_MEMBERS", "MAX_METADATA_BYTES", "MAX_NESTING", "TF_OPS",
    "Slot", "application_preprocess", "graph_slots", "implied_shapes", "open_weights", "read_model",
    "read_weights", "resolve_name", "stored_layers", "to_snake_case",
]
