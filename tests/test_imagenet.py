"""Tests for jaxviz.imagenet: the bundled class table is Keras's, and decoding matches Keras's."""

import hashlib
import json
import os

os.environ["KERAS_BACKEND"] = "jax"  # before any keras import: this project has no TensorFlow

from importlib import resources

import numpy as np
import pytest

from jaxviz import imagenet

# The MD5 Keras's decode_predictions checks its downloaded imagenet_class_index.json against.
KERAS_CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"


def table_path():
    return resources.files("jaxviz").joinpath("data", "imagenet_class_index.json")


def test_table_is_byte_identical_to_keras():
    assert hashlib.md5(table_path().read_bytes()).hexdigest() == KERAS_CLASS_INDEX_MD5


@pytest.mark.parametrize(
    "i, wnid, name",
    [
        (0, "n01440764", "tench"),
        (2, "n01484850", "great_white_shark"),
        (7, "n01514668", "cock"),
        (134, "n02012849", "crane"),
        (517, "n03126707", "crane"),
        (638, "n03710637", "maillot"),
        (639, "n03710721", "maillot"),
        (999, "n15075141", "toilet_tissue"),
    ],
)
def test_known_entries(i, wnid, name):
    assert imagenet.class_index()[i] == (wnid, name)
    assert imagenet.class_name(i) == name
    assert imagenet.class_name(np.int64(i)) == name


def test_class_index_is_a_fresh_list():
    idx = imagenet.class_index()
    assert len(idx) == 1000 and len({w for w, _ in idx}) == 1000
    idx.clear()
    assert len(imagenet.class_index()) == 1000
    with pytest.raises(ValueError, match="0..999"):
        imagenet.class_name(1000)


def test_decode_predictions_sorted_top():
    probs = np.random.default_rng(0).dirichlet(np.ones(1000), size=2).astype(np.float32)
    out = imagenet.decode_predictions(probs, top=3)
    assert len(out) == 2
    for p, rows in zip(probs, out, strict=True):
        assert len(rows) == 3
        want = np.argsort(-p)[:3]
        assert [r[:2] for r in rows] == [imagenet.class_index()[i] for i in want]
        assert [r[2] for r in rows] == pytest.approx(p[want].tolist())
        assert all(isinstance(r[2], float) for r in rows)
    assert len(imagenet.decode_predictions(probs)[0]) == 5
    assert len(imagenet.decode_predictions(probs, top=5000)[1]) == 1000


def test_decode_predictions_equals_keras_code(monkeypatch):
    # Keras downloads its table; pre-seed its cache with ours (byte-identical, see above) to run its code
    # offline, ties included.
    keras = pytest.importorskip("keras")
    from keras.src.applications import imagenet_utils

    monkeypatch.setattr(imagenet_utils, "CLASS_INDEX", json.loads(table_path().read_text("utf-8")))
    rng = np.random.default_rng(1)
    probs = rng.random((2, 1000)).astype(np.float32)
    probs[1, [5, 17, 900]] = 2.0  # a three-way tie at the top
    for top in (1, 5, 10):
        want = keras.applications.imagenet_utils.decode_predictions(probs, top=top)
        got = imagenet.decode_predictions(probs, top=top)
        assert [[r[:2] for r in rows] for rows in got] == [[r[:2] for r in rows] for rows in want]
        assert [[r[2] for r in rows] for rows in got] == [[float(r[2]) for r in rows] for rows in want]


def test_decode_predictions_accepts_jax():
    import jax.numpy as jnp

    logits = jnp.zeros((1, 1000)).at[0, 281].set(9.0)
    assert imagenet.decode_predictions(logits, top=1) == [[("n02123045", "tabby", 9.0)]]


@pytest.mark.parametrize("shape", [(1000,), (2, 999), (1, 1, 1000)])
def test_decode_predictions_rejects_bad_shape(shape):
    with pytest.raises(ValueError, match=r"\[N, 1000\]"):
        imagenet.decode_predictions(np.zeros(shape))


def test_decode_predictions_rejects_bad_top():
    with pytest.raises(ValueError, match="top"):
        imagenet.decode_predictions(np.zeros((1, 1000)), top=0)
