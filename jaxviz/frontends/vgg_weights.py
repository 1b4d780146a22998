"""Weight files of jaxviz's VGGs (:mod:`jaxviz.frontends.vgg`): read, checked against the architecture, and converted.

A weight file for a VGG of the table is

* a Keras HDF5 file of any layout Keras has written (``.h5``, ``.hdf5``, ``.weights.h5``, or the
  ``model.weights.h5`` of a ``.keras`` archive): read by :mod:`jaxviz.frontends.keras`'s one HDF5 reader, which is
  given the architecture's graph (:func:`jaxviz.frontends.vgg.build_graph`) to know where each layer's weights are, as
  it is given a whole model's config;
* jaxviz's converted ``.npz`` (:mod:`jaxviz.frontends.npz`: the graph as JSON + the params, pickle-free), which
  :func:`save_converted` writes for a VGG of the table and ``jaxviz convert`` writes for any model; or the
  earlier VGG-only ``.npz`` (``<layer>/kernel`` arrays and a metadata entry), still read.

Params are ``{layer: {"kernel": HWIO or [in, out], "bias": [out]}}`` of float32 numpy arrays, keyed by Keras's
layer names, so every layout is a key-for-key copy. Each file is checked against
:func:`jaxviz.frontends.vgg.weighted_layers` (names, shapes) before its data is read; errors name the layer, the file
and
the fix, and the architecture a file is for when it matches another one.

Top / no-top: a file *with* the classifier may be loaded with ``include_top=False`` (``fc1``, ``fc2`` and
``predictions`` are dropped, as Keras's by-name loading would, and never read); a no-top file asked for with
the top is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import untrusted
from ..atomic import file_digest
from ..errors import WeightsError, printable
from ..version import __version__
from . import keras as keras_io
from . import npz as converted
from . import vgg


class NoClassifierError(WeightsError):
    """A no-top file asked for with its classifier (:mod:`jaxviz.weights` adds the published file to use)."""


# ---------------------------------------------------------------------------------------------------------
# Checks against the architecture


def _arch_hint(found: dict[str, tuple], asked: vgg.Arch) -> str:
    """'; it is a vgg19 file …' when the layers and kernel shapes match another architecture exactly."""
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


def check_shapes(found: dict[str, list[tuple]], a: vgg.Arch, include_top: bool, source, what: str) -> list[str]:
    """Checks ``{layer: [weight shapes]}`` (what a file holds) against ``a``; returns the layers to read, in
    network order (a with-top file read without its top: the head is left out)."""
    expected = vgg.weighted_layers(a, include_top)
    head = [n for n in vgg.weighted_layers(a, True) if n not in vgg.weighted_layers(a, False)]
    kernel_shapes = {n: tuple(v[0]) if v else () for n, v in found.items()}
    has = set(found)
    if not include_top and has >= set(head):
        has -= set(head)  # a with-top file used without its classifier
    missing = [n for n in expected if n not in has]
    extra = [n for n in found if n in has and n not in expected]
    label = f"{a.name}{'' if include_top else ' without top'}"
    if missing or extra:
        if include_top and not extra and missing == head:
            raise NoClassifierError(f"{source} has no classifier ({', '.join(head)}): it is a no-top file; load it "
                                    "with include_top=False (--no-top) or use the file with the top")
        parts = [f"missing layers {', '.join(missing)}"] if missing else []
        parts += [f"unexpected layers {printable(', '.join(extra))[:300]}"] if extra else []  # names from the file
        raise WeightsError(f"{source} ({what}) does not match {label}: {'; '.join(parts)}"
                           f"{_arch_hint(kernel_shapes, a)}")
    for name, (kshape, bshape) in expected.items():
        shapes = found[name]
        if len(shapes) != 2:
            raise WeightsError(f"layer {name} in {source} has {len(shapes)} weights, expected 2 (kernel, bias); "
                               f"it is not a Keras {a.name} file")
        for leaf, shape, want in (("kernel", shapes[0], kshape), ("bias", shapes[1], bshape)):
            if tuple(shape) != tuple(want):
                raise WeightsError(
                    f"{name} {leaf} has shape {tuple(shape)} in {source}, expected {tuple(want)} for "
                    f"{label}{_arch_hint(kernel_shapes, a) or '; is it a file for another architecture?'}"
                )
    return list(expected)


def _tree(params: dict, source) -> dict[str, list[tuple]]:
    """``{layer: [kernel shape, bias shape]}`` of a params tree read from a converted file; both leaves needed."""
    found = {}
    for layer, leaves in params.items():
        odd = [k for k in leaves if k not in ("kernel", "bias")]
        if odd or not layer:
            keys = printable(", ".join(f"{layer}/{k}" if layer else k for k in odd or leaves))[:300]
            raise WeightsError(f"{source} has unexpected keys {keys}; convert the Keras file again")
        missing = [leaf for leaf in ("kernel", "bias") if leaf not in leaves]
        if missing:
            raise WeightsError(f"{source} lacks {printable(layer)[:200]}/{missing[0]}; convert the Keras file again")
        found[layer] = [np.shape(leaves["kernel"]), np.shape(leaves["bias"])]
    return found


def _select(params: dict, names: list[str]) -> dict:
    return {n: {leaf: np.asarray(params[n][leaf], np.float32) for leaf in ("kernel", "bias")} for n in names}


# ---------------------------------------------------------------------------------------------------------
# Keras HDF5


def _read_h5(path: Path, a: vgg.Arch, include_top: bool | None) -> tuple[dict, bool]:
    """``(params, include_top)``; ``include_top=None``: whatever the file has."""
    slots = keras_io.graph_slots(vgg.build_graph(a, True))
    with keras_io.open_weights(path) as (f, size):
        found, what = keras_io.stored_layers(f, slots, path)
        top = "predictions" in found if include_top is None else bool(include_top)
        names = check_shapes(found, a, top, path, what)  # before any data is read: the head is never read
        return keras_io.read_weights(f, {n: slots[n] for n in names}, path, untrusted.Budget(path, size)), top


def read_keras_h5(path: str | os.PathLike, arch: str | vgg.Arch, include_top: bool = True) -> dict:
    """Reads Keras weights for ``arch`` from any Keras HDF5 layout (see :mod:`jaxviz.frontends.keras.h5`).

    Returns:
      ``{layer: {"kernel", "bias"}}`` float32 numpy arrays; WeightsError naming the layer and the fix if the
      file does not match ``arch``.
    """
    return _read_h5(Path(path), vgg.get_arch(arch), include_top)[0]


# ---------------------------------------------------------------------------------------------------------
# Converted files


def is_converted(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a converted ``.npz`` (either format), by its suffix or its content."""
    return Path(path).suffix == ".npz" or converted.is_model_file(path) or converted.is_legacy_file(path)


