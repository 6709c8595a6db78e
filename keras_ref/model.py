"""The study's network in Keras: a Sequential of Dense + Activation layers, and its weights in the core's layout.

Built exactly as the study built it (`Dense(units)`, then `Activation(name)` as a separate layer), so the
output Activation layer's `softmax`/`sigmoid` attaches its input logits to the output and
`categorical_crossentropy` behaves as it did in the study. The initial weights are the core's
(`ftmed_core.protocol.initial_weights`), not Keras's own draws, so both frameworks start from the same
numbers. Activation names are Keras's, with Keras's defaults: `leaky_relu` has negative slope 0.2, `gelu`
is the exact erf form, `swish` is x * sigmoid(x).
"""

from __future__ import annotations

import numpy as np

from ftmed_core.config import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, ExperimentConfig
from ftmed_core.errors import ConfigError
from ftmed_core.protocol import Weights, initial_weights, layer_sizes
from ftmed_core.tasks import head_for
from keras_ref._backend import keras

# The core's activation names -> Keras's names (the same strings today; kept as a table so that a rename on
# either side is one line, and so an unknown name fails here with a clear message).
KERAS_ACTIVATIONS = {name: name for name in (*HIDDEN_ACTIVATIONS, *OUTPUT_ACTIVATIONS)}


def _keras_activation(name: str) -> str:
    if name not in KERAS_ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of: {', '.join(KERAS_ACTIVATIONS)}")
    return KERAS_ACTIVATIONS[name]


def build_mlp(config: ExperimentConfig, input_dim: int, n_classes: int, weights: Weights | None = None,
              dtype: str | None = None) -> keras.Sequential:
    """Input, then Dense + Activation per hidden layer, then Dense(n_classes) + Activation(output) — the
    task's head activation (`ftmed_core.tasks.head_for`: per-finding sigmoids on a multi-label task).

    `weights` (the core's layout) default to the run's initial weights. `dtype` is a Keras dtype policy
    for the Dense and hidden Activation layers (e.g. "mixed_bfloat16"); the output activation always
    runs in float32.
    """
    layers: list = [keras.Input(shape=(input_dim,), name="pixels")]
    for i, units in enumerate(config.hidden_units):
        layers.append(keras.layers.Dense(units, name=f"dense_{i}", dtype=dtype))
        layers.append(keras.layers.Activation(_keras_activation(config.hidden_activation),
                                              name=f"{config.hidden_activation}_{i}", dtype=dtype))
    n_hidden = len(config.hidden_units)
    head = head_for(config.dataset, config.output_activation)[1]  # softmax -> sigmoid on a multi-label task
    layers.append(keras.layers.Dense(n_classes, name=f"dense_{n_hidden}", dtype=dtype))
    layers.append(keras.layers.Activation(_keras_activation(head), name=f"output_{head}", dtype="float32"))
    model = keras.Sequential(layers, name=f"mlp_{config.name}".replace("-", "_"))
    set_weights(model, weights if weights is not None else initial_weights(config, input_dim, n_classes))
    return model


def dense_layers(model: keras.Model) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def get_weights(model: keras.Model) -> Weights:
    """[(kernel (fan_in, fan_out) float32, bias (fan_out,) float32)] per Dense layer, input to output."""
    return [(np.asarray(layer.kernel.numpy(), dtype=np.float32), np.asarray(layer.bias.numpy(), dtype=np.float32))
            for layer in dense_layers(model)]


def set_weights(model: keras.Model, weights: Weights) -> None:
    """Load weights in the core's layout (Keras's own: kernels are (fan_in, fan_out), nothing transposed)."""
    layers = dense_layers(model)
    if len(weights) != len(layers):
        raise ConfigError(f"the weights have {len(weights)} Dense layers, the model has {len(layers)}")
    for i, (layer, (kernel, bias)) in enumerate(zip(layers, weights)):
        kernel, bias = np.asarray(kernel, dtype=np.float32), np.asarray(bias, dtype=np.float32)
        if kernel.shape != tuple(layer.kernel.shape) or bias.shape != tuple(layer.bias.shape):
            raise ConfigError(f"layer {i}: weights have kernel {kernel.shape} / bias {bias.shape}, the model "
                              f"needs {tuple(layer.kernel.shape)} / {tuple(layer.bias.shape)}")
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)


def logits_model(model: keras.Model) -> keras.Model:
    """A model sharing `model`'s layers that stops at the last Dense: the pre-activation outputs."""
    return keras.Model(model.inputs, dense_layers(model)[-1].output, name=f"{model.name}_logits")


def predict_logits(model: keras.Model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Pre-activation outputs of the last Dense layer, float32 (N, n_classes)."""
    logits = logits_model(model).predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(logits, dtype=np.float32)


def check_layout(config: ExperimentConfig, input_dim: int, n_classes: int, weights: Weights) -> None:
    """Raise ConfigError when `weights` do not fit the network `config` describes."""
    sizes = layer_sizes(config, input_dim, n_classes)
    got = [int(np.shape(weights[0][0])[0])] + [int(np.shape(k)[1]) for k, _ in weights]
    if got != sizes:
        raise ConfigError(f"the weights have layer sizes {got}, the configuration needs {sizes}")
