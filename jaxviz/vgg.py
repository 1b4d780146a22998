"""VGG networks as layer graphs with Keras's layer names, and the table that describes them.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.

One table per network (:class:`Arch`: convolutions and channels per block, the head); ``VGG16``/``VGG19``,
the demo networks and a tiny test variant are rows of it, and :func:`build_graph` turns a row into the
:class:`jaxviz.graph.Graph` every method runs on. Layer names are Keras's (``block1_conv1`` …
``block5_pool``, ``flatten``, ``fc1``, ``fc2``, ``predictions``), so converting Keras weights is a
key-for-key copy. Kernels are HWIO and dense kernels ``[in, out]``, as Keras stores them. No I/O here.
"""

from __future__ import annotations

import dataclasses
import functools

from .graph import Graph, make_layer

# ---------------------------------------------------------------------------------------------------------
# Architecture descriptions


@dataclasses.dataclass(frozen=True)
class Arch:
    """A VGG configuration: convolutions per block, channels per block, and the classifier head."""

    name: str
    convs_per_block: tuple[int, ...]
    block_features: tuple[int, ...]
    fc_features: tuple[int, ...] = (4096, 4096)
    num_classes: int = 1000
    default_size: int = 224
    #: "flatten" (Keras VGG) or "gap" (global average pooling, the CAM head of Zhou et al. 2016).
    head: str = "flatten"
    #: Names of the output classes; None: ImageNet's for 1000 classes, else "class_<i>".
    class_names: tuple[str, ...] | None = None

    @property
    def min_size(self) -> int:
        return 2 ** len(self.convs_per_block)

    channels = 3  # RGB images
    spatial = True

    @property
    def input_hw(self) -> tuple[int, int]:
        return (self.default_size, self.default_size)


ARCHS: dict[str, Arch] = {
    "vgg16": Arch("vgg16", (2, 2, 3, 3, 3), (64, 128, 256, 512, 512)),
    "vgg19": Arch("vgg19", (2, 2, 4, 4, 4), (64, 128, 256, 512, 512)),
    # VGG-shaped but tiny: for unit tests (same layer names as VGG16, a few channels each).
    "vgg_tiny": Arch("vgg_tiny", (2, 2, 3, 3, 3), (4, 6, 8, 8, 8), (16, 12), 10, 32),
}


def register_arch(arch: Arch) -> None:
    """Adds an architecture (e.g. the demo network) to the table `jaxviz.load` knows."""
    ARCHS[arch.name] = arch
    build_graph.cache_clear()


def get_arch(arch: str | Arch) -> Arch:
    if isinstance(arch, Arch):
        return arch
    try:
        return ARCHS[arch.lower()]
    except KeyError:
        from .errors import JaxvizError

        raise JaxvizError(
            f"unknown architecture {arch!r}; choose one of: {', '.join(sorted(ARCHS))}"
        ) from None


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One row of Keras's model table."""

    name: str
    kind: str  # InputLayer, Conv2D, MaxPooling2D, Flatten, GlobalAveragePooling2D, Dense
    output_shape: tuple  # without the batch axis; None for a free spatial size
    params: int
    kernel_shape: tuple | None = None  # Conv2D/Dense: kernel shape; bias is kernel_shape[-1]
    non_trainable: int = 0  # of ``params``: BatchNormalization's moving statistics, a frozen layer's weights
    inputs: tuple[str, ...] = ()  # the layers feeding it (Keras's "Connected to")


