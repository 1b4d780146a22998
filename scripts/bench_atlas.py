"""Benchmark: the cost of an atlas (:func:`jaxviz.atlas`) per unit, and the whole atlas estimated from it.

For each architecture (default: ``vgg_demo`` with its weights and ``vgg16`` with seeded random weights, the
cost does not depend on the values) it measures, after a first call that compiles:

- the dataset pass (:func:`jaxviz.atlas.dataset_pass` over ``--images`` generated demo scenes, every conv
  layer at once): seconds per image;
- each pattern method on ``--units`` units of a few layers at ``--size`` px, timed at two step counts: the
  difference gives the cost of one ascent step, the rest the fixed cost of a call; a unit's cost at the
  atlas's steps (the book's 40, lucid's 256; ``--quick``: 10 and 32) is ``fixed + steps × step``;
- the whole atlas (every conv unit, both patterns, the dataset pass over ``--images``) estimated: the cost of
  a unit of an unmeasured layer is scaled from the measured ones by the forward FLOPs up to that layer
  (:func:`jaxviz.visualize.patterns.forward_flops`), nearest measured layer first, plus one compile per layer
  and method (that of the nearest measured layer; the persistent compilation cache saves it on a rerun).

Writing the site (PNGs and pages) is not included; it is a few milliseconds per unit.

Run ``python scripts/bench_atlas.py``; ``--size 128`` for larger patterns, ``--clock cpu`` to read CPU seconds
(steadier than wall time where other work shares the machine), ``--out FILE.json`` keeps every number.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LAYERS = {"vgg_demo": None, "vgg16": ("block1_conv1", "block3_conv1", "block5_conv3")}


#: The clock the timings read: wall time, or this process's CPU time (all its threads; steadier than wall time
#: on a machine shared with other work, and on an idle machine wall ≈ CPU / cores in use).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def _timed(fn) -> float:
    t = _clock()
    fn()
    return _clock() - t


def bench(arch: str, size: int, units: int, n_images: int, steps: tuple[int, int], quick: bool) -> dict:
    import jax
    import numpy as np

    import jaxviz
    from jaxviz.atlas import STEPS, dataset_pass
    from jaxviz.demo.scenes import make_scenes
    from jaxviz.images import save_png
    from jaxviz.visualize import patterns

    model = jaxviz.load(arch, weights="imagenet" if arch.startswith("vgg_demo") else "random:0")
    convs = model.conv_layer_names
    result = {"arch": arch, "device": str(jax.devices()[0]), "size": size, "units": units,
              "clock": "cpu" if _clock is time.process_time else "wall"}
    with tempfile.TemporaryDirectory() as folder:
        images, _, _ = make_scenes(n_images, 64, seed=0)
        for i, im in enumerate(images):
            save_png(os.path.join(folder, f"{i:04d}.png"), im)
        first = _timed(lambda: dataset_pass(model, folder, convs, 9, progress=False))
        again = _timed(lambda: dataset_pass(model, folder, convs, 9, progress=False))
    result["dataset"] = {"images": n_images, "input": list(model.input_hw), "first_s": first, "s_per_image":
                         again / n_images}
    print(f"{arch}: dataset pass at {model.input_hw}: {1e3 * again / n_images:.1f} ms/image "
          f"(first call {first:.1f} s with compiling)", flush=True)
    measured = {}
    for layer in LAYERS.get(arch) or convs:
        row = {}
        for method in ("regularised", "keras"):
            ids = list(range(min(units, model.channels(layer))))
            t, compile_s = {}, 0.0
            for s in steps:
                call = functools.partial(patterns.filter_patterns, model, layer, ids, size=size, steps=s,
                                         method=method, chunk_size=len(ids), progress=False)
                first = _timed(call)  # compiles (the step count is an argument of the program, not a constant)
                t[s] = min(_timed(call) for _ in range(2))
                compile_s = max(first - t[s], 0.0) if s == steps[0] else compile_s
            step = max(t[steps[1]] - t[steps[0]], 0.0) / (steps[1] - steps[0]) / len(ids)
            fixed = max(t[steps[0]] / len(ids) - steps[0] * step, 0.0)
            row[method] = {"step_s": step, "fixed_s": fixed, "unit_s": fixed + STEPS[quick][method] * step,
                           "compile_s": compile_s}
        row["flops"] = patterns.forward_flops(model, layer, size)
        measured[layer] = row
        print(f"{arch} {layer}: per unit {row['regularised']['unit_s']:.3f} s regularised "
              f"({STEPS[quick]['regularised']} steps), {row['keras']['unit_s']:.3f} s book "
              f"({STEPS[quick]['keras']} steps)", flush=True)
    total, units_all = 0.0, 0
    for layer in convs:
        flops = patterns.forward_flops(model, layer, size)
        ref = min(measured, key=lambda m: abs(np.log(measured[m]["flops"] / flops)))
        scale = flops / measured[ref]["flops"]
        per_unit = sum(measured[ref][m]["unit_s"] for m in ("regularised", "keras")) * scale
        total += per_unit * model.channels(layer) + sum(measured[ref][m]["compile_s"] for m in measured[ref]
                                                        if m != "flops")
        units_all += model.channels(layer)
    total += result["dataset"]["s_per_image"] * n_images
    result.update(measured=measured, whole_units=units_all, whole_estimate_s=total, quick=quick)
    print(f"{arch}: whole atlas ({units_all} units, both patterns, {n_images} images) estimated at "
          f"{total / 60:.1f} min on {result['device']}", flush=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", nargs="+", default=["vgg_demo", "vgg16"])
    p.add_argument("--size", type=int, default=64, help="pattern side in pixels (default: 64)")
    p.add_argument("--units", type=int, default=4, help="units per timed call (default: 4)")
    p.add_argument("--images", type=int, default=200, help="demo scenes in the dataset pass (default: 200)")
    p.add_argument("--steps", type=int, nargs=2, default=(4, 12), help="the two step counts timed (default: 4 12)")
    p.add_argument("--quick", action="store_true", help="estimate for the atlas's --quick steps")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time (default) or this process's CPU time, steadier on a shared machine")
    p.add_argument("--out", default=None, help="write the numbers to this JSON file")
    args = p.parse_args(argv)
    global _clock
    _clock = CLOCKS[args.clock]
    results = [bench(a, args.size, args.units, args.images, tuple(args.steps), args.quick) for a in args.arch]
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
