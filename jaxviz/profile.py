"""Per-architecture defaults a model carries (:attr:`jaxviz.Model.profile`): its default image, the class
score its gradient methods differentiate, DeepVis's options and classes, the filter-pattern step sizes, and
how small feature maps are shown.

Three profiles exist. ``imagenet`` (the VGG tables, the book's choices): the cat photo, Grad-CAM of the
softmax probability (Chollet, *Deep Learning with Python*, listing 5.44), DeepVis with the paper's Table 1,
row 3 (Yosinski et al. 2015) on classes 130/736/779. ``demo`` (the shipped demo networks, 64 px, 10
classes): their star scene, the logit (Selvaraju et al. 2017: the demo networks are so sure of their scenes,
p = 1.000, that the softmax's gradient is ~0), DeepVis and pattern steps chosen by experiment. ``file`` (a
model file or module of unknown scale): the imagenet choices, with DeepVis's step chosen from the model's
gradient at the start (the paper's 100 is calibrated to VGG's gradients).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from .images import sample_image_path

#: The demo networks' default image: one 64×64 scene of :mod:`jaxviz.demo` (a star, which ``vgg_demo``
#: classifies with p > 0.99), shipped in the package's data folder.
DEMO_IMAGE_PATH = Path(__file__).resolve().parent / "data" / "demo_star.png"

#: DeepVis's defaults: the paper's Table 1, row 3 (decay 1e-4, blur σ = 1.0 every 4 steps, constant learning
#: rate 100, 1000 steps, start ``N(0, 10²)`` in mean-subtracted space); jitter off.
DEEPVIS_PAPER = MappingProxyType(dict(steps=1000, step_size=100.0, l2_decay=1e-4, blur_every=4, blur_sigma=1.0,
                                      jitter=0, init_std=10.0))

#: DeepVis on the demo networks (64 px, 10 classes), chosen by a sweep over all 10 classes (seed 0):
#:
#: - ``init_std=50``: at the paper's near-gray start (σ = 10) the class gradients are ~5× smaller still,
#:   and for 4–6 of the 10 classes the decay and blur win: those images stay flat gray whatever the step
#:   size up to 3000. A start with scene-like contrast gives every class a usable gradient.
#: - ``step_size=3000``: the demo's input gradients are tiny (mean |∂logit/∂x| ≈ 5e-4 to 1.6e-3 per pixel
#:   at the σ = 50 start), so the paper's 100 moves pixels by ~0.1 gray level per step. 3000 (~1.5–5 levels)
#:   brings every class to ``p > 0.99`` within 300 steps; 10 000 over-saturates into colour noise.
#: - ``l2_decay=1e-3``, ``blur_sigma=0.5``: a σ = 1 blur every 4 steps at 64 px erases the stripes and
#:   dots the texture classes are made of (two classes then fail); 3e-3 decay flattens the weakest class.
#: - ``jitter=2``: small random shifts keep the images from locking onto one pixel grid.
#: - ``steps=300``: the logits have levelled off.
DEEPVIS_DEMO = MappingProxyType(dict(steps=300, step_size=3000.0, l2_decay=1e-3, blur_every=4, blur_sigma=0.5,
                                     jitter=2, init_std=50.0))

#: DeepVis classes when none are given: 130 flamingo, 736 pool table, 779 school bus (ImageNet).
IMAGENET_DEEPVIS_CLASSES = (130, 736, 779)

#: ``method="keras"`` step size for the demo networks. The book's step of 1 (RMS-normalised gradient, 40
#: steps) moves pixels by at most 40 gray levels over a start of uniform noise of width 20; the demo net was
#: trained on full-contrast scenes under pixel noise up to σ = 12 and hardly responds to such small changes,
#: so every pattern stays noise. Steps of 10 give its edge, stripe and blob detectors in the same 40 steps.
DEMO_PATTERN_STEP_SIZE = MappingProxyType({"keras": 10.0})


@dataclasses.dataclass(frozen=True)
class Profile:
    """Defaults that depend on the architecture.

    Attributes:
      name: ``"imagenet"``, ``"demo"`` or ``"file"``.
      image: the default photo of figures, ``compare-keras`` and the CLI.
      score: the class score gradient methods differentiate by default (``"prob"`` or ``"logit"``).
      deepvis: DeepVis's options (``steps``, ``step_size`` — ``None``: chosen from the gradient —, …).
      deepvis_classes: DeepVis's classes when none are given (``None``: every class of the model).
      pattern_step_size: per pattern method, a step size other than the method's own.
      single_method: the method of the single large filter pattern of a figure set.
      fmap_min_side: feature maps smaller than this are enlarged in figures.
      bundled_weights: the weights that ship with jaxviz for this architecture (``"demo"``), else ``None``.
    """

    name: str
    image: Path
    score: str
    deepvis: Mapping
    deepvis_classes: tuple[int, ...] | None
    pattern_step_size: Mapping = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    single_method: str = "keras"
    fmap_min_side: int = 32
    bundled_weights: str | None = None


def imagenet() -> Profile:
    """The ImageNet VGGs' profile (the book's and the paper's choices)."""
    return Profile("imagenet", sample_image_path("chelsea"), "prob", DEEPVIS_PAPER, IMAGENET_DEEPVIS_CLASSES)


def demo(image: Path | None = None) -> Profile:
    """The demo networks' profile: their scene ``image`` (default: the bundled star, :data:`DEMO_IMAGE_PATH`),
    the logit, every class, tuned steps, 150 px single pattern by the regularised method (the book's plain
    ascent stays noise on a 64 px network), 8–16 px deep maps enlarged to 64 px, the bundled weights."""
    return Profile("demo", DEMO_IMAGE_PATH if image is None else image, "logit", DEEPVIS_DEMO, None,
                   DEMO_PATTERN_STEP_SIZE, "regularised", 64, "demo")


def file() -> Profile:
    """A model file's profile: the imagenet choices, with DeepVis's step chosen from the model's gradient."""
    return dataclasses.replace(imagenet(), name="file",
                               deepvis=MappingProxyType({**DEEPVIS_PAPER, "step_size": None}))


#: The profiles a front end may name (:attr:`jaxviz.frontends.vgg.Arch.profile`).
PROFILES = MappingProxyType({"imagenet": imagenet, "demo": demo, "file": file})


def named(name: str) -> Profile:
    """The profile called ``name`` (``"imagenet"``, ``"demo"`` or ``"file"``)."""
    return PROFILES[name]()
