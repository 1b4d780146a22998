#!/usr/bin/env python3
"""Trains the demo networks (``vgg_demo``, ``vgg_demo_gap``) on procedural scenes and writes their weights.

    python scripts/train_demo.py                    # reproduces weights/demo/*.npz (seed 0), ~14 min on 2 busy cores
    python scripts/train_demo.py --steps 50 --out /tmp/demo --no-copy   # a quick smoke run

One convolutional trunk with both heads — Keras VGG's flatten/fc1/fc2/predictions and the CAM head
(global average pooling → predictions) — trained jointly with Adam on fresh scenes every step
(``make_scenes(batch, seed=(seed, step))``, so no scene is seen twice and the run is a function of the
seed). The sum of the two heads' cross-entropies is minimised; each exported model is the trunk plus one
head. Inputs are ``preprocess_input`` of RGB 0..255 images, as for VGG16; during training they are scaled
by 1/64 (so Adam's step suits the first layer) and that scale is folded into ``block1_conv1``'s kernel on
export, so the shipped models take plain ``preprocess_input`` output.

Prints the held-out accuracy of each exported model on scenes from a seed never used in training, and
writes ``<out>/vgg_demo.npz`` and ``<out>/vgg_demo_gap.npz`` (jaxviz's pickle-free converted format, with
the seed and accuracy in the metadata; byte-reproducible: fixed zip timestamps), ``<out>/SHA256SUMS``, and
copies both files to ``jaxviz/data/`` (package data) unless ``--no-copy``. Every file is written to a
temporary name and renamed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jaxviz import graph, ops  # noqa: E402
from jaxviz.atomic import write_bytes  # noqa: E402
from jaxviz.demo import VGG_DEMO, VGG_DEMO_GAP, make_scenes  # noqa: E402
from jaxviz.frontends import vgg  # noqa: E402
from jaxviz.images import preprocess_input  # noqa: E402
from jaxviz.model import Model  # noqa: E402

INPUT_SCALE = 1.0 / 64  # training-time input scale, folded into block1_conv1 on export
EVAL_SEED = 10_000  # held-out scenes: training uses seeds (seed, step), never a bare int


def init_params(seed: int, block1_init: float = 1.0) -> dict:
    """Trunk + flatten head from ``vgg.random_params``, plus the CAM head as ``gap_predictions``.

    ``block1_conv1``'s He-normal kernel is multiplied by ``block1_init``: with a small start, what the first
    layer ends up with is what it learned rather than its random initialisation (8 filters of 27 weights
    barely move from a full-size random start, and their pictures look like noise).
    """
    params = vgg.random_params(VGG_DEMO, True, seed)
    params["block1_conv1"]["kernel"] = params["block1_conv1"]["kernel"] * np.float32(block1_init)
    rng = np.random.default_rng([seed, 1])
    c = VGG_DEMO_GAP.block_features[-1]
    params["gap_predictions"] = {
        "kernel": rng.standard_normal((c, VGG_DEMO_GAP.num_classes), dtype=np.float32) * np.float32(
            np.sqrt(1.0 / c)),
        "bias": np.zeros(VGG_DEMO_GAP.num_classes, np.float32),
    }
    return params


def split(params: dict) -> tuple[dict, dict]:
    """The joint tree → (vgg_demo params, vgg_demo_gap params), with the input scale folded in."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
    p["block1_conv1"] = {"kernel": p["block1_conv1"]["kernel"] * np.float32(INPUT_SCALE),
                         "bias": p["block1_conv1"]["bias"]}
    trunk = {k: v for k, v in p.items() if k.startswith("block")}
    flat = {**trunk, **{k: p[k] for k in ("fc1", "fc2", "predictions")}}
    gap = {**trunk, "predictions": p["gap_predictions"]}
    return flat, gap


def make_train_step(optimizer):
    flat_model = graph.Network(vgg.build_graph(VGG_DEMO), ops.EXACT)

    def loss_fn(params, x, y):
        model_params = {k: v for k, v in params.items() if k != "gap_predictions"}
        logits, taps = flat_model.apply({"params": model_params}, x, upto="logits", taps=("block4_pool",))
        pooled = taps["block4_pool"].mean(axis=(1, 2))
        gap_logits = pooled @ params["gap_predictions"]["kernel"] + params["gap_predictions"]["bias"]
        l_flat = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        l_gap = optax.softmax_cross_entropy_with_integer_labels(gap_logits, y).mean()
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return l_flat + l_gap, (l_flat, l_gap, acc)

    @jax.jit
    def step(params, opt_state, images, y):
        x = preprocess_input(images.astype(jnp.float32)) * INPUT_SCALE
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, aux

    return step


def accuracy(model: Model, images: np.ndarray, labels: np.ndarray) -> float:
    probs = model.predict(preprocess_input(images), batch_size=250)
    return float(np.mean(probs.argmax(-1) == labels))


