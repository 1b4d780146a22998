"""The declared model interface: what front ends produce and what methods may ask.

Checks that :class:`jaxviz.Model` offers every member of :class:`jaxviz.interface.ModelInterface` whatever
front end built it, that each front end sets its profile, that importing jaxviz registers nothing, that only
the VGG front end asks whether a model is a VGG table, and that per-architecture choices come from the profile.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxviz
from jaxviz import interface
from jaxviz.attribution.occlusion import split_plan
from jaxviz.attribution.scores import default_score
from jaxviz.frontends import vgg
from jaxviz.graph import Graph

SOURCE = Path(jaxviz.__file__).resolve().parent


@pytest.fixture(scope="module")
def tiny():
    return jaxviz.Model("vgg_tiny", vgg.random_params("vgg_tiny"), source="random:0")


@pytest.fixture(scope="module")
def graph_model(tiny):
    """The same network as a plain graph (a model file's front end): described from its shapes."""
    g = tiny.graph
    return jaxviz.Model(Graph("tiny_graph", g.layers, g.outputs, g.class_names), tiny.params)


def test_models_of_every_front_end_offer_every_member(tiny, graph_model):
    assert len(interface.MEMBERS) > 30 and {"apply", "params", "profile", "input_hw", "family"} <= set(
        interface.MEMBERS)
    for m in (tiny, graph_model):
        missing = [name for name in interface.MEMBERS if not hasattr(m, name)]
        assert missing == [] and isinstance(m, interface.ModelInterface)
    # the plain members answer what methods used to read from ``model.arch``
    assert (tiny.name, tiny.num_classes, tiny.input_hw, tiny.input_size, tiny.input_channels, tiny.head) == (
        "vgg_tiny", 10, (32, 32), 32, 3, "flatten")
    assert (graph_model.num_classes, graph_model.input_hw, graph_model.input_channels) == (10, (32, 32), 3)
    assert tiny.family == interface.VGG_FAMILY and graph_model.family is None


def test_a_graph_describes_itself_as_the_vgg_front_end_does(tiny, graph_model):
    # the VGG front end's exact table and the graph's traced table agree on every row
    ours = [(r.name, r.kind, r.output_shape, r.params) for r in graph_model.layer_table()]
    assert ours == [(r.name, r.kind, r.output_shape, r.params) for r in tiny.layer_table()]
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(graph_model.predict(x), tiny.predict(x))
    assert tiny.summary(print_fn=lambda s: None) == vgg.format_summary("vgg_tiny")


def test_front_ends_set_the_profile(tiny, graph_model):
    assert tiny.profile.name == "imagenet" and graph_model.profile.name == "file"
    demo = vgg.front_end("vgg_demo_gap", True)
    assert demo.profile.name == "demo" and demo.profile.bundled_weights == "demo"
    assert demo.profile.image.is_file() and demo.info is vgg.VGG_DEMO_GAP and demo.graph.name == "vgg_demo_gap"
    assert vgg.front_end("vgg16").profile.bundled_weights is None
    own = dataclasses.replace(tiny.profile, name="mine")
    assert jaxviz.Model("vgg_tiny", tiny.params, profile=own).profile is own


def test_default_score_follows_the_profile(tiny):
    assert default_score(tiny) == "prob" and default_score(tiny, "logit") == "logit"
    logit = jaxviz.Model("vgg_tiny", tiny.params, profile=dataclasses.replace(tiny.profile, score="logit"))
    assert default_score(logit) == "logit" and default_score(logit, "prob") == "prob"


def test_the_bundled_weights_load_by_name():
    m = jaxviz.load("vgg_demo")
    assert m.source.startswith("demo:") and m.profile.name == "demo" and m.class_names == list(
        jaxviz.demo.CLASS_NAMES)
    assert vgg.get_arch("vgg_demo") is jaxviz.demo.VGG_DEMO


def test_importing_jaxviz_registers_nothing():
    # A fresh interpreter: the table after ``import jaxviz`` is the one vgg.py defines, and no module of
    # the package calls the registration hook.
    code = ("import jaxviz.frontends.vgg as v; rows = dict(v.ARCHS); import jaxviz, jaxviz.demo; "
            "assert v.ARCHS == rows and not hasattr(jaxviz.demo, 'register'); print(sorted(v.ARCHS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["['vgg16',", "'vgg19',", "'vgg_demo',", "'vgg_demo_gap',", "'vgg_tiny']"]
    calls = [p.relative_to(SOURCE) for p in SOURCE.rglob("*.py")
             if re.search(r"(?<!def )register_arch\(", p.read_text(encoding="utf-8"))]
    assert calls == []


def test_only_the_vgg_front_end_asks_for_an_arch():
    pattern = re.compile(r"isinstance\([^()]*(\([^()]*\))?[^()]*,\s*(\w+\.)?Arch\b")
    found = [f"{p.relative_to(SOURCE)}:{i}" for p in SOURCE.rglob("*.py") if p.name != "vgg.py"
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert found == [], "isinstance(…, Arch) outside jaxviz/frontends/vgg.py: ask the model's interface (model.family)"
    assert pattern.search("if not isinstance(model.arch, vgg.Arch):")  # the pattern finds what it looks for


def test_occlusion_splits_only_a_vgg_stack(tiny, graph_model):
    plan = split_plan(tiny, (32, 32), (8, 8), "block2_conv1")
    assert plan is not None and plan.layer == "block2_conv1" and plan.dense_layer == "fc1"
    assert split_plan(graph_model, (32, 32), (8, 8), "auto") is None  # a graph of unknown family: in full
