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


def read_model(path) -> tuple[Graph, dict, dict]:
    """``(graph, params, info)`` from a file :func:`write_model` wrote."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if GRAPH_KEY not in data.files:
                raise JaxvizError(f"{path} holds weights only, no model graph; load it as the weights of its "
                                  "architecture: jaxviz.load('vgg16', weights=path) (CLI: --weights)")
            graph = Graph.from_json(bytes(data[GRAPH_KEY]).decode("utf-8"))
            info = json.loads(bytes(data[INFO_KEY]).decode("utf-8")) if INFO_KEY in data.files else {}
            params: dict[str, dict] = {}
            for key in data.files:
                if key in (GRAPH_KEY, INFO_KEY):
                    continue
                layer, _, name = key.rpartition("/")
                params.setdefault(layer, {})[name] = data[key]
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError, KeyError) as e:
        raise JaxvizError(f"cannot read {path} as a jaxviz model file ({e}); convert the model again with "
                          "`jaxviz convert MODEL -o OUT`") from None
    return graph, params, info
