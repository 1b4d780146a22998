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
