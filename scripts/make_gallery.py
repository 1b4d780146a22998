"""Makes the README's gallery: files of the demo network's figure set, copied as ``jaxviz figures`` wrote them.

Runs ``jaxviz figures --arch vgg_demo`` through the library (:func:`jaxviz.figures.make_figures`, resumable:
a rerun reuses a finished set), then copies a few of its files byte for byte into scripts/gallery/, so what
the README shows is what the command makes.

    python3 scripts/make_gallery.py                   # figures in /tmp/jaxviz_gallery_figures
    python3 scripts/make_gallery.py --figures DIR     # keep the full figure set somewhere else
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a source checkout without installing

from jaxviz.atomic import write_bytes  # noqa: E402
from jaxviz.figures import make_figures  # noqa: E402

GALLERY = ROOT / "scripts" / "gallery"
BUDGET = 1_500_000  # bytes, all files together: a warning past it

#: (figure-set file, gallery file): what a first look at the demo network shows.
PICKS = [
    ("gradcam_top5.png", "demo_gradcam_top5.png"),
    ("deepvis.png", "demo_deepvis.png"),
    ("patterns_regularised_block1_conv1.png", "demo_patterns_block1_conv1.png"),
    ("patterns_regularised_block3_conv1.png", "demo_patterns_block3_conv1.png"),
    ("fmaps_block1_conv1.png", "demo_fmaps_block1_conv1.png"),
    ("fmaps_block2_conv2.png", "demo_fmaps_block2_conv2.png"),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--figures", default="/tmp/jaxviz_gallery_figures", help="where the full figure set goes")
    args = ap.parse_args(argv)

    figs = Path(args.figures)
    t = time.perf_counter()
    manifest = make_figures("vgg_demo", out_dir=figs, progress=True)
    print(f"figure set in {figs} ({time.perf_counter() - t:.0f} s this run; "
          f"{manifest['total_seconds']:.0f} s of tasks in all)")

    GALLERY.mkdir(parents=True, exist_ok=True)
    out = {dst: (figs / src).read_bytes() for src, dst in PICKS}
    for old in GALLERY.glob("*.png"):
        if old.name not in out:
            old.unlink()
    total = 0
    for name, data in out.items():
        write_bytes(GALLERY / name, data)
        total += len(data)
        print(f"{GALLERY / name}: {len(data) / 1024:.1f} KB")
    print(f"total {total / 1024:.1f} KB")
    if total > BUDGET:
        print(f"warning: the gallery is over {BUDGET / 1e6:.1f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
