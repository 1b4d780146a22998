"""Atomic file writes (and file digests): a reader never sees a half-written file, and an interrupted run
(Ctrl-C, a crash) leaves the previous file, if any, intact and no temporary file behind.

Every file jaxviz writes goes through :func:`atomic_open`: a temporary file in the destination's folder
(same filesystem, so the final ``os.replace`` is atomic), flushed to disk, then renamed over the destination.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np


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
