"""Test metrics, computed once in the core from each framework's test outputs.

AUC follows medmnist's `Evaluator` (`getAUC`): for multi-class and ordinal tasks, the mean over classes of
the one-vs-rest ROC AUC of that class's score column; for binary tasks, the AUC of the last column.
Implemented with ranks (Mann-Whitney U, ties averaged), which equals sklearn's `roc_auc_score`.
"""

from __future__ import annotations

import numpy as np

from ftmed_core.losses import activate, mean_loss


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose argmax (first index on ties, like Keras and numpy) is the label."""
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(labels)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    # Tied runs share the mean of the ranks they span.
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate(([0], boundaries))
    stops = np.concatenate((boundaries, [len(values)]))
    mean_rank = (starts + stops + 1) / 2.0  # ranks are 1-based
    ranks[order] = np.repeat(mean_rank, stops - starts)
    return ranks


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")  # undefined; sklearn raises here, a report shows "n/a"
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


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
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix
