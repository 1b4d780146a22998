"""Whole Keras models read by jaxviz.frontends.keras (no Keras involved in reading) against Keras 3 (JAX backend):
the book's convnets (listing 5.5 as legacy .h5, listing 5.20's nested VGG16 as .keras and .h5),
keras.applications models with random weights, Keras 2 (tf.keras) files committed under
tests/fixtures/keras2 (scripts/make_keras2_fixtures.py), and unreadable files.

Exact ops under jax.default_matmul_precision("highest"); tolerance max|Δ| ≤ 1e-4·max|ref| for every
layer: the same float32 formulas in another summation order.
"""

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras", reason="Keras 3 is the parity reference for whole-model files")

import jax  # noqa: E402
from keras_helpers import REL_TOL, check, forward_exact, max_rel_error, numpy_initializers, randomize  # noqa: E402

from jaxviz.cli import main  # noqa: E402
from jaxviz.errors import JaxvizError, LayerError  # noqa: E402
from jaxviz.frontends import keras as keras_io  # noqa: E402
from jaxviz.frontends import npz as converted  # noqa: E402
from jaxviz.graph import min_input_side  # noqa: E402
from jaxviz.model import Model  # noqa: E402

L = keras.layers
FIXTURES = Path(__file__).parent / "fixtures" / "keras2"


@pytest.fixture(autouse=True, scope="module")
def _fast_init():
    with numpy_initializers():
        yield


