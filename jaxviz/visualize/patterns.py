"""Filter patterns: the input each convnet filter responds to most, by gradient ascent in input space.

Chollet, *Deep Learning with Python* (1st ed.), §5.4.2, listings 5.38–5.39: start from a gray image with a
little noise and follow the gradient of one channel's mean activation, the gradient normalised by its RMS,
for 40 steps. :func:`filter_patterns` does that for many filters at once:

- ``method="keras"`` is listing 5.38 step for step (parity mode: compare it with Keras with ``init=``).
- ``method="regularised"`` is the recipe of Olah et al., "Feature Visualization", Distill 2017 (lucid's
  ``render_vis``): an image parametrised in a decorrelated Fourier/colour space, random jitter, scale and
  rotation at every step, and Adam. Deep layers (block4, block5) then give recognisable textures and
  object parts instead of high-frequency noise. Defaults are in :data:`REGULARISED_DEFAULTS`. Its image
  is shown as it is (:func:`display_images`), as lucid/Lucent show theirs: then its colour saturation and
  contrast are Lucent's (within 4 % of its renders of the same filters; scripts/compare_lucent.py,
  tests/test_lucent_colours.py). The book's contrast stretch, made for listing 5.38's unbounded images,
  would about halve both.

How it runs (see docs/PERFORMANCE.md for the measurements behind each choice):

- The whole ascent is ONE compiled program: ``lax.fori_loop`` over the steps, batched over filters (image
  ``i`` maximises filter ``i``; the images never interact, so the summed loss gives every image its own
  gradient). The filter is chosen by a one-hot contraction, not by indexing: the gradient of an indexed
  read is a scatter, which XLA:CPU runs on one core.
- The network's convolutions and max-pools have hand-written backward passes (:func:`jaxviz.ops.conv3x3`,
  :func:`jaxviz.ops.max_pool2x2`) that stay on XLA:CPU's fast path inside loops;
  :func:`check_compiled_program` verifies it on the compiled HLO (no scatter; every convolution in
  forward layout, none with a reversed kernel). Their flipped kernels are computed once before the loop
  (:func:`jaxviz.graph.prepare`): XLA:CPU would otherwise redo the flips at every step
  (``loop_reverses`` in the report; measured up to ~19 % of a step at block5_conv1 @ 64 px).
- Only the wanted channels of the target layer are computed (``columns``): the pass stops at the layer
  before it, and the target convolution uses just the chunk's kernel columns — the channels the
  objective reads. At block3_conv1 that is 16 % of the work saved; measured 16 % faster per step at
  150 px, 18 % at 64 px (``columns=False`` computes the whole layer, for comparison).
- Filters are split into chunks sized for the device (:func:`jaxviz.parallel.choose_chunk_size`), each
  chunk sharded over all local devices, chunks shared between ``jax.distributed`` processes, finished
  filters optionally stored for resuming. Each filter's random start comes from
  ``fold_in(key(seed), filter_index)``: its result does not depend on which other filters were asked for.
- Compiled programs are cached per static signature (model shape, layer, size, chunk, method, dtype,
  devices; the step count and step size are run-time arguments); a second call with the same shapes
  neither retraces nor recompiles.

Examples:
  >>> model = jaxviz.load("vgg16", include_top=False)
  >>> x = filter_patterns(model, "block3_conv1", range(64), size=150)   # [64, 150, 150, 3], model space
  >>> grid = image_grid(deprocess_image(x), cols=8, margin=5, order="columns")  # the book's (listing 5.39)
  >>> y = filter_patterns(model, "block4_conv1", range(64), size=128, method="regularised")
  >>> grid = image_grid(display_images(y, "regularised"), cols=8)               # as lucid shows them
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import graph, ops, parallel, preprocessing, runtime, vgg
from ..errors import JaxvizError

METHODS = ("keras", "regularised")
DTYPES = ("float32", "bfloat16")
#: ``steps`` and ``step_size`` when not given: the book's 40 steps of size 1; lucid-style 256 Adam steps
#: with learning rate 0.05.
DEFAULT_STEPS = {"keras": 40, "regularised": 256}
DEFAULT_STEP_SIZE = {"keras": 1.0, "regularised": 0.05}

#: Options of ``method="regularised"`` (pass them as keyword arguments to :func:`filter_patterns`).
#: Values follow lucid's ``render_vis`` defaults (Olah et al. 2017) where it has one.
REGULARISED_DEFAULTS = {
    # Image parametrisation: Fourier coefficients scaled by 1/f**decay_power (lucid's fft_image), drawn
    # N(0, init_std²); colours decorrelated with ImageNet's colour-correlation square root; sigmoid to
    # [0, 1]. With decay_power=0 and decorrelate=False the image is a plain sigmoid of pixel values.
    "decay_power": 1.0,
    "init_std": 0.01,
    "decorrelate": True,
    # Transformations applied before every forward pass (robustness, lucid's standard_transforms):
    # gray padding, random shift up to ±jitter px, random scale in [1-scale, 1+scale], random rotation
    # in ±rotate degrees. The model sees the centre `size`×`size` crop.
    "pad": 12,
    "jitter": 6.0,
    "scale": 0.1,
    "rotate": 10.0,
    # Objective: the channel's mean before the ReLU (lucid's "…_pre_relu"; a dead unit still has a
    # gradient); set False for the post-ReLU mean, as method="keras" uses.
    "pre_relu": True,
}

# ImageNet colour correlation (square root of its covariance, from an SVD), as published with lucid.
_COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32
)
_BGR_MEAN = np.asarray((103.939, 116.779, 123.68), np.float32)



# ---------------------------------------------------------------------------------------------------------
# Which part of the network a layer's objective needs


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How to compute one layer's per-channel objective."""

    layer: str
    channels: int
    spatial: bool  # the layer has H, W axes to average over
    before: str | None = None  # last layer computed by the network (None: full pass to `layer`)
    conv: str | None = None  # conv computed column by column after `before`
    pool: bool = False  # a max-pool follows `conv` (the target is a pooling layer)
    preprocess: str = "caffe"  # the model's input space (jaxviz.preprocessing mode)
    in_channels: int = 3  # the model's input channels (1: grayscale)


