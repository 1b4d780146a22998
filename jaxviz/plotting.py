"""The drawing functions under their older module name: everything here is :mod:`jaxviz.render`'s."""

from .render import (  # noqa: F401
    GRID_ORDERS,
    colourise,
    feature_map_figure,
    feature_map_grid,
    grid_position,
    image_grid,
    labelled_grid,
    normalise_channel_maps,
    save_figure,
    titled_panel,
)
