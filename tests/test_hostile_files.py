"""Hostile model files, built by hand (zipfile, h5py, numpy), each run through the real command line.

Each row of :data:`CASES` is ``Case(name, build, expect, argv, code)``: ``build(folder)`` writes the file and
returns its path; the command (``figures --quick`` by default) runs in a child process under a memory limit,
and the row asserts the exit status, that the output is one line naming the problem (``expect``) with no
traceback, that nothing outside the output folder was written or deleted (sentinel folders ``victim/`` at
every level above it, and ``secret`` files the hostile files point at), and that no temporary file was left.

The rows share one child process (a fresh JAX start per row would cost ~3 s each); the child runs them one
after the other, each in a folder of its own with its own output capture, and reports per row. The child's
memory is bounded with ``RLIMIT_DATA`` (heap and private mappings: what a decompressed bomb or a huge array
takes); ``RLIMIT_AS`` is not usable, as JAX reserves far more address space than it uses when it starts.

New front ends add rows: a builder and the fragment of the line that refuses the file.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

#: Memory the child may allocate (heap and private mappings): a tiny model's run needs ~0.5 GiB.
MEMORY_LIMIT = 1536 << 20
#: Output folder of every row (relative to its folder), deep enough for ``../`` names to climb out of it.
OUT = "x/y/out"
FIGURES = ("figures", "--arch", "{model}", "--quick", "--no-progress", "-o", OUT)
#: Seconds one row may take in the child (the quadratic layer ordering took ~50 s for 4,000 layers).
ROW_SECONDS = 20


class Case(NamedTuple):
    name: str
    build: Callable[[Path], Path]
    expect: str  # a piece of the one line the command prints (stderr when it fails, stdout when it succeeds)
    argv: tuple = FIGURES
    code: int = 2


# --- building blocks: a tiny functional model (8×8×3 → conv → GAP → dense) as Keras 3 writes it ----------


def _tensor(name: str) -> dict:
    return {"class_name": "__keras_tensor__", "config": {"shape": None, "dtype": "float32",
                                                         "keras_history": [name, 0, 0]}}


def _layer(cls: str, name: str, inputs=(), **cfg) -> dict:
    return {"module": "keras.layers", "class_name": cls, "config": {"name": name, **cfg}, "name": name,
            "inbound_nodes": [{"args": [_tensor(i) for i in inputs], "kwargs": {}}] if inputs else []}


def _functional(layers: list, inputs, outputs, name: str = "hostile") -> dict:
    return {"module": "keras", "class_name": "Functional",
            "config": {"name": name, "trainable": True, "layers": layers,
                       "input_layers": [[i, 0, 0] for i in inputs], "output_layers": [[o, 0, 0] for o in outputs]}}


def _input(name: str = "input_layer") -> dict:
    return _layer("InputLayer", name, batch_shape=[None, 8, 8, 3])


def _conv(name: str, src: str, cls: str = "Conv2D") -> dict:
    return _layer(cls, name, [src], filters=2, kernel_size=[3, 3], padding="same", activation="relu")


def _tiny(conv_name: str = "conv", model_name: str = "hostile", dense_units: int = 2, conv_cls="Conv2D") -> dict:
    return _functional([_input(), _conv(conv_name, "input_layer", conv_cls),
                        _layer("GlobalAveragePooling2D", "gap", [conv_name]),
                        _layer("Dense", "dense", ["gap"], units=dense_units, activation="softmax")],
                       ["input_layer"], ["dense"], model_name)


def _tiny_weights() -> dict:
    rng = np.random.default_rng(0)
    return {"conv2d": [rng.normal(size=(3, 3, 3, 2)).astype("f4"), np.zeros(2, "f4")],
            "dense": [rng.normal(size=(2, 2)).astype("f4"), np.zeros(2, "f4")]}


def _weights_h5(weights: dict) -> bytes:
    """Keras 3's ``model.weights.h5``: ``layers/<class-based key>/vars/0, 1, …``."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for key, arrays in weights.items():
            g = f.create_group(f"layers/{key}/vars")
            for i, a in enumerate(arrays):
                g[str(i)] = a
    return buf.getvalue()


def _keras_zip(path: Path, config: dict, weights: dict | None = None, extra=()) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", _weights_h5(_tiny_weights() if weights is None else weights))
        for name, data in extra:
            z.writestr(name, data)
    return path


