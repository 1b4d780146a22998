"""The atlas site's pages and pictures: a unit's page, a layer's sortable grid, the index; the PNGs of crops,
thumbnails with the receptive field drawn, and first-layer kernels."""

from __future__ import annotations

import html
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: Side, in pixels, of the crops and of the thumbnails' longer side.
CROP, THUMB = 64, 96


#: The site's picture formats: PNG (lossless) and WebP (lossy at quality 90, several times smaller).
IMAGE_FORMATS = ("png", "webp")


def _picture(array, image_format: str = "png") -> bytes:
    """``array`` encoded as PNG or WebP (Pillow's encoders; the same array gives the same bytes)."""
    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(array))
    if image_format == "webp":
        img.save(buf, format="WEBP", quality=90, method=4)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


def _crop_and_thumb(source: np.ndarray, box: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The box's crop (longer side :data:`CROP`) and the whole image (longer side :data:`THUMB`) with the box
    drawn in red."""
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
