"""Panels shared by the CLI and the figure set: arrays in, labelled matplotlib figures out (no file I/O).

One place draws each kind of panel, so ``jaxviz deepvis``/``jaxviz gradcam`` and ``jaxviz figures`` show the
same thing the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def prob_text(p: float) -> str:
    """A probability for a title: 3 decimals, or scientific notation where that would print 0.000."""
    return f"{p:.3f}" if p >= 0.0005 or p == 0 else f"{p:.1e}"


def deepvis_panel(model, images: Sequence[np.ndarray], classes: Sequence[int]):
    """DeepVis class images side by side, each titled with its class name and index."""
    from .plotting import titled_panel
    from .visualize.deepvis import class_title

    n = len(images)
    return titled_panel(list(images), [f"{class_title(model, c)} ({c})" for c in classes],
                        cols=n if n <= 5 else -(-n // 2), size=3.0 if n <= 5 else 2.0)


def gradcam_heatmap(heat: np.ndarray, input_size) -> np.ndarray:
    """A Grad-CAM map at its layer's resolution, enlarged by whole pixels towards the input size (a side, or
    ``(height, width)``), coloured."""
    from .plotting import colourise

    h, w = (input_size, input_size) if np.ndim(input_size) == 0 else input_size
    scale = max(1, min(int(h) // heat.shape[0], int(w) // heat.shape[1]))
    return colourise(heat.repeat(scale, 0).repeat(scale, 1), "jet")


def gradcam_panel(model, photo: np.ndarray, maps: np.ndarray, classes: Sequence[int], probs: np.ndarray,
                  logits: np.ndarray, title: str):
    """Grad-CAM overlays of several classes of one image, each titled with rank, class, probability and logit.

    Args:
      photo: the image to draw on (RGB); maps: ``[K, h, w]``; classes: ``[K]``; probs, logits: ``[classes]``.
    """
    from .images import overlay
    from .plotting import titled_panel
    from .visualize.deepvis import class_title

    titles = [f"#{r} {class_title(model, int(c))} ({int(c)})\np = {prob_text(probs[c])}, logit {logits[c]:.2f}"
              for r, c in enumerate(classes, 1)]
    fig = titled_panel([overlay(photo, m) for m in maps], titles, suptitle=title)
    fig.tight_layout(rect=(0, 0, 1, 0.94))  # panel titles clear of the suptitle on square images
    return fig
