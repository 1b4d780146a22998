"""ONNX files → a jaxviz layer graph + params, converted once at load (NCHW → NHWC, OIHW → HWIO).

Every activation is tracked with its ONNX shape and the layout its layer holds it in: ``"nhwc"`` (an ONNX
``[N, C, H, W]`` map held channels-last, as every jaxviz layer computes), ``"plain"`` (as ONNX holds it), or
``"flat_hwc"`` (an ONNX ``Flatten`` of an NCHW map held in H·W·C order: the next ``Gemm``/``MatMul`` gets
its weight rows permuted to match, else a transpose restores ONNX's C·H·W order). Constants (initializers,
``Constant`` nodes and everything computed from them and from static shapes) are folded in numpy at load.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np

from ...errors import JaxvizError, WeightsError
from ...graph import Graph, make_layer
from . import converters, registry, shape_converters  # noqa: F401  (the converters register at import)
from .context import (
    _NAME_OK,
    FREE_SIDE,
    MAX_FILE_BYTES,
    MAX_INITIALIZERS,
    MAX_NODES,
    MAX_TENSOR_ELEMENTS,
    MAX_TOTAL_ELEMENTS,
    Context,
    ConversionError,
    _onnx,
    clean_name,
)
from .fold import FOLDS


def is_onnx_file(path) -> bool:
    return str(path).lower().endswith(".onnx")


def read_model(path: str | os.PathLike) -> tuple[Graph, dict, dict]:
    """Reads an ONNX model file (PyTorch's exporters, tf2onnx, …) into jaxviz's layer graph.

    Returns:
      ``(graph, params, info)`` as :func:`jaxviz.frontends.keras.read_model`: layers named by the PyTorch module
      path where the exporter records it (``features.28``, ``layer4.2.conv3``), else by the ONNX node name
      (both, and every module path whose output a layer is, resolve as aliases); ``info`` =
      ``{"format": "onnx", "name", "application": None, "preprocess": "none", "opset", "producer",
      "input_layout": "NCHW" | "NHWC"}``.

    Raises:
      JaxvizError (one line naming the file): a missing, oversized, corrupt or unsupported file, external
      data outside the model's folder, or ops jaxviz does not read (listed with their nodes).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model file {path} not found; check the path")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise WeightsError(f"{path} is {size / 2**30:.1f} GiB, over the {MAX_FILE_BYTES / 2**30:.0f} GiB an ONNX file "
                           "can hold; keep the weights in external data (model.onnx.data)")
    onnx = _onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: a corrupt or non-ONNX file
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise WeightsError(f"cannot read {path} as an ONNX model ({reason}): it is truncated, corrupt or not an "
                           "ONNX file") from None
    try:
        return _convert(model, path)
    except ConversionError as e:
        raise JaxvizError(f"{path}: {e}") from None
    except JaxvizError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, MemoryError) as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise WeightsError(f"cannot read {path} as an ONNX model ({reason}): it is malformed") from None


def _external_location(tensor, folder: Path, path: Path) -> Path:
    """The external data file of ``tensor``, confined to ``folder`` (no absolute path, no ``..``, no link out)."""
    info = {e.key: e.value for e in tensor.external_data}
    loc = info.get("location", "")
    parts = Path(loc).parts
    if not loc or os.path.isabs(loc) or loc.startswith(("/", "\\")) or ".." in parts or ":" in loc:
        raise WeightsError(f"{path}: weight {tensor.name!r} points to external data {loc!r} outside the model's "
                           "folder; jaxviz reads external data only from files beside the model")
    target = (folder / loc).resolve()
    if folder.resolve() not in target.parents:
        raise WeightsError(f"{path}: external data {loc!r} of weight {tensor.name!r} leads outside the model's folder")
    if not target.is_file():
        raise WeightsError(f"{path}: external data file {loc!r} of weight {tensor.name!r} not found beside the model")
    offset, length = int(info.get("offset", 0) or 0), info.get("length")
    size = target.stat().st_size
    if offset < 0 or offset > size or (length is not None and offset + int(length) > size):
        raise WeightsError(f"{path}: weight {tensor.name!r} reads past the end of its external data {loc!r}")
    return target


