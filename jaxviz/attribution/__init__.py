"""Attribution methods: which input pixels (or feature-map locations) a class score depends on.

One module per method, each citing its paper. Import them from their modules, e.g.
``from jaxviz.attribution.gradcam import gradcam``.
"""
