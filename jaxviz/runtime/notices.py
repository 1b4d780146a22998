"""Compile notices and chunk progress: what JAX's compile events and the methods' chunked loops tell the user."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import jax
import jax.monitoring as monitoring


class _Compiles:
    """What JAX's monitoring events say about XLA compiles (registered once, by the first :class:`CompileNotice`).

    JAX records ``/jax/core/compile/backend_compile_duration`` as a scalar when a backend compile (or a load
    from the persistent cache) starts and as a duration when it ends; a persistent-cache hit records
    ``/jax/compilation_cache/cache_hits`` in between.
    """

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0  # programs compiled (not loaded from the persistent cache) in this process
        self.serial = 0  # compiles started
        self.running = 0  # the serial number of the compile in progress, 0 when none
        self.hit = False
        self.open: list[CompileNotice] = []  # the notices whose blocks are running, outermost first
        self.timer = None
        monitoring.register_scalar_listener(self._started)
        monitoring.register_event_listener(self._event)
        monitoring.register_event_duration_secs_listener(self._ended)

    def _started(self, event, value, **kwargs):
        if event != self.EVENT:
            return
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
        self.message = message or f"jaxviz: compiling {what or model.name}"
        self.said = False

    def say(self):
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


def chunk_done(i, count: int, out):
    """A host callback saying chunk ``i`` (traced) of ``count`` is done: it takes one value of the chunk's result
    ``out``, so XLA runs it after the chunk."""
    leaf = jax.tree_util.tree_leaves(out)[0]
    jax.debug.callback(_report_chunk, i, count, leaf.reshape(-1)[0], ordered=False)
