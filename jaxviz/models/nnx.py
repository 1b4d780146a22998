"""VGG16 and VGG19 as Flax NNX modules whose submodules carry Keras's layer names.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.

``VGG16(rngs=nnx.Rngs(0))`` has the attributes ``block1_conv1`` … ``block5_pool``, ``flatten``, ``fc1``,
``fc2`` and ``predictions``, exactly Keras's ``keras.applications.VGG16`` layers, so Keras's weights load key
for key (:func:`jaxviz.models.vgg16` does it). As in Keras, each convolution and hidden dense layer applies
its ReLU (its output is the post-activation map), and the pools and the flatten are layers of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

VGG16_CONVS = (2, 2, 3, 3, 3)
VGG19_CONVS = (2, 2, 4, 4, 4)
VGG_FEATURES = (64, 128, 256, 512, 512)


class ConvReLU(nnx.Conv):
    """``nnx.Conv`` followed by its ReLU: Keras's ``Conv2D(activation="relu")``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(super().__call__(x))


class DenseReLU(nnx.Linear):
    """``nnx.Linear`` followed by its ReLU: Keras's ``Dense(activation="relu")``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(super().__call__(x))


class MaxPool2D(nnx.Module):
    """2×2 max pooling with stride 2, "valid" padding (Keras's ``MaxPooling2D()``)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.max_pool(x, (2, 2), strides=(2, 2))


class Flatten(nnx.Module):
    """``[N, H, W, C] → [N, H·W·C]`` in row-major (H, W, C) order, as Keras's ``Flatten``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[0], -1)


class VGG(nnx.Module):
    """A VGG network: ``convs_per_block`` 3×3 convolutions per block, each block ending in a 2×2 max pool,
    then (``include_top``) ``flatten``, the hidden dense layers ``fc1``, ``fc2`` … and ``predictions``.

    Args:
      convs_per_block: convolutions per block (VGG16: ``(2, 2, 3, 3, 3)``).
      block_features: channels per block.
      include_top: add the classifier (it fixes the input size to ``input_size``).
      fc_features: the hidden dense layers' widths.
      num_classes: outputs of ``predictions``.
      input_size: the square input side the classifier takes.
      in_channels: input channels (3: RGB).
      classifier_activation: ``"softmax"`` (Keras's default: probabilities) or ``None`` (logits, for training).
      rngs: the initialisers' random streams.
    """

    def __init__(self, convs_per_block: Sequence[int] = VGG16_CONVS, block_features: Sequence[int] = VGG_FEATURES,
                 *, include_top: bool = True, fc_features: Sequence[int] = (4096, 4096), num_classes: int = 1000,
                 input_size: int = 224, in_channels: int = 3, classifier_activation: str | None = "softmax",
                 rngs: nnx.Rngs):
        order = []
        channels = in_channels
        for b, (convs, features) in enumerate(zip(convs_per_block, block_features), start=1):
            for i in range(1, convs + 1):
                setattr(self, f"block{b}_conv{i}", ConvReLU(channels, features, (3, 3), padding="SAME", rngs=rngs))
                order.append(f"block{b}_conv{i}")
                channels = features
            setattr(self, f"block{b}_pool", MaxPool2D())
            order.append(f"block{b}_pool")
        if include_top:
            side = input_size // 2 ** len(convs_per_block)
            self.flatten = Flatten()
            order.append("flatten")
            width = side * side * channels
            for i, features in enumerate(fc_features, start=1):
                setattr(self, f"fc{i}", DenseReLU(width, features, rngs=rngs))
                order.append(f"fc{i}")
                width = features
            self.predictions = nnx.Linear(width, num_classes, rngs=rngs)
            order.append("predictions")
        self.layer_order = tuple(order)
        self.include_top = include_top
        self.classifier_activation = classifier_activation

    def __call__(self, x: jax.Array) -> jax.Array:
        for name in self.layer_order:
            x = getattr(self, name)(x)
        if self.include_top and self.classifier_activation == "softmax":
            x = nnx.softmax(x, axis=-1)
        return x


class VGG16(VGG):
    """VGG16 (configuration D): 13 convolutions in 5 blocks; see :class:`VGG` for the arguments."""

    def __init__(self, *, rngs: nnx.Rngs, **kwargs):
        super().__init__(VGG16_CONVS, VGG_FEATURES, rngs=rngs, **kwargs)


class VGG19(VGG):
    """VGG19 (configuration E): 16 convolutions in 5 blocks; see :class:`VGG` for the arguments."""

    def __init__(self, *, rngs: nnx.Rngs, **kwargs):
        super().__init__(VGG19_CONVS, VGG_FEATURES, rngs=rngs, **kwargs)
