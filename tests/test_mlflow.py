"""MLflow tracking: a 1-epoch run per framework logged to a temporary local store, read back with the
MLflow client; and one clear line when mlflow is not installed."""

from __future__ import annotations

import importlib.util

import pytest
from typer.testing import CliRunner

import ftmed
from cli.main import app

mlflow = pytest.importorskip("mlflow")


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["lightning", "keras"])
def test_one_epoch_run_is_logged_and_reads_back(framework, synth_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    store = tmp_path / "store"
    record = ftmed.train("sgd-momentum", framework=framework, epochs=1, data_dir=synth_dir,
                         runs_dir=tmp_path / "runs", mlflow=store, progress=False)
    assert record.finished

    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ftmed")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == record.environment["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.tags["ftmed.framework"] == framework and run.data.tags["ftmed.run_key"] == record.run_key
    assert run.data.tags["ftmed.data"] == "SYNTHETIC"
    params = run.data.params
    assert params["optimizer.name"] == "sgd" and float(params["optimizer.momentum"]) == 0.9
    assert params["hidden_units"] == "512-256-128" and params["framework"] == framework

    # per-epoch metrics: the record's history, one point at the epoch's last step
    steps_per_epoch = -(-record.data["n_train"] // 128)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [steps_per_epoch - 1], key
        assert history[0].value == pytest.approx(record.history[key][0], rel=1e-6), key
    for key in ("accuracy", "auc", "loss"):
        assert run.data.metrics[f"test_{key}"] == pytest.approx(record.test[key], rel=1e-9)

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"record.json", "history.csv", "plots"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/curves_sgd-momentum.png"]


def test_without_mlflow_installed_one_line(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ftmed.ConfigError, match=r"pip install 'ftmed\[mlflow\]'"):
        ftmed.RuntimeConfig(mlflow="sqlite:///x.db")
    result = CliRunner().invoke(app, ["compare", "--mlflow", "--runs-dir", str(tmp_path / "runs"),
                                      "--data-dir", str(tmp_path / "none")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "needs the mlflow package: pip install 'ftmed[mlflow]'" in lines[0]
    assert not (tmp_path / "runs").exists()
