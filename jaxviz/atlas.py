"""An atlas of a model: every unit (channel) of the chosen layers on a static HTML site, with its filter patterns
and the dataset images that excite it most (after OpenAI Microscope, without a server: it opens from ``file://``).

:func:`atlas` makes, in an output folder ``SITE``:

- ``index.html``: the model's summary table and its layers with their unit counts;
- ``<layer>/index.html``: a grid of the layer's units (their regularised patterns), sortable by the
  statistics below;
- ``<layer>/<unit>.html``: one page per unit, with previous/next links: its regularised pattern (as
  :func:`jaxviz.filter_patterns` with ``method="regularised"`` renders it), the book's pattern (the
  ``"keras"`` method) and, with ``diversity=N``, N diverse patterns; its top-K dataset images, each as the
  receptive-field crop around the position of the unit's maximum and as a thumbnail with that box drawn;
  its statistics over the folder (mean of the spatial maximum, fraction of positions active) and, for a
  layer that reads the input image, its kernel;
- ``atlas.json``: the manifest ``{"model": …, "layers": [{"name", "units": [{"index", "images", "top":
  [{"image", "activation", "box"}], …}]}]}`` (``image`` relative to the image folder, ``box`` ``[y0, x0, y1,
  x1]`` inclusive in the source image's pixels).

``<layer>`` is a safe file stem of the layer's name (:func:`jaxviz.atomic.file_stems`); every file is written
atomically inside ``SITE`` (:func:`jaxviz.atomic.confine`). The dataset pass is one jitted program per batch
shape that computes all chosen layers at once and keeps a running top-K per unit on the device (memory
``O(layers × units × K)``, whatever the folder's size). Units are done in chunks; each finished chunk is
recorded under ``SITE/.atlas/``, so a rerun with the same settings skips it and writes the same bytes.
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import graph as graph_lib
from . import runtime
from .atomic import confine, file_stems, remove_tree, write_bytes
from .errors import JaxvizError, printable
from .version import __version__

#: Image file suffixes the dataset pass reads from the folder (searched recursively, in sorted order).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Ascent steps ``(keras, regularised)``: the book's 40 and lucid's 256; ``quick=True`` takes the second row.
STEPS = {False: {"keras": 40, "regularised": 256}, True: {"keras": 10, "regularised": 32}}
#: Where the state of an unfinished run lives inside the site folder.
STATE = ".atlas"
#: Names at the top of the site a layer's folder must not take.
RESERVED = ("index.html", "atlas.json", STATE)
#: Side, in pixels, of the crops and of the thumbnails' longer side.
CROP, THUMB = 64, 96


# ---------------------------------------------------------------------------------------------------------
# Receptive fields


@dataclasses.dataclass(frozen=True)
class Field:
    """Where output pixel ``i`` of a layer looks along one image axis: input pixels
    ``[jump·i + start, jump·i + end]`` (inclusive, before clipping to the image)."""

    jump: int
    start: int
    end: int

    def span(self, i: int, side: int) -> tuple[int, int]:
        """The inclusive input range of output pixel ``i``, clipped to ``[0, side)``."""
        return max(self.jump * i + self.start, 0), min(self.jump * i + self.end, side - 1)


def _window(layer: graph_lib.Layer):
    """``(kernel, strides, dilation, padding)`` of a sliding-window layer (pools stride by their size)."""
    cfg = layer.cfg
    pooling = "Pool" in layer.kind
    k = graph_lib._pair(cfg.get("pool_size", 2) if pooling else cfg.get("kernel_size", 1))
    strides = cfg.get("strides")
    s = k if pooling and strides is None else graph_lib._pair(1 if strides is None else strides)
    return k, s, graph_lib._pair(cfg.get("dilation_rate", 1)), str(cfg.get("padding", "valid")).lower()


def receptive_fields(graph: graph_lib.Graph, input_hw: tuple[int, int], names: Iterable[str] | None = None
                     ) -> dict[str, tuple[Field, Field] | None]:
    """``{layer: (rows, columns)}``: the :class:`Field` of each layer's output pixels in the input image.

    Composed along the graph from each layer's kernel, strides, dilation and padding (Keras's "same" pads
    the extra row after, :func:`jaxviz.ops.window_pads`); zero padding and cropping shift the field; layers
    that keep the pixel grid (activations, normalisation, ``Add``, ``Concatenate``) take the union of their
    inputs' fields. ``None`` where the field is not a fixed window of the input: after a layer that
    upsamples, or once no image axes remain (``Flatten``, global pooling).

    Args:
      graph: the model's layer graph.
      input_hw: ``(height, width)`` of the input (a "same" layer's padding depends on its input's size).
      names: the layers wanted (default: all).
    """
    fields: dict[str, tuple[Field, Field] | None] = {}
    sides: dict[str, tuple[int, int] | None] = {}
    for layer in graph.layers:
        if layer.kind == "InputLayer":
            fields[layer.name] = (Field(1, 0, 0), Field(1, 0, 0))
            sides[layer.name] = tuple(input_hw)
            continue
        ins = [fields[i] for i in layer.inputs]
        in_sides = [sides[i] for i in layer.inputs]
        sides[layer.name] = graph_lib._spatial_side(layer, in_sides)
        if not ins or any(f is None for f in ins) or sides[layer.name] is None or layer.kind in (
                "UpSampling2D", "Conv2DTranspose") or len({(f[0].jump, f[1].jump) for f in ins}) > 1:
            fields[layer.name] = None
            continue
        merged = tuple(Field(ins[0][a].jump, min(f[a].start for f in ins), max(f[a].end for f in ins))
                       for a in (0, 1))
        if layer.kind in graph_lib.WINDOW_KINDS:
            k, s, d, pad = _window(layer)
            out = []
            for a in (0, 1):
                f = merged[a]
                before = _pads(in_sides[0][a], k[a], s[a], d[a], pad)
                span = (k[a] - 1) * d[a] + 1
                out.append(Field(f.jump * s[a], f.start - f.jump * before, f.end + f.jump * (span - 1 - before)))
            merged = tuple(out)
        elif layer.kind in ("ZeroPadding2D", "Cropping2D"):
            from .layers import pads_2d

            sign = -1 if layer.kind == "ZeroPadding2D" else 1
            cfg = layer.cfg
            (t, _), (left, _) = pads_2d(cfg.get("padding", 1) if sign < 0 else cfg.get("cropping", 0))
            merged = (Field(merged[0].jump, merged[0].start + sign * merged[0].jump * t,
                            merged[0].end + sign * merged[0].jump * t),
                      Field(merged[1].jump, merged[1].start + sign * merged[1].jump * left,
                            merged[1].end + sign * merged[1].jump * left))
        fields[layer.name] = merged
    keep = None if names is None else set(names)
    return {n: f for n, f in fields.items() if keep is None or n in keep}


def _pads(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    from .ops import window_pads

    return window_pads(size, k, stride, dilation, padding)[1][0]


def field_box(field: tuple[Field, Field] | None, position: tuple[int, int], input_hw: tuple[int, int],
              source_hw: tuple[int, int] | None = None) -> list[int]:
    """The inclusive box ``[y0, x0, y1, x1]`` of output pixel ``position = (i, j)``'s receptive field, in the
    model's input (``input_hw``) or, with ``source_hw``, scaled to the source image the input was resized
    from. A ``None`` field (no fixed window) gives the whole image."""
    h, w = input_hw
    if field is None:
        y0, x0, y1, x1 = 0, 0, h - 1, w - 1
    else:
        (y0, y1), (x0, x1) = field[0].span(position[0], h), field[1].span(position[1], w)
    if source_hw is None:
        return [y0, x0, y1, x1]
    sh, sw = source_hw
    # pixel k of the input covers source pixels [k·S/s, (k+1)·S/s)
    return [int(y0 * sh // h), int(x0 * sw // w), int(min(sh - 1, -(-(y1 + 1) * sh // h) - 1)),
            int(min(sw - 1, -(-(x1 + 1) * sw // w) - 1))]


# ---------------------------------------------------------------------------------------------------------
# The dataset pass


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
    from PIL import Image

    from .images import load_image

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
    hw, channels = model.input_hw, getattr(model.arch, "channels", 3)
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
    from tqdm.auto import tqdm

    layers = model.check_layers(layers)
    files = image_files(folder) if files is None else list(files)
    hw, channels = model.input_hw, getattr(model.arch, "channels", 3)
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


# ---------------------------------------------------------------------------------------------------------
# Images of a unit


def _png(array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def _crop_and_thumb(source: np.ndarray, box: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The box's crop (longer side :data:`CROP`) and the whole image (longer side :data:`THUMB`) with the box
    drawn in red."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(source.astype(np.uint8)[..., 0] if source.shape[-1] == 1 else source.astype(np.uint8))
    img = img.convert("RGB")
    y0, x0, y1, x1 = box
    crop = img.crop((x0, y0, x1 + 1, y1 + 1))
    scale = CROP / max(crop.size)
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.NEAREST
                       if scale >= 1 else Image.BILINEAR)
    scale = THUMB / max(img.size)
    thumb = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    draw = ImageDraw.Draw(thumb)
    draw.rectangle([x0 * scale, y0 * scale, (x1 + 1) * scale - 1, (y1 + 1) * scale - 1], outline=(255, 0, 0),
                   width=2)
    return np.asarray(crop), np.asarray(thumb)


def _kernel_image(kernel: np.ndarray, unit: int, preprocess: str) -> np.ndarray:
    """A first layer's kernel ``[kh, kw, C, units]`` of ``unit`` as a picture, 8 screen pixels per weight,
    scaled by the layer's largest weight (grey is zero); BGR kernels (caffe) shown as RGB."""
    k = np.asarray(kernel, np.float32)[..., unit]
    k = k / (np.abs(np.asarray(kernel)).max() or 1.0)
    if k.shape[-1] == 3 and preprocess == "caffe":
        k = k[..., ::-1]
    k = k if k.shape[-1] == 3 else k[..., :1].repeat(3, -1)
    img = np.clip(np.round(127.5 + 127.5 * k), 0, 255).astype(np.uint8)
    return img.repeat(8, 0).repeat(8, 1)


