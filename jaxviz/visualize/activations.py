"""Feature maps (DLwP 1st ed., listings 5.25–5.30): the outputs of chosen layers for an image, as grids.

All layers come from ONE forward pass (:meth:`jaxviz.Model.features`), which stops at the deepest layer
asked for. Each layer's first ``count`` channels are drawn by :func:`jaxviz.render.feature_map_grid`
(each channel standardised, viridis, 8 per row); the raw arrays can be saved next to them as ``.npy``.

Examples:
  >>> model = jaxviz.load("vgg16", include_top=False)
  >>> x = preprocess_input(load_image(sample_image_path())[None])
  >>> save_activation_grids(model, x, block_end_layers(model), "out/", count=64)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..atomic import confine, file_stems, save_npy
from ..errors import LayerError
from ..images import save_png
from ..render import feature_map_grid

#: Layers that only transform their one input elementwise: a block's output is taken after them.
_ELEMENTWISE = ("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "ThresholdedReLU", "Softmax")


def block_end_layers(model) -> list[str]:
    """Every block's output, in network order.

    In a graph whose blocks end in a merge (ResNet's ``Add``, Inception's ``Concatenate``), a block's output
    is that merge followed by the activations applied to it alone (``conv2_block1_out`` in ResNet50), the
    layer the next block reads. In a chain (VGG, Sequential models) it is the last conv layer of each group of
    layers named ``<block>_…`` (``block1_conv2`` … ``block5_conv3`` for VGG16).
    """
    graph = model.graph
    layers = list(graph.layers) if graph is not None else []
    if any(len(layer.inputs) > 1 for layer in layers):
        consumers: dict[str, list] = {}
        for layer in layers:
            for name in layer.inputs:
                consumers.setdefault(name, []).append(layer)
        ends = []
        for layer in layers:
            if len(layer.inputs) > 1:
                end = layer.name
                while len(consumers.get(end, ())) == 1 and consumers[end][0].kind in _ELEMENTWISE:
                    end = consumers[end][0].name
                ends.append(end)
        return ends
    last: dict[str, str] = {}
    for name in model.conv_layer_names:
        last[name.split("_", 1)[0]] = name  # "block3_conv3" -> block "block3"; later convs overwrite
    if len(last) > 1 or len(model.conv_layer_names) < 2:
        return list(last.values())
    # Keras's default names (conv2d, conv2d_1, …) share one prefix: a block then ends where the resolution drops.
    return _ends_before_downsampling(layers, set(model.conv_layer_names))


#: Layer kinds after which a chain's feature maps are smaller (or no longer maps).
_DOWNSAMPLING = ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten")


def _ends_before_downsampling(layers, convs: set[str]) -> list[str]:
    """The last conv layer before each pooling layer, Flatten or strided conv of a chain, and the last conv."""
    ends, last_conv = [], None
    for layer in layers:
        strides = layer.cfg.get("strides", 1)
        strided = layer.name in convs and any(s > 1 for s in np.atleast_1d(strides))
        if last_conv is not None and (layer.kind in _DOWNSAMPLING or strided):
            ends.append(last_conv)
            last_conv = None
        if layer.name in convs:
            last_conv = layer.name
    return ends + ([last_conv] if last_conv is not None else [])


#: Alias of :func:`block_end_layers`.
block_ends = block_end_layers


def _as_batch(x):
    """One ``[H, W, 3]`` image becomes a batch of one; a batch (numpy or jax) passes through."""
    if not hasattr(x, "shape"):
        x = np.asarray(x, np.float32)
    return x[None] if len(x.shape) == 3 else x


def _scale_for(h: int, w: int, min_side: int) -> int:
    return max(1, -(-min_side // max(1, min(h, w))))  # ceil: small maps are upscaled to >= min_side px


def activation_grids(model, x, layers: str | Iterable[str], count: int = 64, cols: int = 8,
                     min_side: int = 32, cmap: str = "viridis"):
    """Feature-map grids for ``layers`` from one forward pass.

    Args:
      model: a :class:`jaxviz.Model` (without its top for inputs of any size).
      x: ``[N, H, W, 3]`` (or one ``[H, W, 3]``) preprocessed image(s).
      layers: layer name(s); checked against the model (a bad name raises with the valid ones listed).
      count: channels shown per grid (the first ``count``).
      cols: maps per row.
      min_side: maps smaller than this are upscaled (nearest neighbour, integer factor) so they stay visible.
      cmap: matplotlib colormap.

    Returns:
      ``(features, grids)``: ``{layer: np.ndarray [N, h, w, C]}`` and ``{layer: [uint8 grid per image]}``.
    """

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    layers = model.check_layers(layers)
    feats = {k: np.asarray(v) for k, v in model.features(_as_batch(x), layers).items()}
    grids = {}
    for name in layers:
        a = feats[name]
        if a.ndim != 4:

            raise LayerError(f"{name!r} has no spatial feature maps; choose a conv or pool layer")
        scale = _scale_for(a.shape[1], a.shape[2], min_side)
        grids[name] = [feature_map_grid(m, count=count, cols=cols, cmap=cmap, scale=scale) for m in a]
    return feats, grids


def save_activation_grids(model, x, layers: str | Iterable[str], out_dir: str | os.PathLike, count: int = 64,
                          npy: bool = False, cols: int = 8, prefix: str = "") -> list[Path]:
    """Writes one feature-map grid PNG per layer (and image), from ONE forward pass.

    Files: ``{prefix}{layer}.png`` for a single image, ``{prefix}{layer}_{i}.png`` for image ``i`` of a
    batch; with ``npy=True`` also ``{prefix}{layer}.npy`` holding the raw ``[N, h, w, C]`` activations.

    Args:
      model: a :class:`jaxviz.Model`.
      x: ``[N, H, W, 3]`` (or ``[H, W, 3]``) preprocessed image(s).
      layers: layer name(s), e.g. ``block_end_layers(model)``.
      out_dir: output folder (created if missing).
      count: feature maps per grid.
      npy: also save the raw arrays.
      cols: maps per row.
      prefix: file-name prefix.

    Returns:
      The paths written (every file written atomically).
    """

    feats, grids = activation_grids(model, x, layers, count=count, cols=cols)
    out = Path(out_dir)
    stems = file_stems(model.layer_names)
    paths = []
    for name, per_image in grids.items():
        if len(per_image) == 1:
            paths.append(save_png(confine(out, f"{prefix}{stems[name]}.png"), per_image[0]))
        else:
            paths += [save_png(confine(out, f"{prefix}{stems[name]}_{i}.png"), g)
                      for i, g in enumerate(per_image)]
        if npy:
            paths.append(save_npy(confine(out, f"{prefix}{stems[name]}.npy"), feats[name]))
    return paths
