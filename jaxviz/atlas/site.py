"""Making the atlas: the units of each layer in resumable chunks (patterns, top images, pages), then the
layer pages, the manifest and the index."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from .. import parallel, runtime
from ..atomic import confine, file_stems, remove_tree, write_bytes
from ..errors import JaxvizError, printable
from ..images import load_image
from ..version import __version__
from ..visualize import patterns
from .dataset import _dataset_cached, _spatial_shapes, image_files
from .fields import field_box, receptive_fields
from .pages import IMAGE_FORMATS, _crop_and_thumb, _index_page, _kernel_image, _layer_page, _picture, _unit_page

#: Ascent steps ``(keras, regularised)``: the book's 40 and lucid's 256; ``quick=True`` takes the second row.
STEPS = {False: {"keras": 40, "regularised": 256}, True: {"keras": 10, "regularised": 32}}

#: Where the state of an unfinished run lives inside the site folder.
STATE = ".atlas"

#: Names at the top of the site a layer's folder must not take.
RESERVED = ("index.html", "atlas.json", STATE)


def _site_stems(names: Sequence[str]) -> dict[str, str]:
    """Folder names of the layers, none of them one of the site's own files."""
    return file_stems(names, reserved=RESERVED)


def atlas(model, images: str | os.PathLike, layers: str | Iterable[str] | None = None, out: str | os.PathLike = "atlas",
          units: Sequence[int] | Mapping[str, Sequence[int]] | None = None, top: int = 9, quick: bool = False,
          progress: bool | Callable[[dict], None] = True, *, size: int = 64, steps: Mapping[str, int] | None = None,
          batch_size: int = 16, chunk: int = 16, seed: int = 0, diversity: int = 0, image_format: str = "png",
          host: tuple[int, int] | None = None) -> dict:
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
      image_format: ``"png"`` (lossless) or ``"webp"`` (the site's pictures several times smaller).
      host: ``(index, count)`` for separate runs (hosts) sharing the work: this one makes every ``count``-th
        chunk of units starting at ``index`` (:func:`jaxviz.parallel.process_share`) into an ``out`` folder
        every host sees; the host that finds every chunk done writes the layer pages, the manifest and the
        index (as does a later run without ``host``). Under ``jax.distributed`` leave it out: there every
        process runs every chunk together, :func:`jaxviz.filter_patterns` splitting its units between them.

    Returns:
      The manifest written to ``out/atlas.json``, with ``"run": {"computed", "reused", "pending", "up_to_date"}``
      (units made by this call, units found done, units left to other hosts, whether the site was already
      finished; not written to the file) added. While
      units are pending the site is not written and ``"layers"`` is empty. A rerun with the same settings
      over a finished site writes nothing.
    """
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
    image_format = str(image_format).lower()
    if image_format not in IMAGE_FORMATS:
        raise JaxvizError(f"image format {printable(image_format)!r}: give one of {', '.join(IMAGE_FORMATS)}")
    if host is not None and jax.process_count() > 1:
        raise JaxvizError("host= splits the units between separate runs; under jax.distributed the processes "
                          "already split each chunk's units: leave it out")
    index, count = (0, 1) if host is None else (int(host[0]), int(host[1]))
    if not 0 <= index < count:
        raise JaxvizError(f"host {index} of {count}: give an index from 0 to {count - 1}, e.g. --host 0/{count}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    state = confine(root, STATE)
    stats = [os.stat(Path(images, f)) for f in files]  # a changed image invalidates the saved dataset pass
    key = {"jaxviz": __version__, "model": model.arch.name, "weights": str(model.source), "layers": list(names),
           "files": files, "stats": [[s.st_size, s.st_mtime_ns] for s in stats], "top": k, "batch": int(batch_size),
           "preprocess": model.preprocess}
    diversity = int(diversity)
    if diversity == 1 or diversity < 0:
        raise JaxvizError(f"diversity {diversity}: give at least 2 images per unit, or 0 for none")
    settings = {**key, "size": int(size), "steps": ascent, "seed": int(seed), "chunk": chunk, "diversity": diversity,
                "image_format": image_format}
    total = sum(len(v) for v in chosen.values())
    digest = hashlib.sha256(json.dumps({"settings": settings, "units": chosen}, sort_keys=True).encode()).hexdigest()
    finished = _finished_site(root, digest)
    if finished is not None:
        return {**finished, "run": {"computed": 0, "reused": total, "pending": 0, "up_to_date": True}}
    data = _dataset_cached(model, images, names, k, batch_size, files, state, key, progress is True)
    stems = _site_stems(model.layer_names)
    first = {n for n in names if any(model.graph.by_name[i].kind == "InputLayer"
                                     for i in model.graph.by_name[n].inputs)}
    fields = receptive_fields(model.graph, model.input_hw, names)
    plan = [(n, c0) for n in names for c0 in range(0, len(chosen[n]), chunk)]
    mine = {plan[i] for i in parallel.process_share(len(plan), index, count)}
    run = {"computed": 0, "reused": 0, "pending": 0, "up_to_date": False}
    done, t0 = 0, time.monotonic()
    bar = tqdm(total=total, desc="atlas", unit="unit", leave=False) if progress is True else None
    records: dict[str, list] = {n: [] for n in names}
    try:
        for n, c0 in plan:
            stem, us = stems[n], chosen[n]
            part = us[c0: c0 + chunk]
            marker = confine(state, f"{stem}.{c0 // chunk:05d}.json")
            want = json.loads(json.dumps({"settings": settings, "units": part, "order": us}))
            recs = _saved_chunk(marker, want)
            if recs is not None:
                run["reused"] += len(part)
            elif (n, c0) in mine:
                recs = _chunk(model, n, stem, part, us, data, fields[n], root, images, n in first, ascent,
                              size, seed, patterns, diversity, image_format)
                write_bytes(marker, json.dumps({"key": want, "records": recs}, sort_keys=True))
                run["computed"] += len(part)
            else:
                run["pending"] += len(part)
                continue
            records[n] += recs
            done += len(part)
            if bar is not None:
                bar.update(len(part))
            elif callable(progress):
                progress({"layer": n, "units_done": done, "units_total": total, "elapsed_s": time.monotonic() - t0})
    finally:
        if bar is not None:
            bar.close()
    parallel.barrier("jaxviz atlas chunks")  # under jax.distributed: every process's chunks are written
    if run["pending"]:
        return {"model": model.arch.name, "layers": [], "run": run}
    manifest_layers = []
    for n in names:
        write_bytes(confine(root, stems[n], "index.html"), _layer_page(model.arch.name, n, records[n]))
        manifest_layers.append({"name": n, "folder": stems[n], "channels": model.channels(n),
                                "shape": list(data["layers"][n]["shape"]), "units": records[n]})
    manifest = {"model": model.arch.name, "weights": str(model.source), "jaxviz": __version__,
                "input_size": list(model.input_hw), "images": str(images), "image_count": len(files), "top": k,
                "pattern_size": int(size), "steps": ascent, "seed": int(seed), "diversity": diversity,
                "image_format": image_format, "settings": digest, "layers": manifest_layers}
    write_bytes(confine(root, "atlas.json"), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    write_bytes(confine(root, "index.html"), _index_page(model, manifest_layers, stems))
    remove_tree(root, STATE)
    return {**manifest, "run": run}


def _saved_chunk(marker: Path, want: dict) -> list | None:
    """The records of a chunk finished earlier with the same settings, or ``None``."""
    if not marker.exists():
        return None
    try:
        saved = json.loads(marker.read_text())
    except ValueError:
        return None
    return saved["records"] if isinstance(saved, dict) and saved.get("key") == want else None


def _finished_site(root: Path, digest: str) -> dict | None:
    """The manifest of a finished site made with the same settings (``digest``) whose files are all there."""
    path = confine(root, "atlas.json")
    try:
        manifest = json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None
    if not isinstance(manifest, dict) or manifest.get("settings") != digest:
        return None
    wanted = ["index.html"]
    for layer in manifest.get("layers", []):
        wanted.append(f"{layer['folder']}/index.html")
        for unit in layer["units"]:
            imgs = unit["images"]
            wanted += [unit["page"], *(v for key, v in imgs.items() if key != "diverse"), *imgs.get("diverse", [])]
            wanted += [t[f] for t in unit["top"] for f in ("crop", "thumb")]
    return manifest if all(confine(root, *w.split("/")).is_file() for w in wanted) else None


def _chunk(model, layer, stem, part, order, data, field, root, folder, first, ascent, size, seed, patterns,
           diversity: int = 0, image_format: str = "png") -> list:
    """Computes and writes one chunk of a layer's units; returns their manifest records."""
    d = data["layers"][layer]
    imgs = {}
    for method in ("regularised", "keras"):
        x = patterns.filter_patterns(model, layer, part, size=size, steps=ascent[method], seed=seed, method=method,
                                     chunk_size=-(-len(part) // jax.process_count()), progress=False)
        imgs[method] = patterns.display_images(x, method, model.preprocess)
    hw, channels = model.input_hw, model.input_channels
    kernel = np.asarray(model.params[layer]["kernel"]) if first and "kernel" in model.params.get(layer, {}) else None
    cache: dict[int, np.ndarray] = {}
    ext = image_format

    def picture(array) -> bytes:
        return _picture(array, image_format)

    records = []
    for j, u in enumerate(part):
        base = f"{u}"
        files = {m: f"{stem}/img/{base}_{m}.{ext}" for m in ("regularised", "keras")}
        for m, rel in files.items():
            write_bytes(confine(root, stem, "img", Path(rel).name), picture(imgs[m][j]))
        if diversity:
            x = patterns.diverse_patterns(model, layer, u, n=diversity, size=size, steps=ascent["regularised"],
                                          seed=seed)
            files["diverse"] = []
            for i, im in enumerate(patterns.display_images(x, "regularised", model.preprocess)):
                files["diverse"].append(f"{stem}/img/{base}_diverse{i}.{ext}")
                write_bytes(confine(root, stem, "img", f"{base}_diverse{i}.{ext}"), picture(im))
        if kernel is not None and kernel.ndim == 4:
            files["kernel"] = f"{stem}/img/{base}_kernel.{ext}"
            write_bytes(confine(root, stem, "img", f"{base}_kernel.{ext}"),
                        picture(_kernel_image(kernel, u, model.preprocess)))
        tops = []
        for rank in range(d["activation"].shape[1]):
            i = int(d["image"][u, rank])
            if i < 0:
                continue
            src_hw = tuple(data["sources"][i])
            box = field_box(field, tuple(int(v) for v in d["position"][u, rank]), hw, src_hw)
            if i not in cache:
                cache[i] = load_image(Path(folder, data["files"][i]), target_size=None, channels=channels)
            crop, thumb = _crop_and_thumb(cache[i], box)
            names = {f: f"{stem}/img/{base}_top{rank}_{f}.{ext}" for f in ("crop", "thumb")}
            write_bytes(confine(root, stem, "img", Path(names["crop"]).name), picture(crop))
            write_bytes(confine(root, stem, "img", Path(names["thumb"]).name), picture(thumb))
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