def save_converted(params: dict, dst: str | os.PathLike, arch: str | vgg.Arch, include_top: bool = True,
                   *, source: str | None = None, source_md5: str | None = None) -> Path:
    """Writes a VGG's params in jaxviz's converted format: the graph :func:`jaxviz.frontends.vgg.build_graph` gives, the
    params, and ``__info__`` = arch, include_top, preprocessing (``"caffe"``), jaxviz's version and, if given,
    the source file's name and md5.

    ``dst`` gets the ``.npz`` suffix (``x.h5`` → ``x.npz``); the file is written atomically (a temporary file
    renamed). Returns the path written.
    """
    a = vgg.get_arch(arch)
    extra = [n for n in params if n not in vgg.weighted_layers(a, include_top)]
    if extra:
        raise WeightsError(f"params have layers {', '.join(extra)} that {a.name}{'' if include_top else ' without top'}"
                           " does not; pass the matching include_top")
    found = {n: [np.shape(p["kernel"]), np.shape(p["bias"])] for n, p in params.items()}
    checked = _select(params, check_shapes(found, a, include_top, "<params>", "params"))
    info = {"arch": a.name, "include_top": bool(include_top), "preprocess": "caffe", "jaxviz_version": __version__,
            "source": source, "source_md5": source_md5}
    dst = Path(dst)
    return Path(converted.write_model(dst.with_suffix(".npz"), vgg.build_graph(a, include_top), checked, info))