def _table(model, size: int, layer: str):
    """The model's layer table for ``size`` × ``size`` inputs, up to ``layer``."""
    return model.layer_table((size, size, getattr(model.arch, "channels", 3)), upto=layer)


def _plan(model, layer: str, size: int) -> _Plan:
    plan = _plan_layers(model, layer, size)
    return dataclasses.replace(plan, preprocess=getattr(model, "preprocess", "caffe"),
                               in_channels=getattr(model.arch, "channels", 3))


def _plan_layers(model, layer: str, size: int) -> _Plan:
    mode = "caffe"  # set by _plan
    if layer == "logits":
        return _Plan(layer, model.arch.num_classes, False, preprocess=mode)
    rows = _table(model, size, layer)
    names = [r.name for r in rows]
    i = names.index(layer)
    row = rows[i]
    spatial = len(row.output_shape) == 3
    if not isinstance(model.arch, vgg.Arch):  # any graph: the pass up to the layer, all its channels
        return _Plan(layer, row.output_shape[-1], spatial, preprocess=mode)
    if row.kind == "Conv2D":
        return _Plan(layer, row.output_shape[-1], True, names[i - 1], layer, False, preprocess=mode)
    if row.kind == "MaxPooling2D" and rows[i - 1].kind == "Conv2D":
        return _Plan(layer, row.output_shape[-1], True, names[i - 2], names[i - 1], True, preprocess=mode)
    return _Plan(layer, row.output_shape[-1], spatial, preprocess=mode)


def _forward(module, prep, x, upto):
    """The network up to ``upto`` (``"input_layer"``: the input itself); :meth:`Model.apply` without taps."""
    if upto == "input_layer":
        return x
    out, _ = module.apply({"params": prep["params"], "flipped": prep["flipped"]}, x, upto=upto)
    return out


def _prepare(module, plan: _Plan, params, onehot, *, columns: bool, dtype) -> dict:
    """What the objective needs that stays fixed during an ascent, computed once before its loop.

    The params in the compute dtype, the flipped kernels of the backward convs
    (:func:`jaxviz.graph.prepare`), and with ``columns`` the chunk's kernel columns of the target
    conv: picked by a one-hot contraction (``[3,3,Cin,C] · [B,C] → [3,3,Cin,B]``), so no gather or scatter
    appears in the program.
    """
    dtype = jnp.dtype(dtype)
    cparams = _cast_params(params, dtype)
    prep = {"params": cparams, "flipped": graph.prepare(module.graph, cparams, module.ops),
            "onehot": onehot.astype(dtype)}
    if plan.conv is not None and columns:
        p = cparams[plan.conv]
        kernel = jnp.einsum("hwio,bo->hwib", p["kernel"], prep["onehot"])
        prep["column"] = (kernel, ops.flip_kernel(kernel), prep["onehot"] @ p["bias"])
    return prep


def _objective(module, plan: _Plan, prep: dict, x, *, pre_relu: bool = False):
    """Per-image objective ``[B]``: the mean over positions of channel ``onehot[b]`` of ``plan.layer``.

    Image ``b`` is scored on its own channel only, so ``objective(x).sum()`` has per-image gradients.
    ``prep`` is :func:`_prepare`'s; with its ``column`` the target convolution computes only the chunk's
    channels, and the diagonal is taken by a one-hot contraction. ``pre_relu`` scores the convolution's
    output before its ReLU (conv layers only).
    """
    dtype = x.dtype
    onehot = prep["onehot"]
    if plan.conv is not None and ("column" in prep or pre_relu):
        h = _forward(module, prep, x, plan.before)
        if "column" in prep:
            kernel, kernel_t, bias = prep["column"]
            select = jnp.eye(x.shape[0], dtype=dtype)
        else:
            p = prep["params"][plan.conv]
            kernel, kernel_t, bias = p["kernel"], prep["flipped"][plan.conv]["kernel"], p["bias"]
            select = onehot
        z = ops.conv3x3(h, kernel, kernel_t) + bias
        a = z if pre_relu else jax.nn.relu(z)
        if plan.pool:
            a = ops.max_pool2x2(a)
    else:
        a = _forward(module, prep, x, plan.layer)
        select = onehot
    n = a.shape[1] * a.shape[2] if a.ndim == 4 else 1
    # Sum in float32 whatever the compute dtype.
    return jnp.einsum("b...c,bc->b", a, select, preferred_element_type=jnp.float32) / n


def _use_columns(plan: _Plan, chunk: int) -> bool:
    return plan.conv is not None and chunk < plan.channels


def _cast_params(params, dtype):
    return jax.tree_util.tree_map(lambda p: p.astype(dtype), params)


def _random_start(seed, filters, size: int, plan: _Plan | None = None):
    """The book's ``np.random.random((1, size, size, 3)) * 20 + 128.``, one key per filter index.

    For Caffe's VGG input (the book's) the values are used as they are; for any other preprocessing they
    are pixels (gray levels 128–148) mapped into the model's input range, so a model fed [0, 1] or [-1, 1]
    starts from the same mid-gray image."""
    base = jax.random.key(seed)
    c = 3 if plan is None else plan.in_channels
    x = jax.vmap(
        lambda f: jax.random.uniform(jax.random.fold_in(base, f), (size, size, c), jnp.float32) * 20.0 + 128.0
    )(filters)
    if plan is None or plan.preprocess == "caffe":
        return x
    return preprocessing.preprocess(x, plan.preprocess)


# ---------------------------------------------------------------------------------------------------------
# method="keras": listing 5.38


