"""``jaxviz patterns``: the book's filter-pattern grids (listings 5.38–5.39), resumable.

Registered by :mod:`jaxviz.cli.visualize` through :func:`register_patterns`.

For every ``--layer`` it writes ``DIR/<layer>.png`` (8 per row, 5 px black margins; ``--method keras``
images through ``deprocess_image``: the book's figure; ``--method regularised`` ones as their sigmoid image
in RGB, as lucid/Lucent show them: :func:`jaxviz.visualize.patterns.display_images`),
``DIR/<layer>_labelled.png`` (the same with the layer, the settings and each filter's index) and
``DIR/<layer>.json`` (the settings), optionally ``DIR/<layer>.npy`` (the raw model-space arrays, ``--npy``)
and ``DIR/<layer>/filter_NNN.png`` (``--per-filter``). With ``--method regularised`` every ``<layer>`` above
is ``<layer>_regularised``, so that a layer's two grids can share a folder. Every finished filter is saved
under ``DIR/.partial/<layer>/`` as soon as its chunk completes; a rerun with the same settings loads those,
computes the rest, and skips layers whose outputs already exist. All files are written atomically.
"""

from __future__ import annotations

import argparse
import json

import jax

from .. import parallel
from ..atomic import confine, file_stems
from ..errors import JaxvizError, printable
from ..images import save_png
from ..render import image_grid, labelled_grid, save_figure
from ..version import __version__
from ..visualize import patterns
from . import common


def register_patterns(sub) -> argparse.ArgumentParser:
    """Adds the ``patterns`` subcommand to ``sub`` (an argparse subparsers object)."""
    p = sub.add_parser(
        "patterns",
        help="filter patterns: the input each filter responds to most (book listings 5.38-5.39)",
        description="Gradient ascent in input space for many filters at once; writes the book's 8-column "
                    "grid per layer (filter i+8j at row i, column j). Resumable: rerun the same command after "
                    "an interruption.",
    )
    p.add_argument("--layer", action="append", required=True,
                   help="layer name: a conv, pool or dense layer, e.g. block3_conv1 or fc1 (repeat for several)")
    p.add_argument("--filters", default=None,
                   help="START:STOP or a comma list, e.g. 0:16 or 0,5,9 (default: the first 64, or all if the layer "
                        "has fewer; a STOP past the end stops at the last filter)")
    p.add_argument("--size", type=common.positive_int, default=None,
                   help="image side in pixels (default 64, the book's grid; 150 alone; dense layers after the "
                        "flatten layer need the model's input size, their default)")
    p.add_argument("--steps", type=common.positive_int, default=None,
                   help="ascent steps (default: 40 keras, 256 regularised)")
    p.add_argument("--step-size", type=common.positive_float, default=None,
                   help="keras: step of the RMS-normalised gradient (1); regularised: Adam's learning rate (0.05)")
    p.add_argument("--method", choices=("keras", "regularised"), default="keras",
                   help="keras: the book's recipe (default); regularised: lucid-style, clearer deep layers")
    p.add_argument("--seed", type=common.nonnegative_int, default=0,
                   help="seed of the random start images (default: 0)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype (float32 = parity with Keras)")
    p.add_argument("--chunk-size", type=common.positive_int, default=None,
                   help="filters per compiled call (default: per device)")
    common.add_model_args(p, top=True)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--npy", action="store_true", help="also write DIR/<layer>.npy (model-space arrays)")
    p.add_argument("--per-filter", action="store_true", help="also write DIR/<layer>/filter_NNN.png")
    p.add_argument("--cols", type=common.positive_int, default=8, help="grid columns (book: 8)")
    p.add_argument("--order", choices=("columns", "rows"), default="columns",
                   help="columns = filter i+8j at row i, column j (the book's listing 5.39, default); "
                        "rows = row-major")
    p.add_argument("--rgb", action="store_true",
                   help="keras method: flip BGR -> RGB before display (the book shows the BGR arrays as they "
                        "are; models in other modes than caffe are RGB already); regularised patterns are always "
                        "shown in their RGB colours")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--coordinator", default=None,
                   help="HOST:PORT of process 0 to split the filters over several processes (jax.distributed)")
    p.add_argument("--num-processes", type=common.positive_int, default=1,
                   help="how many processes share the work (with --coordinator; default 1)")
    p.add_argument("--process-id", type=common.nonnegative_int, default=0,
                   help="this process's index, 0..N-1 (with --coordinator; default 0)")
    p.set_defaults(func=run_patterns)
    return p


#: Layers of the classifier (need the model's top); their patterns are ascents of one unit's activation.
_TOP_LAYERS = ("fc1", "fc2", "predictions", "logits")


def _span(filters: list[int]) -> str:
    """``0–63`` for a contiguous run, else the list (shortened)."""
    if filters == list(range(filters[0], filters[0] + len(filters))):
        return f"{filters[0]}–{filters[-1]}" if len(filters) > 1 else str(filters[0])
    shown = ", ".join(map(str, filters[:12]))
    return shown + (", …" if len(filters) > 12 else "")


