"""Winograd F(4×4, 3×3) convolutions: the CPU fast default for deep layers, never used in parity mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz import conv_ops, ops, winograd
from jaxviz.frontends import vgg


def _direct(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _relative(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("shape", [(2, 16, 16, 8, 5), (1, 15, 13, 4, 6), (1, 4, 4, 3, 2), (3, 9, 21, 2, 7)])
def test_conv_equals_direct_conv(shape):
    n, h, w, cin, cout = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, h, w, cin)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, cin, cout)), jnp.float32)
    with jax.default_matmul_precision("highest"):
        ref = _direct(x, k)
    got = jax.jit(winograd.conv)(x, winograd.transform_kernel(k))
    assert got.shape == ref.shape
    assert _relative(got, ref) < 1e-5


def _big_conv_inputs():
    rng = np.random.default_rng(1)
    x = jnp.asarray(np.maximum(rng.normal(size=(3, 16, 16, 128)), 0), jnp.float32)  # 48 tiles: Winograd applies
    k = jnp.asarray(rng.normal(size=(3, 3, 128, 128)) * np.sqrt(2 / (9 * 128)), jnp.float32)
    flipped = ops.flipped_kernels({"c": {"kernel": k, "bias": jnp.zeros(128)}}, transforms=True)["c"]
    return x, k, flipped


def test_conv3x3_picks_winograd_by_default_and_direct_when_pinned():
    x, k, fl = _big_conv_inputs()
    fn = jax.jit(lambda x: ops.conv3x3(x, k, fl["kernel"], (fl["winograd"], fl["winograd_t"])))
    fast_hlo = fn.lower(x).compile().as_text()
    with jax.default_matmul_precision("highest"):
        exact_hlo = fn.lower(x).compile().as_text()
        exact = fn(x)
        assert np.array_equal(np.asarray(exact), np.asarray(_direct(x, k)))
    assert " convolution(" not in fast_hlo and " convolution(" in exact_hlo
    assert _relative(fn(x), exact) < 1e-5


def test_winograd_input_gradient_matches_direct():
    x, k, fl = _big_conv_inputs()
    g = jnp.asarray(np.random.default_rng(2).normal(size=x.shape), jnp.float32)

    def vjp(conv):  # jitted: op-by-op dispatch would compile each tile transform on its own
        return jax.jit(lambda x, k, g: jax.vjp(conv, x, k)[1](g))(x, k, g)

    dx, dk = vjp(lambda x, k: ops.conv3x3(x, k, fl["kernel"], (fl["winograd"], fl["winograd_t"])))
    with jax.default_matmul_precision("highest"):
        dx_ref, dk_ref = vjp(_direct)
    # Winograd's rounding: ~1e-5 of the largest value (1.4e-5 at the worst of these 3 images' 98,304 values).
    assert _relative(dx, dx_ref) < 2e-5
    assert _relative(dk, dk_ref) < 2e-5


def test_only_wide_layers_get_transforms():
    model = jaxviz.load("vgg16", "random:0", include_top=False)
    fl = jax.eval_shape(lambda p: ops.flipped_kernels(p, transforms=True), model.params)
    with_transforms = sorted(n for n, e in fl.items() if "winograd" in e)
    # 64 → 64 stays direct; 64 → 128 (block2_conv1) and everything wider is transformed.
    assert "block1_conv1" not in with_transforms and "block1_conv2" not in with_transforms
    assert with_transforms[0] == "block2_conv1" and len(with_transforms) == 11
    assert fl["block2_conv1"]["winograd_t"].shape == (36, 128, 64)
    assert fl["block3_conv1"]["winograd"].shape == (36, 128, 256)
    assert fl["block3_conv1"]["winograd_t"].shape == (36, 256, 128)
    assert not any("winograd" in e for e in ops.flipped_kernels(model.params, transforms=False).values())
    assert winograd.applies((1, 14, 14, 512), 512) and not winograd.applies((1, 8, 8, 512), 512)
    # Few tiles: only the wide layers (VGG's block5 at batch 1), not ResNet50's 14² × 256 ones until 3 images.
    assert not winograd.applies((1, 14, 14, 256), 256) and not winograd.applies((2, 14, 14, 256), 256)
    assert winograd.applies((3, 14, 14, 256), 256) and winograd.applies((1, 28, 28, 128), 128)
    with jax.default_matmul_precision("float32"):
        assert not winograd.applies((1, 64, 64, 512))


def test_attribution_fast_default_close_to_parity_mode():
    # A VGG with 128-channel blocks, so that block2 (16×16, 4 images: 64 tiles) runs as Winograd convolutions.
    arch = vgg.Arch("wino_test", (1, 2), (8, 128), (16,), 5, 32)
    vgg.register_arch(arch)
    model = jaxviz.load("wino_test", "random:3")
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 32, 32, 3)) * 50, jnp.float32)
    assert winograd.applies((4, 16, 16, 128), 128)
    fast = jaxviz.saliency(model, x, target=[1, 2, 3, 4])
    with jax.default_matmul_precision("highest"):
        exact = jaxviz.saliency(model, x, target=[1, 2, 3, 4])
    assert _relative(fast, exact) < 1e-4
    assert any("winograd" in e for e in model.prepared().values())


@pytest.mark.parametrize("shape, budget", [
    ((3, 37, 23, 64, 128), 2**16),   # bands of tile rows of one image (several per image, uneven edge)
    ((6, 14, 15, 128, 64), 2**19),   # groups of whole images
    ((2, 9, 30, 64, 128), 1),        # the smallest strip: one tile row
])
def test_strips_equal_whole_image(shape, budget):
    n, h, w, cin, cout = shape
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(n, h, w, cin)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) * 0.1, jnp.float32)
    u = winograd.transform_kernel(k)
    images, rows = winograd.strips(n, -(-h // 4), -(-w // 4), cin, cout, budget)
    assert (images, rows) != (n, -(-h // 4))  # really split
    conv = jax.jit(winograd.conv, static_argnames="budget")  # one program, not one per op
    whole = conv(x, u, budget=2**40)
    scale = float(jnp.abs(whole).max())
    np.testing.assert_allclose(conv(x, u, budget=budget), whole, rtol=0, atol=1e-5 * scale)
    ref = conv_ops._conv(x, k)
    assert float(jnp.abs(whole - ref).max() / jnp.abs(ref).max()) < 3e-5


def test_strip_plan():
    mb = 2**20
    # VGG16 block2_conv2 at 224 px, batch 1: 28 MB of transformed tiles ≤ 3 × 16 MB: whole.
    assert winograd.strips(1, 28, 28, 128, 128, 16 * mb) == (1, 28)
    # 8 images of 56 px, 128 channels: 7.2 MB each, 58 MB in all → 2 images per strip.
    assert winograd.strips(8, 14, 14, 128, 128, 16 * mb) == (2, 14)
    # 16 images of 16 px, 256 channels (1.1 MB each) with a 4 MB budget: 3 fit → 2 (a divisor of 16).
    assert winograd.strips(16, 4, 4, 256, 256, 4 * mb) == (2, 4)
    # One 224 px image, 64 → 128 channels: 1.55 MB per tile row, 87 MB in all → 6 bands of ≤ 10 rows.
    assert winograd.strips(1, 56, 56, 64, 128, 16 * mb) == (1, 10)


@pytest.mark.parametrize("cin", [3, 4])
def test_few_channel_input_gradient_equals_conv_gradient(cin):
    rng = np.random.default_rng(cin)
    x = jnp.asarray(rng.normal(size=(2, 19, 12, cin)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, cin, 16)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, 19, 12, 16)), jnp.float32)
    ref = jax.vjp(lambda x: conv_ops._conv(x, k), x)[1](g)[0]
    fast = conv_ops._input_grad_few_channels(g, k)
    assert float(jnp.abs(fast - ref).max() / jnp.abs(ref).max()) < 1e-6

    def grad_hlo():
        fn = jax.jit(lambda x, k, g: jax.vjp(lambda x: ops.conv3x3(x, k), x)[1](g)[0])
        return fn.lower(x, k, g).compile().as_text(), fn(x, k, g)

    text, dx = grad_hlo()  # fast default: forward conv only, the input gradient is a matmul
    assert text.count("convolution(") == 0 and jnp.abs(dx - ref).max() <= 1e-6 * jnp.abs(ref).max()
    with jax.default_matmul_precision("highest"):  # exact mode: the conv (bit-identical to autodiff's)
        text, dx = grad_hlo()
    assert text.count("convolution(") == 1
    np.testing.assert_array_equal(dx, ref)


@pytest.mark.parametrize("ynn_off", [True, False])
def test_both_transform_forms_equal_direct_conv(monkeypatch, ynn_off):
    # The tile transforms are broadcast sums with jaxviz's XLA flag, unrolled sums under JAX's defaults.
    from jaxviz import xla_cpu

    monkeypatch.setattr(xla_cpu, "ynn_disabled", lambda: ynn_off)
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.normal(size=(2, 18, 13, 64)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 64, 128)) * 0.1, jnp.float32)
    ref = conv_ops._conv(x, k)
    y = jax.jit(lambda x, u: winograd.conv(x, u))(x, winograd.transform_kernel(k))  # traced anew, patched flag
    assert float(jnp.abs(y - ref).max() / jnp.abs(ref).max()) < 3e-5


def test_dense_input_gradient_uses_transposed_kernel():
    # ops.dense with the precomputed transpose: same values and gradients as x @ kernel; the fast default's
    # program multiplies by kernel_t, the exact mode's is autodiff's.
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(3, 40)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(40, 24)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(3, 24)), jnp.float32)

    def grads(x, k, kt):
        y, vjp = jax.vjp(lambda x, k: ops.dense(x, k, kt), x, k)
        return (y, *vjp(g))

    ref = jax.vjp(lambda x, k: x @ k, x, k)
    for got, want in zip(jax.jit(grads)(x, k, k.T), (ref[0], *ref[1](g))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # One row: both directions are matrix-vector products over contiguous rows (kernel_t @ x, kernel @ g).
    x1, g = x[:1], g[:1]
    ref = jax.vjp(lambda x, k: x @ k, x1, k)
    for got, want in zip(jax.jit(grads)(x1, k, k.T), (ref[0], *ref[1](g))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    forward = jax.jit(ops.dense).lower(x1, k, k.T).as_text()
    backward = jax.jit(lambda x, k, kt: jax.vjp(lambda x: ops.dense(x, k, kt), x)[1](g)[0]).lower(x1, k, k.T).as_text()
    assert "(tensor<24x40xf32>, tensor<40xf32>)" in forward and "(tensor<40x24xf32>, tensor<24xf32>)" in backward
    model = jaxviz.load("vgg_tiny", "random:0")
    fl = ops.flipped_kernels(model.params, transforms=True)
    np.testing.assert_array_equal(fl["fc1"]["kernel"], model.params["fc1"]["kernel"].T)
    assert "fc1" not in ops.flipped_kernels(model.params, transforms=False)
    xs = jnp.asarray(rng.normal(size=(2, 32, 32, 3)) * 50, jnp.float32)
    fast = jaxviz.saliency(model, xs, target=[1, 2], reduce=None)
    with jax.default_matmul_precision("highest"):
        exact = jaxviz.saliency(model, xs, target=[1, 2], reduce=None)
    assert float(jnp.abs(fast - exact).max() / jnp.abs(exact).max()) < 1e-5
