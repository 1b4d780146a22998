"""jaxviz's own model format: one ``.npz`` with the weights and the layer graph, readable with numpy alone.

``jaxviz convert model.keras -o model`` writes ``model.npz``: every weight as an array under
``"<layer>/<weight>"`` (Keras's layer and weight names, e.g. ``"vgg16/block1_conv1/kernel"``), the graph as
UTF-8 JSON bytes under ``"__graph__"`` (:meth:`jaxviz.graph.Graph.to_json`), and what the model needs to be
used — its preprocessing mode and where it came from — as JSON under ``"__info__"``. Nothing is pickled:
it loads with ``np.load(path, allow_pickle=False)``, without Keras, h5py or TensorFlow. A VGG of jaxviz's
table is written the same way (:func:`jaxviz.frontends.vgg_weights.save_converted`: its graph is
:func:`jaxviz.frontends.vgg.build_graph`'s, and ``__info__`` names the architecture).

Files of the earlier VGG-only format — ``"<layer>/kernel"`` and ``"<layer>/bias"`` arrays and a JSON entry
``"__jaxviz_meta__"`` (format ``jaxviz-weights``, arch, include_top), no graph — are still read
(:func:`read_legacy`).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping

import numpy as np

from ..atomic import atomic_open
from ..errors import JaxvizError, WeightsError, printable
from ..graph import Graph, name_problem
from ..untrusted import check_npz

GRAPH_KEY = "__graph__"
INFO_KEY = "__info__"
FORMAT = "jaxviz-model-1"


def _text(value: str) -> np.ndarray:
    return np.frombuffer(value.encode("utf-8"), np.uint8)


def write_model(path, graph: Graph, params: Mapping, info: Mapping | None = None) -> str:
    """Writes ``graph`` and ``params`` to ``path`` (``.npz`` added if missing), atomically; returns the path."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays = {GRAPH_KEY: _text(graph.to_json()), INFO_KEY: _text(json.dumps({"format": FORMAT, **(info or {})}))}
    for layer, weights in params.items():
        for name, value in weights.items():
            arrays[f"{layer}/{name}"] = np.asarray(value, np.float32)
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def is_model_file(path) -> bool:
    """Whether ``path`` is an ``.npz`` written by :func:`write_model` (not a weights-only ``.npz``)."""
    try:
        with zipfile.ZipFile(path) as z:
            return f"{GRAPH_KEY}.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


#: Bytes of the graph's and the info's JSON a converted file may hold (far above any real model's).
MAX_JSON_BYTES = 64 << 20


def _check_names(graph: Graph, path) -> None:
    """Every layer name (``outer/inner`` for nested models: each part) and the model's and classes' names."""
    for what, name in [("model name", graph.name), *(("layer name", part) for layer in graph.layers
                                                     for part in layer.name.split("/"))]:
        problem = name_problem(name)
        if problem:
            raise JaxvizError(f"{path}: {what} '{printable(str(name)[:80])}' {problem}; refusing the file")
    for c in graph.class_names or ():
        if not isinstance(c, str) or printable(c) != c or len(c) > 1000:
            raise JaxvizError(f"{path}: class name '{printable(str(c)[:80])}' is not plain text; refusing the file")


def read_model(path) -> tuple[Graph, dict, dict]:
    """``(graph, params, info)`` from a file :func:`write_model` wrote (checked: sizes before reading, names)."""
    try:
        with zipfile.ZipFile(path) as z:
            check_npz(z, path, {f"{GRAPH_KEY}.npy": MAX_JSON_BYTES, f"{INFO_KEY}.npy": MAX_JSON_BYTES})
        with np.load(path, allow_pickle=False) as data:
            if GRAPH_KEY not in data.files:
                raise JaxvizError(f"{path} holds weights only, no model graph; load it as the weights of its "
                                  "architecture: jaxviz.load('vgg16', weights=path) (CLI: --weights)")
            graph = Graph.from_json(bytes(data[GRAPH_KEY]).decode("utf-8"))
            _check_names(graph, path)
            info = json.loads(bytes(data[INFO_KEY]).decode("utf-8")) if INFO_KEY in data.files else {}
            if not isinstance(info, dict):
                raise ValueError("__info__ is not a JSON object")
            params: dict[str, dict] = {}
            for key in data.files:
                if key in (GRAPH_KEY, INFO_KEY):
                    continue
                layer, _, name = key.rpartition("/")
                value = data[key]
                if value.dtype.kind not in "fiub":
                    raise ValueError(f"array {key!r} holds {value.dtype} values, not numbers")
                params.setdefault(layer, {})[name] = value
    except JaxvizError:
        raise
    except MemoryError:
        raise JaxvizError(f"cannot read {path} as a jaxviz model file: it declares more than this machine can "
                          "hold (a crafted or corrupt file?)") from None
    except (OSError, ValueError, TypeError, AttributeError, IndexError, zipfile.BadZipFile, json.JSONDecodeError,
            KeyError, RuntimeError, UnicodeDecodeError) as e:
        reason = printable(" ".join(str(e).split()) or type(e).__name__)[:300]
        raise JaxvizError(f"cannot read {path} as a jaxviz model file ({reason}); convert the model again with "
                          "`jaxviz convert MODEL -o OUT`") from None
    return graph, params, info


