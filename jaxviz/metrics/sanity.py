"""Model-randomisation sanity check: does the map change when the weights it explains are destroyed?

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity Checks for Saliency Maps", NeurIPS 2018,
arXiv:1810.03292 (section 3).

Cascading randomisation re-initialises the weighted layers from the top (``predictions``) down, one more
layer at a time, and recomputes the map for the same class after each; ``mode="independent"`` randomises
one layer at a time instead. Each layer's kernel is redrawn He-normal (as
:func:`jaxviz.frontends.vgg.random_params`) and its bias set to zero. A map that stays similar to the original as the
network is destroyed explains the input more than the model. Similarity, per image:

- Spearman rank correlation of the raw maps (``spearman``) and of their absolute values (``spearman_abs``),
  with average ranks for ties (``nan`` when a map is constant);
- SSIM (Wang et al. 2004: 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, over the valid region) of
  the maps' absolute values scaled to [0, 1].

The method is called with ``params=`` the randomised weights, so its compiled program is reused at every
step; the target is fixed to the original model's classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from .. import runtime
from ..attribution.methods import get_method
from ..errors import JaxvizError
from ..render import save_figure


@dataclasses.dataclass
class SanityResult:
    """The outcome of :func:`model_randomisation`.

    layers: the randomised layer at each step (cascading: it and every layer above it).
    spearman, spearman_abs, ssim: ``[L, N]`` similarity to the original map after each step.
    maps: ``[L + 1, N, H, W]`` the original map, then the map after each step.
    targets: ``[N]`` the classes explained.
    method: the method's name.
    mode: "cascading" or "independent".
    """

    layers: list[str]
    spearman: np.ndarray
    spearman_abs: np.ndarray
    ssim: np.ndarray
    maps: np.ndarray
    targets: np.ndarray
    method: str
    mode: str


def rankdata(a) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties sharing their average rank (scipy's ``rankdata(method="average")``)."""
    a = np.asarray(a).ravel()
    n = a.size
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(first) - 1
    starts = np.r_[np.nonzero(first)[0], n]
    avg = 0.5 * (starts[:-1] + starts[1:] - 1) + 1
    ranks = np.empty(n, np.float64)
    ranks[order] = avg[group]
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation of two maps (``nan`` if either is constant)."""
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def _unit(m) -> np.ndarray:
    m = np.abs(np.asarray(m, np.float64))
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def ssim(a, b, sigma: float = 1.5, size: int = 11, data_range: float = 1.0) -> float:
    """Mean structural similarity of two ``[H, W]`` images (Gaussian window, valid region)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    size = min(size, *a.shape) | 1  # odd, and no larger than the image
    if size > min(a.shape):
        size -= 2
    k = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    k /= k.sum()

    def filt(img):
        rows = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, img)
        return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, rows)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    va = filt(a * a) - mu_a**2
    vb = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(s.mean())


def weighted_layers_top_down(model) -> list[str]:
    """The model's layers that have weights, from the output down (``predictions``, ``fc2``, …)."""
    return [name for name in reversed(model.layer_names) if model.params.get(name)]


#: Weights a fresh layer holds at one: a normalisation's scale and variance (Keras's names, and Flax's).
_ONE_AT_INIT = ("gamma", "moving_variance", "scale", "var")


