"""Test-wide setup: Keras (the parity reference) runs on its JAX backend; this project has no TensorFlow.

The suite runs with jaxviz's XLA:CPU setting applied before JAX starts (as the CLI and the first
``jaxviz.load`` do), so every test and every worker process it starts computes with the same convolutions.

Nothing the suite runs writes into the user's home: jaxviz's folder (weights, compilation cache), Keras's and
the other per-user caches point into one temporary folder for the session, which the environment passes on
to every worker and subprocess, and which is removed at the end.

Fixtures shared by the test modules are defined here (each built once per module that uses it); helpers that
tests import live beside it: ``attribution_models.py`` (hand-set models), ``keras_helpers.py`` and
``keras_files.py`` (Keras-built models and files), ``onnx_models.py`` (PyTorch-exported files) and
``module_files.py`` (a script of ``scripts/`` loaded as a module).
"""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")  # before any test module imports keras
# The CLI's persistent compilation cache is process-wide: in-process CLI tests leave it off (tests that need it
# run a real process).
os.environ.setdefault("JAXVIZ_COMPILE_CACHE", "0")

if "JAXVIZ_TEST_HOME" not in os.environ:  # the first process of the session (xdist workers inherit it)
    _home = tempfile.mkdtemp(prefix="jaxviz-tests-")
    os.environ["JAXVIZ_TEST_HOME"] = _home
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
_home = os.environ["JAXVIZ_TEST_HOME"]
for _var, _sub in (("JAXVIZ_HOME", "jaxviz"), ("KERAS_HOME", "keras"), ("XDG_CACHE_HOME", "cache"),
                   ("MPLCONFIGDIR", "matplotlib")):
    os.environ[_var] = os.path.join(_home, _sub)

# LLVM's backend optimisation level 0 for every program the suite compiles (xdist workers and subprocesses
# inherit it): a fifth less time for a suite of hundreds of small programs, each compiled to run a few times.
# XLA's HLO passes, the thunks (Eigen/oneDNN convolutions and dots) and IEEE float semantics are the same at
# every level. JAXVIZ_TEST_XLA_OPT=default keeps XLA's default level.
if os.environ.get("JAXVIZ_TEST_XLA_OPT", "0") != "default" and "xla_backend_optimization_level" not in \
        os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

from jaxviz import xla_cpu  # noqa: E402

xla_cpu.configure()

import jaxviz  # noqa: E402
from jaxviz import runtime  # noqa: E402

# A compile of a few seconds on a busy machine would add the "compiling…" line to stderr that tests compare
# line by line; the tests of the notice set their own threshold.
runtime.CompileNotice.after_s = 600.0


@pytest.fixture(scope="module")
def tiny():
    """``vgg_tiny`` (32 px, 10 classes) with its classifier and seeded random weights."""
    return jaxviz.load("vgg_tiny", "random:0")


@pytest.fixture(scope="module")
def tiny_no_top():
    """``vgg_tiny``'s convolutional base (``include_top=False``) with the same seeded random weights."""
    return jaxviz.load("vgg_tiny", "random:0", include_top=False)
