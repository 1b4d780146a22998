"""The atlas's dataset pass: every image of a folder through the model once, keeping each unit's top-K images
(by its spatial maximum) and statistics on the device; saved, so that a rerun with the same settings reuses it.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from PIL import Image
from tqdm.auto import tqdm

from .. import runtime
from ..atomic import confine, write_bytes
from ..errors import JaxvizError, printable
from ..images import load_image

#: Image file suffixes the dataset pass reads from the folder (searched recursively, in sorted order).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def image_files(folder: str | os.PathLike) -> list[str]:
    """Image files under ``folder`` (recursively, symbolic links not followed, hidden names skipped) as
    sorted paths relative to it."""
    root = Path(folder)
    if not root.is_dir():
        raise JaxvizError(f"{printable(str(folder))} is not a folder; give a folder of image files")
    found = []
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            p = Path(here, f)
            if not f.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.is_symlink():
                found.append(p.relative_to(root).as_posix())
    if not found:
        raise JaxvizError(f"folder {printable(str(folder))} has no image files ({', '.join(IMAGE_SUFFIXES)}); "
                          "give a folder that holds some")
    return sorted(found)


def _load(path: Path, input_hw, channels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``(image resized to input_hw, source (height, width))``: the file is decoded once at its own size."""
    full = load_image(path, target_size=None, channels=channels)
    src = full.shape[:2]
    if src != tuple(input_hw):
        img = Image.fromarray(full.astype(np.uint8)[..., 0] if channels == 1 else full.astype(np.uint8))
        full = np.asarray(img.resize((input_hw[1], input_hw[0]), Image.NEAREST), np.float32)  # load_image's default
        full = full[..., None] if channels == 1 else full
    return full, src


def _topk_program(model, layers: tuple[str, ...], batch: int, k: int):
    """One jitted step of the dataset pass: a batch through the model (one truncated pass with every layer
    tapped), merged into each unit's running top-K of its spatial maximum."""
    module, deepest = model.module, model.deepest(layers)

    def step(params, prepared, x, valid, first, state):
        _, taps = module.apply({"params": params, "prepared": prepared}, x, upto=deepest, taps=layers)
        runtime.trace_counts["atlas_topk"] += 1
        new = {}
        for name in layers:
            a = taps[name].astype(jnp.float32)
            n, h, w, c = a.shape
            flat = a.reshape(n, h * w, c)
            peak = jnp.where(valid[:, None], flat.max(1), -jnp.inf)  # [n, C]
            where = flat.argmax(1).astype(jnp.int32)
            values, images, places, total, active = state[name]
            ids = jnp.broadcast_to((first + jnp.arange(n, dtype=jnp.int32))[None], (c, n))
            cand = jnp.concatenate([values, peak.T], 1)  # earlier images first: ties keep the earlier image
            top, pos = lax.top_k(cand, k)
            new[name] = (top, jnp.take_along_axis(jnp.concatenate([images, ids], 1), pos, 1),
                         jnp.take_along_axis(jnp.concatenate([places, where.T], 1), pos, 1),
                         total + jnp.where(valid[:, None], peak, 0).sum(0),
                         active + ((flat > 0) & valid[:, None, None]).mean(1, dtype=jnp.float32).sum(0))
        return new

    key = ("atlas_topk", module, layers, batch, k)
    return runtime.shared_program(key, lambda: jax.jit(step, donate_argnums=(5,)))


def _spatial_shapes(model, layers: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """``{layer: (h, w, C)}`` at the model's input size; a layer without a spatial map is refused."""
    hw, channels = model.input_hw, model.input_channels
    shapes = {n: tuple(model.output_shape(n, (*hw, channels))) for n in layers}
    for n, s in shapes.items():
        if len(s) != 3:
            raise JaxvizError(f"layer {printable(n)!r} has no spatial map (output {s}); the atlas takes conv and "
                              "pooling layers")
    return shapes


def dataset_pass(model, folder: str | os.PathLike, layers: Sequence[str], top: int = 9, batch_size: int = 16,
                 files: Sequence[str] | None = None, progress: bool = True) -> dict:
    """Each unit's top-``top`` images of ``folder`` by the unit's spatial maximum, and its statistics.

    Returns:
      ``{"files": [path relative to folder], "sources": [(height, width)], "layers": {layer: {"activation":
      [C, K], "image": [C, K] int (index into files; -1 where the folder has fewer than K images),
      "position": [C, K, 2] (row, column) of the maximum in the layer's map, "mean": [C] mean of the spatial
      maximum, "active": [C] fraction of positions > 0, "shape": (h, w, C)}}}``.
    """
    layers = model.check_layers(layers)
    files = image_files(folder) if files is None else list(files)
    hw, channels = model.input_hw, model.input_channels
    k = int(top)
    shapes = _spatial_shapes(model, layers)
    state = {n: (jnp.full((s[-1], k), -jnp.inf), jnp.full((s[-1], k), -1, jnp.int32),
                 jnp.zeros((s[-1], k), jnp.int32), jnp.zeros((s[-1],)), jnp.zeros((s[-1],))) for n, s in shapes.items()}
    batch = max(1, min(int(batch_size), len(files)))
    program = _topk_program(model, layers, batch, k)
    params, prepared = model.params, model.prepared()
    sources = []
    with tqdm(total=len(files), disable=not progress, desc="dataset pass", unit="image", leave=False) as bar:
        for start in range(0, len(files), batch):
            names = files[start: start + batch]
            loaded = [_load(Path(folder, f), hw, channels) for f in names]
            sources += [s for _, s in loaded]
            rgb = np.zeros((batch, *hw, channels), np.float32)
            rgb[: len(names)] = np.stack([im for im, _ in loaded])
            x = model.check_input(np.asarray(model.preprocess_input(rgb)), layers)
            valid = np.arange(batch) < len(names)
            state = program(params, prepared, x, valid, np.int32(start), state)
            bar.update(len(names))
    out = {}
    for n, (values, images, places, total, active) in state.items():
        h, w, c = shapes[n]
        places = np.asarray(places)
        out[n] = {"activation": np.asarray(values), "image": np.asarray(images),
                  "position": np.stack([places // w, places % w], -1), "mean": np.asarray(total) / len(files),
                  "active": np.asarray(active) / len(files), "shape": (h, w, c)}
    return {"files": files, "sources": sources, "layers": out}


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


def _dataset_cached(model, folder, layers, top, batch_size, files, state: Path, key: dict, progress) -> dict:
    """The dataset pass, or its result saved by an earlier run with the same settings (``key``)."""
    path = confine(state, "dataset.npz")
    meta = confine(state, "dataset.json")
    if path.exists() and meta.exists():
        try:
            same = json.loads(meta.read_text()) == key
        except ValueError:
            same = False
        if same:
            with np.load(path, allow_pickle=False) as z:
                out = {"files": list(files), "sources": [tuple(s) for s in z["sources"].tolist()], "layers": {}}
                for i, n in enumerate(layers):
                    out["layers"][n] = {f: z[f"{i}_{f}"] for f in ("activation", "image", "position", "mean", "active")}
                    out["layers"][n]["shape"] = tuple(int(v) for v in z[f"{i}_shape"])
                return out
    res = dataset_pass(model, folder, layers, top, batch_size, files, progress)
    arrays = {"sources": np.asarray(res["sources"], np.int64).reshape(-1, 2)}
    for i, n in enumerate(layers):
        arrays.update({f"{i}_{f}": np.asarray(v) for f, v in res["layers"][n].items()})
    _save_npz(path, arrays)
    write_bytes(meta, json.dumps(key, sort_keys=True))
    return res
