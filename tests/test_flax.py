"""Flax front end and Flax VGGs: jaxviz.from_flax on modules written the way Flax users write them, compared
with hand-written JAX (captured intermediates, jax.grad, a hand-written interceptor and guided ReLU, a
hand-written ascent loop), and jaxviz.models' VGGs compared with jaxviz.load's."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax_models import MnistCNN, NnxCNN, ResNet18, sequential_cnn

import jaxviz
from jaxviz import models, runtime
from jaxviz.cli import main
from jaxviz.frontends.flax import FlaxError, from_flax


def close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1e-30), np.abs(a - b).max()


@pytest.fixture(autouse=True)
def _highest():
    with jax.default_matmul_precision("highest"):
        yield


def images(n=2, side=16, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, side, side, 3)).astype(np.float32))


@jax.custom_vjp
def guided_relu(z):
    return jnp.maximum(z, 0)


guided_relu.defvjp(lambda z: (jnp.maximum(z, 0), z), lambda z, g: (g * (z > 0) * (g > 0),))


def linen_grad_at(module, variables, x, path, targets, **kwargs):
    """``(A, ∂S_t/∂A)`` of submodule ``path``'s output: a zero delta added there by a hand-written interceptor."""
    @jax.jit
    def run(variables, x, targets):
        def score(delta):
            def add(next_fun, args, kw, ctx):
                out = next_fun(*args, **kw)
                return out + delta if ctx.method_name == "__call__" and ctx.module.path == path else out

            with nn.intercept_methods(add):
                logits = module.apply(variables, x, **kwargs)
            return logits[jnp.arange(x.shape[0]), targets].sum()

        a = captured(module, variables, x, path, **kwargs)
        return a, jax.grad(score)(jnp.zeros_like(a))

    return run(variables, x, targets)


def captured(module, variables, x, path, **kwargs):
    """Submodule ``path``'s output, from Flax's ``capture_intermediates``."""
    _, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"], **kwargs)
    node = state["intermediates"]
    for p in path:
        node = node[p]
    return node["__call__"][0]


def book_gradcam(a, g):
    cam = jnp.maximum(jnp.einsum("nhwc,nc->nhw", a, g.mean(axis=(1, 2))) / a.shape[-1], 0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    assert (peak > 0).all()  # a map that is all zero would compare nothing
    return cam / peak


# ---------------------------------------------------------------------------------------------------------
# jaxviz.models: the VGGs in Flax


def test_flax_vgg_equals_jaxviz_vgg_bit_for_bit():
    x = images(2, 32)
    ref = jaxviz.load("vgg_tiny", weights="random:1", ops="exact")
    logits = np.asarray(runtime.logits(ref, x))
    net = models.vgg("vgg_tiny", "random:1", classifier_activation=None)
    graphdef, state = nnx.split(net)
    out = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, x)
    np.testing.assert_array_equal(np.asarray(out), logits)
    module, variables = models.vgg("vgg_tiny", "random:1", api="linen", classifier_activation=None)
    np.testing.assert_array_equal(np.asarray(jax.jit(module.apply)(variables, x)), logits)
    probs = models.vgg("vgg_tiny", "random:1")(x)
    close(probs, ref.predict(x))
    assert [n for n in ref.layer_names[1:]] == list(net.layer_order)


def test_flax_vgg16_without_top_equals_jaxviz_vgg16():
    x = images(1, 32)
    ref = jaxviz.load("vgg16", weights="random:0", include_top=False, ops="exact")
    net = models.vgg16("random:0", include_top=False)
    graphdef, state = nnx.split(net)
    out = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, x)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref.features(x, "block5_pool")["block5_pool"]))
    assert isinstance(net.block5_conv3, nnx.Conv) and not hasattr(net, "fc1")


def test_flax_vgg16_at_224_px_equals_jaxviz_vgg16():
    """The one full-size check: VGG16 with its classifier, NNX logits and linen probabilities."""
    x = jnp.asarray(np.random.default_rng(0).normal(0, 50, (1, 224, 224, 3)).astype(np.float32))
    ref = jaxviz.load("vgg16", weights="random:0", ops="exact")
    net = models.vgg16("random:0", classifier_activation=None)
    graphdef, state = nnx.split(net)
    logits = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, x)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(runtime.logits(ref, x)))
    del net, state
    module, variables = models.vgg16("random:0", api="linen")
    np.testing.assert_array_equal(np.asarray(jax.jit(module.apply)(variables, x)), ref.predict(x))


