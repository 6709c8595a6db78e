"""A finished Keras run's saved model as an ONNX graph, through Keras 3's own `model.export(format="onnx")`
on the backend keras was imported with (TensorFlow: tf2onnx; JAX: jax2onnx; torch: onnx + onnxscript).

The graph reuses the saved model's layers: everything up to the last Dense gives the logits, the output
activation layer the probabilities. With `image_shape`, the study's input pipeline comes first: uint8
pixels -> float32 / 255 -> flattened (float32 division, bitwise `ftmed_core.data.preprocess_images`).
Names are set by `ftmed.export`.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
from pathlib import Path

from keras_ref._backend import keras
from keras_ref.training import MODEL_FILE


def preprocess(images, input_dim: int):
    """uint8 images (batch, H, W[, C]) -> float32 pixels / 255, flattened to (batch, input_dim): bitwise
    `ftmed_core.data.preprocess_images`, as Keras operations (255.0 is folded in as a float32 constant)."""
    return keras.ops.reshape(keras.ops.divide(keras.ops.cast(images, "float32"), 255.0), (-1, input_dim))


def export_onnx(run_dir: Path, path: Path, output_activation: str, input_dim: int,
                image_shape: tuple[int, ...] | None) -> None:
    """Write the run's `model.keras` (the weights its test logits came from) to `path`."""
    model = keras.saving.load_model(Path(run_dir) / MODEL_FILE, compile=False)
    if image_shape is not None:
        inputs = keras.Input(shape=image_shape, dtype="uint8", name="input")
        x = preprocess(inputs, input_dim)
    else:
        inputs = x = keras.Input(shape=(input_dim,), dtype="float32", name="input")
    for layer in model.layers[:-1]:
        x = layer(x)
    logits, probabilities = x, model.layers[-1](x)
    exported = keras.Model(inputs, [logits, probabilities], name="exported")
    exported(np.zeros((1, *(image_shape or (input_dim,))), dtype="uint8" if image_shape else "float32"))  # Keras exports only built-and-called models
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporters print progress lines
        warnings.simplefilter("ignore", FutureWarning)  # tf2onnx probes np.object on import
        exported.export(str(path), format="onnx", verbose=False)
