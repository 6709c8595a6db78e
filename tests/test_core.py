"""Configs, registry, initial weights, batch order, metrics, records and the neutral-import rule."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from ftmed_core.config import ExperimentConfig, RuntimeConfig, optimizer_config, parse_hidden
from ftmed_core.errors import ConfigError, RunError
from ftmed_core.losses import mean_loss
from ftmed_core.metrics import accuracy, auc
from ftmed_core.protocol import batch_bounds, epoch_permutation, initial_weights, parameter_count
from ftmed_core.records import RunRecord, list_records, read_record, run_key, write_record
from ftmed_core.runner import FitResult, NonFiniteLoss, run_experiment
from ftmed_core.variants import BASELINE, STUDY, VARIANTS, select_variants
from ftmed_core.weights_io import load_weights, save_weights


def test_study_variants_are_exactly_the_study():
    assert STUDY == ("baseline", "sigmoid-output", "lr-1e-4", "sgd-momentum", "wider-deeper")
    b = VARIANTS["baseline"].config
    assert (b.hidden_units, b.hidden_activation, b.output_activation) == ((512, 256, 128), "relu", "softmax")
    assert (b.optimizer.name, b.optimizer.learning_rate, b.batch_size, b.epochs) == ("adam", 1e-3, 128, 20)
    assert (b.val_mode, b.val_fraction, b.init) == ("holdout", 0.2, "glorot_uniform")
    assert VARIANTS["sigmoid-output"].config.output_activation == "sigmoid"
    assert VARIANTS["lr-1e-4"].config.optimizer.learning_rate == 1e-4
    sgd = VARIANTS["sgd-momentum"].config.optimizer
    assert (sgd.name, sgd.learning_rate, sgd.momentum, sgd.nesterov) == ("sgd", 1e-3, 0.9, False)
    assert VARIANTS["wider-deeper"].config.hidden_units == (1024, 512, 512, 256, 128)
    assert [VARIANTS[n].study_accuracy for n in STUDY] == [60.54, 58.02, 59.15, 58.93, 57.17]
    # Each study variant changes exactly one thing.
    for name in STUDY[1:]:
        assert VARIANTS[name].config.describe_changes(BASELINE).count("=") >= 1


def test_every_optimizer_has_a_variant_and_keras_defaults():
    names = {v.config.optimizer.name for v in VARIANTS.values()}
    assert names == {"sgd", "adam", "adamw", "adamax", "nadam", "rmsprop", "adagrad", "adadelta", "lion"}
    assert optimizer_config("sgd").learning_rate == 0.01
    assert optimizer_config("adadelta").learning_rate == 1e-3 and optimizer_config("adadelta").rho == 0.95
    assert optimizer_config("adamw").weight_decay == 0.004
    assert optimizer_config("adagrad").initial_accumulator_value == 0.1
    assert optimizer_config("adam").epsilon == 1e-7


def test_variant_selection():
    assert [v.name for v in select_variants("study")] == list(STUDY)
    assert [v.name for v in select_variants("baseline,rmsprop,baseline")] == ["baseline", "rmsprop"]
    assert len(select_variants("all")) == len(VARIANTS)
    with pytest.raises(ConfigError, match="unknown variant 'nope'"):
        select_variants("nope")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"hidden_units": ()}, "at least one layer"),
        ({"output_activation": "relu6"}, "choose one of: softmax"),
        ({"epochs": 0}, "epochs must be an integer from 1 to 100,000"),
        ({"val_mode": "random"}, "choose one of: holdout, official"),
        ({"optimizer": replace(optimizer_config("adam"), learning_rate=-1.0)}, "positive"),
        ({"size": 32}, "image size"),
    ],
)
def test_bad_configs_name_the_value_and_the_choices(changes, message):
    with pytest.raises(ConfigError, match=message):
        replace(BASELINE, **changes)


def test_parse_hidden_and_runtime_errors():
    assert parse_hidden("1024,512, 512") == (1024, 512, 512)
    for text in ("", "a,b", "512,-1"):
        with pytest.raises(ConfigError):
            parse_hidden(text)
    with pytest.raises(ConfigError, match="unknown accelerator 'tpu'"):
        RuntimeConfig(accelerator="tpu")
    with pytest.raises(ConfigError, match="unknown optimizer 'adamz'"):
        optimizer_config("adamz")


def test_config_round_trip_and_hash():
    config = VARIANTS["sgd-momentum"].config
    assert ExperimentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # Name and data location do not change what is computed; the seed and any knob do.
    assert replace(config, name="x", data_dir="/else").config_hash() == config.config_hash()
    assert replace(config, seed=1).config_hash() != config.config_hash()
    assert replace(config, batch_size=64).config_hash() != config.config_hash()


def test_initial_weights_glorot_uniform_reproducible_per_seed():
    a = initial_weights(BASELINE, 2352, 9)
    b = initial_weights(BASELINE, 2352, 9)
    c = initial_weights(replace(BASELINE, seed=1), 2352, 9)
    assert [k.shape for k, _ in a] == [(2352, 512), (512, 256), (256, 128), (128, 9)]
    for (ka, ba), (kb, bb), (kc, _) in zip(a, b, c):
        np.testing.assert_array_equal(ka, kb)
        assert not np.array_equal(ka, kc)
        assert ka.dtype == np.float32 and not ba.any()
        limit = np.sqrt(6 / sum(ka.shape))
        assert np.abs(ka).max() <= limit and np.abs(ka).max() > 0.95 * limit
        assert abs(ka.std() - limit / np.sqrt(3)) < 0.02 * limit
    torch_init = initial_weights(replace(BASELINE, init="torch_default"), 2352, 9)
    assert torch_init[0][1].any() and np.abs(torch_init[0][0]).max() <= 1 / np.sqrt(2352)
    assert parameter_count(BASELINE, 2352, 9) == sum(k.size + b.size for k, b in a) == 1_370_121


def test_batch_order_reproducible_per_seed_and_epoch():
    p0 = epoch_permutation(0, 0, 1000)
    assert sorted(p0) == list(range(1000))
    np.testing.assert_array_equal(p0, epoch_permutation(0, 0, 1000))
    assert not np.array_equal(p0, epoch_permutation(0, 1, 1000))  # a new order every epoch
    assert not np.array_equal(p0, epoch_permutation(1, 0, 1000))  # and per seed
    np.testing.assert_array_equal(epoch_permutation(0, 3, 10, shuffle=False), np.arange(10))
    bounds = batch_bounds(71996, 128)
    assert len(bounds) == 563 and bounds[-1] == (71936, 71996)  # last partial batch (60 rows) kept


def test_auc_equals_medmnist_evaluator(tmp_path):
    from medmnist.evaluator import getAUC, getACC

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 9, size=(500, 1))
    scores = rng.random((500, 9)).astype(np.float32)
    scores[np.arange(500), labels[:, 0]] += 0.3
    scores = np.round(scores, 2)  # ties, as saturated outputs produce
    assert auc(scores, labels) == pytest.approx(getAUC(labels, scores, "multi-class"), abs=1e-12)
    assert accuracy(scores, labels[:, 0]) == pytest.approx(getACC(labels, scores, "multi-class"))
    binary = rng.integers(0, 2, size=(200, 1))
    s2 = rng.random((200, 2))
    assert auc(s2, binary, "binary-class") == pytest.approx(getAUC(binary, s2, "binary-class"), abs=1e-12)


def test_accuracy_first_index_wins_ties():
    assert accuracy(np.array([[1.0, 1.0, 0.0]]), np.array([0])) == 1.0
    assert accuracy(np.array([[1.0, 1.0, 0.0]]), np.array([1])) == 0.0


def test_loss_reference_sigmoid_uses_logits_in_keras_mode():
    z = np.array([[2.0, -1.0, 0.5]])
    y = np.array([0])
    assert mean_loss(z, y, "sigmoid", "keras") == pytest.approx(mean_loss(z, y, "softmax", "keras"))
    p = 1 / (1 + np.exp(-z))
    literal = -np.log(p[0, 0] / p.sum())
    assert mean_loss(z, y, "sigmoid", "probability") == pytest.approx(literal)


def test_neutral_weights_file_round_trip(tmp_path):
    weights = initial_weights(BASELINE, 2352, 9)
    path = save_weights(tmp_path / "w.npz", weights, {"framework": "test"})
    loaded, meta = load_weights(path)
    assert meta["layer_sizes"] == [2352, 512, 256, 128, 9] and meta["framework"] == "test"
    for (a, b), (c, d) in zip(weights, loaded):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def _fake_fit(accuracy_boost=0.0, fail=None):
    """A stand-in for an adapter's fit: predicts the true class with a margin, for the runner's own tests."""

    def fit(config, runtime, data, weights, run_dir, on_epoch=None):
        if fail:
            raise fail
        logits = np.zeros((len(data.y_test), data.n_classes), dtype=np.float32)
        logits[np.arange(len(data.y_test)), data.y_test] = 1.0 + accuracy_boost
        history = {k: [0.5] * config.epochs for k in ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds")}
        return FitResult(history=history, test_logits=logits, training_seconds=0.1, environment={"fake": True})

    return fit


def test_runner_writes_complete_record_and_reuses_finished_runs(tiny_synth_dir, tmp_path):
    config = ExperimentConfig(data_dir=str(tiny_synth_dir), epochs=2)
    record = run_experiment("lightning", _fake_fit(), config, runs_dir=tmp_path)
    assert record.finished and record.test["accuracy"] == 1.0 and record.test["auc"] == 1.0
    run_dir = tmp_path / record.run_key
    assert (run_dir / "test_probabilities.npy").is_file() and (run_dir / "history.csv").is_file()
    assert record.data["synthetic"] and record.data["label"].startswith("SYNTHETIC")
    assert record.parameter_count == 1_370_121 and record.environment["fake"]
    assert record.run_key == run_key("lightning", config, record.data["md5"])
    # A finished identical run is reused, not retrained (the fit would fail if called).
    again = run_experiment("lightning", _fake_fit(fail=RuntimeError("must not run")), config, runs_dir=tmp_path)
    assert again.finished and again.started_at == record.started_at
    # force retrains but moves the old run aside rather than overwriting it.
    forced = run_experiment("lightning", _fake_fit(), config, runs_dir=tmp_path, force=True)
    assert forced.started_at != record.started_at
    assert len(list(tmp_path.glob(f"{record.run_key}.replaced-*"))) == 1


def test_runner_records_failures(tiny_synth_dir, tmp_path):
    config = ExperimentConfig(data_dir=str(tiny_synth_dir), epochs=1)
    record = run_experiment("keras", _fake_fit(fail=NonFiniteLoss(1, float("nan"))), config, runs_dir=tmp_path)
    assert record.status == "failed" and "non-finite train_loss" in record.error
    stored = read_record(tmp_path / record.run_key)
    assert stored.status == "failed" and not stored.finished
    assert [r.run_key for r in list_records(tmp_path)] == [record.run_key]


def test_corrupt_record_and_missing_runs_dir(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "record.json").write_text("{not json")
    with pytest.raises(RunError, match=r"record.json: is truncated or not JSON"):
        read_record(tmp_path / "r")
    with pytest.raises(RunError, match="does not exist"):
        list_records(tmp_path / "nope")


def test_record_json_has_no_nan(tmp_path):
    record = RunRecord(run_key="k", framework="keras", status="failed", config=BASELINE.to_dict(), runtime={},
                       history={"train_loss": [float("nan")]})
    write_record(tmp_path, record)
    json.loads((tmp_path / "record.json").read_text(), parse_constant=lambda c: pytest.fail(c))