def _legacy_h5(path: Path, config: dict, fill: Callable) -> Path:
    """A legacy whole-model ``.h5`` (``model.save("m.h5")``): ``fill(model_weights group, h5py)`` adds weights."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "3.15.1"
        f.attrs["backend"] = "jax"
        fill(f.create_group("model_weights"), h5py)
    return path


def _legacy_layer(group, name: str, arrays: dict) -> None:
    """One layer's group: ``weight_names`` ``name/kernel``, …, each dataset at ``name/name/kernel``."""
    g = group.create_group(name)
    g.attrs["weight_names"] = [f"{name}/{w}" for w in arrays]
    for w, a in arrays.items():
        if callable(a):
            a(g, f"{name}/{w}")
        else:
            g[f"{name}/{w}"] = a


def _tiny_legacy(path: Path, conv=None, dense=None, units: int = 2) -> Path:
    """The tiny model as a legacy ``.h5``; ``conv``/``dense`` override that layer's weights (``{w: array or
    writer(group, name)}``)."""
    w = _tiny_weights()

    def fill(group, h5py):
        _legacy_layer(group, "conv", conv or {"kernel": w["conv2d"][0], "bias": w["conv2d"][1]})
        _legacy_layer(group, "dense", dense or {"kernel": w["dense"][0], "bias": w["dense"][1]})

    return _legacy_h5(path, _tiny(dense_units=units), fill)


def _secret(folder: Path) -> Path:
    """A file outside the output folder that a hostile file points at (its bytes must not be read)."""
    path = folder / "secret.bin"
    path.write_bytes(np.arange(54, dtype="f4").tobytes())
    return path


