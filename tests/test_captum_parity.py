"""Parity with Captum on a VGG16-shaped network (vgg_tiny, random weights) rebuilt in PyTorch.

Runs scripts/compare_captum.py's comparison at small size; skipped when torch or captum is not installed
(CI installs the CPU wheel of torch and captum; see the README).
"""

import numpy as np
import pytest
from module_files import load_script

torch = pytest.importorskip("torch", reason="parity with Captum needs torch (pip install torch captum)")
pytest.importorskip("captum", reason="parity with Captum needs captum (pip install captum)")

import jaxviz  # noqa: E402


@pytest.fixture(scope="module")
def compare_captum():
    return load_script("compare_captum")


@pytest.fixture(scope="module")
def setup():
    model = jaxviz.load("vgg_tiny", "random:0")
    # non-zero biases, so that the network is not positively homogeneous (IG then has quadrature error)
    rng = np.random.default_rng(5)
    model.params = {k: {"kernel": v["kernel"], "bias": rng.normal(0, 0.05, v["bias"].shape).astype(np.float32)}
                    for k, v in model.params.items()}
    x = np.random.default_rng(2).normal(0, 40, (3, 32, 32, 3)).astype(np.float32)
    return model, x


def test_torch_model_matches_jaxviz_logits(compare_captum, setup):
    model, x = setup
    net, _ = compare_captum.torch_vgg(model)
    with torch.no_grad():
        theirs = net(compare_captum.nchw(x)).numpy()
    ours = np.asarray(model.features(x, "logits")["logits"])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())


def test_methods_match_captum(compare_captum, setup):
    model, x = setup
    targets = [1, 7, 3]  # explicit, different per image
    opts = dict(steps=16, batch_size=8, window=8, stride=4, samples=2, noise=0.1, rise_masks=12)
    results = compare_captum.compare(model, x, targets, sorted(compare_captum.COMPARED), opts, timing=False)
    # 1e-4 of each map's largest magnitude: float32 sums in a different order (oneDNN vs XLA) differ by
    # ~1e-6 relative; a definitional difference (a missed ReLU, another window placement) is O(1).
    errors = {name: r["rel_error"] for name, r in results.items()}
    assert all(e < 1e-4 for e in errors.values()), errors


def test_timing_reports_per_round_ratios(compare_captum, setup):
    model, x = setup
    opts = dict(steps=4, batch_size=8, window=8, stride=4, samples=2, noise=0.1)
    r = compare_captum.compare(model, x, [1, 7, 3], ["saliency"], opts, repeats=3)["saliency"]
    rounds = np.asarray(r["captum_times"]) / np.asarray(r["jaxviz_times"])
    np.testing.assert_allclose(r["round_ratios"], rounds)
    assert r["round_ratio_median"] == np.median(rounds) and len(rounds) == 3
    assert r["ratio"] == min(r["captum_times"]) / min(r["jaxviz_times"])
    row = compare_captum.format_table({"saliency": r}).splitlines()[1]
    assert f"{np.median(rounds):.2f} ({rounds.min():.2f}–{rounds.max():.2f})" in row
