"""jaxviz.weights and jaxviz.frontends.vgg_weights: every Keras HDF5 layout read by the one Keras reader, the converted
format (and the earlier VGG-only .npz), resolve/download/verify, and bad inputs.

Fast: the tiny VGG ("vgg_tiny", a few channels) written in each layout with h5py (tests/keras_files.py),
and downloads from a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
from keras_files import layer_names, seeded_params, write_keras1, write_keras3, write_legacy

import jaxviz
from jaxviz import demo, untrusted, weights
from jaxviz.errors import WeightsError
from jaxviz.frontends import keras as keras_io
from jaxviz.frontends import npz as converted
from jaxviz.frontends import vgg

ARCH = "vgg_tiny"
# VGG19-shaped and tiny: to check that a file of another architecture is recognised as such.
TINY19 = vgg.Arch("vgg19_tiny", (2, 2, 4, 4, 4), (4, 6, 8, 8, 8), (16, 12), 10, 32)


@pytest.fixture(scope="module")
def params():
    return seeded_params(ARCH, True, seed=1)


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Every test gets empty jaxviz and Keras caches and no real download URL."""
    monkeypatch.setenv("JAXVIZ_HOME", str(tmp_path / "jaxviz_home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("JAXVIZ_WEIGHTS_URL", f"http://127.0.0.1:{_closed_port()}")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_same(a: dict, b: dict):
    assert set(a) == set(b)
    for name in a:
        for leaf in ("kernel", "bias"):
            x, y = np.asarray(a[name][leaf]), np.asarray(b[name][leaf])
            assert x.dtype == np.float32 and x.shape == y.shape
            assert np.array_equal(x, y), f"{name}/{leaf} differs"


def head_dropped(p):
    return {n: v for n, v in p.items() if n not in ("fc1", "fc2", "predictions")}


# ---------------------------------------------------------------------------------------------------------
# The layouts

LAYOUTS = {
    "keras1_2016": lambda path, p, top: write_keras1(path, p, layer_names(ARCH, top)),
    "keras1_with_version_attrs": lambda path, p, top: write_keras1(
        path, p, layer_names(ARCH, top), root_attrs={"keras_version": b"1.2.2", "backend": b"tensorflow"}),
    "keras2_legacy": lambda path, p, top: write_legacy(path, p, layer_names(ARCH, top, "input_1")),
    "keras2_full_model": lambda path, p, top: write_legacy(path, p, layer_names(ARCH, top), model_weights=True),
    "keras2_chunked_attrs": lambda path, p, top: write_legacy(path, p, layer_names(ARCH, top), chunks=3),
    "keras3_legacy_writer": lambda path, p, top: write_legacy(
        path, p, layer_names(ARCH, top, "input_layer"), flavour="keras3"),
    "keras3_weights_h5": lambda path, p, top: write_keras3(path, p, ARCH, top),
    "keras3_weights_h5_unnamed": lambda path, p, top: write_keras3(path, p, ARCH, top, store_names=False),
}


def write_layout(layout, dirpath: Path, p, top=True) -> Path:
    suffix = ".weights.h5" if layout.startswith("keras3_weights") else ".h5"
    path = dirpath / f"{layout}{'' if top else '_notop'}{suffix}"
    LAYOUTS[layout](path, p, top)
    return path


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_reads_bit_exact(layout, tmp_path, params):
    path = write_layout(layout, tmp_path, params)
    assert_same(weights.read_keras_h5(path, ARCH, include_top=True), params)
    # A with-top file serves include_top=False: the head is dropped.
    assert_same(weights.read_keras_h5(path, ARCH, include_top=False), head_dropped(params))


@pytest.mark.parametrize("layout", ["keras1_2016", "keras2_legacy", "keras3_weights_h5"])
def test_notop_file(layout, tmp_path, params):
    p = head_dropped(params)
    path = write_layout(layout, tmp_path, p, top=False)
    assert_same(weights.read_keras_h5(path, ARCH, include_top=False), p)
    with pytest.raises(WeightsError, match=r"no classifier \(fc1, fc2, predictions\).*no-top.*include_top=False"):
        weights.read_keras_h5(path, ARCH, include_top=True)


def test_keras_archive(tmp_path, params):
    """A whole-model ``.keras`` archive holds ``model.weights.h5``."""
    import zipfile

    inner = write_layout("keras3_weights_h5", tmp_path, params)
    archive = tmp_path / "model.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("metadata.json", "{}")
        z.write(inner, "model.weights.h5")
    assert_same(jaxviz.load(ARCH, archive).params, params)


def test_weight_names_order_is_followed(tmp_path, params):
    """Datasets are taken in the order ``weight_names`` lists them, whatever they are called."""
    odd = {"block1_conv1": ["block1_conv1/zz_first:0", "block1_conv1/aa_second:0"]}
    path = tmp_path / "odd.h5"
    write_legacy(path, params, layer_names(ARCH), weight_names=odd)
    assert_same(weights.read_keras_h5(path, ARCH), params)


# ---------------------------------------------------------------------------------------------------------
# Files that do not match


def test_other_architecture_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(vgg.ARCHS, TINY19.name, TINY19)
    p19 = seeded_params(TINY19, False)
    path = tmp_path / "tiny19.h5"
    write_keras1(path, p19, layer_names(TINY19, False))
    with pytest.raises(WeightsError) as e:
        weights.read_keras_h5(path, ARCH, include_top=False)
    msg = str(e.value)
    assert str(path) in msg and "unexpected layers block3_conv4, block4_conv4, block5_conv4" in msg
    assert "vgg19_tiny no-top file" in msg and "--arch vgg19_tiny" in msg and "\n" not in msg
    assert_same(weights.read_keras_h5(path, TINY19, include_top=False), p19)


def test_shape_mismatch_names_the_layer(tmp_path, params):
    bad = {n: dict(v) for n, v in params.items()}
    bad["block2_conv1"]["kernel"] = np.zeros((3, 3, 4, 7), np.float32)
    path = tmp_path / "bad.h5"
    write_keras1(path, bad, layer_names(ARCH))
    with pytest.raises(WeightsError, match=r"block2_conv1 kernel has shape \(3, 3, 4, 7\) in .*bad\.h5, "
                                           r"expected \(3, 3, 4, 6\) for vgg_tiny"):
        weights.read_keras_h5(path, ARCH)


def test_channels_first_kernels_get_a_hint(tmp_path, params):
    th = {n: {"kernel": v["kernel"].transpose(3, 2, 0, 1) if v["kernel"].ndim == 4 else v["kernel"],
              "bias": v["bias"]} for n, v in params.items()}
    path = tmp_path / "th.h5"
    write_keras1(path, th, layer_names(ARCH))
    with pytest.raises(WeightsError, match="channels-first.*tf_dim_ordering_tf_kernels"):
        weights.read_keras_h5(path, ARCH)


def test_missing_layer_is_listed(tmp_path, params):
    p = {n: v for n, v in params.items() if n != "block5_conv3"}
    names = [n for n in layer_names(ARCH) if n != "block5_conv3"]
    path = tmp_path / "missing.h5"
    write_legacy(path, p, names)
    with pytest.raises(WeightsError, match=r"does not match vgg_tiny: missing layers block5_conv3$"):
        weights.read_keras_h5(path, ARCH)


@pytest.mark.parametrize("kind", ["truncated", "not_hdf5", "empty", "hdf5_not_keras"])
def test_unreadable_files(kind, tmp_path, params):
    path = tmp_path / f"{kind}.h5"
    if kind == "truncated":
        full = write_layout("keras2_legacy", tmp_path, params)
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif kind == "not_hdf5":
        path.write_text("<html>404 not found</html>\n")
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsError) as e:
        jaxviz.load(ARCH, path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg


@pytest.mark.parametrize("layout", ["keras1_2016", "keras3_weights_h5"])
@pytest.mark.parametrize("trick", ["external_link", "external_storage"])
def test_weights_from_elsewhere_are_refused(layout, trick, tmp_path, params):
    """A weight file whose dataset lives in another file is refused in one line naming the file."""
    path = write_layout(layout, tmp_path, params)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.asarray(params["block1_conv1"]["bias"]).tobytes())
    inner = "block1_conv1/block1_conv1_b_1:0" if layout == "keras1_2016" else "layers/conv2d/vars/1"
    with h5py.File(path, "r+") as f:
        group, name = inner.rsplit("/", 1)
        del f[inner]
        if trick == "external_link":
            f[group][name] = h5py.ExternalLink(str(secret), "/x")
        else:
            f[group].create_dataset(name, shape=(4,), dtype=np.float32, external=[(str(secret), 0, 16)])
    with pytest.raises(WeightsError) as e:
        jaxviz.load(ARCH, path)
    msg = str(e.value)
    assert str(path) in msg and ("external link" in msg or "external file" in msg) and "\n" not in msg


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(WeightsError, match=r"weight file .*nope\.h5 not found"):
        jaxviz.load(ARCH, tmp_path / "nope.h5")
    with pytest.raises(WeightsError, match="is a directory"):
        weights.read_keras_h5(tmp_path, ARCH)
    with pytest.raises(WeightsError, match="random:SEED"):
        jaxviz.load(ARCH, "random:abc")
    with pytest.raises(WeightsError, match="not int"):
        jaxviz.load(ARCH, 3)


# ---------------------------------------------------------------------------------------------------------
# The converted format


def test_converted_round_trip(tmp_path, params):
    src = write_layout("keras1_2016", tmp_path, params)
    dst = weights.convert(src, ARCH, tmp_path / "out" / "tiny.h5")  # the suffix becomes .npz
    assert dst == tmp_path / "out" / "tiny.npz" and dst.is_file()
    assert [p.name for p in dst.parent.iterdir()] == ["tiny.npz"]  # no temporary file left
    meta = weights.converted_metadata(dst)
    assert meta["arch"] == ARCH and meta["include_top"] is True and meta["jaxviz_version"] == jaxviz.__version__
    assert meta["source_md5"] == hashlib.md5(src.read_bytes()).hexdigest() and meta["source"] == src.name
    assert_same(weights.load_converted(dst), params)
    # Loading the .h5 and loading the converted file give identical params.
    a, b = jaxviz.load(ARCH, src), jaxviz.load(ARCH, dst)
    assert_same(a.params, b.params)
    assert b.source == str(dst)
    # A with-top converted file serves include_top=False too.
    assert_same(jaxviz.load(ARCH, dst, include_top=False).params, head_dropped(params))
    # The one converted format: the graph and "/"-joined keys, nothing needs pickles.
    with np.load(dst, allow_pickle=False) as z:
        assert "block1_conv1/kernel" in z.files and converted.GRAPH_KEY in z.files and weights.META_KEY not in z.files


def test_converted_vgg_loads_as_the_same_model(tmp_path, params):
    """A converted VGG table is a whole model: jaxviz.load(path) gives the model jaxviz.load(arch, h5) gives,
    with bit-identical params and outputs."""
    src = write_layout("keras3_weights_h5", tmp_path, params)
    dst = weights.convert(src, ARCH, tmp_path / "tiny")
    original = jaxviz.load(ARCH, src, ops="exact")
    back = jaxviz.load(str(dst), ops="exact")
    assert back.graph == original.graph == vgg.build_graph(ARCH, True)
    assert back.preprocess == original.preprocess == "caffe"
    assert_same(back.params, original.params)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(back.predict(x)), np.asarray(original.predict(x)))
    # The no-top conversion is the no-top model.
    notop = weights.convert(src, ARCH, tmp_path / "tiny_notop", include_top=False)
    assert jaxviz.load(str(notop)).graph == vgg.build_graph(ARCH, False)
    assert_same(jaxviz.load(ARCH, notop, include_top=False).params, head_dropped(params))


