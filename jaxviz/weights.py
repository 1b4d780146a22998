"""Weights: resolve, download, verify, read every Keras HDF5 layout, and the converted pickle-free format.

``jaxviz.load(arch, weights)`` calls :func:`load_params`, which accepts:

* ``"imagenet"`` — Keras's published VGG files (:data:`KNOWN_FILES`), found by :func:`resolve` in the
  jaxviz cache (:func:`cache_dir`; a converted ``.npz`` there is preferred), then in Keras's cache
  (``$KERAS_HOME/models`` or ``~/.keras/models``), then downloaded from the URL Keras uses and checked
  against Keras's md5.
* a path: a Keras HDF5 file (``.h5``, ``.hdf5``, ``.weights.h5``, ``.keras``), read by
  :func:`read_keras_h5`, or a converted ``.npz`` (:func:`save_converted` / :func:`load_converted`).
* ``None`` or ``"random:SEED"`` — deterministic He-initialised weights (nothing is read).

Params are ``{layer: {"kernel": HWIO or [in, out], "bias": [out]}}`` of float32 numpy arrays, keyed by
Keras's layer names, so every layout is a key-for-key copy; every file is checked against
:func:`jaxviz.vgg.weighted_layers` and errors name the layer, the file and the fix.

Top / no-top: a file *with* the classifier may be loaded with ``include_top=False`` (``fc1``, ``fc2`` and
``predictions`` are dropped, as Keras's by-name loading would); a no-top file asked for with the top is an
error naming the file to use instead. For ``"imagenet"`` without the top, a with-top file already in a
cache is used before the smaller no-top file is downloaded.

No I/O happens at import; ``h5py`` is imported only to read HDF5 files (the converted format needs numpy
alone), and ``urllib`` only to download.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import untrusted, vgg
from .atomic import atomic_open, file_digest
from .errors import WeightsError
from .version import __version__

# ---------------------------------------------------------------------------------------------------------
# The published files


@dataclasses.dataclass(frozen=True)
class KnownFile:
    """One of Keras's published ImageNet weight files (``keras/src/applications/vgg16.py``, ``vgg19.py``)."""

    filename: str
    arch: str
    include_top: bool
    md5: str
    size: int | None = None  # bytes

    @property
    def url_path(self) -> str:
        """Path under the base URL: Keras's bucket keeps each architecture in its own folder."""
        return f"{self.arch}/{self.filename}"


#: Where Keras downloads its application weights from (``WEIGHTS_PATH`` in keras/src/applications/vgg16.py).
KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications"
#: The same files as first released (flat layout, no per-architecture folder); for the README only.
GITHUB_RELEASE_URL = "https://github.com/fchollet/deep-learning-models/releases/download/v0.1"

#: ``(arch, include_top) -> KnownFile``; md5s are the ``file_hash`` values Keras checks, sizes in bytes.
#: Tests add entries here (e.g. for "vgg_tiny") to exercise downloads against a local server.
KNOWN_FILES: dict[tuple[str, bool], KnownFile] = {
    ("vgg16", True): KnownFile("vgg16_weights_tf_dim_ordering_tf_kernels.h5", "vgg16", True,
                               "64373286793e3c8b2b4e3219cbf3544b", 553467096),
    ("vgg16", False): KnownFile("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "vgg16", False,
                                "6d6bbae143d832006294945121d1f1fc", 58889256),
    ("vgg19", True): KnownFile("vgg19_weights_tf_dim_ordering_tf_kernels.h5", "vgg19", True,
                               "cbe5617147190e668d6c5d5026f83318", 574710816),
    ("vgg19", False): KnownFile("vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "vgg19", False,
                                "253f8cb515780f3b799900260a226db6", 80134624),
}

#: Seconds without data before a download gives up.
DOWNLOAD_TIMEOUT = 60.0


def known_file(arch: str | vgg.Arch, include_top: bool = True) -> KnownFile:
    """The published file for ``arch`` (with or without its top); WeightsError if Keras publishes none."""
    name = vgg.get_arch(arch).name
    try:
        return KNOWN_FILES[(name, bool(include_top))]
    except KeyError:
        archs = sorted({a for a, _ in KNOWN_FILES})
        raise WeightsError(
            f"there are no ImageNet weights for {name} (Keras publishes them for {', '.join(archs)}); "
            "use weights=None or random:SEED, or give a weight file path"
        ) from None


