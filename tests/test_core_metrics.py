"""Core test metrics on sklearn.metrics: the confusion matrix and AUC's undefined case."""

from __future__ import annotations

import math

import numpy as np

from ftmed_core.metrics import auc, confusion_matrix


def test_confusion_matrix_counts_true_by_predicted_with_every_class():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    expected = np.zeros((4, 4), dtype=np.int64)  # class 3 never occurs: its row and column stay zero
    for t, p in zip(labels, predicted):
        expected[t, p] += 1
    got = confusion_matrix(predicted, labels.reshape(-1, 1), 4)
    assert got.dtype == np.int64 and got.shape == (4, 4)
    np.testing.assert_array_equal(got, expected)


def test_auc_is_nan_not_an_error_when_a_class_is_absent():
    scores = np.random.default_rng(0).random((6, 3))
    assert math.isnan(auc(scores, np.array([0, 1, 0, 1, 0, 1])))  # class 2 absent: its one-vs-rest AUC
    assert math.isnan(auc(scores[:, :2], np.ones(6, dtype=int), "binary-class"))
