"""Multi-label head: Keras's binary_crossentropy and the torch port agree; planted bugs are caught."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftmed_core.tasks import MULTI_CLASS, MULTI_LABEL, head_activation, trained_as
from ftmed_parity.checks import run_checks
from ftmed_parity.multilabel import multilabel_checks
from ftmed_parity.suite import layer_checks, tolerance_table


def test_task_mapping_is_decided_once():
    assert trained_as("binary-class") == trained_as("ordinal-regression") == MULTI_CLASS
    assert trained_as("multi-label, binary-class") == MULTI_LABEL
    assert head_activation("multi-label, binary-class", "softmax") == "sigmoid"
    assert head_activation("binary-class", "sigmoid") == "sigmoid"
    with pytest.raises(ValueError, match="unknown MedMNIST task"):
        trained_as("regression")


def _rows(layers=(4, 5, 6), **planted) -> dict:
    """{(check id, head): Result} of the multi-label rows, as `ftmed parity` runs them."""
    checks = [c for layer in layers for c in multilabel_checks(layer, **planted)]
    return {(r.check_id, r.subject.split("=")[1]): r for r in run_checks(checks)}


def test_the_multi_label_rows_are_registered_in_the_suite():
    ids = {layer: {c.id for c in layer_checks(layer) if c.id.startswith("ml.")} for layer in (3, 4, 5, 6, 7)}
    assert ids == {3: set(), 4: {"ml.loss", "ml.loss.ref", "ml.metrics"}, 5: {"ml.grad", "ml.grad.signed"},
                   6: {"ml.step"}, 7: set()}
    rows = {row[0] for row in tolerance_table((4, 5, 6))}
    assert {"ml.loss", "ml.grad", "ml.step", "ml.metrics"} <= rows


@pytest.fixture(scope="module")
def rows():
    return _rows()


def test_multilabel_parity_passes(rows):
    assert len(rows) == 3 * 3 + 3 + 3  # loss, ref, metrics x 3 heads; gradients x 3 heads; steps x 3 heads
    assert all(r.verdict == "pass" for r in rows.values()), {k: (r.value, r.tolerance, r.note) for k, r in rows.items()}


def _no_clip(logits, targets, head):
    from lightning_ft.losses import activate

    p = activate(logits, head) if head != "sigmoid" else torch.sigmoid(logits)
    t = targets.to(logits.dtype)
    return (-(t * torch.log(p + 1e-7) + (1 - t) * torch.log(1 - p + 1e-7))).mean()


def _sum_over_labels(logits, targets, head):
    from lightning_ft.losses import multilabel_per_sample_loss

    return (multilabel_per_sample_loss(logits, targets, head) * targets.shape[1]).mean() / 1.5


def _mean_over_rows_first(logits, targets, head):
    """Keras's mean over labels then rows, but weighting each label by its own positives: a wrong axis."""
    from lightning_ft.losses import multilabel_per_sample_loss

    per_row = multilabel_per_sample_loss(logits, targets, head)
    t = targets.to(logits.dtype)
    return (per_row[:, None] * t).sum(dim=0).div(t.sum(dim=0).clamp(min=1)).mean()


@pytest.mark.parametrize("mutant,head,failing", [
    (_no_clip, "linear", {"ml.loss"}),       # eps added instead of clipping: Keras's exact formula matters
    (_no_clip, "sigmoid", {"ml.loss"}),      # the probability path instead of Keras's logits shortcut
    (_sum_over_labels, "sigmoid", {"ml.loss", "ml.grad", "ml.step"}),
    (_mean_over_rows_first, "sigmoid", {"ml.loss", "ml.grad", "ml.step"}),
])
def test_planted_loss_bugs_fail_their_rows(mutant, head, failing):
    rows = _rows(torch_loss=mutant)
    failed = {check for (check, h), r in rows.items() if h == head and r.verdict == "FAIL"}
    assert failing <= failed, {k: (r.value, r.tolerance) for k, r in rows.items() if k[1] == head}


def test_planted_metric_bugs_fail_their_row():
    def exact_match(scores, targets):  # subset accuracy: a different definition than medmnist's
        return float(np.mean(((np.asarray(scores) > 0.5) == targets).all(axis=1)))

    def micro_auc(scores, targets):
        from sklearn.metrics import roc_auc_score
        return float(roc_auc_score(np.asarray(targets).ravel(), np.asarray(scores).ravel()))

    for planted in ({"accuracy": exact_match}, {"auc": micro_auc}):
        rows = _rows(layers=(4,), **planted)
        assert rows[("ml.metrics", "sigmoid")].verdict == "FAIL", planted
        assert rows[("ml.loss", "sigmoid")].verdict == "pass"  # only the metric row
