"""ONNX files read into jaxviz's layer graph (jaxviz.frontends.onnx): parity with PyTorch, onnxruntime and the onnx
wheel's
classic CNNs, every method on the graph, and files from strangers refused in one line."""

import importlib.util
import os
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from module_files import load_module

import jaxviz
import jaxviz.frontends.onnx
from jaxviz.errors import JaxvizError

onnx = pytest.importorskip("onnx", reason="the ONNX reader needs the onnx package (pip install 'jaxviz[onnx]')")
torch = pytest.importorskip("torch", reason="the parity models are PyTorch models")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import onnx_models  # noqa: E402

SIZE = 64
# Relative tolerance of float32 parity: the same arithmetic in another order (XLA vs PyTorch's CPU kernels).
RTOL = 1e-4


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = np.abs(a - b).max() / np.abs(b).max()
    assert err <= rtol, f"max|Δ|/max|ref| = {err:.2e} > {rtol:.0e}"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The three models exported by the TorchScript exporter (MobileNet with its BatchNorm layers kept)."""
    d = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in onnx_models.MODELS:
        model = onnx_models.build(name)
        kwargs = {"do_constant_folding": False} if name == "mobilenet" else {}
        if name == "convnext":
            kwargs = {"opset_version": 17}  # LayerNormalization
        out[name] = (model, onnx_models.export(model, d / f"{name}.onnx", SIZE, **kwargs))
    return out


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)


def _nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("name", list(onnx_models.MODELS))
def test_outputs_match_pytorch_and_onnxruntime(files, x, name):
    torch_model, path = files[name]
    model = jaxviz.load(path, ops="exact")
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    with jax.default_matmul_precision("highest"):
        out = model.features(_nhwc(x), "logits")["logits"]
    _close(out, ref)
    ort = pytest.importorskip("onnxruntime")
    _close(out, ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0])
    # The default (fast) ops: Winograd and folded BatchNorm round differently, within float32 noise.
    fast = jaxviz.load(path)
    with jax.default_matmul_precision("highest"):
        _close(fast.features(_nhwc(x), "logits")["logits"], ref, 1e-3)
    assert model.preprocess == "none" and model.input_size == SIZE and model.num_classes == 10
    kinds = {layer.kind for layer in model.graph.layers}
    expected = {"convnext": {"LayerNormalization", "Erf", "Conv2DTranspose", "Cropping2D"},
                "efficientnet": {"ops.Sigmoid", "HardSigmoid", "ops.HardSilu", "DepthwiseConv2D"}}
    assert expected.get(name, set()) <= kinds, kinds


@pytest.mark.parametrize("opset", [9, 13])  # 17: the ConvNeXt-like export above
def test_opsets(tmp_path, x, opset):
    """Clip's bounds as attributes (opset < 11) and as inputs; Softmax's and Squeeze's changes at 13."""
    torch_model = onnx_models.build("mobilenet")
    path = onnx_models.export(torch_model, tmp_path / "m.onnx", SIZE, opset_version=opset)
    assert onnx.load(path).opset_import[0].version == opset
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    with jax.default_matmul_precision("highest"):
        _close(jaxviz.load(path, ops="exact").features(_nhwc(x), "logits")["logits"], ref)