def layer_table(arch: str | Arch, include_top: bool = True, input_shape=None) -> list[LayerInfo]:
    """Keras's layer list for ``arch``: names, kinds, output shapes and parameter counts.

    Args:
      arch: architecture name or :class:`Arch`.
      include_top: whether the classifier head is part of the model.
      input_shape: ``(H, W, 3)``; default ``(S, S, 3)`` with the architecture's size when the top is
        included, ``(None, None, 3)`` without.
    """
    a = get_arch(arch)
    if input_shape is None:
        s = a.default_size if include_top else None
        input_shape = (s, s, 3)
    h, w, c = input_shape
    rows = [LayerInfo("input_layer", "InputLayer", (h, w, c), 0)]
    for b, (n_conv, feats) in enumerate(zip(a.convs_per_block, a.block_features), start=1):
        for i in range(1, n_conv + 1):
            kshape = (3, 3, c, feats)
            rows.append(LayerInfo(f"block{b}_conv{i}", "Conv2D", (h, w, feats), 9 * c * feats + feats, kshape))
            c = feats
        h = None if h is None else h // 2
        w = None if w is None else w // 2
        rows.append(LayerInfo(f"block{b}_pool", "MaxPooling2D", (h, w, c), 0))
    if include_top:
        if a.head == "gap":
            rows.append(LayerInfo("global_average_pooling", "GlobalAveragePooling2D", (c,), 0))
            n_in = c
        else:
            n_in = h * w * c
            rows.append(LayerInfo("flatten", "Flatten", (n_in,), 0))
        for i, feats in enumerate(a.fc_features, start=1):
            rows.append(LayerInfo(f"fc{i}", "Dense", (feats,), n_in * feats + feats, (n_in, feats)))
            n_in = feats
        rows.append(
            LayerInfo("predictions", "Dense", (a.num_classes,), n_in * a.num_classes + a.num_classes,
                      (n_in, a.num_classes))
        )
    return rows


def weighted_layers(arch: str | Arch, include_top: bool = True) -> dict[str, tuple[tuple, tuple]]:
    """``{layer: (kernel_shape, bias_shape)}`` for every layer that has weights, in network order."""
    return {
        r.name: (r.kernel_shape, (r.kernel_shape[-1],))
        for r in layer_table(arch, include_top)
        if r.kernel_shape is not None
    }


# ---------------------------------------------------------------------------------------------------------
# The graph


@functools.cache
def build_graph(arch: str | Arch, include_top: bool = True) -> Graph:
    """The layer graph of ``arch``, layer for layer as Keras builds it (``keras.applications.VGG16`` …).

    Conv layers are ``Conv2D(features, 3, padding="same", activation="relu")``, pools
    ``MaxPooling2D(2, 2)``, the head ``Flatten`` (or ``GlobalAveragePooling2D`` for ``head="gap"``), hidden
    ``Dense(features, activation="relu")`` and ``Dense(num_classes, activation="softmax")``.
    """
    a = get_arch(arch)
    size = a.default_size if include_top else None
    layers = [make_layer("input_layer", "InputLayer", {"batch_shape": [None, size, size, 3]})]
    prev = "input_layer"
    for row in layer_table(a, include_top)[1:]:
        if row.kind == "Conv2D":
            cfg = {"filters": row.output_shape[-1], "kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
                   "activation": "relu"}
        elif row.kind == "MaxPooling2D":
            cfg = {"pool_size": [2, 2], "strides": [2, 2], "padding": "valid"}
        elif row.kind == "Dense":
            cfg = {"units": row.output_shape[-1], "activation": "softmax" if row.name == "predictions" else "relu"}
        else:
            cfg = {}
        layers.append(make_layer(row.name, row.kind, cfg, (prev,)))
        prev = row.name
    names = a.class_names if include_top else None
    return Graph(a.name, tuple(layers), (prev,), None if names is None else tuple(names))


def random_params(arch: str | Arch, include_top: bool = True, seed: int = 0) -> dict:
    """Deterministic He-normal kernels and zero biases, ``{layer: {"kernel", "bias"}}`` as numpy float32.

    Drawn with numpy's PCG64 in network order, so the same seed gives the same weights on every platform
    and JAX version (for tests and benchmarks; these weights have learned nothing).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    params = {}
    for name, (kshape, bshape) in weighted_layers(arch, include_top).items():
        fan_in = int(np.prod(kshape[:-1]))
        kernel = rng.standard_normal(kshape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        params[name] = {"kernel": kernel, "bias": np.zeros(bshape, np.float32)}
    return params