def _settings(args, model, layer: str, filters: list[int], options: dict) -> dict:
    return {"jaxviz": __version__, "arch": model.arch.name, "weights": model.source, "layer": layer,
            "filters": filters, "size": args.size, "steps": args.steps, "step_size": args.step_size,
            "method": args.method, "seed": args.seed, "dtype": args.dtype, "options": options}


def run_patterns(args) -> int:
    if args.coordinator:
        parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    elif args.num_processes != 1:
        raise JaxvizError("--num-processes needs --coordinator HOST:PORT (the address of process 0)")
    lead = jax.process_index() == 0
    if args.process_id >= args.num_processes:
        raise JaxvizError(f"--process-id {args.process_id} must be below --num-processes {args.num_processes}")
    top = [name for name in args.layer if name in _TOP_LAYERS]
    head = [name for name in args.layer if name in ("flatten", "global_average_pooling")]  # named, then refused
    model = common.model_from_args(args, include_top=bool(top or head))
    layers = model.check_layers(args.layer)
    for layer in layers:
        if layer not in model.conv_layer_names and not layer.endswith("_pool") and layer not in _TOP_LAYERS:
            raise JaxvizError(f"patterns need a conv, pool or dense layer; {layer!r} is none of these")
    flat = top and model.arch.head == "flatten"
    size = args.size or (model.arch.default_size if flat else 64)
    if flat and size != model.arch.default_size:
        raise JaxvizError(f"--size {size}: {top[0]} comes after the flatten layer of {model.arch.name}, so its "
                          f"patterns need --size {model.arch.default_size} (or no --size); run the conv layers "
                          "in a separate command")
    args.size = size
    plan = [(layer, common.parse_index_list(args.filters, model.channels(layer))) for layer in layers]
    out = common.output_dir(args.output)
    stems = file_stems(model.layer_names)  # file names from layer names: a safe slug of each
    for layer, filters in plan:
        name = stems[layer] + ("" if args.method == "keras" else f"_{args.method}")
        compute = _settings(args, model, layer, filters, {})
        # the sidecar: arrays + how they are shown
        settings = {**compute, "rgb": args.rgb, "cols": args.cols, "order": args.order}
        grid_path, meta_path = confine(out, f"{name}.png"), confine(out, f"{name}.json")
        if grid_path.exists() and meta_path.exists():
            try:
                same = json.loads(meta_path.read_text()) == json.loads(json.dumps(settings))
            except ValueError:
                same = False
            wanted = [confine(out, f"{name}.npy")] if args.npy else []
            wanted += [confine(out, name, f"filter_{f:03d}.png") for f in filters] if args.per_filter else []
            if same and all(p.exists() for p in wanted):
                if lead:
                    print(printable(f"{layer}: done already ({grid_path})"))
                continue
        folder = confine(out, ".partial", name)
        try:
            store = parallel.ItemStore(folder, compute, prefix="filter_")
        except JaxvizError:  # left by a run with other settings: its filters are of no use here
            parallel.ItemStore(folder, prefix="filter_").clear()
            store = parallel.ItemStore(folder, compute, prefix="filter_")
        x = patterns.filter_patterns(
            model, layer, filters, size=args.size, steps=args.steps, step_size=args.step_size, seed=args.seed,
            method=args.method, chunk_size=args.chunk_size, progress=not args.no_progress, dtype=args.dtype,
            store=store,
        )
        if not lead:
            continue
        mode = model.preprocess
        images = patterns.display_images(x, args.method, mode, bgr_to_rgb=args.rgb and mode == "caffe")  # RGB already
        grid = image_grid(images, cols=min(args.cols, len(images)), margin=5, fill=0, order=args.order)
        if args.per_filter:
            for f, im in zip(filters, images):
                save_png(confine(out, name, f"filter_{f:03d}.png"), im)
        if args.npy:
            common.save_npy(confine(out, f"{name}.npy"), x)
        save_png(grid_path, grid)
        if len(images) > 1:  # the same grid with its layer, settings and filter indices, to read on its own
            rows = -(-len(images) // min(args.cols, len(images)))
            title = (f"{layer} of {model.arch.name}: filter patterns {_span(filters)} ({args.method} ascent, "
                     f"{args.size} px, seed {args.seed})")
            note = (f"filter i + {rows}j at row i, column j (the book's order)" if args.order == "columns"
                    and rows > 1 else None)
            save_figure(labelled_grid(list(images), [str(f) for f in filters], title,
                                      cols=min(args.cols, len(images)), order=args.order, cell=1.2, note=note),
                        confine(out, f"{name}_labelled.png"))
        common.save_json(meta_path, settings)  # last: its presence marks the layer as done
        store.clear()
        print(printable(f"{layer}: {len(filters)} patterns -> {grid_path}"))
    if lead:
        try:
            confine(out, ".partial").rmdir()
        except OSError:
            pass
    return 0

