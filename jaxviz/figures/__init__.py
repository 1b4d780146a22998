"""The notes' figure set in one resumable run: summaries, kernels, feature maps, patterns, DeepVis, Grad-CAM.

:func:`make_figures` splits the job into tasks, each with the files it writes. A task's files are written
atomically, and only then is the task recorded as done in ``manifest.json`` (itself written atomically), so
an interrupted run (Ctrl-C, a crash, a killed machine) leaves no half-written file, and running the same
command again skips every task whose files exist and whose parameters are unchanged. A task whose
parameters changed (another size, other weights, another photo) is redone. Pattern grids, the longest
tasks, also keep each finished filter under ``.partial/<task>/`` until the grid is written, so an interrupted
grid resumes from the filters already made.

The weights are loaded only if some task has to run: a rerun of a finished job returns at once.

Files written (``{L}`` a layer's name, or for a name that is not a plain file name a safe slug of it:
:func:`jaxviz.atomic.file_stems`; ``{m}`` a pattern method, ``{c}`` a class), every one checked to stay in the
output folder (:func:`jaxviz.atomic.confine`):

======================================  ==================================================================
``summary.txt``, ``summary_conv_base.txt``  the model table with and without the classifier
``kernels_{first conv}.png`` / ``_rgb.png`` first-layer kernels: gray grid (filter × channel), colour patches
``fmaps_{L}.png``                       the first ``feature_maps`` maps of block1_conv1 and of each block's end
``patterns_{m}_{L}.png``                filter patterns of ``pattern_layers``, 8 columns, filter ``i + 8·j`` at
                                        row ``i``, column ``j`` (DLwP listing 5.39; ``pattern_order``)
``pattern_{L}_f{i}_{S}.png``            one pattern at ``single_size`` px (DLwP listing 5.38: block3_conv1, 0)
``deepvis_{c}.png``, ``deepvis.png``    class visualisations (Yosinski et al. 2015), and a titled panel
``gradcam_heatmap.png``                 Grad-CAM of the photo's top class, at the layer's resolution
``gradcam_overlay.png``                 that heatmap over the photo (DLwP listing 5.44)
``gradcam_top{K}.png``                  overlays for the top K classes, titled with names and probabilities
``index.html``, ``manifest.json``       a gallery of all of the above; parameters, versions and timings
======================================  ==================================================================

A model passed itself (:func:`jaxviz.from_flax`'s Flax module, any :class:`jaxviz.Model`) keeps its weights
and preprocessing; its tasks are keyed by its kind, name and the SHA-256 of its weights. A Flax module's conv
layers are its submodule calls with a kernel ``[kh, kw, in, out]``; sections whose layers a model lacks (no
conv kernel; no classes, for a module returning a map) are left out.

DeepVis classes on models with fewer classes than asked for (``vgg_tiny``: 10): a class ``c >= num_classes``
is replaced by ``c % num_classes`` (130, 736, 779 → 0, 6, 9 on a 10-class model), repeats dropped; the
manifest records the classes actually used.

Defaults that depend on the architecture come from the model's profile (:attr:`jaxviz.Model.profile`,
:mod:`jaxviz.profile`): the demo networks (``vgg_demo``, ``vgg_demo_gap``) get their bundled scene
(:func:`jaxviz.demo.demo_image_path`, a star) instead of the cat, all ten classes in the DeepVis panel, titled
with the scene class names, their DeepVis options, a larger step for the book's pattern ascent
(:data:`jaxviz.profile.DEMO_PATTERN_STEP_SIZE`), Grad-CAM of the logit, the regularised single pattern and
enlarged feature maps.

The package's modules, one job each: :mod:`.tasks` plans the tasks, :mod:`.runners` computes and draws each
(through :mod:`jaxviz.render`), :mod:`.make` runs them and keeps the manifest, :mod:`.page` writes the
gallery; :mod:`.context` holds what they share.
"""

from ..profile import DEMO_PATTERN_STEP_SIZE
from ..render import display_photo
from .context import INDEX, MANIFEST, PARTIAL, unique_stems
from .make import QUICK, make_figures
from .runners import (
    DEEPVIS_OPTIONS,
    _as_uint8_images,  # noqa: F401  (how the set shows pattern images; compared in tests)
    kernel_figures,
)
from .tasks import DEFAULT_PATTERN_LAYERS, DEFAULT_SINGLE_LAYER, deepvis_classes

__all__ = [
    "DEEPVIS_OPTIONS", "DEFAULT_PATTERN_LAYERS", "DEFAULT_SINGLE_LAYER", "DEMO_PATTERN_STEP_SIZE", "INDEX", "MANIFEST",
    "PARTIAL", "QUICK", "deepvis_classes", "display_photo", "kernel_figures", "make_figures", "unique_stems",
]
