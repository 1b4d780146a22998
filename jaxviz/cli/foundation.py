"""Subcommands: summary, convert, weights, predict, activations, compare-keras."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .. import model as model_lib
from .. import weights
from ..atomic import confine, file_stems
from ..errors import JaxvizError, WeightsError, printable
from ..frontends import flax_export
from ..frontends.npz import write_model
from ..frontends.vgg import get_arch
from ..keras_compare import compare
from ..model import read_model_file
from ..render import feature_map_figure, save_figure
from ..visualize.activations import block_end_layers
from .common import (
    CompileNotice,
    add_images_arg,
    add_model_args,
    check_output_file,
    collect_images,
    default_images,
    image_batches,
    images_from_paths,
    model_from_args,
    output_dir,
    positive_int,
    save_npy,
    unique_stems,
)


def register(sub) -> None:
    p = sub.add_parser("summary", help="print Keras's model table")
    p.add_argument("arch", help="vgg16 | vgg19 | vgg_demo | vgg_demo_gap, or a model file (.keras, .h5, .npz)")
    p.add_argument("--no-top", action="store_true", help="the model without its classifier")
    p.add_argument("--input-size", type=positive_int, default=None, help="input side in pixels (no-top models)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("convert", help="convert a model or a VGG weight file to jaxviz's pickle-free .npz (graph + "
                                       "weights)")
    p.add_argument("src", help="a whole Keras model (.keras, or .h5 from model.save), or a VGG weight file "
                               "(.h5 / .weights.h5, with --arch)")
    p.add_argument("--arch", default=None,
                   help="for a weight file: its architecture, vgg16 | vgg19 | vgg_demo | vgg_demo_gap (the "
                        "architecture's graph is written with the weights); without it SRC must be a whole model")
    p.add_argument("-o", "--output", required=True, help="destination (the .npz suffix is added; with --to flax, "
                                                          "a .msgpack and a .json)")
    p.add_argument("--to", choices=("npz", "flax"), default="npz",
                   help="npz: jaxviz's format (default); flax: the linen variables as Flax checkpoints hold them "
                        "(.msgpack, flax.serialization) and the graph (.json), for jaxviz.frontends.flax_export")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("weights", help="where the ImageNet weights are; download or verify them")
    p.add_argument("action", choices=("path", "download", "verify"),
                   help="path: where the file is (or would be downloaded to); download; verify its checksum")
    p.add_argument("arch", help="vgg16 | vgg19")
    p.add_argument("--no-top", action="store_true", help="the file without the classifier")
    p.add_argument("--force", action="store_true", help="download even if a verified file exists")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("predict", help="top-k classes for images or folders (the model's: ImageNet's, vgg_demo*'s 10, "
                       "a file's; a sigmoid unit is class 1)")
    add_images_arg(p)
    add_model_args(p)
    p.add_argument("--top", type=positive_int, default=5,
                   help="classes listed per image (default %(default)s; more than the model has lists all)")
    p.add_argument("--json", action="store_true", help="print JSON (one entry per image) instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("activations", help="feature maps of layers for images, as grids (one pass per batch)")
    add_images_arg(p)
    p.add_argument("--layer", action="append", default=[], help="layer name (repeatable)")
    p.add_argument("--blocks", action="store_true", help="the last conv layer of every block")
    p.add_argument("--count", type=positive_int, default=64, help="feature maps per grid (default 64)")
    p.add_argument("--size", type=positive_int, default=None,
                   help="image side in pixels (default: the model's input size: 224 for VGG16/VGG19, 64 for "
                        "vgg_demo*)")
    add_model_args(p, top=False)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--npy", action="store_true", help="also save the raw arrays")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_activations)

    p = sub.add_parser("compare-keras", help="compare jaxviz with Keras on the same weights and image")
    add_model_args(p)
    p.add_argument("image", nargs="?", default=None,
                   help="image (default: the bundled cat photo; vgg_demo*: the bundled star scene)")
    p.add_argument("--json", action="store_true", help="print the per-layer differences as JSON")
    p.set_defaults(func=cmd_compare_keras)


def cmd_summary(args) -> int:
    if model_lib._is_model_file(args.arch):
        model = model_lib.load(args.arch)
        shape = (args.input_size, args.input_size, model.arch.channels) if args.input_size and model.input_hw else None
        model.summary(input_shape=shape)
        return 0
    shape = (args.input_size, args.input_size, 3) if args.input_size else None
    print(model_lib.format_summary(args.arch, include_top=not args.no_top, input_shape=shape))
    return 0


def cmd_convert(args) -> int:
    """Writes jaxviz's one converted format (graph JSON + params): of a whole model, or of a VGG weight file."""

    if args.to == "flax":
        model = model_lib.load(args.src) if args.arch is None else model_lib.load(args.arch, args.src)
        stem = args.output.removesuffix(".msgpack").removesuffix(".json")
        for suffix in (".msgpack", ".json"):
            check_output_file(stem + suffix, "-o")
        print(*flax_export.save_flax(model, stem), sep="\n")
        return 0
    out = args.output if args.output.endswith(".npz") else args.output + ".npz"
    check_output_file(out, "-o")
    if args.arch is None:
        graph, params, info = read_model_file(args.src)
        print(write_model(out, graph, params, info))
    else:
        print(weights.convert(args.src, args.arch, out))
    return 0


