"""Speed on a PyTorch model: jaxviz on its ONNX export vs Captum on the PyTorch model itself, same weights.

The network is torchvision's ResNet50 (written out here with torchvision's module names, so torchvision is
not needed), seeded weights and BatchNorm statistics, exported once with ``torch.onnx.export`` and read with
``jaxviz.load("resnet50.onnx")`` (default ops). At 224 px and each batch size it times, side by side in one
process:

  * saliency — ``jaxviz.saliency(model, x, target)`` vs ``captum.attr.Saliency(model).attribute(x, target)``;
  * gradcam  — ``jaxviz.gradcam(model, x, target, layer="layer4", score="logit")`` vs
    ``captum.attr.LayerGradCam(model, model.layer4[-1]).attribute(x, target)`` (the same map before
    jaxviz's scaling to [0, 1]; pytorch-grad-cam's GradCAM computes the same weights and sum).

Each pair is warmed up (jaxviz compiles), checked to agree, then alternated for ``--repeats`` rounds; the table
gives the median seconds and the median of the per-round ratios jaxviz/torch (< 1: jaxviz is faster). PyTorch
runs with whichever of one thread and all cores was faster in the warm-up (``--torch-threads`` to fix it), and
flushes denormals as XLA:CPU does.

    python scripts/bench_onnx.py --batch 1 8 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resnet50(seed: int = 0):
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride, downsample):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, width * 4, 1, bias=False), nn.BatchNorm2d(width * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(width * 4)) if downsample else None

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
            self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
            cin, layers = 64, []
            for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                seq = [Bottleneck(cin, width, stride, True)] + [Bottleneck(width * 4, width, 1, False)
                                                                for _ in range(blocks - 1)]
                layers.append(nn.Sequential(*seq))
                cin = width * 4
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(2048, 1000)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from onnx_models import randomise_batch_norm

    torch.manual_seed(seed)
    return randomise_batch_norm(ResNet50().eval(), gamma=(0.2, 0.5))  # small scales keep 50 layers finite


def _pairs(model, saliency, gradcam, xj, xt, target) -> dict:
    """``{method: (jaxviz call, torch call)}`` on the same images and classes."""
    import numpy as np

    import jaxviz

    return {
        "saliency": (lambda: np.asarray(jaxviz.saliency(model, xj, target)),
                     lambda: saliency.attribute(xt, target=target).abs().amax(1).numpy()),
        "gradcam": (lambda: np.asarray(jaxviz.gradcam(model, xj, target, layer="layer4", score="logit")),
                    lambda: gradcam.attribute(xt, target=target, relu_attributions=True)[:, 0].detach().numpy()),
    }


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--torch-threads", type=int, default=None,
                   help="PyTorch's intra-op threads (default: whichever of 1 and all cores is faster in the warm-up; "
                        "on a loaded machine OpenMP's spinning threads can make all cores 10x slower than one)")
    args = p.parse_args(argv)

    import jax
    import numpy as np
    import torch
    from captum.attr import LayerGradCam, Saliency

    import jaxviz

    cores = torch.get_num_threads()
    torch.set_flush_denormal(True)  # as XLA:CPU does: tiny activations deep in the net would slow PyTorch only
    net = resnet50()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "resnet50.onnx")
        torch.onnx.export(net, torch.zeros(1, 3, args.size, args.size), path, dynamo=False, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}})
        model = jaxviz.load(path)
    print(f"jaxviz {jaxviz.__version__} ({model.ops.name} ops), torch {torch.__version__} ({cores} cores), "
          f"jax {jax.__version__}; ResNet50 at {args.size} px; load average {os.getloadavg()[0]:.1f}")
    print(f"{'method':9} {'batch':>5} {'jaxviz s':>9} {'torch s':>9} {'ratio':>7}")
    saliency, gradcam = Saliency(net), LayerGradCam(net, net.layer4[-1])
    for n in args.batch:
        x = np.random.default_rng(n).normal(size=(n, 3, args.size, args.size)).astype(np.float32)
        xj, xt = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), torch.from_numpy(x)
        target = list(range(n))
        for name, (ours, theirs) in _pairs(model, saliency, gradcam, xj, xt, target).items():
            a, b = ours(), theirs()  # warm-up (jaxviz compiles) and agreement
            if args.torch_threads is None:
                torch.set_num_threads(1)
                one, _ = timed(theirs)
                torch.set_num_threads(cores)
                torch.set_num_threads(1 if one < timed(theirs)[0] else cores)
            else:
                torch.set_num_threads(args.torch_threads)
            if name == "gradcam":
                b = b / np.maximum(b.max(axis=(1, 2), keepdims=True), 1e-30)
            err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
            ratios, tj, tt = [], [], []
            for _ in range(args.repeats):
                sj, _ = timed(ours)
                st, _ = timed(theirs)
                tj.append(sj)
                tt.append(st)
                ratios.append(sj / st)
            print(f"{name:9} {n:5d} {statistics.median(tj):9.3f} {statistics.median(tt):9.3f} "
                  f"{statistics.median(ratios):7.2f}   (torch threads {torch.get_num_threads()}; max rel. "
                  f"difference {err:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
