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


def multilabel_per_sample_loss(logits: torch.Tensor, targets: torch.Tensor, head_activation: str) -> torch.Tensor:
    """Keras's `binary_crossentropy` per row (mean over the labels), as `ftmed_core.losses` defines it:
    on the logits for a sigmoid head (`binary_cross_entropy_with_logits`, the same stable formula as TF's
    `sigmoid_cross_entropy_with_logits`), else on the activated output clipped to [1e-7, 1 - 1e-7]."""
    targets = targets.to(logits.dtype)
    if head_activation == "sigmoid":
        per_label = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    elif head_activation in ("linear", "tanh"):
        p = activate(logits, head_activation).clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)
        per_label = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    else:
        raise ValueError(f"a multi-label head takes sigmoid, linear or tanh, not {head_activation!r}")
    return per_label.mean(dim=1)


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor, head_activation: str) -> torch.Tensor:
    """Scalar mean over the batch (Keras: sum / batch size)."""
    return multilabel_per_sample_loss(logits, targets, head_activation).mean()
