"""What deconvnet and guided backpropagation share: the input gradient through a ReLU with another backward rule.

Both are the gradient of the class score through the SAME network (:meth:`jaxviz.Model.apply`) with its
ReLU swapped for one whose forward pass is the ReLU and whose backward pass is, for a ReLU input ``z``
and incoming gradient ``g``:

    plain ReLU       g · [z > 0]
    deconvnet        max(g, 0)               (:mod:`jaxviz.attribution.deconvnet`)
    guided backprop  max(g, 0) · [z > 0]     (:mod:`jaxviz.attribution.guided_backprop`)

Max-pooling routes the gradient to the arg-max of each window in all three (the deconvnet's "switches"),
as in the papers and in Captum. Nothing else in the network changes.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import runtime


def modified_gradient(name: str, relu: Callable, model, x, target, score: str, reduce: str | None, params):
    """``∂score/∂x`` with ``relu`` in place of the ReLU, reduced over channels; one program per (model, score)."""
    return runtime.gradient_method(model, name, x, target, score, reduce, params, relu=relu)
