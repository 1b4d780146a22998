"""ROAD: a hand derivation of the imputation and the scores on the hand-set model, and parity with
pytorch-grad-cam's own ``NoisyLinearImputer`` / ``RemoveMostRelevantFirst`` / ``PerturbationConfidenceMetric``
(noise 0) on the same VGG in PyTorch."""

import importlib.util
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from attribution_models import HandModel
from test_gradient_methods import torch_side  # noqa: F401  (a fixture)

import jaxviz
from jaxviz.metrics import road, road_combined
from jaxviz.metrics.road import road_scores


def test_road_by_hand():
    # a 1×4 image [1, −2, 3, 5], map [0, 1, 0.9, 0.1]. MoRF at p = 50: percentile 0.5 → pixels 1, 2 removed.
    # Their equations (in-image neighbours left/right, weight 1/6 each): v1/3 − v2/6 = 1/6, v2/3 − v1/6 = 5/6
    # → v1 = 7/3, v2 = 11/3 (linear interpolation). logit_0 = Σ relu(x) − 2 Σ relu(−x): 5 before, 12 after.
    x = np.array([1.0, -2.0, 3.0, 5.0], np.float32).reshape(1, 1, 4, 1)
    m = np.array([0, 1, 0.9, 0.1], np.float32).reshape(1, 1, 4)
    hand = HandModel()
    diffs, imgs = road_scores(hand, x, m, 0, percentiles=(50,), noise=0.0, return_images=True)
    np.testing.assert_allclose(np.asarray(imgs)[0, 0, 0, :, 0], [1, 7 / 3, 11 / 3, 5], rtol=1e-5)  # CG's tol
    np.testing.assert_allclose(diffs, [[7]], rtol=1e-5)
    # LeRF: 1 − map = [1, 0, 0.1, 0.9] → pixels 0, 3 removed; each has one in-image neighbour: v0 = −2, v3 = 3;
    # [−2, −2, 3, 3] → logit_0 = 6 − 8 = −2: −7. Combined (LeRF − MoRF)/2 = −7.
    np.testing.assert_allclose(road(hand, x, m, 0, order="lerf", percentiles=(50,), noise=0.0), [-7], rtol=1e-5)
    np.testing.assert_allclose(road_combined(hand, x, m, 0, percentiles=(50,), noise=0.0), [-7], rtol=1e-5)
    # the noise is added to the imputed pixels only, with the given σ
    _, noisy = road_scores(hand, x, m, 0, percentiles=(50,), noise=0.5, return_images=True)
    d = np.asarray(noisy - imgs)[0, 0, 0, :, 0]
    assert d[0] == 0 and d[3] == 0 and np.abs(d[1:3]).max() > 0
    assert jaxviz.metrics.road is road
    # a constant map keeps no pixel (nothing is below its percentile): the imputation is the mean colour
    img = np.random.default_rng(0).normal(0, 1, (1, 5, 6, 2)).astype(np.float32)
    _, flat = road_scores(hand, img, np.ones((1, 5, 6)), 0, percentiles=(50,), noise=0.0, return_images=True)
    np.testing.assert_allclose(np.asarray(flat)[0, 0], np.broadcast_to(img[0].mean((0, 1)), (5, 6, 2)), atol=1e-6)
    with pytest.raises(jaxviz.JaxvizError, match="percentiles"):
        road(hand, x, m, 0, percentiles=(150,))


def _pgc_road():
    """pytorch-grad-cam's metrics/road.py and perturbation_confidence.py, loaded from their files (the package
    imports OpenCV, used only by the 'auto' percentile); ``sys.modules`` restored afterwards."""
    spec = importlib.util.find_spec("pytorch_grad_cam")
    if spec is None:
        pytest.skip("pytorch-grad-cam is not installed (pip install --no-deps grad-cam==1.5.7)")
    pytest.importorskip("scipy", reason="pytorch-grad-cam's ROAD needs SciPy")
    root = Path(spec.submodule_search_locations[0]) / "metrics"
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for name in ("pytorch_grad_cam", "pytorch_grad_cam.metrics"):
            pkg = types.ModuleType(name)
            pkg.__path__ = []
            mp.setitem(sys.modules, name, pkg)
        if importlib.util.find_spec("cv2") is None:
            mp.setitem(sys.modules, "cv2", types.ModuleType("cv2"))
        for name in ("perturbation_confidence", "road"):
            s = importlib.util.spec_from_file_location(f"pytorch_grad_cam.metrics.{name}", root / f"{name}.py")
            mod = importlib.util.module_from_spec(s)
            mp.setitem(sys.modules, f"pytorch_grad_cam.metrics.{name}", mod)
            s.loader.exec_module(mod)
            out[name] = mod
    return out


def test_road_matches_pytorch_grad_cam(torch_side):  # noqa: F811
    torch, cc, model, net, x = torch_side
    pgc = _pgc_road()
    pc, rd = pgc["perturbation_confidence"], pgc["road"]
    t = [3, 8]
    maps = np.random.default_rng(6).random((2, 32, 32)).astype(np.float32)
    # a smooth map (blobs), as CAMs are: large removed regions, the hard case for the solver
    yy, xx = np.mgrid[:32, :32]
    maps[1] = np.exp(-((yy - 10) ** 2 + (xx - 20) ** 2) / 60.0)
    targets = [lambda o, c=c: o[c] for c in t]  # ClassifierOutputTarget: the class's logit
    for order, cls, pct in (("morf", pc.RemoveMostRelevantFirst, (20, 80)), ("lerf", pc.RemoveLeastRelevantFirst,
                                                                          (30, 90))):
        with jax.default_matmul_precision("highest"):
            diffs, imgs = road_scores(model, x, maps, t, order=order, percentiles=pct, noise=0.0,
                                      return_images=True)
        for i, p in enumerate(pct):
            metric = pc.PerturbationConfidenceMetric(cls(p, rd.NoisyLinearImputer(noise=0.0)))
            theirs, their_imgs = metric(cc.nchw(x), maps, targets, net, return_visualization=True)
            their_imgs = their_imgs.numpy().transpose(0, 2, 3, 1)
            # the imputed images: CG to a relative residual of 1e-7 vs SciPy's sparse LU (float64, then float32)
            err = np.abs(np.asarray(imgs[i]) - their_imgs).max() / np.abs(their_imgs).max()
            assert err < 1e-4, (order, p, err)
            # score changes: float32 logits (oneDNN vs XLA sums) of ~1e-6 relative; 1e-4 of the logits' scale
            scale = np.abs(np.asarray(model.features(x, "logits")["logits"])[range(2), t]).max()
            np.testing.assert_allclose(diffs[i], theirs, atol=1e-4 * scale, err_msg=f"{order} {p}")
