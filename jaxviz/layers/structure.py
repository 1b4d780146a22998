"""Reshaping and merging layers (Flatten, Reshape, Permute, Add, Concatenate, …)."""

from __future__ import annotations

import functools

import jax.numpy as jnp

from .registry import kind


@kind("Flatten")
def flatten(p, inputs, cfg, ops):
    # NHWC reshape flattens in H·W·C order, exactly as Keras's Flatten on channels-last data.
    x = inputs[0]
    return x.reshape(x.shape[0], -1)


@kind("Reshape")
def reshape(p, inputs, cfg, ops):
    x = inputs[0]
    return x.reshape(x.shape[0], *(int(d) for d in cfg["target_shape"]))


@kind("Permute")
def permute(p, inputs, cfg, ops):
    """Keras's ``Permute(dims)``: ``dims`` numbers the axes after the batch axis from 1."""
    return inputs[0].transpose(0, *(int(d) for d in cfg["dims"]))


@kind("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
      "AlphaDropout", "ActivityRegularization", "Identity", "StochasticDepth")
def identity(p, inputs, cfg, ops):
    """Layers that are the identity at inference."""
    return inputs[0]


@kind("InputLayer")
def input_layer(p, inputs, cfg, ops):
    """The model's input (:func:`jaxviz.graph.forward` feeds it ``x``)."""
    return inputs[0]


# Merging


@kind("Add")
def add(p, inputs, cfg, ops):
    out = inputs[0]
    for v in inputs[1:]:
        out = out + v
    return out


@kind("Subtract")
def subtract(p, inputs, cfg, ops):
    return inputs[0] - inputs[1]


@kind("Multiply")
def multiply(p, inputs, cfg, ops):
    out = inputs[0]
    for v in inputs[1:]:
        out = out * v
    return out


@kind("Average")
def average(p, inputs, cfg, ops):
    return add(p, inputs, cfg, ops) / jnp.asarray(len(inputs), inputs[0].dtype)


@kind("Maximum")
def maximum(p, inputs, cfg, ops):
    return functools.reduce(jnp.maximum, inputs)


@kind("Minimum")
def minimum(p, inputs, cfg, ops):
    return functools.reduce(jnp.minimum, inputs)


@kind("Concatenate")
def concatenate(p, inputs, cfg, ops):
    return jnp.concatenate(inputs, axis=int(cfg.get("axis", -1)))
