"""LayerCAM: every location's activation weighted by its own positive gradient.

Jiang, Zhang, Hou, Cheng & Wei, "LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization", IEEE Transactions on Image Processing 30, 5875–5888, 2021, doi:10.1109/TIP.2021.3089943.

    L_ij = ReLU(Σ_k ReLU(∂S_t/∂A_ijk) · A_ijk)

(the paper's eq. 3–4; pytorch-grad-cam's ``LayerCAM``). Unlike Grad-CAM's one weight per channel, each
location keeps its own weight, so the map stays sharp on early layers. One forward and one backward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _cam

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


def layercam_map(a: jax.Array, g: jax.Array) -> jax.Array:
    """``Σ_k ReLU(g_ijk) · A_ijk`` ``[N, h, w]`` (before the final ReLU) from ``A``, ``g`` ``[N, h, w, K]``."""
    return (jnp.maximum(g, 0) * a).sum(axis=-1)


layercam = _cam.cam_method("layercam", layercam_map, "Jiang et al.'s LayerCAM.")
