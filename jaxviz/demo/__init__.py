"""A demo network and scenes with known answers: where is the object, and what is it?

- :func:`make_scenes` renders seeded procedural scenes (one labelled shape or texture over clutter) with
  each object's ground-truth mask.
- ``vgg_demo`` (flatten head) and ``vgg_demo_gap`` (global-average-pooling head, for :func:`cam`) are
  narrow 64×64 VGGs trained on them by ``scripts/train_demo.py``; they are rows of the VGG table
  (:data:`jaxviz.frontends.vgg.ARCHS`), their profile names the bundled weights, and those ship with jaxviz
  (:func:`demo_weights_path`), so ``jaxviz.load("vgg_demo")`` works offline.

Attribution maps of these models can be checked against the masks (pointing game, deletion/insertion),
which real photos cannot offer.

:func:`demo_image_path` is the demo's counterpart of the bundled cat photo: one 64×64 scene (a star, which
``vgg_demo`` classifies with p > 0.99) that ``jaxviz figures --arch vgg_demo`` uses by default.
"""

from __future__ import annotations

from pathlib import Path

from .. import weights
from ..atomic import file_digest
from ..errors import WeightsError
from ..profile import DEMO_IMAGE_PATH
from .model import DEMO_ARCHS, VGG_DEMO, VGG_DEMO_GAP, cam
from .scenes import CLASS_NAMES, NUM_CLASSES, make_scenes, object_regions

__all__ = [
    "CLASS_NAMES", "DEMO_ARCHS", "DEMO_IMAGE", "NUM_CLASSES", "VGG_DEMO", "VGG_DEMO_GAP", "cam", "demo_image",
    "demo_image_path", "demo_weights_path", "file_sha256", "load_demo_params", "make_scenes", "object_regions",
    "shipped_sha256",
]

_PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"  # jaxviz/data: installed with the package
_REPO_WEIGHTS = Path(__file__).resolve().parent.parent.parent / "weights" / "demo"  # a source checkout


#: The shipped demo scene: ``make_scenes(n, seed=seed)`` image ``index`` (a star, lower right), saved as
#: ``jaxviz/data/{file}``.
DEMO_IMAGE = dict(file=DEMO_IMAGE_PATH.name, n=400, seed=2024, index=1, label="star")


def demo_image():
    """The demo scene rendered afresh: ``(uint8 [64, 64, 3] RGB, label, bool [64, 64] mask)``; the shipped
    PNG (:func:`demo_image_path`) holds the same pixels."""
    images, labels, masks = make_scenes(DEMO_IMAGE["n"], size=64, seed=DEMO_IMAGE["seed"])
    i = DEMO_IMAGE["index"]
    return images[i], int(labels[i]), masks[i]


def demo_image_path() -> Path:
    """Path of the bundled 64×64 demo scene (a star): the default image for the demo networks' figures."""
    return DEMO_IMAGE_PATH


def _arch_name(arch) -> str:
    name = getattr(arch, "name", arch)
    if name not in DEMO_ARCHS:
        raise WeightsError(f"{name!r} is not a demo architecture; choose one of: {', '.join(DEMO_ARCHS)}")
    return name


def demo_weights_path(arch="vgg_demo") -> Path:
    """The shipped trained weights of a demo architecture (``vgg_demo`` or ``vgg_demo_gap``).

    Looks in the package's ``jaxviz/data/`` (present in an installed jaxviz) and then in the source
    checkout's ``weights/demo/``; both hold the same bytes (see ``weights/demo/SHA256SUMS``).

    Raises:
      WeightsError: not a demo architecture, or the file is in neither place.
    """
    name = _arch_name(arch)
    for folder in (_PACKAGE_DATA, _REPO_WEIGHTS):
        path = folder / f"{name}.npz"
        if path.is_file():
            return path
    raise WeightsError(
        f"the trained {name} weights are missing from {_PACKAGE_DATA} and {_REPO_WEIGHTS}; reinstall jaxviz "
        "or run scripts/train_demo.py"
    )


def shipped_sha256(arch="vgg_demo") -> str | None:
    """The SHA-256 recorded for the demo file in ``weights/demo/SHA256SUMS`` (``None`` if not recorded)."""
    name = _arch_name(arch)
    sums = _REPO_WEIGHTS / "SHA256SUMS"
    if not sums.is_file():
        return None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == f"{name}.npz":
            return parts[0]
    return None


def file_sha256(path) -> str:
    return file_digest(path, "sha256")


def load_demo_params(arch="vgg_demo", include_top: bool = True) -> dict:
    """The shipped trained params of a demo architecture, ``{layer: {"kernel", "bias"}}`` float32 numpy.

    Read with :func:`jaxviz.weights.load_converted` (pickle-free ``.npz``; the tree is checked against the
    architecture); ``include_top=False`` drops the head.
    """
    return weights.load_converted(demo_weights_path(arch), _arch_name(arch), include_top)
