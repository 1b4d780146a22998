"""Benchmark: filter patterns (listing 5.38) with jaxviz against the Keras ways of computing them.

For each case (layer, size) it times, interleaved round by round in one run so that a noisy shared machine
affects every contender alike:

- ``jaxviz``: :func:`jaxviz.visualize.filter_patterns` (method "keras", default chunk), plus variants
  (``--variants``): the full target layer instead of only the wanted channels, bfloat16, fixed chunks;
- ``keras-jax``: Keras 3 on the JAX backend, keras.io's per-filter Python loop over a jitted step;
- ``keras-tf``: the same loop on the TensorFlow backend (``tf.function`` step, filter index as a tensor so
  it is traced once), when an interpreter with TensorFlow is available (``--tf-python``).

The Keras contenders run in worker processes (``KERAS_BACKEND`` is fixed per process) that wait for
commands between rounds, so they use no CPU while jaxviz is timed. The same run measures the fp32 matmul
peak (jax, numpy; TensorFlow in its worker). Work is counted as ``2 × steps × forward FLOPs`` of the full
network up to the layer (forward + input gradient; the weights are constants), cross-checked with XLA's
cost analysis; variants that compute less (only the wanted channels; on CPUs, Winograd convolutions for the
wide layers, :mod:`jaxviz.winograd`) are credited with the same nominal work, so GFLOP/s ratios are time
ratios and jaxviz's GFLOP/s and % of peak are effective rates (XLA's count of the FLOPs the default
program executes is printed too).

``jaxviz xla-defaults`` is the same jaxviz code in a process that keeps JAX's default XLA:CPU flags
(YNNPACK convolutions; see :mod:`jaxviz.xla_cpu`); the Keras workers also get the user's flags, not the
one jaxviz applies.

Run ``python scripts/bench_patterns.py --quick``; ``--out FILE.json`` keeps
every number.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

# Run from a checkout without installing: make the repository's jaxviz importable (jaxviz is imported late).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CASES = (("block3_conv1", 64), ("block3_conv1", 150), ("block5_conv1", 64), ("block5_conv1", 150))
QUICK_CASES = (("block3_conv1", 64),)


# ---------------------------------------------------------------------------------------------------------
# Keras worker (runs in its own process; imports neither jax nor jaxviz unless the backend is jax)


def _keras_worker() -> None:  # pragma: no cover - exercised through the benchmark
    import numpy as np

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    import keras

    models: dict = {}

    def extractor(layer, size):
        key = (layer, size)
        if key not in models:
            keras.utils.set_random_seed(0)
            base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
            fe = keras.Model(base.inputs, base.get_layer(layer).output)
            models[key] = (fe, _make_step(fe))
        return models[key]

    def _make_step(fe):
        if backend == "jax":
            import jax
            import jax.numpy as jnp

            tv = [v.value for v in fe.trainable_variables]
            ntv = [v.value for v in fe.non_trainable_variables]

            def loss_fn(x, f):
                act, _ = fe.stateless_call(tv, ntv, x)
                return jnp.mean(act[..., f])

            @jax.jit
            def step(x, f):
                loss, g = jax.value_and_grad(loss_fn)(x, f)
                g = g / (jnp.sqrt(jnp.mean(jnp.square(g))) + 1e-5)
                return loss, x + g

            return lambda x, f: step(x, jnp.int32(f)), lambda x: np.asarray(jax.block_until_ready(x))
        import tensorflow as tf

        @tf.function
        def tf_step(x, f):
            with tf.GradientTape() as tape:
                tape.watch(x)
                act = fe(x)
                loss = tf.reduce_mean(tf.gather(act, f, axis=-1))
            g = tape.gradient(loss, x)
            g /= tf.sqrt(tf.reduce_mean(tf.square(g))) + 1e-5
            return loss, x + g

        return lambda x, f: tf_step(tf.convert_to_tensor(x, tf.float32), tf.constant(f)), lambda x: np.asarray(x)

    def run(layer, size, n, steps):
        t0 = time.perf_counter()
        fe, (step, sync) = extractor(layer, size)
        build = time.perf_counter() - t0
        times = []
        rng = np.random.default_rng(0)
        for f in range(n):
            x = (rng.random((1, size, size, 3)) * 20 + 128.0).astype("float32")
            t = time.perf_counter()
            for _ in range(steps):
                _, x = step(x, f)
            sync(x)
            times.append(time.perf_counter() - t)
        return {"seconds": times, "build_s": build}

    def peak(n=2048, repeats=5):
        a = np.random.default_rng(0).random((n, n), dtype=np.float32)
        if backend == "tensorflow":
            import tensorflow as tf

            ta = tf.constant(a)
            mm = tf.function(lambda x: tf.matmul(x, x))
            mm(ta).numpy()
            ts = []
            for _ in range(repeats):
                t = time.perf_counter()
                mm(ta).numpy()
                ts.append(time.perf_counter() - t)
            return {"gflops": 2 * n**3 / min(ts) / 1e9}
        return {"gflops": None}

    _serve({"ready": True, "backend": backend, "keras": keras.__version__}, run, peak)


def _jaxviz_worker() -> None:  # pragma: no cover - exercised through the benchmark
    """jaxviz in a process of its own, started with the user's XLA flags (JAX's defaults unless changed)."""
    import jax

    import jaxviz
    from jaxviz.visualize import patterns

    model = jaxviz.load("vgg16", "random:0", include_top=False)

    def run(layer, size, n, steps):
        t = time.perf_counter()
        patterns.filter_patterns(model, layer, range(n), size=size, steps=steps, progress=False)
        return {"seconds": [(time.perf_counter() - t) / n] * n}

    _serve({"ready": True, "backend": "jaxviz", "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "jax": jax.__version__}, run, lambda: {"gflops": None})


def _serve(hello: dict, run, peak) -> None:  # pragma: no cover - exercised through the benchmark
    """The worker loop: answers one JSON command per line on stdin with one JSON line on stdout."""
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "quit":
                break
            if cmd["cmd"] == "peak":
                out = peak()
            else:
                out = run(cmd["layer"], cmd["size"], cmd["filters"], cmd["steps"])
        except Exception as e:  # report, keep serving
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


class KerasWorker:
    """A Keras process on one backend, answering ``run``/``peak`` commands over pipes."""

    def __init__(self, backend: str, python: str | None = None, timeout_s: float = 120):
        # The user's XLA flags, not the ones importing jaxviz set: what Keras users run today.
        from jaxviz import xla_cpu

        env = dict(xla_cpu.users_environment(), KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONUNBUFFERED="1")
        self.backend = backend
        role = "--jaxviz-worker" if backend == "jaxviz" else "--keras-worker"
        self.proc = subprocess.Popen([python or sys.executable, os.path.abspath(__file__), role],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env)
        hello = self._read()
        self.info = hello

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"keras-{self.backend} worker exited")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.ask(cmd="quit")
        except (RuntimeError, BrokenPipeError, ValueError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def find_tf_python(explicit: str | None = None) -> str | None:
    """An interpreter that can import TensorFlow: ``explicit``, ``$JAXVIZ_TF_PYTHON``, or this one."""
    for candidate in (explicit, os.environ.get("JAXVIZ_TF_PYTHON")):
        if candidate:
            return candidate
    return sys.executable if importlib.util.find_spec("tensorflow") is not None else None


# ---------------------------------------------------------------------------------------------------------
# Measurements in this process


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict:
    """fp32 matmul rate (best of ``repeats``) of jax and numpy, in GFLOP/s."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    ja = jnp.asarray(a)
    mm = jax.jit(jnp.matmul)
    mm(ja, ja).block_until_ready()
    best = {}
    for name, fn in (("jax", lambda: mm(ja, ja).block_until_ready()), ("numpy", lambda: a @ a)):
        fn()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        best[name] = 2 * n**3 / min(ts) / 1e9
    return best


