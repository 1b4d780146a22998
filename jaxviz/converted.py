"""jaxviz's own model format: one ``.npz`` with the weights and the layer graph, readable with numpy alone.

``jaxviz convert model.keras -o model`` writes ``model.npz``: every weight as an array under
``"<layer>/<weight>"`` (Keras's layer and weight names, e.g. ``"vgg16/block1_conv1/kernel"``), the graph as
UTF-8 JSON bytes under ``"__graph__"`` (:meth:`jaxviz.graph.Graph.to_json`), and what the model needs to be
used — its preprocessing mode and where it came from — as JSON under ``"__info__"``. Nothing is pickled:
it loads with ``np.load(path, allow_pickle=False)``, without Keras, h5py or TensorFlow.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping

import numpy as np

from .errors import JaxvizError
from .graph import Graph
from .untrusted import check_npz

GRAPH_KEY = "__graph__"
INFO_KEY = "__info__"
FORMAT = "jaxviz-model-1"


def _text(value: str) -> np.ndarray:
    return np.frombuffer(value.encode("utf-8"), np.uint8)


def write_model(path, graph: Graph, params: Mapping, info: Mapping | None = None) -> str:
    """Writes ``graph`` and ``params`` to ``path`` (``.npz`` added if missing), atomically; returns the path."""
    from .atomic import atomic_open

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
    from .errors import printable
    from .graph import name_problem

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
    from .errors import printable

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
