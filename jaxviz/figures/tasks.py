"""The figure set's plan: its tasks, each with the files it writes, its parameters and its runner."""

from __future__ import annotations

from collections.abc import Sequence

from .. import imagenet
from ..atomic import file_stems
from ..frontends.vgg import layer_table
from ..visualize import patterns
from . import runners
from .context import Task
from .runners import DEEPVIS_OPTIONS

DEFAULT_PATTERN_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
DEFAULT_SINGLE_LAYER = "block3_conv1"


def deepvis_classes(classes: Sequence[int], num_classes: int) -> list[int]:
    """Classes valid for a model with ``num_classes`` outputs: ``c % num_classes``, repeats dropped."""
    out: list[int] = []
    for c in classes:
        c = int(c) % num_classes
        if c not in out:
            out.append(c)
    return out


def _steps(s: dict, method: str):
    if s["pattern_steps"] is not None:
        return s["pattern_steps"]
    return patterns.DEFAULT_STEPS.get(method)


def _step_size(s: dict, method: str):
    if s["pattern_step_size"] is not None:
        return s["pattern_step_size"]
    if method in s.get("_arch_step_size", {}):
        return s["_arch_step_size"][method]
    return patterns.DEFAULT_STEP_SIZE.get(method)


def _tasks(arch, common: dict, s: dict, images: Sequence[dict] = ({"index": 0, "sha256": None, "stem": ""},),
           table=None) -> list[Task]:
    if table is None:
        table = layer_table(arch, include_top=False)
    convs = ([r for r in table if r.kind == "Conv2D"] if s.get("_convs") is None
             else [r for r in table if r.name in s["_convs"]])
    conv_names = [r.name for r in convs]
    channels = {r.name: r.output_shape[-1] for r in convs}
    depth = {r.name: r.output_shape[-1] for r in table}
    ends: dict[str, str] = {}
    for name in conv_names:
        ends[name.split("_", 1)[0]] = name
    stem = file_stems([r.name for r in table])  # file names from layer names: a safe slug of each
    order = s.get("_channel_order", "B, G, R")

    def task(name, files, params, run, caption, section, captions=None):
        return Task(name, files, {**common, **params}, run, caption, section, captions or {})

    summaries = ["summary.txt"] if s.get("_file") else ["summary.txt", "summary_conv_base.txt"]
    tasks = [task("summary", summaries, {}, runners.run_summary,
                  f"{arch.name}: layers, output shapes and parameters", "Model")]
    if convs:  # a model of other layers only (a Flax module without conv kernels) has no kernels to show
        first = conv_names[0]
        kh, kw = convs[0].kernel_shape[:2]
        rgb = convs[0].kernel_shape[2] == 3
        tasks.append(task("kernels", [f"kernels_{stem[first]}.png"] + ([f"kernels_{stem[first]}_rgb.png"] if rgb
                                                                         else []),
                          {"layer": first, "filters": s["kernel_filters"]}, runners.run_kernels,
                          f"{first} kernels on one scale for the layer: each filter's {kh}×{kw} weights per input "
                          f"channel ({order}) side by side" + ("; and each filter as an RGB patch" if rgb else ""),
                          "Kernels"))
    fm_layers = list(dict.fromkeys([*conv_names[:1], *(s.get("_blocks") or ends.values())]))
    for im in images if fm_layers else ():  # only these tasks depend on the photo: a new photo reruns them
        sfx = f"_{im['stem']}" if im["index"] else ""
        files = [f"fmaps{sfx}_{stem[n]}.png" for n in fm_layers]
        tasks.append(task(f"feature_maps{sfx}", files,
                          {"layers": fm_layers, "count": s["feature_maps"], "min_side": s["_fmap_min_side"],
                           "image_index": im["index"], "image_sha256": im["sha256"]},
                          runners.run_feature_maps, "feature maps", "Feature maps",
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
                              runners.run_patterns, f"{layer}: first {n} filter patterns ({method})",
                              f"Filter patterns ({method})"))
    if s["single_layer"] in channels and s["single_filter"] < channels[s["single_layer"]]:
        layer, f, size, m = s["single_layer"], s["single_filter"], s["single_size"], s["single_method"]
        tasks.append(task(f"pattern_{stem[layer]}_f{f}", [f"pattern_{stem[layer]}_f{f}_{size}.png"],
                          {"layer": layer, "method": m, "filters": 1, "size": size, "filter": f,
                           "steps": _steps(s, m), "step_size": _step_size(s, m), "seed": s["seed"]},
                          runners.run_single_pattern, f"{layer} filter {f} at {size} px ({m})",
                          f"Filter patterns ({m})"))
    classes = deepvis_classes(s["deepvis_classes"], arch.num_classes) if arch.num_classes else []
    if classes:
        dv = {k: v for k, v in s["_deepvis"].items() if k in DEEPVIS_OPTIONS}
        if s["deepvis_steps"] is not None:
            dv["steps"] = s["deepvis_steps"]
        names = _class_names(arch)
        tasks.append(task("deepvis", ["deepvis.png"] + [f"deepvis_{c}.png" for c in classes],
                          {"classes": classes, "size": s["deepvis_size"] or arch.default_size or list(arch.input_hw),
                           **dv, "seed": s["seed"]},
                          runners.run_deepvis, f"all {len(classes)} classes by regularised gradient ascent on the "
                          "logit (Yosinski et al. 2015)",
                          "Class visualisation",
                          captions={f"deepvis_{c}.png": f"class {c} ({names[c]}): the image that maximises its "
                                                        "logit" for c in classes}))
    k = min(s["gradcam_top"], arch.num_classes)
    layer = s["gradcam_layer"] or s.get("_cam_layer") or (conv_names[-1] if conv_names else None)
    # no classes (a module returning a map) or no spatial map: nothing for Grad-CAM to explain
    for im in images if k and layer is not None else ():
        sfx = f"_{im['stem']}" if im["index"] else ""
        files = [f"gradcam{sfx}_heatmap.png", f"gradcam{sfx}_overlay.png", f"gradcam{sfx}_top{k}.png"]
        tasks.append(task(f"gradcam{sfx}", files,
                          {"layer": layer, "score": s["gradcam_score"], "top": k, "image_index": im["index"],
                           "image_sha256": im["sha256"]}, runners.run_gradcam,
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
        return [n for _, n in imagenet.class_index()]
    return [f"class_{i}" for i in range(arch.num_classes)]


def _how_many(count: int, total: int) -> str:
    return f"all {total}" if count >= total else f"the first {count} of {total}"


def conv_rows(model, table) -> list:
    """The rows of ``table`` the figure set treats as conv layers: Keras's ``Conv2D`` layers, or for a Flax
    module its submodule calls whose own kernel is ``[kh, kw, in, out]`` with a spatial output
    (:attr:`jaxviz.frontends.flax.FlaxModel.conv_layer_names`)."""
    if model.source.startswith("flax"):
        names = set(model.conv_layer_names)
        return [r for r in table if r.name in names]
    return [r for r in table if r.kind == "Conv2D"]


def _pattern_convs(convs) -> list[str]:
    """The conv layers (rows) whose filter patterns say something: spatial kernels (k > 1). A 1×1 conv
    (ResNet's projection shortcuts and bottlenecks) only mixes the channels of the layer before it."""
    spatial = [r.name for r in convs if r.kernel_shape is not None and max(r.kernel_shape[:2]) > 1]
    return spatial or [r.name for r in convs]
