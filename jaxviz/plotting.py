"""Turning arrays into pictures: grids of feature maps, patterns and kernels, and titled panels.

Pure numpy + matplotlib (Agg); every writer goes through :func:`jaxviz.images.save_png` or
:func:`save_figure`, both atomic (temporary file, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_open

#: Orders :func:`image_grid` fills a grid in: ``"columns"`` = image ``i + R·j`` at row ``i``, column ``j``
#: (column-major: the book's listing 5.39, whose loop puts filter ``i + 8·j`` at row ``i``, column ``j``);
#: ``"rows"`` = image ``C·i + j`` there (row-major: the book's feature-map grids, listing 5.30).
GRID_ORDERS = ("columns", "rows")


def image_grid(images, cols: int | None = None, margin: int = 5, fill: float = 0, order: str = "rows") -> np.ndarray:
    """Tiles ``[N, h, w(, C)]`` images into one ``[R·h + (R-1)·m, C·w + (C-1)·m(, C)]`` array.

    ``margin`` pixels between the images and none around the edge, ``R = ceil(N / C)`` rows. ``order``
    (:data:`GRID_ORDERS`): ``"rows"`` fills rows first (row-major, the default here; the book's feature-map
    grids), ``"columns"`` fills columns first — the book's filter-pattern grid (listing 5.39, ``margin=5``,
    black ``fill``) puts filter ``i + 8·j`` at row ``i``, column ``j``.
    """
    if order not in GRID_ORDERS:
        from .errors import JaxvizError

        raise JaxvizError(f"unknown grid order {order!r}; use one of: {', '.join(GRID_ORDERS)}")
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full((rows * h + (rows - 1) * margin, cols * w + (cols - 1) * margin, *images.shape[3:]),
                  fill, images.dtype)
    for k in range(n):
        r, c = divmod(k, cols) if order == "rows" else (k % rows, k // rows)
        out[r * (h + margin): r * (h + margin) + h, c * (w + margin): c * (w + margin) + w] = images[k]
    return out


def normalise_channel_maps(maps) -> np.ndarray:
    """Feature maps ``[h, w, C]`` → uint8 ``[C, h, w]``, each channel standardised as in listing 5.30.

    ``(a - mean) / std * 64 + 128`` clipped to 0..255; a constant channel (e.g. a dead ReLU) comes out
    as flat 128 gray instead of NaN.
    """
    maps = np.asarray(maps, np.float64)
    a = np.moveaxis(maps, -1, 0)
    mean = a.mean(axis=(1, 2), keepdims=True)
    std = a.std(axis=(1, 2), keepdims=True)
    a = (a - mean) / np.where(std > 0, std, 1.0) * 64 + 128
    return np.clip(a, 0, 255).astype(np.uint8)


def colourise(gray, cmap: str = "viridis") -> np.ndarray:
    """uint8 or [0, 1] float ``[..., h, w]`` → uint8 RGB ``[..., h, w, 3]`` through a matplotlib colormap."""
    import matplotlib

    gray = np.asarray(gray)
    unit = gray / 255.0 if gray.dtype == np.uint8 else np.clip(gray, 0, 1)
    return (matplotlib.colormaps[cmap](unit)[..., :3] * 255).round().astype(np.uint8)


def feature_map_grid(maps, count: int = 64, cols: int = 8, cmap: str = "viridis", scale: int = 1,
                     margin: int = 1) -> np.ndarray:
    """The first ``count`` channels of one image's feature maps ``[h, w, C]`` as an RGB grid (8 per row)."""
    gray = normalise_channel_maps(maps)[:count]
    if scale > 1:
        gray = gray.repeat(scale, axis=1).repeat(scale, axis=2)
    return image_grid(colourise(gray, cmap), cols=min(cols, len(gray)), margin=margin, fill=255)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Saves a matplotlib figure atomically (temporary file in the same folder, then rename)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_open(path) as f:
            fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def titled_panel(images: Sequence[np.ndarray], titles: Sequence[str], cols: int | None = None,
                 size: float = 3.0, suptitle: str | None = None):
    """A matplotlib figure showing ``images`` side by side with a title each (axes off)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(images)
    cols = cols or n
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        if np.ndim(img) == 3 and np.shape(img)[-1] == 1:  # a grayscale model's image
            ax.imshow(np.asarray(img)[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(img, cmap=None if np.ndim(img) == 3 else "viridis")
        ax.set_title(title, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    # tight_layout places the axes and their titles only: keep the top strip free for the suptitle
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()) if suptitle else None)
    return fig


def grid_position(k: int, n: int, cols: int, order: str = "rows") -> tuple[int, int]:
    """Row and column of image ``k`` of ``n`` in a ``cols``-column grid filled in ``order`` (:data:`GRID_ORDERS`)."""
    rows = int(np.ceil(n / cols))
    return divmod(k, cols) if order == "rows" else (k % rows, k // rows)


def labelled_grid(images: Sequence[np.ndarray], labels: Sequence[str], title: str, cols: int = 8,
                  order: str = "rows", cell: float = 1.1, cmap: str | None = None, vmax: float | None = None,
                  colorbar: str | None = None, note: str | None = None):
    """A grid of images, each with its label underneath, a title on top, optionally a colour bar.

    For figures that must make sense on their own: which layer, which filters or channels, what the
    colours mean. ``images`` are RGB ``[h, w, 3]`` or 2-D (drawn with ``cmap``, from 0 to ``vmax``);
    ``order`` places image ``k`` as :func:`image_grid` does (``"columns"``: the book's pattern grid).
    Returns a matplotlib figure (save it with :func:`save_figure`).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

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