def weight_filename(arch: str | vgg.Arch, include_top: bool = True) -> str:
    """Keras's file name, e.g. ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``."""
    return known_file(arch, include_top).filename


def converted_filename(arch: str | vgg.Arch, include_top: bool = True) -> str:
    """The name :func:`resolve` looks for in the jaxviz cache: Keras's name with the ``.npz`` suffix."""
    return Path(weight_filename(arch, include_top)).with_suffix(".npz").name


# ---------------------------------------------------------------------------------------------------------
# Places


def cache_dir() -> Path:
    """The jaxviz weight cache: ``$JAXVIZ_HOME`` if set, else ``~/.cache/jaxviz`` (not created here)."""
    env = os.environ.get("JAXVIZ_HOME")
    return Path(env).expanduser() if env else Path("~/.cache/jaxviz").expanduser()


def keras_cache_dirs() -> list[Path]:
    """Where Keras keeps downloaded application weights, as ``keras.utils.get_file`` chooses it.

    ``$KERAS_HOME/models`` if ``KERAS_HOME`` is set, else ``~/.keras/models``, and ``/tmp/.keras/models``
    when the home folder is not writable (Keras falls back there).
    """
    env = os.environ.get("KERAS_HOME")
    if env:
        return [Path(env).expanduser() / "models"]
    dirs = [Path("~/.keras").expanduser() / "models"]
    home = Path("~").expanduser()
    if not os.access(home, os.W_OK):
        dirs.append(Path(tempfile.gettempdir()) / ".keras" / "models")
    return dirs


def base_url() -> str:
    """Base URL of the published files: ``$JAXVIZ_WEIGHTS_URL`` (a mirror, or file://) or Keras's bucket."""
    return (os.environ.get("JAXVIZ_WEIGHTS_URL") or KERAS_BASE_URL).rstrip("/")


def file_url(arch: str | vgg.Arch, include_top: bool = True) -> str:
    return f"{base_url()}/{known_file(arch, include_top).url_path}"


def _fix_hint(kf: KnownFile) -> str:
    cmd = f"jaxviz weights download {kf.arch}{'' if kf.include_top else ' --no-top'}"
    return (f"run `{cmd}` where there is internet, or copy Keras's file {kf.filename} into "
            f"{_tilde(keras_cache_dirs()[0])}/ or {_tilde(cache_dir())}/")


def _tilde(path: Path) -> str:
    home = str(Path("~").expanduser())
    s = str(path)
    return "~" + s[len(home):] if home != "/" and (s == home or s.startswith(home + os.sep)) else s


# ---------------------------------------------------------------------------------------------------------
# md5


_MD5_MEMO: dict[tuple[str, int, int], str] = {}


def file_md5(path: str | os.PathLike) -> str:
    """The md5 of a file, remembered per (path, size, mtime) so a cached file is hashed once per process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MD5_MEMO:
        _MD5_MEMO[key] = file_digest(path, "md5")
    return _MD5_MEMO[key]


def verify(path: str | os.PathLike, arch: str | vgg.Arch | None = None, include_top: bool | None = None) -> str:
    """Checks a published file against Keras's md5 and returns its md5; WeightsError on a mismatch.

    Args:
      path: the file.
      arch, include_top: which published file it should be. Without ``arch`` the file is identified by its
        name (or, failing that, by its md5 among the published ones); ``include_top`` defaults to the top.

    Returns:
      The file's md5 (hex).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist; check the path")
    if arch is not None:
        kf = known_file(arch, True if include_top is None else include_top)
    else:
        by_name = [k for k in KNOWN_FILES.values() if k.filename == path.name]
        kf = by_name[0] if by_name else None
    if kf is None:
        got = file_md5(path)
        if any(k.md5 == got for k in KNOWN_FILES.values()):
            return got
        raise WeightsError(
            f"{path} (md5 {got}) is not one of Keras's published files; give arch= (--arch) to check it "
            "against one, or load it as a plain weight file"
        )
    problem = _mismatch(path, kf)
    if problem:
        raise WeightsError(f"{path} {problem}: it is truncated, corrupt or another file; delete it and "
                           f"{_fix_hint(kf)}")
    return file_md5(path)


def _mismatch(path: Path, kf: KnownFile) -> str | None:
    """Why ``path`` is not ``kf`` ("has N bytes, expected M …" / "has md5 X, expected Y …"), or None."""
    size = path.stat().st_size
    if kf.size is not None and size != kf.size:
        return f"has {size:,} bytes, expected {kf.size:,} for {kf.filename}"
    got = file_md5(path)
    if got != kf.md5:
        return f"has md5 {got}, expected {kf.md5} for {kf.filename}"
    return None


