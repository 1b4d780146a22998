"""Metrics: deletion/insertion curves, the pointing game, the model-randomisation sanity check, `evaluate`."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from attribution_models import HandModel

import jaxviz
from jaxviz.attribution.saliency import saliency
from jaxviz.metrics import auc, deletion, insertion, model_randomisation, plot_sanity, pointing_game, spearman, ssim
from jaxviz.metrics.sanity import randomise, rankdata, weighted_layers_top_down


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(1).normal(0, 30, size=(2, 32, 32, 3)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Deletion / insertion


def _hand_image():
    # positive pixels 1..16 on a 4×4 image: logit_0 = Σ x (class 1's logit is 0), so p_0 = sigmoid(Σ x)
    # falls fastest when the largest pixels go first.
    return (np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)) / 8


def test_deletion_orders_pixels_by_the_map():
    model, x = HandModel(), _hand_image()
    good = deletion(model, x, x[..., 0], 0, steps=16, score="logit")
    bad = deletion(model, x, -x[..., 0], 0, steps=16, score="logit")
    # logit after k steps = sum of the pixels left: by hand for the good order
    left = np.r_[x.sum(), x.sum() - np.cumsum(np.sort(x.ravel())[::-1])]
    np.testing.assert_allclose(good.scores[0], left, rtol=1e-6)
    np.testing.assert_allclose(good.fractions, np.arange(17) / 16)
    assert good.auc[0] < bad.auc[0]
    ins_good = insertion(model, x, x[..., 0], 0, steps=16, baseline="zeros")
    ins_bad = insertion(model, x, -x[..., 0], 0, steps=16, baseline="zeros")
    assert ins_good.auc[0] > ins_bad.auc[0]
    np.testing.assert_allclose(auc(good.fractions, good.scores), np.trapezoid(good.scores, good.fractions, axis=-1))


def test_curves_batched_equal_loop(tiny, batch):
    maps = np.asarray(saliency(tiny, batch))
    c = insertion(tiny, batch, maps, steps=8, batch_size=5)  # 9 points → 2 chunks of 5 images, last padded
    one = insertion(tiny, batch, maps, steps=8, batch_size=1)
    np.testing.assert_allclose(c.scores, one.scores, rtol=1e-5, atol=1e-7)
    # by hand: image 1, after 3 steps of 128 pixels, from the blurred image
    from jaxviz.metrics.deletion import _rise_blur

    blurred = np.asarray(_rise_blur(jnp.asarray(batch), 5.0))
    order = np.argsort(-maps[1].ravel(), kind="stable")[: 3 * 128]
    img = blurred[1].reshape(-1, 3).copy()
    img[order] = batch[1].reshape(-1, 3)[order]
    p = np.asarray(tiny.predict(img.reshape(1, 32, 32, 3)))[0, c.targets[1]]
    np.testing.assert_allclose(c.scores[1, 3], p, rtol=1e-5)
    assert c.scores.shape == (2, 9) and c.fractions[0] == 0 and c.fractions[-1] == 1


def test_insertion_substrate_is_rises_gkern():
    from jaxviz.metrics.deletion import _rise_blur, rise_kernel

    k = rise_kernel(11, 5.0)
    # RISE's gkern(11, 5) is nearly flat: the reflect border folds the σ = 5 tails back into the window.
    # Values from scipy.ndimage.gaussian_filter of the delta (scipy 1.17), to float64 rounding.
    assert abs(k.sum() - 1) < 1e-12
    np.testing.assert_allclose(k[5, 0] / k[5, 5], 0.9359035407219273, rtol=1e-12)
    np.testing.assert_allclose(k[0, 0] / k[5, 5], 0.8759154375358401, rtol=1e-12)
    np.testing.assert_allclose(k[5, 5], 0.008832628216191647, rtol=1e-12)
    scipy_ndimage = pytest.importorskip("scipy.ndimage")  # a dependency of jax, so present wherever jax is
    for size, sigma in [(11, 5.0), (11, 2.0), (7, 3.0), (5, 10.0)]:
        delta = np.zeros((size, size))
        delta[size // 2, size // 2] = 1
        np.testing.assert_allclose(rise_kernel(size, sigma), scipy_ndimage.gaussian_filter(delta, sigma),
                                   rtol=1e-12, atol=1e-15)  # both float64: the same sums in another order
    # the substrate: RISE's conv2d(x, gkern, padding=5) — zero padding — per channel
    x = np.random.default_rng(0).normal(size=(1, 20, 16, 3)).astype(np.float32)
    pad = np.pad(x.astype(np.float64), ((0, 0), (5, 5), (5, 5), (0, 0)))
    ref = np.zeros(x.shape)
    for i in range(11):
        for j in range(11):
            ref += k[i, j] * pad[:, i: i + 20, j: j + 16]
    np.testing.assert_allclose(np.asarray(_rise_blur(jnp.asarray(x), 5.0)), ref, atol=2e-6)  # float32 sums


def test_cam_sized_maps_are_upsampled(tiny, batch):
    small = np.random.default_rng(0).random((2, 2, 2)).astype(np.float32)
    d = deletion(tiny, batch, small, steps=4)
    assert d.scores.shape == (2, 5)
    with pytest.raises(jaxviz.JaxvizError, match="one map"):
        deletion(tiny, batch, small[:1], steps=4)


# ---------------------------------------------------------------------------------------------------------
# Pointing game


def test_pointing_game_boxes_masks_and_tolerance():
    maps = np.zeros((3, 100, 100), np.float32)
    maps[0, 50, 50] = 1  # inside the box
    maps[1, 10, 10] = 1  # far outside
    maps[2, 50, 75] = 1  # 5 px right of the box's last column (69)
    box = (30, 30, 70, 70)
    np.testing.assert_array_equal(pointing_game(maps, [box] * 3, tolerance=1), [True, False, False])
    np.testing.assert_array_equal(pointing_game(maps, [box] * 3, tolerance=0), [False] * 3)  # d < 0 never
    np.testing.assert_array_equal(pointing_game(maps, [box] * 3, tolerance=15), [True, False, True])
    mask = np.zeros((100, 100), bool)
    mask[45:55, 45:55] = True
    np.testing.assert_array_equal(pointing_game(maps, [mask] * 3, tolerance=15), [True, False, False])
    # a 14×14 map whose maximum is cell (7, 7) points at pixel (7.5·16 − 0.5) = 119.5 of a 224 image
    cam = np.zeros((1, 14, 14))
    cam[0, 7, 7] = 1
    assert pointing_game(cam, [(110, 110, 130, 130)], tolerance=1, size=(224, 224))[0]
    assert not pointing_game(cam, [(110, 110, 130, 130)], tolerance=1)[0]


def _torchray_hit(mask, point, tolerance):
    """TorchRay's ``PointingGame.evaluate`` in numpy: a hit iff a mask pixel is at squared distance < tol²."""
    u, v = point  # (column, row)
    rows = (np.arange(mask.shape[0], dtype=np.float32) - v) ** 2
    cols = (np.arange(mask.shape[1], dtype=np.float32) - u) ** 2
    return bool((mask & ((rows[:, None] + cols[None, :]) < tolerance**2)).any())


