"""Keras HDF5 weights, every layout Keras has written, read into ``{layer: {weight name: float32 array}}``.

Layouts:

- legacy HDF5 (``save_weights("x.h5")`` of Keras 1/2, Keras 3's legacy writer, the 2016 keras-applications
  files): a group with the ``layer_names`` attribute — the file's root, or ``model_weights`` in a whole-model
  ``.h5`` — holding one group per top-level layer whose ``weight_names`` attribute lists its datasets in order
  (``block1_conv1_W_1:0``, ``conv2d/kernel:0``, ``conv2d/kernel``; a nested model's group lists all its layers'
  weights, ``vgg16/block1_conv1/kernel``);
- Keras 3 (``x.weights.h5``, ``model.weights.h5`` inside a ``.keras`` archive): ``layers/<key>/vars/0, 1, …``
  with the key as :class:`jaxviz.frontends.keras.config.Slot` says, and in recent Keras the layer's name in the
  ``vars`` group's ``name`` attribute (checked when present, used where the key does not match).

The model's layers — from its config (:class:`jaxviz.frontends.keras.config._Flattener`) or from a graph
(:func:`jaxviz.frontends.keras.config.graph_slots`, for weights-only files) — say where each layer's weights are:
:func:`read_weights` reads them. :func:`stored_layers` lists what a file holds (names and shapes, no data) so
a caller can check it against what it expects before reading. Every dataset is checked by
:mod:`jaxviz.untrusted` before any is read.
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from ... import layers as layers_lib
from ... import untrusted
from ...errors import WeightsError
from .config import Slot

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def text(value) -> str:
    """An HDF5 string attribute (bytes, str or a 0-d array of either) as str."""
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return text(value[()])
    return str(value)


def attr_list(group, name: str) -> list[str]:
    """A string-list attribute, joining the chunks (``name0``, ``name1``, …) Keras splits big ones into."""
    if name in group.attrs:
        values = list(np.atleast_1d(group.attrs[name]))
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values += list(np.atleast_1d(group.attrs[f"{name}{i}"]))
            i += 1
    return [text(v) for v in values]


def has_attr(group, name: str) -> bool:
    return name in group.attrs or f"{name}0" in group.attrs


# ---------------------------------------------------------------------------------------------------------
# Weights files


@contextlib.contextmanager
def open_weights(path: str | os.PathLike):
    """Opens the HDF5 weights of a weights-only file (or of a ``.keras`` archive's ``model.weights.h5``);
    yields ``(h5py.File, its size in bytes)``.

    Errors of an unreadable file, also those raised inside the ``with`` block, become one WeightsError line
    naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a directory; give the weight file inside it")
    if not path.is_file():
        raise WeightsError(f"weight file {path} not found; check the path")
    if path.name.endswith(".weights.json"):
        raise WeightsError(
            f"{path} is the index of sharded Keras weights, which jaxviz does not read; load the model in Keras "
            "and save it with model.save_weights('model.weights.h5') (no max_shard_size)"
        )
    try:
        if zipfile.is_zipfile(path):  # a whole-model .keras archive: the weights are model.weights.h5 inside
            with zipfile.ZipFile(path) as z:
                if "model.weights.h5" not in z.namelist():
                    raise KeyError("no model.weights.h5 inside the zip archive")
                data = untrusted.zip_member(z, "model.weights.h5", 1 << 62, path)
            with h5py.File(io.BytesIO(data), "r") as f:
                yield f, len(data)
        else:
            with h5py.File(path, "r") as f:
                yield f, path.stat().st_size
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, zipfile.BadZipFile) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise WeightsError(
            f"cannot read {path} ({reason}): it is not a Keras HDF5 weight file, or it is truncated or corrupt; "
            "check the path or download the file again"
        ) from None


def layout(f, source) -> tuple[str, object, str]:
    """``("legacy", the group with layer_names, description)`` or ``("keras3", f, description)``."""
    if has_attr(f, "layer_names"):
        version = text(f.attrs["keras_version"]) if "keras_version" in f.attrs else "1"
        return "legacy", f, f"legacy HDF5, Keras {version}"
    if untrusted.has(f, "model_weights"):
        group = untrusted.child(f, "model_weights", source)
        if has_attr(group, "layer_names"):
            return "legacy", group, "legacy HDF5 full model"
    if untrusted.has(f, "layers"):
        return "keras3", f, "Keras 3 .weights.h5"
    raise WeightsError(
        f"{source} is HDF5 but not a Keras weight file (no layer_names attribute, model_weights or layers group); "
        "save the weights with Keras's model.save_weights"
    )