def _initializers(model, path: Path, ctx: Context) -> None:
    from onnx import numpy_helper  # onnx is an optional extra, imported when a file is read

    folder = path.parent
    total = 0
    for t in model.graph.initializer:
        n = int(np.prod(list(t.dims), dtype=np.float64)) if len(t.dims) else 1
        total += n
        if n > MAX_TENSOR_ELEMENTS or total > MAX_TOTAL_ELEMENTS:
            raise WeightsError(f"{path}: weight {t.name!r} has {n:,} elements ({total:,} so far; jaxviz reads at "
                               f"most {MAX_TENSOR_ELEMENTS:,} per weight and {MAX_TOTAL_ELEMENTS:,} in all)")
        if t.data_location == 1:  # EXTERNAL
            _external_location(t, folder, path)
            ctx.set_const(t.name, numpy_helper.to_array(t, str(folder)))
        else:
            ctx.set_const(t.name, numpy_helper.to_array(t))


def _attrs(node) -> dict:
    from onnx import helper, numpy_helper  # the optional extra (see above)

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif a.type == a.TENSOR:
            v = numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode("utf-8", "replace") for s in v]
        out[a.name] = v
    return out


def _opset(model) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def _input(model, ctx: Context, path: Path):
    from onnx.helper import tensor_dtype_to_np_dtype  # the optional extra

    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise WeightsError(f"{path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)[:120]}); jaxviz "
                           "reads models of one image input")
    x = inputs[0]
    tt = x.type.tensor_type
    if tt.elem_type and np.dtype(tensor_dtype_to_np_dtype(tt.elem_type)).kind != "f":
        raise WeightsError(f"{path}: input {x.name!r} is not a float tensor; jaxviz reads image models")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
    if len(dims) != 4:
        raise WeightsError(f"{path}: input {x.name!r} has shape {dims}; jaxviz reads image models with one "
                           "[N, C, H, W] (or [N, H, W, C]) input")
    nchw = not (dims[3] is not None and dims[3] <= 4 and (dims[1] is None or dims[1] > 4))
    c, h, w = (dims[1], dims[2], dims[3]) if nchw else (dims[3], dims[1], dims[2])
    if c is None:
        raise WeightsError(f"{path}: input {x.name!r} has no fixed number of channels")
    ctx.batch = dims[0] or 1
    name = "#input"
    ctx.layers.append((name, "InputLayer", {"batch_shape": [None, h, w, c], "name": x.name}, []))
    ctx.params[name] = {}
    ctx.jshape[name] = (1, h or FREE_SIDE, w or FREE_SIDE, c)
    ctx.output(x.name, name, "nhwc" if nchw else "plain")
    return x.name, "NCHW" if nchw else "NHWC"


def _scope_chain(node, keras_scopes: bool = False) -> list[str]:
    """The PyTorch module paths a node is inside, outermost first (``['layer4', 'layer4.2', 'layer4.2.conv3']``):
    from the dynamo exporter's ``pkg.torch.onnx.name_scopes`` metadata (``['', 'layer4', 'layer4.2',
    'layer4.2.conv3', 'conv2d_52']``: module paths, then the FX node) or the TorchScript exporter's node
    name (``/layer4/layer4.2/conv3/Conv``). With ``keras_scopes`` (a tf2onnx file), the Keras layer a node's
    TensorFlow name puts it in (``model/conv3/Relu`` is in ``conv3``)."""
    if keras_scopes:
        parts = node.name.split("/")
        return [parts[1]] if len(parts) == 3 and clean_name(parts[1]) is not None else []
    meta = {p.key: p.value for p in getattr(node, "metadata_props", ())}
    scopes = None
    if len(meta.get("pkg.torch.onnx.name_scopes", "")) < 4096:
        try:
            scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "None"))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            scopes = None
        if isinstance(scopes, list) and scopes and all(isinstance(s, str) for s in scopes):
            scopes = scopes[:-1]  # the last one is the FX node's own name, not a module
        else:
            scopes = None
    if scopes is None:
        if not node.name.startswith("/") or node.name.count("/") < 2:
            return []
        scopes = node.name.strip("/").split("/")[:-1]
    # Each scope is named relative to its parent, except a container's child, which is named relative to
    # the container's parent (``layer2.0`` / ``downsample`` / ``downsample.0`` is ``layer2.0.downsample.0``).
    chain, cur, base, prev = [], "", "", None
    for s in scopes:
        if not s:
            continue
        if prev is not None and s.startswith(prev + "."):
            cur = f"{base}.{s}" if base else s
        else:
            base, cur = cur, (f"{cur}.{s}" if cur else s)
        prev = s
        if clean_name(cur) is None or "/" in cur:
            return []
        chain.append(cur)
    return chain


