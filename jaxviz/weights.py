"""Weights by name: ``"imagenet"`` (Keras's published VGG files: cache, download, checksum), a path, or
``"random:SEED"``.

``jaxviz.load(arch, weights)`` calls :func:`load_params`, which accepts:

* ``"imagenet"`` — Keras's published VGG files (:data:`KNOWN_FILES`), found by :func:`imagenet_file` in the
  jaxviz cache (:func:`cache_dir`; a converted ``.npz`` there is preferred), then in Keras's cache
  (``$KERAS_HOME/models`` or ``~/.keras/models``), then downloaded from the URL Keras uses and checked
  against Keras's md5 (:func:`download`: through a temporary file, renamed into place only when it matches).
* a path: a Keras HDF5 file (``.h5``, ``.hdf5``, ``.weights.h5``, ``.keras``) or a converted ``.npz``, read
  and checked against the architecture by :mod:`jaxviz.frontends.vgg_weights`.
* ``None`` or ``"random:SEED"`` — deterministic He-initialised weights (nothing is read).

For ``"imagenet"`` without the top, a with-top file already in a cache is used before the smaller no-top
file is downloaded (its head is dropped when loaded). No I/O happens at import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .atomic import atomic_open, file_digest
from .errors import WeightsError
from .frontends import vgg
from .frontends import vgg_weights as weight_files
from .frontends.npz import LEGACY_FORMAT as FORMAT_NAME  # noqa: F401  (the earlier format's names, kept public)
from .frontends.npz import LEGACY_FORMAT_VERSION as FORMAT_VERSION  # noqa: F401
from .frontends.npz import LEGACY_META_KEY as META_KEY  # noqa: F401
from .frontends.vgg_weights import (  # noqa: F401  (public here since jaxviz.weights first read files)
    converted_metadata,
    load_converted,
    load_file,
    read_keras_h5,
    save_converted,
)

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
#: The same files as first released (flat layout, no per-architecture folder); named in weights/README.md.
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
    """The name :func:`imagenet_file` looks for in the jaxviz cache: Keras's name with the ``.npz`` suffix."""
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


def imagenet_file(arch: str | vgg.Arch, include_top: bool = True, download: bool = True) -> Path:
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
# Converting into the cache


def convert(src: str | os.PathLike, arch: str | vgg.Arch, dst: str | os.PathLike | None = None,
            include_top: bool | None = None) -> Path:
    """Converts a VGG weight file to jaxviz's converted format (:func:`jaxviz.frontends.vgg_weights.convert`).

    ``dst`` defaults, for a published file, to the jaxviz cache (where :func:`imagenet_file` finds it first), else to
    ``src``'s folder, named as ``src`` with the ``.npz`` suffix. Returns the path written.
    """
    src = Path(src)
    if dst is None:
        known = any(k.filename == src.name for k in KNOWN_FILES.values())
        name = src.name[: -len(".weights.h5")] if src.name.endswith(".weights.h5") else src.stem
        dst = (cache_dir() if known else src.parent) / (name + ".npz")
    return weight_files.convert(src, arch, dst, include_top)


# ---------------------------------------------------------------------------------------------------------
# Entry point for jaxviz.load


def _load_file(path: Path, arch: vgg.Arch, include_top: bool) -> dict:
    """:func:`jaxviz.frontends.vgg_weights.load_file`; a no-top file asked for with the top names the published file."""
    try:
        return weight_files.load_file(path, arch, include_top)
    except weight_files.NoClassifierError as e:
        kf = KNOWN_FILES.get((arch.name, True))
        raise WeightsError(f"{e}{f', {kf.filename}' if kf else ''}") from None


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
        path = imagenet_file(arch, include_top)
        return _load_file(path, arch, include_top), f"imagenet:{path}"
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.exists():
            raise WeightsError(
                f"weight file {path} not found; give \"imagenet\", a Keras .h5/.weights.h5 or converted .npz "
                "path, or random:SEED"
            )
        return _load_file(path, arch, include_top), str(path)
    raise WeightsError(
        f"weights must be \"imagenet\", a file path, None or \"random:SEED\", not {type(weights).__name__}"
    )
