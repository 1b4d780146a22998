"""The figure set (jaxviz.make_figures, ``jaxviz figures``) on Flax modules, linen and NNX: every section that
applies is drawn, file names are safe slugs of the ``/``-joined layer paths, the gallery names the paths
HTML-escaped, and the command line makes the set from ``--arch package.module:factory``."""

from __future__ import annotations

import html
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax_models import NnxStagedCNN, StagedCNN, sequential_cnn
from PIL import Image

import jaxviz
import jaxviz.figures as F
from jaxviz.cli import main
from jaxviz.errors import JaxvizError

#: The set at its smallest: two filters, two ascent steps, one DeepVis class, a 16-pixel single pattern.
TINY = dict(pattern_methods=("keras",), pattern_filters=2, pattern_steps=2, single_size=16, kernel_filters=4,
            feature_maps=4, deepvis_classes=[0], deepvis_steps=2, gradcam_top=2, progress=False)
SIDE = 16


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return str(path)


def check_set(out, manifest, model) -> str:
    """What every Flax figure set must hold; returns the gallery's text."""
    convs, cam = model.conv_layer_names, model.cam_layer
    stems = {n: re.sub(r"[^A-Za-z0-9_.+=-]+", "_", n) for n in model.layer_names}
    tasks = manifest["tasks"]
    assert set(tasks) == {"summary", "kernels", "feature_maps", "deepvis", "gradcam",
                          f"pattern_{stems[convs[-1]]}_f0", *(f"patterns_keras_{stems[c]}" for c in convs)}
    assert tasks["kernels"]["params"]["layer"] == convs[0]
    assert tasks["kernels"]["files"] == [f"kernels_{stems[convs[0]]}.png", f"kernels_{stems[convs[0]]}_rgb.png"]
    assert tasks["gradcam"]["params"]["layer"] == cam
    assert set(tasks["feature_maps"]["params"]["layers"]) == set(convs)
    files = [f for t in tasks.values() for f in t["files"]]
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == {*files, "index.html", "manifest.json"}  # nothing else, nothing outside the folder
    for f in files:
        assert re.fullmatch(r"[A-Za-z0-9_.+=-]+", f), f  # a slug: no '/', no markup characters
        if f.endswith(".png"):
            a = np.asarray(Image.open(out / f).convert("RGB"), np.int16)
            assert a.max() > a.min(), f"{f} is one colour"
    assert model.layer_names[1] in (out / "summary.txt").read_text()
    index = (out / "index.html").read_text("utf-8")
    for name in convs + [cam]:
        assert html.escape(name) in index
    assert all(f'src="{f}"' in index for f in files if f.endswith(".png"))
    return index


def test_figure_set_of_a_linen_module(photo, tmp_path):
    module = StagedCNN()
    model = jaxviz.from_flax(module, module.init(jax.random.key(0), jnp.zeros((1, SIDE, SIDE, 3))),
                             input_shape=(SIDE, SIDE, 3))
    assert model.conv_layer_names == ["stem/conv", "x<y>&z/conv"] and model.cam_layer == "x<y>&z"
    out = tmp_path / "figs"
    manifest = jaxviz.make_figures(model, image=photo, out_dir=out, **TINY)
    index = check_set(out, manifest, model)
    assert "patterns_keras_x_y_z_conv.png" in manifest["tasks"]["patterns_keras_x_y_z_conv"]["files"]
    assert "x&lt;y&gt;&amp;z/conv" in index and "x<y>" not in index  # the name escaped, never markup
    assert manifest["weights"].startswith("sha256:") and "(flax:linen)" in manifest["weights_description"]
    # a rerun of the same module and weights has nothing to do; a model's own weights are not replaced
    again = jaxviz.make_figures(model, image=photo, out_dir=out, **TINY)
    assert again["last_run"]["ran"] == [] and len(again["last_run"]["skipped"]) == len(manifest["tasks"])
    with pytest.raises(JaxvizError, match="holds its own weights"):
        jaxviz.make_figures(model, "random:1", image=photo, out_dir=out, **TINY)


def test_figure_set_of_an_nnx_module(photo, tmp_path):
    model = jaxviz.from_flax(NnxStagedCNN(rngs=nnx.Rngs(0)), input_shape=(SIDE, SIDE, 3))
    assert model.conv_layer_names == ["blocks/0/conv", "blocks/1/conv"] and model.cam_layer == "blocks/1"
    out = tmp_path / "figs"
    manifest = jaxviz.make_figures(model, image=photo, out_dir=out, **TINY)
    check_set(out, manifest, model)
    assert manifest["tasks"]["gradcam"]["params"]["layer"] == "blocks/1"
    assert "kernels_blocks_0_conv.png" in manifest["tasks"]["kernels"]["files"]


def test_figures_command_takes_a_flax_factory(photo, tmp_path, monkeypatch, capsys):
    tiny_quick = {k: v for k, v in TINY.items() if k != "progress"}
    monkeypatch.setattr(F, "QUICK", tiny_quick)  # --quick at the test's size
    out = tmp_path / "cli"
    args = ["figures", "--arch", "flax_models:mnist_cnn", "--input-size", str(SIDE), "--image", photo, "--quick",
            "--no-progress", "-o", str(out)]
    assert main(args) == 0
    assert "8 figure task(s) made" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["arch"] == "mnist_cnn" and manifest["tasks"]["gradcam"]["params"]["layer"] == "Conv_1"
    assert {"kernels_Conv_0.png", "fmaps_Conv_1.png", "patterns_keras_Conv_1.png",
            "gradcam_overlay.png"} <= {p.name for p in out.iterdir()}
    assert main(args) == 0 and "0 figure task(s) made" in capsys.readouterr().out  # resumed: nothing to redo
    assert main([*args[:-2], "--weights", "random:0", "-o", str(out)]) == 2
    assert "makes its own weights" in capsys.readouterr().err


def test_a_linen_sequential_keys_the_programs_of_its_patterns():
    """``nn.Sequential`` holds its layers in a list, so the module does not hash; two models of it with other
    weights still share one key for the compiled programs (the filter patterns')."""
    module = sequential_cnn()
    x = jnp.zeros((1, SIDE, SIDE, 3))
    a, b = (jaxviz.from_flax(module, module.init(jax.random.key(seed), x), input_shape=(SIDE, SIDE, 3))
            for seed in (0, 1))
    assert a.module == b.module and hash(a.module) == hash(b.module)
    assert a.module != jaxviz.from_flax(module, module.init(jax.random.key(0), x), input_shape=(SIDE, SIDE, 3),
                                        output="probs").module