def _raw_zip(path: Path, members) -> Path:
    """A zip written field by field, so that sizes can lie: ``members`` = ``[(name, stored bytes, method,
    crc, declared size)]``."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, size in members:
        offset = out.tell()
        fname = name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data), size, len(fname), 0))
        out.write(fname + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(data), size,
                                  len(fname), 0, 0, 0, 0, 0, offset) + fname)
    start = out.tell()
    out.write(central.getvalue())
    n = len(members)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central.getvalue()), start, 0))
    path.write_bytes(out.getvalue())
    return path


def _deflated(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _zeros_bomb(tenths: int = 30) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``tenths`` × 100 MiB of zeros, made in about a second: one 100 MiB segment
    compressed with a full flush (so it stands alone), repeated; returns ``(stream, crc, size)``."""
    chunk = bytes(100 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    seg = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    block = crc = zlib.crc32(chunk)
    for _ in range(tenths - 1):  # zlib's crc32_combine(crc, block, len(chunk))
        crc = _crc_zero_extend(crc, len(chunk)) ^ block
    return seg * tenths + b"\x03\x00", crc, len(chunk) * tenths


def _crc_zero_extend(crc: int, n: int) -> int:
    """The CRC register after ``n`` more zero bits-worth of bytes, by GF(2) matrix powers (the operator of zlib's
    ``crc32_combine``: ``crc(a + b) = shift(crc(a), len(b)) ^ crc(b)``), instead of hashing ``n`` bytes."""
    def times(mat, vec):
        s, i = 0, 0
        while vec:
            if vec & 1:
                s ^= mat[i]
            vec >>= 1
            i += 1
        return s

    def square(mat):
        return [times(mat, mat[i]) for i in range(32)]

    odd = [0xEDB88320] + [1 << i for i in range(31)]
    even = square(odd)
    odd = square(even)
    while True:
        even = square(odd)
        if n & 1:
            crc = times(even, crc)
        n >>= 1
        if not n:
            break
        odd = square(even)
        if n & 1:
            crc = times(odd, crc)
        n >>= 1
        if not n:
            break
    return crc


# --- the hostile files ----------------------------------------------------------------------------------


def path_escape(d: Path) -> Path:
    # Conv2D named a/../../../../victim: its pattern task's resume folder out/.partial/patterns_keras_<name>
    # resolves to x/victim, which an unchecked cleanup deletes; its figures land in x/ and beyond.
    return _keras_zip(d / "evil.keras", _tiny("a/../../../../victim"))


def absolute_escape(d: Path) -> Path:
    return _keras_zip(d / "evil.keras", _tiny("a/" + "../" * 40 + str((d / "victim").resolve()).lstrip("/")))


def dotdot_name(d: Path) -> Path:
    return _keras_zip(d / "dots.keras", _tiny(".."))


def control_characters(d: Path) -> Path:
    # retitles an xterm and clears the screen if printed raw
    return _keras_zip(d / "ansi.keras", _tiny("conv\x1b]0;pwned\x07\x1b[2J\x1b[H"))


def nested_model_name(d: Path) -> Path:
    inner = _tiny(model_name="..")
    inner["name"] = ".."
    inner["inbound_nodes"] = [{"args": [_tensor("input_layer")], "kwargs": {}}]
    outer = _functional([_input(), inner], ["input_layer"], [".."], "outer")
    weights = {f"functional/layers/{k}": v for k, v in _tiny_weights().items()}
    return _keras_zip(d / "nested.keras", outer, weights)


def class_name_control(d: Path) -> Path:
    return _keras_zip(d / "class.keras", _tiny(conv_cls="Conv2D\x1b[2J"))


def zip_slip(d: Path) -> Path:
    # a member named to climb out of any folder it is extracted to: jaxviz extracts nothing, reads the model
    return _keras_zip(d / "slip.keras", _tiny(), extra=[("../../victim/pwned.txt", "pwned"),
                                                        ("/tmp/jaxviz-pwned.txt", "pwned")])


def zip_bomb(d: Path) -> Path:
    # model.weights.h5 honestly declared as 3 GiB of zeros, stored deflated in 3 MB
    stream, crc, size = _zeros_bomb(30)
    config = json.dumps(_tiny()).encode()
    meta = b'{"keras_version": "3.15.1"}'
    return _raw_zip(d / "bomb.keras", [
        ("metadata.json", meta, 0, zlib.crc32(meta), len(meta)),
        ("config.json", config, 0, zlib.crc32(config), len(config)),
        ("model.weights.h5", stream, 8, crc, size)])


def zip_lying_size(d: Path) -> Path:
    # config.json declared as 100 bytes (central directory and local header) while its deflate stream holds
    # 50 MB: whatever is read must stop at the declared size
    big = json.dumps(_tiny()).encode() + b" " * (50 << 20)
    weights = _weights_h5(_tiny_weights())
    return _raw_zip(d / "liar.keras", [
        ("config.json", _deflated(big), 8, zlib.crc32(big), 100),
        ("model.weights.h5", weights, 0, zlib.crc32(weights), len(weights))])


def too_many_members(d: Path) -> Path:
    return _keras_zip(d / "members.keras", _tiny(), extra=[(f"assets/{i}", "") for i in range(1001)])


def huge_dataset_h5(d: Path) -> Path:
    # a few KB on disk; the conv kernel declares 3×3×10⁸×2 float32 values (7 GB: 10⁸ input channels, which
    # its config leaves open) and stores nothing
    return _tiny_legacy(d / "huge.h5", conv={
        "kernel": lambda g, n: g.create_dataset(n, shape=(3, 3, 10**8, 2), dtype="f4", chunks=(1, 1, 1000, 2),
                                                compression="gzip"),
        "bias": np.zeros(2, "f4")})


def dense_billion_units(d: Path) -> Path:
    # a Dense declaring 10⁹ units whose weights match that shape (and store nothing)
    return _tiny_legacy(d / "dense.h5", units=10**9, dense={
        "kernel": lambda g, n: g.create_dataset(n, shape=(2, 10**9), dtype="f4", chunks=(1, 1000)),
        "bias": lambda g, n: g.create_dataset(n, shape=(10**9,), dtype="f4", chunks=(1000,))})


def shape_mismatch(d: Path) -> Path:
    return _tiny_legacy(d / "shape.h5", dense={"kernel": np.zeros((2, 7), "f4"), "bias": np.zeros(2, "f4")})


def channels_mismatch(d: Path) -> Path:
    # 5 input channels where the model gives 3: the one dimension a layer's config leaves open
    return _tiny_legacy(d / "channels.h5", conv={"kernel": np.zeros((3, 3, 5, 2), "f4"), "bias": np.zeros(2, "f4")})


def huge_activation(d: Path) -> Path:
    # no weights to speak of, but an UpSampling2D that makes an 8×8 input 32768×32768 (8 GB per image)
    cfg = _tiny()
    layers = cfg["config"]["layers"]
    layers[2:3] = [_layer("UpSampling2D", "up", ["conv"], size=[4096, 4096]),
                   _layer("GlobalAveragePooling2D", "gap", ["up"])]
    return _keras_zip(d / "up.keras", cfg)


def external_link(d: Path) -> Path:
    import h5py

    with h5py.File(d / "secret.h5", "w") as f:
        f.create_group("conv").create_dataset("conv/kernel", data=np.ones((3, 3, 3, 2), "f4"))

    def fill(group, h5py):
        group["conv"] = h5py.ExternalLink(str(d / "secret.h5"), "/conv")
        w = _tiny_weights()["dense"]
        _legacy_layer(group, "dense", {"kernel": w[0], "bias": w[1]})

    return _legacy_h5(d / "link.h5", _tiny(), fill)


def external_storage(d: Path) -> Path:
    secret = _secret(d)
    return _tiny_legacy(d / "external.h5", conv={
        "kernel": lambda g, n: g.create_dataset(n, shape=(3, 3, 3, 2), dtype="f4",
                                                external=[(str(secret), 0, 216)]),
        "bias": np.zeros(2, "f4")})


def virtual_dataset(d: Path) -> Path:
    import h5py

    with h5py.File(d / "secret.h5", "w") as f:
        f["data"] = np.ones((3, 3, 3, 2), "f4")

    def vds(g, n):
        layout = h5py.VirtualLayout(shape=(3, 3, 3, 2), dtype="f4")
        layout[...] = h5py.VirtualSource(str(d / "secret.h5"), "data", shape=(3, 3, 3, 2))
        g.create_virtual_dataset(n, layout)

    return _tiny_legacy(d / "virtual.h5", conv={"kernel": vds, "bias": np.zeros(2, "f4")})


def own_input(d: Path) -> Path:
    cfg = _tiny()
    cfg["config"]["layers"][2] = _layer("GlobalAveragePooling2D", "gap", ["gap"])
    return _keras_zip(d / "self.keras", cfg)


def cycle(d: Path) -> Path:
    layers = [_input(), _conv("conv", "input_layer"), _layer("Add", "a", ["conv", "b"]), _layer("ReLU", "b", ["a"]),
              _layer("GlobalAveragePooling2D", "gap", ["b"]), _layer("Dense", "dense", ["gap"], units=2)]
    return _keras_zip(d / "cycle.keras", _functional(layers, ["input_layer"], ["dense"]))


def deep_nesting(d: Path) -> Path:
    model = _functional([_input(), _layer("ReLU", "relu", ["input_layer"])], ["input_layer"], ["relu"], "m0")
    for i in range(1, 40):
        model = {**model, "name": f"m{i - 1}", "inbound_nodes": [{"args": [_tensor("input_layer")], "kwargs": {}}]}
        model = _functional([_input(), model], ["input_layer"], [f"m{i - 1}"], f"m{i}")
    return _keras_zip(d / "deep.keras", model, {})


def many_layers_reversed(d: Path) -> Path:
    # 20,001 ReLU layers, listed last to first: refused, and quickly (the ordering is linear)
    n = 20_001
    layers = [_input()] + [_layer("ReLU", f"r{i}", [f"r{i - 1}" if i else "input_layer"]) for i in range(n)]
    return _keras_zip(d / "long.keras", _functional(layers[::-1], ["input_layer"], [f"r{n - 1}"]), {})


def _npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _npy_header(header: str) -> bytes:
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode()


def _graph_npy(conv_name: str = "conv") -> bytes:
    """jaxviz's converted format's ``__graph__``: the tiny model's graph as UTF-8 JSON bytes."""
    layers = [{"name": "input_layer", "kind": "InputLayer", "config": {"batch_shape": [None, 8, 8, 3]}, "inputs": []},
              {"name": conv_name, "kind": "Conv2D", "config": {"filters": 2, "kernel_size": [3, 3], "padding": "same"},
               "inputs": ["input_layer"]},
              {"name": "gap", "kind": "GlobalAveragePooling2D", "config": {}, "inputs": [conv_name]},
              {"name": "dense", "kind": "Dense", "config": {"units": 2, "activation": "softmax"}, "inputs": ["gap"]}]
    graph = {"name": "hostile", "outputs": ["dense"], "class_names": None, "layers": layers}
    return _npy(np.frombuffer(json.dumps(graph).encode(), np.uint8))


def _converted(path: Path, conv_kernel: bytes, conv_name: str = "conv") -> Path:
    w = _tiny_weights()
    return _npz(path, {"__graph__.npy": _graph_npy(conv_name), f"{conv_name}/kernel.npy": conv_kernel,
                       f"{conv_name}/bias.npy": _npy(w["conv2d"][1]), "dense/kernel.npy": _npy(w["dense"][0]),
                       "dense/bias.npy": _npy(w["dense"][1])})


def npz_huge_header(d: Path) -> Path:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 3, 3, 2), }" + " " * 200_000 + "\n"
    return _converted(d / "header.npz", _npy_header(header) + b"\0" * 216)


