"""The reference side's functions: what Keras computes, through keras_ref, on the backend this process
imported it with, as plain values (numpy arrays, floats, lists). Weights are in the core's layout
(kernels (fan_in, fan_out)) everywhere.

The same functions are the TensorFlow side in the suite's own process (`sides.default_sides`) and any
backend's side in a child process (`sides.keras_side(backend)` runs them there through `probe.py`), so every
parity layer runs the same checks against every backend. Importing this module imports keras_ref, i.e. keras
on KERAS_BACKEND's backend.

Single-batch `predict_on_batch` / `test_on_batch` run op by op (`jit_compile=False`): on JAX compiling a
step per model would cost more than running it; on TensorFlow (CPU) and torch it is the default anyway.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np

from ftmed_core.config import ExperimentConfig, OptimizerConfig
from keras_ref._backend import keras, native
from keras_ref.losses import compile_model
from keras_ref.model import build_mlp, get_weights, logits_model
from keras_ref.optimizers import build_optimizer
from keras_ref.weights import export_weights, import_weights


def _numpy(value) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float32)


def _flat(net) -> list[np.ndarray]:
    return [array for pair in get_weights(net) for array in pair]


def compiled(config: ExperimentConfig, weights, input_dim: int, n_classes: int):
    """keras_ref's model for `config` from `weights`, compiled as keras_ref compiles it."""
    net = build_mlp(config, input_dim, n_classes, weights)
    compile_model(net, config)
    return net


def architecture(config: ExperimentConfig, input_dim: int, n_classes: int) -> tuple[int, list[tuple[int, ...]]]:
    """(parameter count, shapes of the trainable variables) of keras_ref's model for `config`."""
    net = build_mlp(config, input_dim, n_classes)
    return int(net.count_params()), [tuple(int(d) for d in v.shape) for v in net.trainable_variables]


def export_built(config: ExperimentConfig, weights, input_dim: int, n_classes: int, path: str | Path) -> None:
    """Build the model from `weights` and write it as a neutral weights file (`keras_ref.export_weights`)."""
    export_weights(build_mlp(config, input_dim, n_classes, weights), Path(path))


def reexport(config: ExperimentConfig, source: str | Path, path: str | Path) -> None:
    """Import a neutral weights file into keras_ref's model (`import_weights`) and export it again."""
    export_weights(import_weights(config, Path(source)), Path(path))


def forward(config: ExperimentConfig, weights, x: np.ndarray, outputs: tuple[str, ...], input_dim: int,
            n_classes: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(logits, {output activation: activated outputs}) of `config`'s network (its hidden activation) on x."""
    logits, activated = None, {}
    for output in outputs or (config.output_activation,):
        net = build_mlp(replace(config, output_activation=output), input_dim, n_classes, weights)
        net.jit_compile = False
        if logits is None:
            logits = _numpy(logits_model(net).predict_on_batch(x))
        if outputs:
            activated[output] = _numpy(net.predict_on_batch(x))
    return logits, activated


def compiled_loss(config: ExperimentConfig, weights, x: np.ndarray, y_onehot: np.ndarray, input_dim: int,
                  n_classes: int) -> tuple[float, np.ndarray]:
    """(the compiled loss of `test_on_batch` -- evaluate's step --, the logits) on one batch."""
    net = compiled(config, weights, input_dim, n_classes)
    net.jit_compile = False
    value = float(net.test_on_batch(x, y_onehot, return_dict=True)["loss"])
    return value, _numpy(logits_model(net).predict_on_batch(x))


def loss_and_gradients(config: ExperimentConfig, weights, x: np.ndarray, y_onehot: np.ndarray, input_dim: int,
                       n_classes: int) -> tuple[float, list[np.ndarray]]:
    """The loss and its gradients per trainable variable as the backend's `train_step` differentiates them
    (`native.gradient_step`), on one batch."""
    loss, grads = native.gradient_step(compiled(config, weights, input_dim, n_classes))(x, y_onehot)
    return float(_numpy(loss)), [_numpy(g) for g in grads]


def sgd_gradients(config: ExperimentConfig, weights, batches: list[tuple[np.ndarray, np.ndarray]], input_dim: int,
                  n_classes: int) -> list[list[np.ndarray]]:
    """Train `config` (its compiled optimizer) from `weights` on `batches` of (x, y one-hot), one step each,
    through the backend's gradient step; returns the gradients of every step."""
    net = compiled(config, weights, input_dim, n_classes)
    step = native.gradient_step(net)
    recorded = []
    for x, y in batches:
        _, grads = step(x, y)
        recorded.append([_numpy(g) for g in grads])
        net.optimizer.apply_gradients(zip(grads, net.trainable_variables))
    return recorded


def replay(config: ExperimentConfig, optimizer: OptimizerConfig, weights, gradients: list[list[np.ndarray]],
           input_dim: int, n_classes: int, record_steps: tuple[int, ...] | None = None) -> list[list[np.ndarray]]:
    """The variables after each step (1-based; only `record_steps` when given) when keras_ref's optimizer for
    `optimizer` (Keras semantics) applies the given gradient sequence from `weights`."""
    net = build_mlp(config, input_dim, n_classes, weights)
    keras_optimizer = build_optimizer(replace(optimizer, semantics="keras"))
    variables = net.trainable_variables
    out = []
    for step, grads in enumerate(gradients, start=1):
        keras_optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], variables))
        if record_steps is None or step in record_steps:
            out.append([_numpy(v.value).copy() for v in variables])
    return out


def train_one_epoch(config: ExperimentConfig, data, weights) -> tuple[list[float], list[list[np.ndarray]]]:
    """Keras's own train step (`train_on_batch`, the function `fit` runs) over keras_ref's batches for epoch 0
    (`native.training_batches`, what `fit` consumes): the loss of every step and the weights after it."""
    net = compiled(config, weights, data.input_dim, data.n_classes)
    batches = native.training_batches(data.train, data.n_classes, config.batch_size, config.seed, config.shuffle)
    steps = -(-len(data.train) // config.batch_size)
    losses, weights_after = [], []
    for xb, yb in itertools.islice(iter(batches.dataset), steps):
        losses.append(float(net.train_on_batch(xb, yb, return_dict=True)["loss"]))
        weights_after.append(_flat(net))
    return losses, weights_after