def _convert(model, path: Path):
    g = model.graph
    if len(g.node) > MAX_NODES or len(g.initializer) > MAX_INITIALIZERS:
        raise WeightsError(f"{path} has {len(g.node):,} nodes and {len(g.initializer):,} weights, over jaxviz's "
                           f"bounds ({MAX_NODES:,} and {MAX_INITIALIZERS:,})")
    opset = _opset(model)
    if not registry.OPSETS[0] <= opset <= registry.OPSETS[1]:
        raise WeightsError(f"{path} uses ONNX opset {opset}; jaxviz reads opsets {registry.OPSETS[0]} to "
                           f"{registry.OPSETS[1]} (convert it with onnx.version_converter)")

    unknown = [(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}", n.name or f"#{i}")
               for i, n in enumerate(g.node)
               if n.domain not in ("", "ai.onnx") or (registry.find(n.op_type, opset) is None
                                                      and n.op_type not in FOLDS and n.op_type not in _SPECIAL)]
    if unknown:
        ops = sorted({op for op, _ in unknown})
        where = "; ".join(f"{op}: {', '.join(sorted({n for o, n in unknown if o == op})[:3])}" for op in ops)
        raise JaxvizError(f"{path}: ONNX ops jaxviz does not read: {', '.join(ops)} (nodes {where})"[:600])
    ctx = Context(opset, 1)
    ctx.keras_scopes = model.producer_name == "tf2onnx"
    _initializers(model, path, ctx)
    input_name, layout = _input(model, ctx, path)
    for i, node in enumerate(g.node):
        ctx.node = i
        try:
            _convert_node(ctx, node)
        except ConversionError as e:
            raise ConversionError(f"node {node.name or '#' + str(i)!r} ({node.op_type}): {e}") from None
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise ConversionError(f"node {node.name or '#' + str(i)!r} ({node.op_type}) is malformed "
                                  f"({' '.join(str(e).split())[:160]})") from None
    if not g.output or g.output[0].name not in ctx.values:
        raise WeightsError(f"{path}: the model's output is not computed from its input")
    out = ctx.values[g.output[0].name]
    last = ctx.plain(out) if out.layout == "flat_hwc" else out.layer
    if out.layout == "nhwc" and out.shape[2] * out.shape[3] == 1:  # class scores [N, C, 1, 1] → [N, C]
        ctx.node = len(g.node) - 1
        last = ctx.emit("Flatten", {}, [last], role="flatten")
    return _result(model, ctx, last, path, input_name, layout, opset)


_SPECIAL = ("Shape", "Size", "Constant", "ConstantOfShape")


def _convert_node(ctx: Context, node) -> None:
    attrs = _attrs(node)
    op = node.op_type
    if op == "Constant":
        value = next(iter(attrs.values()))
        ctx.set_const(node.output[0], value if isinstance(value, np.ndarray) else np.asarray(value))
        return
    if op in ("Shape", "Size") and node.input[0] in ctx.values:
        shape = (ctx.batch, *ctx.values[node.input[0]].shape[1:])
        if op == "Size":
            ctx.set_const(node.output[0], np.asarray(np.prod(shape), np.int64))
            return
        start, end = int(attrs.get("start", 0)), attrs.get("end")
        ctx.set_const(node.output[0], np.asarray(shape[start:None if end is None else int(end)], np.int64))
        return
    if op == "ConstantOfShape":
        shape = [int(d) for d in ctx.const(node.input[0]).reshape(-1)]
        if any(d < 0 for d in shape) or np.prod(shape, dtype=np.float64) > MAX_TENSOR_ELEMENTS:
            raise ConversionError(f"a constant of shape {shape[:8]} (over {MAX_TENSOR_ELEMENTS:,} elements)")
        value = attrs.get("value", np.zeros(1, np.float32))
        ctx.set_const(node.output[0], np.full(shape, np.asarray(value).reshape(-1)[0], np.asarray(value).dtype))
        return
    if op in FOLDS and all(ctx.is_const(i) for i in node.input):
        outs = FOLDS[op]([ctx.const(i) for i in node.input], attrs)
        for name, value in zip(node.output, outs):
            ctx.set_const(name, value)
        return
    conv = registry.find(op, ctx.opset)
    if conv is None:
        raise ConversionError("jaxviz reads this op only on constants")
    conv.fn(ctx, node, attrs)


