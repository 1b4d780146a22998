"""VGG16 and VGG19 as Flax linen modules whose submodules carry Keras's layer names.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.

``VGG16().init(key, x)`` gives ``{"params": {"block1_conv1": {"kernel", "bias"}, …, "predictions": …}}``,
Keras's ``keras.applications.VGG16`` layer for layer (kernels HWIO, dense kernels ``[in, out]``, as Keras
stores them). Each convolution and hidden dense layer applies its ReLU, and the pools and the flatten are
submodules of their own, so the submodule outputs are Keras's layer outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from .nnx import VGG16_CONVS, VGG19_CONVS, VGG_FEATURES


class ConvReLU(nn.Conv):
    """``nn.Conv`` followed by its ReLU: Keras's ``Conv2D(activation="relu")``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.relu(super().__call__(x))


class DenseReLU(nn.Dense):
    """``nn.Dense`` followed by its ReLU: Keras's ``Dense(activation="relu")``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.relu(super().__call__(x))


class MaxPool2D(nn.Module):
    """2×2 max pooling with stride 2, "valid" padding (Keras's ``MaxPooling2D()``)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.max_pool(x, (2, 2), strides=(2, 2))


class Flatten(nn.Module):
    """``[N, H, W, C] → [N, H·W·C]`` in row-major (H, W, C) order, as Keras's ``Flatten``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[0], -1)


class VGG(nn.Module):
    """A VGG network (see :class:`jaxviz.models.nnx.VGG` for the fields; the input size is the input's)."""

    convs_per_block: Sequence[int] = VGG16_CONVS
    block_features: Sequence[int] = VGG_FEATURES
    include_top: bool = True
    fc_features: Sequence[int] = (4096, 4096)
    num_classes: int = 1000
    classifier_activation: str | None = "softmax"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for b, (convs, features) in enumerate(zip(self.convs_per_block, self.block_features), start=1):
            for i in range(1, convs + 1):
                x = ConvReLU(features, (3, 3), padding="SAME", name=f"block{b}_conv{i}")(x)
            x = MaxPool2D(name=f"block{b}_pool")(x)
        if not self.include_top:
            return x
        x = Flatten(name="flatten")(x)
        for i, features in enumerate(self.fc_features, start=1):
            x = DenseReLU(features, name=f"fc{i}")(x)
        x = nn.Dense(self.num_classes, name="predictions")(x)
        return nn.softmax(x, axis=-1) if self.classifier_activation == "softmax" else x


class VGG16(VGG):
    """VGG16 (configuration D): 13 convolutions in 5 blocks."""

    convs_per_block: Sequence[int] = VGG16_CONVS


class VGG19(VGG):
    """VGG19 (configuration E): 16 convolutions in 5 blocks."""

    convs_per_block: Sequence[int] = VGG19_CONVS
