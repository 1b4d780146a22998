"""Writes the Keras 2 (tf.keras) model files tests/test_keras_models.py reads, with their expected outputs.

Needs TensorFlow and tf-keras (not jaxviz's dependencies; the tests only read the committed files):

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu tf-keras h5py
    /tmp/tfvenv/bin/python scripts/make_keras2_fixtures.py [OUT_DIR]   # default tests/fixtures/keras2

Each model is saved with ``model.save("NAME.h5")`` (Keras 2's whole-model HDF5) next to ``NAME.npz``: the
``input`` batch, the model's ``output`` and some layers' outputs under their names (a nested model's inner
layer as ``outer/inner``), all float32, readable with ``np.load(..., allow_pickle=False)``.

- ``listing_5_5``: the book's cats-vs-dogs convnet (listing 5.5) at a 46×46 input (the smallest its four
  valid convolutions and pools take), so its Dense(512) stays small;
- ``listing_5_20``: listing 5.20's nested model — a small VGG-like functional base named ``vgg16`` (with a
  BatchNormalization, so the nested weight list mixes trainable and non-trainable weights) inside a
  Sequential with Flatten, Dense(16, relu), Dense(1, sigmoid). Keras 3 cannot load this file; jaxviz can;
- ``keras2_kinds``: Keras 2's spellings — ``DepthwiseConv2D``'s ``depthwise_kernel``, ``LeakyReLU(alpha)``,
  the ``hard_sigmoid`` activation (0.2x + 0.5, clipped), ``ReLU(6)``, ``SeparableConv2D``, merges,
  bilinear ``UpSampling2D``;
- ``keras2_tf_ops``: TensorFlow functions on tensors (TFOpLambda layers: ``x + 3.0``, ``2.0 - x``,
  ``tf.maximum``, ``x * y``), as tf.keras's MobileNetV3 uses them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

L = keras.layers


def randomize(model, rng):
    """He-scaled kernels, small biases and BatchNorm statistics that keep activations O(1)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            randomize(layer, rng)
            continue
        new = []
        for w in layer.weights:
            name = w.name.split("/")[-1].split(":")[0]
            shape = tuple(w.shape)
            if name in ("moving_variance", "gamma"):
                v = rng.uniform(0.5, 1.5, shape)
            elif name in ("moving_mean", "beta", "bias"):
                v = rng.normal(0, 0.1, shape)
            elif name == "depthwise_kernel":
                v = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:2])), shape)
            else:
                v = rng.normal(0, np.sqrt(2.0 / max(int(np.prod(shape[:-1])), 1)), shape)
            new.append(np.asarray(v, np.float32))
        if new:
            layer.set_weights(new)
    return model


def listing_5_5():
    return keras.Sequential([
        L.Conv2D(32, 3, activation="relu", input_shape=(46, 46, 3)), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(128, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(128, 3, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dropout(0.5), L.Dense(512, activation="relu"), L.Dense(1, activation="sigmoid"),
    ], name="listing_5_5")


def listing_5_20():
    inp = keras.Input((32, 32, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="block1_conv1")(inp)
    x = L.MaxPooling2D(2, name="block1_pool")(x)
    x = L.Conv2D(16, 3, padding="same", name="block2_conv1")(x)
    x = L.BatchNormalization(name="block2_bn")(x)
    x = L.Activation("relu", name="block2_relu")(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="block2_conv2")(x)
    x = L.MaxPooling2D(2, name="block2_pool")(x)
    base = keras.Model(inp, x, name="vgg16")
    return keras.Sequential([base, L.Flatten(name="flatten"), L.Dense(16, activation="relu", name="dense"),
                             L.Dense(1, activation="sigmoid", name="dense_1")], name="listing_5_20")


def keras2_kinds():
    inp = keras.Input((12, 12, 3))
    a = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(inp)
    a = L.LeakyReLU(alpha=0.2, name="leaky")(a)
    b = L.SeparableConv2D(6, 3, padding="same", name="sep")(inp)
    b = L.BatchNormalization(center=False, name="bn")(b)
    b = L.ReLU(6.0, name="relu6")(b)
    c = L.Conv2D(6, 1, activation="hard_sigmoid", name="hard")(inp)
    m = L.Add(name="add")([a, b, c])
    m = L.Concatenate(name="cat")([m, L.Multiply(name="mul")([b, c])])
    m = L.UpSampling2D(2, interpolation="bilinear", name="up")(m)
    m = L.ZeroPadding2D(((1, 0), (0, 1)), name="pad")(m)
    m = L.AveragePooling2D(3, strides=2, padding="same", name="avg")(m)
    out = L.Dense(4, activation="softmax", name="probs")(L.GlobalAveragePooling2D(name="gap")(m))
    return keras.Model(inp, out, name="keras2_kinds")


def keras2_tf_ops():
    """tf.keras's TFOpLambda layers: MobileNetV3's hard sigmoid ``ReLU(6)(x + 3) * (1 / 6)`` and others."""
    import tensorflow as tf

    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="c")(inp)
    y = L.ReLU(6.0, name="relu6")(x + 3.0) * (1.0 / 6.0)
    z = tf.maximum(2.0 - x, 0.5) / 2.0 + (-x)
    out = L.Concatenate(name="cat")([y, z, x * y])
    return keras.Model(inp, out, name="keras2_tf_ops")


def save(model, out: Path, stem: str, taps: dict[str, object], size: int, rng):
    x = rng.normal(0, 1, (2, size, size, 3)).astype(np.float32)
    model.save(out / f"{stem}.h5")
    arrays = {"input": x, "output": np.asarray(model(x, training=False), np.float32)}
    for name, tensor_model in taps.items():
        arrays[name] = np.asarray(tensor_model(x, training=False), np.float32)
    np.savez(out / f"{stem}.npz", **arrays)
    sizes = sum((out / f"{stem}{s}").stat().st_size for s in (".h5", ".npz"))
    print(f"{stem}: {sizes / 1e3:.0f} kB, taps {', '.join(taps)}")


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent / "tests" / "fixtures" / "keras2")
    out.mkdir(parents=True, exist_ok=True)
    print("tf.keras", keras.__version__)
    rng = np.random.default_rng(0)

    m = randomize(listing_5_5(), rng)
    conv3 = m.layers[4]
    save(m, out, "listing_5_5", {conv3.name: keras.Model(m.inputs, conv3.output)}, 46, rng)

    m = randomize(listing_5_20(), rng)
    base = m.layers[0]
    taps = {f"vgg16/{n}": keras.Model(base.inputs, base.get_layer(n).output) for n in ("block2_bn", "block2_conv2")}
    taps["dense"] = keras.Model(m.inputs, m.get_layer("dense").output)
    save(m, out, "listing_5_20", taps, 32, rng)

    m = randomize(keras2_kinds(), rng)
    taps = {n: keras.Model(m.inputs, m.get_layer(n).output) for n in ("dw", "leaky", "sep", "bn", "hard", "up", "avg")}
    save(m, out, "keras2_kinds", taps, 12, rng)

    m = randomize(keras2_tf_ops(), rng)
    save(m, out, "keras2_tf_ops", {"relu6": keras.Model(m.inputs, m.get_layer("relu6").output)}, 6, rng)


if __name__ == "__main__":
    main()
