"""Test-wide setup: Keras (the parity reference) runs on its JAX backend; this project has no TensorFlow.

The suite runs with jaxviz's XLA:CPU setting applied before JAX starts (as the CLI and the first
``jaxviz.load`` do), so every test and every worker process it starts computes with the same convolutions.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before any test module imports keras
# The CLI's persistent compilation cache is process-wide: in-process CLI tests leave it off (tests that need it
# run a real process).
os.environ.setdefault("JAXVIZ_COMPILE_CACHE", "0")

from jaxviz import xla_cpu  # noqa: E402

xla_cpu.configure()
