"""Every keras.applications CNN family under every jaxviz method, on a file Keras wrote.

For each family (its smallest variant, ``weights=None``, ``classes=5``, seeded weights and BatchNorm
statistics, the family's minimum input size), Keras 3 (JAX backend) saves a ``.keras`` file; jaxviz loads it
and

  * saliency — the raw input gradient of the target's logit (``saliency(abs=False, reduce=None)``) is
    compared with ``jax.grad`` of the same logit through Keras's ``stateless_call`` (the final softmax
    switched off in memory after saving): max|Δ| / max|ref| in the exact ops under matmul precision
    "highest", and in the fast default ops (their hand-written backward passes) at default precision, on
    images drawn clear of kinks (:func:`clear_of_kinks`: where a ReLU input lies within float32 rounding of 0,
    or a max-pool window's two largest inputs within float32 rounding of each other, the float32 gradient
    depends on the summation order and no reference is right); where jaxviz misses the bar against Keras's
    float32 gradient, it is judged against Keras's float64 gradient (:data:`FLOAT64_FACTOR`);
  * Grad-CAM, guided backprop, DeepLIFT, Integrated Gradients, LayerCAM and occlusion (fast ops, each
    image's top class, as a user calls them) and filter patterns must give finite maps that are not
    constant over any image. A Grad-CAM map that is zero because every cell of the map before its final
    ReLU is negative (random weights) is reported as such, not as a failure.

Grad-CAM and LayerCAM use the model's default layer unless its map is 1×1 at this size (then always
constant): then the deepest spatial layer with a map of at least 2×2. The markdown table goes to stdout
(docs/APPLICATIONS.md holds a run of it)::

    KERAS_BACKEND=jax python scripts/check_applications.py            # all families
    KERAS_BACKEND=jax python scripts/check_applications.py --families DenseNet121 ConvNeXtTiny

The pytest suite imports this module (tests/test_keras_applications.py) and runs one family per distinct
layer kind.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    # 2–3× less compile time for these 100–800-layer programs; the same arithmetic (no fast-math).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # keras_helpers: seeded weights, fast model building

from jaxviz import xla_cpu  # noqa: E402

# jaxviz's XLA:CPU setting (the YNNPACK fusions off), as jaxviz.load applies it when JAX has not started:
# Keras builds the models first here, which would start JAX with jaxlib's defaults. Under those, traced-
# weight gradient programs of ResNet50/ResNet50V2/Xception were measured 0.8–1.5e-2 off Keras's gradient.
xla_cpu.configure()

#: family → (keras.applications builder, its arguments, the smallest input side it takes). One variant per
#: family: the others (ResNet101/152, DenseNet169/201, EfficientNetB1–B7, …) repeat the same layer kinds.
FAMILIES: dict[str, tuple[str, dict, int]] = {
    "VGG16": ("VGG16", {}, 32),
    "VGG19": ("VGG19", {}, 32),
    "ResNet50": ("ResNet50", {}, 32),
    "ResNet50V2": ("ResNet50V2", {}, 32),
    "InceptionV3": ("InceptionV3", {}, 75),
    "InceptionResNetV2": ("InceptionResNetV2", {}, 75),
    "Xception": ("Xception", {}, 71),
    "MobileNet": ("MobileNet", {"alpha": 0.25}, 32),
    "MobileNetV2": ("MobileNetV2", {"alpha": 0.35}, 32),
    "MobileNetV3Small": ("MobileNetV3Small", {"minimalistic": False}, 32),
    "MobileNetV3Large": ("MobileNetV3Large", {}, 32),
    "DenseNet121": ("DenseNet121", {}, 32),
    "NASNetMobile": ("NASNetMobile", {}, 32),
    "EfficientNetB0": ("EfficientNetB0", {}, 32),
    "EfficientNetV2B0": ("EfficientNetV2B0", {}, 32),
    "ConvNeXtTiny": ("ConvNeXtTiny", {}, 32),
}

#: Every jaxviz layer kind the families above use (``--kinds`` lists them per family; a family using one not
#: listed fails the run, so that tests/test_keras_applications.py's families keep covering them all).
APPLICATION_KINDS = frozenset({
    "Activation", "Add", "AveragePooling2D", "BatchNormalization", "Concatenate", "Conv2D", "Cropping2D",
    "CustomScaleLayer", "Dense", "DepthwiseConv2D", "Dropout", "Flatten", "GlobalAveragePooling2D", "InputLayer",
    "LayerNormalization", "LayerScale", "MaxPooling2D", "Multiply", "Normalization", "ReLU", "Rescaling",
    "Reshape", "SeparableConv2D", "ZeroPadding2D", "ops.Add", "ops.Multiply",
})

METHODS = ("saliency", "gradcam", "guided_backprop", "deeplift", "integrated_gradients", "layercam", "occlusion",
           "filter_patterns")
CLASSES = 5
REL_TOL = 1e-4  # max|Δ| ≤ 1e-4·max|ref|: the same float32 formulas in another summation order
#: Where jaxviz's saliency misses :data:`REL_TOL` against Keras's float32 gradient, both are compared with Keras's
#: float64 gradient (:func:`keras_float64_gradient`): jaxviz passes if it is off that by at most this factor
#: times Keras's own float32 error (and never needs less than REL_TOL) — a network whose float32 input gradient
#: no float32 program computes within 1e-4 (EfficientNetV2B0, docs/APPLICATIONS.md) is judged on its accuracy.
FLOAT64_FACTOR = 2.0
#: Saliency's images keep every ReLU input at least this fraction of its layer's largest |value| away from 0,
#: and every max-pool window's largest input this fraction of its pool's largest |input| above the second:
#: float32 rounding moves an input ~1e-7 of that, and one ReLU input nearer 0 than its rounding opens or
#: closes a whole path of the gradient depending on the summation order (docs/APPLICATIONS.md, ResNet50), as
#: a near-tied max-pool window sends its gradient to one input or the other (Xception).
KINK_MARGIN = 1e-6
#: Candidate images drawn per image of the batch and round (up to :data:`ROUNDS` rounds, until every image
#: clears :data:`KINK_MARGIN`); the one farthest from every kink is kept.
CANDIDATES = 8
ROUNDS = 4


def available() -> list[str]:
    """The families this Keras has."""
    import keras

    return [f for f, (builder, _, _) in FAMILIES.items() if hasattr(keras.applications, builder)]


def _reduced_builders() -> dict:
    """family → a builder of a shallower member of it: the family's own keras.applications constructor (the
    generic ``DenseNet``, ``EfficientNet``, ``ConvNeXt``, ``MobileNetV3`` behind the named variants) with fewer
    blocks, so every layer kind and block structure of the family in a fraction of its layers. ``{}`` where
    this Keras does not have those constructors (they are not public API)."""
    try:
        from keras.src.applications import convnext, densenet, efficientnet, mobilenet_v3
    except ImportError:
        return {}

    def mobilenet_v3_small(**kw):
        def stack(x, kernel, activation, se_ratio):  # MobileNetV3Small's first, ReLU and hard-swish blocks
            x = mobilenet_v3._inverted_res_block(x, 1, 16, 3, 2, se_ratio, mobilenet_v3.relu, 0)
            x = mobilenet_v3._inverted_res_block(x, 72.0 / 16, 24, 3, 2, None, mobilenet_v3.relu, 1)
            x = mobilenet_v3._inverted_res_block(x, 4, 40, kernel, 2, se_ratio, activation, 3)
            return mobilenet_v3._inverted_res_block(x, 6, 40, kernel, 1, se_ratio, activation, 4)

        return mobilenet_v3.MobileNetV3(stack, 1024, kw.pop("input_shape"), model_type="small",
                                        name="MobileNetV3Small", **kw)

    def efficientnet_b0(**kw):  # B0's first three stages, one block each
        stages = [dict(a, repeats=1) for a in efficientnet.DEFAULT_BLOCKS_ARGS[:3]]
        return efficientnet.EfficientNet(1.0, 1.0, 224, blocks_args=stages, name="efficientnetb0", **kw)

    return {
        "DenseNet121": lambda **kw: densenet.DenseNet([2, 2, 2, 2], name="densenet121", **kw),
        "EfficientNetB0": efficientnet_b0,
        "ConvNeXtTiny": lambda **kw: convnext.ConvNeXt([1, 1, 1, 1], [24, 48, 96, 192], name="convnext_tiny",
                                                       **kw),
        "MobileNetV3Small": mobilenet_v3_small,
    }


def save_family(family: str, folder, seed: int = 0, size: int | None = None, reduced: bool = False):
    """Builds ``family`` with seeded weights, saves it as ``<folder>/<family>.keras``; returns (path, keras model).

    ``reduced``: the family's shallower member of :func:`_reduced_builders` where there is one (the test suite's
    networks), else the variant of :data:`FAMILIES`."""
    import keras
    from keras_helpers import numpy_initializers, randomize

    builder, kwargs, min_size = FAMILIES[family]
    size = size or min_size
    build = (_reduced_builders().get(family) if reduced else None) or getattr(keras.applications, builder)
    with numpy_initializers():
        model = build(weights=None, input_shape=(size, size, 3), classes=CLASSES, **kwargs)
    randomize(model, seed)
    path = Path(folder) / f"{family}.keras"
    model.save(path)
    return path, model


def _logit_model(kmodel):
    """``kmodel`` with its final softmax switched off (in memory only), so it returns the logits."""
    import keras

    last = kmodel.layers[-1]
    if getattr(last, "activation", None) is not None:
        last.activation = keras.activations.linear
    return kmodel


def keras_logit_gradient(kmodel, x, target):
    """``∂ logit[target] / ∂x`` through Keras's ``stateless_call`` (``kmodel`` must return logits)."""
    import jax
    import jax.numpy as jnp

    tv = [v.value for v in kmodel.trainable_variables]
    ntv = [v.value for v in kmodel.non_trainable_variables]

    def score(x):
        logits = kmodel.stateless_call(tv, ntv, x, training=False)[0]
        return jnp.sum(logits * jax.nn.one_hot(target, logits.shape[-1]))

    with jax.default_matmul_precision("highest"):
        return jax.jit(jax.grad(score))(x)


