"""Tests for jaxviz.images: Keras parity of loading and preprocessing, odd file types, errors, helpers."""

import os

os.environ["KERAS_BACKEND"] = "jax"  # before any keras import: this project has no TensorFlow

import numpy as np
import pytest
from PIL import Image

from jaxviz import images
from jaxviz.errors import ImageError, JaxvizError

rng = np.random.default_rng(0)


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def keras_load(keras, path, **kw):
    return keras.utils.img_to_array(keras.utils.load_img(path, **kw))


def save(tmp_path, name, img, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


# --- load_image: Keras parity -------------------------------------------------------------------


@pytest.mark.parametrize(
    "target_size, interpolation",
    [((224, 224), "nearest"), ((224, 224), "bilinear"), (None, "nearest")],
)
def test_load_image_equals_keras_on_sample_photo(keras, target_size, interpolation):
    path = images.sample_image_path("chelsea")
    got = images.load_image(path, target_size=target_size, interpolation=interpolation)
    want = keras_load(keras, path, target_size=target_size, interpolation=interpolation)
    assert got.dtype == np.float32 and want.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # exact: same decoder, same PIL filter


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "hamming", "box", "lanczos"])
def test_every_interpolation_equals_keras(keras, tmp_path, interpolation):
    path = save(tmp_path, "rgb.png", Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)))
    got = images.load_image(path, (20, 30), interpolation)
    np.testing.assert_array_equal(got, keras_load(keras, path, target_size=(20, 30), interpolation=interpolation))


def test_target_size_is_height_width(tmp_path):
    path = save(tmp_path, "rgb.png", Image.new("RGB", (50, 40)))
    assert images.load_image(path, (10, 30)).shape == (10, 30, 3)


@pytest.mark.parametrize("name", images.SAMPLE_IMAGES)
def test_sample_photos_load(name):
    path = images.sample_image_path(name)
    assert path.is_file() and path.stat().st_size < 200_000
    assert images.load_image(path).shape == (224, 224, 3)


def test_sample_image_unknown_name_lists_names():
    with pytest.raises(ImageError, match="chelsea, coffee, rocket"):
        images.sample_image_path("lena")


# --- load_image: modes and files Keras handles differently ---------------------------------------------


def test_grayscale_gives_equal_channels(keras, tmp_path):
    gray = rng.integers(0, 256, (12, 9), dtype=np.uint8)
    path = save(tmp_path, "gray.png", Image.fromarray(gray))
    got = images.load_image(path, None)
    assert got.shape == (12, 9, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.repeat(gray[..., None], 3, -1).astype(np.float32))
    np.testing.assert_array_equal(got, keras_load(keras, path))


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    g16 = np.array([[0, 257, 32896], [65535, 1000, 128]], dtype=np.uint16)
    path = save(tmp_path, "g16.png", Image.fromarray(g16))
    assert Image.open(path).mode == "I;16"
    got = images.load_image(path, None)
    np.testing.assert_array_equal(got[..., 0], np.rint(g16 / 257.0))  # Keras would clip to 255
    assert np.all(got[..., 0] == got[..., 2])


def test_32bit_int_and_float_grayscale(tmp_path):
    ints = np.array([[0, 65535], [257, 514]], dtype=np.int32)
    got = images.load_image(save(tmp_path, "i.tif", Image.fromarray(ints)), None)
    np.testing.assert_array_equal(got[..., 1], [[0, 255], [1, 2]])
    floats = np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32)
    got = images.load_image(save(tmp_path, "f.tif", Image.fromarray(floats)), None)
    np.testing.assert_array_equal(got[..., 1], np.rint(floats * 255))  # Keras: all black