def test_pytorch_module_paths_name_the_layers(files):
    model = jaxviz.load(files["resnet"][1])
    names = model.layer_names
    for n in ("conv1", "maxpool", "layer1.0.conv1", "layer2.0.downsample.0", "layer2.0.relu_1", "fc"):
        assert n in names
    assert not any(n.startswith("/") or ".." in n.split("/") for n in names)
    # A module's path names its output (the last layer inside it), and the ONNX node names resolve too.
    assert model.graph.resolve("layer2") == model.graph.resolve("layer2.0") == "layer2.0.relu_1"
    assert model.graph.resolve("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert model.graph.resolve("/layer1/layer1.0/Add") == "layer1/layer1.0/Add"
    assert model.cam_layer == "layer2.0.relu_1"
    assert jaxviz.load(files["vgg"][1]).cam_layer == "features.4"
    assert jaxviz.load(files["mobilenet"][1]).cam_layer == "features.3"
    assert "layer2.0.relu_1" in model.summary(print_fn=lambda s: None)
    feats = model.features(np.zeros((1, SIZE, SIZE, 3), np.float32), ["layer2", "layer1.0.conv1"])
    assert feats["layer2.0.relu_1"].shape == (1, 8, 8, 16) and feats["layer1.0.conv1"].shape == (1, 16, 16, 8)


def test_dynamo_exporter_module_paths_name_the_layers(tmp_path):
    """``torch.onnx.export(..., dynamo=True)`` records each node's module paths in its metadata (built here by
    hand: the dynamo exporter needs onnxscript)."""
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], name="node_conv2d", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"], name="node_relu"),
             helper.make_node("Add", ["r", "h"], ["y"], name="node_add")]
    scopes = [["", "layer1", "layer1.0", "layer1.0.conv1", "conv2d"],
              ["", "layer1", "layer1.0", "layer1.0.relu", "relu"], ["", "layer1", "layer1.0", "add"]]
    for node, s in zip(nodes, scopes):
        entry = node.metadata_props.add()
        entry.key, entry.value = "pkg.torch.onnx.name_scopes", repr(s)
    onnx.save(_tiny_graph(nodes, [w]), tmp_path / "m.onnx")
    graph, _, _ = jaxviz.frontends.onnx.read_model(tmp_path / "m.onnx")
    assert graph.layer_names == ["x", "layer1.0.conv1", "layer1.0.relu", "layer1.0"]
    assert graph.resolve("layer1") == "layer1.0" and graph.resolve("node_relu") == "layer1.0.relu"


@pytest.mark.parametrize("name", ["resnet", "vgg"])  # vgg: the gradient through AveragePool and ceil-mode MaxPool
def test_saliency_equals_torch_input_gradient(files, x, name):
    torch_model, path = files[name]
    model = jaxviz.load(path, ops="exact")
    t = torch.from_numpy(x).requires_grad_(True)
    target = [3, 7]
    torch_model(t)[torch.arange(2), torch.tensor(target)].sum().backward()
    with jax.default_matmul_precision("highest"):
        g = jaxviz.saliency(model, _nhwc(x), target, abs=False, reduce=None)
    _close(g, _nhwc(t.grad.numpy()))


def _pgc_gradcam():
    """pytorch-grad-cam's ``GradCAM`` (its file alone: the package imports OpenCV and ttach, which its channel
    weights do not use)."""
    spec = importlib.util.find_spec("pytorch_grad_cam")
    if spec is None:
        pytest.skip("pytorch-grad-cam is not installed (pip install --no-deps grad-cam==1.5.7)")
    path = Path(spec.submodule_search_locations[0]) / "grad_cam.py"
    with pytest.MonkeyPatch.context() as mp:
        pkg, base = types.ModuleType("pytorch_grad_cam"), types.ModuleType("pytorch_grad_cam.base_cam")
        pkg.__path__, base.BaseCAM = [], object
        mp.setitem(sys.modules, "pytorch_grad_cam", pkg)
        mp.setitem(sys.modules, "pytorch_grad_cam.base_cam", base)
        module = load_module("_pgc_grad_cam", path)
    return module.GradCAM


def pgc_cam(GradCAM, acts, grads):
    """pytorch-grad-cam's map from a layer's activations and gradients ``[N, C, h, w]``: its channel weights, the
    ReLU of the weighted sum, divided by its maximum as the book and jaxviz do (pytorch-grad-cam's
    ``scale_cam_image`` also subtracts the minimum first)."""
    weights = GradCAM.get_cam_weights(None, None, None, None, acts, grads)
    cam = np.maximum((weights[:, :, None, None] * acts).sum(1), 0)
    return cam / np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-30)


