"""Which class score a method differentiates by default, per model.

The book's Grad-CAM (Chollet, *Deep Learning with Python*, 2nd ed., listing 9.20) and LIME (Ribeiro et al.
2016) explain the softmax *probability*. On a network that is certain of its answer (the shipped demo
networks give p = 1.000 on their scenes) the softmax is saturated: the probability's gradient and its
response to occluding superpixels are ~0, so Grad-CAM of the probability highlights noise and LIME's map is
all zero. For those networks the default is the pre-softmax *logit* (the choice of Selvaraju et al. 2017),
in the Python API and the command line alike; ImageNet VGGs keep the book's probability. Which one a model
uses is its profile's choice (:attr:`jaxviz.profile.Profile.score`).
"""

from __future__ import annotations


def default_score(model, score: str | None = None) -> str:
    """``score`` if given, else the model's profile's (``"logit"`` for the demo networks, ``"prob"`` for
    others)."""
    return model.profile.score if score is None else score