def _keras_program(module, plan, params, filters, seed, init, step_size, steps, *, size, columns, dtype):
    runtime.trace_counts["patterns_keras"] += 1
    dtype = jnp.dtype(dtype)
    x0 = _random_start(seed, filters, size, plan) if init is None else init
    # A step of `step_size` gray levels: the book's for Caffe's input, scaled to other input ranges.
    unit = 1.0 if plan.preprocess == "caffe" else jnp.asarray(preprocessing.gray_level(plan.preprocess,
                                                                                       plan.in_channels))
    onehot = jax.nn.one_hot(filters, plan.channels, dtype=jnp.float32)
    prep = _prepare(module, plan, params, onehot, columns=columns, dtype=dtype)  # once, outside the loop

    def total(x):
        return _objective(module, plan, prep, x.astype(dtype)).sum()

    grad = jax.grad(total)

    def step(_, x):
        g = grad(x).astype(jnp.float32)
        # grads /= (K.sqrt(K.mean(K.square(grads))) + 1e-5), per image.
        g = g / (jnp.sqrt(jnp.mean(jnp.square(g), axis=(1, 2, 3), keepdims=True)) + 1e-5)
        return x + step_size * unit * g

    return lax.fori_loop(0, steps, step, x0)


# ---------------------------------------------------------------------------------------------------------
# method="regularised": Olah et al. 2017


def _spectrum_scale(size: int, decay_power: float) -> np.ndarray:
    """lucid's 1/f scaling of an rfft2 spectrum of a ``size``×``size`` image: ``[size, size // 2 + 1]``."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    return (1.0 / np.maximum(freqs, 1.0 / size) ** decay_power).astype(np.float32)


def _param_to_rgb(param, size: int, opts: dict):
    """Fourier parameters ``[2, 3, S, S//2+1]`` (real, imaginary) → RGB image ``[S, S, 3]`` in (0, 1)."""
    scale = jnp.asarray(_spectrum_scale(size, opts["decay_power"]))
    spectrum = lax.complex(param[0], param[1]) * scale
    img = jnp.fft.irfft2(spectrum, s=(size, size), norm="ortho").transpose(1, 2, 0) / 4.0
    if opts["decorrelate"]:
        c = _COLOR_CORRELATION_SVD_SQRT
        c = c / np.max(np.linalg.norm(c, axis=0))
        img = img @ jnp.asarray(c.T)
    return jax.nn.sigmoid(img)


def _shear_x(img, amount):
    """Shifts row ``y`` of ``[H, W, C]`` by ``amount · (y − centre)`` pixels (exact, periodic: via the FFT)."""
    h, w = img.shape[:2]
    shift = amount * (jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2)
    freqs = jnp.fft.fftfreq(w).astype(jnp.float32)
    phase = jnp.exp(-2j * jnp.pi * shift[:, None] * freqs[None, :])
    return jnp.real(jnp.fft.ifft(jnp.fft.fft(img, axis=1) * phase[:, :, None], axis=1)).astype(img.dtype)


def _rotate(img, theta):
    """Rotates ``[H, W, C]`` by ``theta`` radians about its centre with three shears (Paeth 1986)."""
    a, b = -jnp.tan(theta / 2), jnp.sin(theta)
    img = _shear_x(img, a)
    img = _shear_x(img.transpose(1, 0, 2), b).transpose(1, 0, 2)
    return _shear_x(img, a)


def _transform(rgb, key, opts: dict):
    """Random pad / scale / rotate / shift of one RGB image ``[S, S, 3]``, back to ``[S, S, 3]``.

    All steps are dense linear maps (padding, interpolation matrices, FFTs), so the gradient has no
    gather or scatter.
    """
    size = rgb.shape[0]
    pad = int(opts["pad"])
    img = jnp.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), constant_values=0.5)
    big = size + 2 * pad
    k_scale, k_rot, k_shift = jax.random.split(key, 3)
    s = 1.0 + opts["scale"] * jax.random.uniform(k_scale, (), minval=-1.0, maxval=1.0)
    shift = opts["jitter"] * jax.random.uniform(k_shift, (2,), minval=-1.0, maxval=1.0)
    # Output pixel o samples input (o − t) / s: scale about the centre, then shift.
    t = (1.0 - s) * big / 2 + shift
    img = jax.image.scale_and_translate(img, (big, big, 3), (0, 1), jnp.stack([s, s]), t, "linear",
                                        antialias=False)
    if opts["rotate"]:
        theta = jnp.deg2rad(opts["rotate"]) * jax.random.uniform(k_rot, (), minval=-1.0, maxval=1.0)
        img = _rotate(img, theta)
    return img[pad: pad + size, pad: pad + size]


def _to_model_space(rgb, mode: str = "caffe", channels: int = 3):
    """RGB in [0, 1] → the model's input (Keras's ``mode`` preprocessing; "caffe": BGR 0..255 minus the means;
    one channel: the RGB image's mean)."""
    if channels == 1:
        rgb = rgb.mean(axis=-1, keepdims=True)
    if mode == "caffe":
        return rgb[..., ::-1] * 255.0 - jnp.asarray(_BGR_MEAN)
    return preprocessing.preprocess(rgb * 255.0, mode)