def test_gradcam_equals_pytorch_grad_cam(files, x):
    """pytorch-grad-cam's GradCAM on ``model.layer2[-1]`` (its README's ``model.layer4[-1]``), class scores
    = the model's outputs: weights = spatial mean of the gradient, ReLU of the weighted sum, scaled to [0, 1]."""
    GradCAM = _pgc_gradcam()
    torch_model, path = files["resnet"]
    store = {}
    hook = torch_model.layer2[-1].register_forward_hook(lambda m, i, o: store.update(a=o) or o.retain_grad())
    target = [3, 7]
    out = torch_model(torch.from_numpy(x))
    out[torch.arange(2), torch.tensor(target)].sum().backward()
    hook.remove()
    acts, grads = store["a"].detach().numpy(), store["a"].grad.numpy()
    cam = pgc_cam(GradCAM, acts, grads)
    model = jaxviz.load(path, ops="exact")
    with jax.default_matmul_precision("highest"):
        maps = jaxviz.gradcam(model, _nhwc(x), target, layer="layer2", score="logit")
    _close(maps, cam)


class _GuidedReLU(torch.autograd.Function):
    """Springenberg et al.'s guided ReLU (capped at ``cap`` for ReLU6): positive gradients where x is in range."""

    @staticmethod
    def forward(ctx, x, cap):
        ctx.save_for_backward(x)
        ctx.cap = cap
        return x.clamp(0, cap)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        inside = (x > 0) & (x < ctx.cap)
        return g.clamp(min=0) * inside, None


def test_guided_backprop_treats_relu_and_clip_as_relus(files, x):
    torch_model, path = files["mobilenet"]

    def guided(module):
        cap = 6.0 if isinstance(module, torch.nn.ReLU6) else float("inf")
        module.forward = lambda t: _GuidedReLU.apply(t, cap)

    for m in torch_model.modules():
        if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)):
            guided(m)
    t = torch.from_numpy(x).requires_grad_(True)
    torch_model(t)[torch.arange(2), torch.tensor([1, 2])].sum().backward()
    for m in torch_model.modules():
        m.__dict__.pop("forward", None)
    model = jaxviz.load(path, ops="exact")
    kinds = {layer.kind for layer in model.graph.layers}
    assert "Clip" not in kinds and "ReLU" in kinds  # Clip(0, 6) read as a ReLU6
    with jax.default_matmul_precision("highest"):
        g = jaxviz.guided_backprop(model, _nhwc(x), [1, 2], reduce=None)
    _close(g, _nhwc(t.grad.numpy()))


def test_convert_keeps_names_and_aliases(files, tmp_path, x):
    from jaxviz.frontends import npz as converted

    path = files["resnet"][1]
    model = jaxviz.load(path)
    out = converted.write_model(tmp_path / "r", model.graph, model.params, {"preprocess": "none"})
    again = jaxviz.load(out)
    assert again.layer_names == model.layer_names and again.graph.resolve("layer2") == "layer2.0.relu_1"
    np.testing.assert_array_equal(again.predict(_nhwc(x)), model.predict(_nhwc(x)))


# ---------------------------------------------------------------------------------------------------------
# The classic CNNs the onnx wheel ships (opset 9) with their expected outputs (weights are constants).

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
FAST_LIGHT = ["bvlc_alexnet", "squeezenet"]  # compiled in seconds: LRN, Gemm after Reshape, ceil-mode pools, Concat
SLOW_LIGHT = ["zfnet512", "shufflenet", "resnet50", "vgg19", "densenet121", "inception_v1", "inception_v2"]


