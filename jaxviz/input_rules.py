"""The input rules of a model: which batches it takes, with one line naming the problem and the fix otherwise.

:func:`check_input` asks only the model interface (:mod:`jaxviz.interface`): the input's channels and
size (:attr:`input_hw`), the smallest side a pass takes (:meth:`min_side`), and whether a dense head fixes
the size (:attr:`head` ``"flatten"`` with the top, where the pass computes a dense layer).
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from .errors import JaxvizError


def check_input(model, x, layers: str | Iterable[str] | None = None, probe: bool = False) -> jax.Array:
    """Validates a batch of preprocessed images ``[N, H, W, C]`` (or, for a model on flat vectors,
    ``[N, features]``) for ``model`` and returns it as float32.

    ``layers``: what a truncated pass computes (those layers and what they depend on); the size must suit
    those layers only. ``probe``: also evaluate the layers' shapes at this size (a model whose layer table is
    traced from its graph: a size some layer cannot take fails there)."""
    shape = tuple(np.shape(x))
    c = model.input_channels
    hw = model.input_hw
    if hw is None:
        if len(shape) != 2 or shape[-1] != c:
            hint = " (add a batch axis with x[None] for a single vector)" if shape == (c,) else ""
            raise JaxvizError(f"{model.name} expects a batch of vectors [N, {c}], got shape {shape}{hint}")
        return finite(x)
    if len(shape) != 4 or shape[-1] != c:
        if len(shape) == 3 and shape[-1] == c:
            hint = "; add a batch axis with x[None] for a single image"
        elif len(shape) in (3, 4) and shape[-1] != c:
            hint = (f": {shape[-1]} channel(s) given, the model takes {c}"
                    + ("; load images as grayscale (load_image(path, channels=1))" if c == 1 else
                       "; load images as RGB (load_image(path))" if c == 3 else ""))
        else:
            hint = ""
        raise JaxvizError(f"{model.name} expects a batch of images [N, H, W, {c}] "
                          f"(e.g. [N, {hw[0]}, {hw[1]}, {c}]), got shape {shape}{hint}")
    h, w = shape[1:3]
    names = None if layers is None else model.check_layers(layers)
    m = model.min_side(names)
    # a dense layer computed after the map is flattened fixes the size
    dense = names is None or any(model.graph.by_name[n].kind == "Dense" for n in model.graph.ancestors(names))
    fixed = model.include_top and model.head == "flatten" and dense
    # where a dense head fixes the size, a truncated pass that computes it says so rather than the minimum
    if (h < m or w < m) and not (names is not None and fixed):
        upto = "" if names is None else f" up to {model.deepest(names)}"
        raise JaxvizError(f"{model.name}{upto} needs inputs of at least {m}×{m} pixels, got {h}×{w}")
    if fixed and (h, w) != tuple(hw):
        raise JaxvizError(
            f"{model.name} with its top needs {hw[0]}×{hw[1]} {'' if hw[0] == hw[1] else '(height × width) '}"
            f"inputs, got {h}×{w}; resize "
            f"the image (load_image(path, target_size=({hw[0]}, {hw[1]}))) or load the model with "
            "include_top=False"
        )
    x = finite(x)
    if probe:
        try:
            for upto in (None,) if names is None else names:
                model.layer_table((h, w, c), upto)
        except (TypeError, ValueError):  # a shape some layer cannot take (too small, a fixed-size head)
            raise JaxvizError(f"{model.name} cannot take {h}×{w} inputs; resize the images to "
                              f"{hw[0]}×{hw[1]}{'' if hw[0] == hw[1] else ' (height × width)'}") from None
    return jnp.asarray(x, jnp.float32)


def finite(x) -> jax.Array:
    """``x`` as float32; one line if a concrete ``x`` holds NaN or inf."""
    if not isinstance(x, jax.core.Tracer) and not np.isfinite(np.asarray(x)).all():
        raise JaxvizError("the input contains NaN/inf values; check how the images were loaded and "
                          "preprocessed")
    return jnp.asarray(x, jnp.float32)
