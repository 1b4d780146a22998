"""Writes tests/fixtures/tf2onnx/: a small Keras CNN (seeded weights) exported to ONNX by tf2onnx, with its inputs
and TensorFlow's outputs, for the ONNX reader's test of files from Keras/TensorFlow (NHWC input, Transposes
around each convolution).

Needs TensorFlow and tf2onnx, which jaxviz's CI does not install; run it once in their own environment:

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu==2.15.1 tf2onnx==1.16.1 onnx==1.16.2
    /tmp/tfenv/bin/python scripts/make_tf2onnx_fixture.py
"""

from pathlib import Path

import numpy as np
import tensorflow as tf
import tf2onnx

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tf2onnx"
SIZE = 32


def build() -> tf.keras.Model:
    """Conv + BatchNorm + ReLU, max pool, depthwise conv, ReLU6, average pool, conv, global pool, softmax."""
    tf.keras.utils.set_random_seed(0)
    L = tf.keras.layers
    x = inputs = L.Input((SIZE, SIZE, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw2")(x)
    x = L.ReLU(6.0, name="relu6")(x)
    x = L.AveragePooling2D(2, name="pool2")(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv3")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(5, activation="softmax", name="predictions")(x)
    model = tf.keras.Model(inputs, outputs, name="keras_cnn")
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn1")  # statistics away from a fresh layer's identity
    bn.set_weights([rng.uniform(0.5, 1.5, 8), rng.uniform(-0.2, 0.2, 8), rng.uniform(-0.5, 0.5, 8),
                    rng.uniform(0.5, 2.0, 8)])
    return model


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    model = build()
    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="image"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=13, output_path=str(OUT / "keras_cnn.onnx"))
    x = np.random.default_rng(1).uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    np.savez(OUT / "keras_cnn_io.npz", x=x, probs=model(x).numpy(),
             conv3=tf.keras.Model(model.input, model.get_layer("conv3").output)(x).numpy())
    print("wrote", *sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