def test_rgba_composited_on_white_or_dropped_like_keras(keras, tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 0  # top half transparent
    rgba[2:, :, 3] = 255
    path = save(tmp_path, "rgba.png", Image.fromarray(rgba))
    got = images.load_image(path, None)
    np.testing.assert_array_equal(got[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(got[3, 3], [200, 0, 0])
    np.testing.assert_array_equal(images.load_image(path, None, background=None), keras_load(keras, path))


def test_half_transparent_la(tmp_path):
    la = np.stack([np.full((3, 3), 100, np.uint8), np.full((3, 3), 128, np.uint8)], -1)
    got = images.load_image(save(tmp_path, "la.png", Image.fromarray(la, "LA")), None, background=(0, 0, 0))
    np.testing.assert_array_equal(got[1, 1], [50, 50, 50])  # round(100 * 128 / 255)


def test_palette_with_and_without_transparency(keras, tmp_path):
    pal = Image.new("P", (6, 5))
    pal.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    plain = save(tmp_path, "p.png", pal)
    np.testing.assert_array_equal(images.load_image(plain, None), keras_load(keras, plain))
    pal.info["transparency"] = 0
    trans = save(tmp_path, "pt.png", pal, transparency=0)
    got = images.load_image(trans, None)
    np.testing.assert_array_equal(got[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(got[1, 1], [200, 100, 0])


def test_cmyk_equals_keras(keras, tmp_path):
    path = save(tmp_path, "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)))
    got = images.load_image(path, None)
    np.testing.assert_array_equal(got, keras_load(keras, path))
    assert got[0, 0, 0] > 200 and got[0, 0, 1] < 50  # red


def test_exif_orientation_applied_unless_disabled(keras, tmp_path):
    stored = rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = save(tmp_path, "rot.png", Image.fromarray(stored), exif=exif)
    got = images.load_image(path, None)
    assert got.shape == (40, 20, 3)
    np.testing.assert_array_equal(got, np.rot90(stored, k=-1))
    raw = images.load_image(path, None, exif_transpose=False)
    np.testing.assert_array_equal(raw, keras_load(keras, path))  # Keras ignores EXIF orientation
    assert raw.shape == (20, 40, 3)


# --- load_image: errors ----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="not found") as e:
        images.load_image(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, JaxvizError)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture")
    with pytest.raises(ImageError, match="not an image") as e:
        images.load_image(path)
    assert str(path) in str(e.value)


def test_truncated_image(tmp_path):
    data = images.sample_image_path("chelsea").read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated") as e:
        images.load_image(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="directory"):
        images.load_image(tmp_path)


def test_bad_arguments(tmp_path):
    path = images.sample_image_path()
    with pytest.raises(ValueError, match="bilinear"):
        images.load_image(path, interpolation="cubic")
    with pytest.raises(ValueError, match="target_size"):
        images.load_image(path, target_size=224)


# --- preprocess_input / undo_preprocess ------------------------------------------------------------------


def test_preprocess_input_numpy_equals_keras(keras):
    from keras.applications import vgg16

    x = rng.uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
    before = x.copy()
    got = images.preprocess_input(x)
    want = vgg16.preprocess_input(x.copy())  # Keras edits float numpy input in place
    np.testing.assert_array_equal(x, before)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)  # float32 arithmetic on both sides
    np.testing.assert_allclose(images.preprocess_input(x.astype(np.uint8)),
                               vgg16.preprocess_input(x.astype(np.uint8)), atol=1e-6, rtol=0)


def test_preprocess_input_jax_equals_keras(keras):
    import jax
    import jax.numpy as jnp
    from keras.applications import vgg16

    x = jnp.asarray(rng.uniform(0, 255, (5, 7, 3)), jnp.float32)
    got = images.preprocess_input(x)
    assert isinstance(got, jax.Array) and got.dtype == jnp.float32
    # Keras's tensor path adds -mean where we subtract mean: the same float32 operation.
    np.testing.assert_allclose(np.asarray(got), np.asarray(vgg16.preprocess_input(x)), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(jax.jit(images.preprocess_input)(x)), np.asarray(got), atol=1e-6)


def test_preprocess_input_values_and_inverse():
    rgb = np.array([[[10.0, 20.0, 30.0]]], np.float32)
    np.testing.assert_allclose(images.preprocess_input(rgb)[0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68],
                               rtol=1e-6)
    x = rng.uniform(0, 255, (3, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(images.undo_preprocess(images.preprocess_input(x)), x, atol=1e-4)
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        images.preprocess_input(np.zeros((4, 4)))


# --- deprocess_image ---------------------------------------------------------------------------------


def listing_5_37(x):
    """Chollet, DLwP 1st ed., listing 5.37, verbatim."""
    x -= x.mean()
    x /= (x.std() + 1e-5)
    x *= 0.1
    x += 0.5
    x = np.clip(x, 0, 1)
    x *= 255
    x = np.clip(x, 0, 255).astype('uint8')
    return x


def test_deprocess_image_is_listing_5_37():
    x = rng.normal(3.0, 40.0, (16, 12, 3)).astype(np.float32)
    before = x.copy()
    got = images.deprocess_image(x)
    np.testing.assert_array_equal(x, before)
    assert got.dtype == np.uint8 and got.shape == x.shape
    np.testing.assert_array_equal(got, listing_5_37(x.copy()))


def test_deprocess_image_batch_is_per_image_and_bgr_flip():
    scales = np.array([1, 10, 100], np.float32).reshape(3, 1, 1, 1)  # very different per-image statistics
    xs = rng.normal(0.0, 1.0, (3, 8, 8, 3)).astype(np.float32) * scales
    got = images.deprocess_image(xs)
    np.testing.assert_array_equal(got, np.stack([listing_5_37(x.copy()) for x in xs]))
    np.testing.assert_array_equal(images.deprocess_image(xs, bgr_to_rgb=True), got[..., ::-1])


# --- overlay / save_png ------------------------------------------------------------------------------------


def test_overlay_shape_dtype_and_blend():
    img = rng.integers(0, 200, (30, 40, 3), dtype=np.uint8)
    heat = rng.uniform(0, 1, (7, 7)).astype(np.float32)
    out = images.overlay(img, heat)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(images.overlay(img, heat, alpha=0.0), img)
    # A zero heatmap adds jet's lowest colour, dark blue (0, 0, 0.5) * 255, times alpha: +51 blue.
    zero = images.overlay(img.astype(np.float32), np.zeros((3, 3)), alpha=0.4)
    np.testing.assert_array_equal(zero.astype(int) - img, np.broadcast_to([0, 0, 51], img.shape))
    assert np.all(images.overlay(np.full((4, 4, 3), 250, np.uint8), np.ones((2, 2))) <= 255)


def test_save_png_roundtrip_and_atomic(tmp_path):
    rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    dest = images.save_png(tmp_path / "sub" / "out.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(dest)), rgb)
    gray = rgb[..., 0]
    images.save_png(dest, gray)  # replaces the existing file
    np.testing.assert_array_equal(np.asarray(Image.open(dest)), gray)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.png"]  # no temp file left behind
    with pytest.raises(ValueError, match="uint8"):
        images.save_png(tmp_path / "f.png", rgb.astype(np.float32))


def test_images_module_does_not_import_skimage():
    import subprocess
    import sys

    code = "import sys, jaxviz.images; assert 'skimage' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
