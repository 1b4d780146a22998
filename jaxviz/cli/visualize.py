"""Subcommands: kernels, deepvis, gradcam, figures (and patterns, when that module is present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import JaxvizError
from .common import add_model_args, model_from_args, output_dir, save_npy


def register(sub) -> None:
    try:
        from .patterns_cmd import register_patterns
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.patterns_cmd":
            raise  # patterns_cmd exists but something it imports is missing: say so
    else:
        register_patterns(sub)

    p = sub.add_parser("kernels", help="a conv layer's kernels: a row per filter, a column per input channel")
    p.add_argument("--layer", default="block1_conv1", help="conv layer (default: %(default)s)")
    p.add_argument("--filters", type=int, default=64, help="first N filters (rows; default %(default)s)")
    p.add_argument("--channels", type=int, default=64, help="first M input channels (columns; default %(default)s)")
    p.add_argument("--scale", type=int, default=8, help="pixels per weight (default %(default)s)")
    add_model_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--npy", action="store_true", help="also save the normalised kernel as .npy")
    p.set_defaults(func=cmd_kernels)

    from ..visualize.deepvis import DEFAULTS as DV
    from ..visualize.deepvis import DEMO_DEFAULTS as DD

    def dflt(key: str) -> str:  # "default 100.0; vgg_demo: 3000.0"
        return f"default {DV[key]}; vgg_demo*: {DD[key]}"

    p = sub.add_parser("deepvis", help="images that maximise class scores (Yosinski et al. 2015)")
    p.add_argument("--class", dest="classes", type=int, action="append", required=True, metavar="N",
                   help="class index (repeatable), e.g. --class 130 --class 736 (vgg_demo: 0..9, see "
                        "jaxviz.demo.CLASS_NAMES)")
    p.add_argument("--size", type=int, default=None, help="image side (default: the model's input size)")
    p.add_argument("--steps", type=int, default=None, help=f"gradient steps ({dflt('steps')})")
    p.add_argument("--step-size", type=float, default=None, help=dflt("step_size"))
    p.add_argument("--l2-decay", type=float, default=None, help=dflt("l2_decay"))
    p.add_argument("--blur-every", type=int, default=None, help=f"{dflt('blur_every')}; 0 = off")
    p.add_argument("--blur-sigma", type=float, default=None, help=dflt("blur_sigma"))
    p.add_argument("--jitter", type=int, default=None, help=f"max shift in pixels ({dflt('jitter')})")
    p.add_argument("--init-std", type=float, default=None, help=f"start noise ({dflt('init_std')})")
    p.add_argument("--seed", type=int, default=0)
    add_model_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--npy", action="store_true", help="also save the model-space images as .npy")
    p.set_defaults(func=cmd_deepvis)

    p = sub.add_parser("gradcam", help="Grad-CAM heatmaps, overlays and a top-K panel for images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--class", dest="class_index", type=int, default=None, metavar="N",
                   help="class to explain (default: each image's top class)")
    g.add_argument("--top", type=int, default=None, metavar="K", help="panel of the top K classes (default 5)")
    p.add_argument("--layer", default=None, help="conv layer (default: the last one)")
    p.add_argument("--score", choices=("prob", "logit"), default=None,
                   help="differentiate the probability (the book; default) or the logit (the paper; default for "
                        "vgg_demo*, whose softmax is saturated on its scenes)")
    add_model_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--npy", action="store_true", help="also save the heatmaps as .npy")
    p.set_defaults(func=cmd_gradcam)

    p = sub.add_parser("figures", help="regenerate the whole figure set (resumable) with an HTML gallery")
    add_model_args(p)
    p.add_argument("--image", default=None, help="photo for feature maps and Grad-CAM (default: the bundled cat; "
                                                 "for vgg_demo*, the bundled demo scene of a star)")
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
    from ..visualize.kernels import save_kernel_figures

    for n, what in ((args.filters, "--filters"), (args.channels, "--channels"), (args.scale, "--scale")):
        if n < 1:
            raise JaxvizError(f"{what} must be at least 1, got {n}")
    model = model_from_args(args, include_top=False)
    model.check_layers(args.layer)
    out = output_dir(args.output)
    for path in save_kernel_figures(model, args.layer, out, filters=args.filters, channels=args.channels,
                                    scale=args.scale, npy=args.npy):
        print(path)
    return 0


def cmd_deepvis(args) -> int:
    from ..images import save_png
    from ..plotting import save_figure, titled_panel
    from ..visualize.deepvis import class_patterns, class_title

    model = model_from_args(args, include_top=True)
    out = output_dir(args.output)
    raw = class_patterns(model, args.classes, size=args.size, steps=args.steps, step_size=args.step_size,
                         l2_decay=args.l2_decay, blur_every=args.blur_every, blur_sigma=args.blur_sigma,
                         jitter=args.jitter, init_std=args.init_std, seed=args.seed, progress=True, raw=True)
    from ..images import undo_preprocess

    imgs = np.clip(np.rint(undo_preprocess(raw)), 0, 255).astype(np.uint8)
    for c, img, r in zip(args.classes, imgs, raw):
        print(save_png(out / f"deepvis_{c}.png", img))
        if args.npy:
            print(save_npy(out / f"deepvis_{c}.npy", r))
    n = len(imgs)
    fig = titled_panel(list(imgs), [f"{class_title(model, c)} ({c})" for c in args.classes],
                       cols=n if n <= 5 else -(-n // 2), size=3.0 if n <= 5 else 2.0)
    print(save_figure(fig, out / "deepvis.png"))
    return 0


def cmd_gradcam(args) -> int:
    from ..attribution.gradcam import gradcam_result
    from ..figures import arch_defaults, display_photo
    from ..images import load_image, overlay, preprocess_input, save_png
    from ..plotting import colourise, save_figure, titled_panel
    from ..visualize.deepvis import class_title

    model = model_from_args(args, include_top=True)
    score = args.score or arch_defaults(model.arch)["gradcam_score"]
    layer = args.layer
    if layer is not None:
        model.check_layers(layer)
    s = model.arch.default_size
    k = min(args.top or 5, model.arch.num_classes)
    if args.top is not None and args.top < 1:
        raise JaxvizError(f"--top must be at least 1, got {args.top}")
    photos = [display_photo(load_image(p, target_size=None)) for p in args.images]
    x = preprocess_input(np.stack([load_image(p, target_size=(s, s)) for p in args.images]))
    out = output_dir(args.output)
    top = gradcam_result(model, x, layer=layer, score=score, top=k)
    top_maps, top_classes, probs = (np.asarray(a) for a in top)
    if args.class_index is not None:
        res = gradcam_result(model, x, target=args.class_index, layer=layer, score=score)
        maps, classes = np.asarray(res.maps)[:, 0], np.asarray(res.classes)[:, 0]
    else:
        maps, classes = top_maps[:, 0], top_classes[:, 0]
    layer = layer or model.last_conv_layer
    stems = _unique_stems(args.images)
    for i, (stem, photo) in enumerate(zip(stems, photos)):
        c = int(classes[i])
        heat = maps[i]
        scale = max(1, s // heat.shape[0])
        print(save_png(out / f"{stem}_gradcam.png", colourise(heat.repeat(scale, 0).repeat(scale, 1), "jet")))
        print(save_png(out / f"{stem}_overlay.png", overlay(photo, heat)))
        titles = [f"{class_title(model, int(cc))}\np = {probs[i, cc]:.3f}" for cc in top_classes[i]]
        fig = titled_panel([overlay(photo, m) for m in top_maps[i]], titles,
                           suptitle=f"{Path(args.images[i]).name}: Grad-CAM at {layer} ({score})")
        fig.tight_layout(rect=(0, 0, 1, 0.94))  # panel titles clear of the suptitle on square images
        print(save_figure(fig, out / f"{stem}_top{k}.png"))
        if args.npy:
            print(save_npy(out / f"{stem}_gradcam.npy", heat))
            print(save_npy(out / f"{stem}_top{k}.npy", top_maps[i]))
        print(f"  {stem}: class {c} ({class_title(model, c)}), p = {probs[i, c]:.4f}")
    return 0


def _unique_stems(paths) -> list[str]:
    stems, seen = [], {}
    for p in paths:
        stem = Path(p).stem
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        stems.append(stem if n == 0 else f"{stem}_{n}")
    return stems


def cmd_figures(args) -> int:
    from ..figures import QUICK, make_figures

    out = output_dir(args.output)
    kwargs = dict(QUICK) if args.quick else {}
    kwargs["pattern_order"] = args.pattern_order
    manifest = make_figures(args.arch, args.weights, args.image, out, progress=_progress(args), **kwargs)
    run = manifest["last_run"]
    print(f"{out / 'index.html'}: {len(run['ran'])} figure task(s) made, {len(run['skipped'])} already done "
          f"({run['seconds']:.1f} s)")
    return 0
