"""Whole Keras models read without Keras: ``.keras`` archives (or folders) and legacy ``.h5`` → a layer graph +
params.

- Keras 3's ``model.save("m.keras")``: a zip with ``config.json`` (the model's config), ``metadata.json`` (the
  Keras version) and ``model.weights.h5`` (Keras 3 layout, :mod:`jaxviz.frontends.keras.h5`); also saved unzipped
  into a folder (``model.save(folder, zipped=False)``);
- the legacy whole-model HDF5 of ``model.save("m.h5")`` (Keras 2 / tf.keras, and Keras 3's legacy writer):
  root attribute ``model_config`` (JSON), ``keras_version``, ``backend``, and the weights in a
  ``model_weights`` group (legacy layout).

The config becomes flat layers (:mod:`jaxviz.frontends.keras.config`), whose slots say where
:mod:`jaxviz.frontends.keras.h5`
finds each layer's weights.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import h5py

from ... import untrusted
from ...errors import JaxvizError, WeightsError
from ...graph import Graph, make_layer
from .config import MAX_CONFIG_BYTES, MAX_MEMBERS, MAX_METADATA_BYTES, _Flattener, application_preprocess
from .h5 import HDF5_MAGIC, text, weights_keras3, weights_legacy


def read_model(path: str | os.PathLike) -> tuple[Graph, dict, dict]:
    """Reads a whole Keras model (``.keras`` or legacy ``.h5``) without Keras.

    Returns:
      ``(graph, params, info)``: the :class:`jaxviz.graph.Graph` (nested models flattened, inner layers named
      ``outer/inner``), ``{layer: {weight name: float32 numpy array}}``, and ``info`` = ``{"format": "keras" |
      "h5", "keras_version", "backend", "name": the model's name, "application": the recognised
      ``keras.applications`` model's name or None, "preprocess": "caffe" | "tf" | "torch" | "none"}``.

    Raises:
      JaxvizError (one line): a missing, unreadable or non-Keras file, a weights-only file, or a layer kind
      jaxviz does not support (naming the layer, its class and the supported kinds).
    """
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").is_file() and (path / "model.weights.h5").is_file():
            return _guarded(path, lambda: _read_keras_dir(path))  # model.save(folder, zipped=False)
        raise WeightsError(f"{path} is a directory (a TensorFlow SavedModel?); jaxviz reads .keras and .h5 model "
                           "files: in Keras, save the model with model.save('model.keras')")
    if not path.is_file():
        raise WeightsError(f"model file {path} not found; check the path")
    return _guarded(path, lambda: _read_file(path))


def _read_file(path: Path):
    with open(path, "rb") as fh:
        head = fh.read(8)
    if zipfile.is_zipfile(path):
        return _read_keras_zip(path)
    if head == HDF5_MAGIC:
        return _read_h5(path)
    raise WeightsError(f"{path} is neither a .keras archive nor an HDF5 file; give a model saved by Keras's "
                       "model.save('model.keras') or model.save('model.h5')")


def _guarded(path: Path, read):
    """``read()``, with every error of a malformed file turned into one WeightsError line naming ``path``."""
    try:
        return read()
    except JaxvizError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from None
    except MemoryError:
        raise WeightsError(f"{path}: out of memory while reading this model file; it declares more than this "
                           "machine can hold (a crafted or corrupt file?)") from None
    except (OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError,
            zipfile.BadZipFile, json.JSONDecodeError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise WeightsError(f"cannot read {path} as a Keras model ({reason}): it is truncated, corrupt or not "
                           "saved by Keras's model.save; save the model again") from None


def _read_keras_zip(path: Path):
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        if len(infos) > MAX_MEMBERS:
            raise WeightsError(f"{path}: the archive has {len(infos):,} members, more than the {MAX_MEMBERS:,} "
                               "jaxviz reads (a .keras file has a few); refusing it")
        names = {i.filename for i in infos}
        if "config.json" not in names or "model.weights.h5" not in names:
            raise WeightsError(f"{path} is a zip archive without config.json and model.weights.h5: not a .keras "
                               "model file; save the model with model.save('model.keras')")
        config = json.loads(untrusted.zip_member(z, "config.json", MAX_CONFIG_BYTES, path))
        meta = {}
        if "metadata.json" in names:
            meta = json.loads(untrusted.zip_member(z, "metadata.json", MAX_METADATA_BYTES, path))
        flat, outputs, version = _flatten_keras3(config, meta)
        weights = untrusted.zip_member(z, "model.weights.h5", 1 << 62, path)
    return _read_keras3(flat, outputs, version, io.BytesIO(weights), len(weights), path)


def _read_keras_dir(path: Path):
    links = [n for n in ("config.json", "metadata.json", "model.weights.h5") if (path / n).is_symlink()]
    if links:  # a folder from elsewhere must not make jaxviz read some other local file
        raise WeightsError(f"{path}: {links[0]} is a symbolic link; jaxviz reads only files stored in the model "
                           "folder itself")

    def text(name, limit):
        if (path / name).stat().st_size > limit:
            raise WeightsError(f"{path / name} is larger than the {limit:,} bytes jaxviz reads; refusing it")
        return (path / name).read_text("utf8")

    config = json.loads(text("config.json", MAX_CONFIG_BYTES))
    meta = json.loads(text("metadata.json", MAX_METADATA_BYTES)) if (path / "metadata.json").is_file() else {}
    flat, outputs, version = _flatten_keras3(config, meta)
    weights = path / "model.weights.h5"
    return _read_keras3(flat, outputs, version, weights, weights.stat().st_size, weights)


def _flatten_keras3(config, meta):
    if not isinstance(config, Mapping) or not isinstance(meta, Mapping):
        raise KeyError("config.json or metadata.json is not a JSON object")
    version = str(meta.get("keras_version", "3"))
    flat = _Flattener(keras2=version.startswith("2"))
    outputs = flat.model(config, "", None, "", None)
    return flat, outputs, version


def _read_keras3(flat, outputs, version, data, size: int, source):
    with h5py.File(data, "r") as f:
        params = weights_keras3(f, flat.weighted, source, untrusted.Budget(source, size))
    return _result(flat, outputs, params, {"format": "keras", "keras_version": version, "backend": None})


def _read_h5(path: Path):
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            what = "weights only" if ("layers" in f or "layer_names" in f.attrs or "model_weights" in f) else \
                "not a Keras model"
            raise WeightsError(f"{path} is an HDF5 file without a model config ({what}); jaxviz needs the whole "
                               "model: save it with model.save('model.keras') (or .h5), not save_weights")
        config = json.loads(text(f.attrs["model_config"]))
        if not isinstance(config, Mapping):
            raise KeyError("model_config is not a JSON object")
        version = text(f.attrs["keras_version"]) if "keras_version" in f.attrs else "2"
        backend = text(f.attrs["backend"]) if "backend" in f.attrs else None
        flat = _Flattener(keras2=not version.startswith("3"))
        outputs = flat.model(config, "", None, "", None)
        params = weights_legacy(untrusted.child(f, "model_weights", path), flat.weighted, flat.frozen, path,
                                untrusted.Budget(path, path.stat().st_size))
    return _result(flat, outputs, params, {"format": "h5", "keras_version": version, "backend": backend})


def _result(flat: _Flattener, outputs, params, info):
    layers = tuple(make_layer(n, k, c, i) for n, k, c, i in flat.layers)
    name = flat.models[0] if flat.models else "model"
    graph = Graph(name, layers, tuple(dict.fromkeys(outputs)))
    app = next((m for m in flat.models if application_preprocess(m)), None)
    info = {**info, "name": name, "application": app, "preprocess": application_preprocess(app) or "none"}
    return graph, params, info


def resolve_name(graph: Graph, name: str) -> str:
    """:meth:`jaxviz.graph.Graph.resolve`: a full name, ``"logits"``, or a unique bare inner name."""
    return graph.resolve(name)
