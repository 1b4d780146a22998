"""``--arch package.module:factory``: a Flax model from the user's own code, for the command line.

The factory is a callable taking no arguments that returns an NNX module (holding its weights) or a linen
``(module, variables)`` pair; :func:`jaxviz.from_flax` makes the model. The module is imported as Python
imports it (from the current directory or the installed packages): the user names their own code, as with
``python -m``; jaxviz never imports anything a model file names.
"""

from __future__ import annotations

import importlib
import re

from flax import nnx

from ..errors import JaxvizError
from .flax import from_flax

_SPEC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")

#: The input side of a factory's model when ``--input-size`` is not given.
DEFAULT_SIZE = 224


def is_factory_spec(arch) -> bool:
    """Whether ``arch`` reads ``package.module:factory``."""
    return isinstance(arch, str) and bool(_SPEC.match(arch))


def load_factory(spec: str, input_size: int | None = None, preprocess: str | None = None, channels: int = 3):
    """The :class:`jaxviz.frontends.flax.FlaxModel` of the factory ``spec`` (``package.module:factory``) at
    ``input_size`` × ``input_size`` × ``channels`` inputs (default 224)."""
    module_name, attr = spec.split(":")
    try:
        code = importlib.import_module(module_name)
    except ImportError as e:
        raise JaxvizError(f"--arch {spec}: cannot import {module_name} ({e}); run from the folder that holds it "
                          "or install it") from None
    factory = getattr(code, attr, None)
    if not callable(factory):
        raise JaxvizError(f"--arch {spec}: {module_name} has no callable {attr!r}")
    made = factory()
    if isinstance(made, nnx.Module):
        module, variables = made, None
    elif isinstance(made, tuple) and len(made) == 2:
        module, variables = made
    else:
        raise JaxvizError(f"--arch {spec}: the factory returned {type(made).__name__}; return an NNX module or a "
                          "linen (module, variables) pair")
    side = DEFAULT_SIZE if input_size is None else int(input_size)
    return from_flax(module, variables, input_shape=(side, side, channels), preprocess=preprocess or "none",
                     name=attr)
