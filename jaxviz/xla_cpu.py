"""XLA:CPU settings jaxviz applies before JAX starts its CPU backend.

jaxlib 0.10 hands convolutions (and dots) to YNNPACK by default (``ynn_fusion`` custom fusions). XLA's own
Eigen convolutions are the faster path for VGG's 3×3 convolutions on CPUs (docs/PERFORMANCE.md;
``scripts/bench_patterns.py`` and ``scripts/compare_captum.py`` report both settings side by side), so jaxviz
turns the YNNPACK fusions off at ONE point: :func:`configure`, which the ``jaxviz`` command runs first and
:func:`jaxviz.load` runs before it creates the model's arrays (importing jaxviz changes nothing). It does
nothing if the user already chose (``--xla_cpu_experimental_ynn_fusion_type`` in ``XLA_FLAGS``), set
``JAXVIZ_KEEP_XLA_FLAGS=1``, or JAX's backend was already running when jaxviz was imported (XLA reads its
flags once per process). The flag only concerns the CPU backend: GPU and TPU runs are unchanged, and results
differ from the YNNPACK path only by float32 rounding.
"""

from __future__ import annotations

import os

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
KEEP_ENV = "JAXVIZ_KEEP_XLA_FLAGS"
#: Whether :func:`configure` changed ``XLA_FLAGS`` in this process.
added = False


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge  # private, may move: imported where its absence is handled
    except ImportError:  # pragma: no cover - jax is a dependency
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started and started())


def configure() -> bool:
    """Adds :data:`YNN_FLAG` to ``XLA_FLAGS`` when that is still possible and wanted; True if it did."""
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get(KEEP_ENV, "") not in ("", "0") or "xla_cpu_experimental_ynn_fusion_type" in flags:
        return False
    if _backend_started():
        return False
    global added
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}".strip()
    added = True
    return True


def users_environment() -> dict[str, str]:
    """This process's environment as the user set it: for child processes that should run JAX's defaults."""
    env = dict(os.environ)
    if added:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if f != YNN_FLAG]
        env["XLA_FLAGS"] = " ".join(flags)
        env[KEEP_ENV] = "1"
    return env


def ynn_disabled() -> bool:
    """Whether this process runs with the YNNPACK fusions off (for benchmark reports)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    return any(f == YNN_FLAG for f in flags)
