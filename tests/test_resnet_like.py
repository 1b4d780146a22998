"""A small Keras functional model built like ``keras.applications.ResNet50`` (its layer names, conv/BN/ReLU
blocks ending in an Add and an activation, 1×1 projection shortcuts): the summary table against Keras's own,
what ``--blocks`` and the figure set pick on such a graph."""

import os
import re

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras", reason="Keras is not installed (pip install 'jaxviz[keras]')")

from keras_helpers import numpy_initializers, randomize  # noqa: E402

import jaxviz  # noqa: E402
from jaxviz.cli import main  # noqa: E402

SIZE = 32


def _block(x, filters, name, stride=1, project=False):
    """ResNet50's bottleneck block (keras.applications.resnet.block1), at a few channels."""
    L = keras.layers
    if project:
        shortcut = L.Conv2D(4 * filters, 1, strides=stride, name=name + "_0_conv")(x)
        shortcut = L.BatchNormalization(name=name + "_0_bn")(shortcut)
    else:
        shortcut = x
    x = L.Conv2D(filters, 1, strides=stride, name=name + "_1_conv")(x)
    x = L.BatchNormalization(name=name + "_1_bn")(x)
    x = L.Activation("relu", name=name + "_1_relu")(x)
    x = L.Conv2D(filters, 3, padding="same", name=name + "_2_conv")(x)
    x = L.BatchNormalization(name=name + "_2_bn")(x)
    x = L.Activation("relu", name=name + "_2_relu")(x)
    x = L.Conv2D(4 * filters, 1, name=name + "_3_conv")(x)
    x = L.BatchNormalization(name=name + "_3_bn")(x)
    x = L.Add(name=name + "_add")([shortcut, x])
    return L.Activation("relu", name=name + "_out")(x)


def resnet_like(frozen_head=False):
    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 3))
    x = L.ZeroPadding2D(3, name="conv1_pad")(inp)
    x = L.Conv2D(8, 3, strides=2, name="conv1_conv")(x)  # ResNet50: 7×7
    x = L.BatchNormalization(name="conv1_bn")(x)
    x = L.Activation("relu", name="conv1_relu")(x)
    x = L.ZeroPadding2D(1, name="pool1_pad")(x)
    x = L.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    x = _block(x, 2, "conv2_block1", project=True)
    x = _block(x, 2, "conv2_block2")
    x = _block(x, 4, "conv3_block1", stride=2, project=True)
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    out = L.Dense(5, activation="softmax", name="predictions", trainable=not frozen_head)(x)
    with numpy_initializers():
        model = keras.Model(inp, out, name="resnet_like")
    randomize(model, seed=0)
    return model


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("resnet") / "resnet_like.keras"
    kmodel = resnet_like(frozen_head=True)
    kmodel.save(path)
    lines = []
    kmodel.summary(print_fn=lambda s, line_break=True: lines.append(s))
    return path, "\n".join(lines), kmodel.get_config()


def _totals(text):
    return [line.strip() for line in text.splitlines() if re.match(r"\s*(Total|Trainable|Non-trainable) params", line)]


def _history_names(node) -> list[str]:
    """The layer names in a Keras config's ``keras_history`` entries, in order."""
    if isinstance(node, dict):
        if "keras_history" in node:
            return [node["keras_history"][0]]
        return [n for v in node.values() for n in _history_names(v)]
    if isinstance(node, (list, tuple)):
        return [n for v in node for n in _history_names(v)]
    return []


def test_summary_matches_keras_totals_and_connections(resnet_file, capsys):
    path, keras_text, config = resnet_file
    assert main(["summary", str(path)]) == 0
    ours = capsys.readouterr().out
    want = _totals(keras_text)
    assert len(want) == 3 and _totals(ours) == want  # BatchNorm's moving statistics and the frozen Dense
    assert "Non-trainable params: 0 " not in ours
    assert "Connected to" in ours and "Connected to" in keras_text  # Keras's column (cells cut at 80 columns)
    rows = {line.split()[0]: line for line in ours.splitlines() if re.match(r"\w+ \(", line)}
    for layer in config["layers"]:
        inputs = _history_names(layer["inbound_nodes"])
        assert rows[layer["name"]].endswith(", ".join(f"{n}[0][0]" for n in inputs) or "-"), layer["name"]


def _image(tmp_path):
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_blocks_are_the_block_outputs(resnet_file, tmp_path, capsys):
    """``--blocks``: the output of each residual block (after its Add and ReLU), not its last conv."""
    path = resnet_file[0]
    out = tmp_path / "maps"
    code = main(["activations", str(_image(tmp_path)), "--arch", str(path), "--blocks", "--count", "2",
                 "--no-progress", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    made = sorted(p.name for p in out.glob("*.png"))
    blocks = ("conv2_block1_out", "conv2_block2_out", "conv3_block1_out")
    assert all(any(b in name for name in made) for b in blocks), made
    assert not any("_3_conv" in name or "_0_conv" in name for name in made), made
    from jaxviz.visualize.activations import block_end_layers

    assert block_end_layers(jaxviz.load(str(path))) == list(blocks)
    assert block_end_layers(jaxviz.load("vgg_tiny", "random:0", include_top=False)) == [
        "block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"]  # VGG as before


def test_gradcam_names_its_layer_on_the_terminal(resnet_file, tmp_path, capsys):
    code = main(["gradcam", str(_image(tmp_path)), "--arch", str(resnet_file[0]), "--top", "2", "--no-progress",
                 "-o", str(tmp_path / "cam")])
    out = capsys.readouterr().out
    assert code == 0 and "at layer conv3_block1_out" in out


def test_figures_draw_patterns_of_spatial_convs(resnet_file, tmp_path):
    """``figures`` on a ResNet: patterns of 3×3 convs, never of the 1×1 projections and bottlenecks."""
    manifest = jaxviz.make_figures(str(resnet_file[0]), image=str(_image(tmp_path)), out_dir=tmp_path / "figs",
                                   pattern_filters=1, pattern_methods=("keras",), pattern_steps=1, pattern_size=32,
                                   single_size=32, kernel_filters=2, feature_maps=2, deepvis_classes=[0],
                                   deepvis_steps=1, progress=False)
    layers = manifest["parameters"]["pattern_layers"]
    assert layers and all(name == "conv1_conv" or name.endswith("_2_conv") for name in layers), layers
    assert manifest["parameters"]["single_layer"].endswith("_2_conv")
    assert "conv3_block1_out" in manifest["tasks"]["feature_maps"]["params"]["layers"]  # the block outputs