def cmd_weights(args) -> int:
    arch = get_arch(args.arch)
    top = not args.no_top
    if args.action == "path":
        try:
            print(weights.imagenet_file(arch, top, download=False))
        except WeightsError:  # absent: where `weights download` would put it
            dest = weights.cache_dir() / weights.known_file(arch, top).filename
            print(dest)
            print(f"jaxviz: {dest} is not there yet; `jaxviz weights download {arch.name}"
                  f"{' --no-top' if args.no_top else ''}` fetches it", file=sys.stderr)
    elif args.action == "download":
        print(weights.download(arch, top, force=args.force))
    else:
        path = weights.imagenet_file(arch, top, download=False)
        print(f"{path}: md5 {weights.verify(path, arch, top)} OK")
    return 0


def _padded(x, n: int):
    """``x`` padded to ``n`` images by repeating the last (one compiled program for every batch)."""
    return x if len(x) == n else np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)])


def _features(path: str, model) -> tuple[list[str], np.ndarray]:
    """``(names, x)``: the feature vectors ``x`` ``[N, F]`` in a ``.npy`` file (``[F]`` or ``[N, F]``) for a model
    on flat vectors, named ``path`` (one vector) or ``path[i]``."""
    f = model.arch.channels
    if not path.lower().endswith(".npy"):
        raise JaxvizError(f"{path}: {model.arch.name} takes feature vectors [{f}], not images; give .npy files "
                          f"of shape [{f}] or [N, {f}] (np.save)")
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise JaxvizError(f"cannot read {path} as a .npy array ({str(e).splitlines()[0]}); save it with np.save"
                          ) from None
    x = x[None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] != f or not np.issubdtype(x.dtype, np.number):
        raise JaxvizError(f"{path} holds an array of shape {x.shape} ({x.dtype}); {model.arch.name} takes "
                          f"numbers of shape [{f}] or [N, {f}]")
    return ([path] if len(x) == 1 else [f"{path}[{i}]" for i in range(len(x))]), x.astype(np.float32)