def test_whole_model_file_is_not_vgg_weights(tmp_path, params):
    g = vgg.build_graph(ARCH, True)
    path = converted.write_model(tmp_path / "mine", g, params, {"preprocess": "none"})  # no arch in its info
    with pytest.raises(WeightsError, match=r"is a whole model \(vgg_tiny\).*jaxviz.load\("):
        jaxviz.load(ARCH, path)


def test_one_reader_for_models_and_weight_files(tmp_path, params):
    """A VGG weights file is read by the code that reads whole models' weights: the slots of the graph are
    where a whole model's config puts them, and both ways give the same arrays."""
    graph = vgg.build_graph(ARCH, True)
    slots = keras_io.graph_slots(graph)
    assert slots["block1_conv1"].path == "/layers/conv2d" and slots["predictions"].path == "/layers/dense_2"
    assert slots["block5_conv3"] == keras_io.Slot("/layers/conv2d_12", "block5_conv3", "Conv2D",
                                                  graph.by_name["block5_conv3"].cfg)
    for layout in ("keras3_weights_h5", "keras2_full_model"):
        path = write_layout(layout, tmp_path, params)
        with keras_io.open_weights(path) as (f, size):
            got = keras_io.read_weights(f, slots, path, untrusted.Budget(path, size))
        assert_same(got, params)
        assert_same(weights.read_keras_h5(path, ARCH), got)


