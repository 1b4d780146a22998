"""Running the figure set: which tasks are done (``manifest.json``), running the others, recording each."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from .. import model as model_lib
from ..atomic import confine, file_digest, remove_tree, write_bytes
from ..errors import ImageError, JaxvizError, LayerError
from ..frontends.vgg import get_arch, layer_table
from ..render import GRID_ORDERS
from ..version import __version__
from ..visualize.activations import block_end_layers
from ..visualize.kernels import channel_order
from .context import FORMAT, MANIFEST, PARTIAL, Context, Task, unique_stems
from .page import _weights_description, _write_index
from .tasks import DEFAULT_PATTERN_LAYERS, DEFAULT_SINGLE_LAYER, _pattern_convs, _tasks, conv_rows

#: Parameters of ``--quick``: the same figures, small enough for a few minutes on a laptop CPU.
QUICK = dict(pattern_filters=16, single_size=64, deepvis_steps=100)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("jaxviz", "jax", "jaxlib", "flax", "numpy", "matplotlib", "pillow", "tqdm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    if out["jaxviz"] is None:
        out["jaxviz"] = __version__
    return out


def _device() -> str:
    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', '')}"


def _load_manifest(path: Path) -> dict:
    try:
        m = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return m if isinstance(m, dict) and m.get("format") == FORMAT else {}


def _is_done(task: Task, record: dict | None, out: Path) -> bool:
    return (bool(record) and record.get("params") == _jsonable(task.params)
            and record.get("files") == task.files and all((out / f).is_file() for f in task.files))


def params_digest(params) -> str:
    """The hex SHA-256 of a model's weights: each leaf's path, dtype, shape and bytes, in path order."""
    h = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _given_model(model, weights, preprocess):
    """A model passed as itself: its weights and preprocessing are its own (``weights`` and ``preprocess``
    must be left out or name them)."""
    if weights not in (None, "imagenet"):
        raise JaxvizError(f"weights={weights!r}: {model.arch.name} is a model already made and holds its own "
                          "weights; leave weights out")
    if preprocess not in (None, model.preprocess):
        raise JaxvizError(f"preprocess={preprocess!r}: {model.arch.name} prepares images as {model.preprocess!r}; "
                          "leave preprocess out or make the model with the preprocessing it needs")
    return model


def _cam_layer(model) -> str | None:
    """The model's default Grad-CAM layer, or None where no layer has a spatial map (no Grad-CAM to draw)."""
    try:
        return model.cam_layer
    except LayerError:
        return None


