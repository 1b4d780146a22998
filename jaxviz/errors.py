"""Errors jaxviz raises for bad input: each message is one line naming the problem and the fix.

The CLI prints ``error: <message>`` for these and exits with status 2, without a traceback.
"""


class JaxvizError(Exception):
    """Base class: a user-facing, one-line message naming the problem and how to fix it."""


class ImageError(JaxvizError):
    """An image file is missing, unreadable or corrupt."""


class WeightsError(JaxvizError):
    """A weight file is missing, corrupt, of the wrong architecture, or could not be downloaded."""


class LayerError(JaxvizError):
    """A layer name the model does not have (the message lists the valid ones)."""


#: Terminal control characters (C0, DEL, C1) and the Unicode line and paragraph separators.
_CONTROL = "".join(map(chr, [*range(32), *range(127, 160), 0x2028, 0x2029]))
_ESCAPES = str.maketrans({c: c.encode("unicode_escape").decode("ascii") for c in _CONTROL})


def printable(text) -> str:
    """``text`` with every control character written as its escape (``\\x1b``, ``\\n``): what a file names
    can neither retitle nor clear a terminal, nor split one line of output in two."""
    return str(text).translate(_ESCAPES)