def randomise(params: dict, layers: Sequence[str], seed: int = 0) -> dict:
    """A copy of ``params`` with each of ``layers`` re-initialised as Keras initialises it: He-normal kernels
    (every ``*kernel``: a separable conv's two, too), ones for a normalisation's ``gamma`` and
    ``moving_variance`` (Flax: ``scale``, ``var``), zeros for the rest (biases, ``beta``, ``moving_mean``,
    PReLU's ``alpha``).

    Layer ``i`` of ``layers`` draws from numpy's PCG64 seeded with ``(seed, i)``, its kernels in the order of
    its params, so a layer gets the same new weights at every step of a cascade, and no program is compiled
    for the draws.
    """
    out = dict(params)
    for i, name in enumerate(layers):
        rng = np.random.default_rng([seed, i])
        new = {}
        for key, value in params[name].items():
            if key.endswith("kernel"):
                fan_in = int(np.prod(value.shape[:-1]))
                draw = rng.standard_normal(value.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
                new[key] = jnp.asarray(draw)
            else:
                new[key] = (jnp.ones_like if key in _ONE_AT_INIT else jnp.zeros_like)(value)
        out[name] = new
    return out


def _method(method) -> tuple[str, Callable]:
    if callable(method):
        return getattr(method, "__name__", "method"), method

    return method, get_method(method)


def model_randomisation(model, x, method: str | Callable = "saliency", target=None, *,
                        layers: Sequence[str] | None = None, checkpoints: Sequence[str] | None = None,
                        mode: str = "cascading", seed: int = 0, **options) -> SanityResult:
    """Adebayo et al.'s model-parameter randomisation test.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      method: a method name (see :data:`jaxviz.attribution.methods.METHODS`) or a callable with the common
        signature that accepts ``params=``.
      target: the class explained; ``None`` = each image's top class under the ORIGINAL weights.
      layers: layers to randomise, in order; default every weighted layer from the top down.
      checkpoints: with cascading randomisation, compute the map only after these layers (default: all).
      mode: ``"cascading"`` or ``"independent"``.
      seed: PRNG seed for the new weights.
      **options: passed to the method (e.g. ``steps=`` for integrated gradients).

    Returns:
      :class:`SanityResult`.
    """
    if mode not in ("cascading", "independent"):
        raise JaxvizError(f"unknown mode {mode!r}; use 'cascading' or 'independent'")
    name, fn = _method(method)
    layers = list(layers) if layers is not None else weighted_layers_top_down(model)
    bad = [n for n in layers if n not in model.params]
    if bad:
        raise JaxvizError(f"layer {bad[0]!r} has no weights to randomise; choose from: "
                          f"{', '.join(weighted_layers_top_down(model))}")
    report = set(layers if checkpoints is None else checkpoints)
    if not report <= set(layers):
        raise JaxvizError(f"checkpoints {sorted(report - set(layers))} are not among the randomised layers")
    if target is None:

        target = np.asarray(runtime.logits(model, x)).argmax(-1)
    original = np.asarray(fn(model, x, target, **options))
    steps, maps = [], [original]
    for i, layer in enumerate(layers):
        if layer not in report:
            continue
        chosen = layers[: i + 1] if mode == "cascading" else [layer]
        params = randomise(model.params, chosen, seed)  # same draws per layer: cascading steps nest
        maps.append(np.asarray(fn(model, x, target, params=params, **options)))
        steps.append(layer)
    maps = np.stack(maps)
    if maps.ndim != 4:
        raise JaxvizError(f"the sanity check needs channel-reduced maps [N, H, W]; {name} gave {maps.shape[1:]}")
    rho = np.array([[spearman(original[j], m[j]) for j in range(len(original))] for m in maps[1:]])
    rho_abs = np.array([[spearman(np.abs(original[j]), np.abs(m[j])) for j in range(len(original))]
                        for m in maps[1:]])
    sim = np.array([[ssim(_unit(original[j]), _unit(m[j])) for j in range(len(original))] for m in maps[1:]])
    empty = np.zeros((0, len(original)))
    return SanityResult(steps, rho if steps else empty, rho_abs if steps else empty, sim if steps else empty,
                        maps, np.asarray(target).reshape(-1), name, mode)


def plot_sanity(result: SanityResult, path=None, image: int = 0):
    """Similarity vs randomised layer (mean over images), above the maps of one image at each step.

    Returns the matplotlib figure, or saves it to ``path`` (atomically) and returns the path.
    """
    import matplotlib  # here, not at the top: pyplot below picks a process-wide backend on import

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n_maps = len(result.maps)
    fig = plt.figure(figsize=(max(6.0, 1.3 * n_maps), 5.2))
    grid = fig.add_gridspec(2, n_maps, height_ratios=(2.2, 1))
    ax = fig.add_subplot(grid[0, :])
    xs = np.arange(1, len(result.layers) + 1)
    for label, values in (("Spearman", result.spearman), ("Spearman |map|", result.spearman_abs),
                          ("SSIM", result.ssim)):
        finite = np.isfinite(values)
        means = np.where(finite, values, 0).sum(1) / np.maximum(finite.sum(1), 1)
        means[~finite.any(1)] = np.nan
        ax.plot(np.r_[0, xs], np.r_[1.0, means], marker="o", label=label)
    ax.set_xticks(np.r_[0, xs])
    ax.set_xticklabels(["original", *result.layers], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_ylabel("similarity to original")
    ax.set_title(f"{result.method}: {result.mode} randomisation (Adebayo et al. 2018)")
    ax.legend(fontsize=8)
    for i in range(n_maps):
        a = fig.add_subplot(grid[1, i])
        a.imshow(_unit(result.maps[i, image]), cmap="viridis")
        a.set_title("original" if i == 0 else result.layers[i - 1], fontsize=7)
        a.axis("off")
    fig.tight_layout()
    if path is None:
        return fig

    return save_figure(fig, path)