# ---------------------------------------------------------------------------------------------------------
# Pages

_STYLE = ("<style>body{font-family:sans-serif;margin:1.5em;max-width:1200px}img{image-rendering:pixelated;"
          "border:1px solid #ccc}.tile{display:inline-block;margin:4px;text-align:center;font-size:80%;"
          "vertical-align:top}.tile img{width:96px}table{border-collapse:collapse}td,th{padding:2px 8px;"
          "text-align:left}pre{background:#f4f4f4;padding:1em;overflow:auto;font-size:80%}"
          "nav a{margin-right:1em}</style>")


def _page(title: str, body: list[str]) -> str:
    return "\n".join(["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
                      f"<title>{html.escape(title)}</title>", _STYLE, "</head><body>", *body, "</body></html>"]) + "\n"


def _unit_page(model_name: str, layer: str, record: dict, prev: int | None, nxt: int | None) -> str:
    e = html.escape
    u = record["index"]
    nav = ['<nav><a href="../index.html">atlas</a>', '<a href="index.html">layer</a>']
    nav.append(f'<a href="{prev}.html">&larr; unit {prev}</a>' if prev is not None else "")
    nav.append(f'<a href="{nxt}.html">unit {nxt} &rarr;</a>' if nxt is not None else "")
    body = [" ".join(nav) + "</nav>", f"<h1>{e(model_name)} / {e(layer)} / unit {u}</h1>",
            f"<p>Mean of the spatial maximum over the images: {record['mean']:.4g}; fraction of positions active: "
            f"{record['active']:.4g}</p>", "<h2>Patterns</h2>"]
    for key, label in (("regularised", "regularised"), ("keras", "the book's"), ("kernel", "kernel")):
        if key in record["images"]:
            src = e(Path(record["images"][key]).name)
            body.append(f'<div class="tile"><img src="img/{src}" alt="{e(label)}"><br>{e(label)}</div>')
    for i, path in enumerate(record["images"].get("diverse", [])):
        body.append(f'<div class="tile"><img src="img/{e(Path(path).name)}" alt="diverse {i}"><br>diverse {i}</div>')
    body.append("<h2>Images that excite it most</h2>")
    for rank, t in enumerate(record["top"]):
        crop, thumb = (e(Path(t[f]).name) for f in ("crop", "thumb"))
        body.append(f'<div class="tile"><img src="img/{crop}" alt="crop {rank}"> <img src="img/{thumb}" '
                    f'alt="image {rank}"><br>{e(t["image"])}<br>{t["activation"]:.4g}</div>')
    return _page(f"{model_name} {layer} unit {u}", body)


