"""Procedural scenes with one labelled object each and its ground-truth mask (numpy only, seeded).

Each scene is a cluttered background — a linear colour gradient, pixel noise, and small distractor blobs and
short line segments that belong to no class — with exactly one labelled object painted over it: one of six
solid shapes (disc, square, triangle, star, ring, cross) or one of four textured patches (horizontal
stripes, vertical stripes, checker, dots) in random colours, size, position and rotation. The object's
pixels are the ground-truth mask, which is what attribution maps are checked against (pointing game,
deletion/insertion on a known answer).

Rendering is vectorised over a chunk of scenes at a time (numpy array operations, not a loop per scene).

Example::

    images, labels, masks = make_scenes(500, size=64, seed=1)   # uint8 [500,64,64,3], int [500], bool
    CLASS_NAMES[labels[0]]
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "SHAPES", "TEXTURES", "make_scenes", "object_regions"]

#: Solid shapes: the class is the outline.
SHAPES = ("disc", "square", "triangle", "star", "ring", "cross")
#: Textured patches (a disc or square region of random size): the class is the fill pattern.
TEXTURES = ("horizontal_stripes", "vertical_stripes", "checker", "dots")
CLASS_NAMES: tuple[str, ...] = SHAPES + TEXTURES
NUM_CLASSES = len(CLASS_NAMES)

_CHUNK = 1024  # scenes rendered at once: bounds memory at ~[1024, S, S] float32 arrays
_MAX_DISTRACTORS = 8


def make_scenes(n: int, size: int = 64, seed: int | tuple[int, ...] = 0):
    """Renders ``n`` scenes, each with one labelled object over non-class clutter.

    Args:
      n: number of scenes.
      size: side length ``S`` in pixels (geometry scales with it; 64 is what the demo model uses).
      seed: an int or a tuple of ints (e.g. ``(seed, step)`` for per-step training batches). The same
        ``(n, size, seed)`` gives bit-identical output on every platform.

    Returns:
      ``(images, labels, masks)``: ``uint8 [N, S, S, 3]`` RGB, ``int64 [N]`` indices into
      :data:`CLASS_NAMES` (exactly balanced: each class appears ``n // 10`` or ``n // 10 + 1`` times, in
      random order), and ``bool [N, S, S]`` the labelled object's pixels.
    """
    if n < 0 or size < 16:
        raise ValueError(f"need n >= 0 and size >= 16, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int64)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        images[sl], masks[sl] = _render(rng, labels[sl], size)
    return images, labels, masks


def object_regions(masks: np.ndarray) -> np.ndarray:
    """The region each object occupies: its mask with enclosed holes filled (the inside of a ring).

    The pointing game asks whether a map's peak falls on the object; a ring's centre is on the ring in that
    sense even though its pixels show background (Grad-CAM on a ring peaks there).

    Args:
      masks: ``bool [N, S, S]`` from :func:`make_scenes`.

    Returns:
      ``bool [N, S, S]``: every pixel not reachable from the border without crossing the mask.
    """
    masks = np.asarray(masks, bool)
    outside = np.zeros_like(masks)
    outside[:, 0], outside[:, -1], outside[:, :, 0], outside[:, :, -1] = True, True, True, True
    outside &= ~masks
    while True:  # flood fill from the border through non-object pixels (4-connected)
        grown = outside.copy()
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown[:, :, 1:] |= outside[:, :, :-1]
        grown[:, :, :-1] |= outside[:, :, 1:]
        grown &= ~masks
        if np.array_equal(grown, outside):
            return ~outside
        outside = grown


# ---------------------------------------------------------------------------------------------------------
# Rendering


def _far_colour(rng, refs, k: int = 8):
    """Per scene, the one of ``k`` random colours farthest (min L2 distance) from every colour in ``refs``."""
    m = refs[0].shape[0]
    cand = rng.uniform(0, 255, (m, k, 3)).astype(np.float32)
    dist = np.min([np.linalg.norm(cand - r[:, None, :], axis=-1) for r in refs], axis=0)
    return cand[np.arange(m), dist.argmax(axis=1)]


def _rotated(dx, dy, theta, scale):
    """Coordinates ``[m, S, S]`` relative to a centre, rotated by ``theta`` and divided by ``scale`` (all [m])."""
    c = np.cos(theta)[:, None, None].astype(np.float32)
    s = np.sin(theta)[:, None, None].astype(np.float32)
    k = (1.0 / scale)[:, None, None].astype(np.float32)
    return (c * dx + s * dy) * k, (c * dy - s * dx) * k


def _shape_mask(name, u, v):
    """Inside test in the shape's unit frame (extent ≤ 1)."""
    if name == "disc":
        return u * u + v * v <= 1.0
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if name == "triangle":  # equilateral, vertices on the unit circle (inradius 0.5)
        inside = np.ones(u.shape, bool)
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            inside &= u * np.cos(a) + v * np.sin(a) <= 0.5
        return inside
    if name == "star":  # five points: radius ramps from 0.42 (between points) to 1 (tips)
        phase = (np.arctan2(v, u) * (5 / (2 * np.pi))) % 1.0
        tip = 1.0 - 2.0 * np.minimum(phase, 1.0 - phase)
        return np.sqrt(u * u + v * v) <= 0.42 + 0.58 * tip
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.28) & (av <= 1.0)) | ((av <= 0.28) & (au <= 1.0))
    raise ValueError(name)


