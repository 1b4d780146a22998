"""A newcomer's own model through the CLI (docs/NEWCOMER.md): the book's cats-vs-dogs network in miniature —
Keras's default layer names (conv2d, conv2d_1, …), a Rescaling layer first and one sigmoid unit — saved by
Keras with seeded weights. Each test pins a problem that walkthrough found."""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras", reason="Keras 3 writes the model files these tests read")

from PIL import Image  # noqa: E402

import jaxviz  # noqa: E402
from jaxviz.cli import main  # noqa: E402
from jaxviz.metrics.sanity import randomise  # noqa: E402
from jaxviz.visualize.activations import block_end_layers  # noqa: E402

L = keras.layers


def _catsdogs():
    """DLwP's cats-vs-dogs convnet (1st ed. listing 5.5, behind the 2nd edition's Rescaling) at 36 px and a
    tenth of the width: Rescaling, conv/pool ×3, Flatten, Dropout, Dense, Dense(1, sigmoid); Keras's names."""
    keras.backend.clear_session()  # Keras's default names count from zero again (conv2d, conv2d_1, …)
    keras.utils.set_random_seed(0)
    inp = keras.Input((36, 36, 3))
    h = L.Rescaling(1 / 255)(inp)
    for width in (4, 8, 8):
        h = L.MaxPooling2D(2)(L.Conv2D(width, 3, activation="relu")(h))
    h = L.Dense(8, activation="relu")(L.Dropout(0.5)(L.Flatten()(h)))
    return keras.Model(inp, L.Dense(1, activation="sigmoid")(h))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("newcomer")
    path = str(folder / "catsdogs.keras")
    _catsdogs().save(path)
    photo = folder / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photo)
    return {"model": path, "photo": str(photo)}


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_blocks_of_a_chain_with_keras_default_names_end_before_each_pooling(files):
    # Every conv is named conv2d[_k]: grouping by the name's prefix gave one block (the last conv only).
    model = jaxviz.load(files["model"])
    assert model.conv_layer_names == ["conv2d", "conv2d_1", "conv2d_2"]
    assert block_end_layers(model) == ["conv2d", "conv2d_1", "conv2d_2"]
    # VGG's block<k>_ names still decide (block1_conv2 precedes block1_pool anyway).
    vgg = jaxviz.load("vgg16", weights="random:0", include_top=False)
    assert block_end_layers(vgg) == ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3",
                                     "block5_conv3"]