# ---------------------------------------------------------------------------------------------------------
# resolve and download


def resolve(arch: str | vgg.Arch, include_top: bool = True, download: bool = True) -> Path:
    """Finds Keras's ImageNet weights for ``arch``: jaxviz cache, Keras cache, then a download.

    Order: a converted ``.npz`` in :func:`cache_dir` (trusted: its tree is checked when loaded), Keras's
    ``.h5`` there, then in :func:`keras_cache_dirs`; without the top, the with-top files in the same places
    (its head is dropped when loaded); finally, if ``download``, the file is fetched into the jaxviz cache.
    ``.h5`` files found in a cache are checked against Keras's md5 (once per process); one that fails is
    skipped and reported if nothing else is found.

    Returns:
      The path to load (``.npz`` or ``.h5``).
    """
    kf = known_file(arch, include_top)
    tops = [kf] if kf.include_top else [kf, known_file(arch, True)]
    rejected: list[str] = []
    for k in tops:
        npz = cache_dir() / Path(k.filename).with_suffix(".npz").name
        if npz.is_file():
            return npz
        for d in [cache_dir(), *keras_cache_dirs()]:
            p = d / k.filename
            if p.is_file():
                problem = _mismatch(p, k)
                if problem is None:
                    return p
                rejected.append(f"{p} {problem}")
    looked = " or ".join(_tilde(d) for d in [cache_dir(), *keras_cache_dirs()])
    bad = f" ({'; '.join(rejected)})" if rejected else ""
    if not download:
        raise WeightsError(f"{kf.filename} is not in {looked}{bad}; {_fix_hint(kf)}")
    url = file_url(arch, include_top)
    try:
        return _fetch(url, cache_dir() / kf.filename, kf)
    except _DownloadError as e:
        raise WeightsError(
            f"{kf.filename} is not in {looked}{bad} and could not be downloaded from {url} ({e}); "
            f"{_fix_hint(kf)}"
        ) from None


def download(arch: str | vgg.Arch, include_top: bool = True, force: bool = False) -> Path:
    """Downloads Keras's file for ``arch`` into :func:`cache_dir` and checks its md5.

    A file already there that passes :func:`verify` is kept unless ``force``. The download goes to a
    temporary file in the cache folder, renamed into place only when its md5 matches; on a mismatch, an
    error or Ctrl-C, nothing is left behind. The base URL is ``$JAXVIZ_WEIGHTS_URL`` if set.

    Returns:
      The path of the verified file.
    """
    kf = known_file(arch, include_top)
    dst = cache_dir() / kf.filename
    if dst.is_file() and not force:
        with contextlib.suppress(WeightsError):
            verify(dst, kf.arch, kf.include_top)
            return dst
    url = file_url(arch, include_top)
    try:
        return _fetch(url, dst, kf)
    except _DownloadError as e:
        raise WeightsError(
            f"could not download {url} ({e}); check the connection (or $JAXVIZ_WEIGHTS_URL), or copy Keras's "
            f"file {kf.filename} into {_tilde(keras_cache_dirs()[0])}/ or {_tilde(cache_dir())}/"
        ) from None


class _DownloadError(Exception):
    """The server could not be reached or the transfer broke off (the message is the reason)."""


def _fetch(url: str, dst: Path, kf: KnownFile) -> Path:
    """Downloads ``url`` to ``dst`` through a temporary file there, checking the md5 before the rename."""
    import http.client
    import urllib.error
    import urllib.request

    from tqdm.auto import tqdm

    try:
        resp = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT)
    except urllib.error.HTTPError as e:
        raise _DownloadError(f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise _DownloadError(str(getattr(e, "reason", e))) from None
    with resp:
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            writable = os.access(dst.parent, os.W_OK)
        except OSError:
            writable = False
        if not writable:
            raise WeightsError(f"cannot write to {dst.parent}; set JAXVIZ_HOME to a writable folder")
        h = hashlib.md5()
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else kf.size
        # md5 mismatch, broken transfer or Ctrl-C: atomic_open leaves no partial file behind.
        with atomic_open(dst, suffix=".part") as out, tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=kf.filename, file=sys.stderr,
                mininterval=0.5) as bar:
            while True:
                try:
                    chunk = resp.read(1 << 20)
                except (OSError, http.client.HTTPException) as e:
                    raise _DownloadError(f"transfer broke off: {e}") from None
                if not chunk:
                    break
                out.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
            got = h.hexdigest()
            if got != kf.md5:
                raise WeightsError(
                    f"the file downloaded from {url} has md5 {got}, expected {kf.md5} for {kf.filename}; it was "
                    "deleted: try again, or check $JAXVIZ_WEIGHTS_URL points at Keras's files"
                )
    return dst


