"""Constant folding at load: the ONNX ops exporters apply to constants and static shapes (``Shape`` →
``Gather`` → ``Unsqueeze`` → ``Concat`` → ``Reshape``), computed once in numpy.

Each fold is ``fn(inputs, attrs) -> [outputs]`` on numpy arrays (``None`` for an omitted optional input).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FOLDS: dict[str, Callable] = {}


def fold(*op_types: str):
    def register(fn):
        for op in op_types:
            FOLDS[op] = fn
        return fn

    return register


def _ints(v) -> list[int]:
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _axes(ins, attrs, index=1):
    """Axes from the attribute (older opsets) or the ``index``-th input (newer)."""
    if "axes" in attrs:
        return _ints(attrs["axes"])
    if len(ins) > index and ins[index] is not None:
        return _ints(ins[index])
    return None


@fold("Identity")
def _identity(ins, attrs):
    return [ins[0]]


@fold("Cast")
def _cast(ins, attrs):
    from onnx.helper import tensor_dtype_to_np_dtype  # onnx: the optional extra, present when a file is read

    return [ins[0].astype(tensor_dtype_to_np_dtype(int(attrs["to"])))]


@fold("Gather")
def _gather(ins, attrs):
    return [np.take(ins[0], ins[1].astype(np.int64), axis=int(attrs.get("axis", 0)))]


@fold("Unsqueeze")
def _unsqueeze(ins, attrs):
    x, axes = ins[0], _axes(ins, attrs)
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return [x]


@fold("Squeeze")
def _squeeze(ins, attrs):
    axes = _axes(ins, attrs)
    x = ins[0]
    return [np.squeeze(x) if axes is None else np.squeeze(x, tuple(a % x.ndim for a in axes))]


@fold("Concat")
def _concat(ins, attrs):
    return [np.concatenate([np.atleast_1d(i) for i in ins if i is not None], axis=int(attrs["axis"]))]


def reshape_target(shape, target, allowzero=False) -> tuple[int, ...]:
    """ONNX ``Reshape``'s output shape: ``0`` copies the input's dimension, ``-1`` takes the rest."""
    out = [int(shape[i]) if (t == 0 and not allowzero) else int(t) for i, t in enumerate(target)]
    if out.count(-1) > 1:
        raise ValueError("Reshape with several -1 dimensions")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        total = int(np.prod(shape))
        if known == 0 or total % known:
            raise ValueError(f"cannot reshape {tuple(shape)} to {tuple(target)}")
        out[out.index(-1)] = total // known
    if int(np.prod(out)) != int(np.prod(shape)):
        raise ValueError(f"cannot reshape {tuple(shape)} to {tuple(target)}")
    return tuple(out)


@fold("Reshape")
def _reshape(ins, attrs):
    target = _ints(ins[1]) if len(ins) > 1 else _ints(attrs["shape"])
    return [ins[0].reshape(reshape_target(ins[0].shape, target, bool(attrs.get("allowzero", 0))))]


@fold("Flatten")
def _flatten(ins, attrs):
    x, axis = ins[0], int(attrs.get("axis", 1))
    axis %= max(x.ndim, 1)
    return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


@fold("Transpose")
def _transpose(ins, attrs):
    perm = attrs.get("perm")
    return [np.transpose(ins[0], None if perm is None else _ints(perm))]


@fold("Slice")
def _slice(ins, attrs):
    x = ins[0]
    if "starts" in attrs:  # opset < 10
        starts, ends, axes, steps = _ints(attrs["starts"]), _ints(attrs["ends"]), attrs.get("axes"), None
    else:
        starts, ends = _ints(ins[1]), _ints(ins[2])
        axes = ins[3] if len(ins) > 3 else None
        steps = ins[4] if len(ins) > 4 else None
    axes = list(range(len(starts))) if axes is None else _ints(axes)
    steps = [1] * len(starts) if steps is None else _ints(steps)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[a % x.ndim] = slice(s, e, st)
    return [x[tuple(index)]]


_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Pow": np.power, "Equal": np.equal,
           "Less": np.less, "Greater": np.greater, "And": np.logical_and, "Or": np.logical_or}
_UNARY = {"Neg": np.negative, "Abs": np.abs, "Sqrt": np.sqrt, "Floor": np.floor, "Ceil": np.ceil,
          "Reciprocal": np.reciprocal, "Not": np.logical_not, "Relu": lambda x: np.maximum(x, 0),
          "Exp": np.exp, "Sigmoid": lambda x: 1 / (1 + np.exp(-x))}


def _binary(fn):
    return lambda ins, attrs: [np.asarray(fn(ins[0], ins[1])).astype(np.result_type(ins[0], ins[1]))
                               if fn not in (np.equal, np.less, np.greater, np.logical_and, np.logical_or)
                               else np.asarray(fn(ins[0], ins[1]))]


for _op, _fn in _BINARY.items():
    FOLDS[_op] = _binary(_fn)
for _op, _fn in _UNARY.items():
    FOLDS[_op] = (lambda f: lambda ins, attrs: [np.asarray(f(ins[0]))])(_fn)


@fold("Div")
def _div(ins, attrs):
    a, b = ins
    if np.issubdtype(a.dtype, np.integer):
        return [np.trunc(a / b).astype(a.dtype)]
    return [np.asarray(a / b, a.dtype)]


FOLDS["Min"] = lambda ins, attrs: [np.minimum.reduce(np.broadcast_arrays(*ins))]
FOLDS["Max"] = lambda ins, attrs: [np.maximum.reduce(np.broadcast_arrays(*ins))]
FOLDS["Sum"] = lambda ins, attrs: [np.add.reduce(np.broadcast_arrays(*ins))]


@fold("Where")
def _where(ins, attrs):
    return [np.where(ins[0], ins[1], ins[2])]


@fold("Expand")
def _expand(ins, attrs):
    shape = np.broadcast_shapes(ins[0].shape, tuple(_ints(ins[1])))
    return [np.broadcast_to(ins[0], shape).copy()]


@fold("Range")
def _range(ins, attrs):
    return [np.arange(ins[0].item(), ins[1].item(), ins[2].item()).astype(ins[0].dtype)]


@fold("ReduceProd")
def _reduce_prod(ins, attrs):
    axes = _axes(ins, attrs)
    keep = bool(attrs.get("keepdims", 1))
    return [np.prod(ins[0], axis=None if axes is None else tuple(axes), keepdims=keep)]