@pytest.mark.parametrize("name", FAST_LIGHT + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW_LIGHT])
def test_onnx_wheel_classic_cnns(name):
    if name in SLOW_LIGHT and not os.environ.get("JAXVIZ_ONNX_ALL"):
        pytest.skip("full-size classic CNN (5-30 s to compile on a CPU each); set JAXVIZ_ONNX_ALL=1")
    path = LIGHT / f"light_{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path.name} is not in this onnx wheel")
    model = jaxviz.load(path, ops="exact")
    n = 3 * 224 * 224  # the input onnx's backend test feeds: arange(n) / n
    x = (np.arange(n, dtype=np.float64).reshape(1, 3, 224, 224) / n).astype(np.float32)
    expected = numpy_helper.to_array(onnx.load_tensor(str(LIGHT / f"light_{name}_output_0.pb")))
    with jax.default_matmul_precision("highest"):
        out = model.predict(_nhwc(x))
    _close(out, expected.reshape(out.shape))
    assert model.num_classes == 1000


# ---------------------------------------------------------------------------------------------------------
# Files from strangers


def _tiny_graph(nodes, inits, inputs=None, outputs=None, opset=17):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv_model(name="conv"):
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    return _tiny_graph([helper.make_node("Conv", ["x", "w"], ["h"], name=name, pads=[1, 1, 1, 1]),
                        helper.make_node("Relu", ["h"], ["y"], name="relu")], [w])


def _external(tmp_path, location, data=b"\0" * 432, offset=None):
    model = _conv_model()
    t = model.graph.initializer[0]
    t.ClearField("float_data")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location, **({"offset": str(offset)} if offset is not None else {})}
    for k, v in entries.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    (tmp_path / "weights.bin").write_bytes(data)
    onnx.save(model, tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


def _refusal(path, *words):
    with pytest.raises(JaxvizError) as e:
        jaxviz.frontends.onnx.read_model(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_external_data_beside_the_model_loads(tmp_path):
    path = _external(tmp_path, "weights.bin", np.full(108, 0.5, np.float32).tobytes())
    graph, params, _ = jaxviz.frontends.onnx.read_model(path)
    np.testing.assert_array_equal(params["conv"]["kernel"], np.full((3, 3, 3, 4), 0.5, np.float32))


@pytest.mark.parametrize("location, words", [
    ("/etc/passwd", ("outside the model's folder",)),
    ("../weights.bin", ("outside the model's folder",)),
    ("sub/../../weights.bin", ("outside the model's folder",)),
    ("missing.bin", ("not found",)),
])
def test_external_data_outside_the_folder_is_refused(tmp_path, location, words):
    _refusal(_external(tmp_path, location), *words)


def test_external_data_through_a_link_out_or_past_its_end_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"\0" * 432)
    inside = tmp_path / "model"
    inside.mkdir()
    (inside / "link.bin").symlink_to(outside / "secret.bin")
    _refusal(_external(inside, "link.bin"), "leads outside")
    _refusal(_external(tmp_path, "weights.bin", offset=10_000), "past the end")


def test_unsupported_ops_are_listed_with_their_nodes(tmp_path):
    model = _tiny_graph([helper.make_node("NonMaxSuppression", ["x"], ["a"], name="nms1"),
                         helper.make_node("RoiAlign", ["a"], ["b"], name="roi"),
                         helper.make_node("NonMaxSuppression", ["b"], ["y"], name="nms2")], [])
    onnx.save(model, tmp_path / "m.onnx")
    _refusal(tmp_path / "m.onnx", "NonMaxSuppression, RoiAlign", "nms1, nms2", "roi")


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b"not an onnx file at all \x00\xff" * 10), ("cannot read", "ONNX")),
    (lambda p: p.write_bytes(_conv_model().SerializeToString()[:300]), ("cannot read",)),
    (lambda p: onnx.save(_tiny_graph([helper.make_node("ConstantOfShape", ["s"], ["c"], name="big"),
                                      helper.make_node("Add", ["x", "c"], ["y"])],
                                     [numpy_helper.from_array(np.array([2**20, 2**20, 4], np.int64), "s")]), p),
     ("big", "over")),
    (lambda p: onnx.save(_tiny_graph([helper.make_node("Relu", ["x"], ["y"])], [],
                                     inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                                             helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3])]), p),
     ("2 inputs",)),
    (lambda p: onnx.save(_tiny_graph([helper.make_node("Relu", ["x"], ["y"])], [], opset=3), p), ("opset 3",)),
    (lambda p: onnx.save(_tiny_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c1")],
                                     [numpy_helper.from_array(np.ones((4, 5, 3, 3), np.float32), "w")]), p),
     ("c1", "5", "3")),
])
def test_bad_files_are_refused_in_one_line(tmp_path, make, words):
    path = tmp_path / "m.onnx"
    make(path)
    _refusal(path, *words)


