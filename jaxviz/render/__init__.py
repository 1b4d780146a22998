"""Drawing, in one package: arrays into image grids (:mod:`.grids`), labelled figures of grids, feature maps
and kernels (:mod:`.labelled`), and the titled panels of DeepVis, Grad-CAM and attribution maps
(:mod:`.panels`). Pure numpy + matplotlib (Agg); files are written by :func:`save_figure` and
:func:`jaxviz.images.save_png`, both atomic.
"""

from .grids import GRID_ORDERS, colourise, feature_map_grid, grid_position, image_grid, normalise_channel_maps
from .labelled import draw_kernel_figures, feature_map_figure, labelled_grid, save_figure
from .panels import (
    deepvis_panel,
    display_map,
    display_photo,
    gradcam_heatmap,
    gradcam_images,
    gradcam_panel,
    prob_text,
    titled_panel,
)

__all__ = [
    "GRID_ORDERS", "colourise", "deepvis_panel", "display_map", "display_photo", "draw_kernel_figures",
    "feature_map_figure", "feature_map_grid", "gradcam_heatmap", "gradcam_images", "gradcam_panel", "grid_position",
    "image_grid", "labelled_grid", "normalise_channel_maps", "prob_text", "save_figure", "titled_panel",
]