def test_convert_infers_include_top(tmp_path, params):
    src = write_layout("keras3_weights_h5", tmp_path, head_dropped(params), top=False)
    dst = weights.convert(src, ARCH)
    assert dst == tmp_path / "keras3_weights_h5_notop.npz"
    assert weights.converted_metadata(dst)["include_top"] is False
    with pytest.raises(WeightsError, match="no classifier.*--no-top"):
        weights.load_converted(dst, ARCH, include_top=True)


@pytest.mark.parametrize("fmt", ["one", "legacy"])
def test_load_converted_needs_no_h5py(fmt, tmp_path, params, monkeypatch):
    dst = _write(fmt, params, tmp_path / "p.npz")
    monkeypatch.setitem(sys.modules, "h5py", None)  # any `import h5py` now fails
    assert_same(jaxviz.load(ARCH, dst).params, params)


@pytest.mark.parametrize("fmt", ["one", "legacy"])
def test_converted_arch_mismatch(fmt, tmp_path, params, monkeypatch):
    monkeypatch.setitem(vgg.ARCHS, TINY19.name, TINY19)
    dst = _write(fmt, params, tmp_path / "p.npz")
    with pytest.raises(WeightsError, match=r"holds vgg_tiny weights, not vgg19_tiny; .*--arch vgg_tiny"):
        jaxviz.load(TINY19.name, dst)


