"""jaxviz: visualising what convnets learn, in JAX/Flax, on VGG16/VGG19 with Keras's ImageNet weights.

The public API, by task:

- models: :func:`load`, :class:`Model` (``summary``, ``predict``, ``features``), :data:`ARCHS`;
  :func:`from_flax` (any Flax linen/NNX module), :mod:`jaxviz.models` (VGG16/VGG19 as Flax modules),
  :func:`to_flax` / :func:`save_flax` (any jaxviz model out to Flax);
- images: :func:`load_image`, :func:`preprocess_input`, :func:`deprocess_image`, :func:`overlay`,
  :func:`decode_predictions`;
- what the network learned: :func:`kernels`, :func:`filter_patterns`, :func:`class_patterns`,
  :func:`gradcam`, :func:`make_figures`, :func:`atlas` (a browsable site of every unit);
- attribution (one signature ``method(model, x, target=None, **options) -> [N, H, W]``): :func:`explain`
  and :func:`saliency` … :func:`lime`; :mod:`jaxviz.metrics` scores the maps;
- :mod:`jaxviz.demo`: a small trained model and scenes with known answers (``load("vgg_demo")``);
- :mod:`jaxviz.interface`: what every method may ask of a model (docs/ARCHITECTURE.md).

Importing jaxviz changes no table and no process-wide state.
"""

from . import demo, metrics, models, weights
from .atlas import atlas
from .attribution.ablationcam import ablationcam
from .attribution.deconvnet import deconvnet
from .attribution.deeplift import deeplift
from .attribution.eigencam import eigencam
from .attribution.gradcam import gradcam
from .attribution.gradcam_plus_plus import gradcam_plus_plus
from .attribution.gradient_shap import gradient_shap
from .attribution.guided_backprop import guided_backprop
from .attribution.guided_gradcam import guided_gradcam
from .attribution.hirescam import hirescam
from .attribution.input_x_gradient import input_x_gradient
from .attribution.integrated_gradients import integrated_gradients
from .attribution.layercam import layercam
from .attribution.lime import lime
from .attribution.methods import METHODS, explain
from .attribution.noise_tunnel import noise_tunnel
from .attribution.occlusion import occlusion
from .attribution.rise import rise
from .attribution.saliency import saliency
from .attribution.score_cam import score_cam
from .attribution.smoothgrad import smoothgrad
from .attribution.xgradcam import xgradcam
from .errors import ImageError, JaxvizError, LayerError, WeightsError
from .figures import make_figures
from .frontends.flax import from_flax
from .frontends.flax_export import save_flax, to_flax
from .frontends.vgg import ARCHS, layer_table
from .graph import Graph, Layer
from .imagenet import decode_predictions
from .images import deprocess_image, load_image, overlay, preprocess_input, undo_preprocess
from .model import Model, load
from .version import __version__ as __version__
from .visualize.deepvis import class_patterns
from .visualize.kernels import kernels
from .visualize.patterns import filter_patterns, pattern_objective

__all__ = [
    "ARCHS", "METHODS", "atlas", "Graph", "ImageError", "JaxvizError", "LayerError", "Model", "WeightsError",
    "class_patterns", "decode_predictions", "deconvnet", "demo", "deprocess_image", "explain",
    "filter_patterns", "from_flax", "gradcam", "gradcam_plus_plus", "guided_backprop", "guided_gradcam",
    "integrated_gradients", "kernels", "Layer", "layer_table", "lime", "load", "load_image", "make_figures", "metrics",
    "occlusion", "overlay", "pattern_objective", "preprocess_input", "saliency", "score_cam", "smoothgrad",
    "undo_preprocess", "weights",
    "ablationcam", "deeplift", "eigencam", "gradient_shap", "hirescam", "input_x_gradient", "layercam", "noise_tunnel",
    "models", "rise", "save_flax", "to_flax", "xgradcam",
]
