"""Forward-pass speed: jaxviz vs Keras (JAX backend) on the same seeded random VGG weights.

Times, at 224×224 and each batch size:
  * features — jaxviz ``model.features(x, "block5_pool")`` vs a Keras ``Model(inputs, block5_pool.output)``;
  * predict  — jaxviz ``model.predict(x)`` vs Keras ``model.predict(x)`` (and ``predict_on_batch``, which
    skips ``predict``'s per-call data-adapter/callback overhead).
Every pair is run interleaved in one process (the machine is noisy; compare ratios, not absolute times),
after a warm-up call that compiles; medians over ``--repeats``. Outputs are checked to agree first.

    KERAS_BACKEND=jax python scripts/bench_forward.py --arch vgg16 --repeats 7 --out bench_forward.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
# Run from a checkout without installing: make the repository's jaxviz importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _array(out):
    import numpy as np

    return np.asarray(out["block5_pool"] if isinstance(out, dict) else out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="vgg16", choices=["vgg16", "vgg19"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    p.add_argument("--size", type=int, default=224, help="image size (the top needs 224)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per case (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    import jax
    import keras
    import numpy as np

    import jaxviz
    from jaxviz.frontends import vgg

    if keras.backend.backend() != "jax":
        print("run with KERAS_BACKEND=jax", file=sys.stderr)
        return 2
    params = vgg.random_params(args.arch, True, args.seed)
    model = jaxviz.Model(args.arch, params, True, source=f"random:{args.seed}")
    builder = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}[args.arch]
    kmodel = builder(weights=None, include_top=True, input_shape=(args.size, args.size, 3))
    for name, w in params.items():
        kmodel.get_layer(name).set_weights([w["kernel"], w["bias"]])
    kfeat = keras.Model(kmodel.inputs, kmodel.get_layer("block5_pool").output)

    rng = np.random.default_rng(args.seed)
    inputs = {b: rng.uniform(-120, 120, (b, args.size, args.size, 3)).astype(np.float32) for b in args.batch}

    cases = {}  # (workload, batch) -> {impl: callable}
    for b, x in inputs.items():
        cases[("features", b)] = {
            "jaxviz": lambda x=x: jax.block_until_ready(model.features(x, "block5_pool")),
            "keras": lambda x=x: kfeat.predict(x, batch_size=len(x), verbose=0),
            "keras_on_batch": lambda x=x: kfeat.predict_on_batch(x),
        }
        cases[("predict", b)] = {
            "jaxviz": lambda x=x: model.predict(x),
            "keras": lambda x=x: kmodel.predict(x, batch_size=len(x), verbose=0),
            "keras_on_batch": lambda x=x: kmodel.predict_on_batch(x),
        }

    # Warm-up (compiles) and an agreement check.
    agreement = {}
    for (work, b), impls in cases.items():
        outs = {name: _array(fn()) for name, fn in impls.items()}
        ref = outs["keras"]
        agreement[f"{work}/b{b}"] = float(np.max(np.abs(outs["jaxviz"] - ref)) / np.max(np.abs(ref)))

    samples = {(work, b, name): [] for (work, b), impls in cases.items() for name in impls}
    for r in range(args.repeats):
        for (work, b), impls in cases.items():
            names = list(impls) if r % 2 == 0 else list(reversed(impls))  # alternate who goes first
            for name in names:
                samples[(work, b, name)].append(_timed(impls[name]))

    rows = []
    for (work, b), impls in cases.items():
        med = {name: statistics.median(samples[(work, b, name)]) for name in impls}
        rows.append({"workload": work, "batch": b, **{f"{k}_s": v for k, v in med.items()},
                     "ratio_jaxviz_keras": med["jaxviz"] / med["keras"],
                     "ratio_jaxviz_keras_on_batch": med["jaxviz"] / med["keras_on_batch"],
                     "max_rel_diff": agreement[f"{work}/b{b}"],
                     "samples": {k: samples[(work, b, k)] for k in impls}})

    head = (f"{'workload':<9} {'batch':>5} {'jaxviz s':>9} {'keras s':>9} {'on_batch s':>10} "
            f"{'jaxviz/keras':>12} {'jaxviz/on_batch':>15} {'max rel Δ':>10}")
    print(f"{args.arch} @ {args.size}×{args.size}, median of {args.repeats}, {jax.devices()[0].platform} "
          f"({os.cpu_count()} cpus), jax {jax.__version__}, keras {keras.__version__}")
    print(head)
    print("-" * len(head))
    for row in rows:
        print(f"{row['workload']:<9} {row['batch']:>5} {row['jaxviz_s']:>9.4f} {row['keras_s']:>9.4f} "
              f"{row['keras_on_batch_s']:>10.4f} {row['ratio_jaxviz_keras']:>12.2f} "
              f"{row['ratio_jaxviz_keras_on_batch']:>15.2f} {row['max_rel_diff']:>10.1e}")
    if args.out:
        meta = {"arch": args.arch, "size": args.size, "repeats": args.repeats, "seed": args.seed,
                "jax": jax.__version__, "keras": keras.__version__, "jaxviz": jaxviz.__version__,
                "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                "machine": platform.machine()}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