def _rewrite_npz(path, edit):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    np.savez(path, **arrays)


def write_legacy_npz(path: Path, params: dict, arch: str, include_top: bool = True, **meta) -> Path:
    """The earlier VGG-only format, by its rules: an uncompressed .npz of ``<layer>/kernel`` and ``<layer>/bias``
    float32 arrays plus ``__jaxviz_meta__``, JSON (format jaxviz-weights v1, arch, include_top, …) as uint8."""
    info = {"format": "jaxviz-weights", "format_version": 1, "arch": arch, "include_top": include_top,
            "jaxviz_version": "0.1.0", "source": None, "source_md5": None, **meta}
    arrays = {f"{n}/{leaf}": np.ascontiguousarray(p[leaf], np.float32) for n, p in params.items()
              for leaf in ("kernel", "bias")}
    arrays["__jaxviz_meta__"] = np.frombuffer(json.dumps(info, sort_keys=True).encode("utf8"), np.uint8)
    np.savez(path, **arrays)
    return path


def test_legacy_npz_still_loads(tmp_path, params):
    old = write_legacy_npz(tmp_path / "old.npz", params, ARCH, True, source="x.h5")
    assert weights.converted_metadata(old)["source"] == "x.h5"
    assert_same(weights.load_converted(old), params)
    assert_same(jaxviz.load(ARCH, old).params, params)
    assert_same(jaxviz.load(ARCH, old, include_top=False).params, head_dropped(params))
    # The shipped demo weights are files of this format.
    assert weights.converted_metadata(demo.demo_weights_path("vgg_demo"))["format"] == "jaxviz-weights"
    # convert upgrades it to the one format, bit for bit.
    new = weights.convert(old, ARCH, tmp_path / "new")
    assert converted.is_model_file(new) and weights.converted_metadata(new)["source"] == "old.npz"
    assert_same(jaxviz.load(str(new)).params, params)
    notop = write_legacy_npz(tmp_path / "notop.npz", head_dropped(params), ARCH, False)
    with pytest.raises(WeightsError, match="no classifier.*--no-top"):
        jaxviz.load(ARCH, notop)
    with pytest.raises(WeightsError, match=r"is format jaxviz-weights v2; this jaxviz reads"):
        jaxviz.load(ARCH, write_legacy_npz(tmp_path / "v2.npz", params, ARCH, format_version=2))


def _write(fmt: str, params: dict, path: Path) -> Path:
    if fmt == "legacy":
        return write_legacy_npz(path, params, ARCH)
    return weights.save_converted(params, path, ARCH, True)


