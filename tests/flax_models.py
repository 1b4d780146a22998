"""Flax networks written the way Flax users write them, tiny, for tests/test_flax.py.

- :class:`MnistCNN`: the CNN of Flax's MNIST example (linen), narrower.
- :class:`ResNet18`: a linen ResNet-18 with BatchNorm (``batch_stats``, a ``train`` flag), few channels.
- :class:`NnxCNN`: an NNX CNN with ``nnx.BatchNorm``, ``nnx.Dropout`` and functional ReLUs.
- :func:`sequential_cnn`: a linen ``nn.Sequential`` of modules and functions.
- :class:`StagedCNN` (linen) and :class:`NnxStagedCNN` (NNX): convs inside named stages, so that layer names
  are ``/``-paths (``stem/conv``, ``blocks/0/conv``); the linen one's stage names need HTML escaping.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx


class MnistCNN(nn.Module):
    """Flax's examples/mnist CNN (32/64 channels there; 4/8 here); ``act`` lets a test run it with its own ReLU."""

    act: Callable = nn.relu

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(features=4, kernel_size=(3, 3))(x)
        x = self.act(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = nn.Conv(features=8, kernel_size=(3, 3))(x)
        x = self.act(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(features=16)(x)
        x = self.act(x)
        x = nn.Dense(features=10)(x)
        return x


class ResNetBlock(nn.Module):
    filters: int
    strides: tuple = (1, 1)

    @nn.compact
    def __call__(self, x, train: bool = True):
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
        residual = x
        y = nn.Conv(self.filters, (3, 3), self.strides, use_bias=False, name="conv1")(x)
        y = norm(name="bn1")(y)
        y = nn.relu(y)
        y = nn.Conv(self.filters, (3, 3), use_bias=False, name="conv2")(y)
        y = norm(name="bn2", scale_init=nn.initializers.ones)(y)
        if residual.shape != y.shape:
            residual = nn.Conv(self.filters, (1, 1), self.strides, use_bias=False, name="proj")(residual)
            residual = norm(name="proj_bn")(residual)
        return nn.relu(residual + y)


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016): 4 stages of 2 blocks, few channels."""

    widths: tuple = (4, 6, 8, 8)
    num_classes: int = 5

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(self.widths[0], (3, 3), use_bias=False, name="conv_init")(x)
        x = nn.BatchNorm(use_running_average=not train, name="bn_init")(x)
        x = nn.relu(x)
        for i, w in enumerate(self.widths):
            for j in range(2):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = ResNetBlock(w, strides, name=f"layer{i + 1}_{j}")(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)


class NnxCNN(nnx.Module):
    """An NNX CNN: conv → BatchNorm → relu (functions), dropout, a linear head."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(4, rngs=rngs)
        self.conv2 = nnx.Conv(4, 6, (3, 3), strides=(2, 2), rngs=rngs)
        self.bn2 = nnx.BatchNorm(6, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.head = nnx.Linear(6, 7, rngs=rngs)
        self.act = jax.nn.relu  # a test swaps in its own ReLU on a copy

    def __call__(self, x):
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        x = self.dropout(x.mean(axis=(1, 2)))
        return self.head(x)


class Stage(nn.Module):
    """A conv and its ReLU (a function), as one named stage."""

    features: int
    strides: tuple = (1, 1)

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(self.features, (3, 3), self.strides, name="conv")(x))


class StagedCNN(nn.Module):
    """Two stages whose names are not plain file names (``<``, ``>``, ``&``), global pooling, a dense head."""

    stage_names: tuple = ("stem", "x<y>&z")

    @nn.compact
    def __call__(self, x):
        x = Stage(4, name=self.stage_names[0])(x)
        x = Stage(6, (2, 2), name=self.stage_names[1])(x)
        return nn.Dense(5, name="head")(x.mean(axis=(1, 2)))


class NnxStage(nnx.Module):
    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, (3, 3), rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.conv(x))


class NnxStagedCNN(nnx.Module):
    """NNX stages in an ``nnx.List`` (layers ``blocks/0/conv``, ``blocks/0``, …) and a linear head."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.blocks = nnx.List([NnxStage(3, 4, rngs=rngs), NnxStage(4, 6, rngs=rngs)])
        self.head = nnx.Linear(6, 5, rngs=rngs)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(axis=(1, 2)))


def sequential_cnn() -> nn.Sequential:
    """A linen ``nn.Sequential`` classifier."""
    return nn.Sequential([
        nn.Conv(4, (3, 3)), nn.relu, nn.Conv(6, (3, 3), strides=(2, 2)), nn.relu,
        lambda x: x.mean(axis=(1, 2)), nn.Dense(3),
    ])


def nnx_cnn() -> NnxCNN:
    """``--arch flax_models:nnx_cnn``: an NNX module holding its weights."""
    return NnxCNN(rngs=nnx.Rngs(0))


def mnist_cnn() -> tuple[MnistCNN, dict]:
    """``--arch flax_models:mnist_cnn``: a linen ``(module, variables)`` pair for 16×16 RGB inputs."""
    module = MnistCNN()
    return module, module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
