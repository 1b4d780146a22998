"""The figure set's task runners: each computes one task's figures and writes exactly its files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .. import model as model_lib
from ..atomic import confine, write_bytes
from ..attribution.gradcam import gradcam_report
from ..errors import JaxvizError
from ..images import load_image, save_png
from ..parallel import ItemStore
from ..render import (
    deepvis_panel,
    display_photo,
    draw_kernel_figures,
    feature_map_figure,
    gradcam_images,
    labelled_grid,
    save_figure,
)
from ..visualize.deepvis import class_patterns, flat_warning
from ..visualize.kernels import channel_order, kernels
from ..visualize.patterns import display_images, filter_patterns
from .context import PARTIAL, Context, Task

#: DeepVis options recorded with the task (resolved per architecture by
#: the model's profile (:attr:`jaxviz.Model.profile`); ``deepvis_steps`` overrides the steps).
DEEPVIS_OPTIONS = ("steps", "step_size", "l2_decay", "blur_every", "blur_sigma", "jitter", "init_std")


def _as_uint8_images(images, method: str = "keras", preprocess: str = "caffe") -> np.ndarray:
    """Model-space pattern images → uint8 RGB as ``method``'s reference shows them
    (:func:`jaxviz.visualize.patterns.display_images`): "keras" with the book's contrast stretch (listing
    5.37), "regularised" as its sigmoid image, like lucid/Lucent."""
    a = np.asarray(images)
    if a.dtype == np.uint8:
        return a
    return display_images(a, method, preprocess, bgr_to_rgb=preprocess == "caffe")


def run_summary(ctx: Context, task: Task) -> None:
    if ctx.file_model is not None:
        write_bytes(confine(ctx.out, task.files[0]), ctx.file_model.summary(print_fn=lambda text: None) + "\n")
        return
    write_bytes(confine(ctx.out, task.files[0]), model_lib.format_summary(ctx.arch, include_top=True) + "\n")
    write_bytes(confine(ctx.out, task.files[1]), model_lib.format_summary(ctx.arch, include_top=False) + "\n")


def run_kernels(ctx: Context, task: Task) -> None:
    for fig, name in zip(kernel_figures(ctx.conv_base, task.params["layer"], task.params["filters"]), task.files):
        save_figure(fig, confine(ctx.out, name))


def kernel_figures(model, layer: str, filters: int = 64, channels: int = 8) -> list:
    """A conv layer's kernels as labelled figures (:func:`jaxviz.render.draw_kernel_figures`): a cell per
    filter (the kh×kw slices of its first ``channels`` input channels side by side, one gray scale for the
    whole layer) and, for a first layer on colour images, each filter as a colour patch in the channel order
    of the model's preprocessing (:func:`jaxviz.visualize.kernels.channel_order`: BGR for Caffe's, else RGB).
    Returns matplotlib figures."""
    return draw_kernel_figures(kernels(model, layer), layer, model.arch.name, channel_order(model),
                               model.input_channels, filters, channels)


def run_feature_maps(ctx: Context, task: Task) -> None:
    """Feature maps as labelled figures: channel index and maximum over each map, each map drawn from 0
    (the ReLU's floor) to its own maximum, with the colour bar saying so."""
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


def _partial_store(ctx: Context, task: Task):
    """Per-filter resume state of a pattern task: ``.partial/<task>/`` (removed when the task is done)."""
    folder = confine(ctx.out, PARTIAL, task.name)
    try:
        return ItemStore(folder, settings=task.params, prefix="filter_")
    except JaxvizError:  # left by a run with other parameters: start over
        ItemStore(folder, prefix="filter_").clear()
        return ItemStore(folder, settings=task.params, prefix="filter_")


def _patterns(ctx: Context, task: Task, filters: list[int]) -> np.ndarray:
    p = task.params
    store = _partial_store(ctx, task)
    imgs = filter_patterns(ctx.conv_base, p["layer"], filters=filters, size=p["size"], steps=p["steps"],
                           step_size=p["step_size"], seed=p["seed"], method=p["method"], progress=ctx.progress,
                           store=store)
    return _as_uint8_images(imgs, p["method"], getattr(ctx.model, "preprocess", "caffe"))


def run_patterns(ctx: Context, task: Task) -> None:
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


def run_single_pattern(ctx: Context, task: Task) -> None:
    imgs = _patterns(ctx, task, [task.params["filter"]])
    save_png(confine(ctx.out, task.files[0]), imgs[0])


def run_deepvis(ctx: Context, task: Task) -> None:
    p = task.params
    opts = {k: p[k] for k in DEEPVIS_OPTIONS}
    imgs = class_patterns(ctx.model, p["classes"], size=p["size"], seed=p["seed"], progress=ctx.progress, **opts)
    note = flat_warning(p["classes"], imgs)
    if note:
        print(f"jaxviz: warning: {note}", file=sys.stderr)
    for img, name in zip(imgs, task.files[1:]):
        save_png(confine(ctx.out, name), img)
    save_figure(deepvis_panel(ctx.model, imgs, p["classes"]), confine(ctx.out, task.files[0]))


def run_gradcam(ctx: Context, task: Task) -> None:
    p = task.params
    image = ctx.images[p.get("image_index", 0)]
    report = gradcam_report(ctx.model, ctx.x_of(image), top=p["top"], layer=p["layer"], score=p["score"])
    photo = display_photo(load_image(image, target_size=None))
    heatmap, overlay, panel = gradcam_images(
        ctx.model, photo, report, 0, f"{Path(image).name}: Grad-CAM of the top {p['top']} classes of "
                                     f"{ctx.arch.name} at {p['layer']} ({p['score']})")
    save_png(confine(ctx.out, task.files[0]), heatmap)
    save_png(confine(ctx.out, task.files[1]), overlay)
    save_figure(panel, confine(ctx.out, task.files[2]))
