"""Layer kinds: one small pure function per Keras layer class, ``kind(p, inputs, cfg, ops) -> output``.

- ``p``: the layer's params (``{"kernel", "bias", …}`` as Keras names its weights; ``"prepared"``: kernels
  :func:`jaxviz.graph.prepare` derived for the fast ops), ``{}`` for layers without weights;
- ``inputs``: the values of the layer's input layers, in order;
- ``cfg``: the layer's Keras config (``layer.get_config()``);
- ``ops``: the :class:`jaxviz.ops.Ops` that computes convolutions, dense products, pools and ReLUs.

A kind whose Keras layer has an ``activation=`` argument returns ``(pre_activation, activation)``: the
forward pass applies the activation (:func:`apply_activation`), so the pre-activation value is available
as the model's ``"logits"`` and every ReLU goes through ``ops.relu``. Values are NHWC (Keras's
``channels_last``); the computation runs in the input's dtype.

The kinds live in one module per family (:mod:`.activations`, :mod:`.weighted`, :mod:`.spatial`,
:mod:`.structure`, :mod:`.operations`), all registered in ONE table, :data:`KINDS` (:mod:`.registry`), when
this package is imported.
"""

from .activations import ACTIVATIONS, ELEMENTWISE, apply_activation
from .operations import LINEAR_NUMERATOR, LINEAR_OPERATIONS, OPERATIONS, UNARY_OPERATIONS, tensor_args
from .registry import KINDS, apply_layer, kind, unsupported
from .spatial import pads_2d
from .structure import concatenate
from .weighted import weight_names

__all__ = ["ACTIVATIONS", "ELEMENTWISE", "KINDS", "LINEAR_NUMERATOR", "LINEAR_OPERATIONS", "OPERATIONS",
           "UNARY_OPERATIONS", "apply_activation", "apply_layer", "concatenate", "kind", "pads_2d", "tensor_args",
           "unsupported", "weight_names"]
