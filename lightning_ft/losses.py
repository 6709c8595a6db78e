"""The loss and accuracy Keras computes, in torch: the same definition as the numpy reference
`ftmed_core.losses` (read its docstring for the Keras facts behind it).

- `loss="keras"` with a softmax or sigmoid output: softmax cross-entropy on the logits (what Keras 3 on
  TensorFlow does: the activation attaches its logits to the output). A sigmoid output trains exactly like
  softmax; only the reported probabilities differ.
- otherwise: p = activated / sum(activated) (no epsilon), clipped to [1e-7, 1 - 1e-7], -log p[label].
- mean over the batch (Keras: sum / batch size).
Accuracy is the argmax of the *activated* output (first index on ties), as in Keras.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ftmed_core.losses import KERAS_EPSILON, uses_logits

OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "linear", "tanh")


def activate(logits: torch.Tensor, output_activation: str) -> torch.Tensor:
    if output_activation == "softmax":
        return torch.softmax(logits, dim=1)
    if output_activation == "sigmoid":
        return torch.sigmoid(logits)
    if output_activation == "linear":
        return logits
    if output_activation == "tanh":
        return torch.tanh(logits)
    raise ValueError(f"unknown output activation {output_activation!r}; choose one of: {', '.join(OUTPUT_ACTIVATIONS)}")


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor, output_activation: str, loss_mode: str) -> torch.Tensor:
    if loss_mode not in ("keras", "probability"):
        raise ValueError(f"unknown loss mode {loss_mode!r}; choose one of: keras, probability")
    if uses_logits(output_activation, loss_mode):
        return F.cross_entropy(logits, labels, reduction="none")
    p = activate(logits, output_activation)
    p = p / p.sum(dim=1, keepdim=True)
    p = p.clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    return -torch.log(p.gather(1, labels.view(-1, 1)).squeeze(1))


def keras_loss(logits: torch.Tensor, labels: torch.Tensor, output_activation: str, loss_mode: str) -> torch.Tensor:
    """Scalar mean loss over the batch, as Keras's `categorical_crossentropy` computes it."""
    return per_sample_loss(logits, labels, output_activation, loss_mode).mean()


def correct_count(logits: torch.Tensor, labels: torch.Tensor, output_activation: str) -> torch.Tensor:
    """How many rows the argmax of the activated output gets right (first index wins ties)."""
    return (activate(logits, output_activation).argmax(dim=1) == labels).sum()


def multilabel_per_sample_loss(logits: torch.Tensor, targets: torch.Tensor, head_activation: str,
                               loss_mode: str = "keras") -> torch.Tensor:
    """Keras's `binary_crossentropy` per row (mean over the labels), as `ftmed_core.losses` defines it:
    on the logits for a sigmoid head under `loss_mode="keras"` (`binary_cross_entropy_with_logits`, the same
    stable formula as TF's `sigmoid_cross_entropy_with_logits`), else on the activated output clipped to
    [1e-7, 1 - 1e-7] (as float32 bounds, like Keras's clip of a float32 tensor)."""
    if loss_mode not in ("keras", "probability"):
        raise ValueError(f"unknown loss mode {loss_mode!r}; choose one of: keras, probability")
    targets = targets.to(logits.dtype)
    if head_activation == "sigmoid" and loss_mode == "keras":
        per_label = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    elif head_activation in ("sigmoid", "linear", "tanh"):
        p = activate(logits, head_activation).clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)
        per_label = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    else:
        raise ValueError(f"a multi-label head takes sigmoid, linear or tanh, not {head_activation!r}")
    return per_label.mean(dim=1)


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor, head_activation: str,
                    loss_mode: str = "keras") -> torch.Tensor:
    """Scalar mean over the batch (Keras: sum / batch size)."""
    return multilabel_per_sample_loss(logits, targets, head_activation, loss_mode).mean()


def multilabel_correct(logits: torch.Tensor, targets: torch.Tensor, head_activation: str) -> torch.Tensor:
    """Per batch, the sum over rows of the share of a row's labels right at threshold 0.5 on the activated
    head (`p > 0.5`, medmnist's getACC; Keras's `BinaryAccuracy` averages the same bits). Divided by the
    rows it is the batch's multi-label accuracy, so the epoch sums stay (loss * rows, correct, rows)."""
    hits = (activate(logits, head_activation) > 0.5) == (targets > 0.5)
    return hits.to(torch.float64).mean(dim=1).sum()


def task_loss(logits: torch.Tensor, labels: torch.Tensor, output_activation: str, loss_mode: str,
              multi_label: bool) -> torch.Tensor:
    """The training loss of either task type: `keras_loss` (class indices) or `multilabel_loss` (label bits,
    `output_activation` being the head's, see `ftmed_core.tasks.head_activation`)."""
    if multi_label:
        return multilabel_loss(logits, labels, output_activation, loss_mode)
    return keras_loss(logits, labels, output_activation, loss_mode)


def task_correct(logits: torch.Tensor, labels: torch.Tensor, output_activation: str, multi_label: bool) -> torch.Tensor:
    """Rows right (multi-class: argmax) or the summed per-row share of labels right (multi-label)."""
    if multi_label:
        return multilabel_correct(logits, labels, output_activation)
    return correct_count(logits, labels, output_activation)
