"""What the ONNX converters share with the reader: the bounds on a file, an activation's :class:`Value` (its
ONNX shape and the layout jaxviz holds it in), the conversion :class:`Context` that adds layers, and the
errors."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from ... import layers as layers_lib
from ...errors import JaxvizError
from ...graph import make_layer
from ...ops import EXACT

#: Bounds on a file from a stranger, checked before and after parsing.
MAX_FILE_BYTES = 2 * 2**30  # protobuf's own limit for one message
MAX_NODES = 100_000
MAX_INITIALIZERS = 100_000
MAX_TENSOR_ELEMENTS = 2**28  # one weight or folded constant (1 GiB of float32; VGG16's fc1 has 2**26.6)
MAX_TOTAL_ELEMENTS = 2**30  # all weights together (4 GiB of float32)
#: The side a free (symbolic) input size is evaluated at while folding static shapes.
FREE_SIDE = 224

NHWC = (0, 2, 3, 1)  # jaxviz's value = ONNX's NCHW value transposed by this
_NAME_OK = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")


@dataclasses.dataclass(frozen=True)
class Value:
    """An activation: the layer holding it, its ONNX shape (batch 1), its layout, and for ``"flat_hwc"`` the
    NHWC map it flattens."""

    layer: str
    shape: tuple[int, ...]
    layout: str = "plain"
    src: Value | None = None


class ConversionError(JaxvizError):
    """A node jaxviz cannot read (the reader adds the file and the node to the message)."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise JaxvizError("reading ONNX files needs the onnx package: pip install 'jaxviz[onnx]'") from None
    return onnx


def clean_name(name: str) -> str | None:
    """``name`` as a layer name (leading ``/`` dropped), or None where it is empty, too long, holds control
    characters or a ``..`` / ``.`` path component."""
    name = str(name).lstrip("/")
    if not name or not _NAME_OK.match(name) or any(part in ("", ".", "..") for part in name.split("/")):
        return None
    return name


class Context:
    """The state of one conversion: constants, activations, emitted layers and their shapes."""

    def __init__(self, opset: int, batch: int):
        self.opset = opset
        self.batch = batch  # the file's static batch size (1 where it is free)
        self.consts: dict[str, np.ndarray] = {}
        self.values: dict[str, Value] = {}
        self.layers: list[tuple[str, str, dict, list[str]]] = []
        self.params: dict[str, dict] = {}
        self.jshape: dict[str, tuple[int, ...]] = {}
        self.main: dict[str, int] = {}  # layer → the node whose output it is
        self.aux: dict[str, tuple[int, str]] = {}  # layer → (node, role) for the layers a converter adds
        self.node = -1
        self.keras_scopes = False  # node names are TensorFlow's model/layer/op (a tf2onnx file)
        self._cache: dict[tuple[str, str], str] = {}
        self._total = 0

    # --- constants and activations ------------------------------------------------------------------

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name) if name else None

    def is_const(self, name: str) -> bool:
        return not name or name in self.consts

    def set_const(self, name: str, value) -> None:
        value = np.asarray(value)
        if value.size > MAX_TENSOR_ELEMENTS:
            raise ConversionError(f"a constant of {value.size:,} elements (over {MAX_TENSOR_ELEMENTS:,})")
        self.consts[name] = value

    def act(self, name: str) -> Value:
        if name in self.values:
            return self.values[name]
        if name in self.consts:
            raise ConversionError(f"input {name!r} is a constant where jaxviz reads an activation")
        raise ConversionError(f"input {name!r} is produced by no earlier node")

    def bind(self, name: str, value: Value) -> None:
        self.values[name] = value

    # --- layers ---------------------------------------------------------------------------------------

    def emit(self, kind: str, cfg: dict, inputs: list[str], params: dict | None = None, role: str | None = None) -> str:
        """Adds a layer; ``role`` names a helper layer (padding, a transpose), else it holds the node's output."""
        name = f"#{len(self.layers)}"
        params = {k: np.asarray(v, np.float32) for k, v in (params or {}).items()}
        self._total += sum(v.size for v in params.values())
        if self._total > MAX_TOTAL_ELEMENTS:
            raise ConversionError(f"weights of over {MAX_TOTAL_ELEMENTS:,} elements in all")
        layer = make_layer(name, kind, cfg, inputs)

        def run(p, xs):
            out = layers_lib.apply_layer(layer, p, xs, EXACT)
            return layers_lib.apply_activation(out[1], out[0], EXACT) if isinstance(out, tuple) else out

        specs = [jax.ShapeDtypeStruct(self.jshape[i], jnp.float32) for i in inputs]
        pspecs = {k: jax.ShapeDtypeStruct(v.shape, jnp.float32) for k, v in params.items()}
        try:
            out = jax.eval_shape(run, pspecs, specs)
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError) as e:
            raise ConversionError(f"its {kind} does not fit its inputs ({' '.join(str(e).split())[:200]})") from None
        self.layers.append((name, kind, cfg, list(inputs)))
        self.params[name] = params
        self.jshape[name] = tuple(out.shape)
        if role is None:
            self.main[name] = self.node
        else:
            self.aux[name] = (self.node, role)
        return name

    def output(self, out: str, layer: str, layout: str = "plain", src: Value | None = None) -> Value:
        """Binds ONNX output ``out`` to ``layer`` (its ONNX shape follows from the layer's shape and layout)."""
        j = self.jshape[layer]
        shape = (j[0], j[3], j[1], j[2]) if layout == "nhwc" else j
        v = Value(layer, tuple(shape), layout, src)
        self.bind(out, v)
        return v

    def nhwc(self, v: Value) -> str:
        """``v``'s layer as a channels-last map (a transpose is added for a plain 4D value)."""
        if v.layout == "nhwc":
            return v.layer
        if len(v.shape) != 4:
            raise ConversionError(f"a {len(v.shape)}D value where jaxviz needs an image map [N, C, H, W]")
        v = Value(self.plain(v), v.shape)
        key = (v.layer, "nhwc")
        if key not in self._cache:
            self._cache[key] = self.emit("Permute", {"dims": [2, 3, 1]}, [v.layer], role="nhwc")
        return self._cache[key]

    def plain(self, v: Value) -> str:
        """``v``'s layer in ONNX's own layout (a transpose or a flatten in C·H·W order is added if needed)."""
        if v.layout == "plain":
            return v.layer
        key = (v.layer, "plain")
        if key not in self._cache:
            if v.layout == "flat_hwc":
                chw = self.emit("Permute", {"dims": [3, 1, 2]}, [v.src.layer], role="nchw")
                self._cache[key] = self.emit("Flatten", {}, [chw], role="flatten")
            elif v.shape[2] * v.shape[3] == 1 or v.shape[1] == 1:  # the same element order either way
                self._cache[key] = self.emit("Reshape", {"target_shape": list(v.shape[1:])}, [v.layer], role="nchw")
            else:
                self._cache[key] = self.emit("Permute", {"dims": [3, 1, 2]}, [v.layer], role="nchw")
        return self._cache[key]


# ---------------------------------------------------------------------------------------------------------
# Files
