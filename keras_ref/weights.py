"""Weights in and out of a Keras model through the framework-neutral file (`ftmed_core.weights_io`).

For parity tests (the same numbers in both frameworks) and for users moving a trained model between
Keras and Lightning. Keras kernels are already in the neutral (fan_in, fan_out) layout: nothing is
transposed here.
"""

from __future__ import annotations

from pathlib import Path

from ftmed_core.config import ExperimentConfig
from ftmed_core.weights_io import load_weights, save_weights
from keras_ref._backend import keras
from keras_ref.model import build_mlp, check_layout, get_weights, set_weights


def export_weights(model: keras.Model, path: str | Path, meta: dict | None = None) -> Path:
    """Write `model`'s Dense kernels and biases to a neutral weights file."""
    return save_weights(path, get_weights(model), {"framework": "keras", "model": model.name, **(meta or {})})


def import_weights(model_or_config: keras.Model | ExperimentConfig, path: str | Path) -> keras.Model:
    """Load a neutral weights file into a model, or build the config's network around it.

    Given a config, the input and class counts come from the file; the hidden layers must match the config.
    """
    weights, _ = load_weights(path)
    if isinstance(model_or_config, ExperimentConfig):
        config = model_or_config
        input_dim, n_classes = int(weights[0][0].shape[0]), int(weights[-1][0].shape[1])
        check_layout(config, input_dim, n_classes, weights)
        return build_mlp(config, input_dim, n_classes, weights)
    set_weights(model_or_config, weights)
    return model_or_config