def _pattern(name, px, py, period):
    """The texture's foreground in pixel units (``px``, ``py`` rotated by a small jitter), period ``[m,1,1]``."""
    if name == "horizontal_stripes":
        return (py / period) % 1.0 < 0.5
    if name == "vertical_stripes":
        return (px / period) % 1.0 < 0.5
    if name == "checker":
        return ((np.floor(px / period) + np.floor(py / period)) % 2) == 0
    if name == "dots":
        fx = (px / period) % 1.0 - 0.5
        fy = (py / period) % 1.0 - 0.5
        return fx * fx + fy * fy <= 0.3**2
    raise ValueError(name)


def _render(rng, labels, size):
    m = labels.shape[0]
    s = np.float32(size)
    sc = size / 64.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)  # pixel centres

    # Background: a linear gradient between two random colours.
    c0 = rng.uniform(0, 255, (m, 3)).astype(np.float32)
    c1 = rng.uniform(0, 255, (m, 3)).astype(np.float32)
    a = rng.uniform(0, 2 * np.pi, m)
    t = (np.cos(a)[:, None, None] * (xx - s / 2) + np.sin(a)[:, None, None] * (yy - s / 2)) / s + 0.5
    t = np.clip(t, 0, 1).astype(np.float32)
    img = c0[:, None, None, :] + (c1 - c0)[:, None, None, :] * t[..., None]

    # Distractors: small ellipses and short line segments, painted under the object. Each is rendered in a
    # small window around its centre and scattered into the image (16x less work than full-frame masks).
    n_dis = rng.integers(3, _MAX_DISTRACTORS + 1, m)
    win = int(np.ceil(8 * sc))
    wy, wx = np.mgrid[-win:win + 1, -win:win + 1]
    flat = img.reshape(-1, 3)
    for k in range(_MAX_DISTRACTORS):
        cx, cy = rng.integers(0, size, m), rng.integers(0, size, m)
        theta = rng.uniform(0, np.pi, m)
        is_line = rng.random(m) < 0.35
        ra = np.where(is_line, rng.uniform(3.0, 7.0, m), rng.uniform(1.5, 3.5, m)) * sc  # half-length
        rb = np.where(is_line, 0.75, rng.uniform(1.0, 3.0, m)) * sc  # half-width
        col = rng.uniform(0, 255, (m, 3)).astype(np.float32)
        u, v = _rotated(wx.astype(np.float32), wy.astype(np.float32), theta, np.ones(m))
        ra_, rb_ = ra[:, None, None], rb[:, None, None]
        ell = (u / ra_) ** 2 + (v / rb_) ** 2 <= 1.0
        seg = (np.abs(u) <= ra_) & (np.abs(v) <= rb_)
        py, px = cy[:, None, None] + wy, cx[:, None, None] + wx
        on = (np.where(is_line[:, None, None], seg, ell) & (k < n_dis)[:, None, None]
              & (py >= 0) & (py < size) & (px >= 0) & (px < size))
        n_i, y_i, x_i = np.nonzero(on)
        flat[(n_i * size + py[n_i, y_i, x_i]) * size + px[n_i, y_i, x_i]] = col[n_i]

    # The labelled object.
    is_tex = labels >= len(SHAPES)
    radius = np.where(is_tex, rng.uniform(11.0, 19.0, m), rng.uniform(10.0, 20.0, m)) * sc
    theta = rng.uniform(0, 2 * np.pi, m)
    square_patch = rng.random(m) < 0.5  # texture region: square or disc
    # Farthest extent from the centre in units of radius (rotated squares reach their corners), so that
    # every object lies fully inside the frame.
    extent = np.where(labels == CLASS_NAMES.index("square"), 0.8 * np.sqrt(2), 1.0)
    extent = np.where(is_tex & square_patch, 0.85 * np.sqrt(2), extent) * radius
    cx = rng.uniform(extent + 1, size - extent - 1)
    cy = rng.uniform(extent + 1, size - extent - 1)
    jitter = rng.uniform(-np.pi / 18, np.pi / 18, m)  # textures keep their orientation within ±10°
    period = np.where(labels == CLASS_NAMES.index("dots"), rng.uniform(5.5, 8.0, m),
                      rng.uniform(4.0, 7.0, m)) * sc
    phase_x, phase_y = rng.uniform(0, 8, m) * sc, rng.uniform(0, 8, m) * sc
    fg = _far_colour(rng, [c0, c1])
    bg = _far_colour(rng, [fg])

    mask = np.zeros((m, size, size), bool)
    pattern = np.ones((m, size, size), bool)
    dx = xx - cx[:, None, None].astype(np.float32)
    dy = yy - cy[:, None, None].astype(np.float32)
    for c, name in enumerate(CLASS_NAMES):
        idx = np.flatnonzero(labels == c)
        if idx.size == 0:
            continue
        u, v = _rotated(dx[idx], dy[idx], theta[idx], radius[idx])
        if name in SHAPES:
            mask[idx] = _shape_mask(name, u, v)
            continue
        region = np.where(square_patch[idx, None, None], np.maximum(np.abs(u), np.abs(v)) <= 0.85,
                          u * u + v * v <= 1.0)
        mask[idx] = region
        px, py = _rotated(dx[idx], dy[idx], jitter[idx], np.ones(idx.size))
        px = px + phase_x[idx, None, None].astype(np.float32)
        py = py + phase_y[idx, None, None].astype(np.float32)
        pattern[idx] = _pattern(name, px, py, period[idx, None, None].astype(np.float32))

    n_i, y_i, x_i = np.nonzero(mask)
    img[n_i, y_i, x_i] = np.where(pattern[n_i, y_i, x_i, None], fg[n_i], bg[n_i])

    # Pixel noise over everything.
    sigma = rng.uniform(2.0, 12.0, m).astype(np.float32)[:, None, None, None]
    img = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask
