"""Subcommands: explain (attribution maps as images), evaluate (deletion/insertion, pointing game, sanity)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .. import runtime
from ..atomic import confine
from ..attribution.methods import ALIASES, METHODS, SIGNED, get_method, method_name
from ..errors import JaxvizError
from ..images import overlay, save_png
from ..metrics import deletion, insertion, model_randomisation, plot_sanity, pointing_game
from ..metrics.pointing import parse_box
from ..metrics.sanity import weighted_layers_top_down
from ..render import display_map, save_figure, titled_panel
from .common import (
    CompileNotice,
    add_images_arg,
    add_model_args,
    check_output_file,
    chunk_bar,
    collect_images,
    default_images,
    image_batches,
    model_from_args,
    nonnegative_float,
    nonnegative_int,
    output_dir,
    positive_int,
    progress_bar,
    save_json,
    save_npy,
    unique_stems,
)


def _method_help(what: str) -> str:
    aliases = ", ".join(f"{k} = {v}" for k, v in ALIASES.items())
    return (f"{what} (repeatable, or a comma list): {', '.join(METHODS)}, or all (every method); case and "
            f"-/_ do not matter; aliases: {aliases}")


def register(sub) -> None:
    p = sub.add_parser("explain", help="attribution maps for images: saliency, IG, Grad-CAM, occlusion, …")
    add_images_arg(p)
    p.add_argument("--method", action="append", default=[], metavar="M",
                   help=_method_help("attribution method") + "; 'all' also draws them side by side")
    p.add_argument("--target", type=nonnegative_int, default=None,
                   help="class index to explain (default: each image's top class; a single sigmoid unit is class 1, "
                        "its complement class 0, as Keras's labels)")
    add_model_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--npy", action="store_true", help="also save the raw maps as .npy")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("evaluate", help="score attribution maps: deletion/insertion AUC, pointing game, sanity")
    add_images_arg(p)
    p.add_argument("--method", action="append", default=[], metavar="M", help=_method_help("method"))
    p.add_argument("--target", type=nonnegative_int, default=None,
                   help="class index (default: each image's top class; a single sigmoid unit is class 1, its "
                        "complement class 0, as Keras's labels)")
    add_model_args(p)
    p.add_argument("--box", default=None, help="object box x0,y0,x1,y1 in model-input pixels, for the pointing game")
    p.add_argument("--tolerance", type=nonnegative_float, default=15.0,
                   help="pointing-game tolerance in pixels (default 15)")
    p.add_argument("--steps", type=positive_int, default=50, help="deletion/insertion steps (default 50)")
    p.add_argument("--sanity", choices=("quick", "full", "none"), default="quick",
                   help="model-randomisation check: quick = 3 cascade points, full = every layer")
    p.add_argument("--plot", default=None, metavar="DIR", help="save a sanity-check plot per method here")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)


def _methods(specs: list[str]) -> list[str]:
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
    if not names:
        raise JaxvizError(f"--method {specs[0]!r} names no method; valid methods: {', '.join(METHODS)} (or all)")
    return names


def _load(args):
    """The images (checked first), the model, and the image paths (the bundled sample if none)."""
    paths = collect_images(args.images)
    model = model_from_args(args, include_top=True)
    paths = default_images(paths, model)
    if args.target is not None:
        check_class(model, args.target, "--target")
    return model, paths


def check_class(model, c: int, option: str) -> int:
    """``c`` if the model has such a class, else one error line giving the valid range."""
    n = len(model.class_names)
    if not 0 <= c < n:
        raise JaxvizError(f"{option} {c} out of range: {model.arch.name} has {n} classes (0..{n - 1})")
    return c


def _class_label(model, c: int) -> str:
    name = model.class_names[c]
    return str(c) if name == f"class_{c}" else f"{c} {name}"  # an unnamed class is its number alone


def constant_map_note(m) -> str | None:
    """Why a map cannot be drawn meaningfully (non-finite values, or the same value everywhere), or None."""
    m = np.asarray(m)
    if not np.all(np.isfinite(m)):
        return f"has {int(np.size(m) - np.isfinite(m).sum())} non-finite values (NaN/inf)"
    if m.size and float(np.ptp(m)) == 0.0:
        return f"is constant ({float(m.flat[0]):g} everywhere): it ranks no pixel above another"
    return None


def _targets(model, x, target) -> list[int]:
    if target is not None:
        return [int(target)] * len(x)
    # the logits, not predict's output: a single sigmoid unit's [N, 1] has one column (see jaxviz.graph)
    return [int(c) for c in np.asarray(runtime.logits(model, x)).argmax(-1)]


def cmd_explain(args) -> int:
    names = _methods(args.method)
    model, paths = _load(args)
    out = output_dir(args.output)
    stems = dict(zip(paths, unique_stems(paths)))
    notices = {name: CompileNotice(model, f"{name} for {model.arch.name}") for name in names}
    show = not args.no_progress
    # one step per (image, method); the slow methods' chunks on a second bar
    with progress_bar(len(paths) * len(names), "explain", show, unit="map") as bar:
        for chunk, x in image_batches(paths, model.input_hw, batch=4, progress=False, model=model):
            targets = _targets(model, x, args.target)
            maps, seconds = {}, {}
            for name in names:
                bar.set_postfix_str(name)
                t0 = time.perf_counter()
                with notices[name], chunk_bar(f"  {name}", show):
                    maps[name] = np.asarray(get_method(name)(model, x, targets))
                seconds[name] = (time.perf_counter() - t0) / len(chunk)
                bar.update(len(chunk))
            for i, path in enumerate(chunk):
                _explain_one(model, path, stems[path], x[i], targets[i], names, {k: v[i] for k, v in maps.items()},
                             seconds, out, args.npy)
    return 0


def _explain_one(model, path, stem, x, target, names, maps, seconds, out, npy) -> None:
    label = _class_label(model, target)
    rgb = np.clip(np.asarray(model.undo_preprocess(x)), 0, 255)
    rgb = np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb  # a grayscale model's input, shown gray
    record = {"image": str(path), "arch": model.arch.name, "weights": model.source, "target": target,
              "class": label, "methods": {}}
    panels, titles = [rgb.astype(np.uint8)], [f"input (class {label})"]
    print(f"{path}: class {label}")
    for name in names:
        m = maps[name]
        note = constant_map_note(m)
        shown = overlay(rgb, display_map(np.nan_to_num(m), SIGNED[name]), alpha=0.5)
        png = save_png(confine(out, f"{stem}_{name}.png"), shown)
        entry = {"png": png.name, "seconds": round(seconds[name], 3)}
        if note:
            entry["note"] = f"map {note}"
            print(f"jaxviz: warning: the {name} map of {path} {note}; its image shows nothing", file=sys.stderr)
        if npy:
            entry["npy"] = save_npy(confine(out, f"{stem}_{name}.npy"), m).name
        record["methods"][name] = entry
        panels.append(shown)
        titles.append(name + ("\n(constant map: nothing to show)" if note else ""))
        print(f"  {name:<22} {seconds[name]:7.2f} s  {png}")
    if len(names) > 1:
        cols = min(len(panels), 4)
        panel = save_figure(titled_panel(panels, titles, cols=cols,
                                         suptitle=f"{Path(path).name} on {model.arch.name}: class {label}"),
                            confine(out, f"{stem}_panel.png"))
        record["panel"] = panel.name
        print(f"  {'panel':<22} {'':>9}  {panel}")
    save_json(confine(out, f"{stem}_explain.json"), record)


def _checkpoints(model, mode: str) -> list[str] | None:
    layers = weighted_layers_top_down(model)
    if mode == "full":
        return None
    convs = list(model.conv_layer_names)
    points = [layers[0], convs[-1], convs[0]]
    return list(dict.fromkeys(points))


def cmd_evaluate(args) -> int:
    names = _methods(args.method)
    box = parse_box(args.box) if args.box else None
    if args.json:
        check_output_file(args.json, "--json")  # before any work, not after it
    model, paths = _load(args)
    h, w = model.input_hw
    if box is not None and (box[2] > w or box[3] > h):
        raise JaxvizError(f"--box {args.box} reaches outside the {w}×{h} {'' if h == w else '(width × height) '}"
                          "model input; give x0,y0,x1,y1 within it")
    plot_dir = output_dir(args.plot, "--plot") if args.plot else None
    checkpoints = _checkpoints(model, args.sanity)
    stems = dict(zip(paths, unique_stems(paths)))
    notices = {name: CompileNotice(model, f"{name} for {model.arch.name}") for name in names}
    results = []
    for chunk, xs in image_batches(paths, (h, w), batch=1, progress=not args.no_progress, desc="evaluate", model=model):
        x = xs
        target = _targets(model, x, args.target)[0]
        rows = {}
        for name in names:
            fn = get_method(name)
            with notices[name]:
                m = np.asarray(fn(model, x, target))
            note = constant_map_note(m)
            if note and "non-finite" in note:
                raise JaxvizError(f"the {name} map of {chunk[0]} {note}; the metrics need finite maps")
            row = {
                "deletion_auc": float(deletion(model, x, m, target, steps=args.steps).auc[0]),
                "insertion_auc": float(insertion(model, x, m, target, steps=args.steps).auc[0]),
            }
            if note:
                row["note"] = f"map {note}"
                print(f"jaxviz: warning: the {name} map of {chunk[0]} {note}; its AUCs measure no ranking",
                      file=sys.stderr)
            if box is not None:
                row["pointing_hit"] = bool(pointing_game(m, [box], args.tolerance)[0])
            if args.sanity != "none":
                res = model_randomisation(model, x, name, target, checkpoints=checkpoints)
                row["sanity"] = {layer: {"spearman": float(res.spearman[i, 0]),
                                         "spearman_abs": float(res.spearman_abs[i, 0]),
                                         "ssim": float(res.ssim[i, 0])} for i, layer in enumerate(res.layers)}
                if plot_dir is not None:
                    row["sanity_plot"] = str(plot_sanity(res, plot_dir / f"{stems[chunk[0]]}_{name}_sanity.png"))
            rows[name] = row
        if len(paths) > 1:
            print(chunk[0])
        _print_table(rows, box is not None, args.sanity != "none", model, target)
        results.append({"image": str(chunk[0]), "target": target, "class": _class_label(model, target),
                        "methods": rows})
    if args.json:
        common = {"arch": model.arch.name, "weights": model.source, "steps": args.steps, "box": box}
        doc = {**common, **results[0]} if len(results) == 1 else {**common, "images": results}
        save_json(args.json, doc)
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