def _keras3_groups(f, source) -> list[tuple[str, str | None, object]]:
    """Every ``vars`` group holding weights: ``(its layer's path, the stored layer name or None, the group)``."""
    entries = []

    def walk(group, prefix):
        for key in group:
            g = untrusted.child(group, key, source)
            if not hasattr(g, "keys"):
                continue
            if untrusted.has(g, "vars"):
                v = untrusted.child(g, "vars", source)
                n = len(v)
                if set(v.keys()) != {str(i) for i in range(n)}:
                    raise KeyError(f"{prefix}{key}/vars holds {sorted(v.keys())}, expected 0..{n - 1}")
                if n:
                    entries.append((prefix + key, text(v.attrs["name"]) if "name" in v.attrs else None, v))
            if untrusted.has(g, "layers"):
                walk(untrusted.child(g, "layers", source), f"{prefix}{key}/layers/")

    walk(untrusted.child(f, "layers", source), "/layers/")
    return entries


def stored_layers(f, slots: Mapping[str, Slot], source) -> tuple[dict[str, list[tuple]], str]:
    """What a weights-only file holds, read from its metadata alone: ``({layer: [weight shapes, in stored
    order]}, layout description)``, every dataset checked by :func:`jaxviz.untrusted.check_dataset`.

    A Keras 3 group without a stored name is named by ``slots`` (its path), else listed under its path.
    """
    kind, group, what = layout(f, source)
    found: dict[str, list] = {}
    if kind == "legacy":
        for layer in attr_list(group, "layer_names"):
            if not untrusted.has(group, layer):
                raise KeyError(f"layer group {layer!r} listed in layer_names is missing")
            g = untrusted.child(group, layer, source)
            names = attr_list(g, "weight_names")
            if names:
                found[layer] = [untrusted.get(g, n, source) for n in names]
    else:
        by_path = {slot.path: name for name, slot in slots.items()}
        entries = _keras3_groups(f, source)
        for path, name, v in entries:
            name = name or by_path.get(path, path)
            if name in found:
                raise KeyError(f"two layers named {name!r} ({path})")
            found[name] = [untrusted.child(v, str(i), source) for i in range(len(v))]
        if any(name is None for _, name, _ in entries):
            what += ", no layer names: mapped by their groups"
    return {layer: [tuple(untrusted.check_dataset(ds, source, f"layer {layer!r} weight {i}").shape)
                    for i, ds in enumerate(arrays)] for layer, arrays in found.items()}, what


def read_weights(f, slots: Mapping[str, Slot], source, budget: untrusted.Budget,
                 frozen: frozenset[str] | set[str] = frozenset()) -> dict:
    """The weights of the layers in ``slots`` from a Keras HDF5 file of either layout, as float32 numpy
    ``{layer: {weight name: array}}`` in the order of ``slots`` (``frozen``: layers whose weights Keras lists
    as non-trainable, which orders a nested model's legacy weights)."""
    kind, group, _ = layout(f, source)
    if kind == "keras3":
        return weights_keras3(f, slots, source, budget)
    return weights_legacy(group, slots, frozen, source, budget)


def weights_keras3(f, slots: Mapping[str, Slot], source, budget) -> dict:
    """``model.weights.h5``: each weighted layer's ``vars`` group at the path its class names, or by name."""
    by_name: dict[str, object] = {}

    def walk(group):
        for key in group:
            g = untrusted.child(group, key, source)
            if not hasattr(g, "keys"):
                continue
            if untrusted.has(g, "vars"):
                v = untrusted.child(g, "vars", source)
                if "name" in v.attrs:
                    by_name.setdefault(text(v.attrs["name"]), v)
            if untrusted.has(g, "layers"):
                walk(untrusted.child(g, "layers", source))

    found = {}
    for name, (path, _, kind, cfg) in slots.items():
        path = path.lstrip("/")
        try:
            group = untrusted.get(f, path + "/vars", source)
        except KeyError:
            group = None
        local = name.rsplit("/", 1)[-1]
        if group is not None and "name" in group.attrs and text(group.attrs["name"]) != local:
            group = None
        if group is None:
            if not by_name:
                walk(untrusted.child(f, "layers", source) if untrusted.has(f, "layers") else f)
            group = by_name.get(local)
        if group is None:
            raise KeyError(f"no weights for layer {name!r} ({path}/vars)")
        arrays = [untrusted.child(group, str(i), source) for i in range(len(group))]
        found[name] = _named(name, kind, cfg, arrays, source, budget)
    return _read_all(found)


