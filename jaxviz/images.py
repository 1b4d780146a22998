"""Image I/O and the VGG pre/post-processing used throughout jaxviz.

Everything here is numpy + PIL; jax is only touched when a jax Array is passed in (`preprocess_input`,
`undo_preprocess`), and matplotlib only when `overlay` is called.

Loading follows Keras (`keras.utils.load_img` + `img_to_array`) exactly for ordinary 8-bit RGB, grayscale,
palette and CMYK files, so jaxviz and Keras feed the same pixels to VGG. Where Keras gives a result a user
would not expect, `load_image` deliberately differs (each switchable back to Keras's behaviour):

- EXIF orientation: Keras ignores it, so phone photos come out sideways; jaxviz applies it
  (``exif_transpose=False`` for Keras parity).
- Transparency (RGBA, LA, palette with a transparent colour): Keras drops the alpha channel, so transparent
  pixels show whatever colour is stored under them (often black); jaxviz composites onto white
  (``background=None`` for Keras parity). Fully opaque images give identical pixels either way.
- 16-bit and 32-bit grayscale ("I;16", "I") and float ("F") images: Keras's PIL conversion clips values to
  0..255, so a 16-bit image comes out almost all white and a float image in [0, 1] all black; jaxviz scales
  them to 0..255 (see `load_image`). No switch: Keras's result is never what anyone wants.

16-bit RGB(A) PNGs are reduced to 8 bits by PIL itself when opened, for Keras and jaxviz alike.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from importlib import resources
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import preprocessing
from .atomic import atomic_open
from .errors import ImageError

__all__ = [
    "BGR_MEAN", "SAMPLE_IMAGES", "deprocess_image", "load_image", "overlay", "preprocess_input",
    "sample_image_path", "save_png", "undo_preprocess",
]

# Keras's interpolation names -> PIL filters (keras/src/utils/image_utils.py).
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}

#: Per-channel ImageNet means in BGR order, subtracted by Keras's "caffe" preprocessing (VGG16/VGG19).
BGR_MEAN = (103.939, 116.779, 123.68)
_BGR_MEAN_F32 = np.asarray(BGR_MEAN, dtype=np.float32)

#: Names accepted by `sample_image_path` (photos bundled in jaxviz/data, see PHOTOS.md there).
SAMPLE_IMAGES = ("chelsea", "coffee", "rocket")

_HIGH_DEPTH_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def load_image(
    path: str | os.PathLike,
    target_size: tuple[int, int] | None = (224, 224),
    interpolation: str = "nearest",
    *,
    exif_transpose: bool = True,
    background: tuple[int, int, int] | None = (255, 255, 255),
    channels: int = 3,
) -> np.ndarray:
    """Loads an image file as an RGB float32 array, as Keras's `load_img` + `img_to_array` do.

    Steps, in order: decode (first frame of multi-frame files), apply EXIF orientation, convert to 8-bit
    RGB, resize with PIL to `target_size` if the size differs. For 8-bit files without transparency and
    ``exif_transpose=False`` the result equals ``img_to_array(load_img(path, target_size=target_size,
    interpolation=interpolation))`` exactly. Colour conversion:

    - "L", "1", "P", "CMYK", "YCbCr", "RGB": PIL's ``convert("RGB")``, as Keras (CMYK is converted naively,
      without ICC profiles, as in Keras).
    - "I;16*" (16-bit grayscale): ``round(v / 257)``, the exact 16 -> 8-bit mapping.
    - "I" (32-bit integer) and "F" (float) grayscale: "F" images whose values all lie in [0, 1] are scaled by
      255; otherwise values up to 255 are kept and larger ranges are taken as 16-bit (divided by 257); the
      result is rounded and clipped to 0..255. Keras clips instead (see the module docstring).
    - Images with an alpha channel or a transparent palette colour: alpha-composited onto `background`
      (Keras drops alpha; pass ``background=None`` to do the same).

    Args:
      path: image file (JPEG, PNG, BMP, GIF, TIFF, WebP, ... anything PIL reads).
      target_size: ``(height, width)`` to resize to, or None to keep the file's size.
      interpolation: PIL filter used when resizing: "nearest" (Keras's default), "bilinear", "bicubic",
        "hamming", "box" or "lanczos".
      exif_transpose: rotate/flip by the EXIF orientation tag as image viewers do. Keras does not; pass
        False for exact Keras parity on photos that carry the tag.
      background: RGB colour, 0..255, under transparent pixels; None drops alpha as Keras does.
      channels: 3 for RGB; 1 for grayscale, as Keras's ``load_img(color_mode="grayscale")``: the RGB image
        converted by PIL's ``convert("L")`` (ITU-R 601-2 luma), for models trained on one-channel images.

    Returns:
      ``[H, W, channels]`` float32 array, RGB (or gray), values 0..255 (integers stored as floats).

    Raises:
      ImageError: the file is missing, a directory, unreadable, not an image, truncated or corrupt.
      ValueError: bad `target_size` or `interpolation`.
    """
    if interpolation not in _RESAMPLE:
        raise ValueError(f"unknown interpolation {interpolation!r}; use one of {', '.join(_RESAMPLE)}")
    if channels not in (1, 3):
        raise ImageError(f"images can be loaded with 1 (grayscale) or 3 (RGB) channels, not {channels}")
    size = _check_target_size(target_size)
    name = os.fspath(path)
    limit = _max_image_pixels()
    try:
        with _pixel_limit(limit), Image.open(name) as img:
            img.load()  # decode now, inside the try: truncated/corrupt data only fails here
            if exif_transpose:
                img = ImageOps.exif_transpose(img)
    except FileNotFoundError:
        raise ImageError(f"image file not found: {name!r}; check the path and spelling") from None
    except IsADirectoryError:
        raise ImageError(f"{name!r} is a directory, not an image file; pass the path of an image") from None
    except PermissionError:
        raise ImageError(f"permission denied reading image {name!r}; check the file's permissions") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{name!r} is not an image file PIL can read (corrupt or unsupported format); "
            "pass a JPEG, PNG, BMP, GIF, TIFF or WebP file"
        ) from None
    except Image.DecompressionBombError as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = f"{int(found.group(1)) / 1e6:,.0f} megapixels" if found else "too many pixels"
        raise ImageError(
            f"image {name!r} is too large ({pixels}; jaxviz reads up to {limit / 1e6:,.0f} megapixels): downscale "
            "it first (e.g. `convert in.png -resize 4096x4096 out.png`, or PIL's Image.thumbnail) or raise the "
            f"limit with the environment variable {MAX_PIXELS_ENV}=<pixels>"
        ) from None
    except Exception as e:  # any decoder failure past identification means damaged image data
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__  # PIL says "truncated" etc.
        raise ImageError(f"cannot decode image {name!r}: {detail}; re-download or re-export the file") from None
    try:
        img = _to_rgb(img, background)
    except ValueError as e:  # PIL has no conversion for exotic modes such as "LAB" or "HSV"
        raise ImageError(
            f"image {name!r} has colour mode {img.mode!r}, which cannot be converted to RGB ({e}); "
            "re-save it as an RGB PNG or JPEG"
        ) from None
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), _RESAMPLE[interpolation])  # PIL sizes are (width, height)
    if channels == 1:
        return np.array(img.convert("L"), dtype=np.float32)[..., None]
    return np.array(img, dtype=np.float32)


#: Environment variable that raises (or lowers) the largest image, in pixels, :func:`load_image` decodes.
MAX_PIXELS_ENV = "JAXVIZ_MAX_IMAGE_PIXELS"


def _max_image_pixels() -> int | None:
    """The pixel limit: ``$JAXVIZ_MAX_IMAGE_PIXELS``, else PIL's own (twice ``Image.MAX_IMAGE_PIXELS``; None if
    that is None: no limit)."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if text:
        try:
            value = int(float(text))
        except ValueError:
            value = 0
        if value < 1:
            raise ImageError(f"{MAX_PIXELS_ENV}={text!r} is not a positive number of pixels, e.g. 400000000")
        return value
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS


@contextlib.contextmanager
def _pixel_limit(limit: int | None):
    """PIL refuses images over ``2 * Image.MAX_IMAGE_PIXELS``; set that so the refusal comes at ``limit``."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None if limit is None else max(1, limit // 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # between 1x and 2x: read it
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _check_target_size(target_size):
    if target_size is None:
        return None
    try:
        h, w = (int(v) for v in target_size)
    except (TypeError, ValueError):
        raise ValueError(f"target_size must be (height, width) or None, got {target_size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"target_size must be positive, got {target_size!r}")
    return h, w


def _to_rgb(img: Image.Image, background) -> Image.Image:
    """Converts a decoded PIL image of any mode to 8-bit "RGB" (see `load_image` for the rules)."""
    if img.mode in _HIGH_DEPTH_GRAY:
        # PIL's own I/F -> RGB conversion clips to 0..255; rescale instead so the picture survives.
        v = np.asarray(img, dtype=np.float64)
        vmax = float(np.nanmax(v)) if v.size else 0.0
        if img.mode.startswith("I;16") or vmax > 255.0:
            v = v / 257.0
        elif img.mode == "F" and float(np.nanmin(v)) >= 0.0 and vmax <= 1.0:
            v = v * 255.0
        gray = np.clip(np.rint(np.nan_to_num(v)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if background is None:
        return img if img.mode == "RGB" else img.convert("RGB")  # Keras: alpha simply dropped
    if (img.mode == "P" and "transparency" in img.info) or img.mode in _ALPHA_MODES:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint32)
        a = rgba[..., 3:]
        bg = np.asarray(background, dtype=np.uint32).reshape(1, 1, 3)
        # Integer "over" compositing, rounded; alpha 255 reproduces the stored colour exactly.
        rgb = (rgba[..., :3] * a + bg * (255 - a) + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8))
    return img if img.mode == "RGB" else img.convert("RGB")


def _is_jax_array(x) -> bool:
    # jax is only imported by callers that already hold jax arrays; don't import it just to check.
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.Array)


def preprocess_input(x, mode: str = "caffe"):
    """Keras's preprocessing in ``mode`` (default "caffe", VGG16/VGG19's: RGB -> BGR, then subtract the BGR
    ImageNet means; "tf", "torch", "rescale", "none": :func:`jaxviz.preprocessing.preprocess`). A model's own
    mode is ``model.preprocess``, and ``model.preprocess_input(x)`` applies it.

    Same numbers as `keras.applications.vgg16.preprocess_input` (channels-last), but never modifies `x`
    (Keras edits float numpy input in place) and always returns float32.

    Args:
      x: ``[..., 3]`` RGB values 0..255 (e.g. ``[H, W, 3]`` or ``[N, H, W, 3]``), numpy or jax, any dtype.

    Returns:
      ``[..., 3]`` float32 BGR, mean-subtracted; a jax Array if `x` is one (works under jit), else numpy.
    """
    if mode != "caffe":
        return preprocessing.preprocess(x, mode)
    if _is_jax_array(x):
        x = jnp.asarray(x, jnp.float32)
        _check_channels(x.shape, "preprocess_input")
        return x[..., ::-1] - jnp.asarray(_BGR_MEAN_F32)
    x = np.asarray(x, dtype=np.float32)
    _check_channels(x.shape, "preprocess_input")
    return x[..., ::-1] - _BGR_MEAN_F32  # a new array: the input is untouched


def undo_preprocess(x, mode: str = "caffe"):
    """Inverse of `preprocess_input` in ``mode`` (default "caffe": adds the BGR means back and flips BGR -> RGB).

    Use it to show model-space images (e.g. a gradient-ascent result) in their true colours; the result is
    not clipped, so apply ``np.clip(x, 0, 255).astype(np.uint8)`` before saving.

    Args:
      x: ``[..., 3]`` float BGR, mean-subtracted (model space), numpy or jax.

    Returns:
      ``[..., 3]`` float32 RGB, nominally 0..255; a jax Array if `x` is one, else numpy.
    """
    if mode != "caffe":
        return preprocessing.unpreprocess(x, mode)
    if _is_jax_array(x):
        x = jnp.asarray(x, jnp.float32)
        _check_channels(x.shape, "undo_preprocess")
        return (x + jnp.asarray(_BGR_MEAN_F32))[..., ::-1]
    x = np.asarray(x, dtype=np.float32)
    _check_channels(x.shape, "undo_preprocess")
    return (x + _BGR_MEAN_F32)[..., ::-1]


def _check_channels(shape, fn):
    if len(shape) < 1 or shape[-1] != 3:
        raise ValueError(f"{fn} expects channels-last images [..., 3], got shape {tuple(shape)}")


def deprocess_image(x, bgr_to_rgb: bool = False) -> np.ndarray:
    """Turns an arbitrary float image into a displayable uint8 one (Chollet, DLwP 1st ed., listing 5.37).

    Normalises to mean 0.5 and standard deviation 0.1, clips to [0, 1] and scales to 0..255 -- the contrast
    stretch the book applies to filter visualisations. A batch is processed image by image.

    Args:
      x: ``[H, W, 3]`` or ``[N, H, W, 3]`` float image(s), numpy or jax; not modified.
      bgr_to_rgb: flip the channel axis first; model-space images (after `preprocess_input`) are BGR.

    Returns:
      uint8 numpy array, same shape as `x`.
    """
    x = np.array(x, dtype=np.float32)  # a copy: the steps below are in place, as in the book
    if x.ndim not in (3, 4):
        raise ValueError(f"deprocess_image expects [H, W, C] or [N, H, W, C], got shape {x.shape}")
    if bgr_to_rgb:
        x = np.ascontiguousarray(x[..., ::-1])
    if x.ndim == 4:
        return np.stack([_deprocess_one(im) for im in x]) if len(x) else x.astype(np.uint8)
    return _deprocess_one(x)


def _deprocess_one(x: np.ndarray) -> np.ndarray:
    # Listing 5.37, step for step.
    x -= x.mean()
    x /= x.std() + 1e-5
    x *= 0.1
    x += 0.5
    x = np.clip(x, 0, 1)
    x *= 255
    return np.clip(x, 0, 255).astype("uint8")


def overlay(image, heatmap, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """Superimposes a class-activation heatmap on an image (DLwP 1st ed., listing 5.44).

    The heatmap is resized to the image with PIL's bilinear filter, coloured with a matplotlib colormap and
    added: ``image + alpha * colour(heatmap)``, rounded and clipped to 0..255.

    Args:
      image: ``[H, W, 3]`` RGB (or ``[H, W, 1]`` / ``[H, W]`` gray, drawn as gray), uint8 or float 0..255.
      heatmap: ``[h, w]`` values in [0, 1] (values outside are clipped, NaN counts as 0).
      alpha: weight of the coloured heatmap; the book uses 0.4.
      cmap: matplotlib colormap name.

    Returns:
      ``[H, W, 3]`` uint8 RGB.
    """
    from matplotlib import colormaps  # imported here: matplotlib is slow to import and only needed here

    img = np.asarray(image, dtype=np.float32)
    heat = np.asarray(heatmap, dtype=np.float32)
    if img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 1):
        img = np.repeat(img.reshape(*img.shape[:2], 1), 3, axis=-1)  # a grayscale model's input
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"overlay expects an RGB image [H, W, 3], got shape {img.shape}")
    if heat.ndim != 2:
        raise ValueError(f"overlay expects a 2-D heatmap [h, w], got shape {heat.shape}")
    try:
        colour_map = colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}; use a matplotlib name such as 'jet' or 'viridis'") from None
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    h, w = img.shape[:2]
    if heat.shape != (h, w):
        heat = np.asarray(Image.fromarray(heat).resize((w, h), Image.Resampling.BILINEAR))
    colour = colour_map(np.clip(heat, 0.0, 1.0))[..., :3].astype(np.float32) * 255.0
    return np.clip(np.rint(colour * alpha + img), 0, 255).astype(np.uint8)


def save_png(path: str | os.PathLike, array) -> Path:
    """Writes a uint8 image as PNG atomically (temp file in the same folder, then `os.replace`).

    A reader never sees a half-written file, and an interrupted run leaves any previous file intact.
    Missing parent folders are created.

    Args:
      path: destination file.
      array: ``[H, W, 3]`` (RGB) or ``[H, W]`` / ``[H, W, 1]`` (grayscale) uint8.

    Returns:
      The destination as a `pathlib.Path`.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise ValueError(
            f"save_png expects uint8 [H, W, 3] or [H, W], got {arr.dtype} {arr.shape}; "
            "convert with deprocess_image or np.clip(x, 0, 255).astype(np.uint8)"
        )
    with atomic_open(path) as f:
        Image.fromarray(np.ascontiguousarray(arr)).save(f, format="PNG")
    return Path(path)


def sample_image_path(name: str = "chelsea") -> Path:
    """Path of a photo bundled with jaxviz (public domain / CC0, from scikit-image; see data/PHOTOS.md).

    Args:
      name: one of `SAMPLE_IMAGES`: "chelsea" (a tabby cat), "coffee" (a cup of coffee), "rocket" (a
        Falcon 9 launch).

    Returns:
      Path to the JPEG file inside the installed package.
    """
    if name not in SAMPLE_IMAGES:
        raise ImageError(f"no sample image named {name!r}; available: {', '.join(SAMPLE_IMAGES)}")
    return Path(str(resources.files("jaxviz").joinpath("data", f"{name}.jpg")))