def _layer_page(model_name: str, layer: str, records: list[dict]) -> str:
    e = html.escape
    body = ['<nav><a href="../index.html">atlas</a></nav>', f"<h1>{e(model_name)} / {e(layer)}</h1>",
            '<p>Sort by <select id="sort"><option value="index">unit</option><option value="mean">mean maximum'
            '</option><option value="active">fraction active</option></select></p><div id="grid">']
    for r in records:
        img = e(Path(r["images"]["regularised"]).name)
        body.append(f'<a class="tile" href="{r["index"]}.html" data-index="{r["index"]}" data-mean="{r["mean"]:.6g}"'
                    f' data-active="{r["active"]:.6g}"><img src="img/{img}" alt="unit {r["index"]}"><br>'
                    f'{r["index"]}<br>{r["mean"]:.3g} · {r["active"]:.2f}</a>')
    body += ["</div><script>document.getElementById('sort').onchange = function () {",
             "  const key = this.value, grid = document.getElementById('grid');",
             "  const tiles = Array.from(grid.children);",
             "  tiles.sort((a, b) => key === 'index' ? a.dataset.index - b.dataset.index",
             "                                       : b.dataset[key] - a.dataset[key]);",
             "  tiles.forEach(t => grid.appendChild(t));", "};</script>"]
    return _page(f"{model_name} {layer}", body)


