"""Makes the README's gallery: the demo network's figure set, a few figures of it shrunk into scripts/gallery/.

Runs ``jaxviz figures --arch vgg_demo`` through the library (:func:`jaxviz.figures.make_figures`, resumable:
a rerun reuses a finished set), then writes a curated subset as small PNGs: wide figures are downscaled to
at most ``--width`` px and every image is quantised to a 128-colour palette, so the whole gallery stays
under a few hundred KB in the repository.

    python3 scripts/make_gallery.py                   # figures in /tmp/jaxviz_gallery_figures
    python3 scripts/make_gallery.py --figures DIR     # keep the full figure set somewhere else
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a source checkout without installing

from jaxviz.atomic import write_bytes  # noqa: E402
from jaxviz.figures import make_figures  # noqa: E402

GALLERY = ROOT / "scripts" / "gallery"
BUDGET = 300_000  # bytes, all files together

#: (figure-set file, gallery file): what a first look at the demo network shows.
PICKS = [
    ("gradcam_top5.png", "demo_gradcam_top5.png"),
    ("deepvis.png", "demo_deepvis.png"),
    ("fmaps_block1_conv1.png", "demo_fmaps_block1_conv1.png"),
    ("fmaps_block2_conv2.png", "demo_fmaps_block2_conv2.png"),
]
#: Pattern grids stacked into one picture: the first 8 filters of each layer, one row per layer.
PATTERN_ROWS = [("regularised", "block1_conv1"), ("regularised", "block2_conv1"), ("regularised", "block3_conv1"),
                ("regularised", "block4_conv1")]


def _png_bytes(img: Image.Image, colours: int) -> bytes:
    """Palette-quantised PNG bytes (no dithering: flat areas stay flat and compress well)."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    q = img.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    q.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _shrink(img: Image.Image, width: int) -> Image.Image:
    if img.width <= width:
        return img
    return img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)


def _pattern_rows(label_width: int = 96) -> Image.Image:
    """The first 8 patterns of each layer in PATTERN_ROWS, one row per layer, the layer named on the left.

    Computed here, with the figure set's settings, and shown as the figures show them
    (:func:`jaxviz.visualize.patterns.display_images`): the figure set's grids carry titles and labels, and
    a filter's pattern does not depend on which other filters are computed with it.
    """
    from PIL import ImageDraw

    from jaxviz import load
    from jaxviz.figures import DEMO_PATTERN_STEP_SIZE
    from jaxviz.plotting import image_grid
    from jaxviz.visualize.patterns import display_images, filter_patterns

    model = load("vgg_demo", include_top=False)
    rows, names = [], []
    for method, layer in PATTERN_ROWS:
        x = filter_patterns(model, layer, range(8), size=64, method=method, seed=0,
                            step_size=DEMO_PATTERN_STEP_SIZE.get(method), progress=False)
        images = display_images(x, method, model.preprocess, bgr_to_rgb=model.preprocess == "caffe")
        rows.append(image_grid(images, cols=8, margin=5, fill=0))
        names.append((layer, sum(r.shape[0] for r in rows[:-1]) + 5 * (len(rows) - 1), rows[-1].shape[0]))
    gap = np.full((5, rows[0].shape[1], 3), 255, np.uint8)
    body = np.concatenate([x for r in rows for x in (r, gap)][:-1])
    img = Image.new("RGB", (label_width + body.shape[1], body.shape[0]), "white")
    img.paste(Image.fromarray(body), (label_width, 0))
    draw = ImageDraw.Draw(img)
    for layer, top, height in names:
        draw.text((4, top + height // 2 - 6), layer, fill="black")
    return img


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--figures", default="/tmp/jaxviz_gallery_figures", help="where the full figure set goes")
    ap.add_argument("--width", type=int, default=900, help="widest gallery image, px (default %(default)s)")
    ap.add_argument("--colours", type=int, default=128, help="palette size (default %(default)s)")
    args = ap.parse_args(argv)

    figs = Path(args.figures)
    t = time.perf_counter()
    manifest = make_figures("vgg_demo", out_dir=figs, progress=True)
    print(f"figure set in {figs} ({time.perf_counter() - t:.0f} s this run; "
          f"{manifest['total_seconds']:.0f} s of tasks in all)")

    GALLERY.mkdir(parents=True, exist_ok=True)
    out = {}
    for src, dst in PICKS:
        out[dst] = _png_bytes(_shrink(Image.open(figs / src), args.width), args.colours)
    out["demo_patterns.png"] = _png_bytes(_shrink(_pattern_rows(), args.width), args.colours)
    for old in GALLERY.glob("*.png"):
        if old.name not in out:
            old.unlink()
    total = 0
    for name, data in out.items():
        write_bytes(GALLERY / name, data)
        total += len(data)
        print(f"{GALLERY / name}: {len(data) / 1024:.1f} KB")
    print(f"total {total / 1024:.1f} KB (budget {BUDGET / 1024:.0f} KB)")
    if total > BUDGET:
        print("over budget: lower --width or --colours", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
