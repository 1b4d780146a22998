"""Filter patterns (listing 5.38): parity with a Keras implementation, batching, caching, the compiled HLO."""

import os

import jax
import numpy as np
import pytest

import jaxviz
from jaxviz import runtime
from jaxviz.errors import JaxvizError, LayerError
from jaxviz.visualize import patterns

SIZE = 32
LAYER = "block3_conv1"  # 8 channels in vgg_tiny


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _book_start(n, size, seed=0):
    rng = np.random.RandomState(seed)
    return np.concatenate([rng.random_sample((1, size, size, 3)) * 20 + 128.0 for _ in range(n)])


# --- parity with Keras --------------------------------------------------------------------------------------


def _keras_tiny(model, size, layer):
    """A Keras model mirroring vgg_tiny up to ``layer``, with the jaxviz weights copied in by name."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("Keras runs on another backend in this process")
    inp = keras.Input((size, size, 3))
    x = inp
    for row in jaxviz.layer_table(model.arch, include_top=False)[1:]:
        if row.kind == "Conv2D":
            x = keras.layers.Conv2D(row.kernel_shape[-1], 3, padding="same", activation="relu", name=row.name)(x)
        else:
            x = keras.layers.MaxPooling2D(2, name=row.name)(x)
        if row.name == layer:
            break
    kmodel = keras.Model(inp, x)
    for name, p in model.params.items():
        try:
            kmodel.get_layer(name).set_weights([np.asarray(p["kernel"]), np.asarray(p["bias"])])
        except ValueError:
            pass  # layers past `layer`
    return keras, kmodel


def _keras_listing_5_38(keras, kmodel):
    """Listing 5.38 on Keras 3 (JAX backend): ``K.gradients`` becomes ``jax.grad`` of ``stateless_call``.

    Returns ``generate(filter_index, x0, steps) -> (input_img_data, last loss_value)``.
    """
    import jax
    import jax.numpy as jnp

    tv = [v.value for v in kmodel.trainable_variables]
    ntv = [v.value for v in kmodel.non_trainable_variables]

    def loss_fn(x, filter_index):
        out, _ = kmodel.stateless_call(tv, ntv, x)
        return keras.ops.mean(out[:, :, :, filter_index])

    iterate = jax.jit(jax.value_and_grad(loss_fn))  # traced once, the filter index is an argument

    def generate(filter_index, x0, steps):
        x = np.array(x0, np.float64)  # input_img_data, float64 as in the book
        loss_value = None
        for _ in range(steps):
            loss_value, grads = iterate(jnp.asarray(x, jnp.float32), jnp.int32(filter_index))
            grads = np.asarray(grads, np.float64)
            grads /= np.sqrt(np.mean(np.square(grads))) + 1e-5
            x += grads * 1.0
        return x, float(loss_value)

    return generate


def test_keras_parity_listing_5_38(tiny_no_top):
    import jax

    keras, kmodel = _keras_tiny(tiny_no_top, SIZE, LAYER)
    generate = _keras_listing_5_38(keras, kmodel)
    filters = [1, 6]
    x0 = _book_start(len(filters), SIZE)
    with jax.default_matmul_precision("highest"):
        ours1 = patterns.filter_patterns(tiny_no_top, LAYER, filters, size=SIZE, steps=1, init=x0, progress=False)
        ours40 = patterns.filter_patterns(tiny_no_top, LAYER, filters, size=SIZE, steps=40, init=x0, progress=False)
        for i, f in enumerate(filters):
            ref1, _ = generate(f, x0[i: i + 1], 1)
            # One step: the update itself agrees to within 2 % of its size (float32 vs the book's float64
            # accumulation; in practice ~1e-6).
            assert np.linalg.norm(ours1[i] - ref1[0]) <= 0.02 * np.linalg.norm(ref1[0] - x0[i])
            ref40, _ = generate(f, x0[i: i + 1], 40)
            # 40 steps: pixels may drift apart (ReLU flips amplify rounding under RMS-normalised ascent,
            # docs/PERFORMANCE.md), so compare the objective reached: within 1 %.
            ours_loss = patterns.pattern_objective(tiny_no_top, LAYER, [f], ours40[i: i + 1])[0]
            ref_loss = patterns.pattern_objective(tiny_no_top, LAYER, [f], ref40.astype(np.float32))[0]
            assert abs(ours_loss - ref_loss) <= 0.01 * abs(ref_loss)


@pytest.mark.slow
def test_keras_parity_full_vgg16_one_step():
    """Full-size VGG16 without top at 64 px against keras.applications.VGG16 with the same weights."""
    import jax

    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("Keras runs on another backend in this process")
    model = jaxviz.load("vgg16", "random:0", include_top=False)
    kbase = keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3))
    for name, p in model.params.items():
        kbase.get_layer(name).set_weights([np.asarray(p["kernel"]), np.asarray(p["bias"])])
    kmodel = keras.Model(kbase.inputs, kbase.get_layer("block3_conv1").output)
    x0 = _book_start(1, 64, seed=1)
    with jax.default_matmul_precision("highest"):
        ours = patterns.filter_patterns(model, "block3_conv1", [17], size=64, steps=1, init=x0, progress=False)
        ref, _ = _keras_listing_5_38(keras, kmodel)(17, x0, 1)
    assert np.linalg.norm(ours[0] - ref[0]) <= 0.02 * np.linalg.norm(ref[0] - x0[0])


# --- batching, independence, caching --------------------------------------------------------------------------


def test_batched_equals_one_at_a_time(tiny_no_top):
    filters = [0, 3, 5, 7]
    batched = patterns.filter_patterns(tiny_no_top, LAYER, filters, size=SIZE, steps=1, chunk_size=4, progress=False)
    single = patterns.filter_patterns(tiny_no_top, LAYER, filters, size=SIZE, steps=1, chunk_size=1, progress=False)
    full = patterns.filter_patterns(tiny_no_top, LAYER, filters, size=SIZE, steps=1, chunk_size=4, columns=False,
                                    progress=False)
    # One step, same math in a different batch layout: rounding only.
    for i in range(len(filters)):
        assert _rel(batched[i] - 128, single[i] - 128) < 1e-5
        assert _rel(full[i] - 128, single[i] - 128) < 1e-5


def test_filter_result_independent_of_the_others(tiny_no_top):
    alone = patterns.filter_patterns(tiny_no_top, LAYER, [5], size=SIZE, steps=3, chunk_size=1, progress=False)
    among = patterns.filter_patterns(tiny_no_top, LAYER, [2, 5, 7], size=SIZE, steps=3, chunk_size=1, progress=False)
    np.testing.assert_array_equal(alone[0], among[1])  # same key, same program: bit for bit
    start = patterns.filter_patterns(tiny_no_top, LAYER, [7, 5], size=SIZE, steps=0, chunk_size=2, progress=False)
    np.testing.assert_array_equal(start[1], patterns.filter_patterns(tiny_no_top, LAYER, [5], size=SIZE, steps=0,
                                                                     progress=False)[0])
    assert 128 <= start.min() and start.max() < 148  # U[0, 1) · 20 + 128
    assert not np.array_equal(start[0], start[1])


def test_no_retrace_on_second_call(tiny_no_top):
    kw = dict(size=SIZE, steps=2, chunk_size=2, progress=False)
    patterns.filter_patterns(tiny_no_top, LAYER, [0, 1], **kw)
    before = runtime.trace_counts["patterns_keras"]
    patterns.filter_patterns(tiny_no_top, LAYER, [0, 1], **kw)
    patterns.filter_patterns(tiny_no_top, LAYER, [4, 2, 3], **kw)  # other filters, same chunk: same program
    other = jaxviz.load("vgg_tiny", "random:1", include_top=False)  # other weights, same shapes
    patterns.filter_patterns(other, LAYER, [0, 1], **kw)
    assert runtime.trace_counts["patterns_keras"] == before


@pytest.mark.parametrize("method", ["keras", "regularised"])
def test_compiled_program_has_no_scatter_and_plain_convs(tiny_no_top, method):
    # The same programs the other tests run (chunk 2 keras, chunk 3 regularised): taken from the cache.
    compiled = patterns.compiled_program(tiny_no_top, LAYER, size=SIZE, chunk=2 if method == "keras" else 3,
                                         method=method)
    report = patterns.check_compiled_program(compiled.as_text())
    assert report["scatter"] == 0 and report["select_and_scatter"] == 0, report
    # The convs are inside the ascent loop: 5 forward, 2 input-gradient (keras; regularised: one forward
    # conv is outside). In the fast default the input gradients of vgg_tiny's first three layers (≤ 4 input
    # channels) are matmuls and shifted sums (ops._input_grad_few_channels), not convs.
    assert report["loop_convolutions"] >= (7 if method == "keras" else 5), report
    assert set(report["conv_layouts"]) == {"b01f_01io->b01f"}, report  # input gradient = forward-style conv
    if method == "keras":  # the backward convs' flipped kernels are made before the loop (the regularised
        assert report["loop_reverses"] == 0, report  # loop reverses its images' channels: RGB -> BGR)
    assert report["ok"]


def test_check_compiled_program_flags_slow_patterns():
    import jax
    import jax.numpy as jnp

    def f(x, k):  # autodiff's own conv transpose and max-pool gradient
        y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        return y.sum()

    hlo = jax.jit(jax.grad(f)).lower(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4))).compile().as_text()
    assert not patterns.check_compiled_program(hlo)["ok"]


# --- the regularised method -----------------------------------------------------------------------------------


def test_regularised_raises_its_objective(tiny_no_top):
    filters = [0, 3, 6]
    kw = dict(size=SIZE, method="regularised", chunk_size=3, progress=False)
    start = patterns.filter_patterns(tiny_no_top, LAYER, filters, steps=0, **kw)
    end = patterns.filter_patterns(tiny_no_top, LAYER, filters, steps=25, **kw)
    assert runtime.trace_counts["patterns_regularised"] >= 1
    assert start.shape == end.shape == (3, SIZE, SIZE, 3)
    # Model space: BGR 0..255 minus the ImageNet means.
    assert end.min() >= -124 and end.max() <= 256 - 103
    before = patterns.pattern_objective(tiny_no_top, LAYER, filters, start, pre_relu=True)
    after = patterns.pattern_objective(tiny_no_top, LAYER, filters, end, pre_relu=True)
    assert np.all(after > before + 1.0), (before, after)


def test_bfloat16_runs_and_improves_objective(tiny_no_top):
    x = patterns.filter_patterns(tiny_no_top, LAYER, [1, 2], size=SIZE, steps=5, dtype="bfloat16", progress=False)
    x0 = patterns.filter_patterns(tiny_no_top, LAYER, [1, 2], size=SIZE, steps=0, progress=False)
    assert x.dtype == np.float32
    assert np.all(patterns.pattern_objective(tiny_no_top, LAYER, [1, 2], x) >
                  patterns.pattern_objective(tiny_no_top, LAYER, [1, 2], x0))


# --- arguments, progress, resuming ----------------------------------------------------------------------------


def test_progress_bar_can_be_disabled(tiny_no_top, capsys):
    patterns.filter_patterns(tiny_no_top, LAYER, [0, 1], size=SIZE, steps=1, chunk_size=1, progress=False)
    assert capsys.readouterr().err == ""
    patterns.filter_patterns(tiny_no_top, LAYER, [0, 1], size=SIZE, steps=1, chunk_size=1, progress=True)
    assert "patterns" in capsys.readouterr().err


def test_errors(tiny_no_top):
    with pytest.raises(LayerError):
        patterns.filter_patterns(tiny_no_top, "block9_conv1", [0], size=SIZE)
    with pytest.raises(JaxvizError, match="out of range.*8 filters"):
        patterns.filter_patterns(tiny_no_top, LAYER, [8], size=SIZE)
    with pytest.raises(JaxvizError, match="unknown method"):
        patterns.filter_patterns(tiny_no_top, LAYER, [0], size=SIZE, method="lucid")
    with pytest.raises(JaxvizError, match="init must have shape"):
        patterns.filter_patterns(tiny_no_top, LAYER, [0, 1], size=SIZE, init=np.zeros((1, SIZE, SIZE, 3)))
    with pytest.raises(JaxvizError, match="unknown option"):
        patterns.filter_patterns(tiny_no_top, LAYER, [0], size=SIZE, jitter=3)  # keras method takes no options
    with pytest.raises(JaxvizError, match="too small"):
        patterns.filter_patterns(tiny_no_top, "block5_pool", [0], size=16)


def test_store_resumes(tiny_no_top, tmp_path):
    from jaxviz.parallel import ItemStore

    kw = dict(size=SIZE, steps=2, chunk_size=1, progress=False)
    store = ItemStore(tmp_path / "s", {"layer": LAYER}, prefix="filter_")
    first = patterns.filter_patterns(tiny_no_top, LAYER, [0, 1], store=store, **kw)
    assert store.done([0, 1, 2]) == [0, 1]
    store.save(1, np.full((SIZE, SIZE, 3), 7.0, np.float32))  # marks what a resumed run loads
    again = patterns.filter_patterns(tiny_no_top, LAYER, [0, 1, 2], store=store, **kw)
    np.testing.assert_array_equal(again[0], first[0])
    assert np.all(again[1] == 7.0)
    assert store.done([2]) == [2]


def test_cost_model_matches_xla_memory_analysis(tiny_no_top):
    fixed, per = patterns.measured_bytes_per_filter(tiny_no_top, LAYER, SIZE)
    estimate = patterns.bytes_per_filter(tiny_no_top, LAYER, SIZE)
    assert 0.25 <= estimate / per <= 4, (estimate, per)


def test_flop_count_matches_xla(tiny_no_top):
    compiled = patterns.compiled_program(tiny_no_top, LAYER, size=SIZE, chunk=1, columns=False)
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    # One step = forward + input gradient ≈ 2 × forward (XLA also counts the elementwise work).
    assert 0.8 <= ca["flops"] / (2 * patterns.forward_flops(tiny_no_top, LAYER, SIZE)) <= 1.25


# --- the CLI --------------------------------------------------------------------------------------------------


def test_cli_writes_grid_and_resumes(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from jaxviz import parallel
    from jaxviz.cli import main

    # The CLI turns on the persistent compilation cache (process-wide): not from inside the test session.
    monkeypatch.setattr(parallel, "enable_compilation_cache", lambda *a, **k: None)

    args = ["patterns", "--arch", "vgg_tiny", "--weights", "random:0", "--layer", LAYER, "--filters", "0:4",
            "--size", "24", "--steps", "2", "-o", str(tmp_path), "--npy", "--per-filter", "--no-progress"]
    assert main(args) == 0
    grid = np.asarray(Image.open(tmp_path / f"{LAYER}.png"))
    assert grid.shape[:2] == (24, 4 * 24 + 3 * 5)  # the book's layout: 5 px margins, 8 per row at most
    assert np.all(grid[:, 24:29] == 0)  # black margin
    assert np.load(tmp_path / f"{LAYER}.npy").shape == (4, 24, 24, 3)
    assert (tmp_path / LAYER / "filter_003.png").exists()
    assert not (tmp_path / ".partial").exists()
    capsys.readouterr()
    assert main(args) == 0
    assert "done already" in capsys.readouterr().out
    assert main(["patterns", "--arch", "vgg_tiny", "--weights", "random:0", "--layer", LAYER, "--filters", "9",
                 "-o", str(tmp_path)]) == 2


def _book_grid(images, margin=5):
    """Listing 5.39's loop: ``results[i·(s+m) : …, j·(s+m) : …] = pattern(i + 8·j)`` for i, j in 0..7."""
    s = images.shape[1]
    out = np.zeros((8 * s + 7 * margin, 8 * s + 7 * margin, 3), images.dtype)
    for i in range(8):
        for j in range(8):
            out[i * (s + margin): i * (s + margin) + s, j * (s + margin): j * (s + margin) + s] = images[i + j * 8]
    return out


