"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import model as model_lib
from ..atomic import save_npy, write_bytes  # noqa: F401  (save_npy: for the commands)
from ..errors import JaxvizError, printable
from ..figures import unique_stems  # noqa: F401  (for the commands)
from ..frontends.flax_factory import is_factory_spec, load_factory
from ..images import load_image, preprocess_input
from ..preprocessing import MODES
from ..runtime import CompileNotice, chunk_progress  # noqa: F401  (CompileNotice: for the commands)


def add_model_args(p: argparse.ArgumentParser, default_arch: str = "vgg16", top: bool = True) -> None:
    p.add_argument("--arch", default=default_arch,
                   help="vgg16 | vgg19 | vgg_demo | vgg_demo_gap (the shipped demo models), or your own model file: "
                        "a Keras .keras or .h5 (model.save), an ONNX .onnx or a converted .npz, or "
                        "package.module:factory (a function returning a Flax NNX module or a linen (module, "
                        "variables)) (default: %(default)s)")
    p.add_argument("--input-size", type=positive_int, default=None,
                   help="input side in pixels of a package.module:factory model (default 224)")
    p.add_argument("--preprocess", choices=MODES, default=None,
                   help="how images are prepared for the model (Keras's modes; rescale = x / 255, for models "
                        "trained on [0, 1] pixels without a Rescaling layer of their own); default: the model's "
                        "own (caffe for VGG; for a file, its Keras application's mode, else none: pixels 0..255 as "
                        "they are)")
    p.add_argument("--weights", default=None, type=weights_spec,
                   help='"imagenet" (the default: Keras files, cache, then download; the demo models: their shipped '
                        'weights), a .h5/.npz path, or random:SEED; for a model file: its own weights, or '
                        'random:SEED to re-initialise its graph')
    if not top:
        p.add_argument("--no-top", action="store_true", help="load the model without its classifier")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse reports anything else as one line)."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {v}")
    return v


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0 <= v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def weights_spec(text: str) -> str:
    """argparse type for ``--weights``: ``random:SEED`` needs a whole number SEED >= 0; other text is a name or
    a path, checked when the model loads."""
    if text.startswith("random:"):
        seed = text.split(":", 1)[1]
        if not seed.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{text!r}: use random:SEED with a whole number SEED >= 0, e.g. random:0")
    return text


def model_from_args(args, include_top: bool | None = None):
    if include_top is None:
        include_top = not getattr(args, "no_top", False)
    if is_factory_spec(args.arch):
        if args.weights is not None:
            raise JaxvizError(f"--weights {args.weights}: {args.arch} makes its own weights; drop --weights")
        return load_factory(args.arch, getattr(args, "input_size", None), getattr(args, "preprocess", None))
    model = model_lib.load(args.arch, weights_arg(args), include_top=include_top,
                 preprocess=getattr(args, "preprocess", None))
    if getattr(args, "command", None) != "predict":  # predict also takes feature vectors (.npy)
        model.require_spatial(f"jaxviz {getattr(args, 'command', None) or 'this command'}")
    if model_lib._is_model_file(args.arch) and model.input_hw is not None:
        mode = getattr(args, "preprocess", None)
        if mode is None:
            print(f"jaxviz: {printable(model.arch.name)} from {printable(args.arch)}: {preprocess_note(model)}",
                  file=sys.stderr)
        elif mode != "none" and (layer := input_rescaling(model)) is not None:
            print(f"jaxviz: warning: {printable(args.arch)} scales its 0..255 input itself (its {printable(layer)} "
                  f"layer): --preprocess {mode} scales it a second time; leave --preprocess out", file=sys.stderr)
    return model


def input_rescaling(model) -> str | None:
    """The name of a ``Rescaling`` layer of the model that maps 0..255 pixels to a unit range (a scale under
    0.1, as ``Rescaling(1./255)`` or ``Rescaling(1./127.5, offset=-1)``), or None."""
    for layer in model.graph.layers:
        scale = np.atleast_1d(np.asarray(layer.cfg.get("scale", 1.0), np.float64)) if layer.kind == "Rescaling" else ()
        if len(scale) and np.all(np.abs(scale) < 0.1):
            return layer.name
    return None