@pytest.mark.parametrize("fmt", ["one", "legacy"])
@pytest.mark.parametrize("edit, pattern", [
    (lambda a: a.pop("fc2/bias"), "lacks fc2/bias"),
    (lambda a: [a.pop("fc2/kernel"), a.pop("fc2/bias")], "missing layers fc2"),
    (lambda a: a.update({"extra/kernel": np.zeros(1, np.float32), "extra/bias": np.zeros(1, np.float32)}),
     "unexpected layers extra"),
    (lambda a: a.update({"stray": np.zeros(1)}), "unexpected keys stray"),
    (lambda a: a.update({"block1_conv1/kernel": np.zeros((3, 3, 3, 5), np.float32)}),
     r"block1_conv1 kernel has shape \(3, 3, 3, 5\)"),
    (lambda a: [a.pop(k) for k in (weights.META_KEY, converted.GRAPH_KEY) if k in a], "no jaxviz metadata"),
])
def test_converted_tree_is_checked(edit, pattern, fmt, tmp_path, params):
    dst = _write(fmt, params, tmp_path / "p.npz")
    _rewrite_npz(dst, edit)
    with pytest.raises(WeightsError, match=pattern):
        jaxviz.load(ARCH, dst)


def test_save_converted_checks_params(tmp_path, params):
    with pytest.raises(WeightsError, match="params have layers fc1, fc2, predictions"):
        weights.save_converted(params, tmp_path / "p.npz", ARCH, include_top=False)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", ["one", "legacy"])
def test_corrupt_npz(fmt, tmp_path, params):
    dst = _write(fmt, params, tmp_path / "p.npz")
    dst.write_bytes(dst.read_bytes()[:1000])
    with pytest.raises(WeightsError, match=r"cannot read .*p\.npz"):
        jaxviz.load(ARCH, dst)


# ---------------------------------------------------------------------------------------------------------
# resolve, download, verify


@pytest.fixture
def tiny_known(tmp_path, params, monkeypatch):
    """Publishes a vgg_tiny file (with and without top) under a canonical-style name, served on 127.0.0.1."""
    served = tmp_path / "served"
    (served / ARCH).mkdir(parents=True)
    files = {}
    for top in (True, False):
        name = f"{ARCH}_weights_tf_dim_ordering_tf_kernels{'' if top else '_notop'}.h5"
        path = served / ARCH / name
        write_keras1(path, params if top else head_dropped(params), layer_names(ARCH, top))
        data = path.read_bytes()
        kf = weights.KnownFile(name, ARCH, top, hashlib.md5(data).hexdigest(), len(data))
        monkeypatch.setitem(weights.KNOWN_FILES, (ARCH, top), kf)
        files[top] = (kf, path)
    return files


@pytest.fixture
def server(tmp_path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(Quiet, directory=str(tmp_path / "served")))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _cache_listing():
    d = weights.cache_dir()
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_download_verifies_and_caches(tiny_known, server, monkeypatch, capsys):
    monkeypatch.setenv("JAXVIZ_WEIGHTS_URL", server + "/")
    kf, _ = tiny_known[True]
    path = weights.download(ARCH)
    assert path == weights.cache_dir() / kf.filename and _cache_listing() == [kf.filename]
    assert weights.verify(path) == kf.md5 == weights.verify(path, ARCH, True)
    assert kf.filename in capsys.readouterr().err  # the progress bar goes to stderr
    model = jaxviz.load(ARCH, "imagenet")
    assert model.source == f"imagenet:{path}"
    assert_same(model.params, jaxviz.load(ARCH, tiny_known[True][1]).params)


def test_download_md5_mismatch_leaves_nothing(tiny_known, server, monkeypatch):
    monkeypatch.setenv("JAXVIZ_WEIGHTS_URL", server)
    kf, _ = tiny_known[True]
    monkeypatch.setitem(weights.KNOWN_FILES, (ARCH, True), weights.KnownFile(kf.filename, ARCH, True, "0" * 32))
    with pytest.raises(WeightsError) as e:
        weights.download(ARCH)
    msg = str(e.value)
    assert f"md5 {kf.md5}, expected {'0' * 32}" in msg and kf.filename in msg
    assert _cache_listing() == []


def test_download_http_error(tiny_known, server, monkeypatch):
    monkeypatch.setenv("JAXVIZ_WEIGHTS_URL", server + "/elsewhere")
    with pytest.raises(WeightsError, match="HTTP 404"):
        weights.download(ARCH)
    assert _cache_listing() == []


def test_offline_error_names_file_places_and_fix(tiny_known):
    kf, _ = tiny_known[True]
    with pytest.raises(WeightsError) as e:
        jaxviz.load(ARCH, "imagenet")
    msg = str(e.value)
    assert msg.startswith(f"{kf.filename} is not in {weights.cache_dir()} or {weights.keras_cache_dirs()[0]}")
    assert "could not be downloaded from http://127.0.0.1:" in msg
    assert f"jaxviz weights download {ARCH}" in msg and "\n" not in msg
    assert _cache_listing() == []


