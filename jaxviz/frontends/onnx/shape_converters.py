"""ONNX converters of the ops that move values around: Flatten, Reshape, Squeeze/Unsqueeze, Transpose, Concat,
Pad (static shapes; the batch axis stays first and apart)."""

from __future__ import annotations

import numpy as np

from .context import NHWC, Context, ConversionError, Value
from .converters import common_layout
from .fold import _axes, _ints, reshape_target
from .registry import converter

# ---------------------------------------------------------------------------------------------------------
# Shapes


def _reshape_to(ctx: Context, node, v: Value, target) -> None:
    """``v`` reshaped to ONNX shape ``target`` (batch axis first, kept)."""
    target = [int(t) for t in target]
    if len(target) > 1 and (target[0] in (0, ctx.batch) or (target[0] == -1 and -1 not in target[1:])):
        target[0] = v.shape[0]
    elif target == [-1]:  # PyTorch's as_strided (the dynamo exporter's AdaptiveAvgPool2d) flattens the batch too
        raise ConversionError(f"a reshape of {list(v.shape[1:])} per image to [-1] that folds the batch axis into "
                              "the others (export with torch.onnx.export(..., dynamo=False))")
    else:
        raise ConversionError(f"a reshape to {target} that moves the batch axis")
    shape = reshape_target(v.shape, target)
    if len(v.shape) == 4 and v.layout == "nhwc" and len(shape) == 2:
        return _flatten_map(ctx, node, v)
    if len(shape) == 4 and shape == v.shape and v.layout == "nhwc":
        return ctx.bind(node.output[0], v)
    layer = ctx.emit("Reshape", {"target_shape": list(shape[1:])}, [ctx.plain(v)])
    ctx.output(node.output[0], layer)


def _flatten_map(ctx: Context, node, v: Value) -> None:
    layer = ctx.emit("Flatten", {}, [v.layer])
    if v.shape[2] * v.shape[3] == 1 or v.shape[1] == 1:
        ctx.output(node.output[0], layer)  # the same element order as ONNX's
    else:
        ctx.output(node.output[0], layer, "flat_hwc", v)


@converter("Flatten", opsets=(1, 22))
def flatten(ctx, node, attrs):
    v = ctx.act(node.input[0])
    axis = int(attrs.get("axis", 1)) % max(len(v.shape), 1)
    if axis == 0:
        raise ConversionError("a flatten that folds the batch axis (axis=0)")
    target = [0, int(np.prod(v.shape[1:axis])), int(np.prod(v.shape[axis:]))] if axis > 1 else [0, -1]
    _reshape_to(ctx, node, v, target)


@converter("Reshape", opsets=(1, 22))
def reshape(ctx, node, attrs):
    v = ctx.act(node.input[0])
    target = ctx.const(node.input[1]) if len(node.input) > 1 else attrs.get("shape")
    if target is None:
        raise ConversionError("a shape computed at run time from activations")
    _reshape_to(ctx, node, v, _ints(target))


@converter("Squeeze", "Unsqueeze", opsets=(1, 22))
def squeeze(ctx, node, attrs):
    v = ctx.act(node.input[0])
    axes = _axes([ctx.const(i) for i in node.input], attrs)
    shape = list(v.shape)
    if node.op_type == "Squeeze":
        axes = [i for i, d in enumerate(shape) if d == 1 and i > 0] if axes is None else [a % len(shape) for a in axes]
        if 0 in axes:
            raise ConversionError("a squeeze of the batch axis")
        shape = [d for i, d in enumerate(shape) if i not in axes]
    else:
        rank = len(shape) + len(axes)
        for a in sorted(a % rank for a in axes):
            if a == 0:
                raise ConversionError("an unsqueeze before the batch axis")
            shape.insert(a, 1)
    _reshape_to(ctx, node, v, shape)


@converter("Transpose", opsets=(1, 22))
def transpose(ctx, node, attrs):
    v = ctx.act(node.input[0])
    rank = len(v.shape)
    perm = _ints(attrs.get("perm", list(range(rank))[::-1]))
    if perm[0] != 0:
        raise ConversionError(f"a transpose {perm} that moves the batch axis")
    if v.layout == "flat_hwc":
        v = Value(ctx.plain(v), v.shape)
    inv = list(np.argsort(NHWC)) if v.layout == "nhwc" else list(range(rank))
    out_shape = tuple(v.shape[p] for p in perm)
    options = [(NHWC, "nhwc"), (tuple(range(4)), "plain")] if rank == 4 else [(tuple(range(rank)), "plain")]
    best = None
    for layout_perm, layout in options:
        q = [int(inv[perm[p]]) for p in layout_perm]  # the layer's axes the output's layer takes, in order
        if q == list(range(rank)):
            return ctx.bind(node.output[0], Value(v.layer, out_shape, layout))
        best = best or (q, layout)
    q, layout = best
    ctx.output(node.output[0], ctx.emit("Permute", {"dims": q[1:]}, [v.layer]), layout)


@converter("Concat", opsets=(1, 22))
def concat(ctx, node, attrs):
    names = [n for n in node.input if n]
    if any(ctx.is_const(n) for n in names):
        raise ConversionError("a concatenation of activations and constants, which jaxviz does not read")
    values = [ctx.act(n) for n in names]
    axis = int(attrs["axis"]) % len(values[0].shape)
    if axis == 0:
        raise ConversionError("a concatenation along the batch axis")
    layers, layout = common_layout(ctx, values)
    jaxis = NHWC.index(axis) if layout == "nhwc" else axis
    ctx.output(node.output[0], ctx.emit("Concatenate", {"axis": jaxis}, layers), layout)


@converter("Pad", opsets=(2, 22))
def pad(ctx, node, attrs):
    v = ctx.act(node.input[0])
    pads = _ints(ctx.const(node.input[1]) if ctx.opset >= 11 else attrs["pads"])
    value = attrs.get("value", 0.0)
    if ctx.opset >= 11 and len(node.input) > 2 and node.input[2]:
        value = float(np.asarray(ctx.const(node.input[2])).reshape(()))
    if len(node.input) > 3 and node.input[3]:
        raise ConversionError("Pad with axes, which jaxviz does not read")
    rank = len(v.shape)
    pairs = [[pads[i], pads[i + rank]] for i in range(rank)]
    if pairs[0] != [0, 0] or any(p < 0 for p in pads):
        raise ConversionError(f"pads {pads} (on the batch axis, or negative)")
    mode = str(attrs.get("mode", "constant"))
    if mode not in ("constant", "reflect", "edge"):
        raise ConversionError(f"padding mode {mode!r}")
    if rank == 4:
        x, layout = ctx.nhwc(v), "nhwc"
        pairs = [pairs[2], pairs[3], pairs[1]]
        if mode == "constant" and value == 0 and pairs[2] == [0, 0]:
            return ctx.output(node.output[0], ctx.emit("ZeroPadding2D", {"padding": pairs[:2]}, [x]), layout)
    else:
        x, layout, pairs = ctx.plain(v), "plain", pairs[1:]
    ctx.output(node.output[0], ctx.emit("Pad", {"pads": pairs, "mode": mode, "value": float(value)}, [x]), layout)