def xla_step_flops(model, layer: str, size: int, exact: bool = True) -> float | None:
    """XLA's FLOP count for one ascent step of one filter (full layer).

    ``exact=True`` counts the exact mode's program (direct convolutions): the cross-check of 2×forward.
    ``exact=False`` counts the default program, whose Winograd convolutions (CPU) execute fewer FLOPs; the
    benchmark credits every contender with the direct count, so its GFLOP/s are effective rates.
    """
    import contextlib

    import jax

    from jaxviz.visualize import patterns

    with jax.default_matmul_precision("highest") if exact else contextlib.nullcontext():
        compiled = patterns.compiled_program(model, layer, size=size, chunk=1, columns=False)
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    return float(ca["flops"]) if ca and "flops" in ca else None


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])


def _variants(spec: str) -> list[dict]:
    out = [{"name": "jaxviz"}]
    for v in filter(None, (s.strip() for s in spec.split(","))):
        if v == "full-layer":
            out.append({"name": "jaxviz full-layer", "columns": False})
        elif v == "bf16":
            out.append({"name": "jaxviz bf16", "dtype": "bfloat16"})
        elif v.startswith("chunk"):
            out.append({"name": f"jaxviz {v}", "chunk_size": int(v[5:])})
        else:
            raise SystemExit(f"unknown variant {v!r}: use full-layer, bf16, chunkN")
    return out


