"""One converter per ONNX op (see :mod:`jaxviz.frontends.onnx.registry`), each emitting existing jaxviz layer kinds.

Layout: convolutions, pooling, batch and response normalisation run channels-last (``ctx.nhwc``);
elementwise ops keep their input's layout; reshapes run in ONNX's own layout (``ctx.plain``).
"""

from __future__ import annotations

import math

import numpy as np

from .context import NHWC, Context, ConversionError, Value
from .fold import _axes, _ints
from .registry import converter

# ---------------------------------------------------------------------------------------------------------
# Helpers


def _weight(ctx: Context, name: str, what: str) -> np.ndarray:
    w = ctx.const(name)
    if w is None:
        raise ConversionError(f"its {what} is computed at run time; jaxviz reads it only as a stored weight")
    return np.asarray(w, np.float32)


def _unary(ctx: Context, node, kind: str, cfg: dict | None = None) -> None:
    v = ctx.act(node.input[0])
    layer = ctx.emit(kind, cfg or {}, [v.layer])
    ctx.bind(node.output[0], Value(layer, v.shape, v.layout, v.src))


def _window_pads(attrs, in_hw, kernel, strides, dilations) -> list[list[int]]:
    """``[[top, bottom], [left, right]]`` from ``pads`` / ``auto_pad`` at the input's size."""
    auto = str(attrs.get("auto_pad", "NOTSET"))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for n, k, s, d in zip(in_hw, kernel, strides, dilations):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small = total // 2
            out.append([small, total - small] if auto == "SAME_UPPER" else [total - small, small])
        return out
    if auto == "VALID":
        return [[0, 0], [0, 0]]
    pads = _ints(attrs.get("pads", [0, 0, 0, 0]))
    return [[pads[0], pads[2]], [pads[1], pads[3]]]


def _spatial(attrs, kernel) -> tuple[list[int], list[int]]:
    if len(kernel) != 2:
        raise ConversionError(f"a {len(kernel)}D window; jaxviz reads 2D convolutions and pools")
    return _ints(attrs.get("strides", [1, 1])), _ints(attrs.get("dilations", [1, 1]))


def layout_axis(v: Value, axis: int) -> int:
    """The axis of ``v``'s layer that ONNX's ``axis`` is."""
    axis %= len(v.shape)
    return NHWC.index(axis) if v.layout == "nhwc" else axis


# ---------------------------------------------------------------------------------------------------------
# Convolution and pooling


