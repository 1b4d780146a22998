"""How good is an attribution map? Deletion/insertion curves, the pointing game, sanity checks.

- :func:`deletion`, :func:`insertion` (Petsiuk et al. 2018): score curves as the most salient pixels are
  removed / added, and their areas (:class:`Curve`).
- :func:`pointing_game` (Zhang et al. 2016): does the map's maximum fall on the object?
- :func:`model_randomisation` (Adebayo et al. 2018): how similar the map stays as the model's layers are
  re-randomised from the top; :func:`plot_sanity` draws it.
- :func:`infidelity`, :func:`sensitivity_max` (Yeh et al. 2019): does the map predict the score's response
  to perturbations, and how much does it move under small ones?
- :func:`road`, :func:`road_combined` (Rong et al. 2022): the score after the most/least relevant pixels are
  replaced by a noisy linear imputation (as pytorch-grad-cam's ROAD).
"""

from .deletion import Curve, auc, deletion, insertion
from .infidelity import infidelity, sensitivity_max
from .pointing import pointing_game
from .road import road, road_combined
from .sanity import SanityResult, model_randomisation, plot_sanity, spearman, ssim

__all__ = [
    "Curve", "SanityResult", "auc", "deletion", "insertion", "model_randomisation", "plot_sanity",
    "pointing_game", "spearman", "ssim", "infidelity", "sensitivity_max", "road",
    "road_combined",
]
