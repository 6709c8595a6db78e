"""Test metrics, computed once in the core from each framework's test outputs.

AUC is medmnist's `Evaluator` (`medmnist.evaluator.getAUC`), with the same sklearn call: for multi-class
and ordinal tasks, the mean over classes of `sklearn.metrics.roc_auc_score` of that class's one-vs-rest
score column; for binary tasks, the AUC of the last column. One difference: a class absent from the test
labels gives NaN (shown as "n/a") where sklearn would raise. Accuracy is the argmax's (Keras's
`categorical_accuracy`, = medmnist's getACC for multi-class). The confusion matrix is sklearn's.
Multi-label (ChestMNIST): `multilabel_accuracy` and `multilabel_auc`, medmnist's getACC/getAUC for
"multi-label, binary-class" (per-label means); `test_metrics` picks them from the task.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from ftmed_core.losses import activate, mean_loss


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose argmax (first index on ties, like Keras and numpy) is the label."""
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(labels)))


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of `scores` for the rows flagged `positive`; NaN when only one class is present."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")  # undefined; sklearn raises here, a report shows "n/a"
    return float(skm.roc_auc_score(positive.astype(float), np.asarray(scores, dtype=np.float64)))


def auc(scores: np.ndarray, labels: np.ndarray, task: str = "multi-class") -> float:
    scores = np.asarray(scores)
    labels = np.asarray(labels).reshape(-1)
    if task == "binary-class":
        return binary_auc(labels == 1, scores[:, -1])
    return float(np.mean([binary_auc(labels == c, scores[:, c]) for c in range(scores.shape[1])]))


def test_metrics(logits: np.ndarray, labels: np.ndarray, output_activation: str, loss: str,
                 task: str = "multi-class") -> dict:
    """accuracy, loss and AUC of one run's test-set logits, plus the probabilities they came from.

    `task` is medmnist's task name; a multi-label one goes to `multilabel_test_metrics` with the head
    activation the task maps `output_activation` to (`ftmed_core.tasks.head_activation`)."""
    from ftmed_core.tasks import MULTI_LABEL, head_activation, trained_as

    if trained_as(task) == MULTI_LABEL:
        return multilabel_test_metrics(logits, labels, head_activation(task, output_activation), loss)
    probabilities = activate(logits, output_activation).astype(np.float32)
    return {
        "accuracy": accuracy(probabilities, labels),
        "loss": mean_loss(logits, labels, output_activation, loss),
        "auc": auc(probabilities, labels, task),
        "n": int(len(labels)),
    }, probabilities


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, rows = true label, columns = predicted (sklearn's layout)."""
    return skm.confusion_matrix(np.asarray(labels).reshape(-1), np.asarray(predicted).reshape(-1),
                                labels=np.arange(n_classes)).astype(np.int64)


def multilabel_accuracy(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> float:
    """medmnist's getACC for "multi-label, binary-class": the mean over labels of the share of rows whose
    `score > threshold` equals the label bit (= the share of all (row, label) bits right)."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    return float(np.mean([np.mean((scores[:, j] > threshold) == (targets[:, j] == 1))
                          for j in range(targets.shape[1])]))


def multilabel_auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """medmnist's getAUC for "multi-label, binary-class": the mean over labels of each label's ROC AUC.
    A label with only one value in the test rows gives NaN (sklearn would raise)."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    return float(np.mean([binary_auc(targets[:, j] == 1, scores[:, j]) for j in range(targets.shape[1])]))


def multilabel_test_metrics(logits: np.ndarray, targets: np.ndarray, head_activation: str,
                            loss: str = "keras") -> tuple[dict, np.ndarray]:
    """accuracy, loss (Keras `binary_crossentropy` in the `loss` formula) and AUC of a multi-label head's
    test logits, plus the probabilities (the activated head) they came from."""
    from ftmed_core.losses import multilabel_per_sample_loss

    probabilities = activate(logits, head_activation).astype(np.float32)
    return {
        "accuracy": multilabel_accuracy(probabilities, targets),
        "loss": float(multilabel_per_sample_loss(logits, targets, head_activation, loss).mean()),
        "auc": multilabel_auc(probabilities, targets),
        "n": int(len(targets)),
    }, probabilities
