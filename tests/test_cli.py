"""The command line: Foundation subcommands and the one-line error contract."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxviz.cli import main
from jaxviz.images import sample_image_path

TINY = ["--arch", "vgg_tiny", "--weights", "random:0"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_prints_totals(capsys):
    code, out, _ = run(["summary", "vgg16"], capsys)
    assert code == 0 and "Total params: 138,357,544" in out
    code, out, _ = run(["summary", "vgg19", "--no-top", "--input-size", "150"], capsys)
    assert code == 0 and "Total params: 20,024,384" in out and "(None, 4, 4, 512)" in out


def test_predict_table_and_json(capsys):
    img = str(sample_image_path("chelsea"))
    code, out, _ = run(["predict", img, img, *TINY, "--top", "3", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert list(result) == [img]  # the same path twice gives one key
    scores = [r["score"] for r in result[img]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    code, out, _ = run(["predict", img, *TINY, "--top", "2"], capsys)
    assert code == 0 and out.count("\n") == 4 and " 1. " in out
    assert out.splitlines()[0] == "vgg_tiny (random:0): top 2 of 10 classes, probability"  # the header


def test_activations_writes_grids_and_arrays(tmp_path, capsys):
    pytest.importorskip("jaxviz.visualize.activations")
    img = str(sample_image_path("chelsea"))
    code, out, err = run(["activations", img, "--layer", "block1_conv1", "--layer", "block3_conv1", *TINY,
                          "--size", "48", "--count", "4", "--npy", "-o", str(tmp_path)], capsys)
    assert code == 0, err
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(f.endswith(".png") and "block1_conv1" in f for f in files)
    npy = [p for p in tmp_path.iterdir() if p.suffix == ".npy" and "block3_conv1" in p.name]
    assert npy and np.load(npy[0]).shape[-1] == 8


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["predict", "/nonexistent/cat.jpg", *TINY], "/nonexistent/cat.jpg"),
        (["summary", "vgg17"], "unknown architecture 'vgg17'"),
        (["predict", "{img}", "--arch", "vgg_tiny", "--weights", "random:x"], "random:SEED"),
        (["activations", "{img}", "--layer", "block9_conv1", *TINY, "-o", "{tmp}"], "valid layers"),
        (["activations", "{img}", "--layer", "block1_conv1", *TINY, "-o", "/proc/jaxviz-out"], "/proc/jaxviz-out"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(argv, needle, tmp_path, capsys):
    img = str(sample_image_path("chelsea"))
    argv = [a.format(img=img, tmp=tmp_path) for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxviz: error: ") and needle in lines[0]
    assert "Traceback" not in err


def test_corrupt_image_fails_cleanly_from_a_real_process(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "jaxviz", "predict", str(bad), *TINY],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(bad) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
