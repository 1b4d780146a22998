"""ImageNet-1k class names, and Keras-compatible decoding of VGG predictions.

The table in ``jaxviz/data/imagenet_class_index.json`` is byte-identical to the one Keras downloads for
`keras.applications.imagenet_utils.decode_predictions` (same MD5 as Keras's ``file_hash``), so names
match Keras's, quirks included: "crane" is both class 134 (the bird) and 517 (the machine), "maillot" both
638 and 639. It ships with the package, so nothing is downloaded. `scripts/build_class_index.py` rebuilds it.
"""

from __future__ import annotations

import functools
import json
import operator
from importlib import resources

import numpy as np

__all__ = ["NUM_CLASSES", "class_index", "class_name", "decode_predictions"]

NUM_CLASSES = 1000


@functools.cache
def _table() -> tuple[tuple[str, str], ...]:
    # Loaded on first use, not at import: most jaxviz commands never need class names.
    text = resources.files("jaxviz").joinpath("data", "imagenet_class_index.json").read_text("utf-8")
    raw = json.loads(text)
    table = tuple((raw[str(i)][0], raw[str(i)][1]) for i in range(NUM_CLASSES))
    return table


def class_index() -> list[tuple[str, str]]:
    """All ImageNet-1k classes in model-output order.

    Returns:
      A new list of 1000 ``(wnid, name)`` tuples, e.g. ``("n01440764", "tench")`` at index 0.
    """
    return list(_table())


def class_name(i: int) -> str:
    """Keras's name of ImageNet class `i`, e.g. ``class_name(2) == "great_white_shark"``.

    Args:
      i: class index, 0..999 (Python or numpy integer).

    Returns:
      The name, with underscores for spaces as in Keras.
    """
    idx = operator.index(i)
    if not 0 <= idx < NUM_CLASSES:
        raise ValueError(f"ImageNet class index must be in 0..{NUM_CLASSES - 1}, got {idx}")
    return _table()[idx][1]


def decode_predictions(probs, top: int = 5, *, model=None) -> list[list[tuple[str, str, float]]]:
    """The `top` classes of each prediction, as Keras's `imagenet_utils.decode_predictions` returns them.

    Same selection and order as Keras, ties included (numpy ``argsort``, last `top`, reversed, then a stable
    sort by score), but scores are Python floats and nothing is downloaded.

    Args:
      probs: ``[N, 1000]`` class probabilities or logits, numpy or jax.
      top: how many classes to return per image (>= 1; more than 1000 returns all 1000).
      model: decode with this model's own classes (``model.decode_predictions``: the demo networks' shape
        names, ``class_<i>`` for other non-ImageNet heads); without it the predictions must be ImageNet's.

    Returns:
      One list per image of `top` ``(wnid, name, score)`` tuples, highest score first.
    """
    if model is not None:
        return model.decode_predictions(probs, top=top)
    preds = np.asarray(probs)
    if preds.ndim == 1 and preds.shape[0] == NUM_CLASSES:
        raise ValueError(f"decode_predictions expects a batch [N, {NUM_CLASSES}], got one prediction of shape "
                         f"{preds.shape}; add a batch axis with probs[None]")
    if preds.ndim == 2 and preds.shape[1] != NUM_CLASSES:
        raise ValueError(
            f"these predictions have {preds.shape[1]} classes, not ImageNet's [N, {NUM_CLASSES}]: decode them with the "
            "model's own classes: model.decode_predictions(probs), or decode_predictions(probs, model=model)"
        )
    if preds.ndim != 2:
        raise ValueError(f"decode_predictions expects a batch of predictions of shape [N, {NUM_CLASSES}], "
                         f"got {preds.shape}")
    top = operator.index(top)
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    table = _table()
    results = []
    for pred in preds:
        # Mirrors Keras step for step so equal scores come out in the same order.
        best = pred.argsort()[-top:][::-1]
        rows = [(*table[i], float(pred[i])) for i in best]
        rows.sort(key=lambda r: r[2], reverse=True)
        results.append(rows)
    return results
