"""Bad input on the command line, as a new user types it: exit status, one message line, nothing left behind.

Each row runs the real command in-process (``jaxviz.cli.main``) on the shipped demo model or the tiny
random one, and asserts: the exit status; stderr is exactly one line, ``jaxviz: error: …`` naming the
problem (the row's needle); no traceback; no file or folder created under the test's folder (no empty
output folder, no temporary file). Ctrl-C is checked on a real process (exit 130).
"""

import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import pytest

from jaxviz.cli import main
from jaxviz.demo import demo_image_path

DEMO = ["--arch", "vgg_demo"]
TINY = ["--arch", "vgg_tiny", "--weights", "random:0"]


def _huge_png(path, side=20000):
    """A PNG whose header says side×side pixels (a few bytes on disk): PIL refuses it before decoding."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture
def fx(tmp_path):
    """Inputs: {img} the demo scene, {txt} a text file, {bad} a broken JPEG, {empty} an image-less folder,
    {huge} a 20000×20000 PNG header, {file} a plain file, {out} an output folder that does not exist yet."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "notes.txt").write_text("not an image\n")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "empty").mkdir()
    (d / "afile").write_text("x\n")
    _huge_png(d / "huge.png")
    return {"img": str(demo_image_path()), "txt": str(d / "notes.txt"), "bad": str(d / "broken.jpg"),
            "empty": str(d / "empty"), "huge": str(d / "huge.png"), "file": str(d / "afile"),
            "out": str(tmp_path / "out"), "tmp": str(tmp_path)}


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# argv (with {placeholders}), exit status, a piece of the one error line
ROWS = [
    # explain
    (["explain", "{img}", *DEMO, "--method", "saliency", "--target", "5000", "-o", "{out}"], 2,
     "--target 5000 out of range: vgg_demo has 10 classes (0..9)"),
    (["explain", "{img}", *DEMO, "--method", "saliency", "--target", "-1", "-o", "{out}"], 2,
     "argument --target: must be at least 0, got -1"),
    (["explain", "{img}", *DEMO, "--method", "saliency", "--target", "star", "-o", "{out}"], 2,
     "argument --target: 'star' is not a whole number"),
    (["explain", "{img}", *DEMO, "--method", "salincy", "-o", "{out}"], 2, "unknown attribution method 'salincy'"),
    (["explain", "{img}", *DEMO, "-o", "{out}"], 2, "name a method with --method; valid methods: saliency"),
    (["explain", "{img}", *DEMO, "--method", ",", "-o", "{out}"], 2, "names no method"),
    (["explain", "{img}", *DEMO, "--method", "saliency"], 2, "required: -o/--output (see `jaxviz explain --help`)"),
    (["explain", "{img}", *DEMO, "--method", "saliency", "-o", "{file}/sub"], 2, "is a file, not a folder"),
    (["explain", "{img}", *DEMO, "--method", "saliency", "-o", "/proc/jaxviz-out"], 2, "/proc/jaxviz-out"),
    # evaluate
    (["evaluate", "{img}", *DEMO, "--method", "saliency", "--json", "{file}/x.json"], 2,
     "cannot write --json {file}/x.json: {file} is a file, not a folder"),
    (["evaluate", "{img}", *DEMO, "--method", "saliency", "--json", "/proc/self/x.json"], 2,
     "folder /proc/self is not writable"),
    (["evaluate", "{img}", *DEMO, "--method", "saliency", "--json", "{tmp}"], 2, "is a folder; give a file path"),
    (["evaluate", "{img}", *DEMO, "--method", "saliency", "--box", "1,2,3"], 2, "cannot read box '1,2,3'"),
    (["evaluate", "{img}", *DEMO, "--method", "saliency", "--box", "10,10,5,5"], 2, "empty box"),
    (["evaluate", "{img}", *DEMO, "--method", "saliency", "--box", "0,0,100,100"], 2,
     "reaches outside the 64×64 model input"),
    (["evaluate", "{img}", *DEMO, "--method", "saliency", "--steps", "0"], 2, "argument --steps: must be at least 1"),
    (["evaluate", "{img}", *DEMO, "--method", "saliency", "--tolerance", "-1"], 2, "argument --tolerance"),
    (["evaluate", "{img}", *DEMO, "--method", "saliency", "--sanity", "maybe"], 2, "invalid choice: 'maybe'"),
    (["evaluate", "{img}", *DEMO, "--method", "gradcam,nope"], 2, "unknown attribution method 'nope'"),
    (["evaluate", "{img}", *DEMO, "--method", "saliency", "--target", "10"], 2, "--target 10 out of range"),
    # activations
    (["activations", "{img}", *DEMO, "--size", "-5", "--layer", "block1_conv1", "-o", "{out}"], 2,
     "argument --size: must be at least 1, got -5"),
    (["activations", "{img}", *DEMO, "--count", "0", "--layer", "block1_conv1", "-o", "{out}"], 2,
     "argument --count: must be at least 1, got 0"),
    (["activations", "{img}", *DEMO, "--count", "-2", "--layer", "block1_conv1", "-o", "{out}"], 2,
     "argument --count: must be at least 1, got -2"),
    (["activations", "{img}", *DEMO, "-o", "{out}"], 2, "name at least one layer with --layer"),
    (["activations", "{img}", *DEMO, "--layer", "block9_conv1", "-o", "{out}"], 2, "valid layers"),
    (["activations", "{img}", *DEMO, "--layer", "block2_conv1", "--size", "1", "-o", "{out}"], 2,
     "--size 1 is too small: vgg_demo up to block2_conv1 needs at least 2 px"),
    # predict and images
    (["predict", "{img}", *DEMO, "--weights", "random:-1"], 2, "use random:SEED with a whole number SEED >= 0"),
    (["predict", "{img}", "--arch", "vgg_tiny", "--weights", "random:x"], 2, "random:SEED"),
    (["predict", "{img}", *DEMO, "--top", "0"], 2, "argument --top: must be at least 1, got 0"),
    (["predict", "{img}", *DEMO, "--top", "-1"], 2, "argument --top: must be at least 1, got -1"),
    (["predict", "{img}", *DEMO, "--top", "x"], 2, "argument --top: 'x' is not a whole number"),
    (["predict", "/nonexistent/cat.jpg", *DEMO], 2, "image file not found: '/nonexistent/cat.jpg'"),
    (["predict", "{txt}", *DEMO], 2, "is not an image file PIL can read"),
    (["predict", "{bad}", *DEMO], 2, "cannot decode image"),
    (["predict", "{empty}", *DEMO], 2, "has no image files"),
    (["predict", "{huge}", *DEMO], 2, "is too large (400 megapixels"),
    (["predict", "{img}", "--arch", "vgg17"], 2, "unknown architecture 'vgg17'"),
    (["predict", "{img}", *DEMO, "--weights", "/nonexistent.npz"], 2, "weight file /nonexistent.npz not found"),
    (["predict", "{img}", "--frobnicate"], 2, "unrecognized arguments: --frobnicate (see `jaxviz predict --help`)"),
    ([], 2, "the following arguments are required: COMMAND"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    # patterns
    (["patterns", *DEMO, "--layer", "block1_conv1", "--filters", "5:2", "-o", "{out}"], 2,
     "--filters '5:2' selects no filters"),
    (["patterns", *DEMO, "--layer", "block1_conv1", "--filters", "0:0", "-o", "{out}"], 2,
     "--filters '0:0' selects no filters"),
    (["patterns", *DEMO, "--layer", "block1_conv1", "--filters", "", "-o", "{out}"], 2,
     "--filters '' selects no filters"),
    (["patterns", *DEMO, "--layer", "block1_conv1", "--filters", "8", "-o", "{out}"], 2,
     "--filters 8 out of range: the layer has 8 filters (0..7)"),
    (["patterns", *DEMO, "--layer", "block1_conv1", "--filters", "a:b", "-o", "{out}"], 2, "cannot read --filters"),
    (["patterns", *DEMO, "--layer", "fc1", "--size", "32", "-o", "{out}"], 2, "need --size 64"),
    (["patterns", *DEMO, "--layer", "block1_conv1", "--size", "0", "-o", "{out}"], 2, "argument --size"),
    (["patterns", *DEMO, "--layer", "flatten", "-o", "{out}"], 2, "patterns need a conv, pool or dense layer"),
    (["patterns", *DEMO, "--layer", "block1_conv1", "--num-processes", "2", "-o", "{out}"], 2,
     "--num-processes needs --coordinator"),
    # kernels, deepvis, gradcam
    (["kernels", *DEMO, "--layer", "block1_pool", "-o", "{out}"], 2, "has no convolution kernel"),
    (["kernels", *DEMO, "--filters", "0", "-o", "{out}"], 2, "argument --filters: must be at least 1"),
    (["deepvis", *DEMO, "--class", "10", "-o", "{out}"], 2, "--class 10 out of range: vgg_demo has 10 classes"),
    (["deepvis", *DEMO, "--class", "1", "--size", "32", "-o", "{out}"], 2,
     "--size 32: vgg_demo's classifier (a flatten head) takes only 64×64 images; drop --size or use --size 64"),
    (["deepvis", *TINY, "--class", "1", "--size", "16", "-o", "{out}"], 2, "drop --size or use --size 32"),
    (["deepvis", *DEMO, "--class", "1", "--seed", "-3", "-o", "{out}"], 2, "argument --seed"),
    (["gradcam", "{img}", *DEMO, "--class", "99", "-o", "{out}"], 2, "--class 99 out of range"),
    (["gradcam", "{img}", *DEMO, "--top", "0", "-o", "{out}"], 2, "argument --top: must be at least 1"),
    (["gradcam", "{img}", *DEMO, "--layer", "fc1", "-o", "{out}"], 2, "Grad-CAM needs a conv layer"),
    (["gradcam", "{img}", *DEMO, "--class", "1", "--top", "2", "-o", "{out}"], 2, "not allowed with argument"),
    # atlas
    (["atlas", *DEMO, "--images", "{empty}", "-o", "{out}"], 2, "has no image files"),
    (["atlas", *DEMO, "--images", "{file}", "-o", "{out}"], 2, "is not a folder; give a folder of image files"),
    (["atlas", *DEMO, "--images", "{tmp}/in", "--units", "5:2", "-o", "{out}"], 2, "--units '5:2' selects no units"),
    (["atlas", *DEMO, "--images", "{tmp}/in", "--layers", "block9_conv1", "-o", "{out}"], 2, "valid layers"),
    (["atlas", *DEMO, "--images", "{tmp}/in", "--layers", "flatten", "-o", "{out}"], 2, "has no spatial map"),
    (["atlas", *DEMO, "--images", "{tmp}/in", "--top", "0", "-o", "{out}"], 2, "argument --top: must be at least 1"),
    # the rest
    (["summary", "vgg17"], 2, "unknown architecture 'vgg17'"),
    (["summary", "vgg16", "--input-size", "-3"], 2, "argument --input-size: must be at least 1"),
    (["weights", "path", "vgg17"], 2, "unknown architecture 'vgg17'"),
    (["weights", "fetch", "vgg16"], 2, "invalid choice: 'fetch'"),
    (["convert", "/nonexistent.h5", "--arch", "vgg16", "-o", "{out}/x"], 2, "/nonexistent.h5 not found"),
    (["compare-keras", *DEMO, "/nonexistent.png"], 2, "image file not found: '/nonexistent.png'"),
    (["figures", *DEMO, "--image", "/nonexistent.png", "-o", "{out}"], 2, "image file not found"),
]


@pytest.mark.parametrize("argv, code, needle", ROWS, ids=[" ".join(r[0][:2]) + f"-{i}" for i, r in enumerate(ROWS)])
def test_bad_input_is_one_line_and_leaves_nothing(argv, code, needle, fx, tmp_path, capsys):
    before = _tree(tmp_path)
    argv = [a.format(**fx) for a in argv]
    got = main(argv)
    out, err = capsys.readouterr()
    assert got == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxviz: error: ") and needle.format(**fx) in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert _tree(tmp_path) == before  # no output folder, no temporary file, nothing half-written


def test_the_table_covers_every_command_once_per_row():
    import argparse

    from jaxviz.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    covered = {argv[0] for argv, _, _ in ROWS if argv}
    assert set(sub.choices) <= covered, f"commands without a bad-input row: {sorted(set(sub.choices) - covered)}"
    assert len({tuple(argv) for argv, _, _ in ROWS}) == len(ROWS)  # no row twice


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = tmp_path / "dv"
    proc = subprocess.Popen([sys.executable, "-m", "jaxviz", "deepvis", *DEMO, "--class", "1", "--steps", "100000",
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(8)  # imports, the model load and the first steps
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("jaxviz: interrupted")  # own line
    assert not out.exists() or not any(p.name.endswith(".tmp") for p in out.rglob("*"))