def npz_bytes(params: dict, meta: dict) -> bytes:
    """jaxviz's converted format (``layer/kernel``, ``layer/bias``, JSON metadata as uint8), byte-reproducible.

    Same layout as :func:`jaxviz.weights.save_converted` writes (read back with ``load_converted``), but
    with fixed zip timestamps and key order so equal params give equal bytes, and extra metadata (seed,
    accuracy). ``np.savez`` stamps the current time into the zip.
    """
    from jaxviz import weights

    meta_key = getattr(weights, "META_KEY", "__jaxviz_meta__")
    arrays = {f"{n}/{leaf}": np.ascontiguousarray(params[n][leaf], np.float32)
              for n in params for leaf in ("kernel", "bias")}
    arrays[meta_key] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf8"), np.uint8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            a = io.BytesIO()
            np.lib.format.write_array(a, arr, allow_pickle=False)
            z.writestr(info, a.getvalue())
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--block1-init", type=float, default=0.1, help="scale of block1_conv1's initial kernel")
    ap.add_argument("--eval-n", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=ROOT / "weights" / "demo")
    ap.add_argument("--no-copy", action="store_true", help="don't copy the files to jaxviz/data")
    ap.add_argument("--log-every", type=int, default=100)
    args = ap.parse_args(argv)

    from jaxviz import __version__, weights

    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(200, args.steps // 10 + 1), args.steps,
                                                  args.lr * 0.01)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(schedule, weight_decay=args.weight_decay))
    params = jax.tree_util.tree_map(jnp.asarray, init_params(args.seed, args.block1_init))
    opt_state = optimizer.init(params)
    step_fn = make_train_step(optimizer)

    t0 = time.perf_counter()
    t_data = 0.0
    run = np.zeros(3)
    for step in range(args.steps):
        td = time.perf_counter()
        images, labels, _ = make_scenes(args.batch, 64, seed=(args.seed, step))
        t_data += time.perf_counter() - td
        params, opt_state, aux = step_fn(params, opt_state, images, labels)
        run += np.asarray(aux)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            k = (step % args.log_every) + 1
            l_flat, l_gap, acc = run / k
            run[:] = 0
            el = time.perf_counter() - t0
            print(f"step {step + 1:5d}  loss flat {l_flat:.4f} gap {l_gap:.4f}  train acc {acc:.3f}  "
                  f"lr {float(schedule(step)):.2e}  {el:6.0f} s (data {t_data:.0f} s)", flush=True)
    train_s = time.perf_counter() - t0

    flat, gap = split(params)
    ev_images, ev_labels, _ = make_scenes(args.eval_n, 64, seed=EVAL_SEED)
    acc = {a.name: accuracy(Model(a, p), ev_images, ev_labels) for a, p in ((VGG_DEMO, flat), (VGG_DEMO_GAP, gap))}
    print(f"trained {args.steps} steps × {args.batch} in {train_s:.0f} s; held-out accuracy on {args.eval_n} "
          f"scenes (seed {EVAL_SEED}): " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()), flush=True)

    sums = []
    for a, p in ((VGG_DEMO, flat), (VGG_DEMO_GAP, gap)):
        meta = {
            "format": getattr(weights, "FORMAT_NAME", "jaxviz-weights"),
            "format_version": getattr(weights, "FORMAT_VERSION", 1),
            "arch": a.name, "include_top": True, "jaxviz_version": __version__,
            "source": "scripts/train_demo.py", "source_md5": None,
            "seed": args.seed, "block1_init": args.block1_init, "steps": args.steps, "batch": args.batch, "lr": args.lr,
            "weight_decay": args.weight_decay,
            "heldout_accuracy": round(acc[a.name], 4), "heldout_n": args.eval_n, "heldout_seed": EVAL_SEED,
            "input": "jaxviz.images.preprocess_input of RGB 0..255 (BGR, mean-subtracted), 64x64",
        }
        data = npz_bytes(p, meta)
        dst = args.out / f"{a.name}.npz"
        write_bytes(dst, data)
        # Read it back through jaxviz's own reader: the tree must match the architecture exactly.
        if hasattr(weights, "load_converted"):
            back = weights.load_converted(dst, a, True)
            assert all(np.array_equal(back[n][k], p[n][k]) for n in p for k in ("kernel", "bias"))
        digest = hashlib.sha256(data).hexdigest()
        sums.append(f"{digest}  {dst.name}")
        print(f"wrote {dst} ({len(data) / 1024:.0f} KiB, sha256 {digest})")
        if not args.no_copy:
            pkg = ROOT / "jaxviz" / "data" / dst.name
            write_bytes(pkg, data)
            print(f"copied to {pkg}")
    write_bytes(args.out / "SHA256SUMS", ("\n".join(sums) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
