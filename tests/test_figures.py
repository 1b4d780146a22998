"""The resumable figure set, and the kernels / deepvis / gradcam / figures commands."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jaxviz
from jaxviz import figures as F
from jaxviz.cli import main
from jaxviz.figures import runners
from jaxviz.frontends import vgg
from jaxviz.images import sample_image_path

TINY = ["--arch", "vgg_tiny", "--weights", "random:0"]
# Reduced sizes: every figure of the set, made in seconds with vgg_tiny.
SMALL = dict(pattern_layers=("block1_conv1", "block3_conv1"), pattern_methods=("keras", "regularised"),
             pattern_filters=3,
             pattern_size=32, pattern_steps=2, single_size=40, kernel_filters=4, feature_maps=3, deepvis_steps=2,
             progress=False)


def _expected_files(manifest):
    return {f for t in manifest["tasks"].values() for f in t["files"]}


def _no_temporaries(out):
    return [p.name for p in out.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    manifest = F.make_figures("vgg_tiny", "random:0", None, out, **SMALL)
    return out, manifest


# Fewer pattern grids where the test is about the job, not the figures.
FEW = {**SMALL, "pattern_layers": ("block1_conv1",), "pattern_methods": ("keras",)}


def test_figure_set_end_to_end(made):
    out, manifest = made
    names = {p.name for p in out.iterdir()}
    expected = {"summary.txt", "summary_conv_base.txt", "kernels_block1_conv1.png", "kernels_block1_conv1_rgb.png",
                "fmaps_block1_conv1.png", "fmaps_block1_conv2.png", "fmaps_block5_conv3.png",
                "patterns_keras_block1_conv1.png", "patterns_keras_block3_conv1.png",
                "patterns_regularised_block1_conv1.png", "patterns_regularised_block3_conv1.png",
                "pattern_block3_conv1_f0_40.png", "deepvis.png", "deepvis_0.png", "deepvis_6.png", "deepvis_9.png",
                "gradcam_heatmap.png", "gradcam_overlay.png", "gradcam_top5.png", "index.html", "manifest.json"}
    assert expected <= names and _expected_files(manifest) <= names
    assert not _no_temporaries(out)
    assert manifest["last_run"]["skipped"] == [] and len(manifest["last_run"]["ran"]) == len(manifest["tasks"])
    # 130, 736, 779 are not classes of a 10-class model: c % 10, documented and recorded
    assert manifest["tasks"]["deepvis"]["params"]["classes"] == [0, 6, 9]
    assert manifest["versions"]["jax"] and manifest["parameters"]["pattern_size"] == 32
    assert all(t["seconds"] >= 0 for t in manifest["tasks"].values())
    assert json.loads((out / "manifest.json").read_text()) == manifest
    html = (out / "index.html").read_text()
    assert all(f'src="{f}"' in html for f in _expected_files(manifest) if f.endswith(".png"))
    assert "Total params: 6,402" in (out / "summary.txt").read_text()
    grid = np.asarray(Image.open(out / "patterns_keras_block1_conv1.png"))
    assert grid.shape[0] > 32 + 40 and grid.shape[1] > 3 * 32  # 3 patterns, a title and their indices
    assert np.asarray(Image.open(out / "pattern_block3_conv1_f0_40.png")).shape == (40, 40, 3)


def test_another_photo_redoes_only_the_photos_figures(made, tmp_path, monkeypatch):
    out, first = made
    copy = tmp_path / "set"
    copy.mkdir()
    for p in out.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    manifest = F.make_figures("vgg_tiny", "random:0", sample_image_path("coffee"), copy, **SMALL)
    assert sorted(manifest["last_run"]["ran"]) == ["feature_maps", "gradcam"]  # kernels, patterns, DeepVis kept
    assert manifest["images"] == [str(sample_image_path("coffee"))]


def test_several_photos_get_a_set_each(made, tmp_path):
    out, first = made
    copy = tmp_path / "set"
    copy.mkdir()
    for p in out.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    photos = [sample_image_path("chelsea"), sample_image_path("coffee")]
    manifest = F.make_figures("vgg_tiny", "random:0", photos, copy, **SMALL)
    assert sorted(manifest["last_run"]["ran"]) == ["feature_maps_coffee", "gradcam_coffee"]
    assert (copy / "gradcam_coffee_top5.png").is_file() and (copy / "fmaps_coffee_block1_conv1.png").is_file()
    html = (copy / "index.html").read_text()
    assert "gradcam_coffee_top5.png" in html and "feature maps of coffee.jpg" in html


def test_labels_and_captions_follow_the_model(tmp_path):
    m = F.make_figures("vgg_demo", "imagenet", None, tmp_path, **{**FEW, "pattern_size": 64, "single_size": 64,
                                                                  "feature_maps": 14, "deepvis_steps": 1,
                                                                  "kernel_filters": 8})
    assert all("block5" not in name for name in m["parameters"]["pattern_layers"])  # the demo has 4 blocks
    html = (tmp_path / "index.html").read_text()
    assert "shipped trained demo weights" in html and "Weights: imagenet" not in html
    assert "block1_conv1: all 8 feature maps" in html  # not "first 14" of an 8-map layer
    captions = [line for line in html.splitlines() if "deepvis_" in line and "figcaption" in line]
    assert len(captions) == 10 and len(set(captions)) == 10  # a caption per class
    assert "class 3 (star)" in html
    w, h = Image.open(tmp_path / "kernels_block1_conv1.png").size
    assert w >= 800 and h >= 150  # was a 74 px wide strip


def test_rerun_skips_everything_without_loading(made, monkeypatch):
    out, first = made
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".png"}
    monkeypatch.setattr(jaxviz.model, "load", lambda *a, **k: pytest.fail("a finished set loaded the model"))
    manifest = F.make_figures("vgg_tiny", "random:0", None, out, **SMALL)
    assert manifest["last_run"]["ran"] == [] and len(manifest["last_run"]["skipped"]) == len(first["tasks"])
    assert manifest["tasks"] == first["tasks"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".png"} == before


def test_changed_parameter_redoes_only_its_tasks(made, tmp_path):
    out, _ = made
    for p in out.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    manifest = F.make_figures("vgg_tiny", "random:0", None, tmp_path, **{**SMALL, "feature_maps": 2})
    assert manifest["last_run"]["ran"] == ["feature_maps"]


def test_interrupt_leaves_nothing_half_written_and_resumes(tmp_path, monkeypatch):
    real_replace = os.replace

    def interrupted_replace(src, dst, *args, **kwargs):
        # Ctrl-C at the worst moment: the overlay's temporary file is fully written, not yet renamed
        if "gradcam_overlay" in str(dst):
            assert Path(src).stat().st_size > 0
            raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        F.make_figures("vgg_tiny", "random:0", None, tmp_path, **FEW)
    assert not _no_temporaries(tmp_path)
    assert not (tmp_path / "gradcam_overlay.png").exists()
    recorded = json.loads((tmp_path / "manifest.json").read_text())
    assert recorded["last_run"]["interrupted"] and "gradcam" not in recorded["tasks"]
    assert "deepvis" in recorded["tasks"]  # finished before the interruption
    for task in recorded["tasks"].values():  # every recorded task's files are complete images
        for f in task["files"]:
            if f.endswith(".png"):
                Image.open(tmp_path / f).verify()
    assert "not made yet" in (tmp_path / "index.html").read_text()

    monkeypatch.setattr(os, "replace", real_replace)
    calls = []
    real_deepvis = runners.run_deepvis
    monkeypatch.setattr(runners, "run_deepvis", lambda ctx, task: calls.append(1) or real_deepvis(ctx, task))
    manifest = F.make_figures("vgg_tiny", "random:0", None, tmp_path, **FEW)
    assert manifest["last_run"]["ran"] == ["gradcam"] and calls == []
    Image.open(tmp_path / "gradcam_overlay.png").verify()
    assert not _no_temporaries(tmp_path)


def test_interrupted_pattern_grid_resumes_from_its_filters(tmp_path, monkeypatch):
    from jaxviz.visualize import patterns

    small = {**FEW, "single_layer": "none", "deepvis_classes": ()}  # only patterns use the ascent program
    real_replace = os.replace

    def interrupted_replace(src, dst, *args, **kwargs):
        if "patterns_keras_block1_conv1.png" in str(dst):
            raise KeyboardInterrupt  # every filter done, the grid not yet in place
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        F.make_figures("vgg_tiny", "random:0", None, tmp_path, **small)
    monkeypatch.setattr(os, "replace", real_replace)
    kept = sorted(p.name for p in (tmp_path / F.PARTIAL / "patterns_keras_block1_conv1").glob("filter_*.npy"))
    assert kept == ["filter_00000.npy", "filter_00001.npy", "filter_00002.npy"]
    monkeypatch.setattr(patterns, "_program", lambda *a, **k: pytest.fail("finished filters were recomputed"))
    manifest = F.make_figures("vgg_tiny", "random:0", None, tmp_path, **small)
    assert "patterns_keras_block1_conv1" in manifest["last_run"]["ran"]
    assert manifest["tasks"]["patterns_keras_block1_conv1"]["params"]["order"] == "columns"  # the book's
    assert not (tmp_path / F.PARTIAL).exists()  # resume state removed once the grid is recorded
    Image.open(tmp_path / "patterns_keras_block1_conv1.png").verify()


def test_gap_head_model_with_fewer_classes(tmp_path, monkeypatch):
    arch = vgg.Arch("tiny_gap_test", (1, 1, 1), (4, 6, 8), fc_features=(), num_classes=5, default_size=32,
                    head="gap")
    monkeypatch.setitem(vgg.ARCHS, arch.name, arch)
    manifest = F.make_figures(arch.name, "random:0", None, tmp_path, **{**FEW, "pattern_layers": ("block3_conv1",)})
    assert manifest["tasks"]["deepvis"]["params"]["classes"] == [0, 1, 4]  # 130, 736, 779 mod 5
    assert "patterns_keras_block3_conv1" in manifest["tasks"] and "gradcam" in manifest["tasks"]
    assert manifest["tasks"]["gradcam"]["params"]["layer"] == "block3_conv1"
    assert (tmp_path / "gradcam_top5.png").is_file()


def test_bad_pattern_order_is_one_clear_error(tmp_path):
    with pytest.raises(jaxviz.JaxvizError, match="unknown pattern_order 'diagonal'; use one of: columns, rows"):
        F.make_figures("vgg_tiny", "random:0", None, tmp_path, pattern_order="diagonal")
    assert not (tmp_path / "manifest.json").exists()


def test_deepvis_classes():
    assert F.deepvis_classes([130, 736, 779], 1000) == [130, 736, 779]
    assert F.deepvis_classes([130, 736, 779], 10) == [0, 6, 9]
    assert F.deepvis_classes([1, 11, 21], 10) == [1]


# --- command line -----------------------------------------------------------------------------------------------


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_kernels(tmp_path, capsys):
    code, out, err = run(["kernels", "--layer", "block1_conv1", "--filters", "3", "--npy", *TINY, "-o",
                          str(tmp_path)], capsys)
    assert code == 0, err
    assert {p.name for p in tmp_path.iterdir()} == {"kernels_block1_conv1.png", "kernels_block1_conv1_rgb.png",
                                                    "kernels_block1_conv1.npy", "kernels_block1_conv1_labelled.png",
                                                    "kernels_block1_conv1_rgb_labelled.png"}
    assert np.asarray(Image.open(tmp_path / "kernels_block1_conv1.png")).shape == (3 * 24 + 2, 3 * 24 + 2)


def test_cli_deepvis(tmp_path, capsys):
    code, out, err = run(["deepvis", "--class", "2", "--class", "7", "--steps", "2", *TINY, "-o", str(tmp_path)],
                         capsys)
    assert code == 0, err
    assert {p.name for p in tmp_path.iterdir()} == {"deepvis_2.png", "deepvis_7.png", "deepvis.png"}


def test_cli_gradcam(tmp_path, capsys):
    img = str(sample_image_path("chelsea"))
    code, out, err = run(["gradcam", img, "--top", "3", "--score", "logit", "--npy", *TINY, "-o", str(tmp_path)],
                         capsys)
    assert code == 0, err
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"chelsea_heatmap.png", "chelsea_overlay.png", "chelsea_top3.png", "chelsea_heatmap.npy",
                     "chelsea_top3.npy"}
    heat = np.load(tmp_path / "chelsea_heatmap.npy")
    assert heat.shape == (2, 2) and 0 <= heat.min() and heat.max() <= 1
    overlay = np.asarray(Image.open(tmp_path / "chelsea_overlay.png"))
    assert overlay.shape == np.asarray(Image.open(img)).shape  # drawn on the photo at its own size
    code, out, err = run(["gradcam", img, "--class", "4", "--layer", "block4_conv3", *TINY, "-o", str(tmp_path)],
                         capsys)
    assert code == 0 and "class 4" in out


def test_gradcam_report_is_one_program_with_the_numbers_of_separate_calls():
    """The figures' and the CLI's Grad-CAM (:func:`gradcam_report`): heatmap, top-K maps, probabilities and
    logits from one compiled program, equal to what separate calls give; a target adds a column, no pass."""
    from jaxviz import runtime
    from jaxviz.attribution.gradcam import gradcam_report, gradcam_result

    model = jaxviz.load("vgg_tiny", "random:0")
    x = np.random.default_rng(0).uniform(-100, 100, (2, *model.input_hw, 3)).astype(np.float32)
    before = runtime.trace_counts["gradcam_book"]
    report = gradcam_report(model, x, top=3, target=4)
    assert runtime.trace_counts["gradcam_book"] - before <= 1  # one program (none if an earlier test traced it)
    top = gradcam_result(model, x, top=3)
    np.testing.assert_array_equal(np.asarray(report.maps), np.asarray(top.maps))
    np.testing.assert_array_equal(np.asarray(report.classes), np.asarray(top.classes))
    np.testing.assert_array_equal(np.asarray(report.probs), np.asarray(top.probs))
    np.testing.assert_array_equal(np.asarray(report.heatmaps),
                                  np.asarray(gradcam_result(model, x, target=4).maps)[:, 0])
    assert np.asarray(report.heat_classes).tolist() == [4, 4]
    np.testing.assert_allclose(np.asarray(report.logits), np.asarray(model.features(x, "logits")["logits"]),
                               rtol=1e-6, atol=1e-6)
    every = gradcam_report(model, x, top=10, target=4)  # K + 1 columns on a 10-class model
    assert np.asarray(every.maps).shape == (2, 10, 2, 2) and np.asarray(every.heat_classes).tolist() == [4, 4]


def test_cli_figures_quick_flags(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake(arch, weights, image, out, **kwargs):
        seen.update(arch=arch, weights=weights, image=image, **kwargs)
        return {"last_run": {"ran": ["x"], "skipped": [], "seconds": 0.1}}

    monkeypatch.setattr(F, "make_figures", fake)
    code, out, err = run(["figures", "--quick", "--no-progress", *TINY, "-o", str(tmp_path)], capsys)
    assert code == 0, err
    assert seen["arch"] == "vgg_tiny" and seen["progress"] is False
    assert all(seen[k] == v for k, v in F.QUICK.items())
    assert "1 figure task(s) made" in out


@pytest.mark.parametrize("argv", [
    ["kernels", "--layer", "block9_conv1", *TINY, "-o", "{tmp}"],
    ["kernels", "--layer", "block1_pool", *TINY, "-o", "{tmp}"],
    ["gradcam", "{img}", "--layer", "block5_conv9", *TINY, "-o", "{tmp}"],
    ["gradcam", "{img}", "--layer", "fc1", *TINY, "-o", "{tmp}"],
])
def test_cli_bad_layer_is_one_line_exit_2(argv, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, img=sample_image_path("chelsea")) for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxviz: error:") and "block1_conv1" in lines[0]


def test_cli_deepvis_bad_class(tmp_path, capsys):
    code, out, err = run(["deepvis", "--class", "10", "--steps", "1", *TINY, "-o", str(tmp_path)], capsys)
    assert code == 2 and "out of range" in err and len(err.strip().splitlines()) == 1


# --- the demo network's figure set ---------------------------------------------------------------------------


@pytest.fixture
def panel_titles(monkeypatch):
    """Every title drawn by :func:`jaxviz.render.titled_panel`, panel by panel."""
    from jaxviz.render import panels

    seen, real = [], panels.titled_panel
    monkeypatch.setattr(panels, "titled_panel",
                        lambda images, titles, *a, **k: seen.append(list(titles)) or real(images, titles, *a, **k))
    return seen


def test_imagenet_profile_keeps_the_books_figure_set(tmp_path, monkeypatch):
    """A VGG table's figure set takes the model's ``imagenet`` profile: the cat, the book's Grad-CAM of the
    probability and single pattern, 130/736/779 (→ 0, 6, 9 on vgg_tiny), each method's own pattern step."""
    for name in ("summary", "kernels", "feature_maps", "patterns", "deepvis", "gradcam", "single_pattern"):
        monkeypatch.setattr(runners, f"run_{name}", lambda ctx, task: [(ctx.out / f).write_bytes(b"")
                                                                        for f in task.files])
    manifest = F.make_figures("vgg_tiny", "random:0", out_dir=tmp_path, pattern_methods=("keras",),
                              progress=False)
    assert Path(manifest["image"]) == sample_image_path("chelsea") and manifest["profile"] == "imagenet"
    params = manifest["parameters"]
    assert params["gradcam_score"] == "prob" and params["single_method"] == "keras"
    assert manifest["tasks"]["deepvis"]["params"]["classes"] == [0, 6, 9]
    assert manifest["tasks"]["patterns_keras_block1_conv1"]["params"]["step_size"] == 1.0


