"""Former home of deconvnet and guided backpropagation, kept so old imports work.

They now live in :mod:`jaxviz.attribution.deconvnet` and :mod:`jaxviz.attribution.guided_backprop`.
"""

from .deconvnet import deconv_relu, deconvnet
from .guided_backprop import guided_backprop, guided_relu

RELUS = {"guided_backprop": guided_relu, "deconvnet": deconv_relu}

__all__ = ["RELUS", "deconv_relu", "deconvnet", "guided_backprop", "guided_relu"]