def weights_arg(args) -> str:
    """``--weights`` as :func:`jaxviz.load` takes it: "imagenet" when not given; for a model file, given as
    anything but random:SEED, one line saying the file holds its own weights."""
    if args.weights is None:
        return "imagenet"
    if model_lib._is_model_file(args.arch) and not args.weights.startswith("random:"):
        raise model_lib.file_weights_error(args.arch, args.weights)
    return args.weights


def preprocess_note(model) -> str:
    """Which preprocessing a model file's images get, and how to change it."""
    mode = model.preprocess
    what = {"none": "pixels 0..255 as they are", "rescale": "x / 255, in [0, 1]", "tf": "x / 127.5 - 1",
            "caffe": "BGR minus the ImageNet means", "torch": "x / 255 standardised by ImageNet's mean and std"}[mode]
    rescales = any(layer.kind in ("Rescaling", "Normalization") for layer in model.graph.layers)
    if mode == "none" and str(model.source).lower().endswith(".onnx"):
        return (f"images preprocessed as 'none' ({what}): an ONNX file holds no preprocessing; torchvision models "
                "want --preprocess torch")
    if mode == "none" and not rescales:
        return (f"images preprocessed as 'none' ({what}; no Rescaling layer in the file): for a model trained on "
                "x / 255 give --preprocess rescale (or tf, torch, caffe)")
    return f"images preprocessed as {mode!r} ({what}; --preprocess {'|'.join(MODES)} to change)"


def images_from_paths(paths, size, model=None) -> np.ndarray:
    """Loads image files as one batch ``[N, H, W, C]`` at ``size`` (H, W), preprocessed for ``model`` (default:
    VGG's "caffe" mode); grayscale (C = 1) for a model on one-channel images, else RGB."""
    channels = 3 if model is None else model.input_channels
    rgb = np.stack([load_image(p, target_size=size, channels=channels) for p in paths])
    return preprocess_input(rgb) if model is None else np.asarray(model.preprocess_input(rgb))


#: Folders :func:`output_dir` created in this command (``jaxviz.cli.main`` removes those left empty on failure).
created_folders: list[Path] = []


