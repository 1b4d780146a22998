"""Winograd F(4×4, 3×3) convolution for VGG's deep layers on CPUs (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", CVPR 2016).

A 3×3 "same" convolution computed on 6×6 input tiles that each give a 4×4 output tile: 36 elementwise
products (as 36 matrix products over channels) instead of 144 multiply-adds per tile and channel pair — 4×
fewer FLOPs. XLA:CPU runs these matrix products at its matmul rate, so it is used where that beats
XLA:CPU's direct convolution: layers with ≥ 64 channels on one side and ≥ 128 on the other, on ≥ 14×14
pixels (block1 stays direct; the measurements are in docs/PERFORMANCE.md). Images whose transformed tiles
would not fit in the last-level cache are done in strips (:func:`strips`), one loop iteration each.

It is jaxviz's fast default on CPUs and is never used for comparisons: under
``jax.default_matmul_precision("highest")`` (or ``"float32"``) every convolution is the direct one, which
matches Keras bit for bit. Its rounding differs from the direct convolution's by ~1e-5 relative per layer
(~2e-6 on a VGG16 forward pass with random weights). Gradient maps through many layers amplify it where a
ReLU or a max-pool choice flips: the saliency map of a random-weight VGG16 differs from the exact mode's
by up to 2e-2 of its maximum at a few hundred of its 150,528 values — the size of float32's own
conditioning there (the exact mode's map is 3e-2 from a float64 computation, Captum's 2e-2). GPUs and
TPUs keep their own convolution libraries.

The kernel transforms (``G k Gᵀ``, 4× the kernel's size) are computed once per set of weights, with the
flipped kernels of the backward pass (:func:`jaxviz.ops.flipped_kernels`), not inside each program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import xla_cpu

# Interpolation points 0, ±1, ±2, ∞ (Lavin & Gray, section 4.2).
BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float32)

#: Smallest channel counts (in and out) and image side for which Winograd beats the direct conv on a CPU.
MIN_CHANNELS = 64
MIN_WIDER_CHANNELS = 128
MIN_SIDE = 14
#: Output tiles per call (images × 4×4 tiles) from which narrower layers use Winograd (see :func:`applies`).
MIN_TILES = 48
WIDE_CHANNELS = 512
#: Bytes of transformed tiles per strip (:func:`strips`): about half this CPU's 32 MB last-level cache.
STRIP_BYTES = 16 * 2**20


def kernel_eligible(kernel_shape) -> bool:
    """Whether a ``[3, 3, Cin, Cout]`` kernel is worth transforming: both channel counts ≥ MIN_CHANNELS and
    one ≥ MIN_WIDER_CHANNELS: narrower layers gain nothing over the direct conv (docs/PERFORMANCE.md)."""
    kh, kw, cin, cout = kernel_shape
    return (kh, kw) == (3, 3) and min(cin, cout) >= MIN_CHANNELS and max(cin, cout) >= MIN_WIDER_CHANNELS


#: Matmul precisions (``jax.default_matmul_precision``) that ask for full float32: the exact (parity) mode.
EXACT_PRECISIONS = ("highest", "float32")


def platform_uses_winograd() -> bool:
    """Winograd kernels are prepared only for the CPU backend (accelerators have their own conv libraries).
    Read when a model's ops are made (:func:`jaxviz.ops.default_ops`), not while tracing."""
    return jax.default_backend() == "cpu"


def precision_allows(precision: str | None = None) -> bool:
    """False for a matmul ``precision`` of "highest"/"float32" (default: ``jax.default_matmul_precision`` now):
    the exact (parity) mode."""
    if precision is None:
        precision = jax.config.jax_default_matmul_precision
    return precision not in EXACT_PRECISIONS


