"""The user's own model files from the command line, beyond the book's square RGB convnet: models trained on
x / 255, kernels of every size (ResNet50's 7×7/2 stem and 1×1 bottlenecks), non-square inputs, Dense-only
models, one-channel (MNIST) models, colour order, DeepVis in the model's input range, and what
``--weights`` means for a file. Tiny Keras models (seeded weights), saved once per module."""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras", reason="Keras 3 writes the model files these tests read")

from PIL import Image  # noqa: E402

import jaxviz  # noqa: E402
from jaxviz import figures, preprocessing  # noqa: E402
from jaxviz.cli import main  # noqa: E402
from jaxviz.images import load_image  # noqa: E402

L = keras.layers


def _seeded(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, np.sqrt(2 / max(np.prod(w.shape[:-1]), 1)), w.shape).astype("float32")
                       if w.ndim > 1 else rng.normal(0, 0.05, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _models():
    """name -> Keras model: non-square (40×56, a flatten head), Dense-only, MNIST-like (28×28×1), a ResNet-like
    stem (7×7/2, 1×1 and 5×3 convs, a GAP head) and the same stem behind a Rescaling layer."""
    out = {}
    out["nonsquare"] = keras.Sequential([
        keras.Input((40, 56, 3)), L.Conv2D(8, 3, activation="relu", name="c1"), L.MaxPooling2D(2, name="p1"),
        L.Conv2D(8, 3, activation="relu", name="c2"), L.Flatten(name="flat"),
        L.Dense(3, activation="softmax", name="out")], name="nonsquare")
    out["dense"] = keras.Sequential([keras.Input((10,)), L.Dense(8, activation="relu", name="d1"),
                                     L.Dense(3, activation="softmax", name="out")], name="tabular")
    out["mnist"] = keras.Sequential([
        keras.Input((28, 28, 1)), L.Conv2D(8, 3, activation="relu", name="c1"), L.MaxPooling2D(2, name="p1"),
        L.Conv2D(8, 3, activation="relu", name="c2"), L.Flatten(name="flat"),
        L.Dense(10, activation="softmax", name="out")], name="mnist")
    for name, rescale in (("stem", False), ("rescaled", True)):
        inp = keras.Input((48, 48, 3))
        h = L.Rescaling(1 / 255, name="rescale")(inp) if rescale else inp
        h = L.Conv2D(8, 7, strides=2, padding="same", activation="relu", name="conv1_conv")(h)
        h = L.Conv2D(8, 1, activation="relu", name="c1x1")(h)
        h = L.Conv2D(8, (5, 3), activation="relu", name="c53")(h)
        out[name] = keras.Model(inp, L.Dense(4, activation="softmax", name="out")(L.GlobalAveragePooling2D()(h)),
                                name=name)
    # "stem" and "rescaled" get the same weights: the same network fed x / 255 outside or inside.
    seeds = {"nonsquare": 0, "dense": 1, "mnist": 2, "stem": 3, "rescaled": 3}
    return {k: _seeded(m, seeds[k]) for k, m in out.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own_cli")
    paths = {}
    for name, model in _models().items():
        paths[name] = str(folder / f"{name}.keras")
        model.save(paths[name])
    photo = folder / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(photo)
    paths["photo"] = str(photo)
    features = folder / "features.npy"
    np.save(features, np.random.default_rng(1).normal(size=(2, 10)).astype("float32"))
    paths["features"] = str(features)
    return paths


#: ``figures --quick`` cut down to the tasks a test needs (no patterns, no DeepVis: their compiles dominate).
MINIMAL = dict(pattern_methods=(), deepvis_classes=[], feature_maps=2, single_layer="")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(code, err, *words):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxviz: error:"), err
    assert "Traceback" not in err and "internal error" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


# --- 1. x / 255 ------------------------------------------------------------------------------------------------


def test_rescale_mode_feeds_pixels_over_255_and_the_cli_says_how_to_choose_it(files, capsys):
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    np.testing.assert_array_equal(preprocessing.preprocess(x, "rescale"), x / np.float32(255))
    np.testing.assert_allclose(preprocessing.unpreprocess(preprocessing.preprocess(x, "rescale"), "rescale"), x,
                               rtol=1e-6)
    code, out, err = _run(capsys, "predict", files["photo"], "--arch", files["stem"], "--json")
    assert code == 0
    assert "preprocessed as 'none'" in err and "--preprocess rescale" in err  # no Rescaling layer: the hint
    code, out_rescaled, err = _run(capsys, "predict", files["photo"], "--arch", files["stem"], "--json",
                                   "--preprocess", "rescale")
    assert code == 0 and "preprocessed as" not in err  # chosen by the user: nothing to say
    model = jaxviz.load(files["stem"])
    x = load_image(files["photo"], target_size=model.input_hw)[None] / np.float32(255)
    got = {d["id"]: d["score"] for d in json.loads(out_rescaled)[files["photo"]]}
    want = model.predict(x)[0]
    np.testing.assert_allclose([got[str(i)] for i in range(4)], want, atol=1e-5)  # scores printed as floats
    assert json.loads(out) != json.loads(out_rescaled)
    # A model that rescales inside itself: 'none' is right, and the line does not suggest rescale.
    code, _, err = _run(capsys, "predict", files["photo"], "--arch", files["rescaled"])
    assert code == 0 and "preprocessed as 'none'" in err and "--preprocess rescale" not in err


# --- 2. kernel colours in the model's channel order ------------------------------------------------------------


@pytest.mark.parametrize("mode, order", [("none", "R, G, B"), ("caffe", "B, G, R")])
def test_kernel_colour_patches_follow_the_preprocessing(files, tmp_path, capsys, mode, order):
    out = tmp_path / mode
    code, stdout, _ = _run(capsys, "kernels", "--arch", files["stem"], "--layer", "conv1_conv", "--preprocess", mode,
                           "--scale", "1", "--filters", "8", "-o", out)
    assert code == 0
    k = jaxviz.kernels(jaxviz.load(files["stem"]), "conv1_conv")  # [7, 7, 3, 8] in [0, 1]
    patch = np.asarray(Image.open(out / "kernels_conv1_conv_rgb.png"))[:7, :7]  # filter 0, one pixel per weight
    want = np.clip(np.rint(k[:, :, :, 0] * 255), 0, 255)
    np.testing.assert_array_equal(patch, want if order == "R, G, B" else want[..., ::-1])
    fig = figures.kernel_figures(jaxviz.load(files["stem"], preprocess=mode), "conv1_conv", 8)
    assert any(f"({order}, left to right)" in t.get_text() for t in fig[0].texts)


def test_one_channel_kernels_are_gray_without_colour_patches(files, tmp_path, capsys):
    code, stdout, _ = _run(capsys, "kernels", "--arch", files["mnist"], "--layer", "c1", "-o", tmp_path)
    assert code == 0
    assert (tmp_path / "kernels_c1.png").is_file() and not (tmp_path / "kernels_c1_rgb.png").exists()
    fig = figures.kernel_figures(jaxviz.load(files["mnist"]), "c1")
    assert len(fig) == 1 and any("(gray, left to right)" in t.get_text() for t in fig[0].texts)


# --- 3. DeepVis in the model's input range ---------------------------------------------------------------------


def test_deepvis_is_not_flat_for_models_fed_pixels_or_unit_range(files, tmp_path, capsys):
    """The same network taking 0..255 pixels (a Rescaling layer inside, mode 'none') or [0, 1] ones (mode
    'rescale'): the start, steps and decay follow the input range, so both give the same visible image."""
    imgs = {}
    for name, mode in (("rescaled", "none"), ("stem", "rescale")):
        code, _, err = _run(capsys, "deepvis", "--arch", files[name], "--preprocess", mode, "--class", "0",
                            "--class", "1", "--steps", "40", "-o", tmp_path / name)
        assert code == 0 and "stayed flat" not in err, err
        imgs[name] = [np.asarray(Image.open(tmp_path / name / f"deepvis_{c}.png"), np.float32) for c in (0, 1)]
        for img in imgs[name]:
            # Before, a model fed 0..255 got a black image (pixels 0..9); 'rescale' did not exist.
            std = img.reshape(-1, 3).std(axis=0).max()
            assert std > 4.0 and 60 < img.mean() < 200, (name, std, img.mean())
    for a, b in zip(imgs["rescaled"], imgs["stem"]):
        assert np.abs(a - b).max() <= 1  # the same pixels, up to rounding


def test_a_flat_deepvis_image_is_one_warning_line(files, tmp_path, capsys):
    code, _, err = _run(capsys, "deepvis", "--arch", files["stem"], "--class", "2", "--steps", "2",
                        "--step-size", "1e-9", "--init-std", "0", "-o", tmp_path)
    assert code == 0
    warn = [line for line in err.splitlines() if "warning" in line]
    assert len(warn) == 1 and "class 2" in warn[0] and "stayed flat" in warn[0]


# --- 4. --weights and provenance for a file --------------------------------------------------------------------


def test_weights_random_reinitialises_a_file_and_imagenet_is_refused(files, tmp_path, capsys):
    own = jaxviz.load(files["stem"])
    seeded = jaxviz.load(files["stem"], weights="random:3")
    again = jaxviz.load(files["stem"], weights="random:3")
    k = np.asarray(seeded.params["conv1_conv"]["kernel"])
    assert not np.array_equal(k, np.asarray(own.params["conv1_conv"]["kernel"]))
    np.testing.assert_array_equal(k, np.asarray(again.params["conv1_conv"]["kernel"]))
    assert abs(k.std() - np.sqrt(2 / (7 * 7 * 3))) < 0.02  # He-normal
    assert seeded.source.startswith("random:3")
    code, out_own, _ = _run(capsys, "predict", files["photo"], "--arch", files["stem"], "--json")
    code2, out_rand, _ = _run(capsys, "predict", files["photo"], "--arch", files["stem"], "--json",
                              "--weights", "random:3")
    assert code == code2 == 0 and json.loads(out_own) != json.loads(out_rand)
    for w in ("imagenet", files["rescaled"]):
        code, _, err = _run(capsys, "predict", files["photo"], "--arch", files["stem"], "--weights", w)
        _one_line_error(code, err, "holds its own weights", "random:SEED")


def test_figures_say_what_the_weights_of_a_seeded_file_are(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(figures, "QUICK", MINIMAL)
    code, _, err = _run(capsys, "figures", "--arch", files["stem"], "--quick", "--weights", "random:1",
                        "--image", files["photo"], "--no-progress", "-o", tmp_path)
    assert code == 0, err
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "seed 1" in manifest["weights_description"] and "untrained" in manifest["weights_description"]
    assert "seed 1" in (tmp_path / "index.html").read_text()
    code, _, err = _run(capsys, "figures", "--arch", files["stem"], "--weights", "imagenet", "-o", tmp_path / "x")
    _one_line_error(code, err, "holds its own weights")
    assert not (tmp_path / "x").exists()


# --- 5. kernels of every size ----------------------------------------------------------------------------------


def test_kernels_of_every_size_and_a_7x7_stem_figure_set_that_reruns(files, tmp_path, monkeypatch, capsys):
    for layer, (kh, kw) in (("conv1_conv", (7, 7)), ("c1x1", (1, 1)), ("c53", (5, 3))):
        code, stdout, err = _run(capsys, "kernels", "--arch", files["stem"], "--layer", layer, "-o", tmp_path / "k")
        assert code == 0, err
        assert (tmp_path / "k" / f"kernels_{layer}_labelled.png").is_file()
        fig = figures.kernel_figures(jaxviz.load(files["stem"]), layer)
        assert any(f"each {kh}×{kw} per input channel" in t.get_text() for t in fig[0].texts)
    monkeypatch.setattr(figures, "QUICK", MINIMAL)
    argv = ("figures", "--arch", files["stem"], "--quick", "--image", files["photo"], "--no-progress",
            "-o", tmp_path / "figs")
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert (tmp_path / "figs" / "kernels_conv1_conv_rgb.png").is_file()
    manifest = json.loads((tmp_path / "figs" / "manifest.json").read_text())
    assert manifest["weights_description"] == f"the weights stored in {files['stem']}"  # not "ImageNet weights"
    assert "ImageNet" not in (tmp_path / "figs" / "index.html").read_text()
    code, out, err = _run(capsys, *argv)  # a rerun finds everything done
    assert code == 0 and "0 figure task(s) made" in out


# --- 6. non-square inputs --------------------------------------------------------------------------------------


def test_non_square_model_through_every_command(files, tmp_path, monkeypatch, capsys):
    path = files["nonsquare"]
    model = jaxviz.load(path)
    assert model.input_hw == (40, 56) and model.arch.head == "flatten"
    code, out, err = _run(capsys, "predict", files["photo"], "--arch", path, "--json")
    assert code == 0, err
    x = model.preprocess_input(load_image(files["photo"], target_size=(40, 56))[None])
    got = [d["score"] for d in sorted(json.loads(out)[files["photo"]], key=lambda d: int(d["id"]))]
    np.testing.assert_allclose(got, model.predict(x)[0], atol=1e-5)
    code, _, err = _run(capsys, "gradcam", files["photo"], "--arch", path, "-o", tmp_path / "cam")
    assert code == 0, err
    heat = np.asarray(Image.open(tmp_path / "cam" / "photo_heatmap.png"))
    assert heat.shape[:2] == (34, 50)  # c2's 17×25 map (40×56 → 38×54 → 19×27 → 17×25), enlarged twice
    code, _, err = _run(capsys, "explain", files["photo"], "--arch", path, "--method", "saliency,occlusion",
                        "--npy", "-o", tmp_path / "ex")
    assert code == 0, err
    for method in ("saliency", "occlusion"):
        assert np.load(tmp_path / "ex" / f"photo_{method}.npy").shape[:2] == (40, 56)
    monkeypatch.setattr(figures, "QUICK", dict(pattern_methods=("keras",), pattern_filters=2, pattern_steps=1,
                                               single_size=32, deepvis_steps=1, feature_maps=2))
    code, _, err = _run(capsys, "figures", "--arch", path, "--quick", "--image", files["photo"], "--no-progress",
                        "-o", tmp_path / "figs")
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "figs" / "deepvis_1.png")).shape == (40, 56, 3)  # 130 % 3


# --- 7. Dense-only models --------------------------------------------------------------------------------------


def test_dense_only_model_summary_predict_and_image_methods_refuse(files, tmp_path, capsys):
    path = files["dense"]
    code, out, err = _run(capsys, "summary", path)
    assert code == 0 and "d1 (Dense)" in out and "(None, 3)" in out, err
    code, out, err = _run(capsys, "predict", files["features"], "--arch", path, "--json")
    assert code == 0, err
    rows = json.loads(out)
    x = np.load(files["features"])
    want = keras.saving.load_model(path).predict(x, verbose=0)
    for i in range(2):
        got = sorted(rows[f"{files['features']}[{i}]"], key=lambda d: int(d["id"]))
        np.testing.assert_allclose([d["score"] for d in got], want[i], atol=1e-5)
    code, _, err = _run(capsys, "predict", files["photo"], "--arch", path)
    _one_line_error(code, err, "feature vectors", ".npy")
    for argv in (("gradcam", files["photo"]), ("explain", files["photo"], "--method", "saliency"),
                 ("kernels",), ("deepvis", "--class", "0")):
        code, _, err = _run(capsys, *argv, "--arch", path, "-o", tmp_path / "x")
        _one_line_error(code, err, "spatial (image) input")


# --- 8. one-channel models -------------------------------------------------------------------------------------


def test_one_channel_model_takes_photos_as_grayscale(files, tmp_path, capsys):
    path = files["mnist"]
    model = jaxviz.load(path)
    code, out, err = _run(capsys, "predict", files["photo"], "--arch", path, "--json", "--top", "10")
    assert code == 0, err
    gray = np.asarray(Image.open(files["photo"]).convert("RGB").resize((28, 28), Image.Resampling.NEAREST)
                      .convert("L"), np.float32)[None, ..., None]  # Keras's load_img(color_mode="grayscale")
    got = [d["score"] for d in sorted(json.loads(out)[files["photo"]], key=lambda d: int(d["id"]))]
    np.testing.assert_allclose(got, model.predict(gray)[0], atol=1e-5)
    code, _, err = _run(capsys, "gradcam", files["photo"], "--arch", path, "-o", tmp_path / "cam")
    assert code == 0, err
    code, _, err = _run(capsys, "explain", files["photo"], "--arch", path, "--method", "saliency",
                        "-o", tmp_path / "ex")
    assert code == 0, err
    rgb = load_image(files["photo"], target_size=(28, 28))[None]
    with pytest.raises(jaxviz.JaxvizError) as e:
        model.predict(rgb)
    msg = str(e.value)
    assert "[N, H, W, 1]" in msg and "(1, 28, 28, 3)" in msg and "3 channel(s) given" in msg
    assert "x[None]" not in msg
    with pytest.raises(jaxviz.JaxvizError, match=r"x\[None\]"):  # a missing batch axis still says so
        model.predict(gray[0])
    code, _, err = _run(capsys, "predict", files["photo"], "--arch", path, "--preprocess", "caffe")
    _one_line_error(code, err, "'caffe'", "3 channels", "rescale")
