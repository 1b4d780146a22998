"""Parity with Keras on full-size VGG16/VGG19: every weight-file layout, and the forward pass.

Keras (JAX backend) builds ``keras.applications.VGG16/VGG19(weights=None)`` with seeded random weights
scaled so activations stay O(1) and the softmax is not saturated, and saves them in each layout Keras users
have: (a) the 2016 keras-applications layout (written with h5py, like the published files), (b) Keras's
own legacy HDF5 writer (``save_weights_to_hdf5_group``; Keras 3.15's ``save_weights`` only writes
``.weights.h5``), also as a whole-model ``.h5``, and (c) ``model.save_weights("m.weights.h5")`` (and a
``.keras`` archive). Every file must load (``weights.load_params``, what ``jaxviz.load`` calls) to Keras's
weights bit for bit. The 2016-layout file is also converted to ``.npz`` and loaded with ``jaxviz.load``
(bit-exact again; conversion after reading is the same for every layout, and tests/test_weights.py
converts each layout), and that model's forward pass is compared with Keras's on a photo at every block's
output, fc2 and the probabilities: since every layout yields bit-identical params, one forward comparison
per model covers them all.

Each Keras model is built once, its files kept in a temporary folder deleted before the next model is
built (a full-size VGG file is 0.5 GB). Full-size models are marked slow.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras", reason="Keras is not installed (pip install 'jaxviz[keras]')")
if keras.backend.backend() != "jax":
    pytest.skip("these tests run Keras with the JAX backend (KERAS_BACKEND=jax)", allow_module_level=True)

from keras_files import layer_names, seeded_params, write_keras1  # noqa: E402

import jaxviz  # noqa: E402
from jaxviz import weights  # noqa: E402
from jaxviz.errors import WeightsError  # noqa: E402
from jaxviz.frontends import keras as keras_io  # noqa: E402
from jaxviz.keras_compare import compare_with  # noqa: E402

COMPARED = ("block1_pool", "block2_pool", "block3_pool", "block4_pool", "block5_pool", "fc2", "predictions")
#: max|Δ| ≤ RTOL·max|ref| per layer: both sides run float32 under "highest" matmul precision, so only the
#: summation order of XLA's conv/matmul kernels can differ (measured: 0 on jax 0.10.2, same kernels).
RTOL = 1e-4

#: name -> (arch, include_top, input size, layouts written)
CONFIGS = {
    "vgg16": ("vgg16", True, 224, ("keras1_2016", "legacy", "keras3")),
    "vgg19": ("vgg19", True, 224, ("keras1_2016", "legacy", "keras3")),
    "vgg16_notop64": ("vgg16", False, 64, ("keras1_2016", "legacy", "legacy_full_model", "keras3",
                                           "keras_archive")),
}
FULL_SIZE = {"vgg16", "vgg19"}


class Built:
    def __init__(self, config, kmodel, ref, files):
        self.config, self.kmodel, self.ref, self.files = config, kmodel, ref, files
        self.arch, self.include_top, self.size, _ = CONFIGS[config]


@pytest.fixture(scope="module", params=[pytest.param(c, marks=[pytest.mark.slow] if c in FULL_SIZE else [])
                                        for c in CONFIGS])
def built(request, tmp_path_factory):
    """The Keras model of one configuration, its weights and its saved files.

    Module-scoped and parametrized: pytest runs all tests of one configuration, then tears it down (its
    files are deleted) before building the next, so at most one model's files exist at a time.
    """
    folder = tmp_path_factory.mktemp(request.param)
    try:
        built = _build(request.param, folder)
        yield built
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _release(locals().get("built"))


def _release(built) -> None:
    """Drops one configuration's models and weights (each VGG is 0.5-0.6 GB, held several times over by Keras's
    variables, the reference arrays and the loaded model) before the next is built: kept, they took a test
    process past 5 GB."""
    import gc

    if built is not None:
        built.__dict__.clear()
    keras.backend.clear_session()
    jax.clear_caches()
    gc.collect()


def _build(config: str, folder: Path) -> Built:
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    arch, top, size, layouts = CONFIGS[config]
    builder = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}[arch]
    with pytest.MonkeyPatch.context() as mp:
        # Keras would draw Glorot-uniform kernels (seconds of CPU for 138 M weights) that set_weights replaces
        # at once: let the build allocate zeros instead.
        mp.setattr(keras.initializers.VarianceScaling, "__call__",
                   lambda self, shape, dtype=None: keras.ops.zeros(shape, dtype=dtype))
        kmodel = builder(weights=None, include_top=top, input_shape=(size, size, 3))
    ref = seeded_params(arch, top, seed=0)
    for name, p in ref.items():
        kmodel.get_layer(name).set_weights([p["kernel"], p["bias"]])
    for name in ("block1_conv1", "block5_conv3"):  # set_weights copies float32 exactly (spot check)
        k, b = kmodel.get_layer(name).get_weights()
        assert np.array_equal(k, ref[name]["kernel"]) and np.array_equal(b, ref[name]["bias"])
    files = {}
    for layout in layouts:
        if layout == "keras1_2016":
            path = folder / weights.weight_filename(arch, top)  # the published name
            # The published files have a root layer_names (input_1, …) and nothing else at the root.
            write_keras1(path, ref, layer_names(arch, top, "input_1"))
        elif layout == "legacy":
            path = folder / "legacy.h5"
            with h5py.File(path, "w") as f:
                legacy_h5_format.save_weights_to_hdf5_group(f, kmodel)
        elif layout == "legacy_full_model":
            path = folder / "full_model.h5"
            kmodel.save(path)  # warns that HDF5 is a legacy format
        elif layout == "keras3":
            path = folder / "model.weights.h5"
            kmodel.save_weights(path)
        else:
            path = folder / "model.keras"
            kmodel.save(path)
        files[layout] = path
    return Built(config, kmodel, ref, files)


def _assert_same(params, ref, what):
    assert set(params) == set(ref), what
    for name in ref:
        for leaf in ("kernel", "bias"):
            got = np.asarray(params[name][leaf])
            assert got.dtype == np.float32 and np.array_equal(got, ref[name][leaf]), f"{what}: {name}/{leaf}"


def test_every_layout_reads_bit_exact(built):
    for layout, path in built.files.items():
        params, source = weights.load_params(jaxviz.frontends.vgg.get_arch(built.arch), path, built.include_top)
        assert source == str(path)
        _assert_same(params, built.ref, layout)


def test_converted_loads_bit_exact(built):
    """The 2016 layout (the published files') converted to .npz and loaded with jaxviz.load."""
    src = built.files["keras1_2016"]
    npz = weights.convert(src, built.arch, src.parent / "converted.npz")
    meta = weights.converted_metadata(npz)
    assert (meta["arch"], meta["include_top"], meta["source"]) == (built.arch, built.include_top, src.name)
    # exact ops: the parity mode, and no prepared fast-mode kernels (transposed fc copies: +0.5 GB on VGG19)
    model = jaxviz.load(built.arch, npz, include_top=built.include_top, ops="exact")
    _assert_same(model.params, built.ref, "converted")
    built.model = model  # reused by the forward test


def test_one_reader_for_models_and_weight_files(built):
    """Keras's own files of a VGG, read as a whole model (keras_io.read_model: slots from the config) and as
    the architecture's weights (slots from vgg.build_graph), give Keras's weights bit for bit both ways; the
    converted ``model.weights.h5`` loads as a whole model with the same graph and params."""
    if built.config != "vgg16_notop64":
        pytest.skip("whole-model files are written for vgg16_notop64 only (a full-size VGG file is 0.5 GB)")
    for layout in ("legacy_full_model", "keras_archive"):
        graph, params, info = keras_io.read_model(built.files[layout])
        assert info["application"] == "vgg16" and info["preprocess"] == "caffe"
        vgg_graph = jaxviz.frontends.vgg.build_graph("vgg16", False)
        assert [x.name for x in graph.layers][1:] == [x.name for x in vgg_graph.layers][1:]
        _assert_same(params, built.ref, f"{layout} read as a model")
    src = built.files["keras3"]
    npz = weights.convert(src, built.arch, src.parent / "keras3_converted")
    model = jaxviz.load(str(npz), ops="exact")
    assert model.graph == jaxviz.frontends.vgg.build_graph(built.arch, built.include_top)
    _assert_same(model.params, built.ref, "converted .weights.h5 loaded as a model")


def _photo(size: int) -> tuple[np.ndarray, str]:
    """The cat photo shipped with jaxviz, preprocessed like Keras; a smooth synthetic image if absent."""
    path = Path(jaxviz.__file__).parent / "data" / "chelsea.jpg"
    try:
        from jaxviz.images import load_image, preprocess_input
    except ImportError:
        load_image = preprocess_input = None
    if path.is_file() and load_image is not None:
        return preprocess_input(load_image(path, target_size=(size, size)))[None], "chelsea.jpg"
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([128 + 100 * np.sin(6 * xx), 128 + 100 * np.cos(5 * yy), 255 * xx * yy], -1)
    return keras.applications.vgg16.preprocess_input(rgb[None].astype(np.float32)), "synthetic"


def test_forward_matches_keras(built):
    model = getattr(built, "model", None) or jaxviz.load(built.arch, built.files["keras1_2016"],
                                                          include_top=built.include_top, ops="exact")
    x, what = _photo(built.size)
    rows = compare_with(model, built.kmodel, x, COMPARED)
    assert [r["layer"] for r in rows] == [n for n in COMPARED if n in model.layer_names]
    for r in rows:
        assert r["max_abs_diff"] <= RTOL * r["max_abs_ref"], (
            f"{r['layer']}: max|Δ| {r['max_abs_diff']:.3g} > {RTOL}·max|ref| ({r['max_abs_ref']:.3g})")
    if jax.default_backend() == "cpu":
        # docs/EXACTNESS.md's claim: in the exact mode the outputs are bit-identical to Keras's on CPUs (both sides run
        # the same XLA:CPU convolutions and matmuls under "highest" precision). Measured: 0 on every layer.
        assert all(r["max_abs_diff"] == 0 for r in rows), [(r["layer"], r["max_abs_diff"]) for r in rows]
    print(f"\n{built.config} on {what}: max|Δ|/max|ref|: " + ", ".join(f"{r['layer']} {r['rel']:.1e}" for r in rows))
    if built.include_top:  # the weights are scaled so that the softmax is neither saturated nor flat
        p = model.predict(x)
        print(f"{built.config}: max probability {p.max():.3f}")
        assert 2 / 1000 < p.max() < 0.9, p.max()


def test_wrong_architecture_or_top_is_named(built):
    path = built.files["keras1_2016"]
    if not built.include_top:
        with pytest.raises(WeightsError, match="no classifier .*include_top=False .*tf_kernels.h5"):
            jaxviz.load(built.arch, path, include_top=True)
        return
    other = {"vgg16": "vgg19", "vgg19": "vgg16"}[built.arch]
    convs = "block3_conv4, block4_conv4, block5_conv4"
    kind = "unexpected" if built.arch == "vgg19" else "missing"
    with pytest.raises(WeightsError, match=rf"{kind} layers {convs}; it is a {built.arch} file: load it with "
                                           rf"arch {built.arch} \(--arch {built.arch}\)"):
        jaxviz.load(other, path)
