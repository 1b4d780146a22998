"""Eigen-CAM: the projection of a layer's activations on their first principal component.

Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020,
arXiv:2008.00299.

With ``A`` reshaped to ``[h·w, K]`` (one row per location) and centred per channel as pytorch-grad-cam does
(``Ā = A − mean over locations``; pytorch-grad-cam's choice: the paper factorises the uncentred activations),
``Ā = U Σ Vᵀ``:

    L = ReLU(Ā v₁)      (v₁ the first right singular vector)

The sign of a singular vector is arbitrary (``−v₁`` serves as well), so it is fixed as pytorch-grad-cam's
``get_2d_projection_with_sign_correction`` does: the projection is negated when ``|min| > |max|``, so that
the larger lobe is positive (pytorch-grad-cam's ``EigenCAM`` itself keeps LAPACK's sign, which changes with
the library). No gradients and no class: ``target`` is accepted for the common signature and not used;
``score`` is validated only. One forward pass to the layer and one small SVD per image.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _cam

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


def eigencam_map(a: jax.Array, g=None) -> jax.Array:
    """The sign-corrected projection ``Ā v₁`` ``[N, h, w]`` (before the final ReLU) from ``A`` ``[N, h, w, K]``."""
    n, h, w, k = a.shape
    flat = a.reshape(n, h * w, k)
    flat = flat - flat.mean(axis=1, keepdims=True)
    _, _, vt = jnp.linalg.svd(flat, full_matrices=False)
    proj = jnp.einsum("npk,nk->np", flat, vt[:, 0, :])
    flip = jnp.abs(proj.min(axis=1)) > jnp.abs(proj.max(axis=1))
    return jnp.where(flip[:, None], -proj, proj).reshape(n, h, w)


eigencam = _cam.cam_method("eigencam", eigencam_map,
                           "Muhammad & Yeasin's Eigen-CAM (class-agnostic: ``target`` is not used).",
                           gradients=False, target_note=": not used (Eigen-CAM is class-agnostic)")
