"""The loss and accuracy both frameworks must compute, as a numpy reference (float64 inside).

Keras 3 on the TensorFlow backend, `categorical_crossentropy(from_logits=False)`:
- softmax or sigmoid output: the activation attaches its input (`_keras_logits`) to the output and the
  loss is softmax cross-entropy **on those logits**. A sigmoid output therefore trains exactly like a
  softmax one; only the reported probabilities (and so accuracy ties and AUC) differ.
- any other output activation: p = outputs / sum(outputs) (no epsilon), clipped to [1e-7, 1 - 1e-7],
  loss = -sum(y log p).
Reduction: sum over the batch / batch size. Accuracy: argmax of the activated output (first index wins).

`loss="probability"` is the literal reading: -sum(y log clip(p / sum p)) on the activated outputs for
every activation, softmax included (where it equals the logits form up to clipping).
"""

from __future__ import annotations

import numpy as np

KERAS_EPSILON = 1e-7


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if activation == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if activation == "linear":
        return z
    if activation == "tanh":
        return np.tanh(z)
    raise ValueError(f"unknown output activation {activation!r}")


def uses_logits(output_activation: str, loss: str) -> bool:
    """Whether the loss is softmax cross-entropy on the pre-activation logits (Keras's shortcut)."""
    return loss == "keras" and output_activation in ("softmax", "sigmoid")


def per_sample_loss(logits: np.ndarray, labels: np.ndarray, output_activation: str, loss: str) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    rows = np.arange(len(z))
    if uses_logits(output_activation, loss):
        shifted = z - z.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -log_softmax[rows, labels]
    p = activate(z, output_activation)
    p = p / p.sum(axis=1, keepdims=True)
    p = np.clip(p, KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    return -np.log(p[rows, labels])


def mean_loss(logits: np.ndarray, labels: np.ndarray, output_activation: str, loss: str) -> float:
    return float(per_sample_loss(logits, labels, output_activation, loss).mean())


def multilabel_per_sample_loss(logits: np.ndarray, targets: np.ndarray, head_activation: str,
                               loss: str = "keras") -> np.ndarray:
    """Keras 3 (TensorFlow) `binary_crossentropy(from_logits=False)` per row, for a multi-label head.

    - sigmoid head with `loss="keras"`: the activation attaches its logits, and Keras computes
      `sigmoid_cross_entropy_with_logits` = max(z, 0) - z y + log(1 + exp(-|z|)) on them;
    - linear/tanh head, or `loss="probability"` (the literal reading, and what Keras's JAX and torch backends
      compute for every head): p = activated output clipped to [1e-7, 1 - 1e-7] (their float32 values, as
      Keras clips float32 tensors), -(y log p + (1 - y) log(1 - p));
    then the mean over the labels (`axis=-1`). The batch reduction (sum / batch size) is the caller's mean.
    `targets`: (N, L) of 0/1. Softmax is not a multi-label head (`ftmed_core.tasks.head_activation`).
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if z.shape != y.shape:
        raise ValueError(f"logits {z.shape} and targets {y.shape} must have the same shape")
    if loss not in ("keras", "probability"):
        raise ValueError(f"unknown loss mode {loss!r}; choose one of: keras, probability")
    if head_activation == "sigmoid" and loss == "keras":
        per_label = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    elif head_activation in ("sigmoid", "linear", "tanh"):
        # Keras clips float32 outputs: 1 - 1e-7 rounds to 1 - 1.19e-7, and log(1 - p) of a saturated label
        # is -15.94 there, not float64's -16.12. Clip at the float32 bounds.
        low, high = float(np.float32(KERAS_EPSILON)), float(np.float32(1.0 - KERAS_EPSILON))
        p = np.clip(activate(z, head_activation), low, high)
        per_label = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    else:
        raise ValueError(f"a multi-label head takes sigmoid, linear or tanh, not {head_activation!r}")
    return per_label.mean(axis=1)
