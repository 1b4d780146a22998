"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from ..atomic import save_npy, write_bytes  # noqa: F401  (save_npy: for the commands)
from ..errors import JaxvizError


def add_model_args(p: argparse.ArgumentParser, default_arch: str = "vgg16", top: bool = True) -> None:
    p.add_argument("--arch", default=default_arch,
                   help="vgg16 | vgg19 | vgg_demo | vgg_demo_gap (the shipped demo models; default: %(default)s)")
    p.add_argument("--weights", default="imagenet",
                   help='"imagenet" (Keras files: cache, then download; the demo models: their shipped '
                        'weights), a .h5/.npz path, or random:SEED')
    if not top:
        p.add_argument("--no-top", action="store_true", help="load the model without its classifier")


def model_from_args(args, include_top: bool | None = None):
    from ..model import load

    if include_top is None:
        include_top = not getattr(args, "no_top", False)
    return load(args.arch, args.weights, include_top=include_top)


def images_from_paths(paths, size) -> np.ndarray:
    """Loads image files as one preprocessed batch ``[N, H, W, 3]`` at ``size`` (H, W)."""
    from ..images import load_image, preprocess_input

    return preprocess_input(np.stack([load_image(p, target_size=size) for p in paths]))


def output_dir(path: str | os.PathLike) -> Path:
    """Creates the output folder, failing with one clear line if that is not possible."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (PermissionError, FileExistsError, NotADirectoryError) as e:
        raise JaxvizError(f"cannot create output folder {out}: {e.strerror or e}; choose another -o") from None
    if not os.access(out, os.W_OK):
        raise JaxvizError(f"output folder {out} is not writable; choose another -o")
    return out


def save_json(path: str | os.PathLike, obj) -> Path:
    return write_bytes(path, json.dumps(obj, indent=2, default=str) + "\n")


def parse_index_list(spec: str, upper: int) -> list[int]:
    """``"0:64"``, ``"0,5,9"`` or ``"7"`` → indices, checked against ``[0, upper)``."""
    try:
        if ":" in spec:
            start, stop = (int(s) if s else d for s, d in zip(spec.split(":", 1), (0, upper)))
            idx = list(range(start, stop))
        else:
            idx = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise JaxvizError(f"cannot read {spec!r} as indices; use START:STOP or a comma list like 0,5,9") from None
    bad = [i for i in idx if not 0 <= i < upper]
    if bad or not idx:
        raise JaxvizError(f"indices {spec!r} out of range: the layer has {upper} (0..{upper - 1})")
    return idx
