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

DeepVis classes on models with fewer classes than asked for (``vgg_tiny``: 10): a class ``c >= num_classes``
is replaced by ``c % num_classes`` (130, 736, 779 → 0, 6, 9 on a 10-class model), repeats dropped; the
manifest records the classes actually used.

The demo networks (``vgg_demo``, ``vgg_demo_gap``) get defaults of their own (:func:`arch_defaults`): their
bundled scene (:func:`jaxviz.demo.demo_image_path`, a star) instead of the cat, all ten classes in the DeepVis
panel, titled with the scene class names, DeepVis's :data:`~jaxviz.visualize.deepvis.DEMO_DEFAULTS`, a
larger step for the book's pattern ascent (see :data:`DEMO_PATTERN_STEP_SIZE`) and Grad-CAM of the logit.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .atomic import confine, file_digest, file_stems, remove_tree, write_bytes
from .profile import DEMO_PATTERN_STEP_SIZE, IMAGENET_DEEPVIS_CLASSES
from .version import __version__

MANIFEST = "manifest.json"
INDEX = "index.html"
PARTIAL = ".partial"  # per-filter progress of unfinished pattern tasks
FORMAT = 1

#: Parameters of ``--quick``: the same figures, small enough for a few minutes on a laptop CPU.
QUICK = dict(pattern_filters=16, single_size=64, deepvis_steps=100)

def arch_defaults(arch) -> dict:
    """Defaults that depend on the architecture: ``image`` (the photo), ``deepvis_classes``, per pattern
    method ``pattern_step_size``, ``gradcam_score``, ``single_method`` (the single large pattern's method)
    and ``fmap_min_side`` (feature maps smaller than this are enlarged).

    ImageNet VGGs (and any other model): the cat, 130/736/779, each method's own step, the book's Grad-CAM
    of the probability, the book's single pattern, maps enlarged to at least 32 px. The demo networks:
    their star scene, all their classes, :data:`DEMO_PATTERN_STEP_SIZE`, and Grad-CAM of the logit (the
    paper's choice): the demo network is so sure of its scenes (p = 1.000) that the softmax is saturated,
    its gradient is ~0, and Grad-CAM of the probability highlights noise off the object instead of the
    object. Their single 150 px pattern is the regularised one: trained at 64 px, the net's filters give
    the book's plain ascent no structure at 150 px (it stays noise at any step size). Their 8–16 px deep
    feature maps are enlarged to 64 px.
    """
    from .visualize.deepvis import is_demo

    if is_demo(arch):
        from .demo import demo_image_path

        return {"image": demo_image_path(), "deepvis_classes": tuple(range(arch.num_classes)),
                "pattern_step_size": dict(DEMO_PATTERN_STEP_SIZE), "gradcam_score": "logit",
                "single_method": "regularised", "fmap_min_side": 64}
    from .images import sample_image_path

    return {"image": sample_image_path("chelsea"), "deepvis_classes": IMAGENET_DEEPVIS_CLASSES,
            "pattern_step_size": {}, "gradcam_score": "prob", "single_method": "keras", "fmap_min_side": 32}


