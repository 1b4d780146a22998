#!/usr/bin/env python3
"""Compare jaxviz's attribution methods with Captum on the same VGG weights and image: values and speed.

The same network is built in PyTorch from jaxviz's params (no torchvision needed): conv kernels HWIO →
OIHW, images NHWC → NCHW, and the classifier flattens the last feature map in NHWC order so ``fc1`` sees
Keras's H·W·C layout. Every ReLU is its own ``nn.ReLU`` module (Captum's guided backprop/deconvolution
hooks need modules); the torch model returns logits, so Captum explains logits — jaxviz's default score.

Each method is run on both sides with matched settings and compared with the relative error
``max|jaxviz − captum| / max|captum|`` (channels-first Captum output moved to channels last). Then both
sides are timed on the same batch in the same process (warm: compiled / first call done; median of
``--repeats``), and the images/s ratio jaxviz / Captum is printed.

Definitional differences, and how they are matched here:
- Saliency: Captum's ``abs=True`` default is jaxviz's ``abs=True``; jaxviz then reduces over channels with
  a max (``reduce="max"``, Simonyan et al.), compared here with ``reduce=None``.
- IntegratedGradients: same rules and names; Captum's ``riemann_trapezoid`` weights sum to 1 − 1/steps
  and jaxviz keeps that for parity. Captum's default ``internal_batch_size=None`` runs all steps at once;
  both sides are timed with the same chunk size.
- LayerGradCam: Captum sums ``α_k A_k`` over channels and applies no ReLU or scaling; jaxviz's ``gradcam``
  (the book's) averages, applies ReLU and divides by the maximum, so ``relu(captum) / max`` is compared.
- GuidedGradCam: Captum upsamples Grad-CAM with ``"nearest"`` by default, the paper (and jaxviz's default)
  bilinearly; both are compared with matched ``interpolation`` / ``interpolate_mode``.
- Occlusion: same window positions (``ceil((H − k) / s) + 1`` per axis, the last one clipped at the
  border) and the same averaging of score drops over the windows covering a pixel. Both sides evaluate
  the same number of occluded images per call (Captum's ``perturbations_per_eval`` = jaxviz's chunk).
- SmoothGrad (NoiseTunnel) and LIME draw different random numbers; they are timed, not compared.
  Captum's NoiseTunnel ``stdevs`` is absolute; jaxviz's ``noise`` is a fraction of the image's range,
  converted here.

Usage:
  python scripts/compare_captum.py                        # vgg16, random:0 weights, 224×224, short
  python scripts/compare_captum.py --arch vgg_tiny --batch 4 --json out.json
  python scripts/compare_captum.py --weights imagenet --image chelsea --methods saliency,ig
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

import jaxviz  # noqa: E402

# Functions from their modules: the package may re-export them under the modules' own names.
from jaxviz.attribution.gradcam import gradcam  # noqa: E402
from jaxviz.attribution.guided import deconvnet, guided_backprop  # noqa: E402
from jaxviz.attribution.guided_gradcam import guided_gradcam  # noqa: E402
from jaxviz.attribution.integrated_gradients import integrated_gradients  # noqa: E402
from jaxviz.attribution.occlusion import occlusion  # noqa: E402
from jaxviz.attribution.saliency import saliency  # noqa: E402
from jaxviz.attribution.smoothgrad import smoothgrad  # noqa: E402

METHODS = ("saliency", "integrated_gradients", "guided_backprop", "deconvnet", "gradcam", "guided_gradcam",
           "guided_gradcam_bilinear", "occlusion", "smoothgrad")
ALIASES = {"ig": "integrated_gradients", "gbp": "guided_backprop", "deconv": "deconvnet"}


# ---------------------------------------------------------------------------------------------------------
# The same VGG in PyTorch


def torch_vgg(model):
    """A ``torch.nn.Module`` computing ``model``'s logits from NCHW input, with ``model``'s weights.

    Returns ``(module, last_conv_relu)``; the second is the ``nn.ReLU`` whose output is Keras's output of
    the last conv layer (the layer Grad-CAM taps).
    """
    import torch
    from torch import nn

    p = {k: {n: np.asarray(v) for n, v in d.items()} for k, d in model.params.items()}
    a = model.arch
    if a.head != "flatten":
        raise SystemExit("only the Keras VGG head (flatten) is supported")

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            layers = []
            for b, (n_conv, _) in enumerate(zip(a.convs_per_block, a.block_features), start=1):
                for i in range(1, n_conv + 1):
                    k = p[f"block{b}_conv{i}"]
                    conv = nn.Conv2d(k["kernel"].shape[2], k["kernel"].shape[3], 3, padding=1)
                    conv.weight.data = torch.from_numpy(np.ascontiguousarray(k["kernel"].transpose(3, 2, 0, 1)))
                    conv.bias.data = torch.from_numpy(k["bias"].copy())
                    layers += [conv, nn.ReLU()]
                layers.append(nn.MaxPool2d(2))
            self.features = nn.Sequential(*layers)
            head = []
            for name in [f"fc{i}" for i in range(1, len(a.fc_features) + 1)] + ["predictions"]:
                lin = nn.Linear(*p[name]["kernel"].shape)
                lin.weight.data = torch.from_numpy(np.ascontiguousarray(p[name]["kernel"].T))
                lin.bias.data = torch.from_numpy(p[name]["bias"].copy())
                head += [lin, nn.ReLU()] if name != "predictions" else [lin]
            self.classifier = nn.Sequential(*head)

        def forward(self, x):
            f = self.features(x)
            # Keras flattens channels-last: H·W·C order.
            return self.classifier(f.permute(0, 2, 3, 1).reshape(f.shape[0], -1))

    net = VGG().eval()
    last_relu = [m for m in net.features if isinstance(m, nn.ReLU)][-1]
    return net, last_relu


def float64_model(model):
    """A shallow copy of ``model`` computing in float64 (params cast; inputs kept float64)."""
    import copy

    import jax.numpy as jnp

    if not jax.config.jax_enable_x64:
        raise RuntimeError("float64 needs jax.config.update('jax_enable_x64', True) before any computation")
    m = copy.copy(model)
    m.params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), model.params)
    m.check_input = lambda x: jnp.asarray(x, jnp.float64)
    return m


def nchw(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def rel_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = np.abs(theirs).max()
    return float(np.abs(ours - theirs).max() / (scale if scale > 0 else 1.0))


# ---------------------------------------------------------------------------------------------------------
# Method pairs: (jaxviz call, captum call, captum → channels-last comparable array)


def pairs(model, net, last_relu, x, targets, opts, dtype=None):
    import captum.attr as ca

    xt = nchw(x) if dtype is None else nchw(x).to(dtype)
    tt = [int(t) for t in targets]
    steps, chunk = opts["steps"], opts["batch_size"]
    win, stride = opts["window"], opts["stride"]
    n = x.shape[0]

    def our_gradcam():
        return gradcam(model, x, target=tt, score="logit")

    def their_gradcam():
        m = ca.LayerGradCam(net, last_relu).attribute(xt, target=tt)[:, 0].detach().numpy()
        m = np.maximum(m, 0)
        peak = m.max(axis=(1, 2), keepdims=True)
        return m / np.where(peak > 0, peak, 1)

    sigma = opts["noise"] * float(np.ptp(np.asarray(x)))  # NoiseTunnel's stdevs is absolute
    return {
        "saliency": (lambda: saliency(model, x, tt, reduce=None),
                     lambda: nhwc(ca.Saliency(net).attribute(xt.clone().requires_grad_(), target=tt))),
        "integrated_gradients": (
            lambda: integrated_gradients(model, x, tt, steps=steps, batch_size=chunk,
                                                              reduce=None),
            lambda: nhwc(ca.IntegratedGradients(net).attribute(
                xt, target=tt, n_steps=steps, internal_batch_size=max(chunk, n)))),
        "guided_backprop": (lambda: guided_backprop(model, x, tt, reduce=None),
                            lambda: nhwc(ca.GuidedBackprop(net).attribute(xt.clone().requires_grad_(), target=tt))),
        "deconvnet": (lambda: deconvnet(model, x, tt, reduce=None),
                      lambda: nhwc(ca.Deconvolution(net).attribute(xt.clone().requires_grad_(), target=tt))),
        "gradcam": (our_gradcam, their_gradcam),
        "guided_gradcam": (
            lambda: guided_gradcam(model, x, tt, interpolation="nearest", reduce=None),
            lambda: nhwc(ca.GuidedGradCam(net, last_relu).attribute(xt.clone().requires_grad_(), target=tt,
                                                                    interpolate_mode="nearest"))),
        "guided_gradcam_bilinear": (
            lambda: guided_gradcam(model, x, tt, interpolation="bilinear", reduce=None),
            lambda: nhwc(ca.GuidedGradCam(net, last_relu).attribute(xt.clone().requires_grad_(), target=tt,
                                                                    interpolate_mode="bilinear"))),
        "occlusion": (
            lambda: occlusion(model, x, tt, window=win, stride=stride, batch_size=chunk, reduce=None),
            lambda: nhwc(ca.Occlusion(net).attribute(xt, sliding_window_shapes=(3, win, win),
                                                     strides=(3, stride, stride), baselines=0, target=tt,
                                                     perturbations_per_eval=max(1, chunk // n)))),
        "smoothgrad": (
            lambda: smoothgrad(model, x, tt, n=opts["samples"], noise=opts["noise"],
                                          batch_size=chunk, abs=False, reduce=None),
            lambda: nhwc(ca.NoiseTunnel(ca.Saliency(net)).attribute(
                xt.clone().requires_grad_(), target=tt, nt_type="smoothgrad", nt_samples=opts["samples"],
                nt_samples_batch_size=max(1, chunk // n), stdevs=sigma, abs=False))),
    }


COMPARED = {"saliency", "integrated_gradients", "guided_backprop", "deconvnet", "gradcam", "guided_gradcam",
            "guided_gradcam_bilinear", "occlusion"}


def block(v):
    return jax.block_until_ready(v) if not isinstance(v, np.ndarray) else v


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(model, x, targets, methods, opts, repeats: int = 1, timing: bool = True, fp64: bool = False) -> dict:
    """Runs each method on both sides; returns ``{method: {rel_error, jaxviz_ips, captum_ips, ratio}}``.

    With ``fp64`` (needs ``jax_enable_x64``), both sides also run in float64: ``fp64_rel_error`` compares
    them (the definitions, free of float32 rounding), and ``fp64_error_jaxviz`` / ``fp64_error_captum``
    measure each side's float32 result against Captum's float64 one. On ill-conditioned maps (random deep
    ReLU nets, where float32 rounding flips a few ReLUs and max-pool switches) both float32 results are
    equally far from the exact map, while the float64 ones agree.
    """
    import copy

    import torch

    net, last_relu = torch_vgg(model)
    table = pairs(model, net, last_relu, x, targets, opts)
    if fp64:
        net64 = copy.deepcopy(net).double()
        relu64 = [m for m in net64.features if isinstance(m, torch.nn.ReLU)][-1]
        model64 = float64_model(model)
        table64 = pairs(model64, net64, relu64, np.asarray(x, np.float64), targets, opts, dtype=torch.float64)
    n = x.shape[0]
    out = {}
    for name in methods:
        ours_fn, theirs_fn = table[name]
        ours = np.asarray(block(ours_fn()))  # first call compiles
        theirs = theirs_fn()  # first call warms oneDNN
        row = {"rel_error": rel_error(ours, theirs) if name in COMPARED else None}
        if fp64 and name in COMPARED:
            exact = table64[name][1]()
            row.update(fp64_rel_error=rel_error(np.asarray(table64[name][0]()), exact),
                       fp64_error_jaxviz=rel_error(ours, exact), fp64_error_captum=rel_error(theirs, exact))
        if timing:  # interleaved, so that load from other processes hits both sides alike
            t_ours, t_theirs = [], []
            for _ in range(repeats):
                t_ours.append(timed(ours_fn, 1))
                t_theirs.append(timed(theirs_fn, 1))
            t_ours, t_theirs = statistics.median(t_ours), statistics.median(t_theirs)
            row.update(jaxviz_ips=n / t_ours, captum_ips=n / t_theirs, ratio=t_theirs / t_ours)
        out[name] = row
        torch.set_grad_enabled(True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="vgg16")
    p.add_argument("--weights", default="random:0")
    p.add_argument("--image", default="chelsea", help="a path, or a bundled sample name")
    p.add_argument("--batch", type=int, default=1, help="images per call (the image, repeated)")
    p.add_argument("--methods", default="saliency,integrated_gradients,guided_backprop,occlusion",
                   help=f"comma list from: {', '.join(METHODS)}, or all")
    p.add_argument("--steps", type=int, default=50, help="IG steps")
    p.add_argument("--samples", type=int, default=10, help="SmoothGrad samples")
    p.add_argument("--noise", type=float, default=0.15)
    p.add_argument("--window", type=int, default=56, help="occlusion window")
    p.add_argument("--stride", type=int, default=28, help="occlusion stride")
    p.add_argument("--batch-size", type=int, default=8, help="model inputs per chunk (both sides)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--fp64", action="store_true",
                   help="also run both sides in float64 (parity without float32 rounding) and measure each "
                        "float32 result against it")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args(argv)

    if args.fp64:
        jax.config.update("jax_enable_x64", True)
    from jaxviz.images import load_image, preprocess_input, sample_image_path

    model = jaxviz.load(args.arch, args.weights)
    size = model.arch.default_size
    path = sample_image_path(args.image) if "/" not in args.image and "." not in args.image else args.image
    x = preprocess_input(load_image(path, target_size=(size, size))[None]).repeat(args.batch, 0)
    logits = np.asarray(model.features(x, "logits")["logits"])
    targets = logits.argmax(-1)
    names = METHODS if args.methods == "all" else [ALIASES.get(m, m) for m in args.methods.split(",")]
    opts = dict(steps=args.steps, batch_size=args.batch_size, window=args.window, stride=args.stride,
                samples=args.samples, noise=args.noise)
    import captum
    import torch

    results = compare(model, x, targets, names, opts, args.repeats, not args.no_timing, args.fp64)
    print(f"{args.arch} ({args.weights}) {size}×{size}, batch {args.batch}; jax {jax.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), captum {captum.__version__}")
    head = f"{'method':<26}{'rel. error':>12}"
    if args.fp64:
        head += f"{'f64 vs f64':>12}{'jaxviz vs f64':>15}{'captum vs f64':>15}"
    print(head + (f"{'jaxviz img/s':>14}{'captum img/s':>14}{'ratio':>8}" if not args.no_timing else ""))
    for name, r in results.items():
        line = f"{name:<26}" + (f"{r['rel_error']:>12.2e}" if r["rel_error"] is not None else f"{'—':>12}")
        if args.fp64:
            line += f"{r['fp64_rel_error']:>12.2e}" if "fp64_rel_error" in r else f"{'—':>12}"
            line += "".join(f"{r[k]:>15.2e}" if k in r else f"{'—':>15}" for k in ("fp64_error_jaxviz",
                                                                                 "fp64_error_captum"))
        if "ratio" in r:
            line += f"{r['jaxviz_ips']:>14.3f}{r['captum_ips']:>14.3f}{r['ratio']:>7.2f}×"
        print(line)
    report = {"arch": args.arch, "weights": args.weights, "size": size, "batch": args.batch, "options": opts,
              "versions": {"jax": jax.__version__, "torch": torch.__version__, "captum": captum.__version__},
              "threads": torch.get_num_threads(), "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    else:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
