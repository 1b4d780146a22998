"""ONNX files (PyTorch's exporters, tf2onnx) read into jaxviz's layer graph: :func:`read_model`.

:mod:`.reader` parses and bounds the file and converts it node by node; :mod:`.registry` keys one converter
per op type and opset range; :mod:`.converters` holds the converters, :mod:`.fold` the constant folds.
Reading needs the ``onnx`` package (``pip install 'jaxviz[onnx]'``); nothing runs onnxruntime.
"""

from .reader import is_onnx_file, read_model

__all__ = ["is_onnx_file", "read_model"]
