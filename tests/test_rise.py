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


def _mirror(i, n):
    i = np.abs(i)
    return np.where(i > n - 1, 2 * (n - 1) - i, i)


def _upsample(a, out, axis):
    """Linear interpolation along ``axis`` with half-pixel centres, mirrored at the edges: scikit-image's
    ``resize(order=1, mode="reflect", anti_aliasing=False)``, which the authors' code calls."""
    n = a.shape[axis]
    u = (np.arange(out) + 0.5) * n / out - 0.5
    i0 = np.floor(u).astype(int)
    f = (u - i0).reshape([-1 if d == axis else 1 for d in range(a.ndim)])
    return np.take(a, _mirror(i0, n), axis=axis) * (1 - f) + np.take(a, _mirror(i0 + 1, n), axis=axis) * f


def generate_masks(n, s, p1, size, rng):
    """The authors' ``generate_masks`` (github.com/eclique/RISE, explanations.py), from the paper's section 3.2:
    an ``s × s`` grid of Bernoulli(p1) cells, upsampled bilinearly to ``(s + 1) · cell``, cropped at a random
    shift in ``[0, cell)²``."""
    cell = np.ceil(np.array(size) / s).astype(int)
    grid = (rng.random((n, s, s)) < p1).astype(np.float64)
    up = _upsample(_upsample(grid, (s + 1) * cell[0], 1), (s + 1) * cell[1], 2)
    shifts = rng.integers(0, cell, (n, 2))
    return np.stack([u[y: y + size[0], x: x + size[1]] for u, (y, x) in zip(up, shifts)])


def test_rise_masks_match_the_authors_statistically():
    n, size, s, p, cell = 2000, (30, 30), 6, 0.3, 5
    ours = np.asarray(rise_masks(n, size, grid=s, p=p, seed=0), np.float64)
    ref = generate_masks(n, s, p, size, np.random.default_rng(0))

    def per_mask(m):  # i.i.d. per mask: compared by their means
        return {"mean": m.mean((1, 2)), "mean_square": (m ** 2).mean((1, 2)),
                "zeros": (m == 0).mean((1, 2)), "ones": (m >= 1 - 1e-6).mean((1, 2)),
                "abs_diff_rows": np.abs(np.diff(m, axis=1)).mean((1, 2)),
                "abs_diff_cols": np.abs(np.diff(m, axis=2)).mean((1, 2)),
                **{f"lag_{k}": (m[:, :, :-k] * m[:, :, k:]).mean((1, 2)) for k in (1, cell, 2 * cell)}}

    a, b = per_mask(ours), per_mask(ref)
    for name in a:
        # 4.5 standard errors of the difference of two means of n i.i.d. values (11 statistics: a false alarm
        # has probability < 1e-4)
        se = np.sqrt(a[name].var() / n + b[name].var() / n)
        assert abs(a[name].mean() - b[name].mean()) <= 4.5 * se, (name, a[name].mean(), b[name].mean(), se)
    assert a["zeros"].mean() > 0.1 and a["ones"].mean() > 0.001  # the statistics are not degenerate
    # per-pixel means: the same map (flat, ≈ p, with the same borders) within 5 standard errors per pixel
    # (900 pixels: the largest of 900 |z| is ~3.3 by chance)
    se = np.sqrt(ours.var(0) / n + ref.var(0) / n)
    assert np.all(np.abs(ours.mean(0) - ref.mean(0)) <= 5 * se)


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