def test_oversized_weights_are_refused_before_reading_them(tmp_path):
    """A weight whose declared shape is huge (its data need not be there) is refused from its dims alone."""
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**15, 2**15, 3, 3])
    onnx.save(_tiny_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], [t]), tmp_path / "m.onnx")
    _refusal(tmp_path / "m.onnx", "'w'", "elements")


def test_hostile_node_names_never_become_paths(tmp_path):
    model = _conv_model(name="../../etc/evil\x1b[2J")
    model.graph.node[1].name = "/abs/../x"
    onnx.save(model, tmp_path / "m.onnx")
    graph, _, _ = jaxviz.frontends.onnx.read_model(tmp_path / "m.onnx")
    for name in graph.layer_names:
        assert not name.startswith("/") and ".." not in name.split("/") and name.isprintable(), name


def test_oversized_file_is_refused_before_parsing(tmp_path, monkeypatch):
    from jaxviz.frontends.onnx import reader

    path = tmp_path / "m.onnx"
    onnx.save(_conv_model(), path)
    monkeypatch.setattr(reader, "MAX_FILE_BYTES", 100)
    monkeypatch.setattr(onnx, "load", lambda *a, **k: pytest.fail("parsed an oversized file"))
    _refusal(path, "GiB")


def test_missing_onnx_package_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    onnx.save(_conv_model(), path)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(JaxvizError, match=r"pip install 'jaxviz\[onnx\]'"):
        jaxviz.load(path)


# ---------------------------------------------------------------------------------------------------------
# Layouts and ops beyond PyTorch's CNNs


