"""Every task type trains end to end: multi-label ChestMNIST (label bits, per-finding sigmoids, Keras
`binary_crossentropy`) in both frameworks, binary and ordinal files as multi-class; label validation."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_arrays, write_npz
from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.data import load_experiment_data, load_npz, one_hot
from ftmed_core.errors import DataError
from ftmed_core.records import load_labels, load_probabilities
from ftmed_core.synth import write_synthetic

RUNTIME = RuntimeConfig(threads=1, progress=False)


@pytest.fixture(scope="module")
def chest_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("chest")
    write_synthetic(out, "chestmnist", 28, scale=0.01, seed=0)
    return out


def test_multi_label_files_keep_their_label_bits(chest_dir):
    raw = load_npz(chest_dir / "chestmnist.npz", "chestmnist", 28)
    assert all(labels.shape[1:] == (14,) and labels.dtype == np.int64 for labels in raw.labels.values())
    assert set(np.unique(raw.labels["train"])) <= {0, 1}
    data = load_experiment_data(ExperimentConfig(dataset="chestmnist", data_dir=str(chest_dir)))
    assert data.y_train.shape == (len(data.train), 14) and data.n_classes == 14
    bits = data.y_test[:5]
    assert np.array_equal(one_hot(bits, 14), bits.astype(np.float32))  # Keras's targets: the bits as they are


@pytest.mark.parametrize("labels, message", [
    (lambda n: np.full((n, 14), 2, np.uint8), r"must be 0 or 1 \(one bit per finding\), got values in \[2, 2\]"),
    (lambda n: np.zeros((n, 1), np.uint8), r"must be \(N, 14\) label bits for chestmnist"),
    (lambda n: np.zeros((n, 14), np.float32), "must be integers"),
])
def test_bad_multi_label_labels_are_one_clear_error(tmp_path, labels, message):
    arrays = tiny_arrays(channels=1)
    for split in ("train", "val", "test"):
        arrays[f"{split}_labels"] = labels(len(arrays[f"{split}_images"]))
    path = write_npz(tmp_path / "chestmnist.npz", **arrays)
    with pytest.raises(DataError, match=message) as info:
        load_npz(path, "chestmnist", 28)
    assert "\n" not in str(info.value) and "train_labels" in str(info.value)


def _medmnist_metrics(run_dir, task):
    from medmnist.evaluator import getACC, getAUC

    probabilities, labels = load_probabilities(run_dir), load_labels(run_dir)
    return getACC(labels, probabilities, task), getAUC(labels, probabilities, task)


def test_chestmnist_trains_in_both_frameworks_with_medmnist_metrics(chest_dir, tmp_path):
    import keras_ref
    import lightning_ft

    config = ExperimentConfig(dataset="chestmnist", data_dir=str(chest_dir), epochs=2)
    records = {name: module.train(config, runs_dir=tmp_path, runtime=RUNTIME)
               for name, module in (("lightning", lightning_ft), ("keras", keras_ref))}
    for name, record in records.items():
        assert record.finished, record.error
        run_dir = tmp_path / record.run_key
        assert load_probabilities(run_dir).shape == load_labels(run_dir).shape == (record.test["n"], 14)
        accuracy, auc = _medmnist_metrics(run_dir, "multi-label, binary-class")
        assert record.test["accuracy"] == pytest.approx(accuracy, abs=1e-12)
        assert record.test["auc"] == pytest.approx(auc, abs=1e-12)
        assert 0.5 < record.test["auc"] <= 1.0  # learnt something: chance is 0.5
    # Same weights, batches and loss definition: the frameworks agree to float32 rounding after 2 epochs.
    lightning, keras = records["lightning"], records["keras"]
    for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
        assert np.allclose(lightning.history[key], keras.history[key], atol=1e-4), key
    assert abs(lightning.test["loss"] - keras.test["loss"]) < 1e-4


def test_the_block_path_trains_multi_label_bitwise_like_the_plain_path(chest_dir, tmp_path):
    import lightning_ft

    config = ExperimentConfig(dataset="chestmnist", data_dir=str(chest_dir), epochs=2)
    plain = lightning_ft.train(config, runs_dir=tmp_path / "plain", runtime=RUNTIME)
    blocks = lightning_ft.train(config, runs_dir=tmp_path / "blocks",
                                runtime=RuntimeConfig(threads=1, progress=False, steps_per_execution=4))
    assert blocks.environment["training_path"].startswith("blocks of 4 steps")
    assert blocks.history["train_loss"] == plain.history["train_loss"]
    assert blocks.history["train_acc"] == plain.history["train_acc"]
    assert np.array_equal(load_probabilities(tmp_path / "blocks" / blocks.run_key),
                          load_probabilities(tmp_path / "plain" / plain.run_key))


@pytest.mark.parametrize("flag, task, n_classes", [("pneumoniamnist", "binary-class", 2),
                                                    ("retinamnist", "ordinal-regression", 5)])
def test_binary_and_ordinal_files_train_as_multi_class(tmp_path, flag, task, n_classes):
    import lightning_ft

    write_synthetic(tmp_path, flag, 28, scale=0.05 if flag == "pneumoniamnist" else 0.2, seed=0)
    record = lightning_ft.train(ExperimentConfig(dataset=flag, data_dir=str(tmp_path), epochs=1),
                                runs_dir=tmp_path / "runs", runtime=RUNTIME)
    assert record.finished, record.error
    run_dir = tmp_path / "runs" / record.run_key
    assert load_probabilities(run_dir).shape == (record.test["n"], n_classes)
    assert load_labels(run_dir).ndim == 1
    accuracy, auc = _medmnist_metrics(run_dir, task)
    assert record.test["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert record.test["auc"] == pytest.approx(auc, abs=1e-12)  # binary: the last column's; ordinal: per class
