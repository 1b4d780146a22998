"""Subcommands: summary, convert, weights, predict, activations, compare-keras."""

from __future__ import annotations

import json
import sys

from ..errors import JaxvizError
from .common import add_model_args, images_from_paths, model_from_args, output_dir


def register(sub) -> None:
    p = sub.add_parser("summary", help="print Keras's model table")
    p.add_argument("arch", help="vgg16 | vgg19 | vgg_demo | vgg_demo_gap")
    p.add_argument("--no-top", action="store_true", help="the model without its classifier")
    p.add_argument("--input-size", type=int, default=None, help="input side in pixels (no-top models)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("convert", help="convert a Keras HDF5 weight file to jaxviz's .npz")
    p.add_argument("src", help="Keras .h5 / .weights.h5 file")
    p.add_argument("--arch", required=True, help="vgg16 | vgg19")
    p.add_argument("-o", "--output", required=True, help="destination (the .npz suffix is added)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("weights", help="where the ImageNet weights are; download or verify them")
    p.add_argument("action", choices=("path", "download", "verify"))
    p.add_argument("arch", help="vgg16 | vgg19")
    p.add_argument("--no-top", action="store_true", help="the file without the classifier")
    p.add_argument("--force", action="store_true", help="download even if a verified file exists")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("predict", help="top-k ImageNet classes for images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_model_args(p)
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("activations", help="feature maps of layers for an image, as grids (one pass)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layer", action="append", default=[], help="layer name (repeatable)")
    p.add_argument("--blocks", action="store_true", help="the last conv layer of every block")
    p.add_argument("--count", type=int, default=64, help="feature maps per grid (default 64)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    add_model_args(p, top=False)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--npy", action="store_true", help="also save the raw arrays")
    p.set_defaults(func=cmd_activations)

    p = sub.add_parser("compare-keras", help="compare jaxviz with Keras on the same weights and image")
    add_model_args(p)
    p.add_argument("image", nargs="?", default=None, help="image (default: the bundled cat photo)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare_keras)


def cmd_summary(args) -> int:
    from ..model import format_summary

    shape = (args.input_size, args.input_size, 3) if args.input_size else None
    print(format_summary(args.arch, include_top=not args.no_top, input_shape=shape))
    return 0


def cmd_convert(args) -> int:
    from .. import weights

    dst = weights.convert(args.src, args.arch, args.output)
    print(dst)
    return 0


def cmd_weights(args) -> int:
    from .. import weights
    from ..vgg import get_arch

    arch = get_arch(args.arch)
    top = not args.no_top
    if args.action == "path":
        print(weights.resolve(arch, top, download=False))
    elif args.action == "download":
        print(weights.download(arch, top, force=args.force))
    else:
        path = weights.resolve(arch, top, download=False)
        print(f"{path}: md5 {weights.verify(path, arch, top)} OK")
    return 0


def cmd_predict(args) -> int:
    model = model_from_args(args, include_top=True)
    size = (model.arch.default_size, model.arch.default_size)
    probs = model.predict(images_from_paths(args.images, size))
    decoded = model.decode_predictions(probs, top=args.top)
    if args.json:
        print(json.dumps({path: [{"wnid": w, "name": n, "score": float(s)} for w, n, s in d]
                          for path, d in zip(args.images, decoded)}, indent=2))
        return 0
    for path, d in zip(args.images, decoded):
        print(path)
        for rank, (wnid, name, score) in enumerate(d, 1):
            print(f"  {rank}. {name:<28} {wnid:<10} {score:.4f}")
    return 0


def cmd_activations(args) -> int:
    from ..visualize.activations import block_end_layers, save_activation_grids

    model = model_from_args(args, include_top=False)
    layers = list(args.layer) + (block_end_layers(model) if args.blocks else [])
    if not layers:
        raise JaxvizError("name at least one layer with --layer (or use --blocks); valid layers: "
                          + ", ".join(model.layer_names[1:]))
    model.check_layers(layers)
    x = images_from_paths([args.image], (args.size, args.size))
    out = output_dir(args.output)
    for path in save_activation_grids(model, x, layers, out, count=args.count, npy=args.npy):
        print(path)
    return 0


def cmd_compare_keras(args) -> int:
    from ..images import sample_image_path
    from ..keras_compare import compare

    model = model_from_args(args, include_top=True)
    image = args.image or str(sample_image_path())
    size = (model.arch.default_size, model.arch.default_size)
    rows = compare(model, images_from_paths([image], size))
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