def display_photo(photo, min_side: int = 256) -> np.ndarray:
    """A small photo (the demo's 64 px scenes) enlarged by an integer factor, nearest neighbour, to at least
    ``min_side`` px, so that overlays are drawn with a smooth heatmap over crisp pixels; larger photos as is."""
    photo = np.asarray(photo)
    k = -(-min_side // max(1, min(photo.shape[:2])))
    return photo.repeat(k, 0).repeat(k, 1) if k > 1 else photo


@dataclasses.dataclass
class _Task:
    name: str
    files: list[str]
    params: dict
    run: Callable[[_Context, _Task], None]
    caption: str = ""
    section: str = ""
    #: a caption per file where they differ (e.g. one per DeepVis class); ``caption`` for the others
    captions: dict = dataclasses.field(default_factory=dict)


class _Context:
    """Lazily loaded model, conv base and photo: nothing is loaded unless a task needs it."""

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
            from .images import load_image

            x = load_image(image, target_size=self.arch.input_hw, channels=self.arch.channels)[None]
            self._x[image] = np.asarray(self.model.preprocess_input(x))
        return self._x[image]

    @functools.cached_property
    def model(self):
        if self.file_model is not None:
            return self.file_model
        from .model import load

        t = time.perf_counter()
        m = load(self.arch.name, self.weights, include_top=True, preprocess=self.preprocess)
        self.load_seconds += time.perf_counter() - t
        return m

    @functools.cached_property
    def conv_base(self):
        """The model without its classifier, sharing the weights (takes inputs of any size); a model file's
        own graph (its truncated passes compute nothing of the head)."""
        from .model import Model

        m = self.model
        if self.file_model is not None:
            return m
        params = {k: v for k, v in m.params.items() if k in m.conv_layer_names}
        return Model(m.arch, params, include_top=False, source=m.source, preprocess=m.preprocess)

    @functools.cached_property
    def photo_full(self) -> np.ndarray:
        from .images import load_image

        return load_image(self.image, target_size=None)



def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _versions() -> dict:
    from importlib import metadata

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
    import jax

    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', '')}"


def deepvis_classes(classes: Sequence[int], num_classes: int) -> list[int]:
    """Classes valid for a model with ``num_classes`` outputs: ``c % num_classes``, repeats dropped."""
    out: list[int] = []
    for c in classes:
        c = int(c) % num_classes
        if c not in out:
            out.append(c)
    return out


def _as_uint8_images(images, method: str = "keras", preprocess: str = "caffe") -> np.ndarray:
    """Model-space pattern images → uint8 RGB as ``method``'s reference shows them
    (:func:`jaxviz.visualize.patterns.display_images`): "keras" with the book's contrast stretch (listing
    5.37), "regularised" as its sigmoid image, like lucid/Lucent."""
    a = np.asarray(images)
    if a.dtype == np.uint8:
        return a
    from .visualize.patterns import display_images

    return display_images(a, method, preprocess, bgr_to_rgb=preprocess == "caffe")


# --- the tasks -----------------------------------------------------------------------------------------------


def _run_summary(ctx: _Context, task: _Task) -> None:
    from .model import format_summary

    if ctx.file_model is not None:
        write_bytes(confine(ctx.out, task.files[0]), ctx.file_model.summary(print_fn=lambda text: None) + "\n")
        return
    write_bytes(confine(ctx.out, task.files[0]), format_summary(ctx.arch, include_top=True) + "\n")
    write_bytes(confine(ctx.out, task.files[1]), format_summary(ctx.arch, include_top=False) + "\n")


def _run_kernels(ctx: _Context, task: _Task) -> None:
    from .plotting import save_figure

    for fig, name in zip(kernel_figures(ctx.conv_base, task.params["layer"], task.params["filters"]), task.files):
        save_figure(fig, confine(ctx.out, name))


def kernel_figures(model, layer: str, filters: int = 64, channels: int = 8) -> list:
    """A conv layer's kernels as labelled figures: a cell per filter (the kh×kw slices of its first
    ``channels`` input channels side by side, one gray scale for the whole layer) and, for a first layer on
    colour images, a second figure with each filter as a colour patch, in the channel order of the model's
    preprocessing (:func:`jaxviz.visualize.kernels.channel_order`: BGR for Caffe's, else RGB). Returns
    matplotlib figures."""
    from .plotting import labelled_grid
    from .visualize.kernels import channel_order, kernels

    k = kernels(model, layer)  # [kh, kw, C_in, C_out] in [0, 1] over the layer
    kh, kw, c_all, c_out = k.shape
    nf = min(filters, c_out)
    c_in = min(channels, c_all)
    order = channel_order(model)
    image_channels = c_all == getattr(model.arch, "channels", 3) and c_all in (1, 3)  # a first layer
    chans = order if image_channels else f"{c_in} of {c_all}"
    cells = []
    for f in range(nf):
        parts = []
        for c in range(c_in):
            parts += [k[:, :, c, f], np.full((kh, 1), np.nan)]
        cells.append(np.concatenate(parts[:-1], axis=1))
    title = (f"{layer} kernels of {model.arch.name}: filters 0–{nf - 1} of {c_out}, each {kh}×{kw} per input "
             f"channel ({chans}, left to right)")
    cols = 8 if c_in <= 3 else max(2, 24 // c_in)  # about 1000–1600 px wide whatever the channel count
    figs = [labelled_grid(cells, [str(f) for f in range(nf)], title, cols=cols, cell=1.0 + 0.35 * c_in,
                          cmap="gray", vmax=1.0,
                          colorbar="weight, one scale for the layer (0 = its most negative, 1 = its most positive)")]
    if image_channels and c_all == 3:
        rgb = k[:, :, ::-1] if order == "B, G, R" else k  # input channels drawn as R, G, B whatever their order
        patches = np.clip(np.rint(np.transpose(rgb[..., :nf], (3, 0, 1, 2)) * 255), 0, 255)
        names = "blue, green, red" if order == "B, G, R" else "red, green, blue"
        figs.append(labelled_grid(list(patches.astype(np.uint8)), [str(f) for f in range(nf)],
                                  f"{layer} kernels of {model.arch.name} as colour patches: filter f's {kh}×{kw} "
                                  f"weights on the\n{order} inputs drawn as {names} (one scale for the layer)",
                                  cols=8, cell=1.0))
    return figs


def _run_feature_maps(ctx: _Context, task: _Task) -> None:
    """Feature maps as labelled figures: channel index and maximum over each map, each map drawn from 0
    (the ReLU's floor) to its own maximum, with the colour bar saying so."""
    from .plotting import feature_map_figure, save_figure

    p = task.params
    image = ctx.images[p.get("image_index", 0)]
    x = ctx.x_of(image)
    feats = {k: np.asarray(v)[0] for k, v in ctx.conv_base.features(x, p["layers"]).items()}
    for layer, name in zip(p["layers"], task.files):
        a = feats[layer]
        n, total = min(p["count"], a.shape[-1]), a.shape[-1]
        title = (f"{layer} of {ctx.arch.name}: feature maps 0–{n - 1} of {total} for {Path(image).name} "
                 f"({a.shape[0]}×{a.shape[1]} px)")
        save_figure(feature_map_figure(a, title, count=n), confine(ctx.out, name))


def _partial_store(ctx: _Context, task: _Task):
    """Per-filter resume state of a pattern task: ``.partial/<task>/`` (removed when the task is done)."""
    from .errors import JaxvizError
    from .parallel import ItemStore

    folder = confine(ctx.out, PARTIAL, task.name)
    try:
        return ItemStore(folder, settings=task.params, prefix="filter_")
    except JaxvizError:  # left by a run with other parameters: start over
        ItemStore(folder, prefix="filter_").clear()
        return ItemStore(folder, settings=task.params, prefix="filter_")


def _patterns(ctx: _Context, task: _Task, filters: list[int]) -> np.ndarray:
    from .visualize.patterns import filter_patterns

    p = task.params
    store = _partial_store(ctx, task)
    imgs = filter_patterns(ctx.conv_base, p["layer"], filters=filters, size=p["size"], steps=p["steps"],
                           step_size=p["step_size"], seed=p["seed"], method=p["method"], progress=ctx.progress,
                           store=store)
    return _as_uint8_images(imgs, p["method"], getattr(ctx.model, "preprocess", "caffe"))


def _run_patterns(ctx: _Context, task: _Task) -> None:
    from .images import save_png
    from .plotting import labelled_grid, save_figure

    p = task.params
    imgs = _patterns(ctx, task, list(range(p["filters"])))
    if len(imgs) == 1:
        save_png(confine(ctx.out, task.files[0]), imgs[0])
        return
    title = (f"{p['layer']} of {ctx.arch.name}: filter patterns 0–{len(imgs) - 1} ({p['method']} ascent, "
             f"{p['size']} px, {p['steps']} steps)")
    rows = -(-len(imgs) // 8)
    note = (f"filter i + {rows}j at row i, column j (the book's column order)" if p["order"] == "columns"
            and len(imgs) > 8 else None)
    fig = labelled_grid(list(imgs), [str(f) for f in range(len(imgs))], title, cols=min(8, len(imgs)),
                        order=p["order"], cell=1.2, note=note)
    save_figure(fig, confine(ctx.out, task.files[0]))


def _run_deepvis(ctx: _Context, task: _Task) -> None:
    from .images import save_png
    from .plotting import save_figure
    from .render import deepvis_panel
    from .visualize.deepvis import class_patterns, flat_warning

    p = task.params
    opts = {k: p[k] for k in DEEPVIS_OPTIONS}
    imgs = class_patterns(ctx.model, p["classes"], size=p["size"], seed=p["seed"], progress=ctx.progress, **opts)
    note = flat_warning(p["classes"], imgs)
    if note:
        print(f"jaxviz: warning: {note}", file=sys.stderr)
    for img, name in zip(imgs, task.files[1:]):
        save_png(confine(ctx.out, name), img)
    save_figure(deepvis_panel(ctx.model, imgs, p["classes"]), confine(ctx.out, task.files[0]))


#: DeepVis options recorded with the task (resolved per architecture by
#: :func:`jaxviz.visualize.deepvis.defaults_for`; ``deepvis_steps`` overrides the steps).
DEEPVIS_OPTIONS = ("steps", "step_size", "l2_decay", "blur_every", "blur_sigma", "jitter", "init_std")


def _run_gradcam(ctx: _Context, task: _Task) -> None:
    from .attribution.gradcam import gradcam_result
    from .images import load_image, overlay, save_png
    from .plotting import save_figure
    from .render import gradcam_heatmap, gradcam_panel

    p = task.params
    image = ctx.images[p.get("image_index", 0)]
    x = ctx.x_of(image)
    res = gradcam_result(ctx.model, x, layer=p["layer"], score=p["score"], top=p["top"])
    maps, classes, probs = (np.asarray(a)[0] for a in res)
    logits = np.asarray(ctx.model.features(x, "logits")["logits"])[0]
    save_png(confine(ctx.out, task.files[0]), gradcam_heatmap(maps[0], ctx.arch.input_hw))
    photo = display_photo(load_image(image, target_size=None))
    save_png(confine(ctx.out, task.files[1]), overlay(photo, maps[0]))
    fig = gradcam_panel(ctx.model, photo, maps, classes, probs, logits,
                        f"{Path(image).name}: Grad-CAM of the top {len(maps)} classes of {ctx.arch.name} at "
                        f"{p['layer']} ({p['score']})")
    save_figure(fig, confine(ctx.out, task.files[2]))


# --- building and running the task list ----------------------------------------------------------------------


def _steps(s: dict, method: str):
    if s["pattern_steps"] is not None:
        return s["pattern_steps"]
    from .visualize import patterns

    return patterns.DEFAULT_STEPS.get(method)


def _step_size(s: dict, method: str):
    if s["pattern_step_size"] is not None:
        return s["pattern_step_size"]
    if method in s.get("_arch_step_size", {}):
        return s["_arch_step_size"][method]
    from .visualize import patterns

    return patterns.DEFAULT_STEP_SIZE.get(method)


def _tasks(arch, common: dict, s: dict, images: Sequence[dict] = ({"index": 0, "sha256": None, "stem": ""},),
           table=None) -> list[_Task]:
    from .vgg import layer_table
    from .visualize.deepvis import defaults_for

    if table is None:
        table = layer_table(arch, include_top=False)
    convs = [r for r in table if r.kind == "Conv2D"]
    conv_names = [r.name for r in convs]
    channels = {r.name: r.output_shape[-1] for r in convs}
    depth = {r.name: r.output_shape[-1] for r in table}
    ends: dict[str, str] = {}
    for name in conv_names:
        ends[name.split("_", 1)[0]] = name
    first = conv_names[0]
    stem = file_stems([r.name for r in table])  # file names from layer names: a safe slug of each
    kh, kw = convs[0].kernel_shape[:2]
    order = s.get("_channel_order", "B, G, R")

    def task(name, files, params, run, caption, section, captions=None):
        return _Task(name, files, {**common, **params}, run, caption, section, captions or {})

    summaries = ["summary.txt"] if s.get("_file") else ["summary.txt", "summary_conv_base.txt"]
    tasks = [
        task("summary", summaries, {}, _run_summary,
             f"{arch.name}: layers, output shapes and parameters", "Model"),
        task("kernels", [f"kernels_{stem[first]}.png"]
             + ([f"kernels_{stem[first]}_rgb.png"] if convs[0].kernel_shape[2] == 3 else []),
             {"layer": first, "filters": s["kernel_filters"]}, _run_kernels,
             f"{first} kernels on one scale for the layer: each filter's {kh}×{kw} weights per input channel "
             f"({order}) side by side" + ("; and each filter as an RGB patch" if convs[0].kernel_shape[2] == 3
                                          else ""), "Kernels"),
    ]
    fm_layers = list(dict.fromkeys([first, *(s.get("_blocks") or ends.values())]))
    for im in images:  # only these tasks depend on the photo: a new photo reruns them, nothing else
        sfx = f"_{im['stem']}" if im["index"] else ""
        files = [f"fmaps{sfx}_{stem[n]}.png" for n in fm_layers]
        tasks.append(task(f"feature_maps{sfx}", files,
                          {"layers": fm_layers, "count": s["feature_maps"], "min_side": s["_fmap_min_side"],
                           "image_index": im["index"], "image_sha256": im["sha256"]},
                          _run_feature_maps, "feature maps", "Feature maps",
                          captions={f: f"{n}: {_how_many(s['feature_maps'], depth[n])} feature maps of "
                                       f"{im['name']}" for f, n in zip(files, fm_layers)}))
    for method in s["pattern_methods"]:
        for layer in s["pattern_layers"]:
            if layer not in channels:
                continue
            n = min(s["pattern_filters"], channels[layer])
            tasks.append(task(f"patterns_{method}_{stem[layer]}", [f"patterns_{method}_{stem[layer]}.png"],
                              {"layer": layer, "method": method, "filters": n, "size": s["pattern_size"],
                               "steps": _steps(s, method), "step_size": _step_size(s, method),
                               "seed": s["seed"], "order": s["pattern_order"]},
                              _run_patterns, f"{layer}: first {n} filter patterns ({method})",
                              f"Filter patterns ({method})"))
    if s["single_layer"] in channels and s["single_filter"] < channels[s["single_layer"]]:
        layer, f, size, m = s["single_layer"], s["single_filter"], s["single_size"], s["single_method"]
        tasks.append(task(f"pattern_{stem[layer]}_f{f}", [f"pattern_{stem[layer]}_f{f}_{size}.png"],
                          {"layer": layer, "method": m, "filters": 1, "size": size, "filter": f,
                           "steps": _steps(s, m), "step_size": _step_size(s, m), "seed": s["seed"]},
                          _run_single_pattern, f"{layer} filter {f} at {size} px ({m})", f"Filter patterns ({m})"))
    classes = deepvis_classes(s["deepvis_classes"], arch.num_classes)
    if classes:
        dv = {k: v for k, v in defaults_for(arch).items() if k in DEEPVIS_OPTIONS}
        if s["deepvis_steps"] is not None:
            dv["steps"] = s["deepvis_steps"]
        names = _class_names(arch)
        tasks.append(task("deepvis", ["deepvis.png"] + [f"deepvis_{c}.png" for c in classes],
                          {"classes": classes, "size": s["deepvis_size"] or arch.default_size or list(arch.input_hw),
                           **dv, "seed": s["seed"]},
                          _run_deepvis, f"all {len(classes)} classes by regularised gradient ascent on the logit "
                          "(Yosinski et al. 2015)", "Class visualisation",
                          captions={f"deepvis_{c}.png": f"class {c} ({names[c]}): the image that maximises its "
                                                        "logit" for c in classes}))
    k = min(s["gradcam_top"], arch.num_classes)
    layer = s["gradcam_layer"] or s.get("_cam_layer") or conv_names[-1]
    for im in images:
        sfx = f"_{im['stem']}" if im["index"] else ""
        files = [f"gradcam{sfx}_heatmap.png", f"gradcam{sfx}_overlay.png", f"gradcam{sfx}_top{k}.png"]
        tasks.append(task(f"gradcam{sfx}", files,
                          {"layer": layer, "score": s["gradcam_score"], "top": k, "image_index": im["index"],
                           "image_sha256": im["sha256"]}, _run_gradcam,
                          f"Grad-CAM at {layer}", "Grad-CAM",
                          captions={files[0]: f"Grad-CAM at {layer} of the top class of {im['name']} "
                                              f"({s['gradcam_score']}), at the layer's resolution",
                                    files[1]: f"that heatmap over {im['name']}",
                                    files[2]: f"Grad-CAM of the top {k} classes of {im['name']}, with rank, "
                                              "probability and logit"}))
    return tasks


def _class_names(arch) -> list[str]:
    if arch.class_names is not None:
        return list(arch.class_names)
    if arch.num_classes == 1000:
        from .imagenet import class_index

        return [n for _, n in class_index()]
    return [f"class_{i}" for i in range(arch.num_classes)]


def _run_single_pattern(ctx: _Context, task: _Task) -> None:
    from .images import save_png

    imgs = _patterns(ctx, task, [task.params["filter"]])
    save_png(confine(ctx.out, task.files[0]), imgs[0])


def _load_manifest(path: Path) -> dict:
    try:
        m = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return m if isinstance(m, dict) and m.get("format") == FORMAT else {}


def _is_done(task: _Task, record: dict | None, out: Path) -> bool:
    return (bool(record) and record.get("params") == _jsonable(task.params)
            and record.get("files") == task.files and all((out / f).is_file() for f in task.files))


def _demo_intro(arch: str, weights: str) -> list[str]:
    """A paragraph saying what a demo network is (nothing for other models)."""
    from .visualize.deepvis import is_demo

    if not is_demo(arch):
        return []
    from .demo import CLASS_NAMES

    which = "its shipped trained weights" if weights in ("imagenet", "demo") else "the weights named below"
    return [f"<p>{html.escape(arch)} is jaxviz's demo network: a narrow VGG for 64×64 images, here with {which}, "
            "trained on procedural scenes of one object over clutter in 10 classes: "
            f"{html.escape(', '.join(CLASS_NAMES))}. The photo is one such scene (a star); the figures show "
            "what the network looks at and what its filters and classes respond to.</p>"]


def unique_stems(paths) -> list[str]:
    """File stems, made unique (``cat``, ``cat_1``, …) so that outputs of same-named images do not collide."""
    stems, seen = [], {}
    for p in paths:
        stem = Path(p).stem
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        stems.append(stem if n == 0 else f"{stem}_{n}")
    return stems


def _weights_description(arch, weights, model_file=None) -> str:
    """What the weights are, in words: the demo networks' "imagenet" means their shipped weights, a model
    file's its own (or seeded random ones on its graph)."""
    from .visualize.deepvis import is_demo

    w = "random:0" if weights is None else str(weights)
    if model_file is not None:
        if w.startswith("random:"):
            return (f"random (He-initialised, seed {w.split(':', 1)[1]}) on the graph of {model_file}: untrained, "
                    "not the file's weights")
        return f"the weights stored in {model_file}"
    if is_demo(arch) and w in ("imagenet", "demo"):
        return f"the shipped trained demo weights (jaxviz/data/{arch.name}.npz)"
    if w == "imagenet":
        return "Keras's ImageNet weights"
    if w.startswith("random:"):
        return f"random (He-initialised, seed {w.split(':', 1)[1]}): untrained"
    return f"from {w}"


def _png_width(path: Path) -> int:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size[0]
    except (OSError, ValueError):
        return 0


def _write_index(out: Path, manifest: dict, tasks: list[_Task]) -> None:
    done = manifest.get("tasks", {})
    e = html.escape
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>jaxviz figures: {e(manifest['arch'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}figure{display:inline-block;"
        "margin:0 1em 1em 0;vertical-align:top;max-width:100%}img{max-width:100%;border:1px solid #ccc}"
        "img.px{image-rendering:pixelated;width:256px}figcaption{font-size:90%;max-width:560px}"
        "pre{background:#f4f4f4;padding:1em;overflow:auto;font-size:80%}</style></head><body>",
        f"<h1>What {e(manifest['arch'])} learned</h1>",
        *_demo_intro(manifest["arch"], manifest["weights"]),
        f"<p>Weights: {e(manifest.get('weights_description', str(manifest['weights'])))}; "
        f"{'photos' if len(manifest.get('images', [1])) > 1 else 'photo'}: "
        f"<code>{e(', '.join(str(i) for i in manifest.get('images', [manifest['image']])))}"
        f"</code>; jaxviz {e(str(manifest['versions'].get('jaxviz')))}, jax "
        f"{e(str(manifest['versions'].get('jax')))}. Parameters, timings and versions: "
        f'<a href="{MANIFEST}">{MANIFEST}</a>.</p>',
    ]
    for href, model in _atlases(out):
        parts.append(f'<p>Every unit of {e(model)}, its patterns and the images that excite it most: '
                     f'<a href="{e(href)}">the atlas</a>.</p>')
    section = None
    order = list(dict.fromkeys(t.section for t in tasks))  # one heading per section, in first-seen order
    for t in sorted(tasks, key=lambda t: order.index(t.section)):
        if t.section != section:
            section = t.section
            parts.append(f"<h2>{e(section)}</h2>")
        if t.name not in done:
            parts.append(f"<p><em>{e(t.name)}: not made yet (rerun the command to finish)</em></p>")
            continue
        for f in t.files:
            if f.endswith(".txt"):
                try:
                    text = (out / f).read_text("utf-8")
                except OSError:
                    text = ""
                parts.append(f'<h3><a href="{e(f)}">{e(f)}</a></h3><pre>{e(text)}</pre>')
            else:
                cap = t.captions.get(f, t.caption)
                small = ' class="px"' if _png_width(out / f) < 200 else ""  # enlarged, crisp pixels
                parts.append(f'<figure><a href="{e(f)}"><img{small} src="{e(f)}" alt="{e(cap)}"></a>'
                             f"<figcaption>{e(f)}: {e(cap)}</figcaption></figure>")
    parts.append("</body></html>")
    write_bytes(confine(out, INDEX), "\n".join(parts) + "\n")


def _how_many(count: int, total: int) -> str:
    return f"all {total}" if count >= total else f"the first {count} of {total}"


#: Largest atlas.json the figures' index reads to link an atlas (a whole VGG16 atlas's is a few MB).
_ATLAS_BYTES = 64 << 20


def _atlases(out: Path) -> list[tuple[str, str]]:
    """``(link, model name)`` of the atlases (:func:`jaxviz.atlas`) in the folders inside ``out`` and beside it,
    found by their ``atlas.json``, in sorted order."""
    found = []
    for folder, prefix in ((out, ""), (out.parent, "../")):
        try:
            subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and p != out)
        except OSError:
            continue
        for sub in subs:
            path = sub / "atlas.json"
            try:
                if not path.is_file() or path.stat().st_size > _ATLAS_BYTES or not (sub / "index.html").is_file():
                    continue
                model = json.loads(path.read_text("utf-8")).get("model")
            except (OSError, ValueError, AttributeError):
                continue
            found.append((f"{prefix}{quote(sub.name)}/index.html", str(model)))
    return found


def _pattern_convs(table) -> list[str]:
    """The conv layers whose filter patterns say something: spatial kernels (k > 1). A 1×1 conv (ResNet's
    projection shortcuts and bottlenecks) only mixes the channels of the layer before it."""
    convs = [r for r in table if r.kind == "Conv2D"]
    spatial = [r.name for r in convs if r.kernel_shape is not None and max(r.kernel_shape[:2]) > 1]
    return spatial or [r.name for r in convs]


DEFAULT_PATTERN_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
DEFAULT_SINGLE_LAYER = "block3_conv1"


def make_figures(model_arch: str = "vgg16", weights: str | None = "imagenet", image: str | os.PathLike | None = None,
                 out_dir: str | os.PathLike = "figures", *,
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
      model_arch: "vgg16", "vgg19", "vgg_tiny", any registered architecture (GAP heads included), or the path
        of the user's own model file (``.keras``, ``.h5``, converted ``.npz``): then the default pattern layers
        are a few of its conv layers, the single pattern one in the middle, Grad-CAM at its
        :attr:`~jaxviz.Model.cam_layer`, and images are prepared in its preprocessing mode.
      weights: as :func:`jaxviz.load` ("imagenet", a file, "random:SEED"; for a model file, "imagenet" means its
        own weights and "random:SEED" re-initialises its graph).
      image: the photo for feature maps and Grad-CAM; default the bundled cat (``sample_image_path()``), or
        for the demo networks their bundled star scene (``jaxviz.demo.demo_image_path()``).
      out_dir: output folder (created if missing).
      pattern_layers, pattern_methods: filter-pattern grids to draw (layers the model lacks are skipped;
        methods as :func:`jaxviz.visualize.patterns.filter_patterns`: "keras" = the book, "regularised").
      pattern_filters, pattern_size, pattern_steps, pattern_step_size: first N filters per layer, pixels,
        gradient steps and step size (the book: 64, 64 px, 40 steps of 1); steps and step size default to
        each method's own (see :mod:`jaxviz.visualize.patterns`; for the demo networks the "keras" step is
        :data:`DEMO_PATTERN_STEP_SIZE`). Patterns are shown in RGB (:func:`jaxviz.visualize.patterns.
        display_images`): "keras" ones with the book's contrast stretch (:func:`jaxviz.images.deprocess_image`),
        "regularised" ones as their sigmoid image, as lucid/Lucent show them.
      pattern_order: ``"columns"`` (default, the book's listing 5.39: filter ``i + 8·j`` at row ``i``,
        column ``j``) or ``"rows"`` (row-major); see :func:`jaxviz.plotting.image_grid`.
      single_layer, single_filter, single_size: the book's single pattern (block3_conv1, filter 0, 150 px).
      single_method: its method; default "keras" (the book), "regularised" for the demo networks.
      kernel_filters: first-layer filters shown.
      feature_maps: feature maps shown per layer (the first conv layer and each block's output, see
        :func:`jaxviz.visualize.activations.block_end_layers`): the first 64, or all of a layer with fewer; the
        caption says how many of how many.
      deepvis_classes: classes to visualise; default 130 flamingo, 736 pool table, 779 school bus
        (ImageNet), or every class of a demo network. Mapped to ``c % num_classes`` on smaller models.
      deepvis_size, deepvis_steps: DeepVis image side (default the model's input size) and steps; the
        steps and the other DeepVis options default to :func:`jaxviz.visualize.deepvis.defaults_for`.
      gradcam_top, gradcam_layer, gradcam_score: Grad-CAM panel size, layer (default the last conv) and score
        ("prob", the book; "logit", the paper and the default for the demo networks).
      seed: seed of every random start.
      progress: tqdm bar over the tasks.
      preprocess: the images' preprocessing mode (:mod:`jaxviz.preprocessing`); default the model's own.

    Returns:
      The manifest (also in ``out_dir/manifest.json``): parameters, versions, and per task its files,
      parameters, seconds and completion time; ``last_run`` lists the tasks run and skipped.

    Raises:
      KeyboardInterrupt: passed on after recording the tasks finished so far (rerun to resume).
    """
    from .model import _is_model_file
    from .vgg import get_arch

    file_model = None
    if _is_model_file(model_arch):  # the user's own model: a Keras file or a converted .npz
        from .model import load

        file_model = load(model_arch, weights, preprocess=preprocess)
        file_model.require_spatial("jaxviz figures")
        arch = file_model.arch
        table = file_model.layer_table((*arch.input_hw, arch.channels))
        convs = _pattern_convs(table)
        if tuple(pattern_layers) == DEFAULT_PATTERN_LAYERS:  # VGG's names: a few conv layers of this model
            step = max(1, len(convs) // 4)
            pattern_layers = list(dict.fromkeys(convs[::step][:4] + convs[-1:]))
        if single_layer == DEFAULT_SINGLE_LAYER and convs:
            single_layer = convs[len(convs) // 2]
    else:
        arch = get_arch(model_arch)
        table = None
    per_arch = arch_defaults(arch)
    if image is None:
        images = [Path(per_arch["image"])]
    elif isinstance(image, (list, tuple)):
        images = [Path(i) for i in dict.fromkeys(str(i) for i in image)]
    else:
        images = [Path(image)]
    if not images:
        from .errors import JaxvizError

        raise JaxvizError("no images given: pass an image path (or None for the bundled one)")
    image = images[0]
    if deepvis_classes is None:
        deepvis_classes = per_arch["deepvis_classes"]
    if gradcam_score is None:
        gradcam_score = per_arch["gradcam_score"]
    if single_method is None:
        single_method = per_arch["single_method"]
    from .plotting import GRID_ORDERS

    if pattern_order not in GRID_ORDERS:
        from .errors import JaxvizError

        raise JaxvizError(f"unknown pattern_order {pattern_order!r}; use one of: {', '.join(GRID_ORDERS)}")
    for im in images:
        if not im.is_file():
            from .errors import ImageError

            raise ImageError(f"image file not found: {str(im)!r}; check the path")
    from .vgg import layer_table

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
    common = {"arch": str(model_arch) if file_model is not None else arch.name, "weights": str(weights)}
    mode = file_model.preprocess if file_model is not None else preprocess
    if mode is not None:  # images and patterns depend on it
        common["preprocess"] = mode
    stems = unique_stems(images)
    image_info = [{"index": i, "sha256": file_digest(im), "stem": stem, "name": im.name}
                  for i, (im, stem) in enumerate(zip(images, stems))]
    extra = {}
    if file_model is not None:
        from .visualize.activations import block_end_layers
        from .visualize.kernels import channel_order

        extra = {"_file": True, "_cam_layer": file_model.cam_layer, "_blocks": block_end_layers(file_model),
                 "_channel_order": channel_order(file_model)}
    tasks = _tasks(arch, common, {**sizes, "_arch_step_size": per_arch["pattern_step_size"],
                                  "_fmap_min_side": per_arch["fmap_min_side"], **extra}, image_info, table)

    path = confine(out, MANIFEST)
    old = _load_manifest(path)
    manifest = {
        "format": FORMAT, "arch": arch.name, "weights": str(weights),
        "weights_description": _weights_description(arch, weights, model_arch if file_model is not None else None),
        "image": str(image),
        "images": [str(i) for i in images],
        "parameters": _jsonable(sizes), "versions": _versions(),
        "tasks": {t.name: old["tasks"][t.name] for t in tasks
                  if t.name in old.get("tasks", {}) and _is_done(t, old["tasks"][t.name], out)},
    }
    todo = [t for t in tasks if t.name not in manifest["tasks"]]
    ctx = _Context(arch, weights, images, out, progress, file_model, preprocess)
    if todo:
        _ = ctx.model  # the weights first: a missing file stops the run before anything is written
    out.mkdir(parents=True, exist_ok=True)
    run = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ran": [],
           "skipped": [t.name for t in tasks if t not in todo], "interrupted": False}
    manifest["last_run"] = run
    t_start = time.perf_counter()

    from tqdm.auto import tqdm

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
