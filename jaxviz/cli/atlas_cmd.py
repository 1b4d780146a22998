"""``jaxviz atlas``: a browsable static site of every unit of the chosen layers (:func:`jaxviz.atlas`)."""

from __future__ import annotations

import argparse

from ..atlas import IMAGE_FORMATS, atlas, image_files
from ..errors import printable
from . import common


def register(sub) -> None:
    p = sub.add_parser(
        "atlas", help="a static site of every unit: its patterns and the dataset images that excite it most",
        description="For each unit (channel) of the chosen layers: its regularised and book patterns, its top-K "
                    "images of the folder (receptive-field crops and marked thumbnails) and its statistics, as "
                    "HTML pages that open from the disk, with an atlas.json manifest. Resumable: rerun the same "
                    "command after an interruption.")
    common.add_model_args(p)
    p.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively)")
    p.add_argument("--layers", nargs="+", default=None, metavar="L",
                   help="layers to show (default: every conv layer)")
    p.add_argument("--units", default=None, metavar="SPEC",
                   help="START:STOP or a comma list of units of every layer, e.g. 0:16 (default: all; a STOP past "
                        "a layer's end stops at its last unit)")
    p.add_argument("--top", type=common.positive_int, default=9, metavar="K",
                   help="dataset images kept per unit (default: 9)")
    p.add_argument("--size", type=common.positive_int, default=64, help="pattern side in pixels (default: 64)")
    p.add_argument("--batch-size", type=common.positive_int, default=16, help="images per step (default: 16)")
    p.add_argument("--diversity", type=common.nonnegative_int, default=0, metavar="N",
                   help="also N >= 2 diverse patterns per unit (Olah et al. 2017's Gram-similarity penalty; "
                        "default: none)")
    p.add_argument("--image-format", choices=IMAGE_FORMATS, default="png",
                   help="the site's pictures: png (lossless, default) or webp (several times smaller)")
    p.add_argument("--host", type=_host, default=None, metavar="I/N",
                   help="make only host I's share of the units (every N-th chunk, I = 0..N-1) into a SITE folder "
                        "all N hosts see; the last host to finish writes the pages and the index (default: all)")
    p.add_argument("--quick", action="store_true", help="fewer ascent steps (10 book, 32 regularised)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-o", "--output", required=True, metavar="SITE", help="output folder")
    p.set_defaults(func=cmd_atlas)


def _host(text: str) -> tuple[int, int]:
    """``I/N`` as ``(I, N)`` with ``0 <= I < N``."""
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{printable(text)!r}: give I/N with 0 <= I < N (0/2 and 1/2 for two hosts)")
    return i, n


def cmd_atlas(args) -> int:
    image_files(args.images)  # a missing or empty folder is refused before the model loads
    model = common.model_from_args(args)
    layers = model.conv_layer_names if args.layers is None else model.check_layers(args.layers)
    units = None
    if args.units is not None:
        units = {n: common.parse_index_list(args.units, model.channels(n), "units", model.channels(n))
                 for n in layers}
    out = common.output_dir(args.output)
    with common.CompileNotice(model):
        manifest = atlas(model, args.images, layers, out, units, top=args.top, quick=args.quick,
                         progress=not args.no_progress, size=args.size, batch_size=args.batch_size,
                         diversity=args.diversity, image_format=args.image_format, host=args.host)
    run = manifest["run"]
    if run["pending"]:
        print(printable(f"{run['computed']} units made, {run['reused']} found done, {run['pending']} left to other "
                        f"hosts; the last host to finish (or a rerun without --host) writes {out / 'index.html'}"))
        return 0
    count = sum(len(layer["units"]) for layer in manifest["layers"])
    if run["up_to_date"]:
        print(printable(f"up to date: {out} already holds these {count} units; nothing written"))
        return 0
    print(printable(f"{count} units of {len(manifest['layers'])} layers over {manifest['image_count']} images -> "
                    f"{out / 'index.html'}"))
    return 0