def weights_legacy(group, slots: Mapping[str, Slot], frozen, source, budget) -> dict:
    """``model_weights``: per top-level layer group, ``weight_names`` lists its (and its inner layers') weights."""
    found = {}
    tops: dict[str, list[str]] = {}
    for name, slot in slots.items():
        tops.setdefault(slot.top, []).append(name)
    for top, names in tops.items():
        if not untrusted.has(group, top):
            raise KeyError(f"no weight group for layer {top!r}")
        g = untrusted.child(group, top, source)
        wnames = attr_list(g, "weight_names")
        datasets = [(w, untrusted.get(g, w, source)) for w in wnames]
        if len(names) == 1 and names[0] == top:
            found[top] = _named(top, slots[top].kind, slots[top].cfg, [d for _, d in datasets], source, budget)
            continue
        # A nested model: its weights' names end in "<inner layer>/<weight>" …
        by_layer = {}
        for name in names:
            local = name.rsplit("/", 1)[-1]
            by_layer[name] = [d for w, d in datasets if w.split(":")[0].split("/")[-2:-1] == [local]]
        if all(len(by_layer[n]) == len(layers_lib.weight_names(slots[n].kind, slots[n].cfg)) for n in names) and \
                sum(map(len, by_layer.values())) == len(datasets):
            for name in names:
                found[name] = _named(name, slots[name].kind, slots[name].cfg, by_layer[name], source, budget)
            continue
        # … else by order, as Keras lists a model's weights: every trainable one, then the non-trainable ones
        # (all of a frozen layer's weights are non-trainable).
        order = [(name, i) for trainable in (True, False) for name in names
                 for i, (_, t) in enumerate(layers_lib.weight_names(slots[name].kind, slots[name].cfg))
                 if (t and name not in frozen) == trainable]
        if len(order) != len(datasets):
            raise KeyError(f"the weights of nested model {top!r} ({len(datasets)}) do not match its layers' "
                           f"({len(order)})")
        arrays: dict[str, dict[int, object]] = {}
        for (name, i), (_, d) in zip(order, datasets):
            arrays.setdefault(name, {})[i] = d
        for name in names:
            found[name] = _named(name, slots[name].kind, slots[name].cfg,
                                 [arrays[name][i] for i in sorted(arrays[name])], source, budget)
    return _read_all(found)


def _pair(value) -> tuple:
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value), int(value))


def implied_shapes(kind: str, cfg: Mapping) -> dict[str, tuple]:
    """The shapes of a layer's weights as far as its config fixes them (``None``: set by the input, e.g. the
    input channels); kinds not listed here have only their sizes checked."""
    k = lambda: _pair(cfg.get("kernel_size", 1))  # noqa: E731
    if kind in ("Conv2D", "Convolution2D"):
        f = int(cfg["filters"])
        return {"kernel": (*k(), None, f), "bias": (f,)}
    if kind == "Conv1D":
        f = int(cfg["filters"])
        return {"kernel": (k()[0], None, f), "bias": (f,)}
    if kind == "Conv2DTranspose":
        f = int(cfg["filters"])
        return {"kernel": (*k(), f, None), "bias": (f,)}
    if kind == "Dense":
        u = int(cfg["units"])
        return {"kernel": (None, u), "bias": (u,)}
    if kind == "DepthwiseConv2D":
        return {"kernel": (*k(), None, int(cfg.get("depth_multiplier", 1))), "bias": (None,)}
    if kind in ("SeparableConv2D", "SeparableConvolution2D"):
        f = int(cfg["filters"])
        return {"depthwise_kernel": (*k(), None, int(cfg.get("depth_multiplier", 1))),
                "pointwise_kernel": (1, 1, None, f), "bias": (f,)}
    if kind == "BatchNormalization" and isinstance(cfg.get("axis", -1), int):
        return dict.fromkeys(("gamma", "beta", "moving_mean", "moving_variance"), (None,))
    return {}


def _named(name: str, kind: str, cfg: dict, arrays: list, source, budget) -> dict:
    """A layer's stored weights (in Keras's order) under their names, each dataset checked, none read yet."""
    spec = layers_lib.weight_names(kind, cfg)
    if len(arrays) != len(spec):
        raise KeyError(f"layer {name!r} ({kind}) has {len(arrays)} weights in the file, expected {len(spec)} "
                       f"({', '.join(w for w, _ in spec)})")
    shapes = implied_shapes(kind, cfg)
    return {w: untrusted.check_dataset(a, source, f"layer {name!r} weight {w!r}", shapes.get(w), budget)
            for (w, _), a in zip(spec, arrays)}


def _read_all(found: dict) -> dict:
    """The checked datasets of every layer, read as float32 numpy (only after all of them were checked)."""
    return {name: {w: np.asarray(d[()], np.float32) for w, d in weights.items()} for name, weights in found.items()}