def listing_5_5(size=64):
    """The book's cats-vs-dogs convnet (listing 5.5) at a smaller input."""
    return keras.Sequential([
        keras.Input((size, size, 3)),
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(128, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(128, 3, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dropout(0.5), L.Dense(512, activation="relu"), L.Dense(1, activation="sigmoid"),
    ])


def listing_5_20(size=32):
    """Listing 5.20: VGG16's convolutional base (random weights) under a new classifier, a nested model."""
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    return keras.Sequential([base, L.Flatten(), L.Dense(256, activation="relu"), L.Dense(1, activation="sigmoid")])


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    model = randomize(listing_5_20())
    d = tmp_path_factory.mktemp("nested")
    model.save(d / "m.keras")
    model.save(d / "m.h5")
    x = np.random.default_rng(0).normal(0, 1, (2, 32, 32, 3)).astype(np.float32)
    base = model.layers[0]
    inner = keras.Model(base.inputs, [base.get_layer(n).output for n in ("block3_conv2", "block5_conv3")])
    refs = {"vgg16/block3_conv2": np.asarray(inner(x)[0]), "vgg16/block5_conv3": np.asarray(inner(x)[1]),
            "output": np.asarray(model(x, training=False))}
    return d, x, refs


def test_listing_5_5_legacy_h5(tmp_path):
    model = randomize(listing_5_5())
    path = tmp_path / "cats_and_dogs_small_1.h5"
    model.save(path)
    graph, params, info, worst = check(model, tmp_path, path=path)
    assert info["format"] == "h5" and info["keras_version"].startswith("3")
    assert [x.kind for x in graph.layers][:3] == ["InputLayer", "Conv2D", "MaxPooling2D"]
    assert graph.logits == (graph.outputs[0], True)  # the sigmoid's input
    # The same through jaxviz.Model (exact ops): predict-like output and a tap.
    m = Model(graph, params, ops="exact", preprocess=info["preprocess"])
    assert m.preprocess == "none" and m.num_classes >= 1
    x = np.random.default_rng(1).normal(0, 1, (2, 64, 64, 3)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        out, taps = m.apply(m.params, x, taps=(graph.layers[3].name,))
    assert max_rel_error(out, model(x, training=False)) <= REL_TOL


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_listing_5_20_nested_vgg16(nested, suffix):
    d, x, refs = nested
    graph, params, info = keras_io.read_model(d / f"m{suffix}")
    assert info["application"] == "vgg16" and info["preprocess"] == "caffe"
    assert "vgg16/block5_conv3" in graph.by_name and "vgg16/input_layer" not in graph.by_name
    assert keras_io.resolve_name(graph, "block5_conv3") == "vgg16/block5_conv3"
    assert set(params["vgg16/block1_conv1"]) == {"kernel", "bias"}
    out, taps = forward_exact(graph, params, x, ("vgg16/block3_conv2", "vgg16/block5_conv3"))
    for name, got in [*taps.items(), ("output", out)]:
        assert max_rel_error(got, refs[name]) <= REL_TOL, name


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_convert_round_trip(nested, suffix, tmp_path):
    """`jaxviz convert` writes the one converted format; it reads back as the same graph and params, bit for
    bit, and the same outputs."""
    d, x, refs = nested
    graph, params, info = keras_io.read_model(d / f"m{suffix}")
    assert main(["convert", str(d / f"m{suffix}"), "-o", str(tmp_path / "m")]) == 0
    graph2, params2, info2 = converted.read_model(tmp_path / "m.npz")
    assert graph2 == graph and info2["preprocess"] == info["preprocess"] == "caffe"
    assert params2.keys() == params.keys()
    for name in params:
        assert params2[name].keys() == params[name].keys()
        for w in params[name]:
            assert params2[name][w].dtype == np.float32 and np.array_equal(params2[name][w], params[name][w])
    np.testing.assert_array_equal(forward_exact(graph2, params2, x)[0], forward_exact(graph, params, x)[0])


def test_keras3_file_without_stored_layer_names(nested, tmp_path):
    """Keras 3 before the ``vars`` groups' ``name`` attribute: weights found by the class-based paths alone."""
    import h5py

    d, x, refs = nested
    with zipfile.ZipFile(d / "m.keras") as z:
        files = {n: z.read(n) for n in z.namelist()}
    h5 = tmp_path / "w.h5"
    h5.write_bytes(files["model.weights.h5"])
    stripped = []
    with h5py.File(h5, "r+") as f:
        def strip(name, obj):
            if name.endswith("vars") and "name" in obj.attrs:
                del obj.attrs["name"]
                stripped.append(name)
        f.visititems(strip)
    assert "layers/functional/layers/conv2d_12/vars" in stripped  # vgg16's block5_conv3: the 13th Conv2D
    files["model.weights.h5"] = h5.read_bytes()
    path = tmp_path / "old.keras"
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    graph, params, _ = keras_io.read_model(path)
    out, _ = forward_exact(graph, params, x)
    assert max_rel_error(out, refs["output"]) <= REL_TOL


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_nested_models_in_a_functional_dag(tmp_path, suffix):
    """A Sequential and a two-output functional model used as layers of a functional model, one inner layer
    name shared by both (so its bare name is ambiguous), outputs of the inner model taken by index."""
    branch_in = keras.Input((8, 8, 3))
    b1 = L.Conv2D(4, 3, padding="same", name="conv")(branch_in)
    b2 = L.BatchNormalization(name="bn")(L.Conv2D(4, 1, name="proj")(branch_in))
    branch = keras.Model(branch_in, [b1, b2], name="branch")
    tower = keras.Sequential([keras.Input((8, 8, 4)), L.Conv2D(4, 3, padding="same", name="conv"),
                              L.ReLU(name="relu")], name="tower")
    inp = keras.Input((8, 8, 3))
    first, second = branch(inp)
    x = L.Add(name="add")([tower(first), second])
    out = L.Dense(3, activation="softmax", name="probs")(L.GlobalAveragePooling2D(name="gap")(x))
    model = randomize(keras.Model(inp, out, name="outer"))
    path = tmp_path / f"m{suffix}"
    model.save(path)
    graph, params, info, worst = check(model, tmp_path, path=path)
    assert graph.by_name["add"].inputs == ("tower/relu", "branch/bn")
    assert keras_io.resolve_name(graph, "proj") == "branch/proj"
    with pytest.raises(LayerError, match="ambiguous"):
        keras_io.resolve_name(graph, "conv")
    x = np.random.default_rng(3).normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    _, taps = forward_exact(graph, params, x, ("branch/bn", "tower/conv"))
    ref_bn = keras.Model(branch.inputs, branch.get_layer("bn").output)(x)
    ref_conv = keras.Model(tower.inputs, tower.get_layer("conv").output)(branch(x)[0])
    assert max_rel_error(taps["branch/bn"], ref_bn) <= REL_TOL
    assert max_rel_error(taps["tower/conv"], ref_conv) <= REL_TOL


def test_resolve_name_errors(nested):
    d, _, _ = nested
    graph, _, _ = keras_io.read_model(d / "m.keras")
    with pytest.raises(LayerError, match="unknown layer 'block9_conv1'"):
        keras_io.resolve_name(graph, "block9_conv1")
    assert keras_io.resolve_name(graph, "logits") == graph.outputs[0]


APPLICATIONS = [
    ("ResNet50", {}, 32, "resnet50", "caffe"),
    ("MobileNetV2", {"alpha": 0.35}, 32, "mobilenetv2_0.35_32", "tf"),
    ("DenseNet121", {}, 32, "densenet121", "torch"),
    ("InceptionV3", {}, 75, "inception_v3", "tf"),
    ("EfficientNetB0", {}, 32, "efficientnetb0", "none"),
]


@pytest.mark.parametrize("app,kwargs,size,name,preprocess", APPLICATIONS, ids=[a[0] for a in APPLICATIONS])
def test_keras_applications(tmp_path, app, kwargs, size, name, preprocess):
    model = getattr(keras.applications, app)(weights=None, input_shape=(size, size, 3), classes=10, **kwargs)
    graph, params, info, worst = check(model, tmp_path)
    assert info["application"] == name and info["preprocess"] == preprocess
    assert graph.logits == ("predictions", True)
    assert max(worst.values()) <= REL_TOL
    # The smallest input every layer keeps a pixel of: Keras's own minimum for InceptionV3.
    side = min_input_side(graph)
    assert side == 75 if app == "InceptionV3" else 1 <= side <= size


# ---------------------------------------------------------------------------------------------------------
# Keras 2 (tf.keras) files, written by scripts/make_keras2_fixtures.py


@pytest.mark.parametrize("stem", ["listing_5_5", "listing_5_20", "keras2_kinds", "keras2_tf_ops"])
def test_keras2_files(stem):
    path = FIXTURES / f"{stem}.h5"
    if not path.is_file():
        pytest.skip(f"{path} not generated (scripts/make_keras2_fixtures.py)")
    expected = np.load(FIXTURES / f"{stem}.npz", allow_pickle=False)
    graph, params, info = keras_io.read_model(path)
    assert info["keras_version"].startswith("2")
    if stem == "keras2_kinds":  # tf.keras's hard_sigmoid is 0.2x + 0.5, not Keras 3's relu6(x + 3) / 6
        assert graph.by_name["hard"].cfg["activation"] == "hard_sigmoid_keras2"
        assert set(params["dw"]) == {"kernel", "bias"}  # Keras 2's depthwise_kernel, stored as kernel
    if stem == "keras2_tf_ops":
        assert {"ops.Add", "ops.Subtract", "ops.Maximum", "ops.Multiply"} <= {x.kind for x in graph.layers}
    if stem == "listing_5_20":
        assert info["application"] == "vgg16" and "vgg16/block2_bn" in graph.by_name
    taps = [k for k in expected.files if k not in ("input", "output")]
    out, got = forward_exact(graph, params, expected["input"], [keras_io.resolve_name(graph, t) for t in taps])
    assert max_rel_error(out, expected["output"]) <= REL_TOL
    for t in taps:
        assert max_rel_error(got[keras_io.resolve_name(graph, t)], expected[t]) <= REL_TOL, t


def test_old_keras2_sequential_without_input_layer(tmp_path):
    """Keras ≤ 2.1 wrote a Sequential's config as a list of layers without an InputLayer: the first layer has
    the input shape."""
    import shutil

    import h5py

    src = FIXTURES / "listing_5_5.h5"
    if not src.is_file():
        pytest.skip(f"{src} not generated (scripts/make_keras2_fixtures.py)")
    path = tmp_path / "old.h5"
    shutil.copy(src, path)
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        assert cfg["config"]["layers"][0]["class_name"] == "InputLayer"
        del cfg["config"]["layers"][0]
        cfg["config"] = cfg["config"]["layers"]  # Keras 2.0–2.1: the config is the list of layers
        f.attrs["model_config"] = json.dumps(cfg).encode()
    expected = np.load(FIXTURES / "listing_5_5.npz", allow_pickle=False)
    graph, params, _ = keras_io.read_model(path)
    assert graph.layers[0].kind == "InputLayer" and graph.input_shape == (46, 46, 3)
    out, _ = forward_exact(graph, params, expected["input"])
    assert max_rel_error(out, expected["output"]) <= REL_TOL


def test_keras2_nested_weights_by_order(tmp_path):
    """A nested model's weights whose names do not name its layers are taken in Keras's order (trainable
    weights of every inner layer, then the non-trainable ones: the BatchNorm's moving statistics last)."""
    import shutil

    import h5py

    src = FIXTURES / "listing_5_20.h5"
    if not src.is_file():
        pytest.skip(f"{src} not generated (scripts/make_keras2_fixtures.py)")
    path = tmp_path / "renamed.h5"
    shutil.copy(src, path)
    with h5py.File(path, "r+") as f:
        g = f["model_weights/vgg16"]
        names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
        assert names[-1].endswith("block2_bn/moving_variance:0")  # Keras 2's order: non-trainable last
        for i, n in enumerate(names):
            g.move(n, f"w{i}")
        g.attrs["weight_names"] = [f"w{i}".encode() for i in range(len(names))]
    expected = np.load(FIXTURES / "listing_5_20.npz", allow_pickle=False)
    graph, params, _ = keras_io.read_model(path)
    out, _ = forward_exact(graph, params, expected["input"])
    assert max_rel_error(out, expected["output"]) <= REL_TOL


def test_nested_weights_by_order_with_frozen_layers(tmp_path):
    """As above, for a partly frozen inner model (fine-tuning, listing 5.22): the frozen layer's weights count
    as non-trainable, so they come after every trainable one."""
    import h5py

    base = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, name="frozen_conv"),
                             L.BatchNormalization(name="bn"), L.Conv2D(4, 3, name="conv")], name="base")
    base.get_layer("frozen_conv").trainable = False
    model = randomize(keras.Sequential([base, L.Flatten(name="flatten"), L.Dense(2, name="dense")]))
    path = tmp_path / "frozen.h5"
    model.save(path)
    with h5py.File(path, "r+") as f:
        g = f["model_weights/base"]
        names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
        assert names[0].endswith("bn/gamma")  # the frozen conv's kernel is not first: by name, Keras's order
        for i, n in enumerate(names):
            g.move(n, f"w{i}")
        g.attrs["weight_names"] = [f"w{i}".encode() for i in range(len(names))]
    x = np.random.default_rng(0).normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    graph, params, _ = keras_io.read_model(path)
    out, _ = forward_exact(graph, params, x)
    assert max_rel_error(out, model(x, training=False)) <= REL_TOL


