"""Speed on other networks: jaxviz vs Keras 3 (JAX backend) running the SAME `.keras` file.

For each network (default ResNet50 and MobileNetV2, `weights=None` with seeded weights and BatchNorm
statistics, saved once as `.keras`), at 224 px and each batch size, times side by side in one process:

  * predict  — `jaxviz.load(file).predict(x)` vs Keras's `stateless_call` under `jax.jit`;
  * saliency — `jaxviz.saliency(model, x, score="prob")` vs `jax.grad` of the class probability through
    Keras's `stateless_call` under `jax.jit`;
  * gradcam  — `jaxviz.gradcam(model, x)` (its default layer) vs the keras.io recipe in JAX: a model up to
    the same layer and the rest of the network applied to its output, gradient through `jax.vjp`, both
    under `jax.jit`.

Every pair is compiled first (a warm-up call), then alternated for `--repeats` rounds; the table reports
the median seconds, the ratio jaxviz/Keras of the medians, that of the best rounds, and the median of the
per-round ratios (each round runs both back to back, so a slow phase of a shared machine slows both: the
steadiest of the three). < 1: jaxviz is faster. Outputs
are checked to agree first (exact mode on both sides, full float32).

    KERAS_BACKEND=jax python scripts/bench_models.py --models resnet50 mobilenetv2 --batch 1 8 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BUILDERS = {
    "resnet50": ("ResNet50", {}),
    "mobilenetv2": ("MobileNetV2", {}),
    "vgg16": ("VGG16", {}),
    "densenet121": ("DenseNet121", {}),
    "efficientnetb0": ("EfficientNetB0", {}),
}


def seeded_keras_model(name: str, size: int, seed: int):
    """A keras.applications network with seeded weights and BatchNorm statistics that keep activations sane."""
    import keras
    import numpy as np

    builder, kwargs = BUILDERS[name]
    model = getattr(keras.applications, builder)(weights=None, input_shape=(size, size, 3), **kwargs)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            shape, path = tuple(w.shape), w.path
            if path.endswith("moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            elif path.endswith("moving_mean"):
                value = rng.normal(0, 0.1, shape)
            elif path.endswith("gamma"):
                value = rng.uniform(0.8, 1.2, shape)
            elif len(shape) >= 2:
                fan_in = int(np.prod(shape[:-1])) if "depthwise" not in path else int(np.prod(shape[:2]))
                value = rng.normal(0, np.sqrt(2.0 / max(fan_in, 1)), shape)
            else:
                value = rng.normal(0, 0.01, shape)
            w.assign(value.astype("float32"))
    return model


def _timed_pair(a, b, repeats):
    """Each function's times over ``repeats`` alternated rounds (the order flips every round)."""
    ta, tb = [], []
    for i in range(repeats):
        for fn, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return ta, tb