def _fourier_ascent(module, plan, prep, keys, step_size, steps, *, size, dtype, opts, penalty=None):
    """lucid's regularised ascent (Fourier parametrisation, transformations, Adam) of one image per start key
    ``keys[b]`` on channel ``prep["onehot"][b]``; ``penalty(x)`` of the batch in model space, if given, is
    added to the loss. Returns the images in model space."""
    import optax

    shape = (2, 3, size, size // 2 + 1)
    param0 = jax.vmap(lambda k: opts["init_std"] * jax.random.normal(jax.random.fold_in(k, 0), shape))(keys)
    step_base = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    pre_relu = bool(opts["pre_relu"]) and plan.conv is not None and not plan.pool

    def loss(param, step_keys):
        rgb = jax.vmap(lambda p: _param_to_rgb(p, size, opts))(param)
        rgb = jax.vmap(lambda im, k: _transform(im, k, opts))(rgb, step_keys)
        x = _to_model_space(rgb, plan.preprocess, plan.in_channels).astype(dtype)
        value = -_objective(module, plan, prep, x, pre_relu=pre_relu).sum()
        return value if penalty is None else value + penalty(x)

    opt = optax.adam(step_size)

    def step(i, carry):
        param, state = carry
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(step_base)
        g = jax.grad(loss)(param, step_keys)
        updates, state = opt.update(g, state, param)
        return optax.apply_updates(param, updates), state

    param, _ = lax.fori_loop(0, steps, step, (param0, opt.init(param0)))
    rgb = jax.vmap(lambda p: _param_to_rgb(p, size, opts))(param)
    return _to_model_space(rgb, plan.preprocess, plan.in_channels)


def _regularised_program(module, plan, params, filters, seed, init, step_size, steps, *, size, columns,
                         dtype, opts):
    runtime.trace_counts["patterns_regularised"] += 1
    dtype = jnp.dtype(dtype)
    onehot = jax.nn.one_hot(filters, plan.channels, dtype=jnp.float32)
    prep = _prepare(module, plan, params, onehot, columns=columns, dtype=dtype)  # once, outside the loop
    base = jax.random.key(seed)
    keys = jax.vmap(lambda f: jax.random.fold_in(base, f))(filters)
    return _fourier_ascent(module, plan, prep, keys, step_size, steps, size=size, dtype=dtype, opts=dict(opts))


def gram_similarity(a) -> jax.Array:
    """Mean cosine similarity of the Gram matrices of a batch's activations ``[N, H, W, C]`` (or ``[N, C]``),
    over the ``N (N - 1)`` ordered pairs of different images: the term the diversity objective penalises."""
    a = a.reshape(a.shape[0], -1, a.shape[-1]).astype(jnp.float32)
    g = jnp.einsum("npc,npd->ncd", a, a).reshape(a.shape[0], -1) / a.shape[1]
    g = g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + 1e-8)
    sim = g @ g.T
    n = a.shape[0]
    return (sim.sum() - jnp.trace(sim)) / (n * (n - 1))


def _diverse_program(module, plan, params, unit, seed, step_size, steps, weight, *, size, n, opts):
    """``n`` regularised patterns of one unit, penalised by ``weight`` × n × :func:`gram_similarity` of the
    target layer's activations (Olah et al. 2017, "Feature Visualization", section "Diversity")."""
    runtime.trace_counts["patterns_diverse"] += 1
    onehot = jax.nn.one_hot(jnp.full((n,), unit), plan.channels, dtype=jnp.float32)
    prep = _prepare(module, plan, params, onehot, columns=False, dtype=jnp.float32)
    base = jax.random.fold_in(jax.random.key(seed), unit)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n))

    def penalty(x):
        return weight * n * gram_similarity(_forward(module, prep, x, plan.layer))

    return _fourier_ascent(module, plan, prep, keys, step_size, steps, size=size, dtype=jnp.float32,
                           opts=dict(opts), penalty=penalty)


def diverse_patterns(model, layer: str, unit: int, n: int = 4, weight: float = 1.0, size: int = 64,
                     steps: int | None = None, step_size: float | None = None, seed: int = 0,
                     **regularised_options) -> np.ndarray:
    """``n`` different images that excite ``unit`` of ``layer``: the regularised ascent of a batch whose loss
    adds ``weight`` × n × the mean cosine similarity of the images' Gram matrices at ``layer``
    (:func:`gram_similarity`; Olah et al. 2017, "Feature Visualization", Distill, section "Diversity").
    ``weight=0`` gives ``n`` independent regularised patterns from the same starts.

    Returns:
      float32 ``[n, S, S, C]`` in the model's input space; show them with :func:`display_images` (method
      "regularised").
    """
    (layer,) = model.check_layers(layer)
    size = _check_size(model, layer, size)
    plan = _plan(model, layer, size)
    (unit,) = _check_filters([unit], plan, model)
    n = runtime.check_positive(n, "n")
    if n < 2:
        raise JaxvizError(f"diversity needs at least 2 images per unit, got {n}")
    options = _check_options("regularised", regularised_options)
    steps = DEFAULT_STEPS["regularised"] if steps is None else int(steps)
    step_size = DEFAULT_STEP_SIZE["regularised"] if step_size is None else float(step_size)
    key = ("patterns_diverse", model.module, layer, size, n, options, plan.preprocess)
    program = runtime.shared_program(key, lambda: jax.jit(functools.partial(
        _diverse_program, model.module, plan, size=size, n=n, opts=dict(options))))
    return np.asarray(program(model.params, np.int32(unit), np.uint32(seed), np.float32(step_size),
                              np.int32(steps), np.float32(weight)))


# ---------------------------------------------------------------------------------------------------------
# Compiled programs, cached per static signature


@dataclasses.dataclass(frozen=True)
class _Signature:
    module: object  # the Flax VGG module (hashable: arch + include_top)
    layer: str
    size: int
    chunk: int
    method: str
    dtype: str
    columns: bool
    has_init: bool
    options: tuple
    devices: tuple  # device ids of the mesh
    preprocess: str = "caffe"  # the input space: where the ascent starts, its step, the image it returns
    # jax.default_matmul_precision at the call: "highest"/"float32" build the exact-mode program (direct
    # convolutions, see jaxviz.winograd), so it must not share a cache entry with the fast default's.
    precision: str | None = dataclasses.field(default_factory=lambda: jax.config.jax_default_matmul_precision)



#: XLA:CPU options for the ascent programs: LLVM at -O2 instead of -O3 compiles block5_conv1 @ 64 px in
#: 1.7 s instead of 2.5 s; the time goes to matmuls and convolutions, which LLVM does not generate, and the
#: steps ran as fast (within the ±5 % noise of three interleaved rounds at three sizes).
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 2}


def _program(model, plan: _Plan, sig: _Signature, devices):
    """``(compiled, mesh)`` for ``sig``: lowered and compiled once (:func:`jaxviz.runtime.shared_program`)."""
    return runtime.shared_program(("patterns", sig), lambda: _make_program(model, plan, sig, devices))


