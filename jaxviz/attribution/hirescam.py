"""HiResCAM: the element-wise product of the gradient and the activations, summed over channels.

Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional neural
networks", arXiv:2011.08891, 2020.

    L_ij = ReLU(Σ_k ∂S_t/∂A_ijk · A_ijk)

(pytorch-grad-cam's ``HiResCAM``). When the layers after ``A`` are a (global-average or flatten) linear head,
``Σ_ij`` of the map before the ReLU is the class score minus the bias: the map shows the locations the score
comes from, which Grad-CAM's channel-averaged gradient does not guarantee. One forward and one backward pass.
"""

from __future__ import annotations

import jax

from . import _cam

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


def hirescam_map(a: jax.Array, g: jax.Array) -> jax.Array:
    """``Σ_k g_ijk · A_ijk`` ``[N, h, w]`` (before the final ReLU) from ``A``, ``g`` ``[N, h, w, K]``."""
    return (g * a).sum(axis=-1)


hirescam = _cam.cam_method("hirescam", hirescam_map, "Draelos & Carin's HiResCAM.")
