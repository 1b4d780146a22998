"""RISE: the class score of randomly masked copies of the image, averaged per pixel over the masks that keep it.

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018,
arXiv:1806.07421.

Masks (section 3.2): a ``grid × grid`` binary grid, each cell 1 with probability ``p``, upsampled bilinearly
to ``(grid + 1) · cell`` (``cell = ⌈H / grid⌉``; mirrored at the edges, as the authors' ``generate_masks``)
and cropped to ``H × W`` at a random shift in ``[0, cell)²``, so the masks are smooth and not aligned to the
grid. With masks ``M_1..M_n`` (the same for
every image):

    S_ij = 1 / (n · p) · Σ_k f_t(x ⊙ M_k) · M_k,ij

``f_t`` is the class probability by default, as in the paper (``score="logit"`` for the logit). The masked
image is ``x ⊙ M + fill · (1 − M)`` (``fill=0``: for mean-subtracted inputs, the mean colour). Black-box:
forward passes only. Masks are drawn from PRNG keys folded from ``seed``, one per mask, and evaluated
``batch_size`` model inputs at a time inside one compiled program (masks generated there, per chunk), so
memory is bounded for any ``n``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import runtime
from ..errors import JaxvizError

#: Display policy: the map is shown as its magnitude (its sign carries no class evidence).
SIGNED = False


def rise(model, x, target: int | Sequence[int] | None = None, *, n: int = 1000, grid: int = 7, p: float = 0.5,
         fill: float = 0.0, seed: int = 0, batch_size: int | None = None, score: str = "prob",
         reduce: str | None = "sum", params=None) -> jax.Array:
    """Petsiuk et al.'s RISE.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class, on the clean image), a class index, or one per image.
      n: number of masks; default 1000 (as LIME's samples: one forward pass each);
        the paper uses 4000 for ResNet50 and 8000 for VGG16 on ImageNet.
      grid: mask grid size ``s`` (the paper: 7).
      p: probability that a grid cell is kept (the paper: 0.5).
      fill: value of masked-out pixels in the model's input space.
      seed: PRNG seed (an int, or a ``jax.random.key``).
      batch_size: model inputs (images × masks) per chunk; bounds memory.
      score: ``"prob"`` (default, the paper's), ``"logit"`` or ``"log_prob"``.
      reduce: accepted for the common signature; the map has no channel axis (``None`` repeats it 3×).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32.
    """
    score = runtime.check_score(model, score)
    x, targets, reduce, n, batch_size = runtime.check_sampled_args(
        model, "rise", x, target, score, reduce, n, "n", batch_size, gradient=False)
    grid = runtime.check_positive(grid, "grid")
    if not 0 < p <= 1:
        raise JaxvizError(f"p (the probability of keeping a grid cell) must be in (0, 1], got {p!r}")
    targets = runtime.resolve_on_clean_images(model, x, targets, params)
    keys = runtime.fold_keys(seed, 1, n)[0]  # [n]: one per mask, the same masks for every image
    chunk = runtime.per_chunk(batch_size, x.shape[0])
    size = tuple(x.shape[1:3])

    def build(fwd):
        def run(params, x, t, keys, p, fill):
            def chunk_terms(ks):  # [c] keys → [c, N, H, W] terms f_t(x ⊙ M) · M
                masks = jax.vmap(lambda k: _mask(k, size, grid, p))(ks)  # [c, H, W]
                return _masked_terms(fwd, params, x, t, masks, fill, score)

            return runtime.chunked_sum(chunk_terms, keys, chunk) / (keys.shape[0] * p)

        return run

    fn = runtime.compiled(model, "rise", (chunk, grid, score), build)
    out = fn(runtime.params_of(model, params), x, targets, keys, jnp.float32(p), jnp.float32(fill))
    return runtime.finish_spatial(out, reduce, x.shape[-1])


def rise_masks(n: int, size: tuple[int, int], grid: int = 7, p: float = 0.5, seed: int = 0) -> jax.Array:
    """The ``[n, H, W]`` masks :func:`rise` uses for ``seed`` (values in [0, 1], mean ≈ ``p``)."""
    keys = runtime.fold_keys(seed, 1, n)[0]
    return jax.vmap(lambda k: _mask(k, tuple(size), grid, jnp.float32(p)))(keys)


def rise_from_masks(model, x, target, masks, p: float, *, fill: float = 0.0, score: str = "prob",
                    params=None) -> jax.Array:
    """RISE with given masks ``[n, H, W]`` (``S = Σ_k f_t(x ⊙ M_k) M_k / (n p)``); for tests and own masks."""
    score = runtime.check_score(model, score)
    x = runtime.check_input(model, x)
    targets = runtime.check_targets(model, target, x.shape[0])
    masks = jnp.asarray(masks, jnp.float32)

    def build(fwd):
        def run(params, x, targets, masks, p, fill):
            t = runtime.resolve_targets(targets, fwd(params, x, upto="logits")[0])
            return _masked_terms(fwd, params, x, t, masks, fill, score).sum(0) / (masks.shape[0] * p)

        return run

    fn = runtime.compiled(model, "rise_masks", (score,), build)
    return fn(runtime.params_of(model, params), x, targets, masks, jnp.float32(p), jnp.float32(fill))


def _masked_terms(fwd, params, x, t, masks, fill, score):
    c = masks.shape[0]
    m = masks[:, None, :, :, None]  # [c, 1, H, W, 1]
    xs = (x[None] * m + fill * (1 - m)).reshape(-1, *x.shape[1:])
    s = runtime.class_score(fwd(params, xs, upto="logits")[0], jnp.tile(t, c), score).reshape(c, -1)  # [c, N]
    return s[:, :, None, None] * masks[:, None]


def _mask(key, size, grid, p):
    """One smooth mask ``[H, W]``: a ``grid²`` Bernoulli(p) grid, upsampled bilinearly, randomly shifted."""
    h, w = size
    ch, cw = math.ceil(h / grid), math.ceil(w / grid)
    kg, ky, kx = jax.random.split(key, 3)
    cells = jax.random.bernoulli(kg, p, (grid, grid)).astype(jnp.float32)
    up = _bilinear(grid, (grid + 1) * ch) @ cells @ _bilinear(grid, (grid + 1) * cw).T
    dy, dx = jax.random.randint(ky, (), 0, ch), jax.random.randint(kx, (), 0, cw)
    return jax.lax.dynamic_slice(up, (dy, dx), (h, w))


@functools.lru_cache(maxsize=64)
def _bilinear(n: int, out: int) -> np.ndarray:
    """``[out, n]`` weights of a bilinear upsampling with half-pixel centres, mirrored at the edges (cell −1
    is cell 1): the authors' ``skimage.transform.resize(order=1, mode="reflect")``. ``jax.image.resize``
    clamps at the edges instead, which leaves a flat border half a cell wide."""
    u = (np.arange(out) + 0.5) * n / out - 0.5
    i0 = np.floor(u).astype(int)
    f = u - i0

    def mirror(i):
        i = np.abs(i)
        return np.where(i > n - 1, 2 * (n - 1) - i, i) if n > 1 else np.zeros_like(i)

    weights = np.zeros((out, n), np.float32)
    np.add.at(weights, (np.arange(out), mirror(i0)), 1 - f)
    np.add.at(weights, (np.arange(out), mirror(i0 + 1)), f)
    return weights


__all__ = ["rise", "rise_from_masks", "rise_masks"]
