"""The converter registry: one function per ONNX op type, registered with the opset versions it reads.

A converter is ``fn(ctx, node, attrs)``: it reads its inputs from the :class:`jaxviz.frontends.onnx.context.Context`
(constants as numpy arrays, activations as layers), emits jaxviz layers and binds the node's outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

#: The opsets jaxviz reads (a default-domain opset outside is refused).
OPSETS = (7, 22)


@dataclasses.dataclass(frozen=True)
class Converter:
    op_type: str
    min_opset: int
    max_opset: int
    fn: Callable


CONVERTERS: dict[str, list[Converter]] = {}


def converter(*op_types: str, opsets: tuple[int, int] = OPSETS):
    """Registers ``fn`` as the converter of ``op_types`` for the opset versions ``opsets`` (inclusive)."""

    def register(fn):
        for op in op_types:
            CONVERTERS.setdefault(op, []).append(Converter(op, opsets[0], opsets[1], fn))
        return fn

    return register


def find(op_type: str, opset: int) -> Converter | None:
    """The converter of ``op_type`` at ``opset``, or None."""
    for c in CONVERTERS.get(op_type, ()):
        if c.min_opset <= opset <= c.max_opset:
            return c
    return None
