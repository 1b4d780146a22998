"""Arrays into pictures: image grids and coloured feature maps (numpy in, uint8 arrays out; no figures)."""

from __future__ import annotations

import matplotlib
import numpy as np

from ..errors import JaxvizError

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


def grid_position(k: int, n: int, cols: int, order: str = "rows") -> tuple[int, int]:
    """Row and column of image ``k`` of ``n`` in a ``cols``-column grid filled in ``order`` (:data:`GRID_ORDERS`)."""
    rows = int(np.ceil(n / cols))
    return divmod(k, cols) if order == "rows" else (k % rows, k // rows)


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