def cmd_predict(args) -> int:
    paths = collect_images(args.images)
    model = model_from_args(args, include_top=True)
    n_classes = len(model.class_names)
    top = min(args.top, n_classes)
    results = {}
    notice = CompileNotice(model)
    if model.input_hw is None:
        if not paths:
            raise JaxvizError(f"{model.arch.name} takes feature vectors, not images: give .npy files of shape "
                              f"[{model.arch.channels}] or [N, {model.arch.channels}]")
        batches, batch = [_features(path, model) for path in paths], None
    else:
        paths = default_images(paths, model)
        batch = min(16, len(paths))
        batches = image_batches(paths, model.input_hw, batch=batch, progress=not args.no_progress, desc="predict",
                                model=model)
    for chunk, x in batches:
        with notice:
            probs = (model.predict(x) if batch is None else
                     model.predict(_padded(x, batch), batch_size=batch)[: len(chunk)])
        for path, d in zip(chunk, model.decode_predictions(probs, top=top)):
            results[path] = d
    if args.json:
        print(json.dumps({path: [{"id": w, "name": n, "score": float(sc)} | ({"wnid": w} if w.startswith("n")
                                                                              else {}) for w, n, sc in d]
                          for path, d in results.items()}, indent=2))
        return 0
    print(printable(f"{model.arch.name} ({model.source}): top {top} of {n_classes} classes, probability"))
    for path, d in results.items():
        print(printable(path))
        for rank, (wnid, name, score) in enumerate(d, 1):
            print(printable(f"  {rank}. {name:<28} {wnid:<10} {score:.4f}"))
    return 0


def cmd_activations(args) -> int:
    paths = collect_images(args.images)
    model = model_from_args(args, include_top=False)
    layers = list(args.layer) + (block_end_layers(model) if args.blocks else [])
    if not layers:
        raise JaxvizError("name at least one layer with --layer (or use --blocks); valid layers: "
                          + ", ".join(model.layer_names[1:]))
    layers = list(dict.fromkeys(model.check_layers(layers)))
    paths = default_images(paths, model)
    size = (args.size, args.size) if args.size else model.input_hw
    if min(size) < model.min_side(layers):
        raise JaxvizError(f"--size {min(size)} is too small: {model.arch.name} up to {model.deepest(layers)} needs "
                          f"at least {model.min_side(layers)} px")
    out = output_dir(args.output)
    stems = dict(zip(paths, unique_stems(paths)))
    layer_stems = file_stems(model.layer_names)  # file names from layer names: a safe slug of each
    notice = CompileNotice(model)
    batches = image_batches(paths, size, batch=8, progress=not args.no_progress, desc="activations",
                            model=model)
    for chunk, x in batches:
        with notice:
            feats = {k: np.asarray(v) for k, v in model.features(x, layers).items()}
        for name, a in feats.items():
            if a.ndim != 4:
                raise JaxvizError(f"{name!r} has no spatial feature maps; choose a conv or pool layer")
        for i, path in enumerate(chunk):
            for name in layers:
                a = feats[name][i]
                n = min(args.count, a.shape[-1])
                title = (f"{name} of {model.arch.name}: feature maps 0–{n - 1} of {a.shape[-1]} for "
                         f"{Path(path).name} ({a.shape[0]}×{a.shape[1]} px)")
                stem = f"{stems[path]}_{layer_stems[name]}"
                print(printable(save_figure(feature_map_figure(a, title, count=n), confine(out, f"{stem}.png"))))
                if args.npy:
                    print(printable(save_npy(confine(out, f"{stem}.npy"), feats[name][i: i + 1])))
    return 0


def cmd_compare_keras(args) -> int:
    if args.image is not None:
        collect_images([args.image])
    model = model_from_args(args, include_top=True)
    image = args.image or str(model.profile.image)
    rows = compare(model, images_from_paths([image], model.input_hw, model))
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    print(f"jaxviz vs Keras ({model.arch.name}, {model.source}, {image}); full float32 precision")
    print(f"{'layer':<14}{'max|Δ|':>12}{'max|ref|':>12}{'max|Δ|/max|ref|':>18}")
    for r in rows:
        print(f"{r['layer']:<14}{r['max_abs_diff']:>12.3e}{r['max_abs_ref']:>12.3e}{r['rel']:>18.3e}")
    worst = max(r["rel"] for r in rows)
    verdict = "PASS" if worst <= 1e-4 else "FAIL"
    print(f"{verdict}: worst relative difference {worst:.2e} (tolerance 1e-4)")
    return 0 if worst <= 1e-4 else 1