@converter("Conv", opsets=(1, 22))
def conv(ctx: Context, node, attrs) -> None:
    v = ctx.act(node.input[0])
    w = _weight(ctx, node.input[1], "kernel")
    bias = _weight(ctx, node.input[2], "bias") if len(node.input) > 2 and node.input[2] else None
    o, ig, kh, kw = w.shape if w.ndim == 4 else (None,) * 4
    if o is None:
        raise ConversionError(f"a kernel of shape {w.shape}; jaxviz reads 2D convolutions")
    strides, dilations = _spatial(attrs, (kh, kw))
    groups = int(attrs.get("group", 1))
    x = ctx.nhwc(v)
    c = v.shape[1]
    if c != ig * groups:
        raise ConversionError(f"its kernel takes {ig * groups} channels, its input has {c}")
    pads = _window_pads(attrs, v.shape[2:], (kh, kw), strides, dilations)
    same = [[((k - 1) * d) // 2, (k - 1) * d - ((k - 1) * d) // 2] for k, d in zip((kh, kw), dilations)]
    if not any(map(any, pads)):
        padding = "valid"
    elif strides == [1, 1] and pads == same:
        padding = "same"  # Keras's "same" at stride 1 pads exactly these, at any input size
    else:
        x = ctx.emit("ZeroPadding2D", {"padding": pads}, [x], role="pad")
        padding = "valid"
    cfg = {"strides": strides, "padding": padding, "dilation_rate": dilations, "use_bias": bias is not None}
    if groups > 1 and groups == c and ig == 1:
        kernel = w.reshape(c, o // c, kh, kw).transpose(2, 3, 0, 1)  # output channel c·m + j, as Keras's
        kind = "DepthwiseConv2D"
    else:
        kernel = w.transpose(2, 3, 1, 0)  # OIHW → HWIO
        kind = "Conv2D"
        if groups > 1:
            cfg["groups"] = groups
    params = {"kernel": kernel, **({"bias": bias} if bias is not None else {})}
    ctx.output(node.output[0], ctx.emit(kind, cfg, [x], params), "nhwc")


@converter("ConvTranspose", opsets=(1, 22))
def conv_transpose(ctx: Context, node, attrs) -> None:
    """A transposed convolution: Keras's ``Conv2DTranspose`` with "valid" padding and ``output_padding`` (the
    full output), then ONNX's ``pads`` cropped off."""
    v = ctx.act(node.input[0])
    w = _weight(ctx, node.input[1], "kernel")
    bias = _weight(ctx, node.input[2], "bias") if len(node.input) > 2 and node.input[2] else None
    if w.ndim != 4 or int(attrs.get("group", 1)) != 1:
        raise ConversionError(f"a kernel of shape {w.shape}, group {attrs.get('group', 1)}; jaxviz reads 2D "
                              "transposed convolutions without groups")
    if "output_shape" in attrs or str(attrs.get("auto_pad", "NOTSET")) != "NOTSET":
        raise ConversionError("output_shape / auto_pad, which jaxviz does not read; export with explicit pads")
    strides, dilations = _spatial(attrs, w.shape[2:])
    pads = _ints(attrs.get("pads", [0, 0, 0, 0]))
    extra = _ints(attrs.get("output_padding", [0, 0]))
    cfg = {"strides": strides, "padding": "valid", "dilation_rate": dilations, "output_padding": extra,
           "use_bias": bias is not None}
    params = {"kernel": w.transpose(2, 3, 1, 0), **({"bias": bias} if bias is not None else {})}  # → [kh, kw, out, in]
    if any(pads):
        layer = ctx.emit("Conv2DTranspose", cfg, [ctx.nhwc(v)], params, role="full")
        layer = ctx.emit("Cropping2D", {"cropping": [[pads[0], pads[2]], [pads[1], pads[3]]]}, [layer])
    else:
        layer = ctx.emit("Conv2DTranspose", cfg, [ctx.nhwc(v)], params)
    ctx.output(node.output[0], layer, "nhwc")


def _pool_pads(ctx, v, attrs, kernel, strides) -> tuple[list[list[int]], list[list[int]]]:
    """The pads of a pool's windows, and those plus ``ceil_mode``'s extra cells at the end."""
    if _ints(attrs.get("dilations", [1, 1])) != [1, 1]:
        raise ConversionError("a dilated pool, which jaxviz does not read")
    pads = _window_pads(attrs, v.shape[2:], kernel, strides, [1, 1])
    full = [list(p) for p in pads]
    if int(attrs.get("ceil_mode", 0)):
        for i, (n, k, s) in enumerate(zip(v.shape[2:], kernel, strides)):
            span = n + pads[i][0] + pads[i][1] - k
            out = -(-span // s) + 1
            if (out - 1) * s >= n + pads[i][0]:  # the last window must start inside the input (PyTorch's rule)
                out -= 1
            full[i][1] += max(0, (out - 1) * s + k - (n + pads[i][0] + pads[i][1]))
    return pads, full


@converter("MaxPool", opsets=(1, 22))
def max_pool(ctx: Context, node, attrs) -> None:
    if len(node.output) > 1 and node.output[1]:
        raise ConversionError("MaxPool's indices output, which jaxviz does not read")
    v = ctx.act(node.input[0])
    kernel = _ints(attrs["kernel_shape"])
    strides, _ = _spatial(attrs, kernel)
    _, full = _pool_pads(ctx, v, attrs, kernel, strides)
    x = ctx.nhwc(v)
    if any(map(any, full)):  # padded cells never win: -inf, as ONNX pads a max pool
        x = ctx.emit("Pad", {"pads": [*full, [0, 0]], "value": float("-inf")}, [x], role="pad")
    cfg = {"pool_size": kernel, "strides": strides, "padding": "valid"}
    ctx.output(node.output[0], ctx.emit("MaxPooling2D", cfg, [x]), "nhwc")


@converter("AveragePool", opsets=(1, 22))
def average_pool(ctx: Context, node, attrs) -> None:
    v = ctx.act(node.input[0])
    kernel = _ints(attrs["kernel_shape"])
    strides, _ = _spatial(attrs, kernel)
    pads, full = _pool_pads(ctx, v, attrs, kernel, strides)
    x = ctx.nhwc(v)
    if not any(map(any, full)):
        layer = ctx.emit("AveragePooling2D", {"pool_size": kernel, "strides": strides, "padding": "valid"}, [x])
    else:
        counted = pads if int(attrs.get("count_include_pad", 0)) else [[0, 0], [0, 0]]
        layer = ctx.emit("AveragePool", {"pool_size": kernel, "strides": strides, "pads": full, "counted": counted},
                         [x])
    ctx.output(node.output[0], layer, "nhwc")


@converter("GlobalAveragePool", "GlobalMaxPool", opsets=(1, 22))
def global_pool(ctx: Context, node, attrs) -> None:
    v = ctx.act(node.input[0])
    kind = "GlobalAveragePooling2D" if node.op_type == "GlobalAveragePool" else "GlobalMaxPooling2D"
    ctx.output(node.output[0], ctx.emit(kind, {"keepdims": True}, [ctx.nhwc(v)]), "nhwc")


@converter("ReduceMean", "ReduceMax", opsets=(1, 22))
def reduce_spatial(ctx: Context, node, attrs) -> None:
    v = ctx.act(node.input[0])
    axes = _axes([ctx.const(i) for i in node.input], attrs)
    keep = bool(attrs.get("keepdims", 1))
    if len(v.shape) != 4 or axes is None or sorted(a % 4 for a in axes) != [2, 3]:
        raise ConversionError(f"a reduction over axes {axes}; jaxviz reads {node.op_type} over the image axes "
                              "(2, 3) only")
    kind = "GlobalAveragePooling2D" if node.op_type == "ReduceMean" else "GlobalMaxPooling2D"
    layer = ctx.emit(kind, {"keepdims": keep}, [ctx.nhwc(v)])
    ctx.output(node.output[0], layer, "nhwc" if keep else "plain")


# ---------------------------------------------------------------------------------------------------------
# Normalisation


@converter("BatchNormalization", opsets=(1, 22))
def batch_norm(ctx: Context, node, attrs) -> None:
    v = ctx.act(node.input[0])
    gamma, beta, mean, var = (_weight(ctx, n, "statistics") for n in node.input[1:5])
    x = ctx.nhwc(v) if len(v.shape) == 4 else ctx.plain(v)
    axis = -1 if len(v.shape) in (2, 4) else 1
    cfg = {"axis": axis, "epsilon": float(attrs.get("epsilon", 1e-5))}
    params = {"gamma": gamma, "beta": beta, "moving_mean": mean, "moving_variance": var}
    layout = "nhwc" if len(v.shape) == 4 else "plain"
    ctx.output(node.output[0], ctx.emit("BatchNormalization", cfg, [x], params), layout)


@converter("LRN", opsets=(1, 22))
def lrn(ctx: Context, node, attrs) -> None:
    v = ctx.act(node.input[0])
    cfg = {"size": int(attrs["size"]), "alpha": float(attrs.get("alpha", 1e-4)), "beta": float(attrs.get("beta", 0.75)),
           "bias": float(attrs.get("bias", 1.0))}
    ctx.output(node.output[0], ctx.emit("LRN", cfg, [ctx.nhwc(v)]), "nhwc")


@converter("LayerNormalization", opsets=(17, 22))
def layer_norm(ctx: Context, node, attrs) -> None:
    v = ctx.act(node.input[0])
    rank = len(v.shape)
    axis = int(attrs.get("axis", -1)) % rank
    axes = list(range(axis, rank))
    gamma = _weight(ctx, node.input[1], "scale")
    beta = _weight(ctx, node.input[2], "bias") if len(node.input) > 2 and node.input[2] else None
    x = ctx.plain(v)
    cfg = {"axis": axes, "epsilon": float(attrs.get("epsilon", 1e-5)), "center": beta is not None}
    shape = tuple(v.shape[a] for a in axes)
    params = {"gamma": np.broadcast_to(gamma, shape).copy(), **({"beta": np.broadcast_to(beta, shape).copy()}
                                                                if beta is not None else {})}
    ctx.output(node.output[0], ctx.emit("LayerNormalization", cfg, [x], params))


# ---------------------------------------------------------------------------------------------------------
# Dense


def _dense(ctx: Context, node, v: Value, kernel: np.ndarray, bias) -> None:
    if v.layout == "flat_hwc":  # rows in ONNX's C·H·W order → the flattened NHWC map's H·W·C order
        _, c, h, w = v.src.shape
        kernel = kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
        x = v.layer
    else:
        x = ctx.plain(v)
    if kernel.shape[0] != ctx.jshape[x][-1]:
        raise ConversionError(f"its weight has {kernel.shape[0]} rows, its input {ctx.jshape[x][-1]} features")
    params = {"kernel": kernel, **({"bias": bias} if bias is not None else {})}
    ctx.output(node.output[0], ctx.emit("Dense", {"use_bias": bias is not None}, [x], params))


@converter("Gemm", opsets=(1, 22))
def gemm(ctx: Context, node, attrs) -> None:
    if int(attrs.get("transA", 0)):
        raise ConversionError("transA=1 on an activation, which jaxviz does not read")
    v = ctx.act(node.input[0])
    b = _weight(ctx, node.input[1], "weight")
    kernel = (b.T if int(attrs.get("transB", 0)) else b) * np.float32(attrs.get("alpha", 1.0))
    bias = None
    if len(node.input) > 2 and node.input[2]:
        c = _weight(ctx, node.input[2], "bias") * np.float32(attrs.get("beta", 1.0))
        if c.ndim == 2 and c.shape[0] != 1:
            raise ConversionError(f"a bias of shape {c.shape} (per example); jaxviz reads one bias row")
        bias = np.broadcast_to(c.reshape(-1) if c.ndim else c, (kernel.shape[1],)).astype(np.float32)
    _dense(ctx, node, v, kernel, bias)


@converter("MatMul", opsets=(1, 22))
def matmul(ctx: Context, node, attrs) -> None:
    v = ctx.act(node.input[0])
    b = _weight(ctx, node.input[1], "weight")
    if b.ndim != 2:
        raise ConversionError(f"a weight of shape {b.shape}; jaxviz reads a 2D MatMul weight")
    _dense(ctx, node, v, b, None)


# ---------------------------------------------------------------------------------------------------------
# Activations


@converter("Relu", opsets=(1, 22))
def relu(ctx, node, attrs):
    _unary(ctx, node, "ReLU")


@converter("LeakyRelu", opsets=(1, 22))
def leaky_relu(ctx, node, attrs):
    _unary(ctx, node, "LeakyReLU", {"negative_slope": float(attrs.get("alpha", 0.01))})


@converter("Elu", opsets=(1, 22))
def elu(ctx, node, attrs):
    _unary(ctx, node, "ELU", {"alpha": float(attrs.get("alpha", 1.0))})


_UNARY_OPS = {"Sigmoid": "ops.Sigmoid", "Tanh": "ops.Tanh", "HardSwish": "ops.HardSilu", "Softplus": "ops.Softplus",
              "Exp": "ops.Exp", "Erf": "Erf"}


@converter(*_UNARY_OPS, opsets=(1, 22))
def unary(ctx, node, attrs):
    _unary(ctx, node, _UNARY_OPS[node.op_type])


_ARG_OPS = {"Sqrt": "ops.Sqrt", "Abs": "ops.Abs", "Neg": "ops.Negative"}


@converter(*_ARG_OPS, opsets=(1, 22))
def unary_arg(ctx, node, attrs):
    _unary(ctx, node, _ARG_OPS[node.op_type], {"args": [{"__input__": 0}]})


@converter("HardSigmoid", opsets=(1, 22))
def hard_sigmoid(ctx, node, attrs):
    _unary(ctx, node, "HardSigmoid", {"alpha": float(attrs.get("alpha", 0.2)), "beta": float(attrs.get("beta", 0.5))})


@converter("Gelu", opsets=(20, 22))
def gelu(ctx, node, attrs):
    _unary(ctx, node, "ops.Gelu", {"approximate": attrs.get("approximate", "none") == "tanh"})


@converter("Clip", opsets=(1, 22))
def clip(ctx, node, attrs):
    if ctx.opset < 11:
        lo, hi = attrs.get("min"), attrs.get("max")
    else:
        lo = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        hi = ctx.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        for name, bound in zip(node.input[1:], (lo, hi)):
            if name and bound is None:
                raise ConversionError("a bound computed at run time; jaxviz reads Clip with constant bounds")
    lo = None if lo is None or float(lo) <= -3.4e38 else float(lo)
    hi = None if hi is None or float(hi) >= 3.4e38 else float(hi)
    if lo == 0 and hi in (None, 6.0):  # ReLU and ReLU6: the ReLU family (guided backprop and deconvnet)
        _unary(ctx, node, "ReLU", {} if hi is None else {"max_value": 6.0})
    else:
        _unary(ctx, node, "Clip", {"min": lo, "max": hi})


@converter("Softmax", opsets=(1, 22))
def softmax(ctx, node, attrs):
    v = ctx.act(node.input[0])
    rank = len(v.shape)
    axis = int(attrs.get("axis", 1 if ctx.opset < 13 else -1)) % rank
    if ctx.opset < 13 and int(np.prod(v.shape[axis + 1:])) != 1:  # opset < 13 softmaxes the flattened axes ≥ axis
        raise ConversionError(f"a softmax over axes {axis}… of a {rank}D value (opset < 13); jaxviz reads the "
                              "last axis")
    if v.layout == "nhwc" and v.shape[2] * v.shape[3] == 1 and axis == 1:  # class scores [N, C, 1, 1]
        v = Value(ctx.emit("Flatten", {}, [v.layer], role="flatten"), v.shape[:2])
    layer = ctx.emit("Softmax", {"axis": layout_axis(v, axis)}, [ctx.plain(v) if v.layout == "flat_hwc" else v.layer])
    ctx.output(node.output[0], layer, "nhwc" if v.layout == "nhwc" else "plain")


@converter("Dropout", "Identity", opsets=(1, 22))
def identity(ctx, node, attrs):
    ctx.bind(node.output[0], ctx.act(node.input[0]))


# ---------------------------------------------------------------------------------------------------------
# Elementwise arithmetic

_PAIR_KINDS = {"Add": "Add", "Sum": "Add", "Mul": "Multiply", "Sub": "Subtract", "Max": "Maximum", "Min": "Minimum"}
_OPERATION = {"Add": "Add", "Sum": "Add", "Mul": "Multiply", "Sub": "Subtract", "Div": "TrueDivide",
              "Pow": "Power", "Max": "Maximum", "Min": "Minimum"}


def common_layout(ctx: Context, values: list[Value]) -> tuple[list[str], str]:
    """The layers of ``values`` in one layout: theirs if they share one, channels-last if all are 4D, else
    ONNX's own."""
    layouts = {v.layout for v in values}
    if len(layouts) == 1 and layouts != {"flat_hwc"}:
        return [v.layer for v in values], values[0].layout
    if all(len(v.shape) == 4 for v in values):
        return [ctx.nhwc(v) for v in values], "nhwc"
    return [ctx.plain(v) for v in values], "plain"


@converter("Add", "Sub", "Mul", "Div", "Pow", "Sum", "Max", "Min", opsets=(1, 22))
def elementwise(ctx: Context, node, attrs) -> None:
    op = node.op_type
    names = [n for n in node.input if n]
    acts = [n for n in names if not ctx.is_const(n)]
    shapes = [ctx.values[n].shape if n in ctx.values else ctx.const(n).shape for n in names]
    out_shape = np.broadcast_shapes(*shapes)
    if len(acts) == len(names):
        values = [ctx.act(n) for n in names]
        if len(values) == 1:
            return ctx.bind(node.output[0], values[0])
        if any(len(v.shape) != len(out_shape) for v in values):
            layers, layout = [ctx.plain(v) for v in values], "plain"
        else:
            layers, layout = common_layout(ctx, values)
        if op in _PAIR_KINDS:
            layer = ctx.emit(_PAIR_KINDS[op], {}, layers)
        elif len(layers) == 2:
            layer = ctx.emit("ops." + _OPERATION[op], {"args": [{"__input__": 0}, {"__input__": 1}]}, layers)
        else:
            raise ConversionError(f"{op} of {len(layers)} inputs")
        ctx.output(node.output[0], layer, layout)
        return
    if len(names) != 2 or len(acts) != 1:
        raise ConversionError(f"{op} of {len(acts)} activations and {len(names) - len(acts)} constants")
    first = ctx.is_const(names[0])
    v, c = ctx.act(acts[0]), np.asarray(ctx.const(names[0] if first else names[1]), np.float32)
    if c.size == 1:
        args = [float(c.reshape(())), {"__input__": 0}] if first else [{"__input__": 0}, float(c.reshape(()))]
        layer = ctx.emit("ops." + _OPERATION[op], {"args": args}, [v.layer])
        ctx.bind(node.output[0], Value(layer, v.shape, v.layout, v.src))
        return
    if c.ndim > len(v.shape):
        raise ConversionError(f"a constant of shape {c.shape} broadcast against a value of shape {v.shape}")
    c = c.reshape((1,) * (len(v.shape) - c.ndim) + c.shape)
    if v.layout == "nhwc":
        x, layout, c = v.layer, "nhwc", c.transpose(NHWC)
    else:
        x, layout = ctx.plain(v), "plain"
    layer = ctx.emit("ElementwiseConstant", {"op": _OPERATION[op], "first": first}, [x], {"value": c})
    ctx.output(node.output[0], layer, layout)