def _make_program(model, plan: _Plan, sig: _Signature, devices):
    mesh = parallel.local_mesh(devices)
    rep, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    kw = dict(size=sig.size, columns=sig.columns, dtype=sig.dtype)
    if sig.method == "keras":
        fn = functools.partial(_keras_program, sig.module, plan, **kw)
    else:
        fn = functools.partial(_regularised_program, sig.module, plan, opts=dict(sig.options), **kw)
    in_shardings = (rep, batch, rep, batch if sig.has_init else None, rep, rep)
    jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=batch)
    params = jax.tree_util.tree_map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.float32, sharding=rep), model.params)
    filters = jax.ShapeDtypeStruct((sig.chunk,), jnp.int32, sharding=batch)
    seed = jax.ShapeDtypeStruct((), jnp.uint32, sharding=rep)
    init = None
    if sig.has_init:
        init = jax.ShapeDtypeStruct((sig.chunk, sig.size, sig.size, plan.in_channels), jnp.float32, sharding=batch)
    step = jax.ShapeDtypeStruct((), jnp.float32, sharding=rep)
    steps = jax.ShapeDtypeStruct((), jnp.int32, sharding=rep)
    options = CPU_COMPILER_OPTIONS if devices[0].platform == "cpu" else None
    compiled = jitted.lower(params, filters, seed, init, step, steps).compile(compiler_options=options)
    return compiled, mesh


def clear_cache() -> None:
    """Forgets the compiled programs (they are rebuilt, or loaded from the persistent cache, when needed)."""
    runtime.clear_programs()


# ---------------------------------------------------------------------------------------------------------
# Checking arguments


def _check_filters(filters, plan: _Plan, model) -> list[int]:
    if filters is None:
        return list(range(min(64, plan.channels)))
    if isinstance(filters, (int, np.integer)):
        filters = [int(filters)]
    try:
        out = [int(f) for f in filters]
    except (TypeError, ValueError):
        raise JaxvizError(f"filters must be an int or a sequence of ints, got {filters!r}") from None
    if not out:
        raise JaxvizError("no filters given")
    bad = [f for f in out if not 0 <= f < plan.channels]
    if bad:
        raise JaxvizError(
            f"filter index {bad[0]} out of range: {plan.layer} of {model.arch.name} has {plan.channels} "
            f"filters (0..{plan.channels - 1})"
        )
    return out


def _check_size(model, layer: str, size: int) -> int:
    size = int(size)
    fixed = model.arch.head == "flatten" and model.arch.default_size
    try:
        rows = _table(model, size, layer) if size > 0 else []
    except (TypeError, ValueError):  # shapes that do not fit the graph (a fixed-size head, a too small image)
        if fixed and size != model.arch.default_size:
            raise JaxvizError(f"{model.arch.name} takes only {model.arch.default_size}×{model.arch.default_size} "
                              f"inputs; got size={size}") from None
        raise JaxvizError(f"size={size} is too small for {layer} of {model.arch.name}") from None
    by_name = {r.name: r for r in rows}
    row = by_name.get(model.graph.resolve(layer))
    needs_full = row is not None and len(row.output_shape) == 1 and model.arch.head == "flatten"
    if needs_full and size != model.arch.default_size:
        raise JaxvizError(
            f"{layer} comes after the flatten layer, so its patterns need size={model.arch.default_size}; "
            f"got size={size}"
        )
    if row is None or (len(row.output_shape) == 3 and min(row.output_shape[:2]) < 1):
        raise JaxvizError(f"size={size} is too small: {layer} of {model.arch.name} would have no pixels left")
    return size


