"""The methods' shared runtime: targets, class scores, channel reduction, batching and chunking, and the ONE
program cache and trace counter that attribution methods, Grad-CAM, DeepVis and filter patterns use.

Every method in :mod:`jaxviz.attribution` has the signature

    method(model, x, target=None, **options) -> [N, H, W]        (``reduce=None``: [N, H, W, 3])

- ``model``: a :class:`jaxviz.Model` with its classifier (anything with ``apply``, ``params``,
  ``check_input`` and ``arch.num_classes`` works: the tests use tiny hand-set models).
- ``x``: ``[N, H, W, 3]`` preprocessed images (:func:`jaxviz.images.preprocess_input`).
- ``target``: ``None`` = each image's top class (from the same forward pass where possible), an ``int``
  for all images, or a sequence with one class per image.
- ``score``: what is explained. ``"logit"`` (default for the gradient methods) is the pre-softmax class
  score — what Captum differentiates when the model returns logits; ``"prob"`` the softmax probability;
  ``"log_prob"`` its logarithm.
- ``reduce``: how the channel axis is folded into one map: ``"sum"``, ``"mean"``, ``"max"``,
  ``"abs_max"``, ``"abs_sum"``, ``"norm"`` (L2) or ``None`` to keep the ``[N, H, W, 3]`` attributions.
  Methods whose attributions have no channel axis (the CAM family, occlusion, LIME) ignore the reduction
  and return their map repeated over the 3 channels for ``reduce=None``, so the shapes stay uniform.
- ``params``: weights to use instead of ``model.params`` (same tree): the model-randomisation sanity check
  re-uses the compiled programs with other weights this way.

Defaults and cost per image (fwd = forward pass, bwd = input-gradient pass):

    method                score     reduce    cost
    saliency              logit     max|·|    1 fwd + 1 bwd
    smoothgrad            logit     max|·|    1 fwd + n (fwd + bwd)
    integrated_gradients  logit     sum       2 fwd + steps (fwd + bwd)
    deconvnet             logit     abs_max   1 fwd + 1 bwd
    guided_backprop       logit     abs_max   1 fwd + 1 bwd
    gradcam               logit     —         1 fwd + 1 bwd   (jaxviz.gradcam, the book's: prob)
    guided_gradcam        logit     abs_max   2 (fwd + bwd)
    gradcam_plus_plus     logit     —         1 fwd + 1 bwd
    score_cam             prob      —         1 fwd + K fwd (K = the layer's channels)
    occlusion             logit     —         1 fwd + one (partial, see occlusion.py) fwd per window
    lime                  prob      —         1 fwd + n_samples fwd

Each method is one jitted program per (model, options, input shape); ``model.params`` is a traced
argument, and ``reduce`` is applied by a small shared program afterwards, so it does not multiply the
compiled programs. Programs are cached per model (held weakly, so dropping a model frees them).
"""

from __future__ import annotations

import collections
import functools
import itertools
import operator
import weakref
from collections.abc import Callable, Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .errors import JaxvizError

SCORES = ("logit", "prob", "log_prob")
REDUCTIONS = ("sum", "mean", "max", "abs_max", "abs_sum", "norm")

#: How many times each program was traced, by name ("saliency", "gradcam_book", "deepvis",
#: "patterns_keras", …): tests assert that a second call does not retrace.
trace_counts: collections.Counter = collections.Counter()

# {model: {key: jitted function}}; models are held weakly.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# {signature: program} for programs keyed by what shapes them rather than by a model object (the filter-pattern
# programs: graph, ops, layer, size, chunk, devices …), so every model of the same graph reuses them.
_SHARED: dict = {}


# ---------------------------------------------------------------------------------------------------------
# Compile notices and chunk progress