# ---------------------------------------------------------------------------------------------------------
# Reading Keras HDF5 files

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _attr_list(group, name: str) -> list[str]:
    """A string-list attribute, joining the chunks (``name0``, ``name1``, …) Keras splits big ones into."""
    if name in group.attrs:
        values = list(np.atleast_1d(group.attrs[name]))
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values += list(np.atleast_1d(group.attrs[f"{name}{i}"]))
            i += 1
    return [_text(v) for v in values]


def _has_attr(group, name: str) -> bool:
    return name in group.attrs or f"{name}0" in group.attrs


def _read_legacy(group, source) -> dict[str, list]:
    """Layouts (a) and (b): root ``layer_names``; per layer, ``weight_names`` lists its datasets in order.

    Returns ``{layer: [h5py datasets]}``: nothing is read until the shapes have been checked.
    """
    found: dict[str, list] = {}
    for layer in _attr_list(group, "layer_names"):
        if not untrusted.has(group, layer):
            raise KeyError(f"layer group {layer!r} listed in layer_names is missing")
        g = untrusted.child(group, layer, source)
        names = _attr_list(g, "weight_names")
        if names:
            found[layer] = [untrusted.get(g, n, source) for n in names]
    return found


_AUTO_NAME = re.compile(r"^(conv2d|dense)(?:_(\d+))?$")


def _read_keras3(layers_group, arch: vgg.Arch, source) -> tuple[dict[str, list], bool]:
    """Layout (c): ``layers/<auto name>/vars/0, 1, …`` with the layer's name in the ``vars`` ``name`` attr.

    Keras ≥ 3.? writes that ``name`` attr; files without it are mapped by the functional layer order: the
    auto names (``conv2d``, ``conv2d_1``, …, ``dense``, ``dense_1``, …) number each class of layer in the
    order of ``model.layers``, which for VGG is the order of :func:`jaxviz.vgg.weighted_layers`.
    Returns ``(found, named)``.
    """
    entries: list[tuple[str, str | None, list]] = []

    def walk(group, prefix):
        for key in group:
            g = untrusted.child(group, key, source)
            if not hasattr(g, "keys"):
                continue
            if untrusted.has(g, "vars"):
                v = untrusted.child(g, "vars", source)
                n = len(v)
                if set(v.keys()) != {str(i) for i in range(n)}:
                    raise KeyError(f"{prefix}{key}/vars holds {sorted(v.keys())}, expected 0..{n - 1}")
                if n:
                    name = _text(v.attrs["name"]) if "name" in v.attrs else None
                    entries.append((prefix + key, name, [untrusted.child(v, str(i), source) for i in range(n)]))
            if untrusted.has(g, "layers"):
                walk(untrusted.child(g, "layers", source), f"{prefix}{key}/layers/")

    walk(layers_group, "layers/")
    if all(name is not None for _, name, _ in entries):
        found = {}
        for path, name, arrays in entries:
            if name in found:
                raise KeyError(f"two layers named {name!r} ({path})")
            found[name] = arrays
        return found, True
    # No names stored: order the auto-named groups like model.layers (convs, then the dense layers).
    keyed = []
    for path, _, arrays in entries:
        m = _AUTO_NAME.match(path.split("/")[-1]) if path.count("/") == 1 else None
        if m is None:
            raise WeightsError(
                f"layer group {path} has no name attribute and is not a flat conv2d/dense group, so it cannot be "
                "matched to a VGG layer; load the file in Keras and save it again with a current Keras"
            )
        keyed.append(((m.group(1) != "conv2d", int(m.group(2) or 0)), arrays))
    keyed.sort(key=lambda t: t[0])
    n_dense = sum(1 for k, _ in keyed if k[0])
    names = list(vgg.weighted_layers(arch, include_top=n_dense > 0))
    if len(names) != len(keyed):
        raise WeightsError(
            f"the file has {len(keyed)} weighted layers without stored names, {arch.name} has {len(names)}; "
            "it is not a VGG of this architecture (try another --arch)"
        )
    return {name: arrays for name, (_, arrays) in zip(names, keyed)}, False