def test_pointing_game_matches_torchray_strict_tolerance():
    # points exactly `tolerance` away miss (TorchRay counts d < tolerance; d ≤ tolerance hit before)
    mask = np.zeros((40, 40), bool)
    mask[10:20, 10:20] = True
    maps = np.zeros((4, 40, 40), np.float32)
    for i, (r, c) in enumerate([(15, 25), (15, 24), (28, 28), (27, 19)]):  # d = 6, 5, √128 ≈ 11.3, 8
        maps[i, r, c] = 1
    np.testing.assert_array_equal(pointing_game(maps, [mask] * 4, tolerance=6), [False, True, False, False])
    np.testing.assert_array_equal(pointing_game(maps, [mask] * 4, tolerance=8), [True, True, False, False])
    np.testing.assert_array_equal(pointing_game(maps, [(10, 10, 20, 20)] * 4, tolerance=8),
                                  [True, True, False, False])  # the same region as a box
    rng = np.random.default_rng(0)
    for _ in range(200):  # random masks, points and integer tolerances: the same verdict as TorchRay's
        mask = rng.random((24, 24)) < rng.choice([0.005, 0.02, 0.2])
        m = np.zeros((1, 24, 24), np.float32)
        r, c = rng.integers(0, 24, 2)
        m[0, r, c] = 1
        tol = int(rng.integers(0, 8))
        assert pointing_game(m, [mask], tolerance=tol)[0] == _torchray_hit(mask, (c, r), tol), (r, c, tol)


# ---------------------------------------------------------------------------------------------------------
# Sanity check


def test_rank_correlation_and_ssim():
    np.testing.assert_array_equal(rankdata([3, 1, 2, 2]), [4, 1, 2.5, 2.5])
    a = np.random.default_rng(0).random((16, 16))
    assert spearman(a, a) == pytest.approx(1)
    assert spearman(a, -a) == pytest.approx(-1)
    assert spearman(a, a**3) == pytest.approx(1)  # ranks only
    assert np.isnan(spearman(a, np.zeros_like(a)))
    assert ssim(a, a) == pytest.approx(1)
    assert ssim(a, np.random.default_rng(1).random((16, 16))) < 0.5