class _Compiles:
    """What JAX's monitoring events say about XLA compiles (registered once, by the first :class:`CompileNotice`).

    JAX records ``/jax/core/compile/backend_compile_duration`` as a scalar when a backend compile (or a load
    from the persistent cache) starts and as a duration when it ends; a persistent-cache hit records
    ``/jax/compilation_cache/cache_hits`` in between.
    """

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.count = 0  # programs compiled (not loaded from the persistent cache) in this process
        self.serial = 0  # compiles started
        self.running = 0  # the serial number of the compile in progress, 0 when none
        self.hit = False
        self.open: list[CompileNotice] = []  # the notices whose blocks are running, outermost first
        self.timer = None
        import jax.monitoring as monitoring

        monitoring.register_scalar_listener(self._started)
        monitoring.register_event_listener(self._event)
        monitoring.register_event_duration_secs_listener(self._ended)

    def _started(self, event, value, **kwargs):
        if event != self.EVENT:
            return
        import threading

        with self.lock:
            self.serial += 1
            self.running = token = self.serial
            self.hit = False
            notice = self.open[0] if self.open else None
        if notice is None:
            return
        if notice.after_s <= 0:
            notice.say()
        else:
            self.timer = threading.Timer(notice.after_s, lambda: self._still_running(token, notice))
            self.timer.daemon = True
            self.timer.start()

    def _still_running(self, token, notice):
        with self.lock:
            running = self.running == token and notice in self.open
        if running:
            notice.say()

    def _event(self, event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            self.hit = True

    def _ended(self, event, duration, **kwargs):
        if event != self.EVENT:
            return
        with self.lock:
            if not self.hit:
                self.count += 1
            self.running = 0
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None


_compiles: _Compiles | None = None


def compile_count() -> int:
    """How many XLA programs this process compiled since compile notices were first used (persistent-cache
    loads not counted)."""
    return _watch_compiles().count


def _watch_compiles() -> _Compiles:
    global _compiles
    if _compiles is None:
        _compiles = _Compiles()
    return _compiles


class CompileNotice:
    """A context manager for model calls (the CLI's, and :class:`jaxviz.Model`'s own): while its block runs, an
    XLA compile that lasts longer than ``after_s`` prints one line on stderr saying so (JAX's compile events
    tell it, not a guess from the call's duration). A call that compiles nothing (same shapes again, or the
    program loaded from the persistent cache) prints nothing; an inner notice stays quiet, the outermost speaks,
    at most once per block."""

    #: seconds an XLA compile runs before the notice appears (0: at once)
    after_s = 2.0

    def __init__(self, model, what: str | None = None, message: str | None = None):
        name = getattr(getattr(model, "arch", None), "name", "the model")
        self.message = message or f"jaxviz: compiling {what or name}"
        self.said = False

    def say(self):
        import sys

        if not self.said:
            self.said = True
            print(f"{self.message}{_cache_note()}…", file=sys.stderr, flush=True)

    def __enter__(self):
        watch = _watch_compiles()
        with watch.lock:
            watch.open.append(self)
        self.said = False
        return self

    def __exit__(self, *exc):
        watch = _watch_compiles()
        with watch.lock:
            watch.open.remove(self)
        return False


def _cache_note() -> str:
    """What happens to the compiled program: kept in the persistent cache for later runs, or for this run."""
    folder = jax.config.jax_compilation_cache_dir
    if folder:
        return f" (once per input shape; kept in {folder} for later runs with the same shape)"
    return " (once per input shape; kept for this run)"


#: Called as ``hook(done, total)`` after each chunk of a chunked loop (:func:`chunked_map`, :func:`chunked_sum`)
#: while a :func:`chunk_progress` block runs: the slow methods (Score-CAM, occlusion, RISE, LIME) report
#: their progress through it.
_chunk_hooks: list[Callable[[int, int], None]] = []


class chunk_progress:
    """``with chunk_progress(hook):`` calls ``hook(done, total)`` as each chunk of a method's chunked loop
    finishes (from XLA's thread; ``done`` counts from 1, and XLA may report two chunks out of order). The loops
    always report (one host callback per chunk), so the compiled programs are the same with and without a hook,
    and the persistent cache keeps them."""

    def __init__(self, hook: Callable[[int, int], None]):
        self.hook = hook

    def __enter__(self):
        _chunk_hooks.append(self.hook)
        return self

    def __exit__(self, *exc):
        _chunk_hooks.remove(self.hook)
        return False


def _report_chunk(i, count, _value=None):
    done, total = int(i) + 1, int(count)
    for hook in list(_chunk_hooks):
        hook(done, total)


def _chunk_done(i, count: int, out):
    """A host callback saying chunk ``i`` (traced) of ``count`` is done: it takes one value of the chunk's result
    ``out``, so XLA runs it after the chunk."""
    leaf = jax.tree_util.tree_leaves(out)[0]
    jax.debug.callback(_report_chunk, i, count, leaf.reshape(-1)[0], ordered=False)


def shared_program(key: Hashable, make: Callable[[], object]):
    """The program for ``key``, made by ``make()`` the first time (see :data:`_SHARED`)."""
    if key not in _SHARED:
        _SHARED[key] = make()
    return _SHARED[key]


def clear_programs() -> None:
    """Forgets every cached program (they are rebuilt, or loaded from the persistent cache, when needed)."""
    _SHARED.clear()
    _CACHE.clear()


# ---------------------------------------------------------------------------------------------------------
# Argument checks


def check_model(model, name: str) -> None:
    if not getattr(model, "include_top", True):
        raise JaxvizError(f"{name} explains a class score and needs the classifier: load the model with "
                          "include_top=True")


def check_input(model, x) -> jax.Array:
    check = getattr(model, "check_input", None)
    if check is not None:
        return check(x)
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 4:
        raise JaxvizError(f"expected a batch of images [N, H, W, C], got shape {x.shape}")
    return x


def num_classes(model) -> int:
    return int(model.arch.num_classes)


def check_targets(model, target, n: int) -> jax.Array:
    """``target`` → int32 ``[N]``; ``-1`` marks "this image's top class" (resolved inside the program)."""
    if target is None:
        return jnp.full((n,), -1, jnp.int32)
    k = num_classes(model)
    try:
        if np.ndim(target) == 0:
            t = np.full((n,), operator.index(target), np.int64)
        else:
            t = np.asarray([operator.index(v) for v in np.asarray(target).reshape(-1)], np.int64)
    except TypeError:
        raise JaxvizError(f"target must be a class index or one per image, got {target!r}") from None
    if t.shape != (n,):
        raise JaxvizError(f"got {t.shape[0]} targets for {n} images; give one class, or one per image")
    bad = [int(v) for v in t if not 0 <= v < k]
    if bad:
        raise JaxvizError(f"class {bad[0]} out of range: the model has {k} classes (0..{k - 1})")
    return jnp.asarray(t, jnp.int32)


def check_sampled_args(model, method: str, x, target, score: str, reduce: str | None, count: int,
                       count_name: str, batch_size: int | None, gradient: bool):
    """The checks the sampling methods (IG, SmoothGrad, LIME) start with.

    Returns ``(x, targets, reduce, count, batch_size)``, the batch size resolved by :func:`batch_size_for`
    for ``count`` model inputs per image.
    """
    check_model(model, method)
    check_score(model, score)
    reduce = check_reduce(reduce)
    count = check_positive(count, count_name)
    x = check_input(model, x)
    batch_size = batch_size_for(model, x, batch_size, count * x.shape[0], gradient=gradient)
    return x, check_targets(model, target, x.shape[0]), reduce, count, batch_size


def check_choice(value, choices: Sequence, what: str):
    if value not in choices:
        raise JaxvizError(f"unknown {what} {value!r}; use one of: {', '.join(map(str, choices))}")
    return value


def check_reduce(reduce: str | None) -> str | None:
    if reduce is None:
        return None
    return check_choice(reduce, REDUCTIONS, "reduce")


def check_positive(value, what: str) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise JaxvizError(f"{what} must be a positive integer, got {value!r}") from None
    if v < 1:
        raise JaxvizError(f"{what} must be a positive integer, got {value!r}")
    return v


def params_of(model, params):
    return model.params if params is None else params


# ---------------------------------------------------------------------------------------------------------
# Scores and gradients (all traced)


def check_score(model, score: str) -> str:
    """Validates ``score`` (one of :data:`SCORES`) and returns it as computed for ``model``'s head: with
    ``"sigmoid_"`` in front for a model whose output is a sigmoid (a binary classifier's single unit gives
    the logits ``[-z, z]``, see :mod:`jaxviz.graph`), whose probabilities are the logits' sigmoids."""
    if score.startswith("sigmoid_") and score[len("sigmoid_"):] in SCORES:
        return score
    check_choice(score, SCORES, "score")
    graph = getattr(model, "graph", None)
    return f"sigmoid_{score}" if graph is not None and graph.head_activation == "sigmoid" else score


def probabilities(logits: jax.Array, score: str) -> jax.Array:
    """The model's class probabilities from its logits: their softmax, or for a sigmoid head (a ``score``
    from :func:`check_score` starting with ``"sigmoid_"``) their sigmoids."""
    return jax.nn.sigmoid(logits) if score.startswith("sigmoid_") else jax.nn.softmax(logits, axis=-1)


def class_score(logits: jax.Array, targets: jax.Array, score: str) -> jax.Array:
    """``[N]`` score of each image's target class from ``[N, K]`` logits (``score`` as :func:`check_score`
    gives it: the logit, the probability or its logarithm, of a softmax or a sigmoid head).

    The class is picked with a one-hot contraction rather than indexing: its gradient is a multiply, not a
    serial scatter (see docs/PERFORMANCE.md).
    """
    kind = score.removeprefix("sigmoid_")
    if kind == "prob":
        values = probabilities(logits, score)
    elif kind == "log_prob":
        values = jax.nn.log_sigmoid(logits) if score.startswith("sigmoid_") else jax.nn.log_softmax(logits, axis=-1)
    else:
        values = logits
    onehot = jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
    return (values * onehot).sum(-1)


def resolve(targets: jax.Array, logits: jax.Array) -> jax.Array:
    """Replaces the ``-1`` entries of ``targets`` by the arg-max of ``logits`` (the top class)."""
    return jnp.where(targets < 0, jnp.argmax(logits, axis=-1).astype(jnp.int32), targets)


def resolve_on_clean_images(model, x, targets: jax.Array, params=None) -> jax.Array:
    """``targets`` with their ``-1`` entries (the image's top class) resolved by a forward pass of the clean
    images ``x`` of their own, made only if needed: for methods whose programs only see perturbed copies
    (noise, masks, baselines) and must still explain each image's own top class."""
    if bool(jnp.any(targets < 0)):
        targets = resolve(targets, logits(model, x, params))
    return targets


def logits_fn(fwd: Callable, params, relu: Callable = jax.nn.relu) -> Callable:
    return lambda v: fwd(params, v, upto="logits", relu=relu)[0]


def input_gradient(fwd: Callable, params, x: jax.Array, targets: jax.Array, score: str,
                   relu: Callable = jax.nn.relu):
    """One forward and one backward pass: ``(∂score/∂x [N, H, W, C], score [N], resolved targets [N])``.

    ``-1`` targets become the top class of this very forward pass. Images are independent (VGG has no
    batch statistics), so the gradient of the summed score is each image's own gradient.
    """
    logits, vjp = jax.vjp(logits_fn(fwd, params, relu), x)
    t = resolve(targets, logits)
    s, dlogits = jax.value_and_grad(lambda z: class_score(z, t, score).sum())(logits)
    (g,) = vjp(dlogits)
    return g, class_score(logits, t, score), t


def gradient_method(model, name: str, x, target, score: str, reduce: str | None, params, *,
                    relu: Callable = jax.nn.relu, post: Callable | None = None, key: tuple = ()) -> jax.Array:
    """The driver of the methods that are one input gradient: checks, ``post(x, ∂S_t/∂x)`` (default: the
    gradient itself) with ``relu`` in place of the network's ReLUs, then the channel reduction.

    One program per (model, ``name``, score, ``key``); ``key`` holds whatever ``post`` depends on.
    """
    check_model(model, name)
    score = check_score(model, score)
    reduce = check_reduce(reduce)
    x = check_input(model, x)
    targets = check_targets(model, target, x.shape[0])

    def build(fwd):
        def run(params, x, targets):
            g, _, _ = input_gradient(fwd, params, x, targets, score, relu=relu)
            return g if post is None else post(x, g)

        return run

    fn = compiled(model, name, (score, *key), build)
    return finish(fn(params_of(model, params), x, targets), reduce)


def scores_of(fwd: Callable, params, x: jax.Array, targets: jax.Array, score: str) -> jax.Array:
    """``[N]`` scores of already-resolved targets (forward only)."""
    return class_score(fwd(params, x, upto="logits")[0], targets, score)


def injecting_relu(index: int, value: jax.Array):
    """A ReLU that returns ``value`` on its ``index``-th call (a layer's output), ignoring its input.

    Runs the layers after that one from given activations: with a dummy input, XLA removes the unused layers
    before it. Relies on the forward pass calling ``relu`` once per conv and hidden dense layer, in order.
    """
    calls = itertools.count()

    def act(z):
        if next(calls) == index:
            if z.shape != value.shape:  # the call-order contract broke: fail loudly
                raise RuntimeError(f"injected activation {index} has shape {z.shape}, expected {value.shape}")
            return value
        return jax.nn.relu(z)

    return act


def relu_calls(fwd: Callable, params, x: jax.Array, upto: str) -> int:
    """How many times the forward pass calls its ReLU up to and including layer ``upto`` (shapes only)."""
    calls = itertools.count()

    def counting(z):
        next(calls)
        return jax.nn.relu(z)

    jax.eval_shape(lambda p, v: fwd(p, v, upto=upto, relu=counting)[0], params, x)
    return next(calls)


def reduce_channels(a: jax.Array, reduce: str | None) -> jax.Array:
    """``[N, H, W, C]`` → ``[N, H, W]`` (or unchanged for ``None``)."""
    if reduce is None:
        return a
    if reduce == "sum":
        return a.sum(-1)
    if reduce == "mean":
        return a.mean(-1)
    if reduce == "max":
        return a.max(-1)
    if reduce == "abs_max":
        return jnp.abs(a).max(-1)
    if reduce == "abs_sum":
        return jnp.abs(a).sum(-1)
    if reduce == "norm":
        return jnp.sqrt((a * a).sum(-1))
    raise ValueError(reduce)


@functools.partial(jax.jit, static_argnames=("reduce",))
def _reduce(a, reduce):
    return reduce_channels(a, reduce)


def finish(a: jax.Array, reduce: str | None) -> jax.Array:
    """Applies the channel reduction to a method's ``[N, H, W, C]`` result.

    A separate small program (shared by all methods), so a method's compiled program does not depend on
    ``reduce``.
    """
    return a if reduce is None else _reduce(a, reduce)


@functools.partial(jax.jit, static_argnames=("channels",))
def _repeat(m, channels):
    return jnp.repeat(m[..., None], channels, axis=-1)


def finish_spatial(m: jax.Array, reduce: str | None, channels: int = 3) -> jax.Array:
    """A channel-free ``[N, H, W]`` map, repeated over ``channels`` when ``reduce`` is ``None``."""
    return _repeat(m, channels) if reduce is None else m


def resize_maps(maps: jax.Array, size: tuple[int, int], method: str = "bilinear") -> jax.Array:
    """``[N, h, w]`` → ``[N, H, W]``.

    "bilinear" uses half-pixel centres with edge clamping and "nearest" picks ``floor(i·h/H)`` for integer
    up-scaling factors: both equal ``torch.nn.functional.interpolate`` (``align_corners=False``) then.
    """
    n = maps.shape[0]
    if maps.shape[1:] == tuple(size):
        return maps
    return jax.image.resize(maps, (n, *size), method=method)


# ---------------------------------------------------------------------------------------------------------
# Batching


def _plan(n: int, chunk: int) -> tuple[int, int]:
    """``(chunks, size)``: chunks of ``size`` items, ``chunk/2 < size ≤ chunk``, padding the fewest items.

    Padding items are evaluated and thrown away, so e.g. 50 IG steps with ``chunk=8`` run as 10 chunks of
    5 (50 evaluations) rather than 7 of 8 (56: 12 % wasted); on a CPU, 5 or 8 inputs per chunk run at the
    same speed per input (docs/PERFORMANCE.md). Ties go to the larger size.
    """
    chunk = max(1, min(chunk, n))
    best = min(range(chunk // 2 + 1, chunk + 1), key=lambda s: (-(-n // s) * s, -s))
    return -(-n // best), best


def _chunks(xs, n: int, count: int, size: int):
    """``xs`` (leading axis ``n``) padded with copies of its last item to ``count·size``, as ``[count, size, …]``."""

    def split(a):
        if count * size > n:
            a = jnp.concatenate([a, jnp.repeat(a[-1:], count * size - n, axis=0)])
        return a.reshape(count, size, *a.shape[1:])

    return jax.tree_util.tree_map(split, xs)


def chunked_sum(fn: Callable, xs, chunk: int):
    """``Σ_i fn(xs)[i]`` over the leading axis, evaluated at most ``chunk`` items at a time.

    ``fn`` maps a chunk (pytree, leading axis ``size``) to per-item results (pytree, leading axis
    ``size``). Chunks are balanced and the last one padded (padding items are masked out of the sum), so
    the program contains ONE copy of ``fn``: a ``lax.scan`` over chunks, or a plain call for one chunk.
    """
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    count, size = _plan(n, chunk)
    parts = _chunks(xs, n, count, size)
    valid = (jnp.arange(count * size) < n).reshape(count, size)

    def masked_sum(part, ok):
        out = fn(part)
        return jax.tree_util.tree_map(lambda a: jnp.where(ok.reshape(-1, *[1] * (a.ndim - 1)), a, 0).sum(0), out)

    if count == 1:
        return masked_sum(jax.tree_util.tree_map(lambda a: a[0], parts), valid[0])
    first = jax.tree_util.tree_map(lambda a: a[0], parts)
    init = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(masked_sum, first, valid[0]))

    def step(acc, c):
        part, ok, i = c
        acc = jax.tree_util.tree_map(jnp.add, acc, masked_sum(part, ok))
        _chunk_done(i, count, acc)
        return acc, None

    total, _ = lax.scan(step, init, (parts, valid, jnp.arange(count)))
    return total


def chunked_map(fn: Callable, xs, chunk: int):
    """``fn`` over the leading axis at most ``chunk`` items at a time; results concatenated (ONE copy of ``fn``)."""
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    count, size = _plan(n, chunk)
    parts = _chunks(xs, n, count, size)
    if count == 1:
        out = fn(jax.tree_util.tree_map(lambda a: a[0], parts))
        return jax.tree_util.tree_map(lambda a: a[:n], out)

    def step(c):
        part, i = c
        out = fn(part)
        _chunk_done(i, count, out)
        return out

    out = lax.map(step, (parts, jnp.arange(count)))
    return jax.tree_util.tree_map(lambda a: a.reshape(count * size, *a.shape[2:])[:n], out)


def per_chunk(batch_size: int, n_images: int) -> int:
    """How many samples (steps, masks, windows…) per chunk so a chunk is ≈ ``batch_size`` model inputs."""
    return max(1, int(batch_size) // max(1, n_images))


#: Default model inputs per chunk on a CPU (gradient programs, forward-only programs). At 224×224 on a
#: 2-core CPU one image already fills both cores; 8–16 measured marginally faster than 1 for VGG16 and
#: keeps a gradient chunk near 1 GB.
CPU_BATCH = {True: 8, False: 16}


def batch_size_for(model, x, batch_size: int | None, n_items: int, gradient: bool) -> int:
    """``batch_size`` checked, or a default for the device when it is ``None``.

    On an accelerator the default is as many inputs as half its free memory holds by
    :func:`jaxviz.parallel.choose_chunk_size`, from the activations a VGG keeps per input (the layer
    table's output sizes; ×3 for a gradient program) — one small image leaves a GPU idle.
    """
    if batch_size is not None:
        return check_positive(batch_size, "batch_size")
    device = jax.local_devices()[0]
    if device.platform == "cpu":
        return CPU_BATCH[bool(gradient)]
    from .parallel import choose_chunk_size

    per_item = activation_bytes(model, x.shape[1:3]) * (3 if gradient else 1)
    return choose_chunk_size(per_item, n_items, devices=[device])


def activation_bytes(model, size: tuple[int, int]) -> float:
    """float32 bytes of all layer outputs of one ``size`` input (a guess for models without a layer table)."""
    table = getattr(model, "layer_table", None)
    if table is None:
        return 4.0 * size[0] * size[1] * 64 * 8
    rows = table((*size, getattr(model.arch, "channels", 3)))
    return 4.0 * sum(float(np.prod(r.output_shape)) for r in rows)


# ---------------------------------------------------------------------------------------------------------
# Compiled-program cache


class _Forward:
    """``model.apply`` through a weak reference, so cached programs do not keep a model alive.

    With ``flipped`` (the model's prepared kernels, :meth:`jaxviz.Model.prepared` of the same params), the
    forward pass uses them: the backward convs then use precomputed flipped kernels instead of flipping and
    transposing every kernel inside each program (measured: ~9 % of a VGG16 saliency call at batch 1, the
    transposes run nearly serially on XLA:CPU), and the fast ops their Winograd, transposed and folded kernels.
    """

    __slots__ = ("_ref", "_flipped")

    def __init__(self, model, flipped=None):
        self._ref = weakref.ref(model)
        self._flipped = flipped

    def __call__(self, params, x, upto=None, taps=(), relu=jax.nn.relu, perturb=None):
        model = self._ref()
        if model is None:  # pragma: no cover - only if a program outlives its model
            raise RuntimeError("the model of this compiled attribution program was deleted")
        if self._flipped is None:  # models without the collection (the hand-set test models)
            return model.apply(params, x, upto=upto, taps=taps, relu=relu, perturb=perturb)
        return model.apply(params, x, upto=upto, taps=taps, relu=relu, perturb=perturb, flipped=self._flipped)


def _has_flipped_collection(model) -> bool:
    return callable(getattr(model, "prepared", None))


def flipped_kernels(model, params):
    """The kernels ``model``'s ops derive from ``params`` (:meth:`jaxviz.Model.prepared`, cached per params)."""
    return model.prepared(params)


def compiled(model, name: str, key: Hashable, build: Callable[[Callable], Callable]) -> Callable:
    """The jitted program ``build(fwd)`` for ``(model, name, key)``, built once and cached.

    ``fwd(params, x, upto=None, taps=(), relu=relu, perturb=None)`` is ``model.apply``. The returned function
    ``fn(params, *args)`` counts its traces in :data:`trace_counts` under ``name``. On jaxviz VGG models it
    gets the precomputed input-gradient and Winograd kernels (:func:`flipped_kernels`, cached per params)
    as an argument.
    """
    per_model = _CACHE.setdefault(model, {})
    full_key = (name, key)
    if full_key not in per_model:
        ref = weakref.ref(model)  # the cache's values must not hold its key: the model (and its params) would live on

        def counted(params, flipped, *args):
            trace_counts[name] += 1
            return build(_Forward(ref(), flipped))(params, *args)

        per_model[full_key] = jax.jit(counted)
    program = per_model[full_key]
    # Every program on a jaxviz VGG gets the "flipped" collection: gradient programs use its input-gradient
    # kernels, and on CPUs all programs its Winograd kernels (XLA drops whatever a program does not use).
    if not _has_flipped_collection(model):
        return lambda params, *args: program(params, None, *args)
    return lambda params, *args: program(params, flipped_kernels(model, params), *args)


def logits_program(model) -> Callable:
    """``fn(params, x) -> [N, num_classes]`` pre-softmax scores: the one compiled forward pass that
    :func:`logits`, :meth:`jaxviz.Model.predict` and the methods' score evaluations share."""
    return compiled(model, "logits", (), lambda fwd: lambda params, x: fwd(params, x, upto="logits")[0])


def logits(model, x, params=None) -> jax.Array:
    """``[N, num_classes]`` pre-softmax scores (one compiled forward pass per model and shape)."""
    return logits_program(model)(params_of(model, params), check_input(model, x))


def fold_keys(seed: int | jax.Array, n_images: int, n_samples: int) -> jax.Array:
    """Per-(image, sample) PRNG keys ``[N, n]``: independent of batch and chunk sizes, so reproducible."""
    key = seed if isinstance(seed, jax.Array) else jax.random.key(int(seed))
    img = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_images))
    return jax.vmap(lambda k: jax.vmap(lambda j: jax.random.fold_in(k, j))(jnp.arange(n_samples)))(img)
