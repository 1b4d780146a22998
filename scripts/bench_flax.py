"""Benchmark: jaxviz on a Flax VGG16 module against hand-written jitted JAX loops on the same module.

The module is :func:`jaxviz.models.vgg16` (NNX, seeded random weights unless ``--weights``) made a jaxviz
model with :func:`jaxviz.from_flax`. Each contender is timed after a warm-up call (compile excluded); each
round runs both back to back, which one first alternating, so a noisy shared machine affects both alike. The
ratio is the median of the per-round ratios (in brackets: the ratio of the best rounds):

- saliency: ``jaxviz.saliency`` vs ``jax.jit(jax.grad(score of the module))``;
- Grad-CAM: ``jaxviz.gradcam`` (logit) vs a jitted forward to ``block5_conv3``, ``jax.grad`` of the rest and
  the book's weighting, written by hand over the module's layers;
- filter patterns: ``jaxviz.filter_patterns`` (method "keras") vs a jitted ``fori_loop`` of the book's
  normalised gradient ascent on a batch of filters, the module run up to the layer.

Both sides do the same work, with one difference in jaxviz's disfavour: its saliency and Grad-CAM programs
also compute the logits' last layer and their arg-max (a target of ``-1`` is resolved inside the program,
and Grad-CAM returns the probabilities), where the hand-written ones, given the target, let XLA drop that
layer's forward product (4096 × 1000 weights, under 1 % of a pass). The hand-written loops are the plain
JAX a user would write: the module's own layers, ``jax.grad``, ``lax.fori_loop``.

It prints one line per task with both times and their ratio (jaxviz / hand-written; ≤ 1 is as fast), and
the largest difference of the two results relative to the largest value: float32 rounding, which the
normalised ascent of the patterns amplifies over its steps (after 5 steps they agree to 1e-7).
Run ``python scripts/bench_flax.py`` (``--quick``: fewer rounds, 4 filters).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# Run from a checkout without installing: make the repository's jaxviz importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import jaxviz  # noqa: E402
from jaxviz import models  # noqa: E402


def timed_rounds(rounds: int, fns: dict) -> dict:
    """``{name: [seconds per round]}`` of each ``fn()`` (already warm); each round runs every ``fn`` once,
    in an order that alternates from round to round."""
    times = {k: [] for k in fns}
    for r in range(rounds):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t = time.perf_counter()
            jax.block_until_ready(fns[k]())
            times[k].append(time.perf_counter() - t)
    return times


def layers_up_to(net, layer: str):
    order = list(net.layer_order)
    return order[: order.index(layer) + 1], order[order.index(layer) + 1:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="random:0", help="as jaxviz.models.vgg16 (default random:0)")
    ap.add_argument("--batch", type=int, default=1, help="images per saliency / Grad-CAM call")
    ap.add_argument("--layer", default="block3_conv1", help="filter-pattern layer")
    ap.add_argument("--size", type=int, default=64, help="filter-pattern image side")
    ap.add_argument("--filters", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.filters = 2, 4

    net = models.vgg16(args.weights, classifier_activation=None)
    model = jaxviz.from_flax(net, input_shape=(224, 224, 3), preprocess="caffe", name="vgg16_flax")
    graphdef, state = nnx.split(net)
    x = jnp.asarray(np.random.default_rng(0).normal(0, 50, (args.batch, 224, 224, 3)).astype(np.float32))
    target = jnp.zeros((args.batch,), jnp.int32)
    rows = jnp.arange(args.batch)

    # --- saliency ---------------------------------------------------------------------------------------
    @jax.jit
    def hand_saliency(state, x):
        g = jax.grad(lambda v: nnx.merge(graphdef, state)(v)[rows, target].sum())(x)
        return jnp.abs(g).max(axis=-1)

    # --- Grad-CAM -----------------------------------------------------------------------------------------
    before, after = layers_up_to(net, "block5_conv3")

    @jax.jit
    def hand_gradcam(state, x):
        m = nnx.merge(graphdef, state)
        a = x
        for name in before:
            a = getattr(m, name)(a)

        def head(a):
            for name in after:
                a = getattr(m, name)(a)
            return a[rows, target].sum()

        g = jax.grad(head)(a)
        cam = jnp.maximum(jnp.einsum("nhwc,nc->nhw", a, g.mean(axis=(1, 2))) / a.shape[-1], 0)
        return cam / jnp.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-30)

    # --- filter patterns ----------------------------------------------------------------------------------
    up_to, _ = layers_up_to(net, args.layer)
    filters = jnp.arange(args.filters)
    x0 = jnp.asarray(np.random.default_rng(1).uniform(-20, 20, (args.filters, args.size, args.size, 3))
                     .astype(np.float32))

    @jax.jit
    def hand_patterns(state, x0):
        m = nnx.merge(graphdef, state)

        def objective(v):
            for name in up_to:
                v = getattr(m, name)(v)
            return (v.mean(axis=(1, 2)) * jax.nn.one_hot(filters, v.shape[-1])).sum()

        def step(_, v):
            g = jax.grad(objective)(v)
            return v + g / (jnp.sqrt(jnp.mean(g * g, axis=(1, 2, 3), keepdims=True)) + 1e-5)

        return jax.lax.fori_loop(0, args.steps, step, x0)

    tasks = {
        "saliency": (lambda: jaxviz.saliency(model, x, target=target),
                     lambda: hand_saliency(state, x)),
        "gradcam": (lambda: jaxviz.gradcam(model, x, target=target, score="logit"),
                    lambda: hand_gradcam(state, x)),
        f"patterns {args.layer} {args.size}px x{args.filters}": (
            lambda: jaxviz.filter_patterns(model, args.layer, list(range(args.filters)), size=args.size,
                                           steps=args.steps, init=np.asarray(x0), progress=False),
            lambda: hand_patterns(state, x0)),
    }
    print(f"jaxviz on a Flax VGG16 (NNX, {args.weights}) vs hand-written jitted JAX on the same module; "
          f"{jax.devices()[0].platform}, {args.rounds} rounds; median (best) seconds, median per-round ratio "
          "(ratio of the best rounds)")
    for name, (ours, hand) in tasks.items():
        a, b = np.asarray(ours()), np.asarray(hand())  # warm-up (compiles), and the two agree
        err = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
        t = timed_rounds(args.rounds, {"jaxviz": ours, "hand": hand})
        ratio = statistics.median(a / b for a, b in zip(t["jaxviz"], t["hand"]))
        best = min(t["jaxviz"]) / min(t["hand"])
        print(f"{name:34s} jaxviz {statistics.median(t['jaxviz']) * 1e3:8.1f} ({min(t['jaxviz']) * 1e3:.1f}) ms   "
              f"hand {statistics.median(t['hand']) * 1e3:8.1f} ({min(t['hand']) * 1e3:.1f}) ms   "
              f"ratio {ratio:.3f} ({best:.3f})   (max rel diff {err:.1e})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
