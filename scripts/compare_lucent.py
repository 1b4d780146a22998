#!/usr/bin/env python3
"""Compare jaxviz's regularised filter patterns with Lucent's on the same weights: colour and contrast.

Lucent (``pip install torch-lucent``; the PyTorch port of lucid, Olah et al., "Feature Visualization",
Distill 2017) renders a channel by Adam on a decorrelated Fourier image mapped through a sigmoid to
[0, 1], and shows that image as is. This script runs its ``render_vis`` and jaxviz's
``filter_patterns(method="regularised")`` on the same network (built in PyTorch from jaxviz's params:
conv kernels HWIO → OIHW), layer, filters, image size, steps and learning rate, and reports per image

- saturation: the mean of HSV's S = (max − min) / max over the pixels, and
- contrast: the standard deviation of the luminance 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601),

both of RGB in [0, 1], for Lucent's images (its sigmoid image, as ``render_vis`` returns it), jaxviz's as
its CLI and figures show them (``jaxviz``: :func:`jaxviz.visualize.patterns.display_images`, the model-space
result mapped back to RGB: its sigmoid image) and jaxviz's through the book's contrast stretch
(``jaxviz_book_stretch``: ``deprocess_image``, mean 0.5 and standard deviation 0.1, listing 5.37; how they
were shown before), with the ratios of their means over the filters to Lucent's.

Matched on both sides:
- Parametrisation: lucid's ``fft_image`` (rfft2 coefficients N(0, 0.01²) scaled by 1/f, irfft2 with the
  orthonormal norm, divided by 4), the ImageNet colour decorrelation normalised by its largest column norm,
  sigmoid (Lucent's ``param.image(size, batch=F)``; jaxviz's defaults).
- Objective: the mean over positions of the filter's channel of the conv's output before its ReLU (Lucent's
  ``objectives.channel`` on the hooked ``Conv2d``; jaxviz's ``pre_relu=True``), image ``i`` for filter ``i``.
- Optimiser: Adam, learning rate ``--lr`` (both default 0.05), ``--steps`` steps.
- Model input: RGB [0, 1] → the model's preprocessing (Keras "caffe" for VGG: BGR · 255 minus the ImageNet
  means), jaxviz's ``jaxviz.optvis.param.to_model_space`` on both sides, in place of Lucent's torchvision
  normalisation (``render_vis(preprocess=False)`` and the same map appended to its transforms).
- Transforms: Lucent's ``standard_transforms`` (pad 12 with 0.5, jitter 8, scale 0.9–1.1, rotate ±10°,
  jitter 4) followed by a centre crop to the image size, which jaxviz's
  ``jaxviz.optvis.transforms.random_transform`` does (its program has fixed shapes);
  ``fixed_image_size=size`` stops Lucent from upsampling small images to 224 px (a
  resize from ``size`` to ``size``: the identity). jaxviz's defaults (pad 12 with 0.5, shift ±6 px,
  scale ±0.1, rotate ±10°) draw uniformly where Lucent picks from lists (whole-pixel shifts of 0–7 then 0–3
  px, down and right; scales 0.90, 0.92, …, 1.10; angles −10…10° with 0 six times as likely), and rotate
  with periodic shears (what leaves one side of the padded image comes back on the other) where Lucent's
  kornia warp fills with 0. The random numbers differ; the statistics are means over a layer's filters.

Lucent's ``transform`` module needs kornia 0.4 (``pip install --no-deps torch-lucent kornia==0.4.1``: both
would otherwise pull another torch) and imports torchvision for one class (see :func:`import_lucent`).

Usage:
  python scripts/compare_lucent.py          # vgg_demo (trained): all 64 filters of block4_conv1, 64 px, 256 steps
  python scripts/compare_lucent.py --arch vgg16 --weights random:0 --layer block4_conv1 --filters 0:8 \\
      --png out/lucent_vs_jaxviz.png         # seeded VGG16 (ImageNet weights need a download)
  python scripts/compare_lucent.py --layer block3_conv1 --size 32 --steps 64 \\
      --fixture tests/fixtures/lucent/vgg_demo_block3_conv1.json      # the CI test's reference numbers
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jaxviz  # noqa: E402
from jaxviz.images import deprocess_image  # noqa: E402
from jaxviz.optvis import param  # noqa: E402
from jaxviz.visualize import patterns  # noqa: E402

#: ITU-R BT.601 luma weights (R, G, B).
LUMA = np.asarray((0.299, 0.587, 0.114), np.float32)


# ---------------------------------------------------------------------------------------------------------
# Statistics


def colour_statistics(rgb) -> dict:
    """Per-image saturation (mean HSV S) and contrast (std of BT.601 luminance) of ``[N, H, W, 3]`` in [0, 1]."""
    rgb = np.clip(np.asarray(rgb, np.float64), 0.0, 1.0)
    hi, lo = rgb.max(axis=-1), rgb.min(axis=-1)
    sat = np.where(hi > 0, (hi - lo) / np.where(hi > 0, hi, 1.0), 0.0).mean(axis=(1, 2))
    contrast = (rgb @ LUMA.astype(np.float64)).std(axis=(1, 2))
    return {"saturation": sat.tolist(), "contrast": contrast.tolist()}


def summary(stats: dict) -> dict:
    return {k: float(np.mean(v)) for k, v in stats.items()}


def ratios(ours: dict, theirs: dict) -> dict:
    """Mean over the filters of ours / mean of theirs, per statistic."""
    a, b = summary(ours), summary(theirs)
    return {k: a[k] / b[k] for k in b}


# ---------------------------------------------------------------------------------------------------------
# Lucent on the same network


def import_lucent():
    """Lucent's render, param, objectives and transform modules.

    ``lucent.optvis.transform`` imports torchvision for one class (``Normalize``, used only by its
    ``preprocess=True`` path, not here); the PyPI torchvision is built against the CUDA torch and does not
    load with the CPU one, so when it cannot be imported a placeholder module with a plain ``Normalize``
    stands in. Its ``lucent.modelzoo`` (torchvision models) is never imported.
    """
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:  # ImportError, or the CUDA build's RuntimeError / OSError
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        tv, tvt = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")

        class Normalize:
            def __init__(self, mean, std):
                import torch

                self.mean = torch.tensor(mean)[:, None, None]
                self.std = torch.tensor(std)[:, None, None]

            def __call__(self, t):
                return (t - self.mean) / self.std

        tvt.Normalize = Normalize
        tv.transforms = tvt
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tvt
    from lucent.optvis import objectives, param, render, transform

    return render, param, objectives, transform


def torch_features(model, layer: str, pre_relu: bool = True):
    """``model``'s VGG feature layers up to ``layer`` as a PyTorch ``nn.Sequential`` with Keras's layer names.

    Each conv is a ``Conv2d`` named like the Keras layer (``block4_conv1``) followed by an ``nn.ReLU``
    named ``<conv>_relu``: Lucent hooks modules by name, so ``block4_conv1`` is the conv's output before its
    ReLU. The network stops at ``layer`` (or its ReLU with ``pre_relu=False``): later layers cannot change
    the objective.
    """
    import torch
    from torch import nn

    p = {k: {n: np.asarray(v) for n, v in d.items()} for k, d in model.params.items()}
    layers = OrderedDict()
    a = model.arch
    for b, n_conv in enumerate(a.convs_per_block, start=1):
        for i in range(1, n_conv + 1):
            name = f"block{b}_conv{i}"
            k = p[name]
            conv = nn.Conv2d(k["kernel"].shape[2], k["kernel"].shape[3], 3, padding=1)
            conv.weight.data = torch.from_numpy(np.ascontiguousarray(k["kernel"].transpose(3, 2, 0, 1)))
            conv.bias.data = torch.from_numpy(k["bias"].copy())
            layers[name] = conv
            if name == layer and pre_relu:
                return nn.Sequential(layers).eval()
            layers[f"{name}_relu"] = nn.ReLU()
            if name == layer:
                return nn.Sequential(layers).eval()
        layers[f"block{b}_pool"] = nn.MaxPool2d(2)
    raise SystemExit(f"{layer!r} is not a conv layer of {a.name}")


def lucent_patterns(net, layer: str, filters, size: int, steps: int, lr: float, seed: int, mode: str,
                    pre_relu: bool = True) -> np.ndarray:
    """Lucent's ``render_vis`` of ``filters`` of ``layer`` (image ``i`` for filter ``filters[i]``): ``[F, S, S, 3]``
    RGB in [0, 1], its sigmoid image as is."""
    import torch

    render, param, objectives, transform = import_lucent()
    torch.manual_seed(seed)
    np.random.seed(seed)  # Lucent's transforms draw with numpy
    hooked = layer if pre_relu else f"{layer}_relu"
    objective = objectives.Objective.sum(
        [objectives.channel(hooked, int(f), batch=i) for i, f in enumerate(filters)])

    def centre_crop(t):
        h, w = t.shape[2:]
        top, left = (h - size) // 2, (w - size) // 2
        return t[:, :, top: top + size, left: left + size]

    transforms = list(transform.standard_transforms) + [centre_crop, _model_space_fn(mode)]
    images = render.render_vis(
        net, objective, lambda: param.image(size, batch=len(filters)), optimizer=lambda p: torch.optim.Adam(p, lr=lr),
        transforms=transforms, thresholds=(steps,), preprocess=False, progress=False, show_image=False,
        fixed_image_size=size)
    return np.asarray(images[-1], np.float32)


def _model_space_fn(mode: str):
    """RGB [0, 1] NCHW torch → the model's input (jaxviz's ``_to_model_space``, written in torch)."""
    import torch

    if mode == "caffe":
        mean = torch.tensor(np.asarray(param.BGR_MEAN), dtype=torch.float32)[None, :, None, None]
        return lambda t: t.flip(1) * 255.0 - mean
    if mode == "tf":
        return lambda t: t * 2.0 - 1.0
    if mode == "torch":
        mean = torch.tensor((0.485, 0.456, 0.406))[None, :, None, None]
        std = torch.tensor((0.229, 0.224, 0.225))[None, :, None, None]
        return lambda t: (t - mean) / std
    return lambda t: t * 255.0


# ---------------------------------------------------------------------------------------------------------
# The comparison


def compare(model, layer: str, filters, size: int, steps: int, lr: float = 0.05, seed: int = 0,
            jaxviz_options: dict | None = None, lucent: bool = True) -> dict:
    """Runs both (Lucent only with ``lucent``) and returns their images and statistics."""
    mode = getattr(model, "preprocess", "caffe")
    kind, _, where = str(model.source).rpartition(":")
    source = f"{kind}:{Path(where).name}" if kind else Path(where).name  # a file's name, not where it is here
    out = {"settings": {"arch": model.arch.name, "weights": source, "layer": layer,
                        "filters": [int(f) for f in filters], "size": size, "steps": steps, "lr": lr,
                        "seed": seed, "jaxviz_options": jaxviz_options or {}}}
    t0 = time.perf_counter()
    x = patterns.filter_patterns(model, layer, filters, size=size, steps=steps, step_size=lr, seed=seed,
                                 method="regularised", progress=False, **(jaxviz_options or {}))
    out["jaxviz_seconds"] = time.perf_counter() - t0
    ours = patterns.display_images(x, "regularised", mode).astype(np.float32) / 255.0
    stretched = deprocess_image(x, bgr_to_rgb=(mode == "caffe")).astype(np.float32) / 255.0
    out["images"] = {"jaxviz": ours, "jaxviz_book_stretch": stretched}
    out["stats"] = {"jaxviz": colour_statistics(ours), "jaxviz_book_stretch": colour_statistics(stretched)}
    if lucent:
        net = torch_features(model, layer)
        t0 = time.perf_counter()
        theirs = lucent_patterns(net, layer, filters, size, steps, lr, seed, mode)
        out["lucent_seconds"] = time.perf_counter() - t0
        from importlib.metadata import version

        out["settings"]["versions"] = {p: version(p) for p in ("torch-lucent", "kornia", "torch", "jax")}
        out["images"]["lucent"] = theirs
        out["stats"]["lucent"] = colour_statistics(theirs)
        out["ratios"] = {k: ratios(out["stats"][k], out["stats"]["lucent"]) for k in ("jaxviz", "jaxviz_book_stretch")}
    return out


def format_report(result: dict) -> str:
    s = result["settings"]
    lines = [f"{s['arch']} ({s['weights']}) {s['layer']}, {len(s['filters'])} filters, {s['size']} px, "
             f"{s['steps']} Adam steps of {s['lr']}",
             f"{'render':<22}{'saturation':>12}{'contrast':>12}{'sat. ratio':>12}{'contr. ratio':>14}"]
    for name, st in result["stats"].items():
        m = summary(st)
        r = result.get("ratios", {}).get(name)
        tail = f"{r['saturation']:>12.3f}{r['contrast']:>14.3f}" if r else ""
        lines.append(f"{name:<22}{m['saturation']:>12.3f}{m['contrast']:>12.3f}{tail}")
    return "\n".join(lines)


def save_png(result: dict, path: Path) -> None:
    """Rows: Lucent, jaxviz (``display_images``), jaxviz through the book's ``deprocess_image``; a column per filter."""
    from jaxviz.images import save_png as write
    from jaxviz.render import image_grid

    rows = [result["images"][k] for k in ("lucent", "jaxviz", "jaxviz_book_stretch") if k in result["images"]]
    imgs = np.concatenate(rows)
    u8 = np.clip(np.round(imgs * 255), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, image_grid(u8, cols=len(rows[0]), margin=2, fill=0, order="rows"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="vgg_demo")
    ap.add_argument("--weights", default=None, help="weights (default: the arch's own; vgg16: random:0)")
    ap.add_argument("--layer", default="block4_conv1")
    ap.add_argument("--filters", default=None, help="e.g. 0:16 (default: all of the layer's, at most 64)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png", type=Path, help="side-by-side grid: Lucent, jaxviz, jaxviz with the book's stretch")
    ap.add_argument("--json", type=Path, help="the per-image statistics and ratios")
    ap.add_argument("--fixture", type=Path, help="write Lucent's statistics and the settings (for the CI test)")
    args = ap.parse_args(argv)
    if args.weights is not None:
        model = jaxviz.load(args.arch, args.weights, include_top=False)
    elif args.arch == "vgg16":  # ImageNet weights need a download; seeded ones are always there
        model = jaxviz.load(args.arch, "random:0", include_top=False)
    else:
        model = jaxviz.load(args.arch, include_top=False)
    channels = model.channels(args.layer)
    if args.filters is None:
        filters = list(range(min(64, channels)))
    else:
        from jaxviz.cli import common

        filters = common.parse_index_list(args.filters, channels)
    result = compare(model, args.layer, filters, args.size, args.steps, args.lr, args.seed)
    print(format_report(result))
    print(f"time: jaxviz {result['jaxviz_seconds']:.1f} s, Lucent {result['lucent_seconds']:.1f} s")
    public = {k: v for k, v in result.items() if k != "images"}
    if args.json:
        args.json.write_text(json.dumps(public, indent=1) + "\n")
    if args.fixture:
        fixture = {"settings": result["settings"], "lucent": result["stats"]["lucent"],
                   "lucent_mean": summary(result["stats"]["lucent"]),
                   "when_written": {k: summary(result["stats"][k]) for k in ("jaxviz", "jaxviz_book_stretch")},
                   "written_by": "scripts/compare_lucent.py " + " ".join(sys.argv[1:] if argv is None else argv)}
        args.fixture.parent.mkdir(parents=True, exist_ok=True)
        args.fixture.write_text(json.dumps(fixture, indent=1) + "\n")
    if args.png:
        save_png(result, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