def output_dir(path: str | os.PathLike, option: str = "-o") -> Path:
    """Creates the output folder, failing with one clear line if that is not possible.

    Folders it creates are remembered, so that a command that fails leaves no empty folder behind.
    """
    out = Path(path)
    missing = [p for p in (out, *out.parents) if not p.exists()]
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise JaxvizError(f"cannot create output folder {out}: {p} is a file, not a folder; choose another "
                              f"{option}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JaxvizError(f"cannot create output folder {out}: {e.strerror or e}; choose another {option}") from None
    created_folders.extend(reversed(missing))  # deepest last
    if not _writable(out):
        raise JaxvizError(f"output folder {out} is not writable; choose another {option}")
    return out


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried for real: ``os.access`` says yes to root on /proc)."""
    probe = folder / f".jaxviz-probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink(missing_ok=True)
    return True


def check_output_file(path: str | os.PathLike, option: str) -> Path:
    """Checks, before any work, that ``path`` can be written: its folder exists (or can be made), is a
    folder, is writable, and ``path`` is not itself a folder. Fails with one line naming ``option``."""
    dest = Path(path)
    if dest.is_dir():
        raise JaxvizError(f"{option} {dest} is a folder; give a file path such as {dest / 'results.json'}")
    parent = dest.parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise JaxvizError(f"cannot write {option} {dest}: {p} is a file, not a folder; choose another path")
            if p == parent and not _writable(p):
                raise JaxvizError(f"cannot write {option} {dest}: folder {p} is not writable; choose another path")
            break
    return dest


def remove_empty_created_folders() -> None:
    """Removes the folders this command created that are still empty (deepest first)."""
    for p in reversed(created_folders):
        try:
            p.rmdir()
        except OSError:
            pass  # not empty (finished files are kept) or already gone
    created_folders.clear()


def save_json(path: str | os.PathLike, obj) -> Path:
    return write_bytes(path, json.dumps(obj, indent=2, default=str) + "\n")


def parse_index_list(spec: str | None, upper: int, what: str = "filters", default_count: int = 64) -> list[int]:
    """``"0:64"``, ``"0,5,9"`` or ``"7"`` → indices into ``[0, upper)``.

    ``None`` means the first ``default_count`` (or all, if fewer). A range's STOP is clamped to ``upper`` as
    Python's slices are (``0:64`` on an 8-channel layer = all 8); listed indices must exist; a selection
    that is empty (``5:2``, ``0:0``, ``''``, a START past the end) is an error saying so.
    """
    if spec is None:
        return list(range(min(default_count, upper)))
    option = f"--{what}"
    try:
        if ":" in spec:
            start, stop = (int(s) if s.strip() else d for s, d in zip(spec.split(":", 1), (0, upper)))
            if start < 0 or stop < 0:
                raise JaxvizError(f"{option} {spec!r}: indices count from 0; use START:STOP with 0 <= START")
            idx = list(range(start, min(stop, upper)))
            if not idx:
                raise JaxvizError(f"{option} {spec!r} selects no {what}: the layer has {upper} (0..{upper - 1}); "
                                  f"use START:STOP with START < STOP, e.g. 0:{min(upper, default_count)}")
            return idx
        idx = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise JaxvizError(f"cannot read {option} {spec!r} as indices; use START:STOP or a comma list like "
                          "0,5,9") from None
    if not idx:
        raise JaxvizError(f"{option} {spec!r} selects no {what}; use START:STOP or a comma list like 0,5,9")
    bad = [i for i in idx if not 0 <= i < upper]
    if bad:
        raise JaxvizError(f"{option} {', '.join(map(str, bad))} out of range: the layer has {upper} {what} "
                          f"(0..{upper - 1})")
    return list(dict.fromkeys(idx))


# --- images: files, folders, the bundled default ------------------------------------------------------

#: File suffixes taken from a folder given as IMAGE (others, e.g. .txt or .json, are skipped).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def add_images_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files or folders of images (default: the bundled sample for the model: the cat "
                        "photo for VGG16/VGG19, the star scene for vgg_demo*)")


def collect_images(specs) -> list[str]:
    """IMAGE arguments → image paths: files as given, folders expanded to their image files (sorted, not
    recursive), duplicates dropped. Checked before any model is loaded: a missing path or a folder without
    images is one error line."""
    paths: list[str] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise JaxvizError(f"folder {spec} has no image files ({', '.join(IMAGE_SUFFIXES)}); "
                                  "give image files or a folder that holds some")
            paths += found
        elif p.exists():
            paths.append(str(spec))
        else:
            raise JaxvizError(f"image file not found: {spec!r}; check the path and spelling")
    return list(dict.fromkeys(paths))


def default_images(images: list[str], model) -> list[str]:
    """``images``, or the model's bundled sample image (with a note on stderr) when none was given."""
    if images:
        return images
    path = str(model.profile.image)
    print(f"jaxviz: no IMAGE given: using the bundled {path}", file=sys.stderr)
    return [path]


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "image"):
    """A tqdm bar on stderr when it is a terminal and there is more than one item; else a silent stand-in."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None if (enabled and total > 1) else True,
                leave=False)


@contextlib.contextmanager
def chunk_bar(desc: str, enabled: bool = True):
    """A second bar (on a terminal) following the chunks of a slow method's loop while the block runs (see
    :class:`jaxviz.runtime.chunk_progress`); nothing appears for a method that reports no chunks."""
    bars: list = []

    def hook(done: int, total: int):
        if not bars:
            bars.append(tqdm(total=total, desc=desc, unit="chunk", position=1, leave=False,
                             disable=None if enabled else True))
        bar = bars[0]
        if bar.total != total or bar.n >= total:  # a method's next loop
            bar.reset(total=total)
        bar.update(1)  # counted, not set from ``done``: chunks may report out of order

    try:
        with chunk_progress(hook):
            yield
    finally:
        for bar in bars:
            bar.close()


def image_batches(paths: list[str], size, batch: int = 16, progress: bool = True, desc: str = "images",
                  model=None):
    """Yields ``(paths, x)`` with ``x`` a preprocessed batch ``[n, H, W, C]`` of at most ``batch`` images
    (so a large folder is never in memory at once), advancing a progress bar."""
    with progress_bar(len(paths), desc, progress) as bar:
        for i in range(0, len(paths), batch):
            chunk = paths[i: i + batch]
            yield chunk, images_from_paths(chunk, size, model)
            bar.update(len(chunk))