def read_info(path) -> dict:
    """The ``__info__`` of a file :func:`write_model` wrote, without reading its arrays."""
    try:
        with zipfile.ZipFile(path) as z:
            check_npz(z, path, {f"{GRAPH_KEY}.npy": MAX_JSON_BYTES, f"{INFO_KEY}.npy": MAX_JSON_BYTES})
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(bytes(data[INFO_KEY]).decode("utf-8")) if INFO_KEY in data.files else {}
    except JaxvizError:
        raise
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        reason = printable(" ".join(str(e).split()) or type(e).__name__)[:300]
        raise JaxvizError(f"cannot read {path} as a jaxviz model file ({reason}); convert the model again with "
                          "`jaxviz convert MODEL -o OUT`") from None
    if not isinstance(info, dict):
        raise JaxvizError(f"{path}: __info__ is not a JSON object; convert the model again")
    return info


# ---------------------------------------------------------------------------------------------------------
# The earlier VGG-only format

LEGACY_META_KEY = "__jaxviz_meta__"
LEGACY_FORMAT = "jaxviz-weights"
LEGACY_FORMAT_VERSION = 1


def is_legacy_file(path) -> bool:
    """Whether ``path`` is a zip archive holding the earlier format's metadata entry."""
    try:
        with zipfile.ZipFile(path) as z:
            return f"{LEGACY_META_KEY}.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def read_legacy(path, arrays: bool = True) -> tuple[dict, dict]:
    """``(metadata, {layer: {"kernel", "bias"}})`` of a file in the earlier VGG-only format (``arrays=False``:
    the metadata alone, ``{}``); checked: sizes before reading, the format, keys ``<layer>/kernel|bias``.
    The tree is not checked against the architecture here (:mod:`jaxviz.frontends.vgg_weights` does that)."""
    if not os.path.isfile(path):
        raise WeightsError(f"weight file {path} not found; check the path")
    tree: dict[str, dict[str, np.ndarray]] = {}
    try:
        with zipfile.ZipFile(path) as z:
            check_npz(z, path, {f"{LEGACY_META_KEY}.npy": MAX_JSON_BYTES})
        with np.load(path, allow_pickle=False) as data:
            if LEGACY_META_KEY not in data.files:
                raise WeightsError(f"{path} has no jaxviz metadata: it is not a converted weight file; convert "
                                   "Keras files with `jaxviz convert`")
            try:
                meta = json.loads(bytes(data[LEGACY_META_KEY]).decode("utf8"))
            except (ValueError, UnicodeDecodeError):
                raise WeightsError(f"{path} has unreadable metadata; convert the Keras file again") from None
            if not isinstance(meta, dict) or meta.get("format") != LEGACY_FORMAT or \
                    not isinstance(meta.get("format_version", 0), int) or meta.get("format_version", 0) > 1:
                got = meta if not isinstance(meta, dict) else f"{meta.get('format')} v{meta.get('format_version')}"
                raise WeightsError(f"{path} is format {printable(str(got))[:80]}; this jaxviz reads {FORMAT} and "
                                   f"{LEGACY_FORMAT} v{LEGACY_FORMAT_VERSION}: upgrade jaxviz or convert the Keras "
                                   "file again")
            odd = []
            for key in data.files if arrays else ():
                layer, _, leaf = key.partition("/")
                if key == LEGACY_META_KEY:
                    continue
                if leaf not in ("kernel", "bias"):
                    odd.append(key)
                    continue
                tree.setdefault(layer, {})[leaf] = np.asarray(data[key])
    except WeightsError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        reason = printable(" ".join(str(e).split()) or type(e).__name__)[:300]
        raise WeightsError(f"cannot read {path} ({reason}): it is not a converted .npz file, or it is truncated; "
                           "convert the Keras file again") from None
    if odd:
        raise WeightsError(f"{path} has unexpected keys {printable(', '.join(odd))[:300]}; convert the Keras "
                           "file again")
    return meta, tree
