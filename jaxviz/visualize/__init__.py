"""Visualising what a convnet learned: filter patterns and class images (built from :mod:`jaxviz.optvis`) and,
in sibling modules, kernels and activations."""

from .deepvis import class_patterns
from .patterns import (
                       check_compiled_program,
                       compiled_program,
                       display_images,
                       diverse_patterns,
                       filter_patterns,
                       pattern_objective,
)

__all__ = ["check_compiled_program", "class_patterns", "compiled_program", "display_images", "diverse_patterns",
           "filter_patterns", "pattern_objective"]
