"""Subcommands: patterns (:mod:`.patterns_cmd`), kernels, deepvis, gradcam, figures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .. import figures
from ..atomic import confine, file_stems
from ..attribution.gradcam import gradcam_report
from ..errors import JaxvizError, printable
from ..frontends.flax_factory import is_factory_spec
from ..images import load_image, save_png
from ..render import deepvis_panel, display_photo, gradcam_images, save_figure
from ..visualize.deepvis import DEFAULTS as DV
from ..visualize.deepvis import DEMO_DEFAULTS as DD
from ..visualize.deepvis import class_patterns, class_title, flat_warning
from ..visualize.kernels import save_kernel_figures
from .attribution import check_class
from .common import (
    CompileNotice,
    add_images_arg,
    add_model_args,
    collect_images,
    default_images,
    images_from_paths,
    model_from_args,
    nonnegative_float,
    nonnegative_int,
    output_dir,
    positive_float,
    positive_int,
    progress_bar,
    save_npy,
    unique_stems,
    weights_arg,
)
from .patterns_cmd import register_patterns


def register(sub) -> None:
    register_patterns(sub)

    p = sub.add_parser("kernels", help="a conv layer's kernels: a row per filter, a column per input channel; "
                                       "and the same labelled (kernels_<layer>_labelled.png)")
    p.add_argument("--layer", default="block1_conv1", help="conv layer (default: %(default)s)")
    p.add_argument("--filters", type=positive_int, default=64, help="first N filters (rows; default %(default)s)")
    p.add_argument("--channels", type=positive_int, default=64,
                   help="first M input channels (columns; default %(default)s)")
    p.add_argument("--scale", type=positive_int, default=8, help="pixels per weight (default %(default)s)")
    add_model_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--npy", action="store_true", help="also save the normalised kernel as .npy")
    p.set_defaults(func=cmd_kernels)

    def dflt(key: str) -> str:  # "default 100.0; vgg_demo: 3000.0"
        return f"default {DV[key]}; vgg_demo*: {DD[key]}"

    p = sub.add_parser("deepvis", help="images that maximise class scores (Yosinski et al. 2015)")
    p.add_argument("--class", dest="classes", type=nonnegative_int, action="append", required=True, metavar="N",
                   help="class index (repeatable), e.g. --class 130 --class 736 (vgg_demo: 0..9, see "
                        "jaxviz.demo.CLASS_NAMES)")
    p.add_argument("--size", type=positive_int, default=None,
                   help="image side (default: the model's input size; models with a flatten head, e.g. VGG16, "
                        "take only that size)")
    p.add_argument("--steps", type=positive_int, default=None, help=f"gradient steps ({dflt('steps')})")
    p.add_argument("--step-size", type=positive_float, default=None, help=dflt("step_size"))
    p.add_argument("--l2-decay", type=nonnegative_float, default=None, help=dflt("l2_decay"))
    p.add_argument("--blur-every", type=nonnegative_int, default=None, help=f"{dflt('blur_every')}; 0 = off")
    p.add_argument("--blur-sigma", type=nonnegative_float, default=None, help=dflt("blur_sigma"))
    p.add_argument("--jitter", type=nonnegative_int, default=None, help=f"max shift in pixels ({dflt('jitter')})")
    p.add_argument("--init-std", type=nonnegative_float, default=None, help=f"start noise ({dflt('init_std')})")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the random start images (default 0; the same seed gives the same images)")
    add_model_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--npy", action="store_true", help="also save the model-space images as .npy")
    p.set_defaults(func=cmd_deepvis)

    p = sub.add_parser("gradcam", help="Grad-CAM heatmaps, overlays and a top-K panel for images or folders")
    add_images_arg(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--class", dest="class_index", type=nonnegative_int, default=None, metavar="N",
                   help="class to explain (default: each image's top class)")
    g.add_argument("--top", type=positive_int, default=None, metavar="K",
                   help="panel of the top K classes (default 5)")
    p.add_argument("--layer", default=None, help="conv layer (default: the last one)")
    p.add_argument("--score", choices=("prob", "logit"), default=None,
                   help="differentiate the probability (the book; default) or the logit (the paper; default for "
                        "vgg_demo*, whose softmax is saturated on its scenes)")
    add_model_args(p)
    p.add_argument("-o", "--output", required=True,
                   help="output folder: IMAGE_heatmap.png, IMAGE_overlay.png and IMAGE_topK.png per image (explain "
                        "--method gradcam writes IMAGE_gradcam.png beside them)")
    p.add_argument("--npy", action="store_true", help="also save the heatmaps as .npy")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_gradcam)

    p = sub.add_parser("figures", help="regenerate the whole figure set (resumable) with an HTML gallery")
    add_model_args(p)
    p.add_argument("--image", nargs="+", default=None, metavar="IMAGE",
                   help="photos or folders for feature maps and Grad-CAM, a set of those figures each (default: "
                        "the bundled cat; for vgg_demo*, the bundled demo scene of a star); a new photo redoes "
                        "only these figures")
    p.add_argument("--quick", action="store_true", help="fewer filters and steps (a few minutes on a CPU)")
    p.add_argument("--pattern-order", choices=("columns", "rows"), default="columns",
                   help="pattern grids: columns = filter i+8j at row i, column j (the book's listing 5.39, "
                        "default); rows = row-major")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=cmd_figures)


def _progress(args) -> bool:
    return not getattr(args, "no_progress", False)


def cmd_kernels(args) -> int:
    model = model_from_args(args, include_top=False)
    model.check_layers(args.layer)
    out = output_dir(args.output)
    for path in save_kernel_figures(model, args.layer, out, filters=args.filters, channels=args.channels,
                                    scale=args.scale, npy=args.npy):
        print(path)
    for fig, suffix in zip(figures.kernel_figures(model, args.layer, args.filters, min(args.channels, 8)),
                           ("_labelled", "_rgb_labelled")):
        print(save_figure(fig, confine(out, f"kernels_{file_stems(model.layer_names)[args.layer]}{suffix}.png")))
    return 0


def cmd_deepvis(args) -> int:
    model = model_from_args(args, include_top=True)
    for c in args.classes:
        check_class(model, c, "--class")
    h, w = model.input_hw
    flatten = model.head == "flatten"
    if args.size is not None and (args.size, args.size) != (h, w) and flatten:
        hint = f"drop --size or use --size {h}" if h == w else "drop --size"
        raise JaxvizError(f"--size {args.size}: {model.arch.name}'s classifier (a flatten head) takes only {h}×{w} "
                          f"{'' if h == w else '(height × width) '}images; {hint}")
    if args.size is not None and args.size < model.arch.min_size:
        raise JaxvizError(f"--size {args.size} is too small for {model.arch.name}: use at least "
                          f"{model.arch.min_size}")
    out = output_dir(args.output)
    raw = class_patterns(model, args.classes, size=args.size, steps=args.steps, step_size=args.step_size,
                         l2_decay=args.l2_decay, blur_every=args.blur_every, blur_sigma=args.blur_sigma,
                         jitter=args.jitter, init_std=args.init_std, seed=args.seed, progress=True, raw=True)

    imgs = np.clip(np.rint(model.undo_preprocess(raw)), 0, 255).astype(np.uint8)
    warn_flat(args.classes, imgs)
    for c, img, r in zip(args.classes, imgs, raw):
        print(save_png(confine(out, f"deepvis_{c}.png"), img))
        if args.npy:
            print(save_npy(confine(out, f"deepvis_{c}.npy"), r))
    print(save_figure(deepvis_panel(model, imgs, args.classes), confine(out, "deepvis.png")))
    return 0


def warn_flat(classes, imgs) -> None:
    """One warning line on stderr for DeepVis images that stayed flat."""
    note = flat_warning(classes, imgs)
    if note:
        print(f"jaxviz: warning: {note}", file=sys.stderr)


def cmd_gradcam(args) -> int:
    paths = collect_images(args.images)
    model = model_from_args(args, include_top=True)
    paths = default_images(paths, model)
    if args.class_index is not None:
        check_class(model, args.class_index, "--class")
    score = args.score or model.profile.score
    layer = args.layer
    if layer is not None:
        (layer,) = model.check_layers(layer)
        if layer not in model.spatial_layer_names:
            raise JaxvizError(f"--layer {layer}: Grad-CAM needs a conv layer (a layer with a spatial map); valid: "
                              f"{', '.join(model.spatial_layer_names)}")
    k = min(args.top or 5, len(model.class_names))
    out = output_dir(args.output)
    stems = unique_stems(paths)
    shown = layer or model.cam_layer
    print(f"Grad-CAM of {model.arch.name} at layer {shown} ({'--layer' if layer else 'its last spatial map'}), "
          f"score: {score}")
    batch = 8
    notice = CompileNotice(model, f"Grad-CAM for {model.arch.name}")
    with progress_bar(len(paths), "gradcam", not args.no_progress) as bar:
        for start in range(0, len(paths), batch):
            chunk = paths[start: start + batch]
            photos = [display_photo(load_image(p, target_size=None)) for p in chunk]
            x = images_from_paths(chunk, model.input_hw, model)
            with notice:
                report = gradcam_report(model, x, top=k, target=args.class_index, layer=layer, score=score)
            for i, (path, stem, photo) in enumerate(zip(chunk, stems[start:], photos)):
                title = (f"{Path(path).name}: Grad-CAM of the top {k} classes at {shown} ({score}), "
                         f"{model.arch.name}")
                heatmap, overlay, panel = gradcam_images(model, photo, report, i, title)
                print(save_png(confine(out, f"{stem}_heatmap.png"), heatmap))
                print(save_png(confine(out, f"{stem}_overlay.png"), overlay))
                print(save_figure(panel, confine(out, f"{stem}_top{k}.png")))
                if args.npy:
                    print(save_npy(confine(out, f"{stem}_heatmap.npy"), np.asarray(report.heatmaps[i])))
                    print(save_npy(confine(out, f"{stem}_top{k}.npy"), np.asarray(report.maps[i])))
                c = int(report.heat_classes[i])
                name = class_title(model, c)
                named = f"class {c}" if name == f"class {c}" else f"class {c} ({name})"  # not "class 1 (class 1)"
                print(f"  {stem}: {named}, p = {float(report.probs[i, c]):.4f}, "
                      f"logit {float(report.logits[i, c]):.2f}")
            bar.update(len(chunk))
    return 0


def cmd_figures(args) -> int:
    images = collect_images(args.image) if args.image else None
    if is_factory_spec(args.arch):  # the user's Flax code: the model is made here, with its preprocessing
        arch, weights, preprocess = model_from_args(args), None, None
    else:
        arch, weights, preprocess = args.arch, weights_arg(args), args.preprocess
    out = output_dir(args.output)
    kwargs = dict(figures.QUICK) if args.quick else {}
    kwargs["pattern_order"] = args.pattern_order
    manifest = figures.make_figures(arch, weights, images, out, progress=_progress(args), preprocess=preprocess,
                                    **kwargs)
    run = manifest["last_run"]
    print(f"{printable(out / 'index.html')}: {len(run['ran'])} figure task(s) made, {len(run['skipped'])} already done "
          f"({run['seconds']:.1f} s)")
    return 0
