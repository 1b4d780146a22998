"""The figure set's gallery page (``index.html``): every figure with its caption, the model and photo, links to
the atlases nearby; and what the weights are, in words."""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from ..atomic import confine, write_bytes
from ..demo import CLASS_NAMES
from .context import INDEX, MANIFEST, Task


def _demo_intro(manifest: dict) -> list[str]:
    """A paragraph saying what a demo network is (nothing for other models)."""
    if manifest.get("profile") != "demo":
        return []
    arch = manifest["arch"]
    which = ("its shipped trained weights" if manifest["weights"] in ("imagenet", "demo")
             else "the weights named below")
    return [f"<p>{html.escape(arch)} is jaxviz's demo network: a narrow VGG for 64×64 images, here with {which}, "
            "trained on procedural scenes of one object over clutter in 10 classes: "
            f"{html.escape(', '.join(CLASS_NAMES))}. The photo is one such scene (a star); the figures show "
            "what the network looks at and what its filters and classes respond to.</p>"]


def _weights_description(arch, weights, profile, model_file=None) -> str:
    """What the weights are, in words: "imagenet" means the weights that ship with jaxviz where the
    architecture's profile names some (the demo networks'), a model file's its own (or seeded random ones on
    its graph)."""
    w = "random:0" if weights is None else str(weights)
    if model_file is not None:
        if w.startswith("random:"):
            return (f"random (He-initialised, seed {w.split(':', 1)[1]}) on the graph of {model_file}: untrained, "
                    "not the file's weights")
        return f"the weights stored in {model_file}"
    if profile.bundled_weights is not None and w in ("imagenet", profile.bundled_weights):
        return f"the shipped trained demo weights (jaxviz/data/{arch.name}.npz)"
    if w == "imagenet":
        return "Keras's ImageNet weights"
    if w.startswith("random:"):
        return f"random (He-initialised, seed {w.split(':', 1)[1]}): untrained"
    return f"from {w}"


def _png_width(path: Path) -> int:
    try:
        with Image.open(path) as im:
            return im.size[0]
    except (OSError, ValueError):
        return 0


def _write_index(out: Path, manifest: dict, tasks: list[Task]) -> None:
    done = manifest.get("tasks", {})
    e = html.escape
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>jaxviz figures: {e(manifest['arch'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}figure{display:inline-block;"
        "margin:0 1em 1em 0;vertical-align:top;max-width:100%}img{max-width:100%;border:1px solid #ccc}"
        "img.px{image-rendering:pixelated;width:256px}figcaption{font-size:90%;max-width:560px}"
        "pre{background:#f4f4f4;padding:1em;overflow:auto;font-size:80%}</style></head><body>",
        f"<h1>What {e(manifest['arch'])} learned</h1>",
        *_demo_intro(manifest),
        f"<p>Weights: {e(manifest.get('weights_description', str(manifest['weights'])))}; "
        f"{'photos' if len(manifest.get('images', [1])) > 1 else 'photo'}: "
        f"<code>{e(', '.join(str(i) for i in manifest.get('images', [manifest['image']])))}"
        f"</code>; jaxviz {e(str(manifest['versions'].get('jaxviz')))}, jax "
        f"{e(str(manifest['versions'].get('jax')))}. Parameters, timings and versions: "
        f'<a href="{MANIFEST}">{MANIFEST}</a>.</p>',
    ]
    for href, model in _atlases(out):
        parts.append(f'<p>Every unit of {e(model)}, its patterns and the images that excite it most: '
                     f'<a href="{e(href)}">the atlas</a>.</p>')
    section = None
    order = list(dict.fromkeys(t.section for t in tasks))  # one heading per section, in first-seen order
    for t in sorted(tasks, key=lambda t: order.index(t.section)):
        if t.section != section:
            section = t.section
            parts.append(f"<h2>{e(section)}</h2>")
        if t.name not in done:
            parts.append(f"<p><em>{e(t.name)}: not made yet (rerun the command to finish)</em></p>")
            continue
        for f in t.files:
            if f.endswith(".txt"):
                try:
                    text = (out / f).read_text("utf-8")
                except OSError:
                    text = ""
                parts.append(f'<h3><a href="{e(f)}">{e(f)}</a></h3><pre>{e(text)}</pre>')
            else:
                cap = t.captions.get(f, t.caption)
                small = ' class="px"' if _png_width(out / f) < 200 else ""  # enlarged, crisp pixels
                parts.append(f'<figure><a href="{e(f)}"><img{small} src="{e(f)}" alt="{e(cap)}"></a>'
                             f"<figcaption>{e(f)}: {e(cap)}</figcaption></figure>")
    parts.append("</body></html>")
    write_bytes(confine(out, INDEX), "\n".join(parts) + "\n")


#: Largest atlas.json the figures' index reads to link an atlas (a whole VGG16 atlas's is a few MB).
_ATLAS_BYTES = 64 << 20


def _atlases(out: Path) -> list[tuple[str, str]]:
    """``(link, model name)`` of the atlases (:func:`jaxviz.atlas`) in the folders inside ``out`` and beside it,
    found by their ``atlas.json``, in sorted order."""
    found = []
    for folder, prefix in ((out, ""), (out.parent, "../")):
        try:
            subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and p != out)
        except OSError:
            continue
        for sub in subs:
            path = sub / "atlas.json"
            try:
                if not path.is_file() or path.stat().st_size > _ATLAS_BYTES or not (sub / "index.html").is_file():
                    continue
                model = json.loads(path.read_text("utf-8")).get("model")
            except (OSError, ValueError, AttributeError):
                continue
            found.append((f"{prefix}{quote(sub.name)}/index.html", str(model)))
    return found