# ---------------------------------------------------------------------------------------------------------
# Files that are not Keras models


def _one_line_error(path, match):
    with pytest.raises(JaxvizError, match=match) as e:
        keras_io.read_model(path)
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path, nested):
    d, _, _ = nested
    _one_line_error(tmp_path / "missing.keras", "not found")
    _one_line_error(tmp_path, "is a directory")
    unzipped = tmp_path / "unzipped"
    listing_5_5(48).save(unzipped, zipped=False)  # a folder with config.json and model.weights.h5
    assert keras_io.read_model(unzipped)[0].layers[1].kind == "Conv2D"
    (unzipped / "config.json").write_text("[1, 2")
    _one_line_error(unzipped, "cannot read")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not a model at all" * 10)
    _one_line_error(junk, "neither a .keras archive nor an HDF5 file")
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes((d / "m.keras").read_bytes()[:5000])
    _one_line_error(truncated, "cannot read|neither")
    truncated_h5 = tmp_path / "truncated.h5"
    truncated_h5.write_bytes((d / "m.h5").read_bytes()[:4000])
    _one_line_error(truncated_h5, "cannot read")
    zipped = tmp_path / "other.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("readme.txt", "hello")
    _one_line_error(zipped, "without config.json")
    bad_config = tmp_path / "bad_config.keras"
    with zipfile.ZipFile(d / "m.keras") as src, zipfile.ZipFile(bad_config, "w") as z:
        for n in src.namelist():
            z.writestr(n, src.read(n) if n != "config.json" else b"{not json")
    _one_line_error(bad_config, "cannot read")
    weights_only = tmp_path / "w.weights.h5"
    m = listing_5_5(48)
    m.save_weights(weights_only)
    _one_line_error(weights_only, "without a model config")


def test_subclassed_or_operation_models_are_refused(tmp_path):
    inp = keras.Input((4, 4, 3))
    out = keras.ops.sin(L.Conv2D(2, 1, name="c")(inp))  # a keras.ops operation jaxviz does not read
    model = keras.Model(inp, out)
    model.save(tmp_path / "ops.keras")
    _one_line_error(tmp_path / "ops.keras", "Keras operation Sin")
    cfg_path = tmp_path / "sub.keras"
    with zipfile.ZipFile(tmp_path / "ops.keras") as src, zipfile.ZipFile(cfg_path, "w") as z:
        for n in src.namelist():
            data = src.read(n)
            if n == "config.json":
                data = json.dumps({"class_name": "MyModel", "config": {}}).encode()
            z.writestr(n, data)
    _one_line_error(cfg_path, "MyModel")
