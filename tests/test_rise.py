"""RISE: a hand derivation with given masks on the hand-set model, the masks' statistics, a known answer
(a class that depends on one pixel), batching. Neither Captum nor pytorch-grad-cam has RISE."""

import numpy as np
import pytest
from attribution_models import HandModel, X

import jaxviz
from jaxviz.attribution.methods import METHODS
from jaxviz.attribution.rise import rise, rise_from_masks, rise_masks


def test_rise_from_masks_by_hand():
    # class 1: logit_1 = Σ relu(−x); x ⊙ M1 keeps only the 1 → 0; x ⊙ M2 keeps the −2 → 2.
    # S = (0 · M1 + 2 · M2) / (n p) with n = 2, p = 0.5 → 2 M2
    m1 = np.array([[1, 0], [0, 0]], np.float32)
    m2 = np.array([[0, 1], [1, 1]], np.float32)
    s = rise_from_masks(HandModel(), X, 1, np.stack([m1, m2]), 0.5, score="logit")
    np.testing.assert_allclose(s[0], 2 * m2, rtol=1e-6)
    # fill −1: x ⊙ M1 + fill (1 − M1) = [[1, −1], [−1, −1]] → 3 and x ⊙ M2 + fill (1 − M2) = [[−1, −2], [3, 0]]
    # → 3: S = 3 M1 + 3 M2 = 3 everywhere
    s = rise_from_masks(HandModel(), X, 1, np.stack([m1, m2]), 0.5, score="logit", fill=-1.0)
    np.testing.assert_allclose(s[0], 3 * (m1 + m2), rtol=1e-6)


def test_rise_masks_statistics():
    m = np.asarray(rise_masks(2000, (28, 28), grid=7, p=0.3, seed=1))
    assert m.shape == (2000, 28, 28) and m.min() >= 0 and m.max() <= 1
    # each pixel is a bilinear blend of ≤ 4 Bernoulli(0.3) cells: its mean over 2000 masks is 0.3 ± 0.01
    # (standard error ≤ √(0.21/2000)); 0.05 = 5 standard errors
    np.testing.assert_allclose(m.mean(0), 0.3, atol=0.05)
    assert len(np.unique(m[:, 5, 5])) > 3  # smooth (bilinear), not binary


def test_rise_finds_the_one_pixel_the_class_depends_on():
    # 16×16 image, all positive but one pixel: logit_1 = relu(−x) there only, so S_ij ∝ E[M_p M_ij] / p,
    # largest at that pixel (Cauchy–Schwarz; the masks are stationary up to the crop)
    x = np.ones((1, 16, 16, 1), np.float32)
    x[0, 5, 11, 0] = -3.0
    s = np.asarray(rise(HandModel(), x, 1, n=3000, grid=4, score="logit", batch_size=512))[0]
    assert np.unravel_index(s.argmax(), s.shape) == (5, 11)
    # the value there is 3 E[M²]/p, and p² = E[M]² ≤ E[M²] ≤ E[M] = p (masks in [0, 1]): between 3p = 1.5 and 3
    assert 1.5 * 0.9 < s[5, 11] < 3.0 * 1.1  # 10 %: sampling error of 3000 masks
    assert METHODS["rise"] is rise and jaxviz.rise is rise


def test_rise_batch_size_does_not_change_the_map():
    hand = HandModel()
    x = np.concatenate([X, -X])
    a = np.asarray(rise(hand, x, [0, 1], n=50, grid=2, score="logit", batch_size=6))
    b = np.asarray(rise(hand, x, [0, 1], n=50, grid=2, score="logit", batch_size=1000))
    assert np.abs(a).max() > 0
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(a).max())  # the same masks, other chunks
    with pytest.raises(jaxviz.JaxvizError, match="p "):
        rise(hand, x, p=0.0)


def test_cli_explain_rise(tmp_path):
    from jaxviz.cli import main
    from jaxviz.images import sample_image_path

    out = tmp_path / "out"
    rc = main(["explain", str(sample_image_path("chelsea")), "--method", "rise", "--arch", "vgg_tiny",
               "--weights", "random:0", "-o", str(out), "--npy"])
    assert rc == 0 and np.load(out / "chelsea_rise.npy").shape == (32, 32)