def test_demo_figure_set_uses_the_demo_scene_classes_and_names(tmp_path, panel_titles):
    from jaxviz.demo import CLASS_NAMES, demo_image_path
    from jaxviz.visualize.deepvis import DEMO_DEFAULTS

    small = dict(pattern_layers=("block1_conv1",), pattern_methods=("keras",), pattern_filters=2, pattern_steps=2,
                 single_layer="none", kernel_filters=4, feature_maps=2, deepvis_steps=2, progress=False)
    manifest = F.make_figures("vgg_demo", out_dir=tmp_path, **small)
    assert Path(manifest["image"]) == demo_image_path()  # not the cat
    tasks = manifest["tasks"]
    assert tasks["deepvis"]["params"]["classes"] == list(range(10))  # every demo class, not 130 736 779 mod 10
    assert {k: tasks["deepvis"]["params"][k] for k in DEMO_DEFAULTS} == {**DEMO_DEFAULTS, "steps": 2}
    assert tasks["patterns_keras_block1_conv1"]["params"]["step_size"] == F.DEMO_PATTERN_STEP_SIZE["keras"]
    assert tasks["gradcam"]["params"]["score"] == "logit"  # the demo's softmax is saturated (p = 1.000)
    deepvis_titles, gradcam_titles = panel_titles  # the DeepVis panel, then Grad-CAM's top 5
    assert deepvis_titles == [f"{name} ({i})" for i, name in enumerate(CLASS_NAMES)]
    assert gradcam_titles[0].startswith("#1 star (3)\np = ")  # the scene's object is the top class
    assert all(t.split("\n")[0].split()[1] in CLASS_NAMES for t in gradcam_titles) and len(gradcam_titles) == 5
    assert all(", logit " in t for t in gradcam_titles)  # the runners-up told apart although p ≈ 0
    overlay = np.asarray(Image.open(tmp_path / "gradcam_overlay.png"))
    assert overlay.shape == (256, 256, 3)  # the 64 px scene enlarged ×4 under a smooth heatmap
    html = (tmp_path / "index.html").read_text()
    assert "demo_star.png" in html and "shipped trained demo weights" in html and "horizontal_stripes" in html


def test_cli_deepvis_demo_titles_by_class_name(tmp_path, capsys, panel_titles):
    code, out, err = run(["deepvis", "--arch", "vgg_demo", "--class", "3", "--steps", "2", "-o", str(tmp_path)],
                         capsys)
    assert code == 0, err
    assert panel_titles == [["star (3)"]]