def _result(model, ctx: Context, last: str, path: Path, input_name: str, layout: str, opset: int):
    g = model.graph
    # Keep what the output depends on.
    needed, todo = set(), [last]
    inputs = {n: ins for n, _, _, ins in ctx.layers}
    while todo:
        n = todo.pop()
        if n not in needed:
            needed.add(n)
            todo.extend(inputs[n])
    kept = [x for x in ctx.layers if x[0] in needed]
    names = _final_names(g, ctx, kept, input_name)
    layers = tuple(make_layer(names[n], k, c, [names[i] for i in ins]) for n, k, c, ins in kept)
    aliases = _aliases(g, ctx, names, needed)
    title = clean_name(g.name) or path.stem
    graph = Graph(title, layers, (names[last],), aliases=tuple(aliases))
    params = {names[n]: p for n, p in ctx.params.items() if n in needed and p}
    producer = " ".join(x for x in (model.producer_name, model.producer_version) if x)
    info = {"format": "onnx", "name": title, "application": None, "preprocess": "none", "opset": opset,
            "producer": producer, "input_layout": layout}
    return graph, params, info


def _module_outputs(g, ctx: Context) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Per node holding a layer: the module paths whose output it is, deepest first (``layer4.2.relu_2``,
    ``layer4.2``, ``layer4``), and the paths it lies in."""
    nodes = sorted(set(ctx.main.values()))
    last: dict[str, int] = {}
    chains = {i: _scope_chain(g.node[i], ctx.keras_scopes) for i in nodes}
    for i in nodes:
        for s in chains[i]:
            last[s] = i
    return {i: [s for s in reversed(chains[i]) if last[s] == i] for i in nodes}, chains


def _final_names(g, ctx: Context, kept, input_name: str) -> dict[str, str]:
    outputs_of, _ = _module_outputs(g, ctx)
    used: set[str] = set()
    names: dict[str, str] = {}

    def unique(base: str) -> str:
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return name

    main_of_node: dict[int, str] = {}
    for n, _, _, _ in kept:  # the layers holding node outputs first, so they get their own names
        if n == "#input":
            names[n] = unique(clean_name(input_name) or "input")
        elif n in ctx.main:
            i = ctx.main[n]
            node = g.node[i]
            paths = outputs_of.get(i, [])
            base = paths[0] if paths else (clean_name(node.name) or f"{node.op_type}_{i}")
            if i in main_of_node:  # a node with several output layers
                base = f"{main_of_node[i]}.{len(names)}"
            names[n] = unique(base)
            main_of_node.setdefault(i, names[n])
    for n, _, _, _ in kept:
        if n not in names:
            i, role = ctx.aux[n]
            node = g.node[i]
            owner = main_of_node.get(i) or (outputs_of.get(i) or [None])[0] or clean_name(node.name) or \
                f"{node.op_type}_{i}"
            names[n] = unique(f"{owner}.{role}")
    return names


def _aliases(g, ctx: Context, names: dict[str, str], needed: set[str]) -> list[tuple[str, str]]:
    outputs_of, _ = _module_outputs(g, ctx)
    taken = set(names.values())
    out: dict[str, str] = {}
    for n, i in ctx.main.items():
        if n not in needed:
            continue
        node = g.node[i]
        candidates = [*outputs_of.get(i, [])[1:], node.name, clean_name(node.name)]
        for a in candidates:
            if a and a not in taken and a not in out and _NAME_OK.match(a):
                out[a] = names[n]
    return sorted(out.items())