def test_nhwc_input_with_transposes_loads(tmp_path):
    """A tf2onnx-style file: an NHWC input transposed to NCHW for the convolution and back."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["c"], ["n"], perm=[0, 2, 3, 1]),
             helper.make_node("Sigmoid", ["n"], ["y"])]
    model = _tiny_graph(nodes, [numpy_helper.from_array(w, "w")],
                        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 3])])
    onnx.save(model, tmp_path / "m.onnx")
    graph, params, info = jaxviz.frontends.onnx.read_model(tmp_path / "m.onnx")
    assert info["input_layout"] == "NHWC" and "Permute" not in {layer.kind for layer in graph.layers}
    xin = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    ref = ReferenceEvaluator(model).run(None, {"x": xin})[0]
    out = jaxviz.graph.forward(graph, params, jnp.asarray(xin), ops=jaxviz.ops.EXACT)[0]
    _close(out, ref)


@pytest.mark.parametrize("op, attrs", [
    ("LRN", {"size": 3, "alpha": 1e-2, "beta": 0.75, "bias": 1.0}), ("HardSigmoid", {"alpha": 1 / 6}),
    ("HardSwish", {}), ("Erf", {}), ("LeakyRelu", {"alpha": 0.1}), ("Tanh", {}), ("Softmax", {"axis": 1}),
])
def test_single_ops_match_the_reference_evaluator(tmp_path, op, attrs):
    rng = np.random.default_rng(1)
    model = _tiny_graph([helper.make_node(op, ["x"], ["y"], **attrs)], [])
    xin = rng.normal(size=(2, 3, 8, 8)).astype(np.float32) * 3
    onnx.save(model, tmp_path / "m.onnx")
    graph, params, _ = jaxviz.frontends.onnx.read_model(tmp_path / "m.onnx")
    # onnxruntime (onnx.reference's LRN differs from PyTorch's and onnxruntime's).
    ort = pytest.importorskip("onnxruntime")
    ref = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": xin})[0]
    out = jaxviz.graph.forward(graph, params, jnp.asarray(_nhwc(xin)), ops=jaxviz.ops.EXACT)[0]
    _close(out, _nhwc(ref), 1e-5)


@pytest.mark.parametrize("ceil, include", [(0, 0), (1, 0), (1, 1), (0, 1)])
def test_average_pool_padding_and_ceil_mode(tmp_path, ceil, include):
    model = _tiny_graph([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                          pads=[1, 1, 1, 1], ceil_mode=ceil, count_include_pad=include)], [],
                        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])])
    xin = np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32)
    onnx.save(model, tmp_path / "m.onnx")
    graph, params, _ = jaxviz.frontends.onnx.read_model(tmp_path / "m.onnx")
    ref = torch.nn.functional.avg_pool2d(torch.from_numpy(xin), 3, 2, 1, ceil_mode=bool(ceil),
                                         count_include_pad=bool(include)).numpy()
    out = jaxviz.graph.forward(graph, params, jnp.asarray(_nhwc(xin)), ops=jaxviz.ops.EXACT)[0]
    _close(out, _nhwc(ref), 1e-6)


_C = numpy_helper.from_array(np.linspace(-1, 1, 3, dtype=np.float32).reshape(1, 3, 1, 1), "c")
_CLIP_BOUNDS = [numpy_helper.from_array(np.float32(-0.5), "lo"), numpy_helper.from_array(np.float32(0.7), "hi")]
_PADS = numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads")
F = torch.nn.functional

#: ONNX-only layer kinds: (kind, nodes, initialisers, the same function in PyTorch on NCHW tensors).
ONNX_KINDS = [
    ("Clip", [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], _CLIP_BOUNDS, lambda t: t.clamp(-0.5, 0.7)),
    ("HardSigmoid", [helper.make_node("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4)], [],
     lambda t: (0.3 * t + 0.4).clamp(0, 1)),
    ("Erf", [helper.make_node("Erf", ["x"], ["y"])], [], torch.erf),
    ("LRN", [helper.make_node("LRN", ["x"], ["y"], size=3, alpha=0.5, beta=0.75, bias=1.0)], [],
     lambda t: F.local_response_norm(t, 3, alpha=0.5, beta=0.75, k=1.0)),
    ("ElementwiseConstant", [helper.make_node("Mul", ["x", "c"], ["y"])], [_C],
     lambda t: t * torch.from_numpy(numpy_helper.to_array(_C))),
    ("AveragePool", [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                      pads=[1, 1, 1, 1], count_include_pad=0)], [],
     lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False)),
    ("Pad", [helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")], [_PADS],
     lambda t: F.pad(t, (2, 1, 1, 2), mode="reflect")),
]


@pytest.mark.parametrize("kind, nodes, inits, torch_fn", ONNX_KINDS, ids=[k[0] for k in ONNX_KINDS])
def test_onnx_kinds_input_gradient_equals_torch(tmp_path, kind, nodes, inits, torch_fn):
    """The input gradient (a vjp with a random cotangent) of each layer kind only ONNX files make, against
    PyTorch's autograd of the same function."""
    rng = np.random.default_rng(3)
    model = _tiny_graph(nodes, inits, inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])])
    onnx.save(model, tmp_path / "m.onnx")
    graph, params, _ = jaxviz.frontends.onnx.read_model(tmp_path / "m.onnx")
    assert kind in {layer.kind for layer in graph.layers}
    xin = (rng.normal(size=(2, 3, 8, 8)) * 1.5).astype(np.float32)
    t = torch.from_numpy(xin).requires_grad_(True)
    ref = torch_fn(t)
    cot = rng.normal(size=tuple(ref.shape)).astype(np.float32)
    (g_ref,) = torch.autograd.grad(ref, t, torch.from_numpy(cot))
    with jax.default_matmul_precision("highest"):
        out, vjp = jax.vjp(lambda v: jaxviz.graph.forward(graph, params, v, ops=jaxviz.ops.EXACT)[0],
                           jnp.asarray(_nhwc(xin)))
        (g,) = vjp(jnp.asarray(_nhwc(cot)))
    _close(out, _nhwc(ref.detach().numpy()), 1e-5)
    assert np.abs(g_ref.numpy()).max() > 0
    _close(g, _nhwc(g_ref.numpy()), 1e-5)


