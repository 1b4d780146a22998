"""An atlas of a model: every unit (channel) of the chosen layers on a static HTML site, with its filter patterns
and the dataset images that excite it most (after OpenAI Microscope, without a server: it opens from ``file://``).

:func:`atlas` makes, in an output folder ``SITE``:

- ``index.html``: the model's summary table and its layers with their unit counts;
- ``<layer>/index.html``: a grid of the layer's units (their regularised patterns), sortable by the
  statistics below;
- ``<layer>/<unit>.html``: one page per unit, with previous/next links: its regularised pattern (as
  :func:`jaxviz.filter_patterns` with ``method="regularised"`` renders it), the book's pattern (the
  ``"keras"`` method) and, with ``diversity=N``, N diverse patterns; its top-K dataset images, each as the
  receptive-field crop around the position of the unit's maximum and as a thumbnail with that box drawn;
  its statistics over the folder (mean of the spatial maximum, fraction of positions active) and, for a
  layer that reads the input image, its kernel;
- ``atlas.json``: the manifest ``{"model": …, "layers": [{"name", "units": [{"index", "images", "top":
  [{"image", "activation", "box"}], …}]}]}`` (``image`` relative to the image folder, ``box`` ``[y0, x0, y1,
  x1]`` inclusive in the source image's pixels).

``<layer>`` is a safe file stem of the layer's name (:func:`jaxviz.atomic.file_stems`); every file is written
atomically inside ``SITE`` (:func:`jaxviz.atomic.confine`). The dataset pass is one jitted program per batch
shape that computes all chosen layers at once and keeps a running top-K per unit on the device (memory
``O(layers × units × K)``, whatever the folder's size). Units are done in chunks; each finished chunk is
recorded under ``SITE/.atlas/``, so a rerun with the same settings skips it and writes the same bytes; a rerun
over a finished site writes nothing. With ``host=(i, n)`` each of ``n`` hosts makes its share of the chunks
into one folder they all see, and the last to finish writes the site (the same bytes as one host's run).

The package's modules, one job each: :mod:`.fields` (receptive fields), :mod:`.dataset` (the dataset pass),
:mod:`.pages` (the site's HTML and pictures) and :mod:`.site` (making the atlas, resumably).
"""

from .dataset import IMAGE_SUFFIXES, dataset_pass, image_files
from .fields import Field, field_box, receptive_fields
from .pages import CROP, IMAGE_FORMATS, THUMB
from .site import RESERVED, STATE, STEPS, atlas

__all__ = ["CROP", "Field", "IMAGE_FORMATS", "IMAGE_SUFFIXES", "RESERVED", "STATE", "STEPS", "THUMB", "atlas",
           "dataset_pass", "field_box", "image_files", "receptive_fields"]
