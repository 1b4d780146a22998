"""Occlusion: how much the class score drops when a window of the image is covered.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014, arXiv:1311.2901
(section 4.2).

A ``window``-sized patch (all channels) is set to ``fill`` at positions ``0, stride, 2·stride, …`` along
each axis — ``ceil((H − window) / stride) + 1`` of them, the last one clipped at the border, as in Captum's
``Occlusion`` — and each pixel gets the score drop ``S_t(x) − S_t(x_occluded)`` averaged over the windows
that cover it (Captum's definition; Zeiler & Fergus plot the drop per window position, which
``return_grid=True`` gives).

All occluded copies are evaluated ``batch_size`` at a time inside one compiled program; the windows are
built from row/column indicators inside the program, so no ``[windows, H, W]`` mask stack is stored.

Incremental evaluation (``incremental="auto"``, on jaxviz VGG models): covering a window changes a conv
layer's output only within the window's receptive-field footprint. Up to a split layer ``L`` (chosen by a
FLOP count), each occluded image is therefore evaluated on a crop around its window only — large enough
that every changed output of ``L`` sees all of its inputs, and aligned to the pooling grid — and the changed
outputs are pasted into the clean image's ``L`` activations. The rest of the network runs from there: the
ReLU after ``L`` is swapped for one that returns the pasted activations (the same call-order contract as
Grad-CAM's tap), and XLA removes the now-unused layers before it. The scores are the plain path's up to
float32 rounding; at 224×224 with a 16-pixel window this skips about half of the FLOPs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .. import runtime
from ..errors import JaxvizError
from ..interface import VGG_FAMILY

#: Display policy: the map's sign matters (negative = evidence against the class), so it is shown
#: as its positive part.
SIGNED = True


def _pair(v, what):
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or any(not isinstance(i, int) or i < 1 for i in t):
        raise JaxvizError(f"{what} must be a positive int or (height, width), got {v!r}")
    return t


def positions(size: int, window: int, stride: int) -> int:
    """Number of window positions along an axis of ``size`` pixels (Captum's shift count)."""
    return math.ceil((size - window) / stride) + 1


def occlusion(model, x, target: int | Sequence[int] | None = None, *, window: int | tuple[int, int] = 16,
              stride: int | tuple[int, int] = 8, fill: float = 0.0, score: str = "logit",
              batch_size: int | None = None, return_grid: bool = False, incremental: bool | str = "auto",
              reduce: str | None = "sum", params=None) -> jax.Array:
    """Zeiler & Fergus's occlusion sensitivity.

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      window: patch size, ``int`` or ``(height, width)``.
      stride: step between patches, ``int`` or ``(height, width)``; at most the window.
      fill: value written into the patch, in model space (0 = the mean colour; Captum's ``baselines=0``).
      score: ``"logit"`` (default), ``"prob"`` or ``"log_prob"``.
      batch_size: occluded images per model call (default: 16 on a CPU, more on an accelerator).
      return_grid: return the score drop per window position ``[N, A, B]`` instead of the pixel map.
      incremental: ``"auto"`` re-evaluates only what a window can change when that saves FLOPs (see the
        module docstring); ``False`` evaluates every occluded image in full; a conv layer name forces the
        split at that layer.
      reduce: accepted for the common signature; the map has no channel axis (``None`` repeats it 3×).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32 (``[N, A, B]`` with ``return_grid``).
    """
    runtime.check_model(model, "occlusion")
    score = runtime.check_score(model, score)
    reduce = runtime.check_reduce(reduce)
    x = runtime.check_input(model, x)
    targets = runtime.check_targets(model, target, x.shape[0])
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    h, w = x.shape[1:3]
    if wh > h or ww > w:
        raise JaxvizError(f"window {wh}×{ww} is larger than the {h}×{w} image")
    if (sh > wh and wh < h) or (sw > ww and ww < w):
        raise JaxvizError(f"stride {sh}×{sw} larger than the window {wh}×{ww} would leave pixels unoccluded")
    rows, cols = positions(h, wh, sh), positions(w, ww, sw)
    batch_size = runtime.batch_size_for(model, x, batch_size, rows * cols * x.shape[0], gradient=False)
    chunk = runtime.per_chunk(batch_size, x.shape[0])
    plan = split_plan(model, (h, w), (wh, ww), incremental)

    def build(fwd):
        def run(params, x, targets, fill):
            logits = fwd(params, x, upto="logits")[0]
            t = runtime.resolve_targets(targets, logits)
            s0 = runtime.class_score(logits, t, score)
            r_ind = _indicator(h, rows, wh, sh)  # [A, H]: window rows
            c_ind = _indicator(w, cols, ww, sw)  # [B, W]: window columns

            def drop_chunk(p):  # [c] window numbers → [c, N] score drops
                c = p.shape[0]
                m = r_ind[p // cols][:, :, None] * c_ind[p % cols][:, None, :]  # [c, H, W]
                xs = jnp.where(m[:, None, :, :, None] > 0, fill, x[None]).reshape(-1, *x.shape[1:])
                s = runtime.scores_of(fwd, params, xs, jnp.tile(t, c), score).reshape(c, -1)
                return s0[None] - s

            if plan is None:
                drops = runtime.chunked_map(drop_chunk, jnp.arange(rows * cols), chunk)  # [A·B, N]
            else:
                clean = fwd(params, x, upto=plan.layer)[0]
                z = _incremental_logits(fwd, params, x, clean, jnp.arange(rows * cols), cols, (sh, sw), (wh, ww),
                                        fill, plan, chunk)  # [A·B·N, K]
                drops = s0[None] - runtime.class_score(z, jnp.tile(t, rows * cols), score).reshape(rows * cols, -1)
            return drops.T.reshape(-1, rows, cols)

        return run

    key = ((wh, ww), (sh, sw), score, chunk, plan)
    fn = runtime.compiled(model, "occlusion", key, build)
    grid = fn(runtime.params_of(model, params), x, targets, jnp.float32(fill))
    if return_grid:
        return grid
    return runtime.finish_spatial(_paint(grid, (h, w), (wh, ww), (sh, sw)), reduce, x.shape[-1])


@functools.partial(jax.jit, static_argnames=("size", "window", "stride"))
def _paint(grid, size, window, stride):
    """Score drops per window position ``[N, A, B]`` → per pixel, averaged over the covering windows."""
    r_ind = _indicator(size[0], grid.shape[1], window[0], stride[0])  # [A, H]
    c_ind = _indicator(size[1], grid.shape[2], window[1], stride[1])  # [B, W]
    total = jnp.einsum("ah,nab,bw->nhw", r_ind, grid, c_ind)
    return total / jnp.einsum("ah,bw->hw", r_ind, c_ind)


def _indicator(size: int, count: int, window: int, stride: int) -> jax.Array:
    """``[count, size]`` 0/1: row ``i`` marks the pixels of the ``i``-th window position."""
    start = jnp.arange(count)[:, None] * stride
    pix = jnp.arange(size)[None, :]
    return ((pix >= start) & (pix < start + window)).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------------------
# Incremental evaluation


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """Where and how occluded images are re-evaluated on crops (see the module docstring).

    layer / index: the split conv layer and its position among the conv layers (its ReLU's call number).
    scale: input pixels per pixel of the layer's output (2^pools before it).
    lo, hi: output ``j`` of the layer depends on input pixels ``[scale·j − lo, scale·j + hi]``.
    crop: ``(height, width)`` of the crops, multiples of ``scale``.
    cost: FLOPs relative to evaluating the occluded image in full.
    """

    layer: str
    index: int
    scale: int
    lo: int
    hi: int
    crop: tuple[int, int]
    cost: float
    dense_layer: str | None = None  # the first dense layer with a ReLU, if any
    dense_index: int = -1  # its ReLU's call number


def _span(window: int, scale: int, lo: int, hi: int) -> int:
    """Largest ``j_max − j_min`` of the outputs a ``window``-pixel change can reach, over window phases."""
    return max((r + window - 1 + lo) // scale - -(-(r - hi) // scale) for r in range(scale))


def split_plan(model, size: tuple[int, int], window: tuple[int, int], incremental) -> SplitPlan | None:
    """The cheapest split layer for occlusion windows of ``window`` on ``size`` images, or None (full).

    Only a plain VGG stack (``model.family == "vgg"``: 3×3 "same" convolutions with ReLUs, 2×2 max pools)
    is split; its layer table gives the layers and their sizes."""
    if incremental is False or model.family != VGG_FAMILY:
        return None
    h, w = size
    table = model.layer_table((h, w, model.input_channels))
    rows = [r for r in table[1:] if r.kind in ("Conv2D", "MaxPooling2D")]
    convs = [r for r in rows if r.kind == "Conv2D"]
    flops = [r.output_shape[0] * r.output_shape[1] * r.kernel_shape[2] * r.kernel_shape[3] for r in convs]
    total = sum(flops)
    scale, lo, hi, before, best = 1, 0, 0, 0.0, None
    conv_i = 0
    for r in rows:
        if r.kind == "MaxPooling2D":
            hi += scale
            scale *= 2
            continue
        lo += scale
        hi += scale
        before += flops[conv_i]
        crop = []
        for n, win in ((h, window[0]), (w, window[1])):
            need = scale * _span(win, scale, lo, hi) + scale * -(-lo // scale) + hi + 1
            crop.append(min(n, -(-need // scale) * scale))
        fits = h % scale == 0 and w % scale == 0
        cost = (before * crop[0] * crop[1] / (h * w) + total - before) / total
        if fits and (incremental == r.name or (incremental == "auto" and (best is None or cost < best.cost))):
            best = SplitPlan(r.name, conv_i, scale, lo, hi, tuple(crop), cost)
        conv_i += 1
    if isinstance(incremental, str) and incremental != "auto" and (best is None or best.layer != incremental):
        names = [r.name for r in convs]
        if incremental not in names:
            raise JaxvizError(f"incremental must be 'auto', False or a conv layer ({', '.join(names)}), "
                              f"got {incremental!r}")
        raise JaxvizError(f"cannot split at {incremental}: the image size is not a multiple of its scale")
    if best is None or (incremental == "auto" and best.cost > 0.85):
        return None
    dense = [r.name for r in table if r.kind == "Dense"][:-1]
    if dense:  # the head's first ReLU comes right after the conv layers' ones
        best = dataclasses.replace(best, dense_layer=dense[0], dense_index=len(convs))
    return best


def _affected(start, window: int, n_out: int, plan: SplitPlan):
    """First and last output index of the split layer that a change at pixels [start, start+window) reaches."""
    s = plan.scale
    first = jnp.clip(-((plan.hi - start) // s), 0, n_out - 1)  # ceil((start − hi) / s)
    last = jnp.clip((start + window - 1 + plan.lo) // s, 0, n_out - 1)
    return first, last


def _incremental_logits(fwd, params, x, clean, windows, cols, stride, window, fill, plan: SplitPlan, chunk):
    """Logits ``[W·N, K]`` of ``x`` with window number ``w`` filled, for each of ``windows [W]``.

    The layers up to the first dense layer run chunk by chunk (the convs up to the split on crops); the
    remaining dense layers run once, for all windows together, after the loop: XLA:CPU's YNN fusion of
    the conv stack together with two dense layers inside a loop body is a slow path (docs/PERFORMANCE.md).
    """
    n, h, w, ch = x.shape
    s = plan.scale
    ch_, cw_ = plan.crop
    hs, ws = clean.shape[1:3]
    up = -(-plan.lo // s)

    def one(r, c):  # one window → (crop [N, ch, cw, C] with the window filled, placement, affected range)
        j0, j1 = _affected(r, window[0], hs, plan)
        k0, k1 = _affected(c, window[1], ws, plan)
        top = jnp.clip(s * (j0 - up), 0, h - ch_)
        left = jnp.clip(s * (k0 - up), 0, w - cw_)
        crop = jax.lax.dynamic_slice(x, (0, top, left, 0), (n, ch_, cw_, ch))
        rr = top + jnp.arange(ch_)
        cc = left + jnp.arange(cw_)
        inside = ((rr >= r) & (rr < r + window[0]))[:, None] & ((cc >= c) & (cc < c + window[1]))[None, :]
        return jnp.where(inside[None, :, :, None], fill, crop), top // s, left // s, j0, j1, k0, k1

    def paste(p, top, left, a0, a1, b0, b1):
        placed = jax.lax.dynamic_update_slice(clean, p, (0, top, left, 0))
        rows = (jnp.arange(hs) >= a0) & (jnp.arange(hs) <= a1)
        cols_ = (jnp.arange(ws) >= b0) & (jnp.arange(ws) <= b1)
        return jnp.where((rows[:, None] & cols_[None, :])[None, :, :, None], placed, clean)

    def features(p):  # [c] window numbers → [c, N, F]: the first dense layer (or the logits without one)
        c = p.shape[0]
        crops, tops, lefts, j0, j1, k0, k1 = jax.vmap(one)(p // cols * stride[0], p % cols * stride[1])
        part = fwd(params, crops.reshape(c * n, ch_, cw_, ch), upto=plan.layer)[0]
        part = part.reshape(c, n, *part.shape[1:])
        acts = jax.vmap(paste)(part, tops, lefts, j0, j1, k0, k1).reshape(c * n, hs, ws, -1)
        dummy = jnp.zeros((c * n, h, w, ch), x.dtype)  # never computed: everything before the split is unused
        upto = plan.dense_layer or "logits"
        return fwd(params, dummy, upto=upto, replace={plan.layer: acts})[0].reshape(c, n, -1)

    feats = runtime.chunked_map(features, windows, chunk)
    feats = feats.reshape(-1, feats.shape[-1])
    if plan.dense_layer is None:
        return feats
    dummy = jnp.zeros((feats.shape[0], h, w, ch), x.dtype)
    return fwd(params, dummy, upto="logits", replace={plan.dense_layer: feats})[0]