@contextlib.contextmanager
def _open_h5(path: Path):
    import h5py

    if zipfile.is_zipfile(path):  # a whole-model .keras archive: the weights are model.weights.h5 inside
        with zipfile.ZipFile(path) as z:
            if "model.weights.h5" not in z.namelist():
                raise KeyError("no model.weights.h5 inside the zip archive")
            data = untrusted.zip_member(z, "model.weights.h5", 1 << 62, path)
        with h5py.File(io.BytesIO(data), "r") as f:
            yield f, len(data)
    else:
        with h5py.File(path, "r") as f:
            yield f, path.stat().st_size


@contextlib.contextmanager
def keras_layers(path: str | os.PathLike, arch: str | vgg.Arch = "vgg16"):
    """Opens a Keras HDF5 file: yields ``({layer: [h5py datasets in stored order]}, layout description)``.

    Unchecked and lazy (datasets are read when indexed, e.g. ``ds[()]``); valid inside the ``with`` only.
    ``arch`` is only used to name the layers of a Keras 3 file that does not store them. Unreadable files
    raise WeightsError naming the file, also for errors met while reading datasets inside the block.
    """
    a = vgg.get_arch(arch)
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a directory; give the weight file inside it")
    if not path.is_file():
        raise WeightsError(f"weight file {path} not found; check the path")
    if path.name.endswith(".weights.json"):
        raise WeightsError(
            f"{path} is the index of sharded Keras weights, which jaxviz does not read; load the model in Keras "
            "and save it with model.save_weights('model.weights.h5') (no max_shard_size)"
        )
    try:
        with _open_h5(path) as (f, size):
            if _has_attr(f, "layer_names"):
                keras_version = _text(f.attrs["keras_version"]) if "keras_version" in f.attrs else "1"
                found, layout = _read_legacy(f, path), f"legacy HDF5, Keras {keras_version}"
            elif untrusted.has(f, "model_weights") and _has_attr(untrusted.child(f, "model_weights", path),
                                                                 "layer_names"):
                found = _read_legacy(untrusted.child(f, "model_weights", path), path)
                layout = "legacy HDF5 full model"
            elif untrusted.has(f, "layers"):
                found, named = _read_keras3(untrusted.child(f, "layers", path), a, path)
                layout = "Keras 3 .weights.h5" + ("" if named else ", no layer names: mapped by order")
            else:
                raise WeightsError(
                    f"{path} is HDF5 but not a Keras weight file (no layer_names attribute, model_weights or "
                    "layers group); save the weights with Keras's model.save_weights"
                )
            budget = untrusted.Budget(path, size)
            for layer, arrays in found.items():  # nothing read yet: shapes are checked against the architecture
                for i, ds in enumerate(arrays):
                    untrusted.check_dataset(ds, path, f"layer {layer!r} weight {i}", budget=budget)
            yield found, layout
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, zipfile.BadZipFile) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise WeightsError(
            f"cannot read {path} ({reason}): it is not a Keras HDF5 weight file, or it is truncated or corrupt; "
            "check the path or download the file again"
        ) from None


def read_keras_h5(path: str | os.PathLike, arch: str | vgg.Arch, include_top: bool = True) -> dict:
    """Reads Keras weights for ``arch`` from any of the HDF5 layouts Keras has written.

    Layouts:
      (a) the 2016 keras-applications files (Keras 1): root attr ``layer_names`` (with ``input_1``, pools and
          ``flatten`` having no weights); each layer group's ``weight_names`` lists datasets such as
          ``block1_conv1_W_1:0`` and ``block1_conv1_b_1:0`` stored in the group;
      (b) legacy ``save_weights`` files of Keras 2 (``block1_conv1/block1_conv1/kernel:0``) and Keras 3's
          legacy writer (``…/kernel``), also under a ``model_weights`` group (whole-model ``.h5``);
      (c) Keras 3 ``.weights.h5`` (``layers/conv2d_3/vars/0..1``, the layer name in ``vars``'s ``name``
          attribute; mapped by functional order when absent), also inside a ``.keras`` archive.
    Weights are taken in the order ``weight_names`` (or ``vars``) lists them: kernel, then bias. Names and
    shapes are checked before any data is read, so a wrong file fails fast and a with-top file read
    without its top never reads the classifier.

    Args:
      path: the file.
      arch: architecture name or :class:`jaxviz.vgg.Arch`.
      include_top: whether to return the classifier; a with-top file read with ``False`` loses its head.

    Returns:
      ``{layer: {"kernel", "bias"}}`` float32 numpy arrays; WeightsError naming the layer and the fix if the
      file does not match ``arch``.
    """
    a = vgg.get_arch(arch)
    with keras_layers(path, a) as (found, layout):
        return _check_layers(found, a, include_top, Path(path), layout)


