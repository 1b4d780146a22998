"""Subcommands: explain (attribution maps as images), evaluate (deletion/insertion, pointing game, sanity)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import JaxvizError
from .common import add_model_args, images_from_paths, model_from_args, output_dir, save_json, save_npy

#: Methods whose sign matters (negative = evidence against the class): shown as their positive part.
_SIGNED = ("integrated_gradients", "occlusion", "lime")


def register(sub) -> None:
    p = sub.add_parser("explain", help="attribution maps for an image: saliency, IG, Grad-CAM, occlusion, …")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--method", action="append", default=[], metavar="M",
                   help="attribution method (repeatable, or a comma list); 'all' = every method, side by side")
    p.add_argument("--target", type=int, default=None, help="class index to explain (default: the top class)")
    add_model_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--npy", action="store_true", help="also save the raw maps as .npy")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("evaluate", help="score attribution maps: deletion/insertion AUC, pointing game, sanity")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--method", action="append", default=[], metavar="M",
                   help="attribution method (repeatable, or a comma list); 'all' = every method")
    p.add_argument("--target", type=int, default=None, help="class index (default: the top class)")
    add_model_args(p)
    p.add_argument("--box", default=None, help="object box x0,y0,x1,y1 in model-input pixels, for the pointing game")
    p.add_argument("--tolerance", type=float, default=15.0, help="pointing-game tolerance in pixels (default 15)")
    p.add_argument("--steps", type=int, default=50, help="deletion/insertion steps (default 50)")
    p.add_argument("--sanity", choices=("quick", "full", "none"), default="quick",
                   help="model-randomisation check: quick = 3 cascade points, full = every layer")
    p.add_argument("--plot", default=None, metavar="DIR", help="save a sanity-check plot per method here")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=cmd_evaluate)


def _methods(specs: list[str]) -> list[str]:
    from ..attribution.methods import METHODS, method_name

    if not specs:
        raise JaxvizError(f"name a method with --method; valid methods: {', '.join(METHODS)} (or all)")
    names: list[str] = []
    for spec in specs:
        for item in spec.split(","):
            if not item.strip():
                continue
            for n in (list(METHODS) if item.strip().lower() == "all" else [method_name(item)]):
                if n not in names:
                    names.append(n)
    return names


def _load(args):
    model = model_from_args(args, include_top=True)
    s = model.arch.default_size
    x = images_from_paths([args.image], (s, s))
    return model, x


def _class_label(model, c: int) -> str:
    return f"{c} {model.class_names[c]}"


def display_map(m, method: str) -> np.ndarray:
    """A map ``[H, W]`` → [0, 1] for display: its positive part (signed methods) or magnitude, scaled by
    the 99.5th percentile so that a few extreme pixels do not wash the rest out."""
    m = np.asarray(m, np.float64)
    m = np.maximum(m, 0) if method in _SIGNED else np.abs(m)
    top = np.percentile(m, 99.5)
    if top <= 0:
        top = m.max()
    return np.clip(m / top, 0, 1) if top > 0 else np.zeros_like(m)


def cmd_explain(args) -> int:
    from ..attribution.methods import get_method
    from ..images import overlay, save_png, undo_preprocess
    from ..plotting import save_figure, titled_panel

    names = _methods(args.method)
    out = output_dir(args.output)
    model, x = _load(args)
    target = args.target if args.target is not None else int(model.predict(x).argmax(-1)[0])
    label = _class_label(model, target)
    rgb = np.clip(np.asarray(undo_preprocess(x[0])), 0, 255)
    stem = Path(args.image).stem
    record = {"image": str(args.image), "arch": model.arch.name, "weights": model.source, "target": target,
              "class": label, "methods": {}}
    panels, titles = [rgb.astype(np.uint8)], [f"input (class {label})"]
    for name in names:
        t0 = time.perf_counter()
        m = np.asarray(get_method(name)(model, x, target))[0]
        seconds = time.perf_counter() - t0
        shown = overlay(rgb, display_map(m, name), alpha=0.5)
        png = save_png(out / f"{stem}_{name}.png", shown)
        entry = {"png": png.name, "seconds": round(seconds, 3)}
        if args.npy:
            entry["npy"] = save_npy(out / f"{stem}_{name}.npy", m).name
        record["methods"][name] = entry
        panels.append(shown)
        titles.append(name)
        print(f"{name:<22} {seconds:7.2f} s  {png}")
    if len(names) > 1:
        cols = min(len(panels), 4)
        panel = save_figure(titled_panel(panels, titles, cols=cols, suptitle=f"{model.arch.name}: class {label}"),
                            out / f"{stem}_panel.png")
        record["panel"] = panel.name
        print(f"{'panel':<22} {'':>9}  {panel}")
    save_json(out / f"{stem}_explain.json", record)
    return 0


def _checkpoints(model, mode: str) -> list[str] | None:
    from ..metrics.sanity import weighted_layers_top_down

    layers = weighted_layers_top_down(model)
    if mode == "full":
        return None
    convs = list(model.conv_layer_names)
    points = [layers[0], convs[-1], convs[0]]
    return list(dict.fromkeys(points))


def cmd_evaluate(args) -> int:
    from ..attribution.methods import get_method
    from ..metrics import deletion, insertion, model_randomisation, plot_sanity, pointing_game
    from ..metrics.pointing import parse_box

    names = _methods(args.method)
    box = parse_box(args.box) if args.box else None
    if args.plot:
        plot_dir = output_dir(args.plot)
    model, x = _load(args)
    target = args.target if args.target is not None else int(model.predict(x).argmax(-1)[0])
    checkpoints = _checkpoints(model, args.sanity)
    rows = {}
    for name in names:
        fn = get_method(name)
        m = np.asarray(fn(model, x, target))
        row = {
            "deletion_auc": float(deletion(model, x, m, target, steps=args.steps).auc[0]),
            "insertion_auc": float(insertion(model, x, m, target, steps=args.steps).auc[0]),
        }
        if box is not None:
            row["pointing_hit"] = bool(pointing_game(m, [box], args.tolerance)[0])
        if args.sanity != "none":
            res = model_randomisation(model, x, name, target, checkpoints=checkpoints)
            row["sanity"] = {layer: {"spearman": float(res.spearman[i, 0]),
                                     "spearman_abs": float(res.spearman_abs[i, 0]),
                                     "ssim": float(res.ssim[i, 0])} for i, layer in enumerate(res.layers)}
            if args.plot:
                row["sanity_plot"] = str(plot_sanity(res, plot_dir / f"{Path(args.image).stem}_{name}_sanity.png"))
        rows[name] = row
    _print_table(rows, box is not None, args.sanity != "none", model, target)
    if args.json:
        save_json(args.json, {"image": str(args.image), "arch": model.arch.name, "weights": model.source,
                              "target": target, "steps": args.steps, "box": box, "methods": rows})
    return 0


def _print_table(rows: dict, pointing: bool, sanity: bool, model, target: int) -> None:
    print(f"{model.arch.name} ({model.source}), class {_class_label(model, target)}")
    layers = list(next(iter(rows.values())).get("sanity", {})) if sanity else []
    header = f"{'method':<22}{'deletion AUC↓':>15}{'insertion AUC↑':>16}"
    if pointing:
        header += f"{'pointing':>10}"
    if layers:
        header += "   sanity: Spearman |map| after randomising down to " + " / ".join(layers)
    print(header)
    for name, r in rows.items():
        line = f"{name:<22}{r['deletion_auc']:>15.4f}{r['insertion_auc']:>16.4f}"
        if pointing:
            line += f"{'hit' if r['pointing_hit'] else 'miss':>10}"
        if layers:
            line += "   " + " / ".join(_fmt(r["sanity"][lay]["spearman_abs"]) for lay in layers)
        print(line)


def _fmt(v: float) -> str:
    return "  nan " if v != v else f"{v:+.3f}"  # nan: a constant map has no ranking
