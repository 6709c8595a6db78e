"""End to end through Lightning on the small synthetic file: learning, the record, checkpoints,
determinism, batch order, DDP on 2 CPU processes, and failed runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import lightning_ft
from ftmed_core.config import ExperimentConfig, RuntimeConfig, optimizer_config
from ftmed_core.data import Split, load_experiment_data
from ftmed_core.metrics import test_metrics as core_test_metrics
from ftmed_core.protocol import batch_bounds, epoch_permutation
from ftmed_core.records import HISTORY_KEYS, list_records, load_probabilities, read_record
from lightning_ft.datamodule import EpochBatches, HostSplit, SequentialBatches
from lightning_ft.model import predict_logits
from lightning_ft.training import load_checkpoint

RUNTIME = RuntimeConfig(accelerator="cpu", threads=1, progress=False)


@pytest.fixture(scope="module")
def data(synth_dir):
    return load_experiment_data(ExperimentConfig(data_dir=str(synth_dir)))


@pytest.fixture(scope="module")
def first_run(synth_dir, data, tmp_path_factory):
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=2)
    run_dir = tmp_path_factory.mktemp("lightning") / "run"
    epochs = []
    record = lightning_ft.train(config, run_dir=run_dir, runtime=RUNTIME, data=data,
                                on_epoch=lambda *args: epochs.append(args))
    return config, run_dir, record, epochs


def test_entry_points_are_functions():
    assert callable(lightning_ft.train) and callable(lightning_ft.fit) and callable(lightning_ft.build_mlp)
    assert not isinstance(lightning_ft.train, type(lightning_ft))


def test_two_epochs_learn_well_above_chance(first_run):
    _, _, record, _ = first_run
    assert record.status == "finished", record.error
    assert record.test["accuracy"] > 0.4  # chance is 1/9
    assert record.history["val_acc"][-1] > 0.4
    assert record.history["train_loss"][1] < record.history["train_loss"][0]


def test_record_is_complete(first_run, data):
    config, run_dir, record, epochs = first_run
    stored = read_record(run_dir)
    assert stored.status == "finished" and stored.run_key == record.run_key
    for key in HISTORY_KEYS:
        assert len(stored.history[key]) == 2 and all(np.isfinite(stored.history[key]))
    assert set(stored.test) >= {"accuracy", "loss", "auc", "n"} and stored.test["n"] == len(data.y_test)
    for key in ("torch", "lightning", "torchmetrics", "device", "threads", "precision"):
        assert key in stored.environment, key
    assert stored.environment["threads"] == 1 and stored.environment["device"] == "cpu"
    assert stored.training_seconds > 0
    probabilities = load_probabilities(run_dir)
    assert probabilities.shape == (len(data.y_test), data.n_classes) and probabilities.dtype == np.float32
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert [(e, total) for e, total, _ in epochs] == [(1, 2), (2, 2)]
    assert epochs[1][2]["val_acc"] == stored.history["val_acc"][1]


def test_checkpoint_reproduces_test_probabilities_exactly(first_run, data):
    config, run_dir, _, _ = first_run
    model = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    logits = predict_logits(model, data.x_test)
    _, probabilities = core_test_metrics(logits, data.y_test, config.output_activation, config.loss)
    assert np.array_equal(probabilities, load_probabilities(run_dir))
    assert np.array_equal(logits, np.load(run_dir / "test_logits.npy"))


def test_same_seed_gives_bitwise_identical_weights(first_run, data, tmp_path):
    config, run_dir, record, _ = first_run
    again = lightning_ft.train(config, run_dir=tmp_path / "again", runtime=RUNTIME, data=data)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):  # epoch_seconds is wall time
        assert again.history[key] == record.history[key]
    a = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "again" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_batches_follow_the_core_order_and_split_across_ranks():
    images = np.arange(23 * 2, dtype=np.uint8).reshape(23, 2)  # stored pixels: converted per batch
    y = np.arange(23)
    source = HostSplit(Split(images, y))
    x_all = torch.from_numpy(images.astype(np.float32) / np.float32(255))
    one = list(EpochBatches(source, 5, seed=3, shuffle=True, epoch_fn=lambda: 2))
    perm = epoch_permutation(3, 2, 23, True)
    assert [len(b[1]) for b in one] == [stop - start for start, stop in batch_bounds(23, 5)]  # last partial kept
    assert np.array_equal(torch.cat([b[1] for b in one]).numpy(), perm)
    assert torch.equal(torch.cat([b[0] for b in one]), x_all[torch.from_numpy(perm)])  # rows match labels
    ranks = [list(EpochBatches(source, 5, 3, True, lambda: 2, rank=r, world_size=2)) for r in (0, 1)]
    for whole, part0, part1 in zip(one, *ranks):
        assert torch.equal(torch.cat([part0[1], part1[1]]), whole[1]) and part0[2] == part1[2] == len(whole[1])
        assert torch.equal(torch.cat([part0[0], part1[0]]), whole[0])
    in_order = list(EpochBatches(source, 5, seed=3, shuffle=False, epoch_fn=lambda: 0))
    assert torch.equal(torch.cat([b[1] for b in in_order]), torch.from_numpy(y))
    val = [list(SequentialBatches(source, 4, rank=r, world_size=2)) for r in (0, 1)]
    assert torch.equal(torch.cat([b[1] for part in val for b in part]), torch.from_numpy(y))
    assert torch.equal(torch.cat([b[0] for part in val for b in part]), x_all)


@pytest.mark.parametrize("how", ["huge_lr", "nan_input"])
def test_non_finite_loss_is_recorded_as_failed(synth_dir, data, tmp_path, how):
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=2)
    if how == "huge_lr":
        config = replace(config, optimizer=optimizer_config("sgd", learning_rate=1e10))
    else:
        x = data.x_train.copy()
        x[5] = np.nan
        data = replace(data, train=Split(x, data.y_train))  # float32 features are fed as they are
    record = lightning_ft.train(config, run_dir=tmp_path / "run", runtime=RUNTIME, data=data)
    assert record.status == "failed"
    assert "NonFiniteLoss" in record.error and "non-finite" in record.error
    stored = read_record(tmp_path / "run")
    assert stored.status == "failed"
    # The epochs trained before the failure stay in the record, the failing one with its null loss.
    assert len(stored.history["train_loss"]) >= 1 and stored.history["train_loss"][-1] is None


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_record(synth_dir, data, first_run, tmp_path):
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=2)
    runtime = RuntimeConfig(accelerator="cpu", devices=2, strategy="ddp", threads=1, progress=False)
    epochs = []
    record = lightning_ft.train(config, runs_dir=tmp_path, runtime=runtime, data=data,
                                on_epoch=lambda *args: epochs.append(args))
    assert record.status == "finished", record.error
    assert record.environment["world_size"] == 2 and record.environment["strategy"] == "ddp_spawn"
    assert [r.run_key for r in list_records(tmp_path)] == [record.run_key]
    assert len(epochs) == 2
    # Each rank takes half of every global batch: the run follows the single-process one to rounding.
    single = first_run[2]
    np.testing.assert_allclose(record.history["train_loss"], single.history["train_loss"], rtol=1e-5)
    assert record.test["accuracy"] == pytest.approx(single.test["accuracy"], abs=0.02)
    history = json.loads((Path(tmp_path) / record.run_key / "lightning_history.json").read_text())
    assert len(history) == 2


def test_rerun_after_failure_leaves_no_stale_checkpoints(synth_dir, data, tmp_path):
    config = ExperimentConfig(data_dir=str(synth_dir), epochs=1)
    stale = tmp_path / "run" / "checkpoints" / "best-epoch=007.ckpt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier, failed attempt")
    record = lightning_ft.train(config, run_dir=tmp_path / "run", runtime=RUNTIME, data=data)
    assert record.status == "finished" and not stale.exists()
    assert record.environment["checkpoint_best"].endswith("best-epoch=000.ckpt")


def test_tensorboard_logging_is_optional_and_writes_events(small_config, tmp_path, monkeypatch):
    import importlib.util

    from ftmed_core.errors import ConfigError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        RuntimeConfig(tensorboard=True)
    monkeypatch.undo()
    if importlib.util.find_spec("tensorboard") is None:
        pytest.skip("tensorboard not installed")
    record = lightning_ft.train(replace(small_config, epochs=1), run_dir=tmp_path / "run",
                                runtime=RuntimeConfig(threads=1, tensorboard=True))
    assert record.finished
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