def npz_malformed(d: Path) -> Path:
    return _npz(d / "malformed.npz", {"__graph__.npy": _npy(np.frombuffer(b'{"layers": [', np.uint8))})


def npz_shape_bomb(d: Path) -> Path:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 3, 2), }\n"
    return _converted(d / "shape.npz", _npy_header(header) + b"\0" * 64)


def npz_path_escape(d: Path) -> Path:
    # the converted format's graph is as untrusted as a Keras config: nested names are checked part by part
    w = _tiny_weights()
    return _converted(d / "escape.npz", _npy(w["conv2d"][0]), "a/../../../../victim")


def odd_but_valid_name(d: Path) -> Path:
    # Keras allows spaces, colons and brackets in a name: written as a slug inside the output folder
    return _keras_zip(d / "odd.keras", _tiny("conv: 1 (a)"))


# --- ONNX files (built with onnx.helper: the rows need the onnx package, a test extra) ----------------------


def _onnx_model(conv_name: str = "conv", graph_name: str = "hostile", weight=None):
    """8×8×3 → Conv (4 filters) → Relu → GlobalAveragePool → Flatten → Gemm (2 classes)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [weight if weight is not None else numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype("f4"), "w"),
             numpy_helper.from_array(rng.normal(size=(2, 4)).astype("f4"), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], name=conv_name, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    graph = helper.make_graph(nodes, graph_name, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def onnx_node_name_escape(d: Path) -> Path:
    # ONNX allows any node name: a path-like one names a layer, never a file
    import onnx

    onnx.save(_onnx_model("a/../../../../victim\x1b[2J", "../../evil"), d / "escape.onnx")
    return d / "escape.onnx"


def onnx_external_data_escape(d: Path) -> Path:
    # a weight whose bytes are "in" a file outside the model's folder
    import onnx
    from onnx import TensorProto

    _secret(d)
    (d / "models").mkdir()
    model = _onnx_model()
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "../secret.bin"
    onnx.save(model, d / "models" / "m.onnx")
    return d / "models" / "m.onnx"


def onnx_huge_weight(d: Path) -> Path:
    # a weight declaring 2^30 × 27 floats, with no data behind it
    import onnx
    from onnx import TensorProto

    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**30, 3, 3, 3])
    onnx.save(_onnx_model(weight=w), d / "huge.onnx")
    return d / "huge.onnx"


def onnx_garbage(d: Path) -> Path:
    (d / "garbage.onnx").write_bytes(b"\x08\x07\x12\xff\xff\xff\xff\x0f" + b"\xff" * 64)
    return d / "garbage.onnx"


REFUSED = "so jaxviz refuses it"
CASES = [
    Case("path_escape", path_escape, "layer name 'a/../../../../victim' contains '/'"),
    Case("path_escape_activations", path_escape, "contains '/'",
         ("activations", "{img}", "--arch", "{model}", "--blocks", "-o", OUT)),
    Case("absolute_escape", absolute_escape, "contains '/', which Keras does not allow"),
    Case("dotdot_name", dotdot_name, "layer name '..' is a path component"),
    Case("control_characters", control_characters, "'conv\\x1b]0;pwned\\x07\\x1b[2J\\x1b[H' contains control"),
    Case("nested_model_name", nested_model_name, "name '..' is a path component"),
    Case("class_name_control", class_name_control, "class name 'Conv2D\\x1b[2J' contains control characters"),
    Case("zip_slip", zip_slip, "Total params: 62", ("summary", "{model}"), 0),
    Case("zip_bomb", zip_bomb, "model.weights.h5 expands from"),
    Case("zip_lying_size", zip_lying_size, "config.json"),
    Case("too_many_members", too_many_members, "the archive has 1,004 members"),
    Case("huge_dataset_h5", huge_dataset_h5, "layer 'conv' weight 'kernel' declares shape (3, 3, 100000000, 2)"),
    Case("dense_billion_units", dense_billion_units, "layer 'dense' weight 'kernel' declares shape (2, 1000000000)"),
    Case("shape_mismatch", shape_mismatch, "layer 'dense' weight 'kernel' has shape (2, 7) in the file, but the "
                                           "layer's config implies (?, 2)"),
    Case("channels_mismatch", channels_mismatch, "its weights do not fit its layers"),
    Case("huge_activation", huge_activation, "layer 'up' outputs 2,147,483,648 values per image"),
    Case("external_link", external_link, "'/model_weights/conv' is an external link to another file"),
    Case("external_storage", external_storage, "layer 'conv' weight 'kernel' keeps its bytes in an external file"),
    Case("virtual_dataset", virtual_dataset, "layer 'conv' weight 'kernel' is a virtual dataset"),
    Case("own_input", own_input, "layer 'gap' takes its own output as its input"),
    Case("cycle", cycle, "layers ['a', 'b'] take each other's outputs as inputs (a cycle)"),
    Case("deep_nesting", deep_nesting, "models are nested more than 32 deep"),
    Case("many_layers_reversed", many_layers_reversed, "declares more than 20,000 layers"),
    Case("npz_huge_header", npz_huge_header, "-byte array header (at most 65,536)"),
    Case("npz_malformed", npz_malformed, "cannot read {model} as a jaxviz model file"),
    Case("npz_shape_bomb", npz_shape_bomb, "declares a float32 array of shape (100000, 100000, 3, 2)"),
    Case("npz_path_escape", npz_path_escape, "layer name '..' is a path component"),
    Case("odd_but_valid_name", odd_but_valid_name, "_conv_1_a_.png",
         ("activations", "{img}", "--arch", "{model}", "--layer", "conv: 1 (a)", "-o", OUT), 0),
]
if importlib.util.find_spec("onnx") is not None:
    CASES += [
        Case("onnx_node_name_escape", onnx_node_name_escape, "demo_star_Conv_0.png", ("activations", "{img}", "--arch",
                                                                         "{model}", "--blocks", "-o", OUT), 0),
        Case("onnx_external_data_escape", onnx_external_data_escape, "outside the model's folder"),
        Case("onnx_huge_weight", onnx_huge_weight, "elements"),
        Case("onnx_garbage", onnx_garbage, "cannot read"),
    ]


# --- running them ---------------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root``: ``{relative path: (kind, size, mtime_ns)}``."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            st = p.lstat()
            out[str(p.relative_to(root))] = ("d" if p.is_dir() else "f", 0 if p.is_dir() else st.st_size,
                                             st.st_mtime_ns)
    return out


def _run_case(argv: list[str], folder: Path, log: Path) -> dict:
    """One row in this (child) process: chdir, capture fds 1 and 2 in ``log``, run the CLI, compare trees."""
    from jaxviz.cli import main

    os.chdir(folder)
    before = _tree(folder)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out_fd = os.open(log.with_suffix(".out"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err_fd = os.open(log.with_suffix(".err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    t = time.perf_counter()
    try:
        code = main(argv)
    except BaseException as e:  # the CLI must never let one through: recorded as a failure of the row
        import traceback

        traceback.print_exc()
        code = f"raised {type(e).__name__}"
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (out_fd, err_fd, *saved):
            os.close(fd)
    seconds = time.perf_counter() - t
    after = _tree(folder)
    outside = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p)
                     and not (p + "/").startswith(OUT + "/") and p not in ("x", "x/y", "x/y/out"))
    temporaries = sorted(p for p in after if p.endswith((".tmp", ".part")))
    return {"code": code, "stdout": log.with_suffix(".out").read_text(errors="replace"),
            "stderr": log.with_suffix(".err").read_text(errors="replace"), "seconds": seconds,
            "outside": outside, "temporaries": temporaries}


def _child(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    results: dict = {}
    for row in plan:
        results[row["name"]] = _run_case(row["argv"], Path(row["folder"]), Path(row["folder"]).parent / row["name"])
        Path(plan_path).with_suffix(".results.json").write_text(json.dumps(results))


def _limit_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    from jaxviz.demo import demo_image_path

    root = tmp_path_factory.mktemp("hostile")
    plan = []
    for case in CASES:
        folder = root / case.name
        for sentinel in ("victim", "x/victim", "x/y/victim"):  # beside the output folder, at every level above
            (folder / sentinel).mkdir(parents=True)
            (folder / sentinel / "keep.txt").write_text("keep\n")
        model = case.build(folder)
        fill = {"model": os.path.relpath(model, folder), "img": str(demo_image_path())}
        plan.append({"name": case.name, "folder": str(folder), "argv": [a.format(**fill) for a in case.argv],
                     "model": fill["model"]})
    plan_path = root / "plan.json"
    plan_path.write_text(json.dumps(plan))
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]),
           "JAXVIZ_COMPILE_CACHE": "0", "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, __file__, str(plan_path)], env=env, preexec_fn=_limit_memory,
                          capture_output=True, text=True, timeout=ROW_SECONDS * len(CASES))
    results_path = plan_path.with_suffix(".results.json")
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    return {row["name"]: (row, results.get(row["name"])) for row in plan}, proc


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file(case, outcomes):
    by_name, proc = outcomes
    row, got = by_name[case.name]
    assert got is not None, f"the child stopped before this row (exit {proc.returncode}): {proc.stderr[-2000:]}"
    stream = got["stdout"] if case.code == 0 else got["stderr"]
    lines = [ln for ln in got["stderr"].splitlines() if ln.strip()]
    assert got["code"] == case.code, (got["code"], got["stderr"][-2000:])
    assert "Traceback" not in got["stderr"] and "internal error" not in got["stderr"]
    if case.code != 0:
        assert len(lines) == 1, lines
        assert lines[0].startswith("jaxviz: error: "), lines
        assert row["model"] in lines[0], f"the line must name the file: {lines[0]}"
    assert case.expect.format(model=row["model"]) in stream, stream[-2000:]
    assert "\x1b" not in got["stdout"] + got["stderr"], "a control character reached the terminal"
    assert got["outside"] == [], f"written or deleted outside {OUT}: {got['outside']}"
    assert got["temporaries"] == [], f"half-written files left: {got['temporaries']}"
    assert got["seconds"] < ROW_SECONDS, got["seconds"]
    out = Path(row["folder"], OUT)
    if case.code != 0:  # a refused file leaves no output folder behind
        assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))
    else:
        assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))


# --- the pieces, in-process ------------------------------------------------------------------------------


def test_confine_keeps_every_path_inside_the_output_folder(tmp_path):
    from jaxviz.atomic import confine, remove_tree
    from jaxviz.errors import JaxvizError

    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "victim").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere")
    assert confine(out, "a.png") == out / "a.png"
    assert confine(out, "sub", "f.png") == out / "sub" / "f.png"
    for parts in [("../victim",), ("/etc/passwd",), ("a/../../victim",), ("..",), (".",), ("",),
                  ("link", "f.png"), ("sub", "..", "..", "victim")]:
        with pytest.raises(JaxvizError, match="outside the output folder"):
            confine(out, *parts)
    with pytest.raises(JaxvizError, match="outside the output folder"):
        remove_tree(out, "..", "victim")
    assert (tmp_path / "victim").is_dir()
    (out / "old").mkdir()
    remove_tree(out, "old")
    assert not (out / "old").exists()


def test_file_stems_are_safe_and_distinct():
    from jaxviz.atomic import MAX_STEM, file_stems

    names = ["block1_conv1", "vgg16/block1_conv1", "vgg16_block1_conv1", "conv: 1 (a)", "..", ".hidden",
             "x" * 300, "a\x1b[2J"]
    stems = file_stems(names)
    assert stems["block1_conv1"] == "block1_conv1"  # plain names keep their file names
    assert stems["vgg16_block1_conv1"] == "vgg16_block1_conv1"
    assert stems["vgg16/block1_conv1"] == "vgg16_block1_conv1_2"  # its slug was taken: made distinct
    assert stems["conv: 1 (a)"] == "conv_1_a_"
    assert len({s.lower() for s in stems.values()}) == len(names)
    assert stems["logits"] == "logits" and stems["inner/c 1"] == "inner_c_1"  # names outside the set: their slug
    for s in stems.values():
        assert s and not s.startswith(".") and len(s) <= MAX_STEM and all(c.isalnum() or c in "_.+=-" for c in s)


def test_printable_escapes_terminal_control_characters():
    from jaxviz.errors import printable

    assert printable("a\x1b]0;t\x07\nb\u2028\x9b") == "a\\x1b]0;t\\x07\\nb\\u2028\\x9b"
    assert printable("ünïcode naïve") == "ünïcode naïve"


def test_summary_escapes_names():
    from jaxviz.frontends.vgg import LayerInfo
    from jaxviz.model import format_table

    text = format_table("m\x1b]0;x\x07", [LayerInfo("c\x1b[2J", "Conv2D", (8, 8, 2), 56, (3, 3, 3, 2))])
    assert "\x1b" not in text and "\x07" not in text and "c\\x1b[2J (Conv2D)" in text


def test_layer_order_is_linear_and_keeps_the_config_order(tmp_path):
    from jaxviz.frontends import keras as keras_io

    n = 4000  # listed last to first: took ~50 s with repeated passes over the list
    layers = [_input()] + [_layer("ReLU", f"r{i}", [f"r{i - 1}" if i else "input_layer"]) for i in range(n)]
    _keras_zip(tmp_path / "long.keras", _functional(layers[::-1], ["input_layer"], [f"r{n - 1}"]), {})
    t = time.perf_counter()
    graph, _, _ = keras_io.read_model(tmp_path / "long.keras")
    assert time.perf_counter() - t < 5  # measured 0.3 s
    assert [x.name for x in graph.layers] == ["input_layer", *(f"r{i}" for i in range(n))]
    # a config in order (as Keras writes it) keeps its order, branches included, even where another order
    # would do
    layers = [_input(), _conv("b", "input_layer"), _conv("a", "input_layer"), _layer("Add", "add", ["a", "b"]),
              _layer("GlobalAveragePooling2D", "gap", ["add"]), _layer("Dense", "dense", ["gap"], units=2)]
    w = _tiny_weights()
    _keras_zip(tmp_path / "branches.keras", _functional(layers, ["input_layer"], ["dense"]),
               {"conv2d": w["conv2d"], "conv2d_1": w["conv2d"], "dense": w["dense"]})
    graph, _, _ = keras_io.read_model(tmp_path / "branches.keras")
    assert [x.name for x in graph.layers] == ["input_layer", "b", "a", "add", "gap", "dense"]


def test_figures_write_slugged_names_inside_and_escape_them_in_html(tmp_path):
    from jaxviz.figures import make_figures

    evil = "<img src=x onerror=alert(1)>"
    inner = _functional([_input("inner_in"), _conv("c:1", "inner_in")], ["inner_in"], ["c:1"], "inner model")
    inner.update(name="inner model", inbound_nodes=[{"args": [_tensor("input_layer")], "kwargs": {}}])
    layers = [_input(), inner, _conv(evil, "inner model"), _layer("GlobalAveragePooling2D", "gap", [evil]),
              _layer("Dense", "dense", ["gap"], units=2, activation="softmax")]
    w = _tiny_weights()
    path = _keras_zip(tmp_path / "names.keras", _functional(layers, ["input_layer"], ["dense"]),
                      {"functional/layers/conv2d": w["conv2d"],
                       "conv2d": [np.ones((3, 3, 2, 2), "f4"), np.zeros(2, "f4")], "dense": w["dense"]})
    out = tmp_path / "out"
    make_figures(str(path), None, None, out, pattern_layers=(evil,), pattern_methods=("keras",), pattern_filters=1,
                 pattern_size=16, pattern_steps=1, single_layer="none", kernel_filters=2, feature_maps=1,
                 deepvis_classes=(), gradcam_top=1, progress=False)
    files = sorted(p.name for p in out.rglob("*"))
    assert "fmaps_inner_model_c_1.png" in files and "patterns_keras__img_src=x_onerror=alert_1_.png" in files
    assert all(p.resolve().is_relative_to(out.resolve()) for p in tmp_path.rglob("*") if p != out and out in
               p.parents) and sorted(p.name for p in tmp_path.iterdir()) == ["names.keras", "out"]
    page = (out / "index.html").read_text()
    assert evil not in page and html_escape(evil) in page
    from jaxviz.cli import main

    for layer, stem in (("c:1", "c_1"), ("inner model/c:1", "inner_model_c_1"), (evil, "_img_src=x_onerror=alert_1_")):
        assert main(["kernels", "--arch", str(path), "--layer", layer, "-o", str(tmp_path / "k")]) == 0
        assert (tmp_path / "k" / f"kernels_{stem}.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "names.keras", "out"]


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def test_unzipped_model_folder_with_a_symlink_is_refused(tmp_path):
    from jaxviz.errors import WeightsError
    from jaxviz.frontends import keras as keras_io

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_tiny()))
    (folder / "metadata.json").write_text('{"keras_version": "3.15.1"}')
    (tmp_path / "secret.h5").write_bytes(_weights_h5(_tiny_weights()))
    (folder / "model.weights.h5").symlink_to(tmp_path / "secret.h5")
    with pytest.raises(WeightsError, match="model.weights.h5 is a symbolic link"):
        keras_io.read_model(folder)
    (folder / "model.weights.h5").unlink()
    (folder / "model.weights.h5").write_bytes(_weights_h5(_tiny_weights()))
    graph, params, _ = keras_io.read_model(folder)  # the same files stored in the folder: read
    assert [x.name for x in graph.layers] == ["input_layer", "conv", "gap", "dense"]


def test_compare_keras_loads_with_safe_mode_and_a_fixed_keras(monkeypatch):
    keras = pytest.importorskip("keras")
    import tomllib

    from jaxviz import keras_compare
    from jaxviz.errors import JaxvizError

    seen = {}
    monkeypatch.setattr(keras.saving, "load_model", lambda path, **kw: seen.update(kw) or "model")
    assert keras_compare.load_keras_file("m.keras") == "model" and seen["safe_mode"] is True
    monkeypatch.setattr(keras, "__version__", "3.11.2")
    with pytest.raises(JaxvizError, match="older than 3.11.3"):
        keras_compare.import_keras()
    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert "keras>=3.11.3" in extras["keras"] and "keras>=3.11.3" in extras["test"]


if __name__ == "__main__":
    _child(sys.argv[1])
