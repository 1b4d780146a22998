"""Reading files from strangers (HDF5 files, zip archives): only what the file itself stores, with every size
checked before reading.

Keras writes plain groups and contiguous datasets. A crafted file can instead point elsewhere: an external
link (an object in another file), external raw storage (a dataset whose bytes live in another local file)
or a virtual dataset (one assembled from other files); :func:`child` and :func:`check_dataset` refuse all
three, so no other file's bytes can become weights. A dataset can also declare a shape far larger than what
it stores (a few bytes of chunks and a fill value that read back as gigabytes): :func:`check_dataset`
compares the bytes a dataset declares with the bytes it stores, and a :class:`Budget` bounds the total,
before any data is read. A zip member is read through :func:`zip_member`, which checks its declared size
and expansion ratio first and counts the bytes it actually yields.
"""

from __future__ import annotations

import io
import zipfile

import h5py
import numpy as np

from .errors import WeightsError, printable

#: A dataset may declare at most this many times the bytes it stores on disk (beyond :data:`FLOOR_BYTES`).
#: Keras stores weights uncompressed (ratio 1); even maximal gzip of constant data stays near 1000:1.
MAX_EXPANSION = 100
#: Declared sizes up to this many bytes are not compared with the stored size (small fill-value datasets).
FLOOR_BYTES = 1 << 20
#: Element kinds weights can have: floats, integers (``count``), booleans.
_KINDS = "fiub"


def child(group, key: str, source):
    """``group[key]`` when ``key`` names an object stored in this file (a hard link); a missing key raises
    KeyError, an external or soft link WeightsError (nothing is opened through it)."""
    link = group.get(key, getlink=True)
    if link is None:
        raise KeyError(f"{group.name.rstrip('/')}/{key} is missing")
    if not isinstance(link, h5py.HardLink):
        what = "an external link to another file" if isinstance(link, h5py.ExternalLink) else "a soft link"
        raise WeightsError(f"{source}: HDF5 object {printable(group.name.rstrip('/') + '/' + key)!r} is {what}; "
                           "jaxviz reads only weights stored in the file itself, so it refuses this file")
    return group[key]


def has(group, key: str) -> bool:
    """Whether ``group`` has a member ``key`` (any kind of link; none is followed)."""
    return group.get(key, getlink=True) is not None


def get(group, path: str, source):
    """The object at the relative ``path`` (``"a/b/c"``), every step through :func:`child`."""
    for part in (p for p in path.split("/") if p):
        group = child(group, part, source)
    return group


class Budget:
    """The bytes all datasets of one file may declare together: ``MAX_EXPANSION`` × the file's size plus
    :data:`FLOOR_BYTES` per dataset at most, counted as datasets are checked."""

    def __init__(self, source, file_bytes: int):
        self.source, self.left = source, MAX_EXPANSION * int(file_bytes) + 64 * FLOOR_BYTES

    def take(self, nbytes: int, what: str) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise WeightsError(f"{self.source}: the weights declare more bytes than the file could hold "
                               f"(at {what}): a crafted or corrupt file; refusing it")


def check_dataset(ds, source, what: str, expected: tuple | None = None, budget: Budget | None = None):
    """Checks a dataset before it is read: stored in this file (not virtual, no external raw storage), numeric,
    of the ``expected`` shape (``None`` entries: any size; ``expected=None``: any shape), and storing at least
    1/:data:`MAX_EXPANSION` of the bytes it declares. Raises WeightsError naming ``what`` (the layer's
    weight) and ``source`` (the file)."""
    if not isinstance(ds, h5py.Dataset):
        raise WeightsError(f"{source}: {what} is an HDF5 group, not a dataset; the file is corrupt or crafted")
    if ds.is_virtual:
        raise WeightsError(f"{source}: {what} is a virtual dataset (assembled from other files); jaxviz reads "
                           "only weights stored in the file itself, so it refuses this file")
    if ds.id.get_create_plist().get_external_count():
        raise WeightsError(f"{source}: {what} keeps its bytes in an external file; jaxviz reads only weights "
                           "stored in the file itself, so it refuses this file")
    if ds.dtype.kind not in _KINDS or ds.dtype.itemsize > 8:
        raise WeightsError(f"{source}: {what} holds {ds.dtype} values, not numbers; the file is corrupt or crafted")
    shape = tuple(int(d) for d in ds.shape)
    if expected is not None and (len(shape) != len(expected)
                                 or any(e is not None and e != d for d, e in zip(shape, expected))):
        want = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ("," * (len(expected) == 1)) + ")"
        raise WeightsError(f"{source}: {what} has shape {shape} in the file, but the layer's config implies "
                           f"{want}; the file is corrupt or crafted")
    nbytes = int(np.prod(shape, dtype=object)) * ds.dtype.itemsize
    stored = ds.id.get_storage_size()
    if nbytes > FLOOR_BYTES and nbytes > MAX_EXPANSION * stored:
        raise WeightsError(f"{source}: {what} declares shape {shape} ({nbytes / 2**20:,.0f} MiB) but stores only "
                           f"{stored:,} bytes: a crafted file (an HDF5 size bomb); refusing it")
    if budget is not None:
        budget.take(nbytes, what)
    return ds