def test_interrupted_download_leaves_nothing(tiny_known, monkeypatch):
    import urllib.request

    class Response:
        headers = {"Content-Length": "10000000"}
        calls = 0

        def read(self, n):
            Response.calls += 1
            if Response.calls > 2:
                raise KeyboardInterrupt
            return b"x" * n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Response())
    with pytest.raises(KeyboardInterrupt):
        weights.download(ARCH)
    assert _cache_listing() == []


def test_resolve_order(tiny_known, tmp_path, params):
    kf, src = tiny_known[True]
    keras_models = weights.keras_cache_dirs()[0]
    assert keras_models == tmp_path / "keras_home" / "models"  # KERAS_HOME is honoured
    with pytest.raises(WeightsError, match="is not in"):
        weights.imagenet_file(ARCH, download=False)
    # Keras's cache ...
    keras_models.mkdir(parents=True)
    (keras_models / kf.filename).write_bytes(src.read_bytes())
    assert weights.imagenet_file(ARCH) == keras_models / kf.filename
    # ... then the jaxviz cache's .h5 ...
    weights.cache_dir().mkdir(parents=True)
    (weights.cache_dir() / kf.filename).write_bytes(src.read_bytes())
    assert weights.imagenet_file(ARCH) == weights.cache_dir() / kf.filename
    # ... and a converted file there comes first.
    npz = weights.convert(src, ARCH)
    assert npz == weights.cache_dir() / weights.converted_filename(ARCH, True)
    assert weights.imagenet_file(ARCH) == npz
    assert_same(jaxviz.load(ARCH, "imagenet").params, params)


def test_resolve_no_top_uses_cached_top_file(tiny_known, params):
    kf, src = tiny_known[True]
    keras_models = weights.keras_cache_dirs()[0]
    keras_models.mkdir(parents=True)
    (keras_models / kf.filename).write_bytes(src.read_bytes())
    assert weights.imagenet_file(ARCH, include_top=False) == keras_models / kf.filename
    assert_same(jaxviz.load(ARCH, "imagenet", include_top=False).params, head_dropped(params))


def test_resolve_skips_and_reports_a_corrupt_cached_file(tiny_known, server, monkeypatch):
    kf, src = tiny_known[True]
    keras_models = weights.keras_cache_dirs()[0]
    keras_models.mkdir(parents=True)
    bad = keras_models / kf.filename
    bad.write_bytes(src.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match=rf"{bad} has md5 [0-9a-f]{{32}}, expected {kf.md5}"):
        weights.imagenet_file(ARCH, download=False)
    with pytest.raises(WeightsError, match="md5 .* expected"):
        weights.verify(bad)
    monkeypatch.setenv("JAXVIZ_WEIGHTS_URL", server)  # with a download allowed, a good copy is fetched
    assert weights.imagenet_file(ARCH) == weights.cache_dir() / kf.filename


def test_verify_size_and_unknown_files(tiny_known, tmp_path):
    kf, src = tiny_known[True]
    short = tmp_path / kf.filename
    short.write_bytes(src.read_bytes()[:100])
    with pytest.raises(WeightsError, match=f"has 100 bytes, expected {kf.size:,}"):
        weights.verify(short)
    other = tmp_path / "mine.h5"
    other.write_bytes(b"123")
    with pytest.raises(WeightsError, match="not one of Keras's published files"):
        weights.verify(other)


def test_imagenet_for_an_arch_without_published_weights():
    with pytest.raises(WeightsError, match="there are no ImageNet weights for vgg_tiny"):
        jaxviz.load(ARCH, "imagenet")


def test_published_files_and_manifest():
    assert weights.weight_filename("vgg16", False) == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert weights.file_url("vgg19").startswith("http://127.0.0.1:")  # JAXVIZ_WEIGHTS_URL (fixture)
    manifest = json.loads((Path(__file__).parents[1] / "weights" / "manifest.json").read_text())
    rows = {(f["arch"], f["include_top"]): f for f in manifest["files"]}
    assert len(rows) == 4
    for (arch, top), f in rows.items():
        kf = weights.KNOWN_FILES[(arch, top)]
        assert (f["name"], f["md5"], f["size"]) == (kf.filename, kf.md5, kf.size)
        assert f["url"] == f"{weights.KERAS_BASE_URL}/{arch}/{kf.filename}"
