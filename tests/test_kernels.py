"""Kernels (normalisation, grid layout, colour patches) and feature-map grids (one pass, files)."""

import numpy as np
import pytest

import jaxviz
from jaxviz.model import Model
from jaxviz.visualize import activations as A
from jaxviz.visualize.kernels import kernel_colour_patches, kernel_grid, kernels, save_kernel_figures


def test_kernels_min_max_over_the_whole_layer(tiny_no_top):
    raw = np.asarray(tiny_no_top.params["block2_conv1"]["kernel"], np.float64)
    k = kernels(tiny_no_top, "block2_conv1")
    assert k.shape == (3, 3, 4, 6) and k.dtype == np.float32
    assert k.min() == 0 and k.max() == 1  # the layer's extremes, exactly
    np.testing.assert_allclose(k, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-7)
    # one scale for the layer: a filter with smaller weights stays darker-contrast (no per-filter rescale)
    per_filter_max = k.reshape(-1, 6).max(axis=0)
    assert per_filter_max.min() < 1


def test_constant_kernel_is_flat_gray():
    params = jaxviz.frontends.vgg.random_params("vgg_tiny", False)
    params["block1_conv1"]["kernel"][:] = 0
    k = kernels(Model("vgg_tiny", params, False), "block1_conv1")
    assert not np.isnan(k).any() and np.all(k == 0.5)


def test_kernel_grid_layout(tiny_no_top):
    k = kernels(tiny_no_top, "block2_conv1")  # [3, 3, C_in=4, C_out=6]
    g = kernel_grid(k, scale=2, margin=1)
    # a row per filter (6), a column per input channel (4); cells 3·2 px with 1 px margins
    assert g.shape == (6 * 6 + 5, 4 * 6 + 3) and g.dtype == np.uint8
    f, c = 4, 2  # the cell of filter 4, channel 2 is that 3×3 slice, upscaled
    cell = g[f * 7: f * 7 + 6, c * 7: c * 7 + 6]
    np.testing.assert_array_equal(cell[::2, ::2], np.rint(k[:, :, c, f] * 255).astype(np.uint8))
    assert kernel_grid(k, filters=2, channels=3, scale=1, margin=0).shape == (6, 9)
    assert kernel_grid(k, filters=100, channels=100, scale=1, margin=0).shape == (18, 12)  # capped


def test_colour_patches_flip_bgr_to_rgb(tiny_no_top):
    k = kernels(tiny_no_top, "block1_conv1")  # [3, 3, 3, 4]
    p = kernel_colour_patches(k, cols=2, scale=1, margin=0)
    assert p.shape == (6, 6, 3)
    np.testing.assert_array_equal(p[:3, 3:6], np.rint(k[:, :, ::-1, 1] * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="first-layer"):
        kernel_colour_patches(kernels(tiny_no_top, "block2_conv1"))


def test_save_kernel_figures_and_bad_layers(tiny_no_top, tmp_path):
    paths = save_kernel_figures(tiny_no_top, "block1_conv1", tmp_path, npy=True)
    assert sorted(p.name for p in paths) == ["kernels_block1_conv1.npy", "kernels_block1_conv1.png",
                                             "kernels_block1_conv1_rgb.png"]
    assert [p.name for p in save_kernel_figures(tiny_no_top, "block3_conv2", tmp_path)] == ["kernels_block3_conv2.png"]
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    with pytest.raises(jaxviz.LayerError, match="choose a conv layer: block1_conv1"):
        kernels(tiny_no_top, "block1_pool")
    with pytest.raises(jaxviz.LayerError, match="valid layers"):
        kernels(tiny_no_top, "block9_conv1")


def test_block_end_layers(tiny_no_top):
    assert A.block_end_layers(tiny_no_top) == ["block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3",
                                        "block5_conv3"]
    table = jaxviz.layer_table("vgg19", include_top=False)

    class Names:  # block_end_layers only needs the graph (None: a chain) and conv_layer_names
        graph = None
        conv_layer_names = [r.name for r in table if r.kind == "Conv2D"]

    assert A.block_end_layers(Names())[2:] == ["block3_conv4", "block4_conv4", "block5_conv4"]
    assert A.block_ends is A.block_end_layers


def test_save_activation_grids_one_pass(tiny_no_top, tmp_path, monkeypatch):
    calls = []
    real = tiny_no_top.features
    monkeypatch.setattr(tiny_no_top, "features", lambda x, layers: calls.append(layers) or real(x, layers))
    x = np.random.default_rng(0).normal(0, 30, (1, 48, 48, 3)).astype(np.float32)
    layers = ["block1_conv1", *A.block_end_layers(tiny_no_top)]
    paths = A.save_activation_grids(tiny_no_top, x, layers, tmp_path, count=5, npy=True)
    assert len(calls) == 1  # ONE forward pass for all the layers
    names = sorted(p.name for p in paths)
    assert names == sorted([f"{n}.png" for n in layers] + [f"{n}.npy" for n in layers])
    a = np.load(tmp_path / "block3_conv3.npy")
    assert a.shape == (1, 12, 12, 8)
    np.testing.assert_allclose(a, np.asarray(real(x, "block3_conv3")["block3_conv3"]), rtol=1e-6)
    from PIL import Image

    g = np.asarray(Image.open(tmp_path / "block1_conv1.png"))
    assert g.shape == (48, 4 * 48 + 3, 3)  # all 4 maps (of the 5 asked) in one row, 1 px margins
    g5 = np.asarray(Image.open(tmp_path / "block5_conv3.png"))
    assert g5.shape[0] >= 32  # 3×3 maps are upscaled to stay visible


def test_activation_grids_batch_and_bad_layer(tiny_no_top, tmp_path):
    x = np.random.default_rng(0).normal(0, 30, (2, 32, 32, 3)).astype(np.float32)
    paths = A.save_activation_grids(tiny_no_top, x, "block2_pool", tmp_path, count=64)
    assert sorted(p.name for p in paths) == ["block2_pool_0.png", "block2_pool_1.png"]
    with pytest.raises(jaxviz.LayerError, match="valid layers"):
        A.save_activation_grids(tiny_no_top, x, ["block2_conv9"], tmp_path)
