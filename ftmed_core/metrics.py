"""Test metrics, computed once in the core from each framework's test outputs.

AUC is medmnist's `Evaluator` (`medmnist.evaluator.getAUC`), with the same sklearn call: for multi-class
and ordinal tasks, the mean over classes of `sklearn.metrics.roc_auc_score` of that class's one-vs-rest
score column; for binary tasks, the AUC of the last column. One difference: a class absent from the test
labels gives NaN (shown as "n/a") where sklearn would raise. Accuracy is the argmax's (Keras's
`categorical_accuracy`, = medmnist's getACC for multi-class). The confusion matrix is sklearn's.
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
    """accuracy, loss and AUC of one run's test-set logits, plus the probabilities they came from."""
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