def test_image_grid_orders():
    from jaxviz.render import image_grid

    imgs = np.random.default_rng(0).integers(0, 256, size=(64, 3, 3, 3)).astype(np.uint8)
    np.testing.assert_array_equal(image_grid(imgs, cols=8, margin=5, order="columns"), _book_grid(imgs))
    rows = image_grid(imgs, cols=8, margin=5, order="rows")  # row-major: the transpose of the book's layout
    np.testing.assert_array_equal(rows, _book_grid(imgs.reshape(8, 8, 3, 3, 3).swapaxes(0, 1).reshape(64, 3, 3, 3)))
    # 5 images in 3 columns: columns first → rows = 2, image k at row k % 2, column k // 2
    ids = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((5, 1, 1), np.uint8)
    np.testing.assert_array_equal(image_grid(ids + 1, cols=3, margin=0, order="columns"), [[1, 3, 5], [2, 4, 0]])
    np.testing.assert_array_equal(image_grid(ids + 1, cols=3, margin=0, order="rows"), [[1, 2, 3], [4, 5, 0]])
    with pytest.raises(JaxvizError, match="grid order 'diagonal'"):
        image_grid(imgs, order="diagonal")


def test_cli_grid_is_the_books_order_by_default(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from jaxviz import parallel
    from jaxviz.cli import main

    monkeypatch.setattr(parallel, "enable_compilation_cache", lambda *a, **k: None)
    base = ["patterns", "--arch", "vgg_tiny", "--weights", "random:0", "--layer", LAYER, "--filters", "0:4",
            "--size", "8", "--steps", "1", "--cols", "2", "--per-filter", "--no-progress"]
    for order, at in [(None, [(0, 0), (1, 0), (0, 1), (1, 1)]), ("rows", [(0, 0), (0, 1), (1, 0), (1, 1)])]:
        out = tmp_path / str(order)
        assert main(base + ["-o", str(out)] + ([] if order is None else ["--order", order])) == 0
        grid = np.asarray(Image.open(out / f"{LAYER}.png"))
        for f, (r, c) in enumerate(at):  # filter f's own picture at (row r, column c) of the 2×2 grid
            cell = grid[r * 13: r * 13 + 8, c * 13: c * 13 + 8]
            np.testing.assert_array_equal(cell, np.asarray(Image.open(out / LAYER / f"filter_{f:03d}.png")))
    capsys.readouterr()


def test_exact_mode_gets_its_own_program(tiny_no_top):
    # Same signature, other matmul precision: the exact mode's program (every input gradient a conv) is
    # compiled separately, not taken from the fast default's cache entry (where the first three layers'
    # input gradients are matmuls, ops._input_grad_few_channels), and vice versa.
    fast = patterns.compiled_program(tiny_no_top, LAYER, size=SIZE, chunk=2)
    with jax.default_matmul_precision("highest"):
        exact = patterns.compiled_program(tiny_no_top, LAYER, size=SIZE, chunk=2)
    assert patterns.compiled_program(tiny_no_top, LAYER, size=SIZE, chunk=2) is fast
    n_fast = patterns.check_compiled_program(fast.as_text())["convolutions"]
    assert patterns.check_compiled_program(exact.as_text())["convolutions"] == n_fast + 3


# --- one model interface ----------------------------------------------------------------------------------------


def test_plan_comes_from_the_graph_so_any_model_gets_it(tiny):
    from jaxviz.model import Model
    from jaxviz.optvis import objectives

    plan = objectives.plan(tiny, "block3_conv1", SIZE)
    assert (plan.conv, plan.before, plan.pool) == ("block3_conv1", "block2_pool", False)
    pool = objectives.plan(tiny, "block2_pool", SIZE)
    assert (pool.conv, pool.pool) == ("block2_conv2", True)
    # The same graph and weights as a model of no VGG table (a model file's kind): the same plan, programs
    # and numbers, through the model's forward pass and prepared kernels.
    graph_model = Model(tiny.graph, tiny.params, include_top=False)
    assert not isinstance(graph_model.arch, jaxviz.frontends.vgg.Arch)
    assert objectives.plan(graph_model, "block3_conv1", SIZE) == plan
    kw = dict(size=SIZE, steps=2, chunk_size=2, progress=False)
    ours = patterns.filter_patterns(graph_model, LAYER, [1, 6], **kw)
    np.testing.assert_array_equal(ours, patterns.filter_patterns(tiny, LAYER, [1, 6], **kw))
    np.testing.assert_array_equal(patterns.pattern_objective(graph_model, LAYER, [1, 6], ours, pre_relu=True),
                                  patterns.pattern_objective(tiny, LAYER, [1, 6], ours, pre_relu=True))


def test_column_objective_is_the_full_layers_channel(tiny):
    # Only the chunk's kernel columns (and their flipped input-gradient kernels, taken from model.prepared())
    # against the whole layer: the same channel means, before and after the ReLU.
    x = patterns.filter_patterns(tiny, LAYER, [0, 2, 5], size=SIZE, steps=2, chunk_size=3, progress=False)
    full = np.stack([patterns.pattern_objective(tiny, LAYER, range(8), np.repeat(x[i: i + 1], 8, 0))[f]
                     for i, f in enumerate([0, 2, 5])])
    np.testing.assert_allclose(patterns.pattern_objective(tiny, LAYER, [0, 2, 5], x), full, rtol=1e-5)
    pre = patterns.pattern_objective(tiny, LAYER, [0, 2, 5], x, pre_relu=True)
    assert np.all(pre <= patterns.pattern_objective(tiny, LAYER, [0, 2, 5], x) + 1e-4)
