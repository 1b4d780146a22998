"""The pointing game: does the map's maximum fall on the object?

Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, "Top-down Neural Attention by Excitation Backprop", ECCV 2016,
arXiv:1608.00507 (section 5.1).

A hit is a map whose maximum lies closer than ``tolerance`` pixels (15 in the paper) to the ground-truth
region — a box or a boolean mask. Closer means strictly: distance < ``tolerance``, as TorchRay's
``PointingGame`` (the benchmark's reference code) counts it, so a point exactly ``tolerance`` pixels away
misses and ``tolerance=0`` never hits. With several equal maxima, the first in row-major order is used.
"""

from __future__ import annotations

import numpy as np

from ..errors import JaxvizError


def max_point(m: np.ndarray, size: tuple[int, int] | None = None) -> tuple[float, float]:
    """``(row, col)`` of the map's maximum, in the coordinates of an image of ``size`` (H, W) if given."""
    m = np.asarray(m)
    i, j = np.unravel_index(int(np.argmax(m)), m.shape)
    if size is None or tuple(size) == m.shape:
        return float(i), float(j)
    h, w = m.shape
    return (i + 0.5) * size[0] / h - 0.5, (j + 0.5) * size[1] / w - 0.5


def pointing_game(maps, regions, tolerance: float = 15.0, size: tuple[int, int] | None = None) -> np.ndarray:
    """Pointing-game hits, one per map.

    Args:
      maps: ``[N, h, w]`` attribution maps.
      regions: per image, a box ``(x0, y0, x1, y1)`` (pixels, ``x`` = column, end exclusive) or a boolean
        mask ``[H, W]``; ``[N, 4]`` or ``[N, H, W]`` arrays work too.
      tolerance: the maximum counts if its distance (pixels, Euclidean) to the region is below this.
      size: ``(H, W)`` of the image the regions refer to, when the maps are smaller (e.g. Grad-CAM's
        14×14); the maximum's position is scaled to it. Default: the maps' own size.

    Returns:
      ``[N]`` bool.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise JaxvizError(f"expected maps [N, h, w], got shape {maps.shape}")
    if not np.all(np.isfinite(maps)):
        bad = int(np.size(maps) - np.isfinite(maps).sum())
        raise JaxvizError(f"the maps hold {bad} NaN/inf values: a non-finite map has no maximum to point with; "
                          "check the method's inputs (np.isfinite)")
    if len(regions) != len(maps):
        raise JaxvizError(f"got {len(regions)} regions for {len(maps)} maps; give one box or mask per image")
    hits = []
    for m, region in zip(maps, regions):
        r, c = max_point(m, size)
        region = np.asarray(region)
        if region.shape == (4,):
            x0, y0, x1, y1 = region.astype(np.float64)
            dy = max(y0 - r, 0.0, r - (y1 - 1))
            dx = max(x0 - c, 0.0, c - (x1 - 1))
            hits.append(bool(dy * dy + dx * dx < tolerance * tolerance))
        elif region.ndim == 2:
            ys, xs = np.nonzero(region)
            hits.append(bool(len(ys)) and bool(np.min((ys - r) ** 2 + (xs - c) ** 2) < tolerance * tolerance))
        else:
            raise JaxvizError(f"a region must be a box (x0, y0, x1, y1) or a mask [H, W], got shape {region.shape}")
    return np.asarray(hits, bool)


def parse_box(spec: str) -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` → a box (the CLI's ``--box``)."""
    try:
        x0, y0, x1, y1 = (int(float(v)) for v in spec.split(","))
    except ValueError:
        raise JaxvizError(f"cannot read box {spec!r}; use x0,y0,x1,y1 in pixels, e.g. 40,30,180,200") from None
    if x1 <= x0 or y1 <= y0:
        raise JaxvizError(f"empty box {spec!r}: need x0 < x1 and y0 < y1")
    return x0, y0, x1, y1