def keras_float64_gradient(kmodel, x, target):
    """``∂ logit[target] / ∂x`` in float64: Keras's own layers, cloned from ``kmodel`` with a float64 dtype
    policy and given its weights, under ``jax.enable_x64`` (``kmodel`` must return logits)."""
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    with jax.enable_x64(True):
        clone = keras.models.clone_model(
            kmodel, input_tensors=keras.Input(kmodel.inputs[0].shape[1:], dtype="float64"),
            clone_function=lambda layer: layer.__class__.from_config({**layer.get_config(), "dtype": "float64"}))
        clone.set_weights([np.asarray(w, np.float64) if np.issubdtype(w.dtype, np.floating) else w
                           for w in kmodel.get_weights()])  # (not the dropouts' integer seed states)
        tv = [v.value for v in clone.trainable_variables]
        ntv = [v.value for v in clone.non_trainable_variables]
        assert all(v.dtype == jnp.float64 for v in tv + ntv if jnp.issubdtype(v.dtype, jnp.floating)), \
            "the float64 clone has float32 weights"

        def score(x):
            logits = clone.stateless_call(tv, ntv, x, training=False)[0]
            assert logits.dtype == jnp.float64, "the float64 clone computes in float32"
            return jnp.sum(logits * jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype))

        return np.asarray(jax.jit(jax.grad(score))(jnp.asarray(x, jnp.float64)))


