"""Receptive fields: where each output pixel of a layer looks in the input image, composed along the graph."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from .. import graph as graph_lib
from ..layers import pads_2d
from ..ops import window_pads


@dataclasses.dataclass(frozen=True)
class Field:
    """Where output pixel ``i`` of a layer looks along one image axis: input pixels
    ``[jump·i + start, jump·i + end]`` (inclusive, before clipping to the image)."""

    jump: int
    start: int
    end: int

    def span(self, i: int, side: int) -> tuple[int, int]:
        """The inclusive input range of output pixel ``i``, clipped to ``[0, side)``."""
        return max(self.jump * i + self.start, 0), min(self.jump * i + self.end, side - 1)


def _window(layer: graph_lib.Layer):
    """``(kernel, strides, dilation, padding)`` of a sliding-window layer (pools stride by their size)."""
    cfg = layer.cfg
    pooling = "Pool" in layer.kind
    k = graph_lib._pair(cfg.get("pool_size", 2) if pooling else cfg.get("kernel_size", 1))
    strides = cfg.get("strides")
    s = k if pooling and strides is None else graph_lib._pair(1 if strides is None else strides)
    return k, s, graph_lib._pair(cfg.get("dilation_rate", 1)), str(cfg.get("padding", "valid")).lower()


def receptive_fields(graph: graph_lib.Graph, input_hw: tuple[int, int], names: Iterable[str] | None = None
                     ) -> dict[str, tuple[Field, Field] | None]:
    """``{layer: (rows, columns)}``: the :class:`Field` of each layer's output pixels in the input image.

    Composed along the graph from each layer's kernel, strides, dilation and padding (Keras's "same" pads
    the extra row after, :func:`jaxviz.ops.window_pads`); zero padding and cropping shift the field; layers
    that keep the pixel grid (activations, normalisation, ``Add``, ``Concatenate``) take the union of their
    inputs' fields. ``None`` where the field is not a fixed window of the input: after a layer that
    upsamples, or once no image axes remain (``Flatten``, global pooling).

    Args:
      graph: the model's layer graph.
      input_hw: ``(height, width)`` of the input (a "same" layer's padding depends on its input's size).
      names: the layers wanted (default: all).
    """
    fields: dict[str, tuple[Field, Field] | None] = {}
    sides: dict[str, tuple[int, int] | None] = {}
    for layer in graph.layers:
        if layer.kind == "InputLayer":
            fields[layer.name] = (Field(1, 0, 0), Field(1, 0, 0))
            sides[layer.name] = tuple(input_hw)
            continue
        ins = [fields[i] for i in layer.inputs]
        in_sides = [sides[i] for i in layer.inputs]
        sides[layer.name] = graph_lib._spatial_side(layer, in_sides)
        if not ins or any(f is None for f in ins) or sides[layer.name] is None or layer.kind in (
                "UpSampling2D", "Conv2DTranspose") or len({(f[0].jump, f[1].jump) for f in ins}) > 1:
            fields[layer.name] = None
            continue
        merged = tuple(Field(ins[0][a].jump, min(f[a].start for f in ins), max(f[a].end for f in ins))
                       for a in (0, 1))
        if layer.kind in graph_lib.WINDOW_KINDS:
            k, s, d, pad = _window(layer)
            out = []
            for a in (0, 1):
                f = merged[a]
                before = _pads(in_sides[0][a], k[a], s[a], d[a], pad)
                span = (k[a] - 1) * d[a] + 1
                out.append(Field(f.jump * s[a], f.start - f.jump * before, f.end + f.jump * (span - 1 - before)))
            merged = tuple(out)
        elif layer.kind in ("ZeroPadding2D", "Cropping2D"):
            sign = -1 if layer.kind == "ZeroPadding2D" else 1
            cfg = layer.cfg
            (t, _), (left, _) = pads_2d(cfg.get("padding", 1) if sign < 0 else cfg.get("cropping", 0))
            merged = (Field(merged[0].jump, merged[0].start + sign * merged[0].jump * t,
                            merged[0].end + sign * merged[0].jump * t),
                      Field(merged[1].jump, merged[1].start + sign * merged[1].jump * left,
                            merged[1].end + sign * merged[1].jump * left))
        fields[layer.name] = merged
    keep = None if names is None else set(names)
    return {n: f for n, f in fields.items() if keep is None or n in keep}


def _pads(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    return window_pads(size, k, stride, dilation, padding)[1][0]


def field_box(field: tuple[Field, Field] | None, position: tuple[int, int], input_hw: tuple[int, int],
              source_hw: tuple[int, int] | None = None) -> list[int]:
    """The inclusive box ``[y0, x0, y1, x1]`` of output pixel ``position = (i, j)``'s receptive field, in the
    model's input (``input_hw``) or, with ``source_hw``, scaled to the source image the input was resized
    from. A ``None`` field (no fixed window) gives the whole image."""
    h, w = input_hw
    if field is None:
        y0, x0, y1, x1 = 0, 0, h - 1, w - 1
    else:
        (y0, y1), (x0, x1) = field[0].span(position[0], h), field[1].span(position[1], w)
    if source_hw is None:
        return [y0, x0, y1, x1]
    sh, sw = source_hw
    # pixel k of the input covers source pixels [k·S/s, (k+1)·S/s)
    return [int(y0 * sh // h), int(x0 * sw // w), int(min(sh - 1, -(-(y1 + 1) * sh // h) - 1)),
            int(min(sw - 1, -(-(x1 + 1) * sw // w) - 1))]
