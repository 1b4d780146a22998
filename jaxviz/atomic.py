"""Atomic file writes (and file digests): a reader never sees a half-written file, and an interrupted run
(Ctrl-C, a crash) leaves the previous file, if any, intact and no temporary file behind.

Every file jaxviz writes goes through :func:`atomic_open`: a temporary file in the destination's folder
(same filesystem, so the final ``os.replace`` is atomic), flushed to disk, then renamed over the destination.

Every path an output file or a deletion gets is built by :func:`confine`, which resolves it and refuses
anything outside the output folder; names that come from a model file become file names through
:func:`file_stems` (a safe slug of each name, collisions resolved).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .errors import JaxvizError, printable

#: Characters a file-name slug keeps as they are; any run of others becomes one ``_``.
_SAFE = re.compile(r"[^A-Za-z0-9_.+=-]+")
#: Longest slug (in characters, all ASCII): leaves room for prefixes and suffixes within 255 bytes.
MAX_STEM = 120


def confine(root: str | os.PathLike, *parts: str | os.PathLike) -> Path:
    """``root / parts``, checked to stay inside the folder ``root`` before anything is written or deleted there.

    The parent folders are resolved (``..`` and symbolic links followed) and must lie inside ``root``
    (resolved the same way); the last component must be a plain name, not ``..``. The path itself is
    returned as joined, so messages show it as the user wrote ``root``.

    Raises:
      JaxvizError: the path would leave ``root`` (one line naming both).
    """
    dest = Path(root, *parts)
    base = Path(root).resolve()
    inside = dest.name not in ("", ".", "..") and (dest.parent.resolve() / dest.name).is_relative_to(base)
    if not inside or dest.resolve() == base:
        raise JaxvizError(f"refusing to write or delete {printable(str(dest))!r}: it is outside the output folder "
                          f"{printable(str(root))}")
    return dest


def remove_tree(root: str | os.PathLike, *parts: str | os.PathLike) -> None:
    """Deletes the folder (or file) ``root / parts`` if it exists, after :func:`confine` checked it."""
    dest = confine(root, *parts)
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest, ignore_errors=True)
    else:
        dest.unlink(missing_ok=True)


def safe_stem(name: str) -> str:
    """A file-name slug of ``name``: itself when made of letters, digits and ``_ . + = -`` (and not starting
    with a dot), else every other run of characters as ``_`` (``vgg16/block5_conv3`` → ``vgg16_block5_conv3``),
    at most :data:`MAX_STEM` characters, never empty, never hidden."""
    stem = _SAFE.sub("_", str(name)).lstrip(".")[:MAX_STEM]
    return stem or "_"


class _Stems(dict):
    def __missing__(self, name):  # a name outside the set (``logits``, a bare inner name): its own slug
        return safe_stem(name)


def file_stems(names: Iterable[str], reserved: Iterable[str] = ()) -> dict[str, str]:
    """``{name: file stem}`` for distinct ``names``: :func:`safe_stem` of each, collisions resolved.

    A name that is already safe keeps its stem; a slug that collides (case-insensitively, as on macOS and
    Windows file systems) with one taken before, or with one of the ``reserved`` names (files of the caller's
    own), gets ``_2``, ``_3``, …, in the order of ``names``. Looking up a name not among ``names`` gives its
    :func:`safe_stem`.
    """
    names = list(dict.fromkeys(names))
    stems = {n: safe_stem(n) for n in names}
    reserved = {r.lower() for r in reserved}
    taken = {s.lower() for n, s in stems.items() if s == n and s.lower() not in reserved} | reserved
    out = _Stems()
    for n in names:
        stem = stems[n]
        if stem != n or stem.lower() in reserved:
            base, i = stem, 1
            while stem.lower() in taken:
                i += 1
                stem = f"{base[:MAX_STEM - 1 - len(str(i))]}_{i}"
            taken.add(stem.lower())
        out[n] = stem
    return out


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", suffix: str = ".tmp") -> Iterator[io.IOBase]:
    """Opens a temporary file that replaces ``path`` when the ``with`` block ends without an exception.

    Missing parent folders are created. The file gets the permissions the umask gives a new file
    (``tempfile.mkstemp`` would make it private, 0o600). If the block raises, the temporary file is deleted
    and the exception propagates.

    Args:
      path: the destination.
      mode: ``"wb"`` or ``"w"`` (text, UTF-8).
      suffix: the temporary file's suffix (``.part`` for downloads).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes new files: mode must be 'wb' or 'w', not {mode!r}")
    dest = Path(path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}{suffix}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:  # name the file asked for, not a parent or the temporary file
        raise type(e)(e.errno, e.strerror, str(dest)) from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes | str) -> Path:
    """Writes ``data`` (``str`` as UTF-8) to ``path`` atomically."""
    with atomic_open(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def save_npy(path: str | os.PathLike, array) -> Path:
    """``np.save`` atomically; never pickles (object arrays are refused)."""
    with atomic_open(path) as f:
        np.save(f, np.asarray(array), allow_pickle=False)
    return Path(path)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (``hashlib`` algorithm name), read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
