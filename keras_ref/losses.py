"""The two loss modes in Keras, and the compile call (loss, optimizer, accuracy and AUC), on every backend.

`loss="keras"` is the study's plain `"categorical_crossentropy"`. On the TensorFlow backend
(`keras/src/backend/tensorflow/nn.py`, `_get_logits`) it first looks for `output._keras_logits`, which the
`softmax` and `sigmoid` activations attach to their output: if present it returns
`tf.nn.softmax_cross_entropy_with_logits` on those pre-activation logits. So softmax *and* sigmoid outputs
train on softmax cross-entropy of the logits; linear and tanh outputs get the divide-by-sum-and-clip formula.

`loss="probability"` is the literal reading of the study's code, -sum(y log clip(p / sum p, 1e-7, 1 - 1e-7))
on the activated outputs for every activation. It passes the outputs through `tf.identity` first: the new
tensor carries no `_keras_logits` and its op is `Identity`, not `Softmax`, so Keras's own
categorical_crossentropy cannot take the logits shortcut and runs its probability formula (the same ops,
in the same order, as for a linear output). Both agree with `ftmed_core.losses.per_sample_loss`
(tests/test_keras_losses.py).

On the JAX and torch backends (`keras/src/backend/{jax,torch}/nn.py`) `categorical_crossentropy` has no
logits shortcut: "keras" computes the probability formula there too (`ftmed_core.frameworks.effective_loss`;
measured in tests/test_keras_backends.py), and `probability_crossentropy` needs no `tf.identity`.

A multi-label task (ChestMNIST, `ftmed_core.tasks`) compiles `"binary_crossentropy"` instead: on a sigmoid
head the TF backend takes the attached logits (`sigmoid_cross_entropy_with_logits`), otherwise it clips the
outputs to [1e-7, 1 - 1e-7]; the mean over the labels, then over the batch
(`ftmed_core.losses.multilabel_per_sample_loss`; parity rows `ml.*`). `loss="probability"` passes the
outputs through `tf.identity` there too. Accuracy is `BinaryAccuracy` (label bits right at 0.5).
"""

from __future__ import annotations

from ftmed_core.config import LOSS_MODES, ExperimentConfig
from ftmed_core.errors import ConfigError
from ftmed_core.tasks import head_for
from keras_ref._backend import keras, native

KERAS_LOSS = "categorical_crossentropy"
KERAS_MULTILABEL_LOSS = "binary_crossentropy"  # mean over the labels, then over the batch


@keras.saving.register_keras_serializable(package="ftmed", name="probability_crossentropy")
def probability_crossentropy(y_true, y_pred):
    """Cross-entropy on the activated outputs, never on attached logits (per sample, (N,))."""
    y_pred = native.fresh_output(y_pred)  # TensorFlow: without the attached logits (keras_ref/backend/)
    return keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=False)


@keras.saving.register_keras_serializable(package="ftmed", name="probability_binary_crossentropy")
def probability_binary_crossentropy(y_true, y_pred):
    """Multi-label: binary cross-entropy on the activated (clipped) outputs, never on attached logits."""
    y_pred = native.fresh_output(y_pred)
    return keras.losses.binary_crossentropy(y_true, y_pred, from_logits=False)


def make_loss(config: ExperimentConfig):
    """What `model.compile(loss=...)` receives for `config.loss` on the config's task
    (`categorical_crossentropy`, or `binary_crossentropy` on a multi-label head: `ftmed_core.tasks`)."""
    multi_label, _ = head_for(config.dataset, config.output_activation)
    if config.loss == "keras":
        return KERAS_MULTILABEL_LOSS if multi_label else KERAS_LOSS
    if config.loss == "probability":
        return probability_binary_crossentropy if multi_label else probability_crossentropy
    raise ConfigError(f"unknown loss {config.loss!r}; choose one of: {', '.join(LOSS_MODES)}")


def make_metrics(multi_label: bool = False) -> list:
    """Accuracy (argmax of the activated output vs the one-hot label; on a multi-label head the share of
    label bits right at 0.5, `BinaryAccuracy`) and Keras's AUC, as the study logged."""
    if multi_label:
        return [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.5),
                keras.metrics.AUC(name="auc", multi_label=True)]
    return [keras.metrics.CategoricalAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]


def compile_model(model: keras.Model, config: ExperimentConfig, optimizer=None,
                  steps_per_execution: int = 1) -> keras.Model:
    """Compile with the config's loss and optimizer.

    XLA off on TensorFlow and torch: it changes numerics (and is on by default on GPU for TensorFlow). On
    JAX every op runs through XLA anyway; `jit_compile=True` compiles the whole step instead of dispatching
    op by op (eager JAX runs each op as its own XLA computation, orders of magnitude slower).
    """
    from keras_ref.optimizers import build_optimizer

    model.compile(
        optimizer=optimizer if optimizer is not None else build_optimizer(config.optimizer),
        loss=make_loss(config),
        metrics=make_metrics(head_for(config.dataset, config.output_activation)[0]),
        jit_compile=native.JIT_COMPILE,
        steps_per_execution=steps_per_execution,
    )
    return model