def test_one_optax_step_on_the_nnx_vgg():
    net = models.vgg("vgg_tiny", "random:0", classifier_activation=None)
    before = np.asarray(net.predictions.kernel[...]).copy()
    optimizer = nnx.Optimizer(net, optax.sgd(1e-2), wrt=nnx.Param)
    x, labels = images(4, 32), jnp.array([0, 1, 2, 3])

    def loss_fn(model, x, labels):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), labels).mean()

    @nnx.jit
    def train_step(model, optimizer, x, labels):
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, labels)
        optimizer.update(model, grads)
        return loss, loss_fn(model, x, labels)

    loss0, loss1 = train_step(net, optimizer, x, labels)
    assert not np.array_equal(np.asarray(net.predictions.kernel[...]), before)
    assert float(loss1) < float(loss0)


def test_from_flax_vgg_matches_jaxviz_vgg_under_the_methods():
    x = images(2, 32)
    ref = jaxviz.load("vgg_tiny", weights="random:2", ops="exact")
    model = from_flax(models.vgg("vgg_tiny", "random:2", classifier_activation=None), input_shape=(32, 32, 3),
                      preprocess="caffe")
    assert model.layer_names[1:-1] == ref.layer_names[1:] and model.layer_names[-1] == "output"
    assert model.cam_layer == ref.cam_layer == "block5_conv3"
    close(model.features(x, "block3_conv2")["block3_conv2"], ref.features(x, "block3_conv2")["block3_conv2"])
    close(jaxviz.saliency(model, x, target=3), jaxviz.saliency(ref, x, target=3))
    close(jaxviz.gradcam(model, x, target=3, score="logit"), jaxviz.gradcam(ref, x, target=3, score="logit"))
    close(jaxviz.guided_gradcam(model, x, target=3), jaxviz.guided_gradcam(ref, x, target=3))


# ---------------------------------------------------------------------------------------------------------
# from_flax on Flax users' modules


@pytest.fixture(scope="module")
def mnist():
    x = images()
    module = MnistCNN()
    variables = module.init(jax.random.key(0), x)
    return module, variables, from_flax(module, variables, input_shape=(16, 16, 3)), x


def test_linen_mnist_cnn_against_hand_written_jax(mnist):
    module, variables, model, x = mnist
    assert model.layer_names == ["input_layer", "Conv_0", "Conv_1", "Dense_0", "Dense_1", "output"]
    assert model.cam_layer == "Conv_1" and model.conv_layer_names == ["Conv_0", "Conv_1"]
    _, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    feats = model.features(x, ["Conv_0", "Dense_0"])
    for name in ("Conv_0", "Dense_0"):
        close(feats[name], state["intermediates"][name]["__call__"][0])
    t = jnp.array([3, 7])
    a, g = linen_grad_at(module, variables, x, ("Conv_1",), t)
    close(jaxviz.gradcam(model, x, target=t, score="logit"), book_gradcam(a, g))

    def score(v, act=nn.relu):
        return MnistCNN(act=act).apply(variables, v)[jnp.arange(2), t].sum()

    close(jaxviz.saliency(model, x, target=t, reduce=None), jnp.abs(jax.grad(score)(x)))
    guided = jax.grad(lambda v: score(v, guided_relu))(x)
    close(jaxviz.guided_backprop(model, x, target=t, reduce=None), guided)
    # Ablation-CAM at Conv_1, whose ReLU is a function applied after it: channel k of the call's output zeroed
    # by a hand-written interceptor, w_k = (S - S_k) / S, ReLU(Σ_k w_k A_k) at the layer's resolution
    def logits_with(scale):
        def swap(next_fun, args, kw, ctx):
            out = next_fun(*args, **kw)
            return out * scale if ctx.method_name == "__call__" and ctx.module.path == ("Conv_1",) else out

        with nn.intercept_methods(swap):
            return module.apply(variables, x)[jnp.arange(2), t]

    s = logits_with(1.0)
    s_k = jnp.stack([logits_with(1 - jax.nn.one_hot(k, a.shape[-1])) for k in range(a.shape[-1])], axis=1)
    w = (s[:, None] - s_k) / s[:, None]
    ref = jnp.maximum(jnp.einsum("nhwk,nk->nhw", a, w), 0)
    close(jaxviz.ablationcam(model, x, target=t, upsample=False), ref)