# ---------------------------------------------------------------------------------------------------------
# The benchmark


def run(cases=CASES, filters: int = 64, steps: int = 40, rounds: int = 2, variants: str = "full-layer,bf16",
        keras_jax: bool = True, keras_tf: bool = True, tf_python: str | None = None, keras_filters: int | None = None,
        xla_defaults: bool = True, log=print) -> dict:
    """Runs the benchmark and returns every number (see the module docstring)."""
    import jax

    import jaxviz
    from jaxviz import parallel
    from jaxviz.visualize import patterns

    model = jaxviz.load("vgg16", "random:0", include_top=False)
    result = {"device": str(jax.devices()[0]), "platform": jax.devices()[0].platform, "cpus": os.cpu_count(),
              "jax": jax.__version__, "filters": filters, "steps": steps, "rounds": rounds, "cases": []}
    from jaxviz import xla_cpu

    result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    workers = {}
    if xla_defaults and xla_cpu.added:  # the same code under JAX's default XLA:CPU settings (YNNPACK convs)
        try:
            workers["jaxviz xla-defaults"] = KerasWorker("jaxviz")
        except Exception as e:
            result["jaxviz_xla_defaults_error"] = str(e)
    if keras_jax and importlib.util.find_spec("keras") is not None:
        try:
            workers["keras-jax"] = KerasWorker("jax")
        except Exception as e:
            result["keras_jax_error"] = str(e)
    if keras_tf:
        py = find_tf_python(tf_python)
        if py:
            try:
                workers["keras-tf"] = KerasWorker("tensorflow", py)
            except Exception as e:
                result["keras_tf_error"] = str(e)
        else:
            result["keras_tf_error"] = "no interpreter with TensorFlow (pass --tf-python or set JAXVIZ_TF_PYTHON)"
    result["workers"] = {k: w.info for k, w in workers.items()}
    try:
        peak = matmul_peak()
        if "keras-tf" in workers:
            peak["tensorflow"] = workers["keras-tf"].ask(cmd="peak").get("gflops")
        result["peak_gflops"] = peak
        log("fp32 matmul peak (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items() if v))
        vs = _variants(variants)
        kf = keras_filters or min(filters, 8)
        for layer, size in cases:
            case = {"layer": layer, "size": size, "forward_gflop": patterns.forward_flops(model, layer, size) / 1e9}
            case["step_gflop"] = 2 * case["forward_gflop"]
            case["chunk"] = parallel.balanced_chunk(filters,
                                                    patterns.default_chunk_size(model, layer, size, filters))
            # First-call compile of the timed program, before anything else of this case is compiled (a
            # second compile of the same program in one process is faster: XLA keeps some of its work).
            t = time.perf_counter()
            compiled = patterns.compiled_program(model, layer, size=size, chunk=case["chunk"])
            first_compile_s = time.perf_counter() - t
            case["hlo"] = patterns.check_compiled_program(compiled.as_text())
            xla = xla_step_flops(model, layer, size)
            case["xla_step_gflop"] = xla / 1e9 if xla else None
            fast = xla_step_flops(model, layer, size, exact=False)
            case["xla_step_gflop_executed"] = fast / 1e9 if fast else None
            case["pattern_gflop"] = steps * case["step_gflop"]
            times = {v["name"]: [] for v in vs}
            times.update({k: [] for k in workers})
            compile_s, first_s = {"jaxviz": first_compile_s}, {}
            for v in vs:  # compile the other jaxviz variants ahead of the rounds, timed
                kw = {k: val for k, val in v.items() if k != "name"}
                v["_kw"] = kw
                if v["name"] == "jaxviz":
                    continue
                chunk = parallel.balanced_chunk(filters, kw.get("chunk_size") or case["chunk"])
                t = time.perf_counter()
                patterns.compiled_program(model, layer, size=size, chunk=chunk,
                                          dtype=kw.get("dtype", "float32"), columns=kw.get("columns", True))
                compile_s[v["name"]] = time.perf_counter() - t
            # Workers ask for as many filters as the jaxviz run (so a jaxviz worker compiles the same
            # chunk) or, for Keras's per-filter loops, kf.
            worker_filters = {name: filters if name.startswith("jaxviz") else kf for name in workers}
            for name, w in workers.items():  # first call: build + trace + compile + one filter
                first = 1 if worker_filters[name] == kf else worker_filters[name]
                t = time.perf_counter()
                out = w.ask(cmd="run", layer=layer, size=size, filters=first, steps=steps)
                if "error" in out:
                    log(f"{name}: {out['error']}")
                    times.pop(name, None)
                    continue
                first_s[name] = (time.perf_counter() - t, first)
            peaks = []
            for r in range(rounds):
                peaks.append(matmul_peak(repeats=3)["jax"])  # the machine's rate now, for % of peak
                order = list(vs) + list(workers)
                if r % 2:
                    order = order[::-1]
                for item in order:
                    if isinstance(item, dict):
                        t = time.perf_counter()
                        patterns.filter_patterns(model, layer, range(filters), size=size, steps=steps,
                                                 progress=False, **item["_kw"])
                        times[item["name"]].append((time.perf_counter() - t) / filters)
                    elif item in times:
                        out = workers[item].ask(cmd="run", layer=layer, size=size, filters=worker_filters[item],
                                                steps=steps)
                        if "error" not in out:
                            times[item].append(sum(out["seconds"]) / len(out["seconds"]))
            for name, (t, n) in first_s.items():  # first call minus its steady-state time = build + compile
                if times.get(name):
                    compile_s[name] = max(t - n * _median(times[name]), 0.0)
            case["jax_peak_gflops_rounds"] = peaks
            jax_peak = max(_median(peaks), 1e-9)
            rows = []
            best_peak = max([v for v in peak.values() if v] + [jax_peak])
            for name, ts in times.items():
                if not ts:
                    continue
                sp = _median(ts)
                rows.append({"impl": name, "s_per_pattern": sp, "all": ts,
                             "gflops": case["pattern_gflop"] / sp,
                             "pct_peak_jax": 100 * case["pattern_gflop"] / sp / jax_peak,
                             "pct_best_peak": 100 * case["pattern_gflop"] / sp / best_peak,
                             "compile_s": compile_s.get(name)})
            base = {r["impl"]: r["s_per_pattern"] for r in rows}
            for r in rows:
                for other in ("keras-jax", "keras-tf"):
                    if other in base:
                        r[f"speedup_vs_{other}"] = base[other] / r["s_per_pattern"]
            case["rows"] = rows
            for v in vs:
                v.pop("_kw", None)
            result["cases"].append(case)
            log(format_case(case))
    finally:
        for w in workers.values():
            w.close()
    return result


def format_case(case: dict) -> str:
    xla = f"{case['xla_step_gflop']:.3f}" if case.get("xla_step_gflop") else "n/a"
    peak = _median(case["jax_peak_gflops_rounds"]) if case.get("jax_peak_gflops_rounds") else float("nan")
    head = (f"\n{case['layer']} @ {case['size']} px: {case['pattern_gflop']:.1f} GFLOP/pattern "
            f"(step: 2×fwd {case['step_gflop']:.3f}, XLA {xla} GFLOP; executed with Winograd convs "
            f"{case.get('xla_step_gflop_executed') or float('nan'):.3f}), chunk {case['chunk']}, "
            f"HLO ok={case['hlo']['ok']} scatter={case['hlo']['scatter']} "
            f"conv layouts={case['hlo']['conv_layouts']}; jax matmul peak during the rounds {peak:.0f} GFLOP/s")
    lines = [head, f"{'impl':<22}{'s/pattern':>10}{'GFLOP/s':>9}{'% peak':>8}{'compile s':>10}"
                   f"{'vs keras-jax':>13}{'vs keras-tf':>12}"]
    for r in case["rows"]:
        c = f"{r['compile_s']:.2f}" if r.get("compile_s") is not None else "-"
        kj = f"{r['speedup_vs_keras-jax']:.2f}x" if "speedup_vs_keras-jax" in r else "-"
        kt = f"{r['speedup_vs_keras-tf']:.2f}x" if "speedup_vs_keras-tf" in r else "-"
        lines.append(f"{r['impl']:<22}{r['s_per_pattern']:>10.3f}{r['gflops']:>9.0f}{r['pct_peak_jax']:>7.0f}%"
                     f"{c:>10}{kj:>13}{kt:>12}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="block3_conv1 @ 64 px only, 8 filters, 2 rounds")
    p.add_argument("--cases", default=None,
                   help="comma list of LAYER@SIZE (default: block3_conv1 and block5_conv1 at 64 and 150)")
    p.add_argument("--filters", type=int, default=None, help="filters per jaxviz run (default 64; quick: 8)")
    p.add_argument("--keras-filters", type=int, default=None, help="filters per Keras round (default ≤ 8)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; quick: 2)")
    p.add_argument("--variants", default="full-layer,bf16",
                   help="extra jaxviz variants: full-layer, bf16, chunkN (comma list; '' for none)")
    p.add_argument("--no-keras-jax", action="store_true", help="skip Keras on the JAX backend")
    p.add_argument("--no-keras-tf", action="store_true", help="skip Keras on the TensorFlow backend")
    p.add_argument("--no-xla-defaults", action="store_true",
                   help="skip jaxviz under JAX's default XLA:CPU flags (YNNPACK convolutions; see jaxviz.xla_cpu)")
    p.add_argument("--tf-python", default=None,
                   help="interpreter with TensorFlow (default: $JAXVIZ_TF_PYTHON, else this one if it has TF)")
    p.add_argument("--out", default=None, help="write every number to this JSON file")


def main_from_args(args) -> int:
    if args.cases:
        cases = []
        for item in args.cases.split(","):
            layer, _, size = item.partition("@")
            cases.append((layer.strip(), int(size or 64)))
    else:
        cases = QUICK_CASES if args.quick else CASES
    filters = args.filters or (8 if args.quick else 64)
    rounds = args.rounds or (2 if args.quick else 3)
    result = run(cases, filters=filters, steps=args.steps, rounds=rounds, variants=args.variants,
                 keras_jax=not args.no_keras_jax, keras_tf=not args.no_keras_tf, tf_python=args.tf_python,
                 keras_filters=args.keras_filters, xla_defaults=not args.no_xla_defaults)
    if args.out:
        from jaxviz.cli.common import save_json

        save_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_patterns", description=__doc__.split("\n")[0])
    add_arguments(p)
    return main_from_args(p.parse_args(argv))


if __name__ == "__main__":
    if "--keras-worker" in sys.argv:
        _keras_worker()
    elif "--jaxviz-worker" in sys.argv:
        _jaxviz_worker()
    else:
        sys.exit(main())
