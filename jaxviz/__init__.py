"""jaxviz: visualising what convnets learn, in JAX/Flax, on VGG16/VGG19 with Keras's ImageNet weights."""

from .errors import ImageError, JaxvizError, LayerError, WeightsError
from .imagenet import decode_predictions
from .images import deprocess_image, load_image, overlay, preprocess_input, undo_preprocess
from .model import Model, load
from .vgg import ARCHS, VGG, layer_table

__version__ = "0.1.0"

__all__ = [
    "ARCHS", "VGG", "ImageError", "JaxvizError", "LayerError", "Model", "WeightsError",
    "decode_predictions", "deprocess_image", "layer_table", "load", "load_image", "overlay", "preprocess_input",
    "undo_preprocess",
]
