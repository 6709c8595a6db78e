"""keras_ref.training end to end on small generated data: learning, the record, the saved model, seeds, failures."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest

import keras_ref
from keras_ref._backend import keras
from ftmed_core.config import ExperimentConfig, RuntimeConfig
from ftmed_core.data import Split, load_experiment_data
from ftmed_core.records import HISTORY_KEYS, read_record
from keras_ref.model import get_weights, predict_logits

RUNTIME = RuntimeConfig(progress=False)


@pytest.fixture(scope="module")
def trained(synth_dir, tmp_path_factory):
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=2)
    run_dir = tmp_path_factory.mktemp("keras_run")
    seen = []
    record = keras_ref.train(config, run_dir=run_dir, runtime=RUNTIME,
                             on_epoch=lambda epoch, total, values: seen.append((epoch, total, values)))
    return config, run_dir, record, seen


def test_two_epochs_learn_well_above_chance(trained):
    _, _, record, _ = trained
    assert record.status == "finished", record.error
    assert record.test["accuracy"] > 0.4  # chance is 1/9; synthetic data reaches ~0.6
    assert record.history["val_acc"][-1] > 0.4
    assert record.history["train_loss"][1] < record.history["train_loss"][0]


def test_the_record_is_complete(trained):
    config, run_dir, record, seen = trained
    assert read_record(run_dir).to_dict() == record.to_dict()
    assert record.framework == "keras" and record.run_key.startswith("keras-")
    assert set(record.history) == set(HISTORY_KEYS)
    assert all(len(record.history[key]) == 2 for key in HISTORY_KEYS)
    assert all(np.isfinite(record.history[key]).all() for key in HISTORY_KEYS)
    assert set(record.test) >= {"accuracy", "loss", "auc", "n"} and record.test["n"] == 215
    assert record.training_seconds > 0 and record.parameter_count == 2352 * 512 + 512 + 512 * 256 + 256 + 256 * 128 + 128 + 128 * 9 + 9
    env = record.environment
    assert env["tensorflow"] and env["keras"] and env["keras_backend"] == "tensorflow"
    assert env["device"] == "cpu" and env["threads_requested"] >= 1 and env["op_determinism"] is True
    # The record states the threads in force: what was asked for, unless another test in this process
    # initialized TensorFlow before the first fit (then TF's own value, which cannot change any more).
    from keras_ref._backend import tf

    assert env["threads"] == tf.config.threading.get_intra_op_parallelism_threads()
    assert [(epoch, total) for epoch, total, _ in seen] == [(1, 2), (2, 2)]
    assert seen[-1][2]["val_loss"] == record.history["val_loss"][-1]
    for name in ("model.keras", "keras_log.csv", "test_logits.npy", "test_probabilities.npy", "history.csv"):
        assert (run_dir / name).is_file(), name
    with open(run_dir / "keras_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and float(rows[1]["val_loss"]) == pytest.approx(record.history["val_loss"][1])


def test_saved_model_reloads_with_identical_predictions(trained):
    config, run_dir, _, _ = trained
    model = keras.saving.load_model(run_dir / "model.keras")
    data = load_experiment_data(config)
    np.testing.assert_array_equal(predict_logits(model, data.x_test), np.load(run_dir / "test_logits.npy"))


def test_a_finished_run_is_reused(trained):
    config, run_dir, record, _ = trained
    again = keras_ref.train(config, run_dir=run_dir, runtime=RUNTIME)
    assert again.started_at == record.started_at


@pytest.mark.slow
def test_same_seed_twice_gives_identical_weights(trained, tmp_path):
    config, run_dir, record, _ = trained
    again = keras_ref.train(config, run_dir=tmp_path / "again", runtime=RUNTIME)
    assert again.history == {k: v for k, v in record.history.items() if k != "epoch_seconds"} | {
        "epoch_seconds": again.history["epoch_seconds"]}
    first = get_weights(keras.saving.load_model(run_dir / "model.keras"))
    second = get_weights(keras.saving.load_model(tmp_path / "again" / "model.keras"))
    for (k1, b1), (k2, b2) in zip(first, second):
        np.testing.assert_array_equal(k1, k2)
        np.testing.assert_array_equal(b1, b2)


def test_probability_loss_model_trains_saves_and_reloads(synth_dir, tmp_path):
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=1, hidden_units=(64,), loss="probability",
                              output_activation="sigmoid")
    record = keras_ref.train(config, run_dir=tmp_path, runtime=RUNTIME)
    assert record.status == "finished", record.error
    model = keras.saving.load_model(tmp_path / "model.keras")  # the custom loss is registered
    data = load_experiment_data(config)
    np.testing.assert_array_equal(predict_logits(model, data.x_test), np.load(tmp_path / "test_logits.npy"))


def test_non_finite_loss_is_a_failed_record(synth_dir, tmp_path):
    # tanh keeps a NaN input NaN (relu on CPU maps NaN to 0 and would hide it).
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=2, hidden_units=(16,), hidden_activation="tanh")
    data = load_experiment_data(config)
    x_train = data.x_train.copy()
    x_train[5, 0] = np.nan
    nan_train = replace(data, train=Split(x_train, data.y_train))  # float32 features are fed as they are
    record = keras_ref.train(config, run_dir=tmp_path, runtime=RUNTIME, data=nan_train)
    assert record.status == "failed"
    assert "NonFiniteLoss" in record.error and "epoch 1" in record.error
    stored = read_record(tmp_path)
    assert stored.status == "failed"
    assert len(stored.history["train_loss"]) == 1 and stored.history["train_loss"][0] is None


def test_unsupported_runtime_is_a_clear_error(synth_dir, tmp_path):
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=1, hidden_units=(8,))
    record = keras_ref.train(config, run_dir=tmp_path, runtime=RuntimeConfig(accelerator="mps"))
    assert record.status == "failed" and "mps" in record.error


def test_mixed_precision_run_finishes_with_float32_logits(synth_dir, tmp_path):
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=1, hidden_units=(32,))
    record = keras_ref.train(config, run_dir=tmp_path, runtime=RuntimeConfig(precision="bf16-mixed", progress=False))
    assert record.status == "finished", record.error
    assert record.run_key.endswith("-bf16-mixed")
    assert np.load(tmp_path / "test_logits.npy").dtype == np.float32
    assert keras.saving.load_model(tmp_path / "model.keras").layers[0].dtype_policy.name == "mixed_bfloat16"


@pytest.mark.slow
def test_tensorboard_logging_writes_events(small_config, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        pytest.skip("tensorboard not installed")
    record = keras_ref.train(replace(small_config, epochs=1), run_dir=tmp_path / "run",
                             runtime=RuntimeConfig(threads=1, tensorboard=True))
    assert record.finished
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
