"""Test-wide setup: Keras (the parity reference) runs on its JAX backend; this project has no TensorFlow."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before any test module imports keras