def _check_options(method: str, options: dict) -> tuple:
    if method == "keras":
        if options:
            raise JaxvizError(f"unknown option(s) for method='keras': {', '.join(sorted(options))}")
        return ()
    unknown = set(options) - set(REGULARISED_DEFAULTS)
    if unknown:
        raise JaxvizError(
            f"unknown option(s) for method='regularised': {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(REGULARISED_DEFAULTS)}"
        )
    merged = {**REGULARISED_DEFAULTS, **options}
    return tuple(sorted((k, float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                        for k, v in merged.items()))


# ---------------------------------------------------------------------------------------------------------
# Memory cost model


def _activation_sizes(model, layer: str, size: int, columns: bool) -> list[int]:
    """Elements of the input and of every layer output up to ``layer`` (one filter), from the layer table."""
    rows = _table(model, size, layer)
    sizes = [3 * size * size]
    for r in rows[1:]:
        sizes.append(int(np.prod(r.output_shape)))
        if r.name == model.graph.resolve(layer):
            if columns and len(r.output_shape) == 3:
                sizes[-1] //= r.output_shape[-1]  # only the filter's own channel is computed
            break
    return sizes


def working_set_bytes_per_filter(model, layer: str, size: int, dtype: str = "float32",
                                 columns: bool = True) -> float:
    """The cache one filter occupies while a layer runs: the largest ``input + output`` of one layer.

    Layers run one after the other, so what must stay in cache for a convolution to run at full speed is
    its own input and output, not every activation the backward pass keeps (those stream to memory and
    back once per step). Measured on a 2-core CPU with a 32 MiB L3 (block5_conv1 @ 64 px, 40 steps):
    chunks of 1, 2, 4, 8 filters took 1.28, 1.22, 1.06, 0.98 s per pattern, while block3_conv1 @ 64 px was
    flat (0.37–0.39 s) from 1 to 16 — the chunk is bounded by this working set, not by the whole program.
    """
    sizes = _activation_sizes(model, layer, size, columns)
    itemsize = jnp.dtype(dtype).itemsize
    return float(itemsize * max(a + b for a, b in zip(sizes[:-1], sizes[1:])))


def bytes_per_filter(model, layer: str, size: int, dtype: str = "float32", columns: bool = True) -> float:
    """Memory one filter's ascent keeps alive, from the layer table (the activations up to ``layer``).

    Forward activations are kept for the backward pass (conv outputs, ReLU masks, pool inputs) and the
    backward pass holds about two activation-sized buffers at a time: ``2·Σ act + 2·max act`` elements.
    XLA's memory analysis of the compiled program agrees within a factor of about two
    (``scripts/bench_patterns.py`` prints both; :func:`measured_bytes_per_filter` measures it).
    """
    sizes = _activation_sizes(model, layer, size, columns)
    itemsize = jnp.dtype(dtype).itemsize
    return float(itemsize * (2 * sum(sizes) + 2 * max(sizes)))


def measured_bytes_per_filter(model, layer: str, size: int, dtype: str = "float32",
                              devices=None) -> tuple[float, float]:
    """``(fixed_bytes, bytes_per_filter)`` from XLA's memory analysis of one ascent step at 1 and 2 filters."""
    plan = _plan(model, layer, size)
    devices = parallel.local_devices(devices)[:1]

    def compile_for(n):
        columns = _use_columns(plan, n)

        def one_step(params, x, filters):
            onehot = jax.nn.one_hot(filters, plan.channels, dtype=jnp.float32)
            prep = _prepare(model.module, plan, params, onehot, columns=columns, dtype=dtype)
            return jax.grad(lambda x: _objective(model.module, plan, prep, x.astype(dtype)).sum())(x)

        x = jax.ShapeDtypeStruct((n, size, size, plan.in_channels), jnp.float32)
        f = jax.ShapeDtypeStruct((n,), jnp.int32)
        return jax.jit(one_step).lower(model.params, x, f).compile()

    return parallel.measured_bytes_per_item(compile_for)


def weight_bytes(model, layer: str) -> float:
    """Bytes of the weights the pass up to ``layer`` reads (each step reads them about three times)."""
    total = 0
    for name in model.layer_names:
        if name in model.params:
            total += sum(int(np.prod(p.shape)) * 4 for p in model.params[name].values())
        if name == model.graph.resolve(layer):
            break
    return float(total)


def default_chunk_size(model, layer: str, size: int, n_filters: int, dtype: str = "float32",
                       devices=None) -> int:
    """The chunk :func:`filter_patterns` uses when ``chunk_size`` is not given (see :mod:`jaxviz.parallel`).

    CPUs: one layer's working set (:func:`working_set_bytes_per_filter`) against the last-level cache,
    grown while the weights (:func:`weight_bytes`, read three times a step: forward, and the flipped
    copy the backward pass makes and reads) outweigh one filter's activations. Accelerators: the
    compiled step's measured memory (two small compiles, remembered per signature) against free memory.
    """
    devices = parallel.local_devices(devices)
    if devices[0].platform == "cpu":
        return parallel.choose_chunk_size(working_set_bytes_per_filter(model, layer, size, dtype), n_filters,
                                          shared_bytes=3 * weight_bytes(model, layer), devices=devices)
    key = (model.module, layer, size, dtype, devices[0].platform)
    if key not in _MEASURED:
        _MEASURED[key] = measured_bytes_per_filter(model, layer, size, dtype, devices)
    fixed, per = _MEASURED[key]
    return parallel.choose_chunk_size(per, n_filters, shared_bytes=fixed, devices=devices)


_MEASURED: dict[tuple, tuple[float, float]] = {}


# ---------------------------------------------------------------------------------------------------------
# Public API


def filter_patterns(
    model,
    layer: str,
    filters: int | Iterable[int] | None = None,
    size: int = 150,
    steps: int | None = None,
    step_size: float | None = None,
    init=None,
    seed: int = 0,
    method: str = "keras",
    chunk_size: int | None = None,
    progress: bool = True,
    dtype: str = "float32",
    *,
    devices: Sequence | None = None,
    store: parallel.ItemStore | None = None,
    columns: bool = True,
    **regularised_options,
) -> np.ndarray:
    """Images that maximise the mean activation of ``filters`` of ``layer`` (listing 5.38, batched).

    Args:
      model: a :class:`jaxviz.Model` (with or without its top: the pass stops at ``layer``).
      layer: a layer name, e.g. ``"block3_conv1"`` (conv and pool layers take any ``size``).
      filters: channel indices: an int, a sequence, or ``None`` for the first 64 (or all, if fewer).
      size: image side ``S`` in pixels (the book uses 150; its grid figure 64).
      steps: ascent steps (default 40 for "keras", 256 for "regularised").
      step_size: "keras": the step ``x += step_size · g / rms(g)`` (default 1, the book's); "regularised":
        Adam's learning rate (default 0.05).
      init: ``[F, S, S, 3]`` start images replacing the random ones ("keras" only), e.g. the exact
        array a Keras run starts from, to compare the two step by step.
      seed: start images come from ``jax.random.fold_in(jax.random.key(seed), filter_index)``: the same
        filter gets the same start whatever else is requested. (The book's ``np.random.random((1, S, S,
        3)) * 20 + 128`` distribution; not numpy's numbers.)
      method: "keras" (the book's recipe) or "regularised" (Fourier/decorrelated parametrisation,
        transformation robustness and Adam, as in lucid; options in :data:`REGULARISED_DEFAULTS`).
      chunk_size: at most this many filters per compiled call (default: chosen for the device, see
        :func:`default_chunk_size`); evened out over the chunks and rounded up to a multiple of the number
        of devices (:func:`jaxviz.parallel.balanced_chunk`).
      progress: show a tqdm progress bar over the filters.
      dtype: compute dtype of the network: "float32" (parity with Keras) or "bfloat16" (faster on
        hardware with bf16 units; the image itself is kept in float32).
      devices: local devices to shard each chunk over (default: all). With ``jax.distributed``
        initialised, every process computes its share of the chunks and all get the merged result.
      store: a :class:`jaxviz.parallel.ItemStore`: filters found there are loaded instead of computed and
        every finished filter is saved to it as soon as its chunk completes (resuming). With several
        processes each may have its own store or share one.
      columns: compute only the chunk's channels at the target conv (faster; same values up to rounding).
      **regularised_options: see :data:`REGULARISED_DEFAULTS`.

    Returns:
      float32 ``[F, S, S, 3]`` in the model's input space (BGR, ImageNet means subtracted) — the book's
      ``input_img_data`` for each filter, in the order given. Show them with :func:`display_images`:
      "keras" ones through the book's contrast stretch (:func:`jaxviz.images.deprocess_image`),
      "regularised" ones as their sigmoid image, unstretched, as lucid/Lucent show theirs.

    Raises:
      LayerError: unknown layer.
      JaxvizError: filter index out of range, bad size, method, dtype or option.
    """
    (layer,) = model.check_layers(layer) if isinstance(layer, str) else (None,)
    if layer is None:
        raise JaxvizError("layer must be one layer name")
    if method not in METHODS:
        raise JaxvizError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if str(dtype) not in DTYPES:
        raise JaxvizError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    dtype = str(dtype)
    size = _check_size(model, layer, size)
    plan = _plan(model, layer, size)
    filters = _check_filters(filters, plan, model)
    options = _check_options(method, regularised_options)
    steps = DEFAULT_STEPS[method] if steps is None else int(steps)
    step_size = DEFAULT_STEP_SIZE[method] if step_size is None else float(step_size)
    if steps < 0:
        raise JaxvizError(f"steps must be >= 0, got {steps}")
    if init is not None:
        if method != "keras":
            raise JaxvizError("init= is only supported with method='keras'")
        init = np.asarray(init, np.float32)
        want = (len(filters), size, size, plan.in_channels)
        if init.shape != want:
            raise JaxvizError(f"init must have shape {want}, got {init.shape}")

    devices = parallel.local_devices(devices)
    n_dev = len(devices)
    if chunk_size is None:
        chunk_size = default_chunk_size(model, layer, size, len(filters), dtype, devices)
    chunk = parallel.balanced_chunk(len(filters), int(chunk_size), n_dev)
    use_columns = columns and _use_columns(plan, chunk)

    # Which filters still need computing (duplicates computed once). With several processes a filter is
    # done if any process's store has it; the first process holding it contributes it to the merge.
    unique = list(dict.fromkeys(filters))
    done = {f: store.load(f) for f in store.done(unique)} if store is not None else {}
    held = parallel.allgather_array(np.asarray([f in done for f in unique], bool))  # [P, len(unique)]
    todo = [f for f, h in zip(unique, held.T) if not h.any()]
    first_holder = {f: int(np.argmax(h)) for f, h in zip(unique, held.T) if h.any()}
    init_of = {f: init[i] for i, f in enumerate(filters)} if init is not None else None
    parallel.barrier("jaxviz-patterns-start")  # every process has read the store before anyone writes
    pieces = parallel.chunks(todo, chunk)
    mine = parallel.process_share(len(pieces))

    sig = _Signature(model.module, layer, size, chunk, method, dtype, use_columns, init is not None, options,
                     tuple(d.id for d in devices), preprocess=plan.preprocess)
    me = jax.process_index()
    computed_ids = [f for f in done if first_holder.get(f) == me] if jax.process_count() > 1 else []
    computed = [np.stack([done[f] for f in computed_ids])] if computed_ids else []
    if mine:
        compiled, mesh = _program(model, plan, sig, devices)
        rep, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)
        params = jax.device_put(model.params, rep)
        seed_arr = jax.device_put(np.uint32(seed), rep)
        step_arr = jax.device_put(np.float32(step_size), rep)
        steps_arr = jax.device_put(np.int32(steps), rep)
        from tqdm.auto import tqdm

        total = sum(len(pieces[i]) for i in mine)
        with tqdm(total=total, disable=not progress, desc=f"{layer} patterns", unit="filter",
                  leave=False) as bar:
            for i in mine:
                ids = pieces[i]
                padded = parallel.pad_to(ids, chunk)
                f_arr = jax.device_put(np.asarray(padded, np.int32), batch)
                x0 = None
                if init_of is not None:
                    x0 = jax.device_put(np.stack([init_of[f] for f in padded]), batch)
                out = np.asarray(compiled(params, f_arr, seed_arr, x0, step_arr, steps_arr))[: len(ids)]
                if store is not None:
                    for f, x in zip(ids, out):
                        store.save(f, x)
                computed_ids += ids
                computed.append(out)
                bar.update(len(ids))
    shape = (size, size, plan.in_channels)
    values = np.concatenate(computed) if computed else np.zeros((0, *shape), np.float32)
    done.update(parallel.allgather_items(computed_ids, values, shape))
    return np.stack([done[f] for f in filters]).astype(np.float32, copy=False)


