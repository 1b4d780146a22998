"""The figure set's shared state: a task (its files, parameters and runner) and the lazily loaded model,
conv base and photo the runners draw from; the names of the set's bookkeeping files."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import model as model_lib
from ..images import load_image

MANIFEST = "manifest.json"
INDEX = "index.html"
PARTIAL = ".partial"  # per-filter progress of unfinished pattern tasks
FORMAT = 1


@dataclasses.dataclass
class Task:
    """One task of the figure set: the files it writes, the parameters they depend on (a change redoes it), the
    runner that writes them, and how the gallery shows them (section, captions)."""

    name: str
    files: list[str]
    params: dict
    run: Callable[[Context, Task], None]
    caption: str = ""
    section: str = ""
    #: a caption per file where they differ (e.g. one per DeepVis class); ``caption`` for the others
    captions: dict = dataclasses.field(default_factory=dict)


class Context:
    """What the runners draw from, loaded lazily: the model, its conv base and the preprocessed photos (nothing
    is loaded unless a task needs it)."""

    def __init__(self, arch, weights, images, out: Path, progress: bool, file_model=None, preprocess=None):
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        self.preprocess = preprocess
        self.arch, self.weights, self.images, self.out, self.progress = arch, weights, images, out, progress
        self.image = images[0]
        self.load_seconds = 0.0
        self._x: dict = {}
        self.file_model = file_model  # a model read from the user's file (jaxviz.load(path))

    def x_of(self, image):
        """The preprocessed batch ``[1, H, W, C]`` of one of the images, at the model's input size."""
        if image not in self._x:
            x = load_image(image, target_size=self.arch.input_hw, channels=self.arch.channels)[None]
            self._x[image] = np.asarray(self.model.preprocess_input(x))
        return self._x[image]

    @functools.cached_property
    def model(self):
        if self.file_model is not None:
            return self.file_model
        t = time.perf_counter()
        m = model_lib.load(self.arch.name, self.weights, include_top=True, preprocess=self.preprocess)
        self.load_seconds += time.perf_counter() - t
        return m

    @functools.cached_property
    def conv_base(self):
        """The model without its classifier, sharing the weights (takes inputs of any size); a model file's
        own graph (its truncated passes compute nothing of the head)."""
        m = self.model
        if self.file_model is not None:
            return m
        params = {k: v for k, v in m.params.items() if k in m.conv_layer_names}
        return model_lib.Model(m.arch, params, include_top=False, source=m.source, preprocess=m.preprocess)



def unique_stems(paths) -> list[str]:
    """File stems, made unique (``cat``, ``cat_1``, …) so that outputs of same-named images do not collide."""
    stems, seen = [], {}
    for p in paths:
        stem = Path(p).stem
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        stems.append(stem if n == 0 else f"{stem}_{n}")
    return stems
