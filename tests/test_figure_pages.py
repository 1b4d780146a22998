"""The figure set as a user sees it: panels whose titles stay clear, one heading per section of the index,
feature-map captions that say how many maps are shown, and nothing written when the weights are missing."""

import numpy as np
from module_files import load_script

import jaxviz
import jaxviz.figures as F
from jaxviz.cli import main
from jaxviz.cli.attribution import _class_label
from jaxviz.figures import runners

TINY = dict(pattern_layers=("block1_conv1",), pattern_methods=("keras", "regularised"), pattern_filters=2,
            pattern_size=32, pattern_steps=1, single_layer="block1_conv1", single_method="keras", single_size=32,
            kernel_filters=2, deepvis_classes=[0], deepvis_steps=1, deepvis_size=32, progress=False)


def test_panel_suptitle_clears_the_first_row():
    """``explain --method all``'s panel: 26 maps in rows of 4 under one title."""
    from jaxviz.render import titled_panel

    titles = [f"method {i}\n(constant map: nothing to show)" for i in range(26)]
    fig = titled_panel([np.zeros((64, 64, 3), np.uint8)] * 26, titles, cols=4,
                       suptitle="photo.png on vgg16: class 0 class_0")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top = fig._suptitle.get_window_extent(renderer)
    assert not any(ax.title.get_window_extent(renderer).overlaps(top) for ax in fig.axes)


def test_missing_weights_stop_figures_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXVIZ_WEIGHTS_URL", (tmp_path / "no_mirror").as_uri())  # offline: nothing to download
    out = tmp_path / "figs"
    code = main(["figures", "--arch", "vgg16", "--no-progress", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "vgg16" in err
    assert not out.exists() or list(out.iterdir()) == []


def test_index_has_one_heading_per_section_and_says_how_many_maps(tmp_path):
    manifest = F.make_figures("vgg_tiny", "random:0", None, tmp_path, **TINY)
    html = (tmp_path / "index.html").read_text()
    headings = [line for line in html.splitlines() if line.startswith("<h2>")]
    assert len(headings) == len(set(headings)) and "<h2>Filter patterns (keras)</h2>" in headings
    fmaps = manifest["tasks"]["feature_maps"]
    assert fmaps["params"]["count"] == 64
    # vgg_tiny's layers have fewer than 64 channels: every map is shown, and the caption says so
    assert "block1_conv1: all 4 feature maps of" in html


def test_readme_gallery_shows_files_of_the_demo_figure_set(tmp_path, monkeypatch):
    """scripts/make_gallery.py copies files ``figures --arch vgg_demo`` writes, and the README shows exactly those."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    gallery = load_script("make_gallery")

    def write_files(ctx, task):  # the plan of the figure set without computing it
        for f in task.files:
            (ctx.out / f).write_bytes(b"")

    for name in ("summary", "kernels", "feature_maps", "patterns", "deepvis", "gradcam", "single_pattern"):
        monkeypatch.setattr(runners, f"run_{name}", write_files)
    manifest = F.make_figures("vgg_demo", out_dir=tmp_path, progress=False)
    written = {f for t in manifest["tasks"].values() for f in t["files"]}
    assert {src for src, _ in gallery.PICKS} <= written
    shown = set(re.findall(r"\(scripts/gallery/([\w.]+\.png)\)", (root / "README.md").read_text()))
    assert shown == {dst for _, dst in gallery.PICKS}
    assert all((root / "scripts" / "gallery" / name).is_file() for name in shown)


def test_unnamed_classes_are_labelled_by_their_number_alone():
    """Panel titles say "class 0", not "class 0 class_0", for a model without class names."""
    tiny = jaxviz.load("vgg_tiny", weights="random:0")
    assert tiny.class_names[0] == "class_0" and _class_label(tiny, 0) == "0"
    demo = jaxviz.load("vgg_demo")
    assert _class_label(demo, 1) == f"1 {demo.class_names[1]}" and not demo.class_names[1].startswith("class_")


def test_each_method_declares_how_its_maps_are_shown():
    """Display policy lives with the method (its module's ``SIGNED``): signed maps show their positive part,
    the others their magnitude; the command line only looks it up."""
    from jaxviz.attribution.methods import METHODS, SIGNED
    from jaxviz.render import display_map

    assert set(SIGNED) == set(METHODS) and all(isinstance(v, bool) for v in SIGNED.values())
    assert SIGNED["integrated_gradients"] and SIGNED["occlusion"] and not SIGNED["saliency"]
    assert not SIGNED["gradcam"]
    m = np.array([[-4.0, 0.0], [1.0, 2.0]])
    np.testing.assert_allclose(display_map(m, signed=True)[0, 0], 0.0)  # evidence against: not drawn
    assert display_map(m, signed=False)[0, 0] > 0.9  # the magnitude: drawn strongest