def converted_metadata(path: str | os.PathLike) -> dict:
    """What a converted file says of itself: format, arch, include_top, jaxviz_version, source, source_md5."""
    if converted.is_model_file(path):
        return converted.read_info(path)
    return converted.read_legacy(path, arrays=False)[0]


def load_converted(path: str | os.PathLike, arch: str | vgg.Arch | None = None,
                   include_top: bool | None = None) -> dict:
    """A VGG's params from a converted file (either format; numpy only, ``allow_pickle=False``).

    Args:
      path: the ``.npz``.
      arch: the architecture expected; WeightsError if the file is for another. ``None``: the file's.
      include_top: ``None``: the file's. ``False`` on a with-top file drops the head; ``True`` on a no-top
        file is an error.

    Returns:
      ``{layer: {"kernel", "bias"}}`` float32 numpy arrays, bit-identical to what was saved, checked against
      the architecture (missing/unexpected layers, shapes).
    """
    path = Path(path)
    if converted.is_model_file(path):
        graph, params, meta = converted.read_model(path)
        if meta.get("arch") not in vgg.ARCHS:
            raise WeightsError(f"{path} is a whole model ({graph.name}), not the weights of one of jaxviz's "
                               f"architectures; load it as a model: jaxviz.load({str(path)!r})")
        if graph != vgg.build_graph(meta["arch"], bool(meta.get("include_top"))):
            raise WeightsError(f"{path} says it holds {meta['arch']} but its graph is another; convert the Keras "
                               "file again")
    else:
        meta, params = converted.read_legacy(path)
    file_arch, file_top = meta.get("arch"), bool(meta.get("include_top"))
    if arch is not None and vgg.get_arch(arch).name != file_arch:
        raise WeightsError(f"{path} holds {file_arch} weights, not {vgg.get_arch(arch).name}; load it with arch "
                           f"{file_arch} (--arch {file_arch})")
    top = file_top if include_top is None else bool(include_top)
    if top and not file_top:
        raise WeightsError(f"{path} has no classifier (it was converted without the top); load it with "
                           "include_top=False (--no-top) or convert the with-top Keras file")
    return _select(params, check_shapes(_tree(params, path), vgg.get_arch(file_arch), top, path, "converted"))


# ---------------------------------------------------------------------------------------------------------
# Any file


def load_file(path: str | os.PathLike, arch: str | vgg.Arch, include_top: bool = True) -> dict:
    """Params from a Keras HDF5 file or a converted ``.npz``, chosen by suffix (or content)."""
    if is_converted(path):
        return load_converted(path, arch, include_top)
    return read_keras_h5(path, arch, include_top)


def convert(src: str | os.PathLike, arch: str | vgg.Arch, dst: str | os.PathLike,
            include_top: bool | None = None) -> Path:
    """Converts a VGG weight file (any Keras HDF5 layout, or the earlier ``.npz``) to jaxviz's converted format.

    Args:
      src: the file.
      arch: its architecture.
      dst: where to write (the suffix becomes ``.npz``).
      include_top: keep the classifier; ``None``: whatever the file has.

    Returns:
      The path written.
    """
    a, src = vgg.get_arch(arch), Path(src)
    if is_converted(src):
        top = bool(converted_metadata(src).get("include_top")) if include_top is None else bool(include_top)
        params = load_converted(src, a, top)
    else:
        params, top = _read_h5(src, a, include_top)
    return save_converted(params, dst, a, top, source=src.name, source_md5=file_digest(src, "md5"))
