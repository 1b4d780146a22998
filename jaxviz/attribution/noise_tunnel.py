"""A noise tunnel around any attribution method: SmoothGrad, SmoothGrad², VarGrad.

- SmoothGrad: Smilkov, Thorat, Kim, Viégas & Wattenberg, "SmoothGrad: removing noise by adding noise", ICML
  workshop 2017, arXiv:1706.03825;
- SmoothGrad² (``smoothgrad_sq``) and VarGrad: Hooker, Erhan, Kindermans & Kim, "A Benchmark for
  Interpretability Methods in Deep Neural Networks", NeurIPS 2019, arXiv:1806.10758; Adebayo et al.,
  "Local Explanation Methods for Deep Neural Networks Lack Sensitivity to Parameter Values", ICLR workshop
  2018, arXiv:1810.03307 (VarGrad).

With ``M`` the wrapped method's map and ``ε_k ~ N(0, σ²)``, ``k = 1..n``:

    smoothgrad:     1/n Σ_k M(x + ε_k)
    smoothgrad_sq:  1/n Σ_k M(x + ε_k)²
    vargrad:        1/n Σ_k M(x + ε_k)² − (1/n Σ_k M(x + ε_k))²

as Captum's ``NoiseTunnel`` (``nt_type``), which takes an absolute ``stdevs``; here ``noise`` is a fraction of
each image's range ``max − min`` (the paper's "noise level"), or ``stdevs`` gives σ directly. The target is
resolved on the clean image, so every noisy copy explains the same class. Each (image, sample) pair draws
its noise from its own PRNG key folded from ``seed`` (independent of ``batch_size``). The wrapped method runs
on at most ``batch_size`` noisy images at a time, in calls of equal size (the default: its own batching for
one image at a time), and only running sums are kept, so memory is bounded for any ``n``. The method's
options (``reduce=``, ``abs=``, ``layer=``…) pass through; the aggregation is of what it returns, as Captum's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import runtime
from ..errors import JaxvizError
from .methods import get_method

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def noise_tunnel(method: str | Callable, model, x, target: int | Sequence[int] | None = None, *,
                 kind: str = "smoothgrad", n: int = 20, noise: float = 0.15, stdevs: float | None = None,
                 seed: int = 0, batch_size: int | None = None, **options) -> jax.Array:
    """``method``'s map averaged over noisy copies of the images (SmoothGrad, SmoothGrad², VarGrad).

    Args:
      method: a method name (as :func:`jaxviz.explain`, e.g. ``"saliency"``) or a function with the common
        signature ``method(model, x, target, **options)``.
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class, on the clean image), a class index, or one per image.
      kind: ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean of squares) or ``"vargrad"`` (variance).
      n: noisy samples per image.
      noise: σ as a fraction of each image's range ``max − min`` (ignored when ``stdevs`` is given).
      stdevs: σ in input units, the same for every image (Captum's ``stdevs``).
      seed: PRNG seed (an int, or a ``jax.random.key``).
      batch_size: at most this many noisy images per call of ``method`` (calls of equal size); default ``N``
        (one noisy copy of each image a call).
      **options: passed to ``method`` (e.g. ``reduce=None``, ``layer=``).

    Returns:
      What ``method`` returns per image (``[N, H, W]``, or ``[N, H, W, 3]`` with ``reduce=None``), float32.
    """

    fn = get_method(method) if isinstance(method, str) else method
    if not callable(fn):
        raise JaxvizError(f"noise_tunnel needs a method name or function, got {method!r}")
    runtime.check_choice(kind, KINDS, "kind")
    runtime.check_model(model, "noise_tunnel")
    n = runtime.check_positive(n, "n")
    x = runtime.check_input(model, x)
    if stdevs is not None and not (np.isfinite(stdevs) and stdevs >= 0):
        raise JaxvizError(f"stdevs must be a finite number ≥ 0, got {stdevs!r}")
    if stdevs is None and not (np.isfinite(noise) and noise >= 0):
        raise JaxvizError(f"noise must be a finite number ≥ 0, got {noise!r}")
    targets = runtime.check_targets(model, target, x.shape[0])
    targets = runtime.resolve_on_clean_images(model, x, targets)  # each image's top class, on the clean image
    if stdevs is not None:
        sigma = jnp.full((x.shape[0],), stdevs, jnp.float32)
    else:
        sigma = jnp.float32(noise) * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    keys = runtime.fold_keys(seed, x.shape[0], n)  # [N, n]
    per_call = max(1, (batch_size or x.shape[0]) // x.shape[0])  # samples per call of the method
    # Balanced calls: 10 samples at 8 a call run as 2 calls of 5 (10 maps), not 8 + 8 with 6 thrown away.
    per_call = -(-n // -(-n // min(per_call, n)))
    tiled = np.tile(np.asarray(targets), per_call)
    total = total_sq = None
    for start in range(0, n, per_call):
        c = min(per_call, n - start)
        ks = keys[:, start:start + per_call]
        if c < per_call:  # the last call: padded to the same shape (no new compilation), extra maps dropped
            ks = jnp.concatenate([ks, keys[:, :per_call - c]], axis=1)
        xs = _noisy(x, sigma, ks)  # [per_call·N, H, W, C], sample-major
        maps = jnp.asarray(fn(model, xs, tiled, **options), jnp.float32)
        maps = maps.reshape(per_call, x.shape[0], *maps.shape[1:])[:c]
        total, total_sq = _accumulate(total, total_sq, maps)
    return _aggregate(total, total_sq, jnp.float32(n), kind)


def noise_tunnel_from_samples(method: str | Callable, model, xs, target, kind: str = "smoothgrad",
                              **options) -> jax.Array:
    """The aggregation of :func:`noise_tunnel` over given noisy images ``xs`` ``[n, N, H, W, C]``
    (``target``: resolved classes, one per image or one for all). For tests against other implementations'
    noise, and for noise of another distribution."""

    fn = get_method(method) if isinstance(method, str) else method
    runtime.check_choice(kind, KINDS, "kind")
    xs = jnp.asarray(xs, jnp.float32)
    n, b = xs.shape[:2]
    targets = runtime.check_targets(model, target, b)
    maps = jnp.asarray(fn(model, xs.reshape(n * b, *xs.shape[2:]), jnp.tile(targets, n), **options), jnp.float32)
    maps = maps.reshape(n, b, *maps.shape[1:])
    total, total_sq = _accumulate(None, None, maps)
    return _aggregate(total, total_sq, jnp.float32(n), kind)


@jax.jit
def _noisy(x, sigma, keys):
    eps = jax.vmap(jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype)))(keys)  # [N, c, …]
    xs = x[:, None] + sigma[:, None, None, None, None] * eps
    return jnp.swapaxes(xs, 0, 1).reshape(-1, *x.shape[1:])


@jax.jit
def _accumulate(total, total_sq, maps):
    s, s2 = maps.sum(0), (maps * maps).sum(0)
    if total is None:
        return s, s2
    return total + s, total_sq + s2


def _aggregate(total, total_sq, n, kind):
    mean = total / n
    if kind == "smoothgrad":
        return mean
    if kind == "smoothgrad_sq":
        return total_sq / n
    return total_sq / n - mean * mean