def _arch_hint(found: dict[str, tuple], asked: vgg.Arch) -> str:
    """'; this is a vgg19 file …' when the layers and kernel shapes match another architecture exactly."""
    for name in vgg.ARCHS:
        if name == asked.name:
            continue
        for top in (True, False):
            want = vgg.weighted_layers(name, top)
            if set(want) == set(found) and all(found[n] == want[n][0] for n in want):
                return (f"; it is a {name}{'' if top else ' no-top'} file: load it with arch {name} "
                        f"(--arch {name})")
    for n, shape in found.items():
        want = vgg.weighted_layers(asked, True).get(n)
        if want and len(shape) == 4 and shape == (want[0][3], want[0][2], 3, 3) != want[0]:
            return ("; its kernels are channels-first (a Theano-ordered th_kernels file): use Keras's "
                    "tf_dim_ordering_tf_kernels file")
    return ""


def _check_layers(found: dict[str, list], a: vgg.Arch, include_top: bool, source: Path, what: str) -> dict:
    """``{layer: [kernel, bias]}`` (arrays or h5py datasets) → params, checked against ``a`` before any data
    is read; the head is dropped if not wanted."""
    expected = vgg.weighted_layers(a, include_top)
    head = [n for n in vgg.weighted_layers(a, True) if n not in vgg.weighted_layers(a, False)]
    kernel_shapes = {n: tuple(v[0].shape) if v else () for n, v in found.items()}
    has = set(found)
    if not include_top and has >= set(head):
        has -= set(head)  # a with-top file used without its classifier
    missing = [n for n in expected if n not in has]
    extra = [n for n in found if n in has and n not in expected]
    label = f"{a.name}{'' if include_top else ' without top'}"
    if missing or extra:
        hint = _arch_hint(kernel_shapes, a)
        if include_top and not extra and missing == head:
            kf = KNOWN_FILES.get((a.name, True))
            alt = f" or use {kf.filename}" if kf else ""
            raise WeightsError(
                f"{source} has no classifier ({', '.join(head)}): it is a no-top file; load it with "
                f"include_top=False (--no-top){alt}"
            )
        parts = []
        if missing:
            parts.append(f"missing layers {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected layers {', '.join(extra)}")
        raise WeightsError(f"{source} ({what}) does not match {label}: {'; '.join(parts)}{hint}")
    params = {}
    for name, (kshape, bshape) in expected.items():
        arrays = found[name]
        if len(arrays) != 2:
            raise WeightsError(
                f"layer {name} in {source} has {len(arrays)} weights, expected 2 (kernel, bias); "
                f"it is not a Keras {a.name} file"
            )
        for leaf, arr, want in (("kernel", arrays[0], kshape), ("bias", arrays[1], bshape)):
            if tuple(arr.shape) != tuple(want):
                raise WeightsError(
                    f"{name} {leaf} has shape {tuple(arr.shape)} in {source}, expected {tuple(want)} for "
                    f"{label}{_arch_hint(kernel_shapes, a) or '; is it a file for another architecture?'}"
                )
        # [()] reads an h5py dataset (and is a no-op view of a numpy array).
        params[name] = {"kernel": np.asarray(arrays[0][()], np.float32),
                        "bias": np.asarray(arrays[1][()], np.float32)}
    return params


def file_has_top(path: str | os.PathLike) -> bool:
    """Whether a Keras HDF5 or converted file holds the classifier (``predictions``)."""
    path = Path(path)
    if _is_converted(path):
        return bool(converted_metadata(path)["include_top"])
    with keras_layers(path) as (found, _):
        return "predictions" in found


# ---------------------------------------------------------------------------------------------------------
# The converted format: .npz with "/"-joined keys and a JSON metadata entry

META_KEY = "__jaxviz_meta__"
FORMAT_NAME = "jaxviz-weights"
FORMAT_VERSION = 1


