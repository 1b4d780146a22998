"""Panels shared by the CLI and the figure set: arrays in, titled matplotlib figures out (no file I/O).

One place draws each kind of panel, so ``jaxviz deepvis``/``jaxviz gradcam``/``jaxviz explain`` and
``jaxviz figures`` show the same thing the same way; how an attribution map is shown (its positive part or
its magnitude) is each method's own declaration (:data:`jaxviz.attribution.methods.SIGNED`).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np

from ..images import overlay
from ..visualize.deepvis import class_title
from .grids import colourise


def titled_panel(images: Sequence[np.ndarray], titles: Sequence[str], cols: int | None = None,
                 size: float = 3.0, suptitle: str | None = None):
    """A matplotlib figure showing ``images`` side by side with a title each (axes off)."""
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # here, not at the top: pyplot picks a process-wide backend on import

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


def prob_text(p: float) -> str:
    """A probability for a title: 3 decimals, or scientific notation where that would print 0.000."""
    return f"{p:.3f}" if p >= 0.0005 or p == 0 else f"{p:.1e}"


def deepvis_panel(model, images: Sequence[np.ndarray], classes: Sequence[int]):
    """DeepVis class images side by side, each titled with its class name and index."""
    n = len(images)
    return titled_panel(list(images), [f"{class_title(model, c)} ({c})" for c in classes],
                        cols=n if n <= 5 else -(-n // 2), size=3.0 if n <= 5 else 2.0)


def gradcam_heatmap(heat: np.ndarray, input_size) -> np.ndarray:
    """A Grad-CAM map at its layer's resolution, enlarged by whole pixels towards the input size (a side, or
    ``(height, width)``), coloured."""
    h, w = (input_size, input_size) if np.ndim(input_size) == 0 else input_size
    scale = max(1, min(int(h) // heat.shape[0], int(w) // heat.shape[1]))
    return colourise(heat.repeat(scale, 0).repeat(scale, 1), "jet")


def gradcam_panel(model, photo: np.ndarray, maps: np.ndarray, classes: Sequence[int], probs: np.ndarray,
                  logits: np.ndarray, title: str):
    """Grad-CAM overlays of several classes of one image, each titled with rank, class, probability and logit.

    Args:
      photo: the image to draw on (RGB); maps: ``[K, h, w]``; classes: ``[K]``; probs, logits: ``[classes]``.
    """
    titles = [f"#{r} {class_title(model, int(c))} ({int(c)})\np = {prob_text(probs[c])}, logit {logits[c]:.2f}"
              for r, c in enumerate(classes, 1)]
    fig = titled_panel([overlay(photo, m) for m in maps], titles, suptitle=title)
    fig.tight_layout(rect=(0, 0, 1, 0.94))  # panel titles clear of the suptitle on square images
    return fig


def gradcam_images(model, photo: np.ndarray, report, i: int, title: str):
    """Image ``i`` of a :class:`jaxviz.attribution.gradcam.GradCAMReport` as a Grad-CAM figure set draws it:
    the explained class's heatmap (coloured, at its layer's resolution enlarged towards the model's input),
    that heatmap over ``photo``, and the top-K panel titled ``title``. Returns ``(heatmap, overlay, figure)``."""
    heat = np.asarray(report.heatmaps[i])
    panel = gradcam_panel(model, photo, np.asarray(report.maps[i]), np.asarray(report.classes[i]),
                          np.asarray(report.probs[i]), np.asarray(report.logits[i]), title)
    return gradcam_heatmap(heat, model.input_hw), overlay(photo, heat), panel


def display_photo(photo, min_side: int = 256) -> np.ndarray:
    """A small photo (the demo's 64 px scenes) enlarged by an integer factor, nearest neighbour, to at least
    ``min_side`` px, so that overlays are drawn with a smooth heatmap over crisp pixels; larger photos as is."""
    photo = np.asarray(photo)
    k = -(-min_side // max(1, min(photo.shape[:2])))
    return photo.repeat(k, 0).repeat(k, 1) if k > 1 else photo


def display_map(m, signed: bool) -> np.ndarray:
    """An attribution map ``[H, W]`` → [0, 1] for display: its positive part for a ``signed`` method (negative
    = evidence against the class), else its magnitude; scaled by the 99.5th percentile so that a few extreme
    pixels do not wash the rest out."""
    m = np.asarray(m, np.float64)
    m = np.maximum(m, 0) if signed else np.abs(m)
    top = np.percentile(m, 99.5)
    if top <= 0:
        top = m.max()
    return np.clip(m / top, 0, 1) if top > 0 else np.zeros_like(m)
