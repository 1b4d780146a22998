"""Regularised filter patterns are shown with Lucent's colour range and contrast.

Lucent (``torch-lucent``, the PyTorch port of lucid: Olah et al., "Feature Visualization", Distill 2017) shows
its sigmoid image as is. ``tests/fixtures/lucent/vgg_demo_block3_conv1.json`` holds its per-image saturation
(mean HSV S) and contrast (std of luminance) for every filter of block3_conv1 of the trained demo network,
written by ``scripts/compare_lucent.py`` (same weights, objective, parametrisation, transforms, steps and
learning rate; the command is in the file). jaxviz's patterns as its CLI and figures show them
(:func:`jaxviz.visualize.patterns.display_images`) must be within 10 % of Lucent's means, without Lucent
installed. The live comparison runs too where Lucent is installed (``pip install --no-deps torch-lucent
kornia==0.4.1``), at a smaller size.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from module_files import load_script

import jaxviz
from jaxviz import figures, preprocessing
from jaxviz.errors import JaxvizError
from jaxviz.visualize import patterns

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "lucent" / "vgg_demo_block3_conv1.json"
TOLERANCE = 0.10  # within 10 % of Lucent's, per statistic, over the layer's filters


@pytest.fixture(scope="module")
def compare_lucent():
    """scripts/compare_lucent.py as a module (its statistics; it imports torch and Lucent only when run)."""
    return load_script("compare_lucent")


@pytest.fixture(scope="module")
def demo():
    return jaxviz.load("vgg_demo", include_top=False)


def test_regularised_patterns_match_lucents_colour_statistics(compare_lucent, demo):
    ref = json.loads(FIXTURE.read_text())
    s = ref["settings"]
    assert s["arch"] == demo.arch.name and s["weights"].endswith(Path(str(demo.source)).name)
    x = patterns.filter_patterns(demo, s["layer"], s["filters"], size=s["size"], steps=s["steps"],
                                 step_size=s["lr"], seed=s["seed"], method="regularised", progress=False,
                                 **s["jaxviz_options"])
    shown = patterns.display_images(x, "regularised", demo.preprocess)
    # The figures draw the same images.
    np.testing.assert_array_equal(figures._as_uint8_images(x, "regularised", demo.preprocess), shown)
    ours = compare_lucent.colour_statistics(shown / 255.0)
    assert len(ours["saturation"]) == len(ref["lucent"]["saturation"]) == len(s["filters"])
    ratios = compare_lucent.ratios(ours, ref["lucent"])
    assert set(ratios) == {"saturation", "contrast"}
    for name, r in ratios.items():
        assert abs(r - 1.0) <= TOLERANCE, (name, r, compare_lucent.summary(ours), ref["lucent_mean"])
    # What the figures showed before (the book's contrast stretch, listing 5.37) is the washed-out look.
    stretched = compare_lucent.colour_statistics(jaxviz.deprocess_image(x, bgr_to_rgb=True) / 255.0)
    assert compare_lucent.ratios(stretched, ref["lucent"])["contrast"] < 1.0 - TOLERANCE


def test_display_images_shows_each_methods_image():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    for mode in preprocessing.MODES:  # regularised: the model-space image back in its own RGB, no stretch
        x = preprocessing.preprocess(rgb.astype(np.float32), mode)
        np.testing.assert_array_equal(patterns.display_images(x, "regularised", mode), rgb)
    x = preprocessing.preprocess(rgb.astype(np.float32), "caffe")
    np.testing.assert_array_equal(patterns.display_images(x, "keras", bgr_to_rgb=True),
                                  jaxviz.deprocess_image(x, bgr_to_rgb=True))
    with pytest.raises(JaxvizError, match="unknown method"):
        patterns.display_images(x, "lucid")


def test_cli_shows_regularised_patterns_as_display_images(tmp_path, capsys):
    from jaxviz.cli import main

    code = main(["patterns", "--arch", "vgg_demo", "--layer", "block1_conv1", "--filters", "0:2", "--steps", "2",
                 "--size", "16", "--method", "regularised", "--per-filter", "--npy", "--no-progress",
                 "-o", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    from PIL import Image

    x = np.load(tmp_path / "block1_conv1_regularised.npy")  # beside the book's grid of the layer
    expected = patterns.display_images(x, "regularised")
    for i in range(2):
        png = tmp_path / "block1_conv1_regularised" / f"filter_{i:03d}.png"
        np.testing.assert_array_equal(np.asarray(Image.open(png)), expected[i])


def test_live_comparison_with_lucent(compare_lucent, demo):
    pytest.importorskip("torch", reason="the live comparison needs torch")
    pytest.importorskip("kornia", reason="Lucent's transforms need kornia (pip install --no-deps kornia==0.4.1)")
    pytest.importorskip("lucent", reason="the live comparison needs Lucent (pip install --no-deps torch-lucent)")
    result = compare_lucent.compare(demo, "block2_conv1", range(16), size=24, steps=32)
    assert result["images"]["lucent"].shape == result["images"]["jaxviz"].shape == (16, 24, 24, 3)
    for name, r in result["ratios"]["jaxviz"].items():
        assert abs(r - 1.0) <= TOLERANCE, (name, r)