def save_converted(params: dict, dst: str | os.PathLike, arch: str | vgg.Arch, include_top: bool = True,
                   *, source: str | None = None, source_md5: str | None = None) -> Path:
    """Writes params as an uncompressed ``.npz`` (``block1_conv1/kernel``, …) plus a metadata entry.

    ``dst`` gets the format's own suffix (``x.h5`` → ``x.npz``). The file is written to a temporary file in
    the same folder and renamed, so a reader never sees a partial file. The metadata (JSON stored as a
    uint8 array, readable with ``allow_pickle=False``) records the format, arch, include_top, the jaxviz
    version and, if given, the source file's name and md5.

    Returns:
      The path written.
    """

    a = vgg.get_arch(arch)
    expected = vgg.weighted_layers(a, include_top)
    extra = [n for n in params if n not in expected]
    if extra:
        raise WeightsError(
            f"params have layers {', '.join(extra)} that {a.name}{'' if include_top else ' without top'} does "
            "not; pass the matching include_top"
        )
    tree = {n: [p["kernel"], p["bias"]] for n, p in params.items()}
    checked = _check_layers(tree, a, include_top, Path("<params>"), "params")
    dst = Path(dst)
    if dst.suffix != ".npz":
        dst = dst.with_suffix(".npz")
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "arch": a.name,
            "include_top": bool(include_top), "jaxviz_version": __version__, "source": source,
            "source_md5": source_md5}
    arrays = {f"{n}/{leaf}": np.ascontiguousarray(p[leaf], np.float32)
              for n, p in checked.items() for leaf in ("kernel", "bias")}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf8"), np.uint8)
    with atomic_open(dst) as f:
        np.savez(f, **arrays)
    return dst


def _is_converted(path: Path) -> bool:
    if path.suffix == ".npz":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    if head != b"PK\x03\x04":
        return False
    with contextlib.suppress(zipfile.BadZipFile, OSError):
        with zipfile.ZipFile(path) as z:
            return META_KEY + ".npy" in z.namelist()
    return False


def _read_meta(z, path: Path) -> dict:
    if META_KEY not in z.files:
        raise WeightsError(
            f"{path} has no jaxviz metadata: it is not a converted weight file; convert Keras files with "
            "`jaxviz convert`"
        )
    try:
        meta = json.loads(bytes(z[META_KEY]).decode("utf8"))
    except (ValueError, UnicodeDecodeError):
        raise WeightsError(f"{path} has unreadable metadata; convert the Keras file again") from None
    if meta.get("format") != FORMAT_NAME or meta.get("format_version", 0) > FORMAT_VERSION:
        raise WeightsError(
            f"{path} is format {meta.get('format')} v{meta.get('format_version')}; this jaxviz reads "
            f"{FORMAT_NAME} v{FORMAT_VERSION}: upgrade jaxviz or convert the Keras file again"
        )
    return meta


@contextlib.contextmanager
def _open_npz(path: Path):
    if not path.is_file():
        raise WeightsError(f"weight file {path} not found; check the path")
    try:
        with zipfile.ZipFile(path) as archive:
            untrusted.check_npz(archive, path)
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise WeightsError(
            f"cannot read {path} ({reason}): it is not a converted .npz file, or it is truncated; convert the "
            "Keras file again"
        ) from None
    with z:
        yield z


