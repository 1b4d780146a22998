"""VGG networks as layer graphs with Keras's layer names, and the table that describes them.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.

One table per network (:class:`Arch`: convolutions and channels per block, the head); ``VGG16``/``VGG19``,
the demo networks and a tiny test variant are rows of it, and :func:`build_graph` turns a row into the
:class:`jaxviz.graph.Graph` every method runs on. Layer names are Keras's (``block1_conv1`` …
``block5_pool``, ``flatten``, ``fc1``, ``fc2``, ``predictions``), so converting Keras weights is a
key-for-key copy. Kernels are HWIO and dense kernels ``[in, out]``, as Keras stores them. No I/O here.

This is the VGG front end: :func:`front_end` gives :class:`jaxviz.Model` a row's graph, its description
(the :class:`Arch` itself), its profile (:mod:`jaxviz.profile`: ``imagenet``, or ``demo`` for the demo
networks) and its exact layer table. The table lists every row it knows, the demo networks' included; nothing
is added to it at import.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .. import profile as profile_lib
from ..describe import format_table
from ..errors import JaxvizError
from ..graph import Graph, make_layer
from ..interface import VGG_FAMILY, FrontEnd, LayerInfo

__all__ = ["ARCHS", "Arch", "DEMO_ARCHS", "LayerInfo", "VGG_DEMO", "VGG_DEMO_GAP", "build_graph", "format_summary",
           "front_end", "get_arch", "layer_table", "random_params", "register_arch", "weighted_layers"]

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
    #: The defaults the row's models carry: "imagenet" or "demo" (:func:`jaxviz.profile.named`).
    profile: str = "imagenet"

    @property
    def min_size(self) -> int:
        return 2 ** len(self.convs_per_block)

    channels = 3  # RGB images
    spatial = True
    family = VGG_FAMILY  # a plain VGG stack (occlusion's incremental evaluation, compare-keras's builder)

    @property
    def input_hw(self) -> tuple[int, int]:
        return (self.default_size, self.default_size)


ARCHS: dict[str, Arch] = {
    "vgg16": Arch("vgg16", (2, 2, 3, 3, 3), (64, 128, 256, 512, 512)),
    "vgg19": Arch("vgg19", (2, 2, 4, 4, 4), (64, 128, 256, 512, 512)),
    # VGG-shaped but tiny: for unit tests (same layer names as VGG16, a few channels each).
    "vgg_tiny": Arch("vgg_tiny", (2, 2, 3, 3, 3), (4, 6, 8, 8, 8), (16, 12), 10, 32),
}

# The demo networks (:mod:`jaxviz.demo`): narrow 64×64 VGGs trained by ``scripts/train_demo.py`` on the demo
# scenes, whose classes these are (``jaxviz.demo.CLASS_NAMES``, the same tuple: tests/test_demo.py checks it).
# Their rows live here, not in jaxviz.demo, so the table is complete without anything registering them.
_DEMO_TRUNK = dict(convs_per_block=(2, 2, 2, 2), block_features=(8, 16, 32, 64), num_classes=10, default_size=64,
                   class_names=("disc", "square", "triangle", "star", "ring", "cross", "horizontal_stripes",
                                "vertical_stripes", "checker", "dots"), profile="demo")
#: Flatten head, as Keras VGG: 4×4×64 → fc1 (64) → fc2 (64) → predictions (10).
VGG_DEMO = Arch("vgg_demo", fc_features=(64, 64), head="flatten", **_DEMO_TRUNK)
#: CAM head (Zhou et al. 2016): global average pooling of block4_pool → predictions (10).
VGG_DEMO_GAP = Arch("vgg_demo_gap", fc_features=(), head="gap", **_DEMO_TRUNK)
#: The demo rows by name; their trained weights ship with jaxviz (``Profile.bundled_weights``).
DEMO_ARCHS: dict[str, Arch] = {a.name: a for a in (VGG_DEMO, VGG_DEMO_GAP)}
ARCHS.update(DEMO_ARCHS)


def register_arch(arch: Arch) -> None:
    """Adds an architecture to the table `jaxviz.load` knows (a caller's own row; jaxviz registers none)."""
    ARCHS[arch.name] = arch
    build_graph.cache_clear()


def get_arch(arch: str | Arch) -> Arch:
    if isinstance(arch, Arch):
        return arch
    try:
        return ARCHS[arch.lower()]
    except KeyError:
        raise JaxvizError(
            f"unknown architecture {arch!r}; choose one of: {', '.join(sorted(ARCHS))}"
        ) from None


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


def format_summary(arch: str | Arch, include_top: bool = True, input_shape=None) -> str:
    """Keras's ``model.summary()`` table for ``arch`` as text."""
    a = get_arch(arch)
    return format_table(a.name, layer_table(a, include_top, input_shape))


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
    rng = np.random.default_rng(seed)
    params = {}
    for name, (kshape, bshape) in weighted_layers(arch, include_top).items():
        fan_in = int(np.prod(kshape[:-1]))
        kernel = rng.standard_normal(kshape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        params[name] = {"kernel": kernel, "bias": np.zeros(bshape, np.float32)}
    return params


def front_end(arch: str | Arch, include_top: bool = True) -> FrontEnd:
    """What :class:`jaxviz.Model` is built from for a row of the table: its graph, the row as the model's
    description, the row's profile, and its exact layer table (:func:`layer_table`)."""
    a = get_arch(arch)
    return FrontEnd(build_graph(a, include_top), a, profile_lib.named(a.profile),
                    functools.partial(layer_table, a, include_top))
