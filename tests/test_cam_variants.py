"""LayerCAM, HiResCAM, XGrad-CAM, Eigen-CAM: hand-derived maps on the hand-set model, and parity with
pytorch-grad-cam's own code (its ``get_cam_image`` / ``get_cam_weights`` / ``get_2d_projection``) fed the
activations and gradients of the same VGG rebuilt in PyTorch (scripts/compare_captum.py's ``torch_vgg``).
"""

import importlib.util
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from attribution_models import HandModel, X
from module_files import load_module, load_script

import jaxviz
from jaxviz.attribution.eigencam import eigencam
from jaxviz.attribution.hirescam import hirescam
from jaxviz.attribution.layercam import layercam
from jaxviz.attribution.methods import METHODS, explain
from jaxviz.attribution.xgradcam import xgradcam

VARIANTS = {"layercam": layercam, "hirescam": hirescam, "xgradcam": xgradcam, "eigencam": eigencam}


# ---------------------------------------------------------------------------------------------------------
# By hand. HandModel: A = (relu(x), relu(−x)) per location, ∂logit_c/∂A_ijk = V[k, c], V = [[1, 0], [−2, 1]];
# X = [[1, −2], [3, 0]], so A_0 = [[1, 0], [3, 0]], A_1 = [[0, 2], [0, 0]]; logit_0 = 4 − 2·2 = 0.


@pytest.fixture(scope="module")
def hand():
    return HandModel()


def test_layercam_by_hand(hand):
    # class 0: ReLU(g) = (1, 0) → A_0; class 1: ReLU(g) = (0, 1) → A_1
    np.testing.assert_allclose(layercam(hand, X, 0, upsample=False)[0], [[1, 0], [3, 0]], rtol=1e-6)
    np.testing.assert_allclose(layercam(hand, X, 1, upsample=False)[0], [[0, 2], [0, 0]], rtol=1e-6)


def test_hirescam_by_hand(hand):
    # class 0: A_0 − 2 A_1 = [[1, −4], [3, 0]] → ReLU; its sum before the ReLU is logit_0 = 0 (linear head)
    np.testing.assert_allclose(hirescam(hand, X, 0, upsample=False)[0], [[1, 0], [3, 0]], rtol=1e-6)
    np.testing.assert_allclose(hirescam(hand, X, 1, upsample=False)[0], [[0, 2], [0, 0]], rtol=1e-6)


def test_xgradcam_by_hand(hand):
    # w_k = Σ_ij A_ijk/Σ A_k · V[k, c] = V[k, c] (uniform gradient): class 0 → ReLU(A_0 − 2 A_1)
    np.testing.assert_allclose(xgradcam(hand, X, 0, upsample=False)[0], [[1, 0], [3, 0]], rtol=1e-6)
    # a head that doubles channel 0: w = (2, −2); normalize scales the map to max 1
    m = HandModel()
    m.params = {**m.params, "predictions": {"kernel": np.array([[2.0, 0], [-2, 1]], np.float32),
                                            "bias": np.zeros(2, np.float32)}}
    np.testing.assert_allclose(xgradcam(m, X, 0, upsample=False, normalize=True)[0], [[1 / 3, 0], [1, 0]],
                               rtol=1e-6)


def test_eigencam_by_hand(hand):
    # rows (locations) of A: (1, 0), (0, 2), (3, 0), (0, 0); centred by the mean (1, 0.5); their scatter
    # matrix [[6, −2], [−2, 3]] has eigenvalues 7, 2 and v₁ = (2, −1)/√5; projections (0.5, −3.5, 4.5, −1.5)/√5
    # (|min| < |max|: no flip), ReLU → [[0.5, 0], [4.5, 0]]/√5. The class does not matter.
    want = np.array([[0.5, 0], [4.5, 0]]) / np.sqrt(5)
    for t in (0, 1):
        np.testing.assert_allclose(eigencam(hand, X, t, upsample=False)[0], want, rtol=1e-5)  # float32 SVD


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variants_by_name_and_shape(hand, name):
    assert METHODS[name] is VARIANTS[name] and getattr(jaxviz, name) is VARIANTS[name]
    x = np.concatenate([X, -X])
    m = np.asarray(explain(hand, x, name, [0, 1]))
    assert m.shape == (2, 2, 2) and (m >= 0).all() and m.max() > 0


# ---------------------------------------------------------------------------------------------------------
# pytorch-grad-cam


