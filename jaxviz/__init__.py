"""jaxviz: visualising what convnets learn, in JAX/Flax, on VGG16/VGG19 with Keras's ImageNet weights."""

from .errors import ImageError, JaxvizError, LayerError, WeightsError
from .model import Model, load
from .vgg import ARCHS, VGG, layer_table

__version__ = "0.1.0"

__all__ = [
    "ARCHS", "VGG", "ImageError", "JaxvizError", "LayerError", "Model", "WeightsError",
    "layer_table", "load",
]