def applies(x_shape, channels: int | None = None, approximate: bool | None = None) -> bool:
    """Whether a conv on an NHWC input of this shape should use Winograd (given transformed kernels);
    ``channels`` = the smaller of its input and output channel counts.

    Below :data:`MIN_TILES` 4×4 output tiles per call (images × tiles per image), only layers with
    ≥ :data:`WIDE_CHANNELS` channels take it: each of its 36 matrix products then has too few rows to
    amortise the transforms, except for the widest layers (docs/PERFORMANCE.md, item 13). ``approximate``
    (:attr:`jaxviz.ops.Ops.approximate`; default: :func:`precision_allows` now) is False in the exact mode,
    where no layer takes it.
    """
    n, h, w = x_shape[:3]
    if approximate is None:
        approximate = precision_allows()
    if min(h, w) < MIN_SIDE or not approximate:
        return False
    tiles = n * -(-h // 4) * -(-w // 4)
    return tiles >= MIN_TILES or (channels is not None and channels >= WIDE_CHANNELS)


def transform_kernel(kernel: jax.Array) -> jax.Array:
    """``G k Gᵀ`` for every channel pair: ``[3, 3, Cin, Cout] → [36, Cin, Cout]``."""
    g = jnp.asarray(G, kernel.dtype)
    u = jnp.einsum("ai,ijco,bj->abco", g, kernel, g, precision=jax.lax.Precision.HIGHEST)
    return u.reshape(36, *kernel.shape[2:])


def _along(matrix: np.ndarray, x: jax.Array, axis: int, ynn_fusion: bool) -> jax.Array:
    """``matrix @ x`` along ``axis`` for a small constant matrix; the result's axis first."""
    if not ynn_fusion:
        # A broadcast product and a sum: XLA fuses it into one loop, which compiles quicker than the sums
        # unrolled (docs/PERFORMANCE.md).
        m = jnp.asarray(matrix, x.dtype).reshape(matrix.shape + (1,) * (x.ndim - 1))
        return jnp.sum(m * jnp.moveaxis(x, axis, 0)[None], axis=1)
    # With YNNPACK's fusions on (JAX's default flags, see jaxviz.xla_cpu) that sum would go to YNNPACK, a slow
    # path for it; unrolled sums of scaled slices stay XLA's own fused loops.
    terms = [jax.lax.index_in_dim(x, i, axis, keepdims=False) for i in range(x.shape[axis])]
    out = []
    for row in matrix:
        acc = None
        for c, t in zip(row, terms):
            if c:
                t = t if c == 1 else (-t if c == -1 else t * jnp.asarray(c, t.dtype))
                acc = t if acc is None else acc + t
        out.append(acc)
    return jnp.stack(out)


def _tiles(xp: jax.Array, rows: int, tw: int) -> jax.Array:
    """The overlapping 6×6 tiles, stride 4, of a padded strip ``[N, 4·rows + 4, 4·tw + 4, C]``:
    ``[N, rows, 6, tw, 6, C]``."""
    n, _, _, c = xp.shape
    # Blocks of 4 rows; tile i is block i plus the first 2 rows of block i + 1. Then the same for columns.
    r = xp.reshape(n, rows + 1, 4, 4 * (tw + 1), c)
    r = jnp.concatenate([r[:, :rows], r[:, 1:, :2]], axis=2).reshape(n, rows, 6, tw + 1, 4, c)
    return jnp.concatenate([r[:, :, :, :tw], r[:, :, :, 1:, :2]], axis=4)


def _conv_strip(xp: jax.Array, u: jax.Array, rows: int, tw: int, ynn_fusion: bool) -> jax.Array:
    """The ``[N, 4·rows, 4·tw, C']`` output of one padded strip (see :func:`_tiles`)."""
    n, cin, cout = xp.shape[0], xp.shape[-1], u.shape[-1]
    # Input transform Bᵀ d B of every tile: columns, then rows → [6, 6, N, rows, tw, C].
    v = _along(BT, _along(BT, _tiles(xp, rows, tw), 4, ynn_fusion), 3, ynn_fusion)
    # The barriers keep XLA from fusing the transforms into the products (which recomputes them per use).
    v = jax.lax.optimization_barrier(v.reshape(36, n * rows * tw, cin))
    m = jnp.einsum("ktc,kco->kto", v, u, precision=jax.lax.Precision.HIGHEST)
    m = jax.lax.optimization_barrier(m).reshape(6, 6, n, rows, tw, cout)
    # Output transform Aᵀ m A → [4 (column), 4 (row), N, rows, tw, C'], then back to pixels.
    y = _along(AT, _along(AT, m, 0, ynn_fusion), 1, ynn_fusion).transpose(2, 3, 1, 4, 0, 5)
    return y.reshape(n, 4 * rows, 4 * tw, cout)


def strips(n: int, th: int, tw: int, cin: int, cout: int, budget: int = STRIP_BYTES) -> tuple[int, int]:
    """``(images, tile rows)`` per strip: the whole batch if its transformed input and products (36 values
    per tile and channel, in and out) take ≤ 3 × ``budget``, else strips that fit in ``budget`` bytes:
    whole images when they fit, else bands of tile rows of one image, of equal height."""
    per_row = 36 * tw * (cin + cout) * 4
    if n * th * per_row <= 3 * budget:  # splitting gains little there; each strip loop adds compile time
        return n, th
    rows = max(1, budget // per_row)
    if rows < th:
        return 1, -(-th // -(-th // rows))
    images = max(1, min(n, budget // (per_row * th)))
    while n % images:
        images -= 1
    return images, th


def conv(x: jax.Array, u: jax.Array, budget: int = STRIP_BYTES, ynn_fusion: bool | None = None) -> jax.Array:
    """3×3, stride 1, "same" convolution of NHWC ``x`` with transformed kernels ``u`` (:func:`transform_kernel`).

    Computed strip by strip (:func:`strips`) in a loop when the batch's transformed tiles take more than
    3 × ``budget`` bytes: each strip's intermediates then stay in the CPU's cache (without strips, large
    batches fall out of the cache and lose to the direct convolution; docs/PERFORMANCE.md).
    ``ynn_fusion`` says whether XLA:CPU's YNNPACK fusions are on (:attr:`jaxviz.ops.Ops.ynn_fusion`; default:
    this process's ``XLA_FLAGS``, :func:`jaxviz.xla_cpu.ynn_disabled`): the tile transforms take the form that
    stays fast under them.
    """
    if ynn_fusion is None:
        ynn_fusion = not xla_cpu.ynn_disabled()
    n, h, w, cin = x.shape
    cout = u.shape[-1]
    th, tw = -(-h // 4), -(-w // 4)  # 4×4 output tiles per axis
    images, rows = strips(n, th, tw, cin, cout, budget)
    bands, groups = -(-th // rows), n // images
    # Zero padding: 1 pixel before (the "same" border), enough after for whole tiles in every strip.
    xp = jnp.pad(x, ((0, 0), (1, 4 * bands * rows + 3 - h), (1, 4 * tw + 3 - w), (0, 0)))
    if bands * groups == 1:
        return _conv_strip(xp, u, rows, tw, ynn_fusion)[:, :h, :w]

    def strip(i, out):
        g, b = i // bands, i % bands
        xs = jax.lax.dynamic_slice(xp, (g * images, 4 * rows * b, 0, 0), (images, 4 * rows + 4, *xp.shape[2:]))
        part = _conv_strip(xs, u, rows, tw, ynn_fusion)
        return jax.lax.dynamic_update_slice(out, part, (g * images, 4 * rows * b, 0, 0))

    out = jnp.zeros((n, 4 * bands * rows, 4 * tw, cout), x.dtype)
    return jax.lax.fori_loop(0, bands * groups, strip, out)[:, :h, :w]