def display_images(x, method: str = "keras", preprocess: str = "caffe", bgr_to_rgb: bool = False) -> np.ndarray:
    """Patterns from :func:`filter_patterns` → uint8 RGB images, shown as each method's reference shows them.

    - ``"keras"``: the book's contrast stretch (:func:`jaxviz.images.deprocess_image`, DLwP listing 5.37:
      each image to mean 0.5 and standard deviation 0.1, clipped), the arrays' channels as they are unless
      ``bgr_to_rgb`` (the book shows its BGR arrays).
    - ``"regularised"``: the ascent's own image, as lucid and Lucent show it (their ``render_vis`` returns
      the sigmoid image in [0, 1]; Olah et al., "Feature Visualization", Distill 2017): model space mapped
      back to RGB 0..255 (:func:`jaxviz.preprocessing.unpreprocess` with the model's ``preprocess`` mode)
      and rounded, without a stretch, in its own colours (``bgr_to_rgb`` does not apply). The book's
      stretch would squeeze it to standard deviation 0.1 around grey: on the trained demo network it halves
      the colour saturation and contrast of Lucent's renders of the same filters (scripts/compare_lucent.py).

    Args:
      x: ``[F, S, S, 3]`` model-space patterns (:func:`filter_patterns`'s result).
      method: the method that made them, "keras" or "regularised".
      preprocess: the model's input space (``model.preprocess``; "caffe" for the Keras VGGs).
      bgr_to_rgb: "keras" only: flip the channel axis first.

    Returns:
      uint8 ``[F, S, S, 3]``.
    """
    from ..images import deprocess_image

    if method not in METHODS:
        raise JaxvizError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if method == "keras":
        return deprocess_image(x, bgr_to_rgb=bgr_to_rgb)
    rgb = np.asarray(preprocessing.unpreprocess(np.asarray(x, np.float32), preprocessing.check_mode(preprocess)))
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def pattern_objective(model, layer: str, filters: int | Iterable[int], x, pre_relu: bool = False) -> np.ndarray:
    """The objective the ascent maximises: mean activation of filter ``filters[i]`` of ``layer`` on ``x[i]``.

    Args:
      x: ``[F, S, S, 3]`` model-space images (e.g. the output of :func:`filter_patterns`).
      pre_relu: score before the ReLU (conv layers only), as ``method="regularised"`` does by default.

    Returns:
      float32 ``[F]`` (the book's ``loss_value`` per filter).
    """
    (layer,) = model.check_layers(layer)
    x = np.asarray(x, np.float32)
    plan = _plan(model, layer, x.shape[1])
    filters = _check_filters(filters, plan, model)
    if len(filters) != x.shape[0]:
        raise JaxvizError(f"{len(filters)} filters for {x.shape[0]} images")
    columns = plan.conv is not None and _use_columns(plan, len(filters))
    pre_relu = bool(pre_relu) and plan.conv is not None and not plan.pool
    return np.asarray(_objective_jit(model.module, plan, model.params, jnp.asarray(x),
                                     jnp.asarray(filters, jnp.int32), columns, pre_relu))


