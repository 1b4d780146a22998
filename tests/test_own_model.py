"""Everything works on the user's own model: the book's cats-vs-dogs convnet (DLwP listing 5.5) saved by
Keras, loaded with ``jaxviz.load(path)``, explained by every entry point and every CLI command, and
compared with Keras running the same file (exact mode, full float32 precision)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras", reason="Keras 3 writes the model files these tests read")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxviz  # noqa: E402
from jaxviz import keras_compare, layers  # noqa: E402
from jaxviz.cli import main  # noqa: E402

SIZE = 64
#: Parity tolerance of the project: max|Δ| ≤ 1e-4 · max|ref| in exact mode.
TOL = 1e-4


def _book_convnet(size=SIZE, seed=0):
    """Listing 5.5: four Conv2D/MaxPooling2D pairs, Flatten, Dropout, Dense(512), Dense(1, sigmoid)."""
    L = keras.layers
    # The names Keras gives these layers in a fresh session (later models in one process get other suffixes).
    convs = [L.Conv2D(f, 3, activation="relu", name="conv2d" + (f"_{i}" if i else ""))
             for i, f in enumerate((32, 64, 128, 128))]
    pools = [L.MaxPooling2D(2, name="max_pooling2d" + (f"_{i}" if i else "")) for i in range(4)]
    model = keras.Sequential([
        keras.Input((size, size, 3)), *[layer for pair in zip(convs, pools) for layer in pair],
        L.Flatten(name="flatten"), L.Dropout(0.5, name="dropout"), L.Dense(512, activation="relu", name="dense"),
        L.Dense(1, activation="sigmoid", name="dense_1"),
    ], name="cats_and_dogs_small")
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, np.sqrt(2 / max(np.prod(w.shape[:-1]), 1)), w.shape).astype("float32")
                       if w.ndim > 1 else rng.normal(0, 0.05, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own")
    kmodel = _book_convnet()
    paths = {"keras": str(folder / "cats_and_dogs_small_2.keras"), "h5": str(folder / "cats_and_dogs_small_2.h5")}
    kmodel.save(paths["keras"])
    kmodel.save(paths["h5"])  # Keras 3's legacy HDF5 (model_config + model_weights), as listing 5.5 saves
    return kmodel, paths


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    return rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")


def _rel(ours, ref):
    ref = np.asarray(ref)
    return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_book_convnet_equals_keras_layer_by_layer_and_in_gradcam(files, images, kind):
    kmodel, paths = files
    model = jaxviz.load(paths[kind], ops="exact")
    assert model.preprocess == "none" and model.num_classes == 2  # a sigmoid unit: class 1; class 0: 1 − p
    x = images / 255.0
    with jax.default_matmul_precision("highest"):
        np.testing.assert_array_equal(model.predict(x).shape, (2, 1))
        assert _rel(model.predict(x), kmodel.predict(x, verbose=0)) <= TOL
        rows = keras_compare.compare(model, x)
    names = [r["layer"] for r in rows]
    assert "flatten" in names and "dense_1" in names and names[-1] == f"gradcam({model.cam_layer})"
    assert model.cam_layer == "conv2d_3"  # the last spatial map before the head that is not a pool
    worst = max(rows, key=lambda r: r["rel"])
    assert worst["rel"] <= TOL, worst
    assert rows[-1]["max_abs_ref"] > 0  # a real map was compared


def test_saliency_and_both_classes_of_a_sigmoid_unit_equal_keras(files, images):
    kmodel, paths = files
    model = jaxviz.load(paths["keras"], ops="exact")
    x = jnp.asarray(images / 255.0)
    tv = [v.value for v in kmodel.trainable_variables]
    ntv = [v.value for v in kmodel.non_trainable_variables]

    def keras_prob(x):
        return kmodel.stateless_call(tv, ntv, x, training=False)[0][:, 0]

    with jax.default_matmul_precision("highest"):
        # Keras's labels: the unit is P(y = 1) (class 1), its complement class 0
        ref1 = jax.grad(lambda x: keras_prob(x).sum())(x)
        ref0 = jax.grad(lambda x: (1 - keras_prob(x)).sum())(x)
        ours0 = jaxviz.saliency(model, x, target=0, score="prob", reduce=None)
        ours1 = jaxviz.saliency(model, x, target=1, score="prob", reduce=None)
        logit0 = jaxviz.saliency(model, x, target=0, score="logit", reduce=None)
        logit1 = jaxviz.saliency(model, x, target=1, score="logit", reduce=None)
        signed1 = jaxviz.input_x_gradient(model, x, target=1, score="logit", reduce=None)
        ref_logit1 = x * jax.grad(lambda x: jax.scipy.special.logit(keras_prob(x)).sum())(x)
    # Saliency is |∂score/∂x| (Simonyan et al.).
    assert _rel(ours0, jnp.abs(ref0)) <= TOL and _rel(ours1, jnp.abs(ref1)) <= TOL
    assert _rel(signed1, ref_logit1) <= 1e-3  # the unit's logit z, signed (logit(σ(z)) in float32: ~1e-5)
    np.testing.assert_allclose(logit1, logit0, atol=1e-6 * float(jnp.abs(logit0).max()))
    logits = model.apply(model.params, x, upto="logits")[0]  # class 0: the complement's −z; class 1: the unit's z
    np.testing.assert_array_equal(logits[:, 0], -logits[:, 1])
    with jax.default_matmul_precision("highest"):
        z = kmodel.stateless_call(tv, ntv, x, training=False)[0][:, 0]
    np.testing.assert_allclose(jax.nn.sigmoid(logits[:, 1]), z, rtol=1e-6)


def test_a_sigmoid_units_classes_are_keras_labels(files, tmp_path, capsys):
    # Listing 5.5 trains with binary cross-entropy on labels 0/1 (cats 0, dogs 1: image_dataset_from_directory
    # numbers class folders alphabetically): Keras's output p is P(y = 1). One image Keras calls 0, and one it
    # calls 1 (made by steps up Keras's own gradient of p).
    kmodel, paths = files
    model = jaxviz.load(paths["keras"], ops="exact")
    tv = [v.value for v in kmodel.trainable_variables]
    ntv = [v.value for v in kmodel.non_trainable_variables]
    keras_p = jax.jit(lambda x: kmodel.stateless_call(tv, ntv, x, training=False)[0][:, 0])
    x = np.random.default_rng(7).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")
    with jax.default_matmul_precision("highest"):
        for _ in range(20):
            if keras_p(x[1:])[0] > 0.7:
                break
            x[1] = np.clip(x[1] + 0.05 * np.sign(jax.grad(lambda v: keras_p(v)[0])(x[1:])[0]), 0, 1)
        p = np.asarray(keras_p(x))
    assert p[0] < 0.5 < p[1], p
    with jax.default_matmul_precision("highest"):
        decoded = model.decode_predictions(model.predict(x), top=2)
    for d, pk in zip(decoded, p):
        assert d[0][0] == str(int(pk >= 0.5))  # the top class is Keras's label
        probs = {int(i): prob for i, _, prob in d}
        np.testing.assert_allclose([probs[1], probs[0]], [pk, 1 - pk], rtol=1e-4, atol=1e-6)
    # targets: None is Keras's label, 1 is the unit's logit z, 0 the complement's −z
    with jax.default_matmul_precision("highest"):
        top = np.asarray(jaxviz.input_x_gradient(model, x, reduce=None))
        one = np.asarray(jaxviz.input_x_gradient(model, x, target=1, reduce=None))
        zero = np.asarray(jaxviz.input_x_gradient(model, x, target=0, reduce=None))
    np.testing.assert_array_equal(top[1], one[1])
    np.testing.assert_array_equal(top[0], zero[0])
    np.testing.assert_allclose(zero, -one, rtol=1e-6, atol=1e-7)
    # the command line: predict names class_1 with Keras's p for the image Keras calls 1
    from PIL import Image

    img = tmp_path / "dog.png"
    Image.fromarray(np.round(x[1] * 255).astype(np.uint8)).save(img)
    with jax.default_matmul_precision("highest"):
        # the file's model takes raw 0..255 pixels (preprocess "none"), as the command line feeds it
        p_img = float(kmodel.predict(np.asarray(Image.open(img), np.float32)[None], verbose=0)[0, 0])
    label = int(p_img >= 0.5)
    assert main(["predict", str(img), "--arch", paths["keras"], "--top", "1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)[str(img)]
    assert row["id"] == str(label) and row["name"] == f"class_{label}"
    np.testing.assert_allclose(row["score"], p_img if label else 1 - p_img, rtol=1e-4)
    # explain's default target (and its title) is Keras's label too
    assert main(["explain", str(img), "--arch", paths["keras"], "--method", "saliency", "-o", str(tmp_path / "e")]) == 0
    assert f": class {label}\n" in capsys.readouterr().out  # an unnamed class: its number alone
    assert json.loads((tmp_path / "e" / "dog_explain.json").read_text())["target"] == label


def test_a_truncated_pass_on_the_file_takes_any_size_its_layers_allow(files):
    # The file's model takes 64×64 (its Flatten → Dense head); up to conv2d_3, 38×38 is the smallest size whose
    # four convolutions and three pools keep a pixel. Keras runs the same layers on an Input of free size.
    kmodel, paths = files
    model = jaxviz.load(paths["keras"], ops="exact")
    x = np.random.default_rng(2).uniform(0, 255, (1, 38, 38, 3)).astype("float32")
    inp = keras.Input((None, None, 3))
    h = inp
    for layer in kmodel.layers[:7]:  # conv2d … conv2d_3
        h = layer(h)
    assert kmodel.layers[6].name == "conv2d_3"
    with jax.default_matmul_precision("highest"):
        got = model.features(x, "conv2d_3")["conv2d_3"]
        ref = keras.Model(inp, h).predict(x, verbose=0)
    assert got.shape == ref.shape == (1, 1, 1, 128) and _rel(got, ref) <= TOL
    with pytest.raises(jaxviz.JaxvizError, match="up to conv2d_3 needs inputs of at least 38×38 pixels, got 37×37"):
        model.features(x[:, :37, :37], "conv2d_3")
    with pytest.raises(jaxviz.JaxvizError, match="with its top needs 64×64 inputs, got 38×38"):
        model.features(x, "dense")


def test_every_method_runs_on_the_file(files, images):
    _, paths = files
    model = jaxviz.load(paths["keras"])
    x = images / 255.0
    # Few samples where a method draws many: this checks that each runs on the file, not its statistics.
    light = {"integrated_gradients": {"steps": 4}, "rise": {"n": 16}, "lime": {"n_samples": 16},
             "smoothgrad": {"n": 4}, "gradient_shap": {"n": 4}}
    for name in jaxviz.METHODS:
        maps = np.asarray(jaxviz.explain(model, x, name, **light.get(name, {})))
        assert maps.shape[:1] == (2,) and np.isfinite(maps).all(), name
    heat, classes = jaxviz.gradcam(model, x, top=2)
    assert heat.shape == (2, 2, 4, 4) and sorted(np.asarray(classes)[0].tolist()) == [0, 1]
    feats = model.features(x, ["conv2d", "max_pooling2d_3"])
    assert feats["conv2d"].shape == (2, 62, 62, 32) and feats["max_pooling2d_3"].shape == (2, 2, 2, 128)
    assert jaxviz.kernels(model, "conv2d").shape == (3, 3, 3, 32)
    pats = jaxviz.filter_patterns(model, "conv2d_1", [0, 5], size=SIZE, steps=3, progress=False)
    assert pats.shape == (2, SIZE, SIZE, 3) and np.isfinite(pats).all()


def test_cli_on_the_file(files, tmp_path, capsys):
    _, paths = files
    img = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 90, 3), dtype=np.uint8)).save(img)
    model_file = paths["keras"]
    assert main(["summary", model_file]) == 0
    out = capsys.readouterr().out
    assert 'Model: "cats_and_dogs_small"' in out and "conv2d (Conv2D)" in out and "Total params:" in out
    assert main(["predict", str(img), "--arch", model_file, "--top", "2"]) == 0
    captured = capsys.readouterr()
    assert "preprocessed as 'none'" in captured.err
    assert main(["gradcam", str(img), "--arch", model_file, "-o", str(tmp_path / "cam")]) == 0
    assert any(p.suffix == ".png" for p in (tmp_path / "cam").iterdir())
    assert main(["explain", str(img), "--arch", model_file, "--method", "saliency", "--preprocess", "tf",
                 "-o", str(tmp_path / "ex")]) == 0
    assert main(["activations", str(img), "--arch", model_file, "--layer", "conv2d", "-o", str(tmp_path / "act")]) == 0
    assert main(["convert", model_file, "-o", str(tmp_path / "converted")]) == 0
    converted = jaxviz.load(str(tmp_path / "converted.npz"), ops="exact")
    x = np.random.default_rng(1).uniform(0, 1, (1, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_array_equal(converted.predict(x), jaxviz.load(model_file, ops="exact").predict(x))
    assert main(["compare-keras", str(img), "--arch", model_file]) == 0
    assert "PASS" in capsys.readouterr().out


def test_unsupported_layer_is_one_line_naming_it(tmp_path):
    candidates = [c for c in ("UnitNormalization", "GroupNormalization", "SpectralNormalization")
                  if c not in layers.KINDS and hasattr(keras.layers, c)]
    if not candidates:
        pytest.skip("every candidate layer kind is supported now")
    kind = candidates[0]
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, name="c")(inp)
    h = getattr(L, kind)(name="odd")(h) if kind != "GroupNormalization" else L.GroupNormalization(2, name="odd")(h)
    path = tmp_path / "odd.keras"
    keras.Model(inp, L.GlobalAveragePooling2D()(h)).save(path)
    r = subprocess.run([sys.executable, "-m", "jaxviz", "summary", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"'odd' is a {kind}" in r.stderr and "supported layer kinds" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_nested_model_layers_by_full_and_bare_names(tmp_path):
    """Listing 5.20's shape (a conv base used as a layer, then a new head): inner layers are ``base/inner``,
    reachable by their bare names where unique; Grad-CAM's default layer is the base's last conv."""
    L = keras.layers
    base_in = keras.Input((32, 32, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(base_in)
    h = L.MaxPooling2D(2, name="pool_a")(h)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv_b")(h)
    base = keras.Model(base_in, L.MaxPooling2D(2, name="pool_b")(h), name="base")
    model = keras.Sequential([keras.Input((32, 32, 3)), base, L.Flatten(), L.Dense(16, activation="relu"),
                              L.Dense(1, activation="sigmoid")], name="fine_tuned")
    path = tmp_path / "fine_tuned.keras"
    model.save(path)
    m = jaxviz.load(str(path), ops="exact")
    assert "base/conv_b" in m.layer_names and m.cam_layer == "base/conv_b"
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    by_bare, by_full = m.features(x, "conv_b"), m.features(x, "base/conv_b")
    np.testing.assert_array_equal(by_bare["base/conv_b"], by_full["base/conv_b"])
    with jax.default_matmul_precision("highest"):
        ref = keras.Model(base.inputs, base.get_layer("conv_b").output).predict(x, verbose=0)
        assert _rel(by_full["base/conv_b"], ref) <= TOL
        assert _rel(m.predict(x), model.predict(x, verbose=0)) <= TOL
    heat = jaxviz.gradcam(m, x, layer="conv_b")
    assert heat.shape == (2, 16, 16) and float(np.asarray(heat).max()) > 0


def test_figure_set_for_the_file(files, tmp_path):
    """``figures`` on the user's model: its summary, first-layer kernels, feature maps, patterns of a few of
    its conv layers and Grad-CAM at its default layer, with an index page."""
    from PIL import Image

    _, paths = files
    img = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (70, 70, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "figs"
    manifest = jaxviz.make_figures(paths["keras"], image=str(img), out_dir=out, pattern_filters=4,
                                   pattern_methods=("keras",), pattern_steps=2, single_size=32,
                                   deepvis_classes=[0], deepvis_steps=2, progress=False)
    tasks = manifest["tasks"]
    assert {"summary", "kernels", "feature_maps", "gradcam", "deepvis"} <= set(tasks)
    assert "patterns_keras_conv2d" in tasks and "patterns_keras_conv2d_3" in tasks
    assert tasks["gradcam"]["params"]["layer"] == "conv2d_3"
    assert 'Model: "cats_and_dogs_small"' in (out / "summary.txt").read_text()
    assert (out / "index.html").is_file() and (out / "gradcam_overlay.png").stat().st_size > 1000
