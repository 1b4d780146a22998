"""Visualising what a convnet learned: filter patterns (and, in sibling modules, kernels and activations)."""

from .patterns import check_compiled_program, compiled_program, filter_patterns, pattern_objective

__all__ = ["check_compiled_program", "compiled_program", "filter_patterns", "pattern_objective"]