def test_figures_on_an_onnx_file(files, tmp_path):
    """The figure set (``jaxviz figures --arch model.onnx --quick`` draws the same tasks, larger)."""
    from jaxviz.figures import make_figures

    make_figures(files["vgg"][1], None, None, tmp_path, pattern_layers=("features.3",), pattern_methods=("keras",),
                 pattern_filters=2, pattern_size=32, pattern_steps=2, single_size=40, kernel_filters=4, feature_maps=2,
                 deepvis_steps=2, gradcam_top=1, progress=False)
    for name in ("index.html", "kernels_features.0.png", "patterns_keras_features.3.png", "gradcam_overlay.png"):
        assert (tmp_path / name).is_file(), (name, sorted(p.name for p in tmp_path.iterdir()))


def test_cli_commands_take_an_onnx_file(files, tmp_path, capsys):
    from PIL import Image

    from jaxviz.cli import main

    path = files["resnet"][1]
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 90, 3), dtype=np.uint8)).save(img)
    assert main(["summary", path]) == 0
    out = capsys.readouterr().out
    assert "layer2.0.conv1 (Conv2D)" in out and "Total params:" in out
    assert main(["predict", str(img), "--arch", path, "--top", "2"]) == 0
    assert "holds no preprocessing" in capsys.readouterr().err
    assert main(["gradcam", str(img), "--arch", path, "--preprocess", "torch", "-o", str(tmp_path / "cam")]) == 0
    assert any(p.suffix == ".png" for p in (tmp_path / "cam").iterdir())
    assert main(["explain", str(img), "--arch", path, "--method", "guided_backprop", "--preprocess", "torch",
                 "-o", str(tmp_path / "ex")]) == 0
    assert main(["convert", path, "-o", str(tmp_path / "converted")]) == 0
    assert jaxviz.load(str(tmp_path / "converted.npz")).graph.resolve("layer2") == "layer2.0.relu_1"


def test_tf2onnx_file_from_keras_matches_tensorflow():
    """A Keras CNN exported by tf2onnx (scripts/make_tf2onnx_fixture.py: NHWC input, Transposes around each
    convolution, BatchNorm folded): outputs and a layer's map equal TensorFlow's, layers carry Keras's names."""
    folder = Path(__file__).parent / "fixtures" / "tf2onnx"
    ref = np.load(folder / "keras_cnn_io.npz")
    model = jaxviz.load(folder / "keras_cnn.onnx", ops="exact")
    assert model.input_hw == (32, 32) and model.preprocess == "none"
    assert {"conv1", "relu1", "pool1", "dw2", "relu6", "conv3", "predictions"} <= set(model.layer_names)
    assert model.cam_layer == "conv3" and model.graph.resolve("keras_cnn/conv3/Relu") == "conv3"
    with jax.default_matmul_precision("highest"):
        out = model.apply(model.params, jnp.asarray(ref["x"]))[0]
        maps = model.features(ref["x"], ["conv3"])["conv3"]
    _close(out, ref["probs"])
    _close(maps, ref["conv3"])
    g = jaxviz.gradcam(model, ref["x"], [0, 1])
    assert g.shape == (2, 8, 8) and np.isfinite(g).all()