def test_filter_pattern_equals_a_hand_written_ascent(mnist):
    module, variables, model, _ = mnist
    x0 = np.asarray(images(2, 16, seed=5)) * 20
    got = jaxviz.filter_patterns(model, "Conv_1", filters=[0, 5], size=16, steps=3, init=x0, progress=False)

    def objective(v):
        _, state = module.apply(variables, v, capture_intermediates=True, mutable=["intermediates"])
        a = state["intermediates"]["Conv_1"]["__call__"][0]
        return (a[0, :, :, 0].mean() + a[1, :, :, 5].mean())

    x = jnp.asarray(x0)
    for _ in range(3):
        g = jax.grad(objective)(x)
        x = x + g / (jnp.sqrt(jnp.mean(g * g, axis=(1, 2, 3), keepdims=True)) + 1e-5)
    close(got, x)


def test_linen_resnet18_with_batch_norm():
    x = images()
    module = ResNet18()
    variables = module.init(jax.random.key(1), x, train=False)
    rng = np.random.default_rng(3)

    def trained(path, a):  # statistics a trained network could have
        value = rng.normal(0, 0.1, a.shape) if path[-1].key == "mean" else rng.uniform(0.5, 1.5, a.shape)
        return jnp.asarray(value.astype(np.float32))

    variables = {**variables, "batch_stats": jax.tree_util.tree_map_with_path(trained, variables["batch_stats"])}
    model = from_flax(module, variables, input_shape=(16, 16, 3), apply_kwargs={"train": False})
    assert "layer2_0/proj_bn" in model.layer_names and model.cam_layer == "layer4_1"
    assert set(model.params["bn_init"]) == {"scale", "bias", "mean", "var"}
    close(model.features(x, "layer3_0/bn2")["layer3_0/bn2"], captured(module, variables, x, ("layer3_0", "bn2"),
                                                                       train=False))
    t = jnp.array([1, 4])
    a, g = linen_grad_at(module, variables, x, ("layer3_1", "bn2"), t, train=False)
    close(jaxviz.gradcam(model, x, target=t, layer="layer3_1/bn2", score="logit"), book_gradcam(a, g))
    table = {r.name: r for r in model.layer_table()}
    assert table["bn_init"].non_trainable == 8 and table["layer1_0/conv1"].kernel_shape == (3, 3, 4, 4)


def nnx_eval_copy(net, act):
    """The NNX module in eval mode with ``act`` as its activation (a copy: ``net`` is not changed)."""
    copy = nnx.view(nnx.clone(net), deterministic=True, use_running_average=True)
    copy.act = act
    return copy


def test_nnx_cnn_with_batch_norm_and_functional_relus():
    x = images()
    net = NnxCNN(rngs=nnx.Rngs(0))
    net.bn2.mean.value = jnp.linspace(-0.5, 0.5, 6)
    net.bn2.var.value = jnp.linspace(0.5, 2.0, 6)
    model = from_flax(net, input_shape=(16, 16, 3))
    assert not net.bn1.use_running_average and not net.dropout.deterministic  # the user's module is unchanged
    assert model.layer_names == ["input_layer", "conv1", "bn1", "conv2", "bn2", "dropout", "head", "output"]
    assert model.cam_layer == "bn2"
    ref = nnx_eval_copy(net, jax.nn.relu)
    c2 = ref.conv2(jax.nn.relu(ref.bn1(ref.conv1(x))))
    close(model.features(x, ["conv2"])["conv2"], c2)
    t = jnp.array([2, 6])

    def score_from_bn2(delta):
        a = ref.bn2(c2) + delta
        return ref.head(jax.nn.relu(a).mean(axis=(1, 2)))[jnp.arange(2), t].sum()

    a = ref.bn2(c2)
    close(jaxviz.gradcam(model, x, target=t, score="logit"), book_gradcam(a, jax.grad(score_from_bn2)(0 * a)))
    close(jaxviz.saliency(model, x, target=t, reduce=None),
          jnp.abs(jax.grad(lambda v: ref(v)[jnp.arange(2), t].sum())(x)))
    guided = nnx_eval_copy(net, guided_relu)
    close(jaxviz.guided_backprop(model, x, target=t, reduce=None),
          jax.grad(lambda v: guided(v)[jnp.arange(2), t].sum())(x))
    # the sanity check re-initialises layer by layer (a BatchNorm: identity statistics, Flax's names)
    res = jaxviz.metrics.model_randomisation(model, x, "saliency", target=t)
    assert res.layers == ["head", "bn2", "conv2", "bn1", "conv1"] and np.isfinite(res.spearman).all()
    assert (np.abs(res.spearman[-1]) < 0.9).all()  # every kernel redrawn: the map changed


