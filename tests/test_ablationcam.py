"""Ablation-CAM: a hand derivation on the hand-set model, and parity with pytorch-grad-cam's
``AblationCAM.get_cam_weights`` (its own ablation loop) on the same VGG rebuilt in PyTorch."""

import types

import jax
import numpy as np
import pytest
from attribution_models import HandModel, X, hand_params
from test_cam_variants import _pgc_modules, torch_side  # noqa: F401  (a fixture)

import jaxviz
from jaxviz.attribution.ablationcam import ablationcam
from jaxviz.attribution.methods import METHODS


def test_ablationcam_by_hand():
    # HandModel with head bias (1, 0): S_0 = ΣA_0 − 2ΣA_1 + 1 = 4 − 4 + 1 = 1; zeroing A_0: −3 → w_0 = 4;
    # zeroing A_1: 5 → w_1 = −4; map ReLU(4 A_0 − 4 A_1) = ReLU([[4, −8], [12, 0]]).
    m = HandModel(hand_params(head_bias=(1.0, 0.0)))
    np.testing.assert_allclose(ablationcam(m, X, 0, upsample=False)[0], [[4, 0], [12, 0]], rtol=1e-6)
    # S_1 = ΣA_1 = 2; zeroing A_0 leaves it (w_0 = 0), zeroing A_1 gives 0 (w_1 = 1): the map is A_1
    np.testing.assert_allclose(ablationcam(m, X, 1, upsample=False)[0], [[0, 2], [0, 0]], rtol=1e-6)
    # S_0 = 0 without the bias: weights 0 (the paper divides by 0), not NaN
    np.testing.assert_array_equal(ablationcam(HandModel(), X, 0, upsample=False)[0], np.zeros((2, 2)))
    assert METHODS["ablationcam"] is ablationcam and jaxviz.ablationcam is ablationcam


def test_ablationcam_batch_size_does_not_change_the_map():
    model = jaxviz.load("vgg_tiny", "random:0")
    x = np.random.default_rng(0).normal(0, 30, (2, 32, 32, 3)).astype(np.float32)
    a = np.asarray(ablationcam(model, x, [1, 2], batch_size=6))
    b = np.asarray(ablationcam(model, x, [1, 2], batch_size=1000))
    assert a.max() > 0
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * a.max())  # other chunking: the same sums


@pytest.mark.parametrize("layer", ["block2_conv2", "block3_conv3"])
def test_ablationcam_matches_pytorch_grad_cam(torch_side, layer):  # noqa: F811
    pytest.importorskip("tqdm", reason="pytorch-grad-cam's AblationCAM needs tqdm")
    torch, cc, model, net, x = torch_side
    pgc = _pgc_modules(("utils.find_layers", "ablation_layer", "ablation_cam"))
    t = [3, 8]
    relu = [m for m in net.features if isinstance(m, torch.nn.ReLU)][model.conv_layer_names.index(layer)]
    saved = {}
    h = relu.register_forward_hook(lambda m, i, o: saved.update(a=o))
    with torch.no_grad():
        net(cc.nchw(x))
    h.remove()
    a = saved["a"].numpy()
    cls = pgc["ablation_cam"].AblationCAM
    fake = types.SimpleNamespace(model=net, batch_size=32, ratio_channels_to_ablate=1.0,
                                 ablation_layer=pgc["ablation_layer"].AblationLayer())
    fake.save_activation = types.MethodType(cls.save_activation, fake)
    fake.assemble_ablation_scores = types.MethodType(cls.assemble_ablation_scores, fake)
    targets = [lambda o, c=c: o[c] for c in t]  # ClassifierOutputTarget: the class's logit
    w = cls.get_cam_weights(fake, cc.nchw(x), relu, targets, a, None)
    theirs = np.maximum(np.einsum("nkhw,nk->nhw", a.astype(np.float64), w), 0)
    assert theirs.max() > 0
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(ablationcam(model, x, t, layer=layer, upsample=False), np.float64)
    # their weights are float32 differences of logits (S − S_k, ~1e-6 relative of S each); oneDNN vs XLA
    # sums: 1e-4 of the map's maximum
    err = np.abs(ours - theirs).max() / theirs.max()
    assert err < 1e-4, err


def test_cli_explain_ablationcam(tmp_path):
    from jaxviz.cli import main
    from jaxviz.images import sample_image_path

    out = tmp_path / "out"
    rc = main(["explain", str(sample_image_path("chelsea")), "--method", "ablation-cam", "--arch", "vgg_tiny",
               "--weights", "random:0", "-o", str(out), "--npy"])
    assert rc == 0 and np.load(out / "chelsea_ablationcam.npy").shape == (32, 32)