def _pgc_modules(extra=()):
    """pytorch-grad-cam's layer_cam, hirescam, xgrad_cam, eigen_cam and utils.svd_on_activations modules, loaded
    from their files with a placeholder ``BaseCAM`` (the package's ``__init__`` needs OpenCV and ttach; the
    SVD module imports scikit-learn's KernelPCA, unused by ``get_2d_projection``); ``sys.modules`` restored."""
    spec = importlib.util.find_spec("pytorch_grad_cam")
    if spec is None:
        pytest.skip("pytorch-grad-cam is not installed (pip install --no-deps grad-cam==1.5.7)")
    root = Path(spec.submodule_search_locations[0])

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for name in ("pytorch_grad_cam", "pytorch_grad_cam.utils"):
            pkg = types.ModuleType(name)
            pkg.__path__ = []
            mp.setitem(sys.modules, name, pkg)
        base = types.ModuleType("pytorch_grad_cam.base_cam")
        base.BaseCAM = object
        mp.setitem(sys.modules, "pytorch_grad_cam.base_cam", base)
        if importlib.util.find_spec("sklearn") is None:
            sk = types.ModuleType("sklearn.decomposition")
            sk.KernelPCA = None
            mp.setitem(sys.modules, "sklearn", types.ModuleType("sklearn"))
            mp.setitem(sys.modules, "sklearn.decomposition", sk)
        svd = load_module("pytorch_grad_cam.utils.svd_on_activations", root / "utils" / "svd_on_activations.py")
        mp.setitem(sys.modules, "pytorch_grad_cam.utils.svd_on_activations", svd)
        out["svd"] = svd
        for name in ("layer_cam", "hirescam", "xgrad_cam", "eigen_cam"):
            out[name] = load_module(f"_pgc_{name}", root / f"{name}.py")
        for name in extra:  # dependencies first, registered under their package names
            out[name] = load_module(f"pytorch_grad_cam.{name}", root / f"{name.replace('.', '/')}.py")
            mp.setitem(sys.modules, f"pytorch_grad_cam.{name}", out[name])
    return out


@pytest.fixture(scope="module")
def torch_side():
    torch = pytest.importorskip("torch", reason="parity with pytorch-grad-cam needs torch")
    cc = load_script("compare_captum")
    from attribution_models import tiny_with_biases

    model = tiny_with_biases(3)
    net, _ = cc.torch_vgg(model)
    x = np.random.default_rng(4).normal(0, 40, (2, 32, 32, 3)).astype(np.float32)
    return torch, cc, model, net, x


def _torch_a_g(torch_side, layer, targets):
    """NCHW ``(A, ∂logit_t/∂A)`` of ``layer``'s ReLU output in the PyTorch VGG (as pytorch-grad-cam hooks it)."""
    torch, cc, model, net, x = torch_side
    relus = [m for m in net.features if isinstance(m, torch.nn.ReLU)]
    convs = [n for n in model.conv_layer_names]
    saved = {}
    h = relus[convs.index(layer)].register_forward_hook(lambda m, i, o: saved.update(a=o))
    xt = cc.nchw(x)
    out = net(xt)
    h.remove()
    a = saved["a"]
    (g,) = torch.autograd.grad(out[range(len(targets)), list(targets)].sum(), a)
    return a.detach().numpy(), g.numpy()


@pytest.mark.parametrize("layer", ["block2_conv2", "block3_conv3"])
def test_variants_match_pytorch_grad_cam(torch_side, layer):
    pgc = _pgc_modules()
    _, _, model, _, x = torch_side
    t = [3, 8]
    a, g = _torch_a_g(torch_side, layer, t)
    a64, g64 = a.astype(np.float64), g.astype(np.float64)
    xw = pgc["xgrad_cam"].XGradCAM.get_cam_weights(None, None, None, None, a64, g64)
    theirs = {
        "layercam": pgc["layer_cam"].LayerCAM.get_cam_image(None, None, None, None, a64, g64, False),
        "hirescam": pgc["hirescam"].HiResCAM.get_cam_image(None, None, None, None, a64, g64, False),
        "xgradcam": np.einsum("nkhw,nk->nhw", a64, xw),
        "eigencam": pgc["svd"].get_2d_projection_with_sign_correction(a64),
    }
    plain = pgc["eigen_cam"].EigenCAM.get_cam_image(None, None, None, None, a64, None, False)
    # pytorch-grad-cam's EigenCAM keeps LAPACK's sign: the same projection up to sign
    np.testing.assert_allclose(np.abs(plain), np.abs(theirs["eigencam"]), rtol=1e-5, atol=1e-5 * np.abs(plain).max())
    with jax.default_matmul_precision("highest"):
        for name, fn in VARIANTS.items():
            ours = np.asarray(fn(model, x, t, layer=layer, upsample=False), np.float64)
            ref = np.maximum(theirs[name], 0)  # BaseCAM's ReLU
            assert ref.max() > 0
            # PyTorch's oneDNN and XLA sum in other orders: ~1e-6 relative on A and g; XGrad-CAM's 1e-7 in the
            # activation sum is ≤ 1e-9 relative here; 1e-4 of the map's maximum
            err = np.abs(ours - ref).max() / ref.max()
            assert err < 1e-4, (name, layer, err)


def test_cli_explain_takes_the_variants(tmp_path):
    from jaxviz.cli import main
    from jaxviz.images import sample_image_path

    out = tmp_path / "out"
    rc = main(["explain", str(sample_image_path("chelsea")), "--method", "layercam,hirescam,xgrad-cam,eigencam",
               "--arch", "vgg_tiny", "--weights", "random:0", "-o", str(out), "--npy"])
    assert rc == 0
    for m in VARIANTS:
        assert np.load(out / f"chelsea_{m}.npy").shape == (32, 32)
