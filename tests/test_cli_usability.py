"""What a new user expects of the commands: folders of images, defaults that follow the model, the same
answer from Python and the command line, maps that cannot be drawn reported, help that names the choices."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import jaxviz
from jaxviz.cli import main
from jaxviz.demo import demo_image_path

DEMO = ["--arch", "vgg_demo"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def demo():
    return jaxviz.load("vgg_demo")


@pytest.fixture(scope="module")
def star(demo):
    return jaxviz.preprocess_input(jaxviz.load_image(demo_image_path(), target_size=(64, 64))[None])


@pytest.fixture
def folder(tmp_path):
    """Two demo scenes (the star and its mirror image) and a text file that must be skipped."""
    d = tmp_path / "imgs"
    d.mkdir()
    img = Image.open(demo_image_path())
    img.save(d / "a_star.png")
    img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(d / "b_mirror.png")
    (d / "notes.txt").write_text("not an image")
    return d


# --- the same default answer in Python and on the command line ---------------------------------------------


def test_python_gradcam_default_is_the_clis_on_the_demo(demo, star, tmp_path, capsys):
    ours = np.asarray(jaxviz.gradcam(demo, star))[0]
    logit = np.asarray(jaxviz.gradcam(demo, star, score="logit"))[0]
    np.testing.assert_array_equal(ours, logit)  # the saturated softmax: the logit is the demo's default
    code, _, err = run(["gradcam", demo_image_path(), *DEMO, "--npy", "--no-progress", "-o", tmp_path], capsys)
    assert code == 0, err
    cli = np.load(tmp_path / "demo_star_heatmap.npy")
    np.testing.assert_allclose(cli, ours, atol=1e-6)  # same program, same input: float32 rounding at most
    r, c = np.unravel_index(np.argmax(ours), ours.shape)
    assert 0 < r < ours.shape[0] - 1 and 0 < c < ours.shape[1] - 1  # the star, not the image's edge


def test_vgg16_gradcam_keeps_the_books_probability():
    from jaxviz.attribution.scores import default_score

    tiny = jaxviz.load("vgg_tiny", weights="random:0")
    assert default_score(tiny) == "prob" and default_score(tiny, "logit") == "logit"


def test_lime_on_the_demo_is_not_all_zero(demo, star):
    m = np.asarray(jaxviz.lime(demo, star, n_samples=200))[0]
    assert np.ptp(m) > 0  # with the probability (the old default) every coefficient was 0


def test_explain_reports_a_constant_map(monkeypatch, tmp_path, capsys):
    from jaxviz.attribution import methods

    monkeypatch.setitem(methods.METHODS, "saliency", lambda model, x, target: np.zeros(x.shape[:3], np.float32))
    code, out, err = run(["explain", demo_image_path(), *DEMO, "--method", "saliency", "-o", tmp_path], capsys)
    assert code == 0
    assert "warning: the saliency map of" in err and "is constant (0 everywhere)" in err
    record = json.loads((tmp_path / "demo_star_explain.json").read_text())
    assert "constant" in record["methods"]["saliency"]["note"]


def test_evaluate_refuses_a_nan_map(monkeypatch, tmp_path, capsys):
    from jaxviz.attribution import methods

    monkeypatch.setitem(methods.METHODS, "saliency", lambda model, x, target: np.full(x.shape[:3], np.nan, np.float32))
    code, out, err = run(["evaluate", demo_image_path(), *DEMO, "--method", "saliency", "--sanity", "none"], capsys)
    assert code == 2 and "non-finite values" in err and err.count("\n") == 1


def test_metrics_refuse_nan_maps_and_nan_images(demo, star):
    nan_map = np.full((1, 64, 64), np.nan, np.float32)
    with pytest.raises(jaxviz.JaxvizError, match="NaN/inf"):
        jaxviz.metrics.deletion(demo, star, nan_map, 3, steps=4)
    with pytest.raises(jaxviz.JaxvizError, match="NaN/inf"):
        jaxviz.metrics.pointing_game(nan_map, [(0, 0, 8, 8)])
    with pytest.raises(jaxviz.JaxvizError, match="NaN/inf"):
        jaxviz.gradcam(demo, np.where(np.arange(64)[None, :, None, None] == 3, np.nan, star))


def test_evaluate_checks_the_json_path_before_any_work(monkeypatch, tmp_path, capsys):
    from jaxviz.attribution import methods

    def boom(*a, **k):
        raise AssertionError("the method ran before the --json path was checked")

    monkeypatch.setitem(methods.METHODS, "saliency", boom)
    (tmp_path / "afile").write_text("x")
    code, _, err = run(["evaluate", demo_image_path(), *DEMO, "--method", "saliency", "--json",
                        tmp_path / "afile" / "x.json"], capsys)
    assert code == 2 and "is a file, not a folder" in err


# --- images: folders, several, the bundled default -------------------------------------------------------------


def test_predict_takes_a_folder_and_prints_a_header(folder, capsys):
    code, out, err = run(["predict", folder, *DEMO, "--top", "2"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("vgg_demo (") and "top 2 of 10 classes" in lines[0]
    assert [ln for ln in lines if not ln.startswith(" ")][1:] == [str(folder / "a_star.png"),
                                                                 str(folder / "b_mirror.png")]
    assert lines[2].split()[1] == "star" and lines[5].split()[1] == "star"  # the mirrored star is a star


def test_predict_json_has_each_image_once(folder, capsys):
    a = str(folder / "a_star.png")
    code, out, _ = run(["predict", a, folder, a, *DEMO, "--top", "20", "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and list(result) == [a, str(folder / "b_mirror.png")]
    assert len(result[a]) == 10 and result[a][0]["name"] == "star"  # --top past the classes: all 10


def test_commands_default_to_the_bundled_scene_on_the_demo(tmp_path, capsys):
    code, out, err = run(["predict", *DEMO, "--top", "1"], capsys)
    assert code == 0 and "no IMAGE given: using the bundled" in err and " 1. star" in out
    code, out, err = run(["activations", *DEMO, "--layer", "block1_conv1", "--npy", "-o", tmp_path], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "demo_star_block1_conv1.npy").shape == (1, 64, 64, 8)  # the model's own 64 px


def test_gradcam_and_explain_write_one_set_per_image(folder, tmp_path, capsys):
    code, out, err = run(["gradcam", folder, *DEMO, "--top", "3", "--no-progress", "-o", tmp_path / "g"], capsys)
    assert code == 0, err
    for stem in ("a_star", "b_mirror"):
        assert (tmp_path / "g" / f"{stem}_top3.png").is_file() and (tmp_path / "g" / f"{stem}_overlay.png").is_file()
    assert "logit" in out  # the panel's classes are told apart by their logits, not p = 0.000
    code, out, err = run(["explain", folder, *DEMO, "--method", "saliency,ig", "--no-progress", "-o",
                          tmp_path / "e"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "e").glob("*_panel.png")) == ["a_star_panel.png", "b_mirror_panel.png"]


def test_evaluate_several_images_writes_one_entry_each(folder, tmp_path, capsys):
    out_json = tmp_path / "r.json"
    code, out, err = run(["evaluate", folder, *DEMO, "--method", "saliency", "--sanity", "none", "--steps", "4",
                          "--json", out_json, "--no-progress"], capsys)
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    assert [e["image"] for e in doc["images"]] == [str(folder / "a_star.png"), str(folder / "b_mirror.png")]
    assert all(0 <= e["methods"]["saliency"]["deletion_auc"] <= 1 for e in doc["images"])


# --- patterns, compare-keras, weights, decode_predictions ---------------------------------------------------------


def test_patterns_default_filters_fit_the_layer_and_dense_layers_work(tmp_path, capsys):
    code, out, err = run(["patterns", *DEMO, "--layer", "block1_conv1", "--steps", "1", "--no-progress",
                          "-o", tmp_path], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "block1_conv1.json").read_text())["filters"] == list(range(8))
    w, h = Image.open(tmp_path / "block1_conv1_labelled.png").size
    assert w > 8 * 64 and h > 64  # the book's grid again, with a title and each filter's index
    code, out, err = run(["patterns", *DEMO, "--layer", "fc1", "--filters", "0:2", "--steps", "1", "--no-progress",
                          "-o", tmp_path], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "fc1.json").read_text())["size"] == 64


def test_compare_keras_on_the_demo(capsys):
    pytest.importorskip("keras")
    code, out, err = run(["compare-keras", *DEMO], capsys)
    assert code == 0, err
    assert "PASS" in out and "block4_pool" in out


def test_weights_path_when_absent(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXVIZ_HOME", str(tmp_path))
    monkeypatch.setattr("jaxviz.weights.keras_cache_dirs", lambda: [tmp_path / "keras"])
    code, out, err = run(["weights", "path", "vgg16"], capsys)
    assert code == 0, err
    assert out.strip() == str(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    assert "is not there yet" in err and "jaxviz weights download vgg16" in err


def test_decode_predictions_follows_the_model(demo, star):
    probs = demo.predict(star)
    assert jaxviz.decode_predictions(probs, top=1, model=demo)[0][0][1] == "star"
    with pytest.raises(ValueError, match="model.decode_predictions") as e:
        jaxviz.decode_predictions(probs)
    assert "batch axis" not in str(e.value)  # the old, wrong hint


def test_image_too_large_says_how_to_fix(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setenv("JAXVIZ_MAX_IMAGE_PIXELS", "5000")
    with pytest.raises(jaxviz.ImageError, match="too large .* downscale it first .* JAXVIZ_MAX_IMAGE_PIXELS"):
        jaxviz.load_image(tmp_path / "big.png")
    monkeypatch.setenv("JAXVIZ_MAX_IMAGE_PIXELS", "20000")
    assert jaxviz.load_image(tmp_path / "big.png", target_size=None).shape == (100, 100, 3)


# --- help ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd, needles", [
    (["explain"], ["saliency", "lime", "ig = integrated_gradients", "case and -/_ do not matter"]),
    (["evaluate"], ["gradcam_plus_plus", "ig = integrated_gradients"]),
    (["predict"], ["classes listed per image", "folders"]),
    (["deepvis"], ["seed of the random start images"]),
    (["compare-keras"], ["per-layer differences as JSON"]),
    (["patterns"], ["how many processes share the work", "dense layer"]),
    (["convert"], ["vgg_demo"]),
    (["weights"], ["would be downloaded to"]),
])
def test_help_names_the_choices(cmd, needles, capsys):
    code, out, _ = run([*cmd, "--help"], capsys)
    flat = " ".join(out.split())
    assert code == 0 and all(n in flat for n in needles), [n for n in needles if n not in flat]


def test_argument_error_is_one_line_not_the_usage_block(capsys):
    code, out, err = run(["predict", "--top"], capsys)
    assert code == 2 and err.count("\n") == 1 and "usage:" not in err
    assert err.startswith("jaxviz: error: argument --top: expected one argument (see `jaxviz predict --help`)")


def test_compile_cache_is_on_for_commands(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXVIZ_HOME=str(tmp_path), JAXVIZ_COMPILE_CACHE="1")
    proc = subprocess.run([sys.executable, "-m", "jaxviz", "predict", "--arch", "vgg_demo", "--top", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "xla-cache").is_dir()  # every model-running command uses the persistent cache
    again = subprocess.run(proc.args, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "compiling" not in again.stderr  # loaded from the cache: nothing to say


def test_commands_write_nothing_into_the_home_folder(tmp_path):
    """With the cache off (as the suite runs) a command leaves the user's home as it was, ``patterns`` too."""
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("JAXVIZ_HOME", "KERAS_HOME")}
    env.update(HOME=str(home), JAX_PLATFORMS="cpu", JAXVIZ_COMPILE_CACHE="0")
    proc = subprocess.run([sys.executable, "-m", "jaxviz", "patterns", *DEMO, "--layer", "block1_conv1",
                           "--filters", "0:2", "--steps", "1", "--size", "32", "--no-progress",
                           "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
    assert (tmp_path / "out" / "block1_conv1.png").is_file()


def test_compare_keras_runs_keras_on_jax_when_no_backend_is_set():
    """Without KERAS_BACKEND, ``import keras`` would ask for TensorFlow; jaxviz picks JAX where it imports Keras."""
    import subprocess
    import sys

    pytest.importorskip("keras")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    code = "from jaxviz.keras_compare import import_keras; print(import_keras().backend.backend())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "jax", proc.stderr


def test_the_suite_keeps_out_of_the_home_folder():
    """conftest points jaxviz's, Keras's and the per-user caches at the session's temporary folder."""
    from pathlib import Path

    from jaxviz import parallel, weights

    test_home = Path(os.environ["JAXVIZ_TEST_HOME"])
    for path in (parallel.home(), weights.cache_dir(), weights.keras_cache_dirs()[0]):
        assert test_home in path.parents, path


def test_compiling_is_said_when_a_command_compiles(monkeypatch, capsys):
    from jaxviz.cli import common

    monkeypatch.setattr(common.CompileNotice, "after_s", 0.0)  # every compile counts as slow
    jaxviz.runtime.clear_programs()  # programs are shared by graph: an earlier test's vgg_demo must not serve this one
    code, out, err = run(["predict", demo_image_path(), *DEMO, "--top", "1"], capsys)
    assert code == 0 and "jaxviz: compiling vgg_demo (once per input shape; kept " in err


def test_explain_all_shows_progress_per_method_and_per_chunk(tmp_path, monkeypatch):
    """The bars of ``explain``: one step per (image, method), and the chunks of the slow methods' loops."""
    from jaxviz.cli import attribution

    steps, chunks = [], []

    class Bar:
        def __init__(self, total, desc, enabled=True, unit="image"):
            self.total = total

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def set_postfix_str(self, text):
            steps.append(text)

        def update(self, n):
            pass

    def chunk_bar(desc, enabled=True):
        from jaxviz.runtime import chunk_progress

        chunks.append((desc.strip(), []))
        return chunk_progress(lambda done, total: chunks[-1][1].append((done, total)))

    monkeypatch.setattr(attribution, "progress_bar", Bar)
    monkeypatch.setattr(attribution, "chunk_bar", chunk_bar)
    code = main(["explain", str(demo_image_path()), *DEMO, "--method", "saliency,occlusion,rise", "--no-progress",
                 "-o", str(tmp_path)])
    assert code == 0 and steps == ["saliency", "occlusion", "rise"]
    reported = dict(chunks)
    assert reported["saliency"] == []  # one gradient pass: nothing to follow
    for name in ("occlusion", "rise"):
        done = reported[name]
        total = done[0][1]
        assert total > 1 and sorted(d for d, _ in done) == list(range(1, total + 1)), (name, done)  # each chunk


def test_python_load_refuses_a_negative_seed():
    with pytest.raises(jaxviz.WeightsError, match="seed must be >= 0"):
        jaxviz.load("vgg_tiny", weights="random:-1")


def test_explain_refuses_nan_images(demo, star):
    x = np.array(star)
    x[0, 5, 5, 1] = np.nan
    with pytest.raises(jaxviz.JaxvizError, match="NaN/inf"):
        jaxviz.explain(demo, x, "saliency")


def test_a_failed_write_names_the_file_not_its_temporary(tmp_path):
    from jaxviz.atomic import write_bytes

    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError) as e:
        write_bytes(tmp_path / "afile" / "x.json", "{}")
    assert e.value.filename == str(tmp_path / "afile" / "x.json") and ".tmp" not in str(e.value)


def test_figures_takes_several_photos_and_folders(folder, tmp_path, monkeypatch, capsys):
    from jaxviz import figures as F

    seen = {}

    def fake(arch, weights, image, out, **kwargs):
        seen["image"] = image
        return {"last_run": {"ran": [], "skipped": [], "seconds": 0.0}}

    monkeypatch.setattr(F, "make_figures", fake)
    code, out, err = run(["figures", *DEMO, "--image", demo_image_path(), folder, "-o", tmp_path / "f"], capsys)
    assert code == 0, err
    assert seen["image"] == [str(demo_image_path()), str(folder / "a_star.png"), str(folder / "b_mirror.png")]