def test_linen_sequential_and_weights_as_traced_arguments():
    x = images()
    module = sequential_cnn()
    variables = module.init(jax.random.key(2), x)
    model = from_flax(module, variables, input_shape=(16, 16, 3))
    assert model.layer_names == ["input_layer", "layers_0", "layers_2", "layers_5", "output"]
    assert model.arch.head == "gap"
    t = jnp.array([0, 2])
    grad = jax.grad(lambda v, p: module.apply(p, v)[jnp.arange(2), t].sum())
    close(jaxviz.saliency(model, x, target=t, reduce=None), jnp.abs(grad(x, variables)))
    other = jax.tree_util.tree_map(lambda a: a * 1.5, variables)
    traces = runtime.trace_counts["saliency"]
    other_params = from_flax(module, other, input_shape=(16, 16, 3)).params
    close(jaxviz.saliency(model, x, target=t, reduce=None, params=other_params), jnp.abs(grad(x, other)))
    assert runtime.trace_counts["saliency"] == traces  # the other weights reused the compiled program


def test_errors_are_one_line():
    x = images()
    module = nn.Sequential([nn.Conv(2, (3, 3)), jnp.tanh, lambda v: v.mean(axis=(1, 2)), nn.Dense(3)])
    model = from_flax(module, module.init(jax.random.key(0), x), input_shape=(16, 16, 3))
    with pytest.raises(FlaxError, match="no ReLU found"):
        jaxviz.guided_backprop(model, x)
    with pytest.raises(FlaxError, match="needs its variables"):
        from_flax(MnistCNN(), input_shape=(16, 16, 3))
    with pytest.raises(FlaxError, match="unknown output"):
        from_flax(module, {"params": {}}, input_shape=(16, 16, 3), output="softmax")


# ---------------------------------------------------------------------------------------------------------
# Any jaxviz model out to Flax