@functools.partial(jax.jit, static_argnums=(0, 1, 5, 6))
def _objective_jit(module, plan, params, x, filters, columns, pre_relu):
    onehot = jax.nn.one_hot(filters, plan.channels, dtype=jnp.float32)
    return _objective(module, plan, _prepare(module, plan, params, onehot, columns=columns, dtype=x.dtype), x,
                      pre_relu=pre_relu)


def compiled_program(model, layer: str, size: int = 150, chunk: int = 1, method: str = "keras",
                     dtype: str = "float32", devices=None, columns: bool = True, has_init: bool = False,
                     **regularised_options) -> jax.stages.Compiled:
    """The compiled ascent program :func:`filter_patterns` runs for these settings (for inspection).

    ``compiled.as_text()`` is the optimised HLO (see :func:`check_compiled_program`),
    ``compiled.cost_analysis()`` XLA's FLOP count (of ONE loop iteration: XLA does not multiply by the
    trip count) and ``compiled.memory_analysis()`` its memory use.
    """
    (layer,) = model.check_layers(layer)
    size = _check_size(model, layer, size)
    plan = _plan(model, layer, size)
    options = _check_options(method, regularised_options)
    devices = parallel.local_devices(devices)
    sig = _Signature(model.module, layer, size, chunk, method, str(dtype),
                     columns and _use_columns(plan, chunk), has_init, options, tuple(d.id for d in devices),
                     preprocess=plan.preprocess)
    return _program(model, plan, sig, devices)[0]


def _hlo_computations(hlo_text: str) -> dict[str, str]:
    """``{computation name: its text}`` of an HLO module's text."""
    import re

    comps, name, lines = {}, None, []
    for line in hlo_text.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m and not line.startswith(" "):
            name, lines = m.group(1), []
        elif line.startswith("}") and name is not None:
            comps[name] = "\n".join(lines)
            name = None
        elif name is not None:
            lines.append(line)
    return comps


def check_compiled_program(hlo_text: str) -> dict:
    """Checks an optimised HLO module for the slow patterns of docs/PERFORMANCE.md.

    Returns a dict: ``scatter`` and ``select_and_scatter`` (op counts, want 0), ``convolutions`` (all)
    and ``loop_convolutions`` (inside the ascent loop), ``conv_layouts`` (``{dim_labels: count}``),
    ``reversed_kernel_convs`` (convolutions reading a reversed kernel), ``loop_reverses`` (kernel flips
    left inside the loop body: small copies, but they are redone every step), and ``ok``: no scatter of any
    kind and every convolution in the forward layout ``b01f_01io->b01f`` (NHWC·HWIO→NHWC) — i.e. the
    input gradient runs as a plain forward-style conv, as XLA:CPU's fast path needs.
    """
    import re

    comps = _hlo_computations(hlo_text)
    scatter = len(re.findall(r"\bscatter\(", hlo_text))
    sas = len(re.findall(r"\bselect-and-scatter\(", hlo_text))
    convs = [line for line in hlo_text.splitlines() if re.search(r"\bconvolution\(", line)]
    layouts = collections.Counter(
        (m.group(1) if (m := re.search(r"dim_labels=([^,\s]+)", line)) else "?") for line in convs
    )
    reversed_k = sum("rhs_reversal" in line for line in convs)

    # Everything reachable from the bodies of while loops.
    callees = {n: set(re.findall(r"(?:calls|body|condition|to_apply|branch_computations)=\{?%([\w.\-]+)", t))
               for n, t in comps.items()}
    bodies = {b for t in comps.values() for b in re.findall(r"\bwhile\(.*?body=%([\w.\-]+)", t)}
    seen, todo = set(), list(bodies)
    while todo:
        n = todo.pop()
        if n not in seen and n in comps:
            seen.add(n)
            todo += callees.get(n, ())
    loop_text = "\n".join(comps[n] for n in seen)
    ok = scatter == 0 and sas == 0 and reversed_k == 0 and set(layouts) <= {"b01f_01io->b01f"}
    return {"scatter": scatter, "select_and_scatter": sas, "convolutions": len(convs),
            "loop_convolutions": len(re.findall(r"\bconvolution\(", loop_text)),
            "loop_reverses": len(re.findall(r"\breverse\(", loop_text)),
            "reversed_kernel_convs": reversed_k, "conv_layouts": dict(layouts), "ok": ok}


def forward_flops(model, layer: str, size: int) -> float:
    """FLOPs of one image's forward pass up to ``layer`` (2 per multiply-add; convs and dense layers).

    One ascent step is forward + input gradient = about twice this (the weights are constants, so no
    kernel gradient is computed); a pattern of ``steps`` steps costs ``2 · steps · forward_flops``.
    """
    rows = _table(model, size, layer)
    total = 0.0
    for r in rows:
        if r.kernel_shape is not None:
            positions = r.output_shape[0] * r.output_shape[1] if len(r.output_shape) == 3 else 1
            total += 2.0 * positions * math.prod(r.kernel_shape)
        if r.name == model.graph.resolve(layer):
            break
    return total
