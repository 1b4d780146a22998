"""Labelled figures that make sense on their own: grids with a label per cell, feature maps, kernels; and
:func:`save_figure`, the one writer of matplotlib figures (atomic: temporary file, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

from ..atomic import atomic_open
from .grids import grid_position


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Saves a matplotlib figure atomically (temporary file in the same folder, then rename)."""
    import matplotlib.pyplot as plt  # here, not at the top: pyplot picks a process-wide backend on import

    path = Path(path)
    try:
        with atomic_open(path) as f:
            fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def labelled_grid(images: Sequence[np.ndarray], labels: Sequence[str], title: str, cols: int = 8,
                  order: str = "rows", cell: float = 1.1, cmap: str | None = None, vmax: float | None = None,
                  colorbar: str | None = None, note: str | None = None):
    """A grid of images, each with its label underneath, a title on top, optionally a colour bar.

    For figures that must make sense on their own: which layer, which filters or channels, what the
    colours mean. ``images`` are RGB ``[h, w, 3]`` or 2-D (drawn with ``cmap``, from 0 to ``vmax``);
    ``order`` places image ``k`` as :func:`image_grid` does (``"columns"``: the book's pattern grid).
    Returns a matplotlib figure (save it with :func:`save_figure`).
    """
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # here, not at the top: pyplot picks a process-wide backend on import

    n = len(images)
    cols = max(1, min(cols, n))
    rows = int(np.ceil(n / cols))
    head = 0.5 + 0.18 * title.count("\n") + (0.3 if note else 0.0)
    foot = 0.45 if colorbar else 0.0
    h, w = np.shape(images[0])[:2]
    cell_h = cell * h / w + 0.22  # the image at the cell's width, and its label
    fig, axes = plt.subplots(rows, cols, figsize=(max(cell * cols, 4.5), cell_h * rows + head + foot),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    shown = None
    for k, (img, label) in enumerate(zip(images, labels)):
        r, c = grid_position(k, n, cols, order)
        ax = axes[r, c]
        img = np.asarray(img)
        if img.ndim == 2:
            shown = ax.imshow(img, cmap=cmap or "viridis", vmin=0, vmax=vmax, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(label, fontsize=7, pad=2)
    fig.suptitle(title, fontsize=10)
    top = 1 - head / fig.get_figheight()
    bottom = foot / fig.get_figheight()
    if note:
        fig.text(0.5, top + 0.25 / fig.get_figheight(), note, ha="center", va="center", fontsize=8, color="#444")
    fig.subplots_adjust(left=0.02, right=0.98, top=top, bottom=bottom + 0.01, wspace=0.08, hspace=0.35)
    if colorbar and shown is not None:
        cax = fig.add_axes((0.25, 0.3 * bottom, 0.5, 0.25 * bottom))
        bar = fig.colorbar(shown, cax=cax, orientation="horizontal")
        bar.set_label(colorbar, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return fig


def feature_map_figure(maps, title: str, count: int = 64, cols: int = 8):
    """One image's feature maps ``[h, w, C]`` as a labelled figure: the first ``count`` channels, each drawn
    from 0 (the ReLU's floor) to its own maximum, its index and maximum above it, and a colour bar."""
    a = np.asarray(maps)
    n = min(count, a.shape[-1])
    images, labels = [], []
    for c in range(n):
        m = a[..., c].astype(np.float64)
        top = float(m.max())
        images.append(m / top if top > 0 else np.zeros_like(m))
        labels.append(f"{c} · max {top:.3g}" if top > 0 else f"{c} · all 0")
    return labelled_grid(images, labels, title, cols=min(cols, n), cell=1.2, vmax=1.0,
                         colorbar="activation ÷ the map's own maximum (printed above each map)")


def draw_kernel_figures(k: np.ndarray, layer: str, model_name: str, order: str, input_channels: int = 3,
                   filters: int = 64, channels: int = 8) -> list:
    """A conv layer's kernels ``k [kh, kw, C_in, C_out]`` (in [0, 1] over the layer,
    :func:`jaxviz.visualize.kernels.kernels`) as labelled figures: a cell per filter (the kh×kw slices of its
    first ``channels`` input channels side by side, one gray scale for the whole layer) and, for a first
    layer on colour images (``C_in == input_channels == 3``), a second figure with each filter as a colour
    patch, its inputs in channel ``order`` (``"B, G, R"`` for Caffe's preprocessing, else RGB:
    :func:`jaxviz.visualize.kernels.channel_order`). Returns matplotlib figures."""
    kh, kw, c_all, c_out = k.shape
    nf = min(filters, c_out)
    c_in = min(channels, c_all)
    image_channels = c_all == input_channels and c_all in (1, 3)  # a first layer
    chans = order if image_channels else f"{c_in} of {c_all}"
    cells = []
    for f in range(nf):
        parts = []
        for c in range(c_in):
            parts += [k[:, :, c, f], np.full((kh, 1), np.nan)]
        cells.append(np.concatenate(parts[:-1], axis=1))
    title = (f"{layer} kernels of {model_name}: filters 0–{nf - 1} of {c_out}, each {kh}×{kw} per input "
             f"channel ({chans}, left to right)")
    cols = 8 if c_in <= 3 else max(2, 24 // c_in)  # about 1000–1600 px wide whatever the channel count
    figs = [labelled_grid(cells, [str(f) for f in range(nf)], title, cols=cols, cell=1.0 + 0.35 * c_in,
                          cmap="gray", vmax=1.0,
                          colorbar="weight, one scale for the layer (0 = its most negative, 1 = its most positive)")]
    if image_channels and c_all == 3:
        rgb = k[:, :, ::-1] if order == "B, G, R" else k  # input channels drawn as R, G, B whatever their order
        patches = np.clip(np.rint(np.transpose(rgb[..., :nf], (3, 0, 1, 2)) * 255), 0, 255)
        names = "blue, green, red" if order == "B, G, R" else "red, green, blue"
        figs.append(labelled_grid(list(patches.astype(np.uint8)), [str(f) for f in range(nf)],
                                  f"{layer} kernels of {model_name} as colour patches: filter f's {kh}×{kw} "
                                  f"weights on the\n{order} inputs drawn as {names} (one scale for the layer)",
                                  cols=8, cell=1.0))
    return figs
