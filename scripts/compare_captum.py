#!/usr/bin/env python3
"""Compare jaxviz's attribution methods with Captum on the same VGG weights and image: values and speed.

The same network is built in PyTorch from jaxviz's params (no torchvision needed): conv kernels HWIO →
OIHW, images NHWC → NCHW, and the classifier flattens the last feature map in NHWC order so ``fc1`` sees
Keras's H·W·C layout. Every ReLU is its own ``nn.ReLU`` module (Captum's guided backprop/deconvolution
hooks need modules); the torch model returns logits, so Captum explains logits — jaxviz's default score.

Each method is run on both sides with matched settings and compared with the relative error
``max|jaxviz − captum| / max|captum|`` (channels-first Captum output moved to channels last), jaxviz in
its exact mode (``jax.default_matmul_precision("highest")``: direct convolutions). Then both
sides are timed on the same batch in the same process (warm: compiled / first call done; calls interleaved
jaxviz, Captum, pytorch-grad-cam round by round; the best of ``--repeats`` rounds, as the machine is shared
and noise only ever adds time), jaxviz in its default mode (on CPUs, Winograd convolutions for the wide
layers: :mod:`jaxviz.winograd`; "fast vs exact" is how far its map is from the exact-mode one), and the
images/s ratio jaxviz / Captum is printed.

pytorch-grad-cam (``pip install grad-cam --no-deps ttach opencv-python-headless``) is the reference for
the CAM family (``gradcam``, ``gradcam_plus_plus``) when it is installed. Its package ``__init__`` imports
torchvision and scikit-learn for methods not used here; the PyPI torchvision is built against the CUDA
torch and does not load with the CPU one, so missing ones are replaced by empty placeholder modules (its
GradCAM / GradCAM++ use only torch, numpy and OpenCV). It runs on its own copy of the network whose
parameters are frozen except the target conv layer's (so that its ``loss.backward()`` computes no weight
gradients beyond the one it needs for its hooks to fire; with every parameter trainable, as a torchvision
model is loaded, it would be slower). Its maps are min-max scaled and resized with OpenCV (bilinear,
half-pixel centres, as jaxviz's); jaxviz's are min-max scaled too before comparing.

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
- gradcam: :func:`jaxviz.attribution.methods.gradcam_at_input` (the book's Grad-CAM, upsampled bilinearly to the
  input size) with ``score="logit"``; Captum's ``LayerGradCam`` map is ReLU'd, divided by its maximum and
  upsampled with ``torch.nn.functional.interpolate(mode="bilinear")`` like it (inside the timed call).
- SmoothGrad (NoiseTunnel) and LIME draw different random numbers; they are timed, not compared. LIME runs
  on the same SLIC superpixels on both sides (jaxviz's, as Captum's ``feature_mask``), ``--lime-samples``
  perturbed images of which ``--batch-size`` per call, masked-out superpixels set to model-space 0 (the
  mean colour; ``fill=0`` / ``baselines=0``), and a ridge surrogate on both sides (Captum's
  ``SkLearnRidge`` if scikit-learn is installed, else its ``SGDRidge``; its default Lasso needs it too).
- Score-CAM: pytorch-grad-cam's ``ScoreCAM`` against ``score_cam(…, score="logit",
  softmax_channels=True)``, its channel weighting (a softmax over the channels of the masked images'
  logits; jaxviz's default is the paper's eq. 8, each masked image's class probability). Timed, not
  compared here: it upsamples with ``align_corners=True`` and weights the layer-resolution activations
  (jaxviz: half-pixel centres, weights on the upsampled ones); tests/test_cam_references.py compares the
  two on a layer at the input's resolution. Both evaluate every channel's masked image, 16 per model call.
  Captum's NoiseTunnel ``stdevs`` is absolute; jaxviz's ``noise`` is a fraction of the image's range,
  converted here.
- Input × Gradient (Captum's ``InputXGradient``) and DeepLIFT (``DeepLift``, zero baseline) are compared;
  DeepLIFT's Rescale rule is the same, but for max-pooling jaxviz routes the gradient (the DeepLIFT authors'
  default) and Captum has its own rule; with the zero reference every window of the reference's maps is
  constant and the two agree wherever a window's maximum grew.
- GradientSHAP (``GradientShap``, zero baseline, ``--samples`` draws) and the noise tunnel
  (``noise_tunnel("saliency")`` vs ``NoiseTunnel(Saliency)``, SmoothGrad, ``stdevs`` matched) draw different
  random numbers: timed, not compared (tests/test_gradient_methods.py and tests/test_gradient_shap.py compare
  them on Captum's own draws). Captum's ``GradientShap`` has no batch size: it evaluates all ``--samples``
  draws of an image in one model call, and jaxviz is timed with the same (``batch_size`` = samples × images).
  The noise tunnel evaluates at most ``--batch-size`` inputs per call on both sides (Captum's
  ``nt_samples_batch_size``; 10 samples at 8: Captum 8 + 2, jaxviz 5 + 5).
- LayerCAM, HiResCAM, XGrad-CAM, Eigen-CAM and Ablation-CAM against pytorch-grad-cam's classes (both
  min-max scaled). Its ``EigenCAM`` keeps LAPACK's sign of the principal component, jaxviz makes the larger
  lobe positive (its ``get_2d_projection_with_sign_correction``), so their maps may be each other's negative
  (difference 1). Its ``AblationCAM`` runs the whole network on each batch of ablated copies (the layers
  before the target layer too, 32 per call); jaxviz runs only the layers after it, with the same chunk.
- RISE has no implementation in Captum or pytorch-grad-cam, nor on PyPI; its peer here (in the Captum
  columns) is a PyTorch port of the authors' explainer, ``RISE.forward`` of their ``explanations.py``
  (github.com/eclique/RISE): the masks generated once beforehand (not timed; jaxviz's own ``rise_masks``, so
  the maps are compared), ``x ⊙ M`` for all masks, the softmax model run ``--batch-size`` masked images per
  call, and ``p.T @ masks / n / p1`` — the maps of all classes, as the authors' code computes them (the
  matrix product is under 1 % of the forward passes' work). jaxviz draws its masks inside the timed program,
  ``--rise-masks`` masks with the same ``--batch-size`` images per model call.

Usage:
  python scripts/compare_captum.py                        # vgg16, random:0 weights, 224×224, short
  python scripts/compare_captum.py --arch vgg_tiny --batch 4 --json out.json
  python scripts/compare_captum.py --weights imagenet --image chelsea --methods saliency,ig
  python scripts/compare_captum.py --methods all --repeats 5 --json compare_captum.json   # the full table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

import jaxviz  # noqa: E402

# Functions from their modules: the package may re-export them under the modules' own names.
from jaxviz.attribution.ablationcam import ablationcam  # noqa: E402
from jaxviz.attribution.deconvnet import deconvnet  # noqa: E402
from jaxviz.attribution.deeplift import deeplift  # noqa: E402
from jaxviz.attribution.eigencam import eigencam  # noqa: E402
from jaxviz.attribution.gradcam_plus_plus import gradcam_plus_plus  # noqa: E402
from jaxviz.attribution.gradient_shap import gradient_shap  # noqa: E402
from jaxviz.attribution.guided_backprop import guided_backprop  # noqa: E402
from jaxviz.attribution.guided_gradcam import guided_gradcam  # noqa: E402
from jaxviz.attribution.hirescam import hirescam  # noqa: E402
from jaxviz.attribution.input_x_gradient import input_x_gradient  # noqa: E402
from jaxviz.attribution.integrated_gradients import integrated_gradients  # noqa: E402
from jaxviz.attribution.layercam import layercam  # noqa: E402
from jaxviz.attribution.lime import lime, segment  # noqa: E402
from jaxviz.attribution.methods import gradcam_at_input as gradcam  # noqa: E402
from jaxviz.attribution.noise_tunnel import noise_tunnel  # noqa: E402
from jaxviz.attribution.occlusion import occlusion  # noqa: E402
from jaxviz.attribution.rise import rise, rise_masks  # noqa: E402
from jaxviz.attribution.saliency import saliency  # noqa: E402
from jaxviz.attribution.score_cam import score_cam  # noqa: E402
from jaxviz.attribution.smoothgrad import smoothgrad  # noqa: E402
from jaxviz.attribution.xgradcam import xgradcam  # noqa: E402

METHODS = ("saliency", "integrated_gradients", "guided_backprop", "deconvnet", "gradcam", "guided_gradcam",
           "guided_gradcam_bilinear", "gradcam_plus_plus", "occlusion", "smoothgrad", "lime", "score_cam",
           "input_x_gradient", "deeplift", "gradient_shap", "noise_tunnel", "layercam", "hirescam", "xgradcam",
           "eigencam", "ablationcam", "rise")
ALIASES = {"ig": "integrated_gradients", "gbp": "guided_backprop", "deconv": "deconvnet",
           "gradcam++": "gradcam_plus_plus"}
#: The methods compared with pytorch-grad-cam, and its class for each.
PGC_METHODS = {"gradcam": "GradCAM", "gradcam_plus_plus": "GradCAMPlusPlus", "score_cam": "ScoreCAM",
               "layercam": "LayerCAM", "hirescam": "HiResCAM", "xgradcam": "XGradCAM", "eigencam": "EigenCAM",
               "ablationcam": "AblationCAM"}
#: pytorch-grad-cam's AblationCAM batch size (ablated copies per model call), used on both sides.
ABLATION_BATCH = 32


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


#: pytorch-grad-cam's ScoreCAM batch (its default); jaxviz's score_cam is timed with the same.
SCORE_CAM_BATCH = 16


def lime_surrogate():
    """Captum's LIME surrogate: a ridge regression like jaxviz's (scikit-learn's when installed, as Captum's
    default Lasso needs it too; else Captum's own SGD-trained ridge)."""
    from captum._utils.models.linear_model import SGDRidge, SkLearnRidge

    try:
        import sklearn  # noqa: F401
    except ImportError:
        return SGDRidge()
    return SkLearnRidge(alpha=1.0)


def pairs(model, net, last_relu, x, targets, opts, dtype=None):
    import captum.attr as ca
    import torch

    xt = nchw(x) if dtype is None else nchw(x).to(dtype)
    tt = [int(t) for t in targets]
    steps, chunk = opts["steps"], opts["batch_size"]
    win, stride = opts["window"], opts["stride"]
    n = x.shape[0]

    def our_gradcam():
        return gradcam(model, x, tt, score="logit")

    def their_gradcam():
        import torch

        m = torch.relu(ca.LayerGradCam(net, last_relu).attribute(xt, target=tt)).detach()
        peak = m.amax(dim=(2, 3), keepdim=True)
        m = m / torch.where(peak > 0, peak, torch.ones_like(peak))
        return torch.nn.functional.interpolate(m, size=tuple(xt.shape[2:]), mode="bilinear",
                                               align_corners=False)[:, 0].numpy()

    sigma = opts["noise"] * float(np.ptp(np.asarray(x)))  # NoiseTunnel's stdevs is absolute
    labels = segment(np.asarray(x), "slic", 50)  # LIME's superpixels, the same on both sides
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
        "gradcam_plus_plus": (
            lambda: gradcam_plus_plus(model, x, tt, score="logit"),
            None),
        "occlusion": (
            lambda: occlusion(model, x, tt, window=win, stride=stride, batch_size=chunk, reduce=None),
            lambda: nhwc(ca.Occlusion(net).attribute(xt, sliding_window_shapes=(3, win, win),
                                                     strides=(3, stride, stride), baselines=0, target=tt,
                                                     perturbations_per_eval=max(1, chunk // n)))),
        "lime": (
            lambda: lime(model, x, tt, n_samples=opts["lime_samples"], segments=labels, fill=0.0,
                         batch_size=chunk),
            lambda: nhwc(ca.Lime(net, interpretable_model=lime_surrogate()).attribute(
                xt, target=tt, feature_mask=torch.from_numpy(labels[:, None]).long(), baselines=0,
                n_samples=opts["lime_samples"], perturbations_per_eval=chunk))),
        "score_cam": (lambda: score_cam(model, x, tt, batch_size=SCORE_CAM_BATCH), None),
        "input_x_gradient": (lambda: input_x_gradient(model, x, tt, reduce=None),
                             lambda: nhwc(ca.InputXGradient(net).attribute(xt.clone().requires_grad_(), target=tt))),
        "deeplift": (lambda: deeplift(model, x, tt, reduce=None),
                     lambda: nhwc(ca.DeepLift(net).attribute(xt.clone().requires_grad_(), baselines=0 * xt,
                                                             target=tt))),
        "gradient_shap": (
            lambda: gradient_shap(model, x, tt, n=opts["samples"], batch_size=opts["samples"] * n, reduce=None),
            lambda: nhwc(ca.GradientShap(net).attribute(xt, baselines=0 * xt[:1], target=tt,
                                                        n_samples=opts["samples"]))),
        "noise_tunnel": (
            lambda: noise_tunnel("saliency", model, x, tt, n=opts["samples"], stdevs=sigma, batch_size=chunk,
                                 reduce=None),
            lambda: nhwc(ca.NoiseTunnel(ca.Saliency(net)).attribute(
                xt.clone().requires_grad_(), target=tt, nt_type="smoothgrad", nt_samples=opts["samples"],
                nt_samples_batch_size=max(1, chunk // n), stdevs=sigma))),
        **{name: (lambda fn=fn: fn(model, x, tt), None)
           for name, fn in (("layercam", layercam), ("hirescam", hirescam), ("xgradcam", xgradcam),
                            ("eigencam", eigencam))},
        "ablationcam": (lambda: ablationcam(model, x, tt, batch_size=ABLATION_BATCH * n), None),
        "rise": (lambda: rise(model, x, tt, n=opts["rise_masks"], batch_size=chunk, seed=0),
                 torch_rise(net, x, tt, opts, dtype)),
        "smoothgrad": (
            lambda: smoothgrad(model, x, tt, n=opts["samples"], noise=opts["noise"],
                                          batch_size=chunk, abs=False, reduce=None),
            lambda: nhwc(ca.NoiseTunnel(ca.Saliency(net)).attribute(
                xt.clone().requires_grad_(), target=tt, nt_type="smoothgrad", nt_samples=opts["samples"],
                nt_samples_batch_size=max(1, chunk // n), stdevs=sigma, abs=False))),
    }


COMPARED = {"saliency", "integrated_gradients", "guided_backprop", "deconvnet", "gradcam", "guided_gradcam",
            "guided_gradcam_bilinear", "occlusion", "input_x_gradient", "deeplift", "rise"}

#: RISE's mask grid and keep probability (the paper's ``s = 7``, ``p1 = 0.5``; jaxviz's defaults).
RISE_GRID, RISE_P1 = 7, 0.5


def torch_rise(net, x, targets, opts: dict, dtype=None):
    """A PyTorch port of the RISE authors' explainer (``RISE.forward``, github.com/eclique/RISE
    ``explanations.py``) on ``net``; returns a call ``() → [N, H, W]`` maps of ``targets`` with
    ``opts["rise_masks"]`` masks, ``opts["batch_size"]`` masked images per model call.

    The masks are generated once here, before timing, as the authors' ``generate_masks`` does (their
    notebook then explains many images with them); they are jaxviz's :func:`rise_masks` (the same grid,
    ``p1``, bilinear upsampling and random shift), so the two maps can be compared. Each call is the
    authors' forward: ``stack = masks ⊙ x``, the model with a softmax on ``gpu_batch`` masked images at a
    time, ``sal = p.T @ masks / N / p1`` for every class (under ``torch.set_grad_enabled(False)``, as in their
    notebook), one image at a time (their explainer takes one image); the targets' maps are returned.
    """
    import torch

    h, w = x.shape[1:3]
    xt = nchw(x) if dtype is None else nchw(x).to(dtype)
    model = torch.nn.Sequential(net, torch.nn.Softmax(dim=1))
    generated = []  # the masks, made on the first (untimed, warm-up) call
    n_masks, gpu_batch = opts.get("rise_masks"), opts["batch_size"]

    def generate_masks():
        if not generated:
            m = torch.from_numpy(np.asarray(rise_masks(n_masks, (h, w), RISE_GRID, RISE_P1, seed=0)).copy())
            generated.append(m.reshape(n_masks, 1, h, w).to(xt.dtype))
        return generated[0]

    def explain(img):  # img: [1, C, H, W]; RISE.forward
        masks = generate_masks()
        stack = torch.mul(masks, img.data)
        p = []
        for i in range(0, n_masks, gpu_batch):
            p.append(model(stack[i:min(i + gpu_batch, n_masks)]))
        p = torch.cat(p)
        cl = p.size(1)
        sal = torch.matmul(p.data.transpose(0, 1), masks.view(n_masks, h * w))
        return sal.view((cl, h, w)) / n_masks / RISE_P1

    def run():
        with torch.set_grad_enabled(False):
            return np.stack([explain(xt[i:i + 1])[t].numpy() for i, t in enumerate(targets)])

    return run



def block(v):
    return jax.block_until_ready(v) if not isinstance(v, np.ndarray) else v


def timed(fn) -> float:
    t0 = time.perf_counter()
    block(fn())
    return time.perf_counter() - t0


def minmax(m) -> np.ndarray:
    """Per-map ``(m − min) / (max − min)``, as pytorch-grad-cam scales its maps."""
    m = np.asarray(m, np.float64)
    lo = m.min(axis=(1, 2), keepdims=True)
    span = m.max(axis=(1, 2), keepdims=True) - lo
    return (m - lo) / np.where(span > 0, span, 1)


# ---------------------------------------------------------------------------------------------------------
# pytorch-grad-cam


def load_pytorch_grad_cam():
    """The ``pytorch_grad_cam`` package, or ``None`` (with the reason printed) if it cannot be imported.

    Its ``__init__`` imports every method it has, and those import torchvision (transforms, ``box_iou``)
    and scikit-learn (``KernelPCA``, ``NMF``) at import time; GradCAM and GradCAM++ use neither. Missing
    ones are replaced by empty placeholder modules (the PyPI torchvision is built for the CUDA torch).
    """
    import importlib.machinery
    import importlib.util
    import types

    if importlib.util.find_spec("pytorch_grad_cam") is None:
        print("pytorch-grad-cam not installed (pip install grad-cam --no-deps ttach opencv-python-headless)")
        return None
    placeholders = {"torchvision": ("transforms", "transforms.functional", "ops"),
                    "sklearn": ("decomposition",), "ttach": (), "cv2": ()}
    for top, subs in placeholders.items():
        try:
            importlib.import_module(top)
            continue
        except Exception:  # missing, or present but not loadable (CUDA build of torchvision)
            pass
        for name in (top, *(f"{top}.{sub}" for sub in subs)):
            mod = types.ModuleType(name)
            mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
            mod.__getattr__ = lambda attr, name=name: None  # any name: a placeholder
            if name == "cv2":  # pytorch-grad-cam resizes its maps with cv2.resize (bilinear, half-pixel)
                mod.resize = _cv2_resize
            if name == "ttach":  # test-time augmentation, built in BaseCAM.__init__ and unused here
                mod.__getattr__ = lambda attr: (lambda *args, **kwargs: None)
            sys.modules[name] = mod
    try:
        import pytorch_grad_cam
    except Exception as e:  # pragma: no cover - depends on the environment
        print(f"pytorch-grad-cam cannot be imported: {type(e).__name__}: {e}")
        return None
    return pytorch_grad_cam


def _cv2_resize(img, dsize):
    """OpenCV's ``resize(img, (W, H))`` with its default INTER_LINEAR, for upsampling: bilinear, half-pixel
    centres, as ``torch.nn.functional.interpolate(align_corners=False)`` (the placeholder when OpenCV is absent)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(img, np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=(dsize[1], dsize[0]), mode="bilinear",
                                           align_corners=False)[0, 0].numpy()


def pgc_pairs(model, net, x, targets, pgc):
    """``{method: (jaxviz call, pytorch-grad-cam call)}`` on a frozen copy of ``net`` (see the docstring)."""
    import copy

    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torch import nn

    net = copy.deepcopy(net)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    for p in net.parameters():
        p.requires_grad_(False)
    for p in convs[-1].parameters():
        p.requires_grad_(True)
    last_relu = [m for m in net.features if isinstance(m, nn.ReLU)][-1]
    xt = nchw(x)
    tt = [int(t) for t in targets]
    out = {}
    for name, cls in PGC_METHODS.items():
        cam = getattr(pgc, cls)(model=net, target_layers=[last_relu])

        def theirs(cam=cam):
            return cam(input_tensor=xt, targets=[ClassifierOutputTarget(t) for t in tt])

        if name == "gradcam":
            ours = lambda: gradcam(model, x, tt, score="logit")  # noqa: E731
        elif name == "score_cam":
            cam.batch_size = SCORE_CAM_BATCH
            ours = lambda: score_cam(model, x, tt, batch_size=SCORE_CAM_BATCH, score="logit",  # noqa: E731
                                     softmax_channels=True)
        elif name == "ablationcam":
            cam.batch_size = ABLATION_BATCH
            ours = lambda: ablationcam(model, x, tt, batch_size=ABLATION_BATCH * len(tt))  # noqa: E731
        elif name in ("layercam", "hirescam", "xgradcam", "eigencam"):
            ours = lambda fn={"layercam": layercam, "hirescam": hirescam, "xgradcam": xgradcam,  # noqa: E731
                              "eigencam": eigencam}[name]: fn(model, x, tt)
        else:
            ours = lambda: gradcam_plus_plus(model, x, tt, score="logit")  # noqa: E731
        out[name] = (ours, theirs)
    return out


# ---------------------------------------------------------------------------------------------------------
# Comparison


def compare(model, x, targets, methods, opts, repeats: int = 1, timing: bool = True, fp64: bool = False,
            pgc=None) -> dict:
    """Runs each method on both sides; returns ``{method: {rel_error, jaxviz_ips, captum_ips, ratio, …}}``.

    ``rel_error`` is ``max|jaxviz − captum| / max|captum|``; with ``pgc`` (the ``pytorch_grad_cam``
    package) the CAM family is also run there: ``pgc_rel_error``, ``pgc_ips``, ``pgc_ratio``. Timings are
    the best of ``repeats`` rounds, each round calling every side once, interleaved (in alternating order);
    ``round_ratios`` (``pgc_round_ratios``) are the peer's time over jaxviz's within each round, with their
    median ``round_ratio_median``.

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
    pgc_table = pgc_pairs(model, net, x, targets, pgc) if pgc is not None else {}
    if fp64:
        net64 = copy.deepcopy(net).double()
        relu64 = [m for m in net64.features if isinstance(m, torch.nn.ReLU)][-1]
        model64 = float64_model(model)
        table64 = pairs(model64, net64, relu64, np.asarray(x, np.float64), targets, opts, dtype=torch.float64)
    n = x.shape[0]
    out = {}
    for name in methods:
        ours_fn, theirs_fn = table[name]
        pgc_fn = pgc_table.get(name, (None, None))[1]
        # Values in jaxviz's exact mode (direct convolutions, as every comparison with a peer); the fast
        # default (Winograd convolutions on CPUs, see jaxviz.winograd) is what is timed, and how far its map
        # is from the exact one is reported as fast_rel_error.
        with jax.default_matmul_precision("highest"):
            ours = np.asarray(block(ours_fn()))
        fast = np.asarray(block(ours_fn()))  # first call compiles
        row = {"rel_error": None, "fast_rel_error": rel_error(fast, ours)}
        if theirs_fn is not None:
            theirs = theirs_fn()  # first call warms oneDNN
            row["rel_error"] = rel_error(ours, theirs) if name in COMPARED else None
        if pgc_fn is not None:
            row["pgc_rel_error"] = rel_error(minmax(ours), pgc_fn())
        if fp64 and name in COMPARED:
            exact = table64[name][1]()
            row.update(fp64_rel_error=rel_error(np.asarray(table64[name][0]()), exact),
                       fp64_error_jaxviz=rel_error(ours, exact), fp64_error_captum=rel_error(theirs, exact))
        if timing:  # interleaved, so that load from other processes hits every side alike
            sides = {"jaxviz": ours_fn, "captum": theirs_fn, "pgc": pgc_fn}
            sides = {k: f for k, f in sides.items() if f is not None}
            times = {k: [] for k in sides}
            for i in range(repeats):
                # Alternating the order as well: neither side always runs right after the other.
                for k in list(sides) if i % 2 == 0 else reversed(list(sides)):
                    times[k].append(timed(sides[k]))
            best = {k: min(v) for k, v in times.items()}
            row.update(jaxviz_ips=n / best["jaxviz"], jaxviz_times=times["jaxviz"])
            for peer, prefix in (("captum", ""), ("pgc", "pgc_")):
                if peer in best:
                    # The ratio of the best times, and the spread of the ratios within each round (the two
                    # sides of one round saw about the same load from other processes).
                    rounds = np.asarray(times[peer]) / np.asarray(times["jaxviz"])
                    row.update({f"{peer}_ips": n / best[peer], f"{prefix}ratio": best[peer] / best["jaxviz"],
                                f"{peer}_times": times[peer], f"{prefix}round_ratios": rounds.tolist(),
                                f"{prefix}round_ratio_median": float(np.median(rounds))})
        out[name] = row
        torch.set_grad_enabled(True)
    return out


def _cell(value, fmt: str, width: int) -> str:
    return f"{value:>{width}{fmt}}" if value is not None else f"{'—':>{width}}"


def _rounds(ratios, width: int) -> str:
    """``median (min–max)`` of the per-round ratios."""
    if not ratios:
        return f"{'—':>{width}}"
    return f"{np.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})".rjust(width)


def compare_metrics(model, x, targets, pgc=None, repeats: int = 1, samples: int = 10) -> dict:
    """Infidelity and sensitivity-max against ``captum.metrics`` (the same perturbations on both sides) and
    ROAD (MoRF, averaged over 10 … 90 %) against pytorch-grad-cam's ``ROADMostRelevantFirstAverage`` (its
    imputation noise 0.01 on both sides, drawn differently: a ~1e-4 difference of the scores is expected).
    Returns ``{metric: {rel_error, jaxviz_s, peer_s, ratio}}`` (best of ``repeats`` interleaved rounds)."""
    import captum.attr as ca
    import torch
    from captum.metrics import infidelity as c_infidelity
    from captum.metrics import sensitivity_max as c_sensitivity

    from jaxviz.metrics import infidelity, road, sensitivity_max

    net, _ = torch_vgg(model)
    xt, tt, n = nchw(x), [int(t) for t in targets], x.shape[0]
    rng = np.random.default_rng(0)
    sal = np.asarray(saliency(model, x, tt, abs=False, reduce=None))
    pert = (rng.normal(0, 0.1 * float(np.ptp(x)), (samples, *x.shape))).astype(np.float32)
    unif = rng.uniform(-0.02, 0.02, (samples, *x.shape)).astype(np.float32)

    def expanded(p):  # Captum's expanded order: image-major (repeat_interleave)
        return torch.from_numpy(np.swapaxes(p, 0, 1).reshape(-1, *x.shape[1:]).transpose(0, 3, 1, 2).copy())

    p_t, u_t = expanded(pert), expanded(unif)

    def captum_saliency(inputs, target):
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs
        with torch.enable_grad():
            return (ca.Saliency(net).attribute(inputs.clone().requires_grad_(), target=target, abs=False).detach(),)

    table = {
        "infidelity": (
            lambda: infidelity(model, x, sal, tt, perturbations=pert),
            lambda: c_infidelity(net, lambda inp: (p_t, inp - p_t), xt, nchw(sal), target=tt,
                                 n_perturb_samples=samples).numpy()),
        "sensitivity_max": (
            lambda: sensitivity_max("saliency", model, x, tt, perturbations=unif, abs=False, reduce=None,
                                    batch_size=samples * n),
            lambda: c_sensitivity(captum_saliency, xt, perturb_func=lambda inp, r: inp + u_t,
                                  n_perturb_samples=samples, target=tt).numpy()),
    }
    if pgc is not None:
        from pytorch_grad_cam.metrics.road import ROADMostRelevantFirstAverage
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = np.abs(sal).sum(-1)  # a map without ties (a ReLU'd CAM's zero region would remove every pixel)
        table["road_morf"] = (
            lambda: road(model, x, cam, tt),
            lambda: ROADMostRelevantFirstAverage()(xt, cam, [ClassifierOutputTarget(t) for t in tt], net))
    out = {}
    for name, (ours_fn, theirs_fn) in table.items():
        with jax.default_matmul_precision("highest"):
            ours = np.asarray(ours_fn())
        theirs = np.asarray(theirs_fn())
        times = {"jaxviz": [], "peer": []}
        for i in range(repeats):
            for k in (["jaxviz", "peer"] if i % 2 == 0 else ["peer", "jaxviz"]):
                times[k].append(timed(ours_fn if k == "jaxviz" else theirs_fn))
        best = {k: min(v) for k, v in times.items()}
        out[name] = {"rel_error": rel_error(ours, theirs), "jaxviz_s": best["jaxviz"], "peer_s": best["peer"],
                     "ratio": best["peer"] / best["jaxviz"], "jaxviz": ours.tolist(), "peer": theirs.tolist()}
    return out


def format_table(results: dict, fp64: bool = False) -> str:
    """The results as a text table: one row per method."""
    head = (f"{'method':<24}{'jaxviz img/s':>13}{'Captum img/s':>13}{'ratio':>9}{'max rel diff':>14}"
            f"{'rounds: med (range)':>21}{'pgc img/s':>11}{'ratio':>9}{'pgc rel diff':>14}{'fast vs exact':>15}")
    if fp64:
        head += f"{'f64 vs f64':>12}{'jaxviz vs f64':>15}{'captum vs f64':>15}"
    lines = [head]
    for name, r in results.items():
        line = (f"{name:<24}" + _cell(r.get("jaxviz_ips"), ".3f", 13) + _cell(r.get("captum_ips"), ".3f", 13)
                + _cell(r.get("ratio"), ".2f", 8) + ("×" if r.get("ratio") else " ")
                + _cell(r.get("rel_error"), ".2e", 14) + _rounds(r.get("round_ratios"), 21)
                + _cell(r.get("pgc_ips"), ".3f", 11)
                + _cell(r.get("pgc_ratio"), ".2f", 8) + ("×" if r.get("pgc_ratio") else " ")
                + _cell(r.get("pgc_rel_error"), ".2e", 14) + _cell(r.get("fast_rel_error"), ".2e", 15))
        if fp64:
            line += _cell(r.get("fp64_rel_error"), ".2e", 12) + _cell(r.get("fp64_error_jaxviz"), ".2e", 15)
            line += _cell(r.get("fp64_error_captum"), ".2e", 15)
        lines.append(line)
    return "\n".join(lines)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


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
    p.add_argument("--lime-samples", type=int, default=200, help="LIME perturbed images per image")
    p.add_argument("--rise-masks", type=int, default=64, help="RISE masks per image")
    p.add_argument("--noise", type=float, default=0.15)
    p.add_argument("--window", type=int, default=56, help="occlusion window")
    p.add_argument("--stride", type=int, default=28, help="occlusion stride")
    p.add_argument("--batch-size", type=int, default=8, help="model inputs per chunk (both sides)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; the best is reported")
    p.add_argument("--no-pgc", action="store_true", help="skip pytorch-grad-cam even if installed")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--fp64", action="store_true",
                   help="also run both sides in float64 (parity without float32 rounding) and measure each "
                        "float32 result against it")
    p.add_argument("--metrics", action="store_true",
                   help="also compare infidelity, sensitivity-max (Captum) and ROAD (pytorch-grad-cam)")
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
                samples=args.samples, noise=args.noise, lime_samples=args.lime_samples,
                rise_masks=args.rise_masks)
    import captum
    import torch

    wants_pgc = any(n in PGC_METHODS for n in names) or args.metrics
    pgc = None if args.no_pgc or not wants_pgc else load_pytorch_grad_cam()
    results = compare(model, x, targets, names, opts, args.repeats, not args.no_timing, args.fp64, pgc=pgc)
    print(f"{args.arch} ({args.weights}) {size}×{size}, batch {args.batch}, best of {args.repeats}; "
          f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"captum {captum.__version__}" + (f", pytorch-grad-cam {_version('grad-cam')}" if pgc else ""))
    print(format_table(results, args.fp64))
    metrics = None
    if args.metrics:
        metrics = compare_metrics(model, x, targets, pgc, args.repeats, args.samples)
        for name, r in metrics.items():
            print(f"{name:24s} jaxviz {r['jaxviz_s']:.3f} s, peer {r['peer_s']:.3f} s, ratio {r['ratio']:.2f}×, "
                  f"max rel diff {r['rel_error']:.2e}")
    report = {"arch": args.arch, "weights": args.weights, "size": size, "batch": args.batch, "options": opts,
              "repeats": args.repeats, "timing": "best of repeats, sides interleaved",
              "versions": {"jax": jax.__version__, "torch": torch.__version__, "captum": captum.__version__,
                           "pytorch-grad-cam": _version("grad-cam") if pgc else None},
              "threads": torch.get_num_threads(), "results": results, "metrics": metrics}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    else:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
