"""LIME for images: a weighted linear surrogate over superpixels switched on and off.

Ribeiro, Singh & Guestrin, "'Why Should I Trust You?': Explaining the Predictions of Any Classifier",
KDD 2016, arXiv:1602.04938.

1. The image is cut into superpixels (:func:`segment`): by default a small numpy SLIC (Achanta et al.
   2012; no scikit-image needed), or a regular grid, or — where scikit-image is installed — ``lime``'s own
   default, ``"quickshift"``. Note the difference: the ``lime`` package segments with scikit-image's
   quickshift (``kernel_size=4, max_dist=200, ratio=0.2``) on the image converted to CIELAB, while
   jaxviz's SLIC clusters in RGB and measures ``compactness`` against RGB distances (0–255 units; 20 by
   default), not scikit-image SLIC's Lab units. Maps from ``segments="slic"`` are therefore built on other
   superpixels than ``lime``'s; ``segments="quickshift"`` uses the same ones.
2. ``n_samples`` binary vectors ``z`` switch superpixels on or off (each with probability ½; the first
   sample keeps them all, as the ``lime`` package does). Switched-off superpixels are filled with their
   own mean colour (``fill="mean"``, ``lime``'s default) or a constant.
3. Each sample is weighted by ``sqrt(exp(−d² / width²))``, ``d`` the cosine distance between ``z`` and the
   all-on vector (``lime``'s kernel, width 0.25).
4. A weighted ridge regression (with intercept, ``alpha=1`` as scikit-learn's ``Ridge``) of the class
   score on ``z`` gives one coefficient per superpixel; the map paints each superpixel with its
   coefficient.

Reproducible: every (image, sample) pair draws from its own PRNG key folded from ``seed``. All perturbed
images are evaluated ``batch_size`` at a time inside one compiled program.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import runtime
from ..errors import JaxvizError
from ..images import undo_preprocess
from .scores import default_score

#: Display policy: the map's sign matters (negative = evidence against the class), so it is shown
#: as its positive part.
SIGNED = True

SEGMENTATIONS = ("slic", "grid", "quickshift")

#: ``lime``'s default segmentation: ``SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200,
#: ratio=0.2)`` (scikit-image's quickshift, which converts the RGB image to CIELAB first).
QUICKSHIFT = dict(kernel_size=4, max_dist=200, ratio=0.2)


# ---------------------------------------------------------------------------------------------------------
# Superpixels (numpy, outside the compiled program)


def grid_segments(h: int, w: int, n_segments: int) -> np.ndarray:
    """``[h, w]`` int32 labels of a regular grid of about ``n_segments`` rectangles."""
    rows = max(1, round(np.sqrt(n_segments * h / w)))
    cols = max(1, round(n_segments / rows))
    r = np.minimum(np.arange(h) * rows // h, rows - 1)
    c = np.minimum(np.arange(w) * cols // w, cols - 1)
    return (r[:, None] * cols + c[None, :]).astype(np.int32)


def slic(image: np.ndarray, n_segments: int = 50, compactness: float = 20.0, iterations: int = 10) -> np.ndarray:
    """SLIC-like superpixels of one ``[H, W, C]`` image: k-means on (colour, position) from a grid.

    Colour distance is Euclidean in the image's own units (RGB or model space: the same, since
    ``preprocess_input`` only shifts and permutes channels); position distance is scaled by
    ``compactness / S`` with ``S`` the grid interval, and each pixel only considers centres within ``2S``
    (Achanta et al.'s locality). Labels are renumbered 0..K−1 (empty clusters dropped). Connectivity is not
    enforced, so a superpixel may have a detached fragment.

    Returns:
      ``[H, W]`` int32 labels.
    """
    img = np.asarray(image, np.float64)
    h, w = img.shape[:2]
    step = np.sqrt(h * w / max(1, n_segments))
    ny, nx = max(1, round(h / step)), max(1, round(w / step))
    cy, cx = np.meshgrid((np.arange(ny) + 0.5) * h / ny, (np.arange(nx) + 0.5) * w / nx, indexing="ij")
    cy, cx = cy.ravel(), cx.ravel()
    colours = img[cy.astype(int), cx.astype(int)]
    yy, xx = np.mgrid[0:h, 0:w]
    pix_y, pix_x = yy.ravel().astype(np.float64), xx.ravel().astype(np.float64)
    pix_c = img.reshape(-1, img.shape[-1])
    scale = (compactness / step) ** 2
    labels = np.zeros(h * w, np.int64)
    for _ in range(iterations):
        dy = pix_y[:, None] - cy[None]
        dx = pix_x[:, None] - cx[None]
        d = ((pix_c[:, None, :] - colours[None]) ** 2).sum(-1) + scale * (dy * dy + dx * dx)
        d[(np.abs(dy) > 2 * step) | (np.abs(dx) > 2 * step)] = np.inf
        labels = np.argmin(d, axis=1)
        counts = np.bincount(labels, minlength=len(cy))
        keep = counts > 0
        for arr, vals in ((cy, pix_y), (cx, pix_x)):
            arr[keep] = (np.bincount(labels, vals, len(cy)) / np.maximum(counts, 1))[keep]
        for ch in range(colours.shape[1]):
            colours[keep, ch] = (np.bincount(labels, pix_c[:, ch], len(cy)) / np.maximum(counts, 1))[keep]
    _, labels = np.unique(labels, return_inverse=True)
    return labels.reshape(h, w).astype(np.int32)


def quickshift_segments(x) -> np.ndarray:
    """``lime``'s default superpixels for model-space images ``[N, H, W, 3]``: scikit-image's quickshift
    (:data:`QUICKSHIFT`) of each image's RGB pixels (uint8, the preprocessing undone) → ``[N, H, W]`` int32."""
    try:
        from skimage.segmentation import quickshift
    except ImportError:
        raise JaxvizError("segments='quickshift' (lime's default) needs scikit-image: pip install scikit-image; "
                          "or use segments='slic' or 'grid'") from None

    rgb = np.clip(np.rint(undo_preprocess(np.asarray(x, np.float32))), 0, 255).astype(np.uint8)
    return np.stack([quickshift(im, **QUICKSHIFT) for im in rgb]).astype(np.int32)


def segment(x, method: str = "slic", n_segments: int = 50, compactness: float = 20.0) -> np.ndarray:
    """Superpixel labels ``[N, H, W]`` int32 for a batch of model-space images ``[N, H, W, C]``.

    ``"slic"``: :func:`slic` (RGB distances); ``"grid"``: :func:`grid_segments`; ``"quickshift"``:
    :func:`quickshift_segments` (``lime``'s default; needs scikit-image; ``n_segments`` and
    ``compactness`` do not apply).
    """
    x = np.asarray(x)
    if method == "quickshift":
        return quickshift_segments(x)
    if method == "slic":
        return np.stack([slic(im, n_segments, compactness) for im in x])
    if method == "grid":
        return np.broadcast_to(grid_segments(x.shape[1], x.shape[2], n_segments), x.shape[:3]).copy()
    raise JaxvizError(f"unknown segmentation {method!r}; use one of: {', '.join(SEGMENTATIONS)}, or a label array")


# ---------------------------------------------------------------------------------------------------------
# The surrogate


def lime(model, x, target: int | Sequence[int] | None = None, *, n_samples: int = 1000,
         segments="slic", n_segments: int = 50, compactness: float = 20.0, fill="mean",
         kernel_width: float = 0.25, alpha: float = 1.0, seed: int = 0, batch_size: int | None = None,
         score: str | None = None, reduce: str | None = "sum", params=None) -> jax.Array:
    """Ribeiro et al.'s LIME with superpixel features.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      n_samples: perturbed images per image (``lime``'s ``num_samples``).
      segments: ``"slic"`` (default; jaxviz's numpy SLIC in RGB), ``"grid"``, ``"quickshift"`` (``lime``'s
        default segmentation, needs scikit-image) or an int label array ``[N, H, W]`` / ``[H, W]``.
      n_segments: about how many superpixels (for ``"slic"`` and ``"grid"``).
      compactness: SLIC's colour/position trade-off (larger = squarer superpixels), against colour
        distances in RGB units (0–255), not scikit-image SLIC's CIELAB units.
      fill: ``"mean"`` (each superpixel's mean colour) or a model-space value (0 = the mean colour).
      kernel_width: width of the exponential kernel on the cosine distance.
      alpha: ridge regularisation.
      seed: PRNG seed (an int, or a ``jax.random.key``).
      batch_size: perturbed images per model call (default: 16 on a CPU, more on an accelerator).
      score: ``"prob"`` (the default, as ``lime`` explains probabilities), ``"logit"`` or ``"log_prob"``;
        on the demo networks, whose softmax is saturated (the probability does not move), ``"logit"``
        (:func:`jaxviz.attribution.scores.default_score`).
      reduce: accepted for the common signature; the map has no channel axis (``None`` repeats it 3×).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32: each pixel holds its superpixel's surrogate coefficient.
    """

    score = default_score(model, score)
    score = runtime.check_score(model, score)
    x, targets, reduce, n_samples, batch_size = runtime.check_sampled_args(
        model, "lime", x, target, score, reduce, n_samples, "n_samples", batch_size, gradient=False)
    n = x.shape[0]
    if isinstance(segments, str):
        labels = segment(np.asarray(x), segments, runtime.check_positive(n_segments, "n_segments"), compactness)
    else:
        labels = np.broadcast_to(np.asarray(segments), x.shape[:3])
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise JaxvizError("segments must be non-negative integer labels [N, H, W] or [H, W]")
    # Renumber each image's labels 0..K_i−1 and pad all images to the same K (padded features stay off).
    dense = np.stack([np.unique(lab, return_inverse=True)[1].reshape(lab.shape) for lab in labels])
    counts = dense.reshape(n, -1).max(axis=1) + 1
    k = int(counts.max())
    valid = np.arange(k)[None, :] < counts[:, None]
    mean_fill = isinstance(fill, str)
    if mean_fill and fill != "mean":
        raise JaxvizError(f"fill must be 'mean' or a number, got {fill!r}")
    keys = runtime.fold_keys(seed, n, n_samples)
    chunk = runtime.per_chunk(batch_size, n)

    def build(fwd):
        def run(params, x, targets, labels, valid, keys, fill_value, kernel_width, alpha):
            logits = fwd(params, x, upto="logits")[0]
            t = runtime.resolve_targets(targets, logits)
            onehot = jax.nn.one_hot(labels, k, dtype=x.dtype)  # [N, H, W, K]
            if mean_fill:
                sums = jnp.einsum("nhwk,nhwc->nkc", onehot, x)
                means = sums / jnp.maximum(onehot.sum(axis=(1, 2)), 1)[..., None]
                filler = jnp.einsum("nhwk,nkc->nhwc", onehot, means)
            else:
                filler = jnp.full_like(x, fill_value)
            on = jax.vmap(jax.vmap(lambda key: jax.random.bernoulli(key, 0.5, (k,))))(keys)  # [N, S, K]
            z = (on.at[:, 0].set(True) & valid[:, None, :]).astype(x.dtype)

            def score_chunk(zc):  # [c, N, K] → [c, N]
                c = zc.shape[0]
                keep = jnp.einsum("nhwk,cnk->cnhw", onehot, zc)[..., None]
                xs = (keep * x[None] + (1 - keep) * filler[None]).reshape(-1, *x.shape[1:])
                return runtime.scores_of(fwd, params, xs, jnp.tile(t, c), score).reshape(c, -1)

            y = runtime.chunked_map(score_chunk, jnp.swapaxes(z, 0, 1), chunk).T  # [N, S]
            coef = jax.vmap(_weighted_ridge, in_axes=(0, 0, 0, None, None))(z, y, valid.astype(x.dtype),
                                                                          kernel_width, alpha)  # [N, K]
            m = jnp.einsum("nhwk,nk->nhw", onehot, coef)
            return m

        return run

    key = (k, bool(mean_fill), score, chunk)
    fn = runtime.compiled(model, "lime", key, build)
    m = fn(runtime.params_of(model, params), x, targets, jnp.asarray(dense, jnp.int32), jnp.asarray(valid),
              keys, jnp.float32(0.0 if mean_fill else fill), jnp.float32(kernel_width), jnp.float32(alpha))
    return runtime.finish_spatial(m, reduce, x.shape[-1])


def _weighted_ridge(z, y, valid, kernel_width, alpha):
    """Coefficients ``[K]`` of ``lime``'s weighted ridge fit of ``y [S]`` on ``z [S, K]`` (one image).

    Minimises ``Σ_s π_s (y_s − b − z_s·β)² + alpha·|β|²`` (scikit-learn's ``Ridge`` with
    ``sample_weight=π``): centre with the weighted means, then solve the normal equations.
    """
    dot = z @ valid
    norms = jnp.sqrt((z * z).sum(-1)) * jnp.sqrt(valid.sum())
    cos_dist = jnp.where(norms > 0, 1 - dot / jnp.where(norms > 0, norms, 1), 1.0)
    pi = jnp.sqrt(jnp.exp(-(cos_dist**2) / kernel_width**2))
    zc = z - (pi @ z) / pi.sum()
    yc = y - (pi @ y) / pi.sum()
    zw = zc * pi[:, None]
    eye = jnp.eye(z.shape[1], dtype=z.dtype)
    return jnp.linalg.solve(zw.T @ zc + alpha * eye, zw.T @ yc)
