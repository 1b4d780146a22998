"""torchvision's own architectures (seeded random weights) exported to ONNX by both PyTorch exporters and read by
jaxviz: outputs equal PyTorch's, the layers carry PyTorch's module paths, saliency equals Captum's and Grad-CAM
equals pytorch-grad-cam's on the same model."""

import os
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxviz

pytest.importorskip("onnx", reason="the ONNX reader needs the onnx package (pip install 'jaxviz[onnx]')")
torch = pytest.importorskip("torch", reason="the parity models are PyTorch models")

sys.path.insert(0, str(Path(__file__).parent))
import torchvision_models  # noqa: E402
from test_onnx import _close, _nhwc, _pgc_gradcam, pgc_cam  # noqa: E402

SIZE = 64
#: name: (a module path that must name a layer, the default Grad-CAM layer)
MODELS = {
    "resnet50": ("layer4.2.conv3", "layer4.2.relu_2"),
    "mobilenet_v2": ("features.17.conv.0.0", "features.18.2"),
    "efficientnet_b0": ("features.6.0.block.1.0", "features.8.2"),  # past the squeeze-excitation pools
    "convnext_tiny": ("features.7.2.block.0", "features.7.2"),
}
#: Run in every suite (the others: the Mini models of tests/onnx_models.py cover their ops in every run).
EVERY_RUN = ("resnet50",)
#: Full-size models too slow for every run (VGG16's classifier alone is 400 MB of float32 at 224 px).
FULL_SIZE = {"vgg16": 224}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``name -> (torch model, path of its TorchScript export)``, each built once for the module's tests."""
    folder, cache = tmp_path_factory.mktemp("torchvision"), {}

    def get(name):
        if name not in cache:
            torch_model = torchvision_models.build(name)
            cache[name] = torch_model, torchvision_models.export(torch_model, folder / f"{name}.onnx", SIZE)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)


def _outputs_match(name, path, torch_model, x):
    model = jaxviz.load(path, ops="exact")
    with jax.default_matmul_precision("highest"):
        out = model.apply(model.params, jax.numpy.asarray(_nhwc(x)), upto="logits")[0]
    with torch.no_grad():
        _close(out, torch_model(torch.from_numpy(x)).numpy())
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_torchscript_export_matches_pytorch(name, x, exported):
    if name not in EVERY_RUN and not os.environ.get("JAXVIZ_ONNX_ALL"):
        pytest.skip(f"torchvision {name} (20-50 s on 2 cores; its ops run in test_onnx.py); set JAXVIZ_ONNX_ALL=1")
    torch_model, path = exported(name)
    model = _outputs_match(name, path, torch_model, x)
    layer, cam = MODELS[name]
    assert layer in model.layer_names
    assert model.cam_layer == cam


def test_dynamo_export_matches_pytorch(x, tmp_path):
    """PyTorch's default exporter since 2.9 (weights in an external ``.data`` file beside the model)."""
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")
    torch_model = torchvision_models.build("resnet18")
    path = torchvision_models.export(torch_model, tmp_path / "resnet18.onnx", SIZE, dynamo=True)
    model = _outputs_match("resnet18", path, torch_model, x)
    # its optimiser folds each BatchNorm into the Conv before it: the fused Conv carries the BatchNorm's path
    assert {"layer4.1.bn2", "layer4.1.relu", "fc"} <= set(model.layer_names)


def test_dynamo_export_of_convnext_is_refused_in_one_line(tmp_path):
    """The dynamo exporter writes AdaptiveAvgPool2d's ``as_strided`` as a reshape of the whole batch to [-1]."""
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")
    if not os.environ.get("JAXVIZ_ONNX_ALL"):
        pytest.skip("the dynamo exporter takes ~40 s on ConvNeXt-Tiny; set JAXVIZ_ONNX_ALL=1")
    path = torchvision_models.export(torchvision_models.build("convnext_tiny"), tmp_path / "c.onnx", SIZE, True)
    with pytest.raises(jaxviz.JaxvizError, match=r"folds the batch axis.*dynamo=False") as e:
        jaxviz.load(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_exports_match_pytorch(name, tmp_path):
    if not os.environ.get("JAXVIZ_ONNX_ALL"):
        pytest.skip(f"full-size {name} ({FULL_SIZE[name]} px, ~550 MB of weights); set JAXVIZ_ONNX_ALL=1")
    size = FULL_SIZE[name]
    x = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
    torch_model = torchvision_models.build(name)
    _outputs_match(name, torchvision_models.export(torch_model, tmp_path / f"{name}.onnx", size), torch_model, x)


def test_saliency_equals_captum_and_gradcam_equals_pytorch_grad_cam(x, exported):
    """On torchvision's ResNet-50: Captum's ``Saliency`` (|∂score/∂x|, max over channels) and pytorch-grad-cam's
    ``GradCAM`` at its README's layer, ``model.layer4[-1]``."""
    captum_attr = pytest.importorskip("captum.attr", reason="Captum is a test peer (pip install --no-deps captum)")
    GradCAM = _pgc_gradcam()
    torch_model, path = exported("resnet50")
    model = jaxviz.load(path, ops="exact")
    t = torch.from_numpy(x)
    with torch.no_grad():  # the top classes: with random weights, other classes' maps at 2×2 can be all zero
        target = torch_model(t).argmax(1).tolist()
    ref = captum_attr.Saliency(torch_model).attribute(t, target=target, abs=True).max(dim=1).values.numpy()
    with jax.default_matmul_precision("highest"):
        _close(jaxviz.saliency(model, _nhwc(x), target), ref)

    store = {}
    hook = torch_model.layer4[-1].register_forward_hook(lambda m, i, o: store.update(a=o) or o.retain_grad())
    torch_model(t)[torch.arange(2), torch.tensor(target)].sum().backward()
    hook.remove()
    acts, grads = store["a"].detach().numpy(), store["a"].grad.numpy()
    cam = pgc_cam(GradCAM, acts, grads)
    with jax.default_matmul_precision("highest"):
        maps = jaxviz.gradcam(model, _nhwc(x), target, layer="layer4", score="logit")
    _close(maps, cam)
