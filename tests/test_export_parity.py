"""Parity layer 9 (export): passes as shipped, and fails when a bug is planted in the exporters themselves
-- the functions `ftmed export` runs -- not in the numbers handed to the checks."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from ftmed_parity.checks import PASS, run_checks
from ftmed_parity.export import GRAPHS, export_checks
from ftmed_parity.suite import DEFAULT_LAYERS, LAYERS, layer_checks


def _layer() -> dict:
    """{(check id, subject): result} for one run of the layer."""
    return {(r.check_id, r.subject): r for r in run_checks(export_checks())}


def _failed(results: dict) -> set:
    return {key for key, r in results.items() if r.failed}


def test_the_layer_is_registered_and_runs_by_default():
    assert LAYERS[9].startswith("export") and 9 in DEFAULT_LAYERS
    assert {c.id for c in layer_checks(9)} == {"export.logits", "export.probs", "export.accuracy", "export.cross"}


def test_the_shipped_exporters_pass():
    results = _layer()
    assert len(results) == 3 * len(GRAPHS) + 1
    assert all(r.verdict == PASS for r in results.values()), [(k, r.note) for k, r in results.items()]
    logits = results[("export.logits", "graph=lightning")]
    assert logits.value < logits.tolerance / 10  # measured far inside the declared bound


@pytest.mark.slow
def test_a_transposed_kernel_fails(monkeypatch):
    """The first kernel read in the wrong layout (transposed, then reshaped to fit) by the Lightning export."""
    import torch

    from lightning_ft import export as lightning_export

    load = lightning_export.load_checkpoint

    def transposed(path):
        model = load(path)
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        with torch.no_grad():
            first.weight.copy_(first.weight.T.reshape(first.weight.shape))
        return model

    monkeypatch.setattr(lightning_export, "load_checkpoint", transposed)
    failed = _failed(_layer())
    assert {("export.logits", "graph=lightning"), ("export.logits", "graph=lightning uint8"),
            ("export.cross", "run=baseline, 1 epoch")} <= failed
    assert not any(subject.startswith("graph=keras") for _, subject in failed)


@pytest.mark.slow
def test_a_missing_division_by_255_in_the_preprocessing_graph_fails(monkeypatch):
    """The Keras with-preprocessing graph casts and flattens but does not divide."""
    from keras_ref import export as keras_export

    monkeypatch.setattr(keras_export, "preprocess", lambda images, input_dim: keras_export.keras.ops.reshape(
        keras_export.keras.ops.cast(images, "float32"), (-1, input_dim)))
    failed = _failed(_layer())
    assert ("export.logits", "graph=keras uint8") in failed
    assert {s for _, s in failed} == {"graph=keras uint8"}  # the float32-input graphs are untouched


@pytest.mark.slow
def test_softmax_applied_twice_fails(monkeypatch):
    """The Lightning graph applies softmax to its probabilities again: logits and argmax stay right, the
    probabilities do not."""
    import torch

    from lightning_ft import export as lightning_export

    monkeypatch.setitem(lightning_export.OUTPUT_ACTIVATIONS, "softmax",
                        lambda z: torch.softmax(torch.softmax(z, dim=1), dim=1))
    results = _layer()
    failed = _failed(results)
    assert {("export.probs", "graph=lightning"), ("export.probs", "graph=lightning uint8")} == failed
    assert results[("export.accuracy", "graph=lightning")].value == 0  # only the probabilities check sees it
    assert np.isfinite(results[("export.probs", "graph=lightning")].value)


def test_without_the_export_extra_the_default_leaves_layer_9_out_and_asking_for_it_is_one_line(monkeypatch, capsys):
    from cli.parity import parse_layers
    from ftmed_core.errors import ConfigError
    from ftmed_parity import export

    monkeypatch.setattr(export, "missing_packages", lambda: ["onnxruntime"])
    assert parse_layers(None, statistical=False) == (1, 2, 3, 4, 5, 6, 7)
    assert "layer 9 (export) left out: onnxruntime not installed" in capsys.readouterr().err
    assert parse_layers(None, statistical=True) == (1, 2, 3, 4, 5, 6, 7, 8)
    with pytest.raises(ConfigError, match=r"layer 9 \(export\) needs onnxruntime: pip install 'ftmed\[export\]'"):
        parse_layers("1,9", statistical=False)
    monkeypatch.setattr(export, "missing_packages", lambda: [])
    assert parse_layers(None, statistical=False) == (1, 2, 3, 4, 5, 6, 7, 9)
    assert parse_layers("9", statistical=False) == (9,)