def max_rel_error(got, ref) -> float:
    import numpy as np

    got, ref = np.asarray(got), np.asarray(ref)
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def varies(maps) -> bool:
    """Finite, and not constant over any image of the batch."""
    import numpy as np

    maps = np.asarray(maps)
    flat = maps.reshape(maps.shape[0], -1)
    return bool(np.isfinite(maps).all() and (np.ptp(flat, axis=1) > 0).all())


def _margins(model, x):
    """(:func:`relu_margins`, :func:`pool_margins`) of ``x`` from one forward pass (exact ops, matmul precision
    "highest"): the ReLUs' inputs read by a callback as they run, the max-pools' inputs as taps."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    seen = []

    def recording_relu(v):
        a = jnp.abs(v).reshape(v.shape[0], -1)
        margin = (a / jnp.maximum(a.max(1, keepdims=True), 1e-30)).min(1)
        jax.debug.callback(lambda m: seen.append(np.asarray(m)), margin)
        return jax.nn.relu(v)

    pools = [layer for layer in model.graph.layers if layer.kind in ("MaxPooling2D", "MaxPool2D")]
    feeds = tuple(dict.fromkeys(layer.inputs[0] for layer in pools))

    def margins(p, v):
        _, taps = model.apply(p, v, upto="logits", taps=feeds, relu=recording_relu)
        gaps = [_pool_gaps(taps[layer.inputs[0]], layer.cfg) for layer in pools]
        return jnp.min(jnp.stack(gaps), 0) if gaps else jnp.full(v.shape[0], jnp.inf)

    with jax.default_matmul_precision("highest"):
        pool = np.asarray(jax.jit(margins)(model.params, x))
    return (np.min(seen, axis=0) if seen else np.full(x.shape[0], np.inf)), pool


def _pool_gaps(v, cfg):
    """Per image: the smallest gap between the largest and the second-largest value of a max-pool window over
    ``v`` (the pool's input; ``cfg`` its Keras config) / max |v|. Windows whose two largest values are both 0
    (a ReLU's or a zero padding's zeros: their gradient is 0 whichever of them takes it) do not count; the
    padding of "same" windows never wins (-inf), as in the pool."""
    import jax.numpy as jnp

    from jaxviz.window_ops import window_pads

    pair = lambda value: tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    (kh, kw) = pair(cfg.get("pool_size", 2))
    (sh, sw) = pair(cfg.get("strides") or (kh, kw))
    padding = cfg.get("padding", "valid")
    oh, pad_h = window_pads(v.shape[1], kh, sh, 1, padding)
    ow, pad_w = window_pads(v.shape[2], kw, sw, 1, padding)
    padded = jnp.pad(v, ((0, 0), pad_h, pad_w, (0, 0)), constant_values=-jnp.inf)
    cells = jnp.stack([padded[:, i: i + (oh - 1) * sh + 1: sh, j: j + (ow - 1) * sw + 1: sw]
                       for i in range(kh) for j in range(kw)], -1)
    top = jnp.sort(cells, -1)
    first, second = top[..., -1], top[..., -2]
    gap = jnp.where((first == 0) & (second == 0), jnp.inf, first - second).reshape(v.shape[0], -1)
    return gap.min(1) / jnp.maximum(jnp.abs(v).reshape(v.shape[0], -1).max(1), 1e-30)


def relu_margins(model, x):
    """Per image of ``x``: the smallest ``|ReLU input| / max |ReLU input|`` over the units of every ReLU of
    ``model`` (exact ops, matmul precision "highest"), the ReLUs' inputs read by a callback as they run."""
    return _margins(model, x)[0]


def pool_margins(model, x):
    """Per image of ``x``: the smallest gap between a max-pool window's largest and second-largest input over
    the windows of every max-pool of ``model``, relative to the largest |input| of its pool (:func:`_pool_gaps`;
    exact ops, matmul precision "highest"). Where two inputs are within float32 rounding of each other, which
    of them takes the window's gradient depends on the summation order of the layers before."""
    return _margins(model, x)[1]


def kink_margins(model, x):
    """Per image of ``x``: the smaller of :func:`relu_margins` and :func:`pool_margins` (one forward pass)."""
    import numpy as np

    return np.minimum(*_margins(model, x))


def clear_of_kinks(model, batch: int, size: int, seed: int = 0):
    """``batch`` preprocessed uniform-noise images, each the one whose ReLU inputs are farthest from 0 and
    whose max-pool windows' two largest inputs are farthest apart (:func:`kink_margins`) of :data:`CANDIDATES`
    draws per round, drawing rounds until every image's margin is at least :data:`KINK_MARGIN` or
    :data:`ROUNDS` rounds are drawn; returns (images, their margins)."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    images, margins = None, np.full(batch, -np.inf)
    for _ in range(ROUNDS):
        cands = model.preprocess_input(rng.uniform(0, 255, (batch * CANDIDATES, size, size, 3)).astype(np.float32))
        cand_margins = kink_margins(model, cands).reshape(batch, CANDIDATES)
        best = cand_margins.argmax(1)
        better = cand_margins[np.arange(batch), best] > margins
        picked = cands[np.arange(batch) * CANDIDATES + best]
        images = picked if images is None else np.where(better[:, None, None, None], picked, images)
        margins = np.maximum(margins, cand_margins[np.arange(batch), best])
        if (margins >= KINK_MARGIN).all():
            break
    return images, margins


def cam_before_relu(model, x, layer):
    """Grad-CAM's map for each image's top class before its final ReLU: ``Σ_k mean(∂y/∂A_k)·A_k``."""
    import jax
    import jax.numpy as jnp

    a0 = model.apply(model.params, x, upto=layer)[0]

    def forward(delta):
        logits, taps = model.apply(model.params, x, upto="logits", taps=(layer,), perturb={layer: delta})
        return logits, taps[layer]

    logits, vjp, a = jax.vjp(forward, jnp.zeros_like(a0), has_aux=True)
    (grads,) = vjp(jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1], dtype=logits.dtype))
    return jnp.einsum("nhwc,nc->nhw", a, grads.mean(axis=(1, 2)))


def cam_layer(model) -> str:
    """The default CAM layer, or the deepest spatial layer with a map ≥ 2×2 where the default's is 1×1."""
    default = model.cam_layer
    if min(model.output_shape(default)[:2]) >= 2:
        return default
    feeds = model.graph.ancestors(model.graph.outputs)
    names = [n for n in model.spatial_layer_names
             if n in feeds and min(model.output_shape(n)[:2]) >= 2 and model.graph.by_name[n].kind != "InputLayer"]
    return names[-1]


def pattern_layer(model) -> str:
    """A convolution half-way through the network (filter patterns' ascent target)."""
    convs = model.conv_layer_names
    return convs[len(convs) // 2]


def check(path, kmodel, methods=METHODS, batch: int = 2, seed: int = 0, ig_steps: int = 8,
          pattern_steps: int = 5) -> dict:
    """Runs ``methods`` on the file at ``path`` (``kmodel``: the Keras model saved there).

    Returns ``{method: {"ok": bool, "error": max rel error (saliency: {"exact", "fast"}), "seconds": float,
    ...}}`` and ``"layer"`` entries naming the CAM and pattern layers.
    """
    import jax
    import numpy as np

    import jaxviz
    from jaxviz.attribution.methods import METHODS as ALL

    fast = jaxviz.load(path)
    size = int(kmodel.inputs[0].shape[1])
    rng = np.random.default_rng(seed)
    x = fast.preprocess_input(rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32))
    target = np.arange(batch) % CLASSES
    results: dict = {}

    def timed(name, fn):
        t = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as e:  # a table row, not a crash: the failure is the result
            ok, detail = False, {"exception": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        results[name] = {"ok": ok, **detail, "seconds": time.perf_counter() - t}

    if "saliency" in methods:
        def saliency():
            exact = jaxviz.load(path, ops="exact")
            xs, margins = clear_of_kinks(exact, batch, size, seed)
            ref = np.asarray(keras_logit_gradient(_logit_model(kmodel), xs, target))
            with jax.default_matmul_precision("highest"):
                got_exact = jaxviz.saliency(exact, xs, target, abs=False, reduce=None)
            got_fast = jaxviz.saliency(fast, xs, target, abs=False, reduce=None)
            errors = {"exact": max_rel_error(got_exact, ref), "fast": max_rel_error(got_fast, ref)}
            detail = {"error": errors, "kink_margin": float(np.min(margins))}
            ok = max(errors.values()) <= REL_TOL
            if not ok:  # is Keras's float32 gradient itself that far off? (FLOAT64_FACTOR)
                ref64 = keras_float64_gradient(_logit_model(kmodel), xs, target)
                detail["float64"] = {"keras": max_rel_error(ref, ref64), "exact": max_rel_error(got_exact, ref64),
                                     "fast": max_rel_error(got_fast, ref64)}
                detail["float64_bar"] = max(REL_TOL, FLOAT64_FACTOR * detail["float64"]["keras"])
                ok = max(detail["float64"]["exact"], detail["float64"]["fast"]) <= detail["float64_bar"]
            return ok and varies(ref), detail

        timed("saliency", saliency)
    layer = cam_layer(fast)
    plain = {"guided_backprop": {}, "deeplift": {}, "integrated_gradients": {"steps": ig_steps},
             "gradcam": {"layer": layer}, "layercam": {"layer": layer},
             "occlusion": {"window": max(size // 4, 2), "stride": max(size // 4, 2)}}
    for name, options in plain.items():
        if name in methods:
            timed(name, lambda name=name, options=options: (varies(ALL[name](fast, x, **options)), {}))
    if "gradcam" in methods and not results["gradcam"]["ok"] and "exception" not in results["gradcam"]:
        # Grad-CAM's final ReLU zeroes a map whose every cell is negative (random weights: nothing says the top
        # class's evidence is positive anywhere): then the method is right, and the cell says so.
        before = np.asarray(cam_before_relu(fast, x, layer))
        results["gradcam"]["negative"] = bool(varies(before) and (before.reshape(len(x), -1).max(1) <= 0).any())
    if "filter_patterns" in methods:
        pl = pattern_layer(fast)

        def patterns():
            images = jaxviz.filter_patterns(fast, pl, [0, 1], size=size, steps=pattern_steps, progress=False)
            return varies(images), {}

        timed("filter_patterns", patterns)
        results["pattern_layer"] = pl
    results["cam_layer"] = layer
    return results


def layer_kinds(path) -> set[str]:
    from jaxviz.frontends import keras as keras_io

    graph, _, _ = keras_io.read_model(path)
    return {x.kind for x in graph.layers}


HEAD = ["family", "input", "saliency exact", "saliency fast", *METHODS[1:], "time (s)"]


def table_head() -> str:
    return "| " + " | ".join(HEAD) + " |\n|" + "---|" * len(HEAD)


def table_row(family: str, size: int, res: dict, seconds: float) -> str:
    """One family's line of the markdown table."""
    cells = [family, f"{size}×{size}"]
    sal = res.get("saliency", {})
    errors, errors64 = sal.get("error", {}), sal.get("float64", {})
    for mode in ("exact", "fast"):
        e = errors.get(mode)
        if e is None:
            cells.append("—")
        elif mode in errors64:  # judged against float64 Keras (see the notes)
            e64 = errors64[mode]
            cells.append(f"{e:.1e}; f64 {e64:.1e}" + ("" if e64 <= sal["float64_bar"] else " FAIL"))
        else:
            cells.append(f"{e:.1e}" + ("" if e <= REL_TOL else " FAIL"))
    for m in METHODS[1:]:
        r = res.get(m)
        cells.append("—" if r is None else "ok" if r["ok"] else "zero (map < 0)" if r.get("negative") else "FAIL")
    cells.append(f"{seconds:.0f}")
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    import keras

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="*", default=None, help="default: every family this Keras has")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--kinds", action="store_true", help="also list each family's layer kinds")
    args = parser.parse_args(argv)
    failures, notes = [], []
    print(table_head(), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for family in args.families or available():
            t = time.perf_counter()
            path, kmodel = save_family(family, folder)
            res = check(path, kmodel, args.methods)
            print(table_row(family, int(kmodel.inputs[0].shape[1]), res, time.perf_counter() - t), flush=True)
            note = f"- {family}: Grad-CAM/LayerCAM at `{res['cam_layer']}`"
            if "pattern_layer" in res:
                note += f", filter patterns of `{res['pattern_layer']}`"
            kinds = layer_kinds(path)
            if args.kinds:
                note += f"; layer kinds: {', '.join(sorted(kinds))}"
            if kinds - APPLICATION_KINDS:
                failures.append(f"{family} uses layer kinds missing from APPLICATION_KINDS: "
                                f"{', '.join(sorted(kinds - APPLICATION_KINDS))}")
            if "kink_margin" in res.get("saliency", {}):
                note += f"; saliency's images' smallest kink margin {res['saliency']['kink_margin']:.1e}"
            sal = res.get("saliency", {})
            if "float64" in sal:
                note += (f"; saliency against float64 Keras: Keras's float32 gradient {sal['float64']['keras']:.1e} "
                         f"off, jaxviz's bar {sal['float64_bar']:.1e}")
            notes.append(note)
            for m in args.methods:
                if not res[m]["ok"] and not res[m].get("negative"):
                    failures.append(f"{family} {m}: {res[m].get('exception') or res[m].get('error') or 'constant'}")
            times = ", ".join(f"{m} {res[m]['seconds']:.0f}" for m in args.methods)
            print(f"{family}: {time.perf_counter() - t:.0f} s ({times})", file=sys.stderr, flush=True)
            keras.backend.clear_session()
    print("\n" + "\n".join(notes))
    for line in failures:
        print(line, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