def _wang_ssim(a, b, sigma=1.5, size=11, data_range=1.0):
    """Wang, Bovik, Sheikh & Simoncelli (2004), eq. 13 and 15–17, window by window: at every position where
    a ``size × size`` window fits, the Gaussian-weighted (σ = 1.5, weights summing to 1) means, variances
    and covariance of the window (centred sums, the weighted "population" form), ``C1 = (0.01 L)²``,
    ``C2 = (0.03 L)²``; the mean SSIM over all windows."""
    t = np.arange(size) - size // 2
    w = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    w /= w.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(a.shape[0] - size + 1):
        for j in range(a.shape[1] - size + 1):
            x, y = a[i: i + size, j: j + size], b[i: i + size, j: j + size]
            mx, my = (w * x).sum(), (w * y).sum()
            vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
            cxy = (w * (x - mx) * (y - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_is_wang_et_als():
    rng = np.random.default_rng(0)
    a, b = rng.random((20, 23)), rng.random((20, 23))
    a[a < 0.3] = 0
    for x, y in [(a, b), (a, 0.7 * a + 0.3 * b), (a, a**2)]:
        # float64 both ways; only the summation order differs (separable filters vs window sums)
        assert ssim(x, y) == pytest.approx(_wang_ssim(x, y), abs=1e-12)
    assert ssim(5 * a, 5 * b, data_range=5.0) == pytest.approx(_wang_ssim(5 * a, 5 * b, data_range=5.0), abs=1e-12)
    # constant images: SSIM = (2 c d + C1) / (c² + d² + C1), by hand
    c, d = np.full((16, 16), 0.2), np.full((16, 16), 0.6)
    assert ssim(c, d) == pytest.approx((2 * 0.2 * 0.6 + 1e-4) / (0.04 + 0.36 + 1e-4), abs=1e-12)


def test_against_scipy_and_skimage_when_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.random((20, 20)), rng.random((20, 20))
    a[a < 0.3] = 0  # ties
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    metrics = pytest.importorskip("skimage.metrics")
    ref = metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-9)


def test_randomisation_changes_the_map(tiny, batch, tmp_path):
    layers = weighted_layers_top_down(tiny)
    assert layers[:3] == ["predictions", "fc2", "fc1"] and layers[-1] == "block1_conv1"
    res = model_randomisation(tiny, batch, "saliency", checkpoints=["predictions", "block5_conv1", "block1_conv1"])
    assert res.layers == ["predictions", "block5_conv1", "block1_conv1"]
    assert res.maps.shape == (4, 2, 32, 32) and res.spearman.shape == (3, 2)
    # after re-drawing every layer the map has (almost) nothing to do with the original
    assert (res.spearman_abs[-1] < 0.5).all() and (res.ssim[-1] < 0.5).all()
    assert not np.allclose(res.maps[0], res.maps[-1])
    # cascading: each step keeps the layers randomised before (same draws, more layers)
    p1 = randomise(tiny.params, layers[:1], seed=0)
    p2 = randomise(tiny.params, layers[:2], seed=0)
    np.testing.assert_array_equal(p1["predictions"]["kernel"], p2["predictions"]["kernel"])
    assert not np.array_equal(p1["fc2"]["kernel"], p2["fc2"]["kernel"])
    path = plot_sanity(res, tmp_path / "sanity.png")
    assert path.stat().st_size > 0


def test_independent_mode_and_errors(tiny, batch):
    res = model_randomisation(tiny, batch, saliency, layers=["block3_conv1"], mode="independent")
    assert res.layers == ["block3_conv1"] and res.method == "saliency"
    with pytest.raises(jaxviz.JaxvizError, match="no weights"):
        model_randomisation(tiny, batch, "saliency", layers=["block3_pool"])


# ---------------------------------------------------------------------------------------------------------
# CLI


def test_cli_evaluate_prints_table_and_json(tmp_path, capsys):
    from jaxviz.cli import main
    from jaxviz.images import sample_image_path

    out = tmp_path / "eval.json"
    rc = main(["evaluate", str(sample_image_path("chelsea")), "--method", "saliency,gradcam", "--box", "4,4,28,28",
               "--steps", "8", "--arch", "vgg_tiny", "--weights", "random:0", "--json", str(out),
               "--plot", str(tmp_path / "plots")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "deletion AUC" in text and "insertion AUC" in text and "pointing" in text and "saliency" in text
    data = json.loads(out.read_text())
    row = data["methods"]["saliency"]
    assert "pointing_hit" in row
    # the AUCs are the trapezoid areas under the curves of this image's saliency map, for its top class
    from jaxviz.cli.common import images_from_paths
    from jaxviz.runtime import logits

    model = jaxviz.load("vgg_tiny", "random:0")
    x = images_from_paths([str(sample_image_path("chelsea"))], (32, 32), model)
    t = int(np.asarray(logits(model, x)).argmax())
    m = np.asarray(saliency(model, x, t))
    for kind, curve_fn in (("deletion", deletion), ("insertion", insertion)):
        curve = curve_fn(model, x, m, t, steps=8)
        by_hand = float(np.sum((curve.scores[0, 1:] + curve.scores[0, :-1]) / 2 * np.diff(curve.fractions)))
        np.testing.assert_allclose(row[f"{kind}_auc"], by_hand, rtol=1e-5, err_msg=kind)
    assert row["deletion_auc"] != row["insertion_auc"]
    assert set(row["sanity"]) == {"predictions", "block5_conv3", "block1_conv1"}
    assert (tmp_path / "plots" / "chelsea_gradcam_sanity.png").exists()


def test_cli_evaluate_bad_method(tmp_path, capsys):
    from jaxviz.cli import main
    from jaxviz.images import sample_image_path

    rc = main(["evaluate", str(sample_image_path("chelsea")), "--method", "gradcam,nope", "--arch", "vgg_tiny",
               "--weights", "random:0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "'nope'" in err and "valid methods" in err
