"""The article's model in Keras on TensorFlow, repaired: the tool the article's readers would pick.

A speed reference for docs/performance.md (not part of l2sweep, not installed with it): one run
per process, as a Keras user runs it. The article's code is broken (a Conv2D fed 784-vectors,
`fit` without labels, a "regularizer" that multiplies features by their norm); this is what it
means: Conv2D(32, 3x3, relu) -> MaxPool -> Conv2D(64, 3x3, relu) -> MaxPool -> Flatten ->
Dense(64, relu) -> Dropout(0.5) -> Dense(10, softmax), with `kernel_regularizer=L2(alpha)` and
`activity_regularizer=L2(alpha)` on both Conv2D layers when alpha > 0 (target=both); Adam(1e-3),
batch 128, 5 epochs, validation_split=0.1, ReduceLROnPlateau(factor 0.1, patience 3); test
accuracy on the 10,000 test images.

Usage (in a venv with tensorflow-cpu and keras; MNIST's raw IDX files in DATA/MNIST/raw/):
    python benchmarks/keras_reference.py --data ../shared/data --alpha 1e-4 --seed 1
Prints one JSON line: alpha, seed, test accuracy, wall seconds (whole process, imports included
from the interpreter's start), training seconds, versions.
"""

import argparse
import json
import time

STARTED = time.time()


def read_idx(path):
    import numpy as np

    with open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder holding MNIST/raw/")
    parser.add_argument("--alpha", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    from keras import layers, regularizers

    raw = f"{args.data}/MNIST/raw"
    x_train = read_idx(f"{raw}/train-images-idx3-ubyte").astype("float32")[..., None] / 255.0
    y_train = read_idx(f"{raw}/train-labels-idx1-ubyte").astype("int64")
    x_test = read_idx(f"{raw}/t10k-images-idx3-ubyte").astype("float32")[..., None] / 255.0
    y_test = read_idx(f"{raw}/t10k-labels-idx1-ubyte").astype("int64")
    keras.utils.set_random_seed(args.seed)

    def conv(filters):
        extra = {}
        if args.alpha > 0:
            extra = {"kernel_regularizer": regularizers.L2(args.alpha),
                     "activity_regularizer": regularizers.L2(args.alpha)}
        return layers.Conv2D(filters, 3, activation="relu", **extra)

    model = keras.Sequential([
        keras.Input((28, 28, 1)), conv(32), layers.MaxPooling2D(2), conv(64), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    train_started = time.time()
    model.fit(x_train, y_train, batch_size=128, epochs=args.epochs, validation_split=0.1, verbose=0,
              callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=3)])
    train_seconds = time.time() - train_started
    _, accuracy = model.evaluate(x_test, y_test, batch_size=250, verbose=0)
    print(json.dumps({"alpha": args.alpha, "seed": args.seed, "test_acc": 100 * accuracy,
                      "train_seconds": train_seconds, "process_seconds": time.time() - STARTED,
                      "tensorflow": tf.__version__, "keras": keras.__version__}))


if __name__ == "__main__":
    main()