def bench(name: str, size: int, batches, repeats: int, seed: int, folder: str) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    import jaxviz
    from jaxviz import xla_cpu

    kmodel = seeded_keras_model(name, size, seed)
    path = os.path.join(folder, f"{name}.keras")
    kmodel.save(path)
    model = jaxviz.load(path)
    exact = jaxviz.load(path, ops="exact")
    layer = model.cam_layer
    # Copies of the variables' values: Keras's own predict may donate the variables' buffers.
    tv = [jnp.array(np.asarray(v)) for v in kmodel.trainable_variables]
    ntv = [jnp.array(np.asarray(v)) for v in kmodel.non_trainable_variables]

    @jax.jit
    def k_predict(tv, ntv, x):
        return kmodel.stateless_call(tv, ntv, x, training=False)[0]

    @jax.jit
    def k_saliency(tv, ntv, x, target):
        def score(x):
            p = kmodel.stateless_call(tv, ntv, x, training=False)[0]
            return jnp.sum(p * jax.nn.one_hot(target, p.shape[-1]))

        return jnp.max(jnp.abs(jax.grad(score)(x)), axis=-1)

    # keras.io's Grad-CAM: the model up to the layer, then the rest of the network applied to its output.
    trunk = keras.Model(kmodel.inputs, kmodel.get_layer(layer).output)
    head_in = keras.Input(trunk.output.shape[1:])
    h = head_in
    after = kmodel.layers[[lyr.name for lyr in kmodel.layers].index(layer) + 1:]
    for lyr in after:
        h = lyr(h)
    head = keras.Model(head_in, h)
    ttv, tntv = ([jnp.array(np.asarray(v)) for v in vs] for vs in (trunk.trainable_variables,
                                                                     trunk.non_trainable_variables))
    htv, hntv = ([jnp.array(np.asarray(v)) for v in vs] for vs in (head.trainable_variables,
                                                                     head.non_trainable_variables))

    @jax.jit
    def k_gradcam(x):
        a = trunk.stateless_call(ttv, tntv, x, training=False)[0]

        def score(a):
            p = head.stateless_call(htv, hntv, a, training=False)[0]
            return jnp.sum(p * jax.nn.one_hot(jnp.argmax(p, -1), p.shape[-1]))

        g = jax.grad(score)(a)
        cam = jax.nn.relu(jnp.mean(a * jnp.mean(g, axis=(1, 2), keepdims=True), axis=-1))
        return cam / (jnp.max(cam, axis=(1, 2), keepdims=True) + 1e-12)

    rows = []
    for n in batches:
        x = np.random.default_rng(seed + n).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)
        target = np.asarray(jnp.argmax(k_predict(tv, ntv, x), -1))
        with jax.default_matmul_precision("highest"):
            ref = np.asarray(kmodel.predict(x, verbose=0))
            ours = exact.predict(x)
        err = float(np.abs(ours - ref).max() / np.abs(ref).max())
        cases = {
            "predict": (lambda x=x: model.predict(x), lambda x=x: np.asarray(k_predict(tv, ntv, x))),
            "saliency": (lambda x=x, t=target: np.asarray(jaxviz.saliency(model, x, target=t, score="prob")),
                         lambda x=x, t=target: np.asarray(k_saliency(tv, ntv, x, t))),
            "gradcam": (lambda x=x: np.asarray(jaxviz.gradcam(model, x, layer=layer)),
                        lambda x=x: np.asarray(k_gradcam(x))),
        }
        for case, (ours_fn, keras_fn) in cases.items():
            ours_fn(), keras_fn()  # compile both
            times_ours, times_keras = _timed_pair(ours_fn, keras_fn, repeats)
            t_ours, t_keras = statistics.median(times_ours), statistics.median(times_keras)
            # Noise only ever adds time: the best rounds' ratio is the steadier one on a shared machine.
            best = min(times_ours) / min(times_keras)
            paired = statistics.median(a / b for a, b in zip(times_ours, times_keras))
            row = {"model": name, "batch": n, "case": case, "jaxviz_s": t_ours, "keras_jax_s": t_keras,
                   "ratio": t_ours / t_keras, "best_ratio": best, "paired_ratio": paired, "jaxviz_times": times_ours,
                   "keras_jax_times": times_keras, "layer": layer, "predict_rel_err_exact": err,
                   "ynn_fusions_off": xla_cpu.ynn_disabled()}
            print(f"{name:14s} batch {n:2d} {case:9s} jaxviz {t_ours * 1e3:8.1f} ms  keras-jax "
                  f"{t_keras * 1e3:8.1f} ms  ratio {t_ours / t_keras:5.2f} (best rounds {best:5.2f}, "
                  f"paired {paired:5.2f})", flush=True)
            rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet50", "mobilenetv2"], choices=sorted(BUILDERS))
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--xla-defaults", action="store_true",
                   help="keep JAX's default XLA:CPU flags (YNNPACK fusions on) instead of jaxviz's (jaxviz.xla_cpu)")
    args = p.parse_args(argv)
    from jaxviz import xla_cpu

    # Before Keras starts JAX's backend (XLA reads its flags once per process), as the jaxviz command does;
    # both sides then run with the same flags.
    if not args.xla_defaults:
        xla_cpu.configure()
    import keras

    if keras.backend.backend() != "jax":
        print("run with KERAS_BACKEND=jax", file=sys.stderr)
        return 2
    flags = "YNNPACK fusions off (jaxviz.xla_cpu)" if xla_cpu.ynn_disabled() else "JAX's default XLA flags"
    print(f"both sides: {flags}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            rows += bench(name, args.size, args.batch, args.repeats, args.seed, folder)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    print("\n| model | batch | case | jaxviz ms | Keras-JAX ms | jaxviz/Keras (medians) | (best rounds) | (paired) |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['case']} | {r['jaxviz_s'] * 1e3:.1f} | "
              f"{r['keras_jax_s'] * 1e3:.1f} | {r['ratio']:.2f} | {r['best_ratio']:.2f} | {r['paired_ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