def test_activations_blocks_draws_every_block_of_the_book_network(files, tmp_path, capsys):
    code, out, err = _run(capsys, "activations", files["photo"], "--arch", files["model"], "--blocks",
                          "-o", tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["photo_conv2d.png", "photo_conv2d_1.png",
                                                              "photo_conv2d_2.png"]


def test_rescale_on_a_file_that_rescales_itself_is_one_warning_line(files, capsys):
    # README's "--preprocess rescale" is for the 1st edition's files; the 2nd edition's model has Rescaling(1/255)
    # inside, and rescaling again feeds it 0..1/255 (every prediction ~0.5): say so.
    code, out, err = _run(capsys, "predict", files["photo"], "--arch", files["model"], "--preprocess", "rescale")
    assert code == 0, err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "rescaling" in warning[0] and "second time" in warning[0], err
    code, out, err = _run(capsys, "predict", files["photo"], "--arch", files["model"])
    assert code == 0 and "warning" not in err and "'none'" in err, err


def test_the_two_pattern_methods_of_a_layer_share_a_folder(files, tmp_path, capsys):
    # The regularised grid was written over the book's <layer>.png in the same -o folder.
    common = ("patterns", "--arch", files["model"], "--layer", "conv2d_1", "--filters", "0:2", "--size", "32",
              "--steps", "2", "--no-progress", "-o", tmp_path)
    code, _, err = _run(capsys, *common)
    assert code == 0, err
    book = (tmp_path / "conv2d_1.png").read_bytes()
    code, out, err = _run(capsys, *common, "--method", "regularised")
    assert code == 0, err
    assert "conv2d_1_regularised.png" in out
    assert (tmp_path / "conv2d_1.png").read_bytes() == book
    assert {p.name for p in tmp_path.iterdir()} >= {"conv2d_1.png", "conv2d_1.json", "conv2d_1_labelled.png",
                                                    "conv2d_1_regularised.png", "conv2d_1_regularised.json",
                                                    "conv2d_1_regularised_labelled.png"}
    code, out, err = _run(capsys, *common)  # the book's grid is still done
    assert code == 0 and "done already" in out, err


def test_gradcam_of_a_sigmoid_unit_names_class_1_once_with_its_probability(files, tmp_path, capsys):
    # A file without class names: the unit is "class 1" (was printed "class 1 (class 1)"), its p the model's.
    code, out, err = _run(capsys, "gradcam", files["photo"], "--arch", files["model"], "--class", "1",
                          "--no-progress", "-o", tmp_path)
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("  photo:"))
    assert line.startswith("  photo: class 1, p = "), line
    model = jaxviz.load(files["model"])
    x = model.preprocess_input(jaxviz.load_image(files["photo"], target_size=model.input_hw)[None])
    p = float(model.predict(x)[0, -1])
    assert abs(float(line.split("p = ")[1].split(",")[0]) - p) < 1e-4, (line, p)
    # explain's gradcam map went to the same photo_gradcam.png, over gradcam's heatmap: both now stay.
    assert {f.name for f in tmp_path.iterdir()} == {"photo_heatmap.png", "photo_overlay.png", "photo_top2.png"}
    heatmap = (tmp_path / "photo_heatmap.png").read_bytes()
    code, out, err = _run(capsys, "explain", files["photo"], "--arch", files["model"], "--method", "gradcam",
                          "--no-progress", "-o", tmp_path)
    assert code == 0, err
    assert (tmp_path / "photo_gradcam.png").exists() and (tmp_path / "photo_heatmap.png").read_bytes() == heatmap


def test_evaluate_sanity_check_of_a_batchnorm_model(tmp_path, capsys):
    # ResNet50's sanity check died with "internal error: KeyError: 'kernel'" on its BatchNormalization layers
    # (and would on a conv without bias): they are re-initialised as Keras does, identity for a batch norm.
    keras.utils.set_random_seed(1)
    inp = keras.Input((24, 24, 3))
    h = L.Conv2D(4, 3, use_bias=False, name="conv")(inp)
    h = L.Activation("relu")(L.BatchNormalization(name="bn")(h))
    h = L.SeparableConv2D(4, 3, name="sep")(h)
    model = keras.Model(inp, L.Dense(3, activation="softmax", name="out")(L.GlobalAveragePooling2D()(h)))
    path = str(tmp_path / "bn.keras")
    model.save(path)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(photo)
    code, out, err = _run(capsys, "evaluate", photo, "--arch", path, "--method", "saliency", "--sanity", "full",
                          "--steps", "4", "--no-progress")
    assert code == 0, err
    assert "out / sep / bn / conv" in out, out
    loaded = jaxviz.load(path)
    new = randomise(loaded.params, ["bn", "sep", "conv"])
    np.testing.assert_array_equal(new["bn"]["gamma"], 1)
    np.testing.assert_array_equal(new["bn"]["moving_mean"], 0)
    assert set(new["sep"]) == set(loaded.params["sep"]) and set(new["conv"]) == {"kernel"}
    assert not np.allclose(new["conv"]["kernel"], loaded.params["conv"]["kernel"])


def test_help_names_every_model_file_and_when_rescale_applies(capsys):
    # The help listed .keras/.h5/.npz but not .onnx, and "rescale" without the Rescaling-layer caveat.
    code, out, err = _run(capsys, "predict", "--help")
    assert code == 0, err
    text = " ".join(out.split())
    assert ".onnx" in text and "without a Rescaling layer of their own" in text, text