def test_to_flax_round_trip_of_a_keras_convnet(tmp_path):
    keras = pytest.importorskip("keras", reason="Keras 3 writes the model file and is the reference")
    from keras_helpers import randomize

    layers = keras.layers
    net = randomize(keras.Sequential([  # listing 5.5's convnet, narrower, with a BatchNormalization
        keras.Input((32, 32, 3)), layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(8, 3, activation="relu"), layers.BatchNormalization(name="bn"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dropout(0.5), layers.Dense(16, activation="relu"),
        layers.Dense(1, activation="sigmoid")]))
    net.save(tmp_path / "m.keras")
    model = jaxviz.load(tmp_path / "m.keras", ops="exact")
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    ref = np.asarray(net(x, training=False))
    module = jaxviz.to_flax(model)
    close(module(x), ref)
    assert set(nnx.to_pure_dict(nnx.state(module, nnx.BatchStat))["weights"]["bn"]) == {
        "moving_mean", "moving_variance"}
    linen_module, variables = jaxviz.to_flax(model, api="linen")
    close(linen_module.apply(variables, x), ref)
    state, graph = jaxviz.save_flax(model, tmp_path / "m_flax")
    from flax import serialization

    restored = serialization.msgpack_restore(state.read_bytes())
    close(linen_module.apply(restored, x), ref)
    assert jaxviz.Graph.from_json(graph.read_text()) == model.graph
    vgg = jaxviz.load("vgg_tiny", weights="random:0", ops="exact").to_flax()
    assert isinstance(vgg, models.VGG) and vgg.block1_conv1.kernel.shape == (3, 3, 3, 4)
    # the command line writes the same two files
    assert main(["convert", str(tmp_path / "m.keras"), "--to", "flax", "-o", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli.msgpack").read_bytes() == state.read_bytes()
    assert (tmp_path / "cli.json").read_text() == graph.read_text()


@pytest.mark.slow
def test_to_flax_round_trip_of_keras_resnet50(tmp_path):
    """ResNet50 (Keras 3's application: 53 convs, 53 BatchNormalizations, 16 residual Adds) out to NNX and
    linen, and the msgpack and graph that ``jaxviz convert --to flax`` writes read back, compute Keras's
    outputs (its logits: random weights saturate a 1000-way softmax to one-hot)."""
    keras = pytest.importorskip("keras", reason="Keras 3 writes the model file and is the reference")
    from flax import serialization
    from keras_helpers import COMPILER_OPTIONS, keras_outputs, numpy_initializers, randomize

    from jaxviz.frontends.flax_export import LinenGraphModule

    def compiled(fn, *args):  # one program, compiled as keras_outputs compiles Keras's (fewer XLA passes)
        return jax.jit(fn).lower(*args).compile(compiler_options=COMPILER_OPTIONS)

    keras.utils.set_random_seed(0)
    with numpy_initializers():
        net = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classifier_activation=None)
    randomize(net)  # BatchNormalization's statistics and scales away from the identity they start as
    net.save(tmp_path / "resnet50.keras")
    x = np.random.default_rng(0).normal(0, 50, size=(2, 32, 32, 3)).astype(np.float32)
    (ref,) = keras_outputs(net, x)
    assert ref.shape == (2, 1000) and ref.std() > 1
    model = jaxviz.load(tmp_path / "resnet50.keras", ops="exact")
    nnx_module = model.to_flax(api="nnx")
    assert len(nnx.to_flat_state(nnx.state(nnx_module, nnx.BatchStat))) == 2 * 53  # moving means, variances
    graphdef, state = nnx.split(nnx_module)
    close(compiled(lambda state, x: nnx.merge(graphdef, state)(x), state, x)(state, x), ref)
    module, variables = model.to_flax(api="linen")
    linen_apply = compiled(module.apply, variables, x)
    close(linen_apply(variables, x), ref)
    assert main(["convert", str(tmp_path / "resnet50.keras"), "--to", "flax", "-o", str(tmp_path / "cli")]) == 0
    restored = serialization.msgpack_restore((tmp_path / "cli.msgpack").read_bytes())
    assert LinenGraphModule(jaxviz.Graph.from_json((tmp_path / "cli.json").read_text())) == module
    close(linen_apply(restored, x), ref)  # the same program on the weights read back


def test_cli_takes_a_flax_factory(tmp_path, capsys):
    assert main(["gradcam", "--arch", "flax_models:nnx_cnn", "--input-size", "16", "--score", "logit",
                 "-o", str(tmp_path), "--no-progress"]) == 0
    assert "layer bn2" in capsys.readouterr().out and (tmp_path / "chelsea_heatmap.png").exists()
    assert main(["kernels", "--arch", "flax_models:mnist_cnn", "--input-size", "16", "--layer", "Conv_0",
                 "-o", str(tmp_path)]) == 0
    assert (tmp_path / "kernels_Conv_0_rgb.png").exists()
    assert main(["gradcam", "--arch", "flax_models:nnx_cnn", "--weights", "random:0", "-o", str(tmp_path)]) == 2
    assert "makes its own weights" in capsys.readouterr().err


def test_probs_and_sigmoid_outputs():
    x = images()
    body = [nn.Conv(3, (3, 3)), nn.relu, lambda v: v.mean(axis=(1, 2)), nn.Dense(1)]
    module = nn.Sequential([*body, nn.sigmoid])
    variables = module.init(jax.random.key(4), x)
    model = from_flax(module, variables, input_shape=(16, 16, 3), output="sigmoid")
    p = np.asarray(module.apply(variables, x))
    assert model.num_classes == 2
    close(model.predict(x), p)
    z = np.log(p) - np.log1p(-p)
    close(runtime.logits(model, x), np.concatenate([-z, z], axis=-1))
    probs = nn.Sequential([*body[:-1], nn.Dense(4), nn.softmax])
    model = from_flax(probs, probs.init(jax.random.key(5), x), input_shape=(16, 16, 3), output="probs")
    close(model.predict(x), probs.apply(probs.init(jax.random.key(5), x), x))
