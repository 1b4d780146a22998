"""XGrad-CAM: channel weights from the activation-weighted gradient (axiom-based Grad-CAM).

Fu, Hu, Dong, Wang, Li & Li, "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of
CNNs", BMVC 2020, arXiv:2008.02312.

    w_k = Σ_ij (A_ijk / Σ_ab A_abk) · ∂S_t/∂A_ijk,     L = ReLU(Σ_k w_k A_k)

(the paper's eq. 9; pytorch-grad-cam's ``XGradCAM``). A channel whose activations sum to 0 gets weight 0
(pytorch-grad-cam adds 1e-7 to the sum instead; for ReLU outputs both give 0 there, since then every
``A_ijk`` is 0). One forward and one backward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _cam

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


def xgradcam_map(a: jax.Array, g: jax.Array) -> jax.Array:
    """``Σ_k w_k A_k`` ``[N, h, w]`` (before the final ReLU) with XGrad-CAM's weights ``w_k``."""
    total = a.sum(axis=(1, 2), keepdims=True)
    weights = (a / jnp.where(total != 0, total, 1) * g).sum(axis=(1, 2))  # [N, K]
    return jnp.einsum("nhwk,nk->nhw", a, weights)


xgradcam = _cam.cam_method("xgradcam", xgradcam_map, "Fu et al.'s XGrad-CAM.")