def zip_member(z: zipfile.ZipFile, name: str, limit: int, source) -> bytes:
    """Member ``name`` of the archive, read in blocks: refused before reading when its declared size exceeds
    ``limit`` or :data:`MAX_EXPANSION` times its compressed size (a zip bomb), and while reading
    when it yields more bytes than it declared."""
    info = z.getinfo(name)
    if info.file_size > limit:
        raise WeightsError(f"{source}: {name} declares {info.file_size:,} bytes, more than the {limit:,} jaxviz "
                           "reads for it; refusing the file")
    if info.file_size > FLOOR_BYTES and info.file_size > MAX_EXPANSION * info.compress_size:
        raise WeightsError(f"{source}: {name} expands from {info.compress_size:,} to {info.file_size:,} bytes "
                           "(a zip bomb); refusing the file")
    out = io.BytesIO()
    with z.open(info) as member:
        while block := member.read(1 << 20):
            if out.tell() + len(block) > info.file_size:
                raise WeightsError(f"{source}: {name} holds more bytes than its declared {info.file_size:,} "
                                   "(a zip bomb); refusing the file")
            out.write(block)
    return out.getvalue()


#: Limits on an ``.npz`` archive (far above any real model): members, bytes of one array's ``.npy`` header.
MAX_NPZ_MEMBERS = 100_000
MAX_HEADER_BYTES = 1 << 16


def check_npz(z: zipfile.ZipFile, source, limits: dict | None = None) -> None:
    """Refuses, before numpy reads any array of the ``.npz`` archive ``z``, too many members, a member that
    expands far beyond its stored size (a zip bomb) or beyond its entry in ``limits`` (``{member: bytes}``),
    and an array whose ``.npy`` header is huge, holds Python objects, or declares more bytes than the member
    holds."""
    infos = z.infolist()
    if len(infos) > MAX_NPZ_MEMBERS:
        raise WeightsError(f"{source}: {len(infos):,} arrays, more than the {MAX_NPZ_MEMBERS:,} jaxviz reads; "
                           "refusing the file")
    for info in infos:
        name = printable(info.filename)
        if info.file_size > FLOOR_BYTES and info.file_size > MAX_EXPANSION * info.compress_size:
            raise WeightsError(f"{source}: {name} expands from {info.compress_size:,} to {info.file_size:,} bytes "
                               "(a zip bomb); refusing the file")
        if info.file_size > (limits or {}).get(info.filename, info.file_size):
            raise WeightsError(f"{source}: {name} is {info.file_size:,} bytes, more than the "
                               f"{limits[info.filename]:,} jaxviz reads; refusing the file")
        with z.open(info) as f:
            major, _ = np.lib.format.read_magic(f)
            size = int.from_bytes(f.read(2 if major == 1 else 4), "little")
        if size > MAX_HEADER_BYTES:
            raise WeightsError(f"{source}: {name} has a {size:,}-byte array header (at most {MAX_HEADER_BYTES:,}); "
                               "refusing the file")
        with z.open(info) as f:
            read = np.lib.format.read_array_header_1_0 if np.lib.format.read_magic(f)[0] == 1 else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f, max_header_size=MAX_HEADER_BYTES)
        declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if dtype.hasobject or declared > info.file_size:
            raise WeightsError(f"{source}: {name} declares a {dtype} array of shape {shape} ({declared:,} bytes) "
                               f"in {info.file_size:,} bytes; refusing the file")
