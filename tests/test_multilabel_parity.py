"""Multi-label head: Keras's binary_crossentropy and the torch port agree; planted bugs are caught."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftmed_core.tasks import MULTI_CLASS, MULTI_LABEL, head_activation, trained_as
from ftmed_parity.multilabel import HEADS, judge, measure


def test_task_mapping_is_decided_once():
    assert trained_as("binary-class") == trained_as("ordinal-regression") == MULTI_CLASS
    assert trained_as("multi-label, binary-class") == MULTI_LABEL
    assert head_activation("multi-label, binary-class", "softmax") == "sigmoid"
    assert head_activation("binary-class", "sigmoid") == "sigmoid"
    with pytest.raises(ValueError, match="unknown MedMNIST task"):
        trained_as("regression")


@pytest.fixture(scope="module")
def measured():
    return {head: measure(head) for head in HEADS}


@pytest.mark.parametrize("head", HEADS)
def test_multilabel_parity_passes(measured, head):
    verdicts = judge(measured[head])
    assert all(v[2] == "pass" for v in verdicts.values()), verdicts


def _no_clip(logits, targets, head):
    from lightning_ft.losses import activate

    p = activate(logits, head) if head != "sigmoid" else torch.sigmoid(logits)
    t = targets.to(logits.dtype)
    return (-(t * torch.log(p + 1e-7) + (1 - t) * torch.log(1 - p + 1e-7))).mean()


def _sum_over_labels(logits, targets, head):
    from lightning_ft.losses import multilabel_per_sample_loss

    return (multilabel_per_sample_loss(logits, targets, head) * targets.shape[1]).mean() / 1.5


@pytest.mark.parametrize("mutant,head,failing", [
    (_no_clip, "linear", {"ml.loss"}),       # eps added instead of clipping: Keras's exact formula matters
    (_no_clip, "sigmoid", {"ml.loss"}),      # the probability path instead of Keras's logits shortcut
    (_sum_over_labels, "sigmoid", {"ml.loss", "ml.grad", "ml.step"}),
])
def test_planted_loss_bugs_fail(mutant, head, failing):
    verdicts = judge(measure(head, torch_loss=mutant))
    assert failing <= {k for k, v in verdicts.items() if v[2] == "FAIL"}, verdicts


def test_planted_metric_bugs_fail():
    def exact_match(scores, targets):  # subset accuracy: a different definition than medmnist's
        return float(np.mean(((np.asarray(scores) > 0.5) == targets).all(axis=1)))

    def micro_auc(scores, targets):
        from sklearn.metrics import roc_auc_score
        return float(roc_auc_score(np.asarray(targets).ravel(), np.asarray(scores).ravel()))

    assert judge(measure("sigmoid", accuracy=exact_match))["ml.metrics"][2] == "FAIL"
    assert judge(measure("sigmoid", auc=micro_auc))["ml.metrics"][2] == "FAIL"