def make_figures(model_arch: str | model_lib.Model = "vgg16", weights: str | None = "imagenet",
                 image: str | os.PathLike | None = None, out_dir: str | os.PathLike = "figures", *,
                 pattern_layers: Sequence[str] = DEFAULT_PATTERN_LAYERS,
                 pattern_methods: Sequence[str] = ("keras", "regularised"),
                 pattern_filters: int = 64, pattern_size: int = 64, pattern_steps: int | None = None,
                 pattern_step_size: float | None = None, pattern_order: str = "columns",
                 single_layer: str = DEFAULT_SINGLE_LAYER, single_filter: int = 0, single_size: int = 150,
                 single_method: str | None = None,
                 kernel_filters: int = 64, feature_maps: int = 64,
                 deepvis_classes: Sequence[int] | None = None, deepvis_size: int | None = None,
                 deepvis_steps: int | None = None,
                 gradcam_top: int = 5, gradcam_layer: str | None = None, gradcam_score: str | None = None,
                 seed: int = 0, progress: bool = True, preprocess: str | None = None) -> dict:
    """Regenerates the figure set into ``out_dir``; resumable (see the module docstring).

    Args:
      model_arch: "vgg16", "vgg19", "vgg_tiny", any registered architecture (GAP heads included), the path
        of the user's own model file (``.keras``, ``.h5``, converted ``.npz``), or a model itself (a
        :class:`jaxviz.Model`: :func:`jaxviz.from_flax`'s Flax module, :func:`jaxviz.load`'s): then the default
        pattern layers are a few of its conv layers, the single pattern one in the middle, Grad-CAM at its
        :attr:`~jaxviz.Model.cam_layer`, and images are prepared in its preprocessing mode. A Flax model's
        conv layers are its submodule calls whose own kernel is ``[kh, kw, in, out]``; a model without a
        classifier (its output a map) gets no DeepVis or Grad-CAM.
      weights: as :func:`jaxviz.load` ("imagenet", a file, "random:SEED"; for a model file, "imagenet" means its
        own weights and "random:SEED" re-initialises its graph; a model itself keeps its own: leave it out).
      image: the photo for feature maps and Grad-CAM; default the bundled cat (``sample_image_path()``), or
        for the demo networks their bundled star scene (``jaxviz.demo.demo_image_path()``).
      out_dir: output folder (created if missing).
      pattern_layers, pattern_methods: filter-pattern grids to draw (layers the model lacks are skipped;
        methods as :func:`jaxviz.visualize.patterns.filter_patterns`: "keras" = the book, "regularised").
      pattern_filters, pattern_size, pattern_steps, pattern_step_size: first N filters per layer, pixels,
        gradient steps and step size (the book: 64, 64 px, 40 steps of 1); steps and step size default to
        each method's own (see :mod:`jaxviz.visualize.patterns`; for the demo networks the "keras" step is
        :data:`jaxviz.profile.DEMO_PATTERN_STEP_SIZE`). Patterns are shown in RGB (:func:`jaxviz.visualize.patterns.
        display_images`): "keras" ones with the book's contrast stretch (:func:`jaxviz.images.deprocess_image`),
        "regularised" ones as their sigmoid image, as lucid/Lucent show them.
      pattern_order: ``"columns"`` (default, the book's listing 5.39: filter ``i + 8·j`` at row ``i``,
        column ``j``) or ``"rows"`` (row-major); see :func:`jaxviz.render.image_grid`.
      single_layer, single_filter, single_size: the book's single pattern (block3_conv1, filter 0, 150 px).
      single_method: its method; default "keras" (the book), "regularised" for the demo networks.
      kernel_filters: first-layer filters shown.
      feature_maps: feature maps shown per layer (the first conv layer and each block's output, see
        :func:`jaxviz.visualize.activations.block_end_layers`): the first 64, or all of a layer with fewer; the
        caption says how many of how many.
      deepvis_classes: classes to visualise; default 130 flamingo, 736 pool table, 779 school bus
        (ImageNet), or every class of a demo network. Mapped to ``c % num_classes`` on smaller models.
      deepvis_size, deepvis_steps: DeepVis image side (default the model's input size) and steps; the
        steps and the other DeepVis options default to the model's profile (:attr:`jaxviz.Model.profile`).
      gradcam_top, gradcam_layer, gradcam_score: Grad-CAM panel size, layer (default the last conv) and score
        ("prob", the book; "logit", the paper and the default for the demo networks).
      seed: seed of every random start.
      progress: tqdm bar over the tasks.
      preprocess: the images' preprocessing mode (:mod:`jaxviz.preprocessing`); default the model's own (a
        model itself keeps its own).

    Returns:
      The manifest (also in ``out_dir/manifest.json``): parameters, versions, and per task its files,
      parameters, seconds and completion time; ``last_run`` lists the tasks run and skipped.

    Raises:
      KeyboardInterrupt: passed on after recording the tasks finished so far (rerun to resume).
    """
    file_model = given = None
    if isinstance(model_arch, model_lib.Model):  # a model already made: jaxviz.from_flax, jaxviz.load
        file_model = given = _given_model(model_arch, weights, preprocess)
    elif model_lib._is_model_file(model_arch):  # the user's own model: a Keras file or a converted .npz
        file_model = model_lib.load(model_arch, weights, preprocess=preprocess)
    if file_model is not None:
        file_model.require_spatial("jaxviz figures")
        arch = file_model.arch
        table = file_model.layer_table((*arch.input_hw, arch.channels))
        convs = _pattern_convs(conv_rows(file_model, table))
        if tuple(pattern_layers) == DEFAULT_PATTERN_LAYERS:  # VGG's names: a few conv layers of this model
            step = max(1, len(convs) // 4)
            pattern_layers = list(dict.fromkeys(convs[::step][:4] + convs[-1:]))
        if single_layer == DEFAULT_SINGLE_LAYER and convs:
            single_layer = convs[len(convs) // 2]
    else:
        arch = get_arch(model_arch)
        table = None
    # the architecture's defaults: the model's own profile; a named architecture's is read off a model without
    # weights ("none": a preprocessing any channel count takes), since nothing is loaded unless a task runs
    profile = (file_model if file_model is not None
               else model_lib.Model(arch.name, {}, include_top=False, preprocess="none")).profile
    if image is None:
        images = [Path(profile.image)]
    elif isinstance(image, (list, tuple)):
        images = [Path(i) for i in dict.fromkeys(str(i) for i in image)]
    else:
        images = [Path(image)]
    if not images:
        raise JaxvizError("no images given: pass an image path (or None for the bundled one)")
    image = images[0]
    if deepvis_classes is None:
        deepvis_classes = (range(arch.num_classes) if profile.deepvis_classes is None  # None: every class
                           else profile.deepvis_classes)
    if gradcam_score is None:
        gradcam_score = profile.score
    if single_method is None:
        single_method = profile.single_method
    if pattern_order not in GRID_ORDERS:
        raise JaxvizError(f"unknown pattern_order {pattern_order!r}; use one of: {', '.join(GRID_ORDERS)}")
    for im in images:
        if not im.is_file():
            raise ImageError(f"image file not found: {str(im)!r}; check the path")
    have = {r.name for r in (table if table is not None else layer_table(arch, include_top=False))}
    pattern_layers = [name for name in pattern_layers if name in have]  # the manifest lists what is drawn
    out = Path(out_dir)
    sizes = dict(pattern_layers=list(pattern_layers), pattern_methods=list(pattern_methods),
                 pattern_filters=pattern_filters, pattern_size=pattern_size, pattern_steps=pattern_steps,
                 pattern_step_size=pattern_step_size, pattern_order=pattern_order, single_layer=single_layer,
                 single_filter=single_filter,
                 single_size=single_size, single_method=single_method, kernel_filters=kernel_filters,
                 feature_maps=feature_maps,
                 deepvis_classes=[int(c) for c in deepvis_classes], deepvis_size=deepvis_size,
                 deepvis_steps=deepvis_steps, gradcam_top=gradcam_top, gradcam_layer=gradcam_layer,
                 gradcam_score=gradcam_score, seed=seed)
    if given is not None:  # what identifies its figures on a rerun: the kind of model and its weights' bytes
        common = {"arch": f"{given.source}:{arch.name}", "weights": f"sha256:{params_digest(given.params)}"}
    else:
        common = {"arch": str(model_arch) if file_model is not None else arch.name, "weights": str(weights)}
    mode = file_model.preprocess if file_model is not None else preprocess
    if mode is not None:  # images and patterns depend on it
        common["preprocess"] = mode
    stems = unique_stems(images)
    image_info = [{"index": i, "sha256": file_digest(im), "stem": stem, "name": im.name}
                  for i, (im, stem) in enumerate(zip(images, stems))]
    extra = {}
    if file_model is not None:
        extra = {"_file": True, "_cam_layer": _cam_layer(file_model) if arch.num_classes else None,
                 "_blocks": block_end_layers(file_model), "_channel_order": channel_order(file_model),
                 "_convs": [r.name for r in conv_rows(file_model, table)]}
    tasks = _tasks(arch, common, {**sizes, "_arch_step_size": dict(profile.pattern_step_size),
                                  "_fmap_min_side": profile.fmap_min_side,
                                  "_deepvis": dict(profile.deepvis), **extra}, image_info, table)

    path = confine(out, MANIFEST)
    old = _load_manifest(path)
    manifest = {
        "format": FORMAT, "arch": arch.name, "weights": common["weights"], "profile": profile.name,
        "weights_description": (f"the weights {arch.name} holds ({given.source})" if given is not None
                                else _weights_description(arch, weights, profile,
                                                          model_arch if file_model is not None else None)),
        "image": str(image),
        "images": [str(i) for i in images],
        "parameters": _jsonable(sizes), "versions": _versions(),
        "tasks": {t.name: old["tasks"][t.name] for t in tasks
                  if t.name in old.get("tasks", {}) and _is_done(t, old["tasks"][t.name], out)},
    }
    todo = [t for t in tasks if t.name not in manifest["tasks"]]
    ctx = Context(arch, weights, images, out, progress, file_model, preprocess)
    if todo:
        _ = ctx.model  # the weights first: a missing file stops the run before anything is written
    out.mkdir(parents=True, exist_ok=True)
    run = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ran": [],
           "skipped": [t.name for t in tasks if t not in todo], "interrupted": False}
    manifest["last_run"] = run
    t_start = time.perf_counter()

    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="figures", unit="task", disable=not progress)
    try:
        for task in todo:
            bar.set_postfix_str(task.name)
            t0 = time.perf_counter()
            task.run(ctx, task)
            missing = [f for f in task.files if not (out / f).is_file()]
            if missing:  # a task must write exactly its files; never record one that did not
                raise RuntimeError(f"figure task {task.name} did not write {', '.join(missing)}")
            manifest["tasks"][task.name] = {
                "files": task.files, "params": _jsonable(task.params),
                "seconds": round(time.perf_counter() - t0, 3),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            run["ran"].append(task.name)
            write_bytes(path, json.dumps(manifest, indent=2) + "\n")
            remove_tree(out, PARTIAL, task.name)  # resume state no longer needed
            bar.update(1)
    except BaseException:
        run["interrupted"] = True
        raise
    finally:
        bar.close()
        run["seconds"] = round(time.perf_counter() - t_start, 3)
        run["load_seconds"] = round(ctx.load_seconds, 3)
        if todo:
            run["device"] = _device()
        manifest["total_seconds"] = round(sum(r["seconds"] for r in manifest["tasks"].values()), 3)
        write_bytes(path, json.dumps(manifest, indent=2) + "\n")
        _write_index(out, manifest, tasks)
        try:
            confine(out, PARTIAL).rmdir()  # only when empty: unfinished pattern tasks keep their filters
        except OSError:
            pass
    return manifest