def _index_page(model, layers: list[dict], stems: Mapping[str, str]) -> str:
    e = html.escape
    body = [f"<h1>Atlas of {e(model.arch.name)}</h1>",
            "<p>Each unit's patterns and the images that excite it most. Manifest: "
            '<a href="atlas.json">atlas.json</a>.</p>', "<h2>Layers</h2><table><tr><th>layer</th><th>units shown"
            "</th><th>units</th></tr>"]
    for layer in layers:
        body.append(f'<tr><td><a href="{e(stems[layer["name"]])}/index.html">{e(layer["name"])}</a></td>'
                    f'<td>{len(layer["units"])}</td><td>{layer["channels"]}</td></tr>')
    body += ["</table>", "<h2>Model</h2>", f"<pre>{e(model.summary(print_fn=lambda _: None))}</pre>"]
    return _page(f"atlas of {model.arch.name}", body)


# ---------------------------------------------------------------------------------------------------------
# The atlas


def _site_stems(names: Sequence[str]) -> dict[str, str]:
    """Folder names of the layers, none of them one of the site's own files."""
    return file_stems(names, reserved=RESERVED)


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


def atlas(model, images: str | os.PathLike, layers: str | Iterable[str] | None = None, out: str | os.PathLike = "atlas",
          units: Sequence[int] | Mapping[str, Sequence[int]] | None = None, top: int = 9, quick: bool = False,
          progress: bool | Callable[[dict], None] = True, *, size: int = 64, steps: Mapping[str, int] | None = None,
          batch_size: int = 16, chunk: int = 16, seed: int = 0, diversity: int = 0) -> dict:
    """Writes the atlas of ``model``'s ``layers`` over the images in the folder ``images`` to ``out``.

    Args:
      model: a :class:`jaxviz.Model` with a spatial input.
      images: a folder of image files (searched recursively); each is resized to the model's input size.
      layers: layer names (default: every conv layer).
      out: the site folder (created; the atlas's files are replaced, others left alone).
      units: the units (channels) shown: indices for every layer, ``{layer: indices}``, or ``None`` for all.
      top: how many top images each unit keeps (``K``).
      quick: fewer ascent steps (:data:`STEPS`).
      progress: a progress bar with the time left, or a function called with ``{"layer", "units_done",
        "units_total", "elapsed_s"}`` after every finished chunk (it may raise to stop the run).
      size: side of the pattern images in pixels.
      steps: ``{"keras": n, "regularised": n}`` ascent steps overriding :data:`STEPS`.
      batch_size: images per step of the dataset pass.
      chunk: units per chunk (the unit of work that is resumed).
      seed: the patterns' random start.
      diversity: with ``N >= 2``, also ``N`` diverse regularised patterns per unit
        (:func:`jaxviz.visualize.patterns.diverse_patterns`: a batch penalised by the similarity of its Gram
        matrices, Olah et al. 2017).

    Returns:
      The manifest written to ``out/atlas.json``.
    """
    from .visualize import patterns

    model.require_spatial("the atlas")
    names = model.conv_layer_names if layers is None else model.check_layers(layers)
    names = tuple(names)
    if not names:
        raise JaxvizError(f"{printable(model.arch.name)} has no conv layer; name the layers with layers=")
    _spatial_shapes(model, names)
    k = runtime.check_positive(top, "top")
    chunk = runtime.check_positive(chunk, "chunk")
    files = image_files(images)
    site = Path(out).resolve()  # a site inside the image folder: its own pictures are not data
    files = [f for f in files if not Path(images, f).resolve().is_relative_to(site)]
    if not files:
        raise JaxvizError(f"folder {printable(str(images))} has no image files outside the output folder")
    chosen = {}
    for n in names:
        c = model.channels(n)
        want = units.get(n) if isinstance(units, Mapping) else units
        want = list(range(c)) if want is None else [int(u) for u in want]
        bad = [u for u in want if not 0 <= u < c]
        if bad or not want:
            raise JaxvizError(f"unit {bad[0] if bad else '(none)'} of layer {printable(n)!r}: it has {c} units "
                              f"(0..{c - 1})")
        chosen[n] = list(dict.fromkeys(want))
    ascent = {**STEPS[bool(quick)], **(steps or {})}
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    state = confine(root, STATE)
    stats = [os.stat(Path(images, f)) for f in files]  # a changed image invalidates the saved dataset pass
    key = {"jaxviz": __version__, "model": model.arch.name, "weights": str(model.source), "layers": list(names),
           "files": files, "stats": [[s.st_size, s.st_mtime_ns] for s in stats], "top": k, "batch": int(batch_size),
           "preprocess": model.preprocess}
    data = _dataset_cached(model, images, names, k, batch_size, files, state, key, progress is True)
    stems = _site_stems(model.layer_names)
    diversity = int(diversity)
    if diversity == 1 or diversity < 0:
        raise JaxvizError(f"diversity {diversity}: give at least 2 images per unit, or 0 for none")
    settings = {**key, "size": int(size), "steps": ascent, "seed": int(seed), "chunk": chunk, "diversity": diversity}
    first = {n for n in names if any(model.graph.by_name[i].kind == "InputLayer"
                                     for i in model.graph.by_name[n].inputs)}
    fields = receptive_fields(model.graph, model.input_hw, names)
    total = sum(len(v) for v in chosen.values())
    done, t0 = 0, time.monotonic()
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="atlas", unit="unit", leave=False)
    manifest_layers = []
    try:
        for n in names:
            stem = stems[n]
            records: list[dict] = []
            us = chosen[n]
            for c0 in range(0, len(us), chunk):
                part = us[c0: c0 + chunk]
                marker = confine(state, f"{stem}.{c0 // chunk:05d}.json")
                want = {"settings": settings, "units": part, "order": us}
                saved = None
                if marker.exists():
                    try:
                        saved = json.loads(marker.read_text())
                    except ValueError:
                        saved = None
                if saved is None or saved.get("key") != json.loads(json.dumps(want)):
                    recs = _chunk(model, n, stem, part, us, data, fields[n], root, images, n in first, ascent,
                                  size, seed, patterns, diversity)
                    write_bytes(marker, json.dumps({"key": want, "records": recs}, sort_keys=True))
                else:
                    recs = saved["records"]
                records += recs
                done += len(part)
                if bar is not None:
                    bar.update(len(part))
                elif callable(progress):
                    progress({"layer": n, "units_done": done, "units_total": total,
                              "elapsed_s": time.monotonic() - t0})
            write_bytes(confine(root, stem, "index.html"), _layer_page(model.arch.name, n, records))
            manifest_layers.append({"name": n, "folder": stem, "channels": model.channels(n),
                                    "shape": list(data["layers"][n]["shape"]), "units": records})
    finally:
        if bar is not None:
            bar.close()
    manifest = {"model": model.arch.name, "weights": str(model.source), "jaxviz": __version__,
                "input_size": list(model.input_hw), "images": str(images), "image_count": len(files), "top": k,
                "pattern_size": int(size), "steps": ascent, "seed": int(seed), "diversity": diversity,
                "layers": manifest_layers}
    write_bytes(confine(root, "atlas.json"), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    write_bytes(confine(root, "index.html"), _index_page(model, manifest_layers, stems))
    remove_tree(root, STATE)
    return manifest


def _chunk(model, layer, stem, part, order, data, field, root, folder, first, ascent, size, seed, patterns,
           diversity: int = 0) -> list:
    """Computes and writes one chunk of a layer's units; returns their manifest records."""
    d = data["layers"][layer]
    imgs = {}
    for method in ("regularised", "keras"):
        x = patterns.filter_patterns(model, layer, part, size=size, steps=ascent[method], seed=seed, method=method,
                                     chunk_size=len(part), progress=False)
        imgs[method] = patterns.display_images(x, method, model.preprocess)
    hw, channels = model.input_hw, getattr(model.arch, "channels", 3)
    kernel = np.asarray(model.params[layer]["kernel"]) if first and "kernel" in model.params.get(layer, {}) else None
    cache: dict[int, np.ndarray] = {}
    records = []
    for j, u in enumerate(part):
        base = f"{u}"
        files = {m: f"{stem}/img/{base}_{m}.png" for m in ("regularised", "keras")}
        for m, rel in files.items():
            write_bytes(confine(root, stem, "img", Path(rel).name), _png(imgs[m][j]))
        if diversity:
            x = patterns.diverse_patterns(model, layer, u, n=diversity, size=size, steps=ascent["regularised"],
                                          seed=seed)
            files["diverse"] = []
            for i, im in enumerate(patterns.display_images(x, "regularised", model.preprocess)):
                files["diverse"].append(f"{stem}/img/{base}_diverse{i}.png")
                write_bytes(confine(root, stem, "img", f"{base}_diverse{i}.png"), _png(im))
        if kernel is not None and kernel.ndim == 4:
            files["kernel"] = f"{stem}/img/{base}_kernel.png"
            write_bytes(confine(root, stem, "img", f"{base}_kernel.png"),
                        _png(_kernel_image(kernel, u, model.preprocess)))
        tops = []
        for rank in range(d["activation"].shape[1]):
            i = int(d["image"][u, rank])
            if i < 0:
                continue
            src_hw = tuple(data["sources"][i])
            box = field_box(field, tuple(int(v) for v in d["position"][u, rank]), hw, src_hw)
            if i not in cache:
                from .images import load_image

                cache[i] = load_image(Path(folder, data["files"][i]), target_size=None, channels=channels)
            crop, thumb = _crop_and_thumb(cache[i], box)
            names = {f: f"{stem}/img/{base}_top{rank}_{f}.png" for f in ("crop", "thumb")}
            write_bytes(confine(root, stem, "img", Path(names["crop"]).name), _png(crop))
            write_bytes(confine(root, stem, "img", Path(names["thumb"]).name), _png(thumb))
            tops.append({"image": data["files"][i], "activation": float(d["activation"][u, rank]), "box": box,
                         "position": [int(v) for v in d["position"][u, rank]], **names})
        rec = {"index": int(u), "mean": float(d["mean"][u]), "active": float(d["active"][u]), "images": files,
               "top": tops, "page": f"{stem}/{u}.html"}
        records.append(rec)
    for rec in records:
        pos = order.index(rec["index"])
        prev = order[pos - 1] if pos > 0 else None
        nxt = order[pos + 1] if pos + 1 < len(order) else None
        write_bytes(confine(root, stem, f"{rec['index']}.html"), _unit_page(model.arch.name, layer, rec, prev, nxt))
    return records


__all__ = ["Field", "atlas", "dataset_pass", "field_box", "image_files", "receptive_fields"]
