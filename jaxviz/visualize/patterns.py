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
  gradient). The parts are :mod:`jaxviz.optvis`'s: the objective (:mod:`~jaxviz.optvis.objectives`), the
  parametrisation (:mod:`~jaxviz.optvis.param`), the transformations (:mod:`~jaxviz.optvis.transforms`)
  and the loops (:mod:`~jaxviz.optvis.ascent`).
- The network runs through the model's forward pass with the model's prepared kernels
  (:meth:`jaxviz.Model.prepared`: flipped input-gradient and Winograd kernels, computed once per weights and
  passed to the program): its convolutions and max-pools have hand-written backward passes that stay on
  XLA:CPU's fast path inside loops, and no kernel is flipped inside the loop (``loop_reverses``).
  :func:`check_compiled_program` verifies it on the compiled HLO (no scatter; every convolution in forward
  layout, none with a reversed kernel).
- Only the wanted channels of a target convolution are computed (``columns``): it gets just the chunk's
  kernel columns — the channels the objective reads (``columns=False`` computes the whole layer, for
  comparison).
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

import functools
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .. import parallel, preprocessing, runtime
from ..errors import JaxvizError
from ..images import deprocess_image
from ..optvis import objectives, render
from ..optvis.cost import (
    bytes_per_filter,
    default_chunk_size,
    forward_flops,
    measured_bytes_per_filter,
    weight_bytes,
    working_set_bytes_per_filter,
)
from ..optvis.hlo import check_compiled_program
from ..optvis.objectives import gram_similarity

__all__ = ["REGULARISED_DEFAULTS", "bytes_per_filter", "check_compiled_program", "clear_cache", "compiled_program",
           "default_chunk_size", "display_images", "diverse_patterns", "filter_patterns", "forward_flops",
           "gram_similarity", "measured_bytes_per_filter", "pattern_objective", "weight_bytes",
           "working_set_bytes_per_filter"]

PATTERN_METHODS = ("keras", "regularised")
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


# ---------------------------------------------------------------------------------------------------------
# Compiled programs, cached per static signature


def _program(model, plan: objectives.Plan, sig: render.Signature, devices):
    """``(compiled, mesh)`` for ``sig``: lowered and compiled once (:func:`jaxviz.runtime.shared_program`)."""
    return runtime.shared_program(("patterns", sig), lambda: render.make_program(model, plan, sig, devices))


def clear_cache() -> None:
    """Forgets the compiled programs (they are rebuilt, or loaded from the persistent cache, when needed)."""
    runtime.clear_programs()


# ---------------------------------------------------------------------------------------------------------
# Checking arguments


def _check_filters(filters, plan: objectives.Plan, model) -> list[int]:
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
        rows = objectives.layer_table(model, size, layer) if size > 0 else []
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
    if method not in PATTERN_METHODS:
        raise JaxvizError(f"unknown method {method!r}; choose one of: {', '.join(PATTERN_METHODS)}")
    if str(dtype) not in DTYPES:
        raise JaxvizError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    dtype = str(dtype)
    size = _check_size(model, layer, size)
    plan = objectives.plan(model, layer, size)
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
    use_columns = columns and objectives.use_columns(plan, chunk)

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

    sig = render.Signature(model.module, layer, size, chunk, method, dtype, use_columns, init is not None, options,
                           tuple(d.id for d in devices), preprocess=plan.preprocess)
    me = jax.process_index()
    computed_ids = [f for f in done if first_holder.get(f) == me] if jax.process_count() > 1 else []
    computed = [np.stack([done[f] for f in computed_ids])] if computed_ids else []
    if mine:
        compiled, mesh = _program(model, plan, sig, devices)
        rep, batch = parallel.replicated(mesh), parallel.batch_sharding(mesh)
        params = jax.device_put(model.params, rep)
        prepared = jax.device_put(model.prepared(), rep)
        seed_arr = jax.device_put(np.uint32(seed), rep)
        step_arr = jax.device_put(np.float32(step_size), rep)
        steps_arr = jax.device_put(np.int32(steps), rep)
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
                out = np.asarray(compiled(params, prepared, f_arr, seed_arr, x0, step_arr, steps_arr))[: len(ids)]
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
    if method not in PATTERN_METHODS:
        raise JaxvizError(f"unknown method {method!r}; choose one of: {', '.join(PATTERN_METHODS)}")
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
    plan = objectives.plan(model, layer, x.shape[1])
    filters = _check_filters(filters, plan, model)
    if len(filters) != x.shape[0]:
        raise JaxvizError(f"{len(filters)} filters for {x.shape[0]} images")
    columns = objectives.use_columns(plan, len(filters))
    pre_relu = bool(pre_relu) and plan.conv is not None and not plan.pool
    return np.asarray(_objective_jit(model.module, plan, model.params, model.prepared(), jnp.asarray(x),
                                     jnp.asarray(filters, jnp.int32), columns, pre_relu))


@functools.partial(jax.jit, static_argnums=(0, 1, 6, 7))
def _objective_jit(module, plan, params, prepared, x, filters, columns, pre_relu):
    onehot = jax.nn.one_hot(filters, plan.channels, dtype=jnp.float32)
    prep = objectives.prepare(plan, params, prepared, onehot, columns=columns, dtype=x.dtype)
    return objectives.channel_objective(module, plan, prep, x, pre_relu=pre_relu)


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
    plan = objectives.plan(model, layer, size)
    options = _check_options(method, regularised_options)
    devices = parallel.local_devices(devices)
    sig = render.Signature(model.module, layer, size, chunk, method, str(dtype),
                           columns and objectives.use_columns(plan, chunk), has_init, options,
                           tuple(d.id for d in devices), preprocess=plan.preprocess)
    return _program(model, plan, sig, devices)[0]


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
    plan = objectives.plan(model, layer, size)
    (unit,) = _check_filters([unit], plan, model)
    n = runtime.check_positive(n, "n")
    if n < 2:
        raise JaxvizError(f"diversity needs at least 2 images per unit, got {n}")
    options = _check_options("regularised", regularised_options)
    steps = DEFAULT_STEPS["regularised"] if steps is None else int(steps)
    step_size = DEFAULT_STEP_SIZE["regularised"] if step_size is None else float(step_size)
    key = ("patterns_diverse", model.module, layer, size, n, options, plan.preprocess)
    program = runtime.shared_program(key, lambda: jax.jit(functools.partial(
        render.diverse_program, model.module, plan, size=size, n=n, opts=dict(options))))
    return np.asarray(program(model.params, model.prepared(), np.int32(unit), np.uint32(seed), np.float32(step_size),
                              np.int32(steps), np.float32(weight)))
