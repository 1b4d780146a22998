"""Input × Gradient: the input gradient multiplied element-wise by the input.

Shrikumar, Greenside, Shcherbina & Kundaje, "Not Just a Black Box: Learning Important Features Through
Propagating Activation Differences", arXiv:1605.01713, 2016 (the "gradient * input" attribution; Captum's
``InputXGradient``).

    R_ijc = x_ijc · ∂S_t/∂x_ijc

On a ReLU network with zero biases the score is positively homogeneous of degree 1 and ``Σ R = S_t`` (Euler's
theorem); with biases the sum misses their share. Signed: positive where a pixel raises the class score. One
forward and one backward pass for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from .. import runtime

#: Display policy: the map's sign matters (negative = evidence against the class), so it is shown
#: as its positive part.
SIGNED = True


def input_x_gradient(model, x, target: int | Sequence[int] | None = None, *, score: str = "logit",
                     reduce: str | None = "sum", params=None) -> jax.Array:
    """Input × Gradient (Shrikumar et al. 2016; Captum's ``InputXGradient``).

    Args:
      model: a :class:`jaxviz.Model` with its classifier.
      x: ``[N, H, W, 3]`` preprocessed images.
      target: ``None`` (each image's top class), a class index, or one per image.
      score: ``"logit"`` (default), ``"prob"`` or ``"log_prob"``: the score differentiated.
      reduce: channel reduction (see :mod:`jaxviz.runtime`); ``"sum"`` (default) adds the colour channels'
        contributions, ``None`` keeps ``[N, H, W, 3]`` (Captum's layout, channels last).
      params: weights to use instead of ``model.params``.

    Returns:
      ``[N, H, W]`` float32, signed (``[N, H, W, 3]`` for ``reduce=None``).
    """
    return runtime.gradient_method(model, "input_x_gradient", x, target, score, reduce, params,
                                   post=lambda x, g: x * g)