def converted_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a converted file (format, arch, include_top, jaxviz_version, source, source_md5)."""
    path = Path(path)
    with _open_npz(path) as z:
        return _read_meta(z, path)


def load_converted(path: str | os.PathLike, arch: str | vgg.Arch | None = None,
                   include_top: bool | None = None) -> dict:
    """Reads a file written by :func:`save_converted` (numpy only, ``allow_pickle=False``).

    Args:
      path: the ``.npz``.
      arch: the architecture expected; WeightsError if the file is for another. ``None``: the file's.
      include_top: ``None``: the file's. ``False`` on a with-top file drops the head; ``True`` on a no-top
        file is an error.

    Returns:
      ``{layer: {"kernel", "bias"}}`` float32 numpy arrays, bit-identical to what was saved; the tree is
      checked against the architecture (missing/unexpected keys, shapes).
    """
    path = Path(path)
    with _open_npz(path) as z:
        meta = _read_meta(z, path)
        file_arch, file_top = meta.get("arch"), bool(meta.get("include_top"))
        if arch is not None and vgg.get_arch(arch).name != file_arch:
            asked = vgg.get_arch(arch).name
            raise WeightsError(
                f"{path} holds {file_arch} weights, not {asked}; load it with arch {file_arch} (--arch {file_arch})"
            )
        a = vgg.get_arch(file_arch)
        top = file_top if include_top is None else bool(include_top)
        tree: dict[str, dict[str, np.ndarray]] = {}
        odd = []
        try:
            for key in z.files:
                if key == META_KEY:
                    continue
                layer, _, leaf = key.partition("/")
                if leaf not in ("kernel", "bias"):
                    odd.append(key)
                    continue
                tree.setdefault(layer, {})[leaf] = np.asarray(z[key])
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise WeightsError(f"cannot read {path} ({e}): it is truncated or corrupt; convert the file again") \
                from None
    if odd:
        raise WeightsError(f"{path} has unexpected keys {', '.join(odd)}; convert the Keras file again")
    if top and not file_top:
        raise WeightsError(
            f"{path} has no classifier (it was converted without the top); load it with include_top=False "
            "(--no-top) or convert the with-top Keras file"
        )
    found = {}
    for layer, leaves in tree.items():
        missing = [leaf for leaf in ("kernel", "bias") if leaf not in leaves]
        if missing:
            raise WeightsError(f"{path} lacks {layer}/{missing[0]}; convert the Keras file again")
        found[layer] = [leaves["kernel"], leaves["bias"]]
    return _check_layers(found, a, top, path, "converted")


def convert(src: str | os.PathLike, arch: str | vgg.Arch, dst: str | os.PathLike | None = None,
            include_top: bool | None = None) -> Path:
    """Converts a Keras HDF5 file to the ``.npz`` format (for ``jaxviz convert``).

    Args:
      src: any file :func:`read_keras_h5` reads.
      arch: its architecture.
      dst: where to write (the suffix becomes ``.npz``). Default: for a published file, the jaxviz cache
        (where :func:`resolve` finds it first); otherwise next to ``src``.
      include_top: keep the classifier; ``None``: whatever the file has.

    Returns:
      The path written.
    """
    a = vgg.get_arch(arch)
    src = Path(src)
    with keras_layers(src, a) as (found, layout):
        top = "predictions" in found if include_top is None else bool(include_top)
        params = _check_layers(found, a, top, src, layout)
    if dst is None:
        known = any(k.filename == src.name for k in KNOWN_FILES.values())
        name = src.name[: -len(".weights.h5")] if src.name.endswith(".weights.h5") else src.stem
        dst = (cache_dir() if known else src.parent) / (name + ".npz")
    return save_converted(params, dst, a, top, source=src.name, source_md5=file_md5(src))


# ---------------------------------------------------------------------------------------------------------
# Entry point for jaxviz.load


def load_file(path: str | os.PathLike, arch: str | vgg.Arch, include_top: bool = True) -> dict:
    """Params from a Keras HDF5 file or a converted ``.npz``, chosen by suffix (or content)."""
    path = Path(path)
    if _is_converted(path):
        return load_converted(path, arch, include_top)
    return read_keras_h5(path, arch, include_top)


def load_params(arch: vgg.Arch, weights, include_top: bool = True) -> tuple[dict, str]:
    """Returns ``(params, source)`` for ``jaxviz.load``.

    Args:
      arch: the architecture.
      weights: ``"imagenet"``, a path (``.h5``/``.hdf5``/``.weights.h5``/``.keras``/``.npz``), or ``None`` /
        ``"random:SEED"``.
      include_top: whether the classifier is wanted.

    Returns:
      ``({layer: {"kernel", "bias"}}, source)`` where source is ``"imagenet:<path>"``, the path, or
      ``"random:SEED"``.
    """
    if weights is None:
        weights = "random:0"
    if isinstance(weights, str) and weights.startswith("random:"):
        try:
            seed = int(weights.split(":", 1)[1])
        except ValueError:
            raise WeightsError(f"bad weights spec {weights!r}; use random:SEED with an integer seed") from None
        if seed < 0:
            raise WeightsError(f"bad weights spec {weights!r}; the seed must be >= 0, e.g. random:0")
        return vgg.random_params(arch, include_top, seed), weights
    if isinstance(weights, str) and weights.lower() == "imagenet":
        path = resolve(arch, include_top)
        return load_file(path, arch, include_top), f"imagenet:{path}"
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.exists():
            raise WeightsError(
                f"weight file {path} not found; give \"imagenet\", a Keras .h5/.weights.h5 or converted .npz "
                "path, or random:SEED"
            )
        return load_file(path, arch, include_top), str(path)
    raise WeightsError(
        f"weights must be \"imagenet\", a file path, None or \"random:SEED\", not {type(weights).__name__}"
    )
